"""Per-agent budgets: a hard stop, enforced in the reserving transaction, race-free."""

import threading
import uuid
from decimal import Decimal

import psycopg
import pytest

from app.agents import budgets
from app.agents.budgets import worst_case_cost, worst_case_usage
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.prefix import PromptParts
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import BudgetExceeded, CallContext, Deployment, RetryPolicy, Router
from app.db import open_pool, tenant_transaction
from devtools.fakes import FakeProviderServer

PARTS = PromptParts(system="You are the ops agent. " * 40, persona="Careful.",
                    task="Summarise the open incidents.")
MAX_OUTPUT = 16  # the fake replies with ~16 tokens: actual cost is close to worst case


@pytest.fixture(scope="module")
def fake():
    server = FakeProviderServer("openai").start()
    yield server
    server.stop()


def make_router(fake, app_pool):
    provider = build_provider("openai", fake.base_url, "fake-key")
    return Router([Deployment("gpt", provider, "gpt-4.1", 1_000_000, MAX_OUTPUT)],
                  PostgresAccounting(app_pool), policy=RetryPolicy(max_attempts=1))


def worst_case_usd() -> Decimal:
    price = PriceBook(DEFAULT_PRICES).price_at("openai", "gpt-4.1")
    return worst_case_cost(worst_case_usage(PARTS.max_input_tokens(), MAX_OUTPUT), price)


def make_agent(app_pool, owner_dsn, tenant, budget: Decimal, spent: Decimal = Decimal(0)):
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        agent = conn.execute(
            "INSERT INTO agents (tenant_id, name, budget_usd) VALUES (%s, 'spender', %s) "
            "RETURNING id", [tenant.id, budget]).fetchone()["id"]
    with psycopg.connect(owner_dsn) as conn:  # the app role may not write spend itself
        conn.execute("INSERT INTO agent_spend (tenant_id, agent_id, spent_usd) "
                     "VALUES (%s, %s, %s)", [tenant.id, agent, spent])
    return agent


def spend_and_ledger(app_pool, tenant_id):
    with tenant_transaction(app_pool, tenant_id) as conn:
        spend = conn.execute("SELECT spent_usd, reserved_usd FROM agent_spend").fetchone()
        outcomes = [r["outcome"] for r in conn.execute(
            "SELECT outcome FROM agent_calls ORDER BY id").fetchall()]
        ledger_total = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0) AS s FROM agent_calls").fetchone()["s"]
    return spend, outcomes, ledger_total


@pytest.fixture
def wide_pool(app_dsn):
    """One warm connection per thread, so the calls really run at the same time."""
    pool = open_pool(app_dsn, min_size=12, max_size=12, name="vos-budget-race")
    pool.wait(timeout=60)
    yield pool
    pool.close()


def test_concurrent_calls_never_exceed_a_nearly_spent_budget(fake, app_pool, wide_pool,
                                                             owner_dsn, make_tenant):
    tenant = make_tenant("budget")
    budget = Decimal("1.0000")
    # Room for 2.5 worst-case calls; the actual calls cost less, so a few more may fit
    # once earlier ones settle, but never more than the budget allows.
    room = worst_case_usd() * Decimal("2.5")
    agent = make_agent(app_pool, owner_dsn, tenant, budget, spent=budget - room)
    router = make_router(fake, wide_pool)
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def one_call():
        start.wait(timeout=30)
        try:
            router.complete(CallContext(tenant.id, agent), PARTS)
            outcome = "ok"
        except BudgetExceeded:
            outcome = "denied"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one_call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 12
    spend, outcomes, ledger_total = spend_and_ledger(app_pool, tenant.id)
    assert spend["spent_usd"] <= budget, f"overspent: {spend['spent_usd']} > {budget}"
    assert spend["reserved_usd"] == 0
    assert spend["spent_usd"] == budget - room + ledger_total  # spend and ledger agree
    assert results.count("ok") >= 2 and results.count("denied") >= 1
    assert outcomes.count("ok") == results.count("ok")
    assert outcomes.count("budget_denied") == results.count("denied")
    assert len(fake.received) == results.count("ok")  # a denied call sends nothing


def test_an_exhausted_budget_stops_the_call_before_anything_is_sent(fake, app_pool, owner_dsn,
                                                                    make_tenant):
    tenant = make_tenant("broke")
    agent = make_agent(app_pool, owner_dsn, tenant, Decimal("0.0010"),
                       spent=Decimal("0.0009"))
    fake.reset()
    with pytest.raises(BudgetExceeded, match=r"budget \$0.0010 is exhausted.*agents.budget_usd"):
        make_router(fake, app_pool).complete(CallContext(tenant.id, agent), PARTS)
    assert fake.received == []
    spend, outcomes, _ = spend_and_ledger(app_pool, tenant.id)
    assert outcomes == ["budget_denied"]
    assert spend["spent_usd"] == Decimal("0.0009") and spend["reserved_usd"] == 0


def test_agents_default_to_a_zero_budget(fake, app_pool, make_tenant):
    tenant = make_tenant("nobudget")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        agent = conn.execute("INSERT INTO agents (tenant_id, name) VALUES (%s, 'new') "
                             "RETURNING id", [tenant.id]).fetchone()["id"]
    with pytest.raises(BudgetExceeded, match=r"budget \$0"):
        make_router(fake, app_pool).complete(CallContext(tenant.id, agent), PARTS)


def test_spend_cannot_go_negative_or_be_settled_twice(app_pool, owner_dsn, make_tenant):
    tenant = make_tenant("checks")
    agent = make_agent(app_pool, owner_dsn, tenant, Decimal(1))
    with pytest.raises(psycopg.errors.CheckViolation):
        with psycopg.connect(owner_dsn) as conn:  # even the owner cannot
            conn.execute("UPDATE agent_spend SET reserved_usd = -1 WHERE agent_id = %s",
                         [agent])
    price = PriceBook(DEFAULT_PRICES).price_at("openai", "gpt-4.1")
    with tenant_transaction(app_pool, tenant.id) as conn:
        reservation = budgets.reserve(conn, tenant.id, agent, uuid.uuid4(), price,
                                      worst_case_usage(100, 10))
        budgets.settle(conn, reservation, Decimal("0.0001"))
        with pytest.raises(RuntimeError, match="already settled"):
            budgets.settle(conn, reservation, Decimal("0.0001"))


def test_a_reservation_left_open_by_a_crash_is_charged_at_its_estimate(app_pool, owner_dsn,
                                                                       make_tenant):
    tenant = make_tenant("crash")
    agent = make_agent(app_pool, owner_dsn, tenant, Decimal(1))
    price = PriceBook(DEFAULT_PRICES).price_at("openai", "gpt-4.1")
    with tenant_transaction(app_pool, tenant.id) as conn:
        reservation = budgets.reserve(conn, tenant.id, agent, uuid.uuid4(), price,
                                      worst_case_usage(1000, 100))
    with tenant_transaction(app_pool, tenant.id) as conn:
        assert budgets.expire_stale(conn, older_than_seconds=3600) == 0  # still fresh
        assert budgets.expire_stale(conn, older_than_seconds=0) == 1
        spend = conn.execute("SELECT spent_usd, reserved_usd FROM agent_spend").fetchone()
    assert spend == {"spent_usd": reservation.estimated_usd, "reserved_usd": 0}
