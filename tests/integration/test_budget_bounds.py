"""Budgets that hold for any input, and spend that changes only through the budget functions.

Issue #14 ("Budgets"): the reservation counted `\\w+` word pieces, so a 90,000-character hex
blob counted as ~1 token and one call spent 6x a $0.01 budget; and `vos_app` could
`UPDATE agent_spend` to reset what an agent had spent. Real Postgres, the real OpenAI SDK
against the fake provider on loopback.
"""

import secrets
import threading
import uuid
from decimal import Decimal

import psycopg
import pytest

from app.agents import budgets
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.prefix import PromptParts
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import BudgetExceeded, CallContext, Deployment, RetryPolicy, Router
from app.agents.sanitize import Sanitizer
from app.db import open_pool, tenant_transaction
from devtools.fakes import FakeProviderServer

MAX_OUTPUT = 64
PRICE = PriceBook(DEFAULT_PRICES).price_at("openai", "gpt-4.1")
NORMAL = PromptParts(system="You are the ops agent of the Agent VOS.", persona="Careful.",
                     task="Summarise the open incidents in three bullet points.")


@pytest.fixture(scope="module")
def fake():
    server = FakeProviderServer("openai").start()
    yield server
    server.stop()


def make_router(fake, pool) -> Router:
    provider = build_provider("openai", fake.base_url, "fake-key")
    return Router([Deployment("gpt", provider, "gpt-4.1", 1_000_000, MAX_OUTPUT)],
                  PostgresAccounting(pool), policy=RetryPolicy(max_attempts=1))


def make_agent(app_pool, tenant, budget: str, name: str = "spender"):
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        return conn.execute(
            "INSERT INTO agents (tenant_id, name, budget_usd) VALUES (%s, %s, %s) "
            "RETURNING id", [tenant.id, name, Decimal(budget)]).fetchone()["id"]


def spend(app_pool, tenant_id) -> dict:
    with tenant_transaction(app_pool, tenant_id) as conn:
        return conn.execute("SELECT * FROM agent_spend").fetchone()


# -- the bound ------------------------------------------------------------------------------


def test_a_90000_char_hex_blob_is_denied_before_anything_is_sent(fake, app_pool, make_tenant):
    tenant = make_tenant("hexblob")
    agent = make_agent(app_pool, tenant, "0.01")
    blob = secrets.token_hex(45_000)
    parts = PromptParts(system="You decode.", persona="", task=f"Decode: {blob}")
    assert blob in Sanitizer().clean(parts.task), \
        "precondition: the blob reaches the wire (if the sanitizer now redacts it, use another)"
    assert parts.estimate_tokens() < 20, "the old word-piece estimate saw ~1 token"
    assert parts.max_input_tokens() > 90_000
    fake.reset()
    with pytest.raises(BudgetExceeded, match=r"budget \$0.0100 is exhausted"):
        make_router(fake, app_pool).complete(CallContext(tenant.id, agent), parts)
    assert fake.received == [], "a denied call sends nothing"
    row = spend(app_pool, tenant.id)
    assert row["spent_usd"] == 0 and row["reserved_usd"] == 0


def test_one_long_word_of_any_alphabet_is_bounded_too(fake, app_pool, make_tenant):
    tenant = make_tenant("oneword")
    agent = make_agent(app_pool, tenant, "0.01")
    parts = PromptParts(system="s", persona="", task="ab" * 45_000)  # low entropy: not redacted
    fake.reset()
    with pytest.raises(BudgetExceeded):
        make_router(fake, app_pool).complete(CallContext(tenant.id, agent), parts)
    assert fake.received == []


def test_a_normal_prompt_still_fits_a_normal_budget(fake, app_pool, make_tenant):
    tenant = make_tenant("normal")
    agent = make_agent(app_pool, tenant, "0.01")
    fake.reset()
    result = make_router(fake, app_pool).complete(CallContext(tenant.id, agent), NORMAL)
    assert result.completion.text and len(fake.received) == 1
    row = spend(app_pool, tenant.id)
    assert 0 < row["spent_usd"] == result.cost_usd < Decimal("0.01")
    assert row["reserved_usd"] == 0


def test_the_reservation_covers_the_tokens_the_provider_counted(fake, app_pool, make_tenant):
    """The fake counts tokens its own way; the reserved bound is never below the bill."""
    tenant = make_tenant("cover")
    agent = make_agent(app_pool, tenant, "5")
    payloads = ["déjà vu — ünïcode ✓ " * 300, "x" * 5000, secrets.token_hex(2000),
                " ".join(["word"] * 2000), "{}[]()<>!?" * 500]
    router = make_router(fake, app_pool)
    for task in payloads:
        result = router.complete(CallContext(tenant.id, agent), PromptParts("s", "p", task=task))
        with tenant_transaction(app_pool, tenant.id) as conn:
            reserved = conn.execute(
                "SELECT estimated_usd, actual_usd FROM budget_reservations "
                "WHERE call_id = %s", [result.attempts[-1].context.call_id]).fetchone()
        assert reserved["actual_usd"] <= reserved["estimated_usd"], task[:30]
    with tenant_transaction(app_pool, tenant.id) as conn:
        assert conn.execute("SELECT count(*) AS n FROM budget_overshoots").fetchone()["n"] == 0


# -- concurrency ----------------------------------------------------------------------------


@pytest.fixture
def wide_pool(app_dsn):
    pool = open_pool(app_dsn, min_size=8, max_size=8, name="vos-budget-bounds")
    pool.wait(timeout=60)
    yield pool
    pool.close()


def test_concurrent_reservations_never_push_spent_past_the_budget(wide_pool, app_pool,
                                                                  make_tenant):
    tenant = make_tenant("race")
    agent = make_agent(app_pool, tenant, "0.0100")
    worst = budgets.worst_case_usage(1000, 100)  # $0.0028 each at gpt-4.1 prices
    estimate = budgets.worst_case_cost(worst, PRICE)
    fits = int(Decimal("0.0100") // estimate)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def call(n: int) -> None:
        start.wait(timeout=30)
        for _ in range(3):  # bounded: 24 attempts in all
            with tenant_transaction(wide_pool, tenant.id) as conn:
                result = budgets.reserve(conn, tenant.id, agent, uuid.uuid4(), PRICE, worst)
                if isinstance(result, budgets.Reservation):
                    budgets.settle(conn, result, result.estimated_usd)  # the worst case
            with lock:
                outcomes.append("ok" if isinstance(result, budgets.Reservation) else "denied")

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == 24
    row = spend(app_pool, tenant.id)
    assert outcomes.count("ok") == fits
    assert row["spent_usd"] == estimate * fits <= Decimal("0.0100")
    assert row["reserved_usd"] == 0


# -- only through functions -----------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE agent_spend SET spent_usd = 0",
    "UPDATE agent_spend SET reserved_usd = 0, period_start = now()",
    "DELETE FROM agent_spend",
    "INSERT INTO agent_spend (tenant_id, agent_id) VALUES (%(tenant)s, %(agent)s)",
    "UPDATE budget_reservations SET status = 'settled', settled_at = now(), actual_usd = 0",
    "INSERT INTO budget_reservations (tenant_id, agent_id, call_id, estimated_usd) "
    "VALUES (%(tenant)s, %(agent)s, gen_random_uuid(), 0)",
    "DELETE FROM budget_reservations",
    "INSERT INTO budget_overshoots (tenant_id, agent_id, reservation_id, call_id, "
    "estimated_usd, actual_usd, overshoot_usd) VALUES (%(tenant)s, %(agent)s, 1, "
    "gen_random_uuid(), 0, 1, 1)",
])
def test_the_app_role_cannot_write_spend_directly(statement, app_pool, owner_dsn,
                                                  make_tenant):
    tenant = make_tenant("direct")
    agent = make_agent(app_pool, tenant, "1")
    with tenant_transaction(app_pool, tenant.id) as conn:
        budgets.reserve(conn, tenant.id, agent, uuid.uuid4(), PRICE,
                        budgets.worst_case_usage(100, 10))
    before = spend(app_pool, tenant.id)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute(statement, {"tenant": tenant.id, "agent": agent})
    assert spend(app_pool, tenant.id) == before


def test_the_budget_functions_refuse_another_tenants_agent(app_pool, make_tenant):
    victim, attacker = make_tenant("victim"), make_tenant("attacker")
    agent = make_agent(app_pool, victim, "1")
    with tenant_transaction(app_pool, victim.id) as conn:
        held = budgets.reserve(conn, victim.id, agent, uuid.uuid4(), PRICE,
                               budgets.worst_case_usage(100, 10))
    before = spend(app_pool, victim.id)
    with pytest.raises(LookupError, match=f"agent {agent} does not exist in tenant"):
        with tenant_transaction(app_pool, attacker.id) as conn:
            budgets.reserve(conn, attacker.id, agent, uuid.uuid4(), PRICE,
                            budgets.worst_case_usage(1, 1))
    with tenant_transaction(app_pool, attacker.id) as conn:
        with pytest.raises(RuntimeError, match="already settled .*not one of this tenant"):
            budgets.settle(conn, held, Decimal(0))
        assert budgets.expire_stale(conn, older_than_seconds=0) == 0
        assert budgets.resume(conn, agent) is False
        row = conn.execute("SELECT * FROM budget_settle(%s, 0)", [held.id]).fetchone()
        assert row == {"settled": False, "overshoot": 0}
    assert spend(app_pool, victim.id) == before
    with tenant_transaction(app_pool, victim.id) as conn:  # still the victim's to settle
        assert budgets.settle(conn, held, held.estimated_usd) == 0


def test_the_budget_functions_need_a_tenant_and_valid_figures(app_pool, make_tenant):
    tenant = make_tenant("checks")
    agent = make_agent(app_pool, tenant, "1")
    with app_pool.connection() as conn:  # no tenant_transaction: no app.tenant_id
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="app.tenant_id"):
            conn.execute("SELECT * FROM budget_reserve(%s, gen_random_uuid(), 0)", [agent])
    with pytest.raises(psycopg.errors.CheckViolation, match="estimate must be .* >= 0"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("SELECT * FROM budget_reserve(%s, gen_random_uuid(), -1)", [agent])
    with pytest.raises(psycopg.errors.CheckViolation, match="actual must be .* >= 0"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("SELECT * FROM budget_settle(1, -0.5)")
    assert spend(app_pool, tenant.id) is None, "nothing was written"


# -- overshoot --------------------------------------------------------------------------------


def test_an_overshoot_is_recorded_and_stops_the_agent_until_an_operator_acts(
        fake, app_pool, make_tenant):
    tenant = make_tenant("overshoot")
    agent = make_agent(app_pool, tenant, "1.0000")
    call_id = uuid.uuid4()
    with tenant_transaction(app_pool, tenant.id) as conn:
        held = budgets.reserve(conn, tenant.id, agent, call_id, PRICE,
                               budgets.worst_case_usage(100, 10))
        # a provider billing above the bound (e.g. a price change): injected here
        overshoot = budgets.settle(conn, held, held.estimated_usd + Decimal("0.25"))
    assert overshoot == Decimal("0.25")
    with tenant_transaction(app_pool, tenant.id) as conn:
        recorded = conn.execute("SELECT * FROM budget_overshoots").fetchall()
    assert [(r["agent_id"], r["call_id"], r["reservation_id"], r["overshoot_usd"])
            for r in recorded] == [(agent, call_id, held.id, Decimal("0.25"))]
    row = spend(app_pool, tenant.id)
    assert row["spent_usd"] == held.estimated_usd + Decimal("0.25"), "the overshoot is spent"
    assert row["stopped_at"] is not None and str(call_id) in row["stopped_reason"]

    # Plenty of budget left, yet every call is refused and nothing is sent.
    fake.reset()
    router = make_router(fake, app_pool)
    for _ in range(2):
        with pytest.raises(budgets.BudgetDenied, match="is stopped: call .* more than its"):
            router.complete(CallContext(tenant.id, agent), NORMAL)
    assert fake.received == []

    # The operator acts: an explicit resume lets calls through again.
    with tenant_transaction(app_pool, tenant.id, actor="operator") as conn:
        assert budgets.resume(conn, agent) is True
    router.complete(CallContext(tenant.id, agent), NORMAL)
    assert len(fake.received) == 1


def test_changing_the_budget_lifts_an_overshoot_stop(fake, app_pool, make_tenant):
    tenant = make_tenant("rebudget")
    agent = make_agent(app_pool, tenant, "1.0000")
    with tenant_transaction(app_pool, tenant.id) as conn:
        held = budgets.reserve(conn, tenant.id, agent, uuid.uuid4(), PRICE,
                               budgets.worst_case_usage(100, 10))
        budgets.settle(conn, held, held.estimated_usd * 2)
    router = make_router(fake, app_pool)
    with pytest.raises(budgets.BudgetDenied, match="is stopped"):
        router.complete(CallContext(tenant.id, agent), NORMAL)
    with tenant_transaction(app_pool, tenant.id) as conn:
        conn.execute("UPDATE agents SET budget_usd = 2 WHERE id = %s", [agent])
    fake.reset()
    router.complete(CallContext(tenant.id, agent), NORMAL)
    assert len(fake.received) == 1 and spend(app_pool, tenant.id)["stopped_at"] is None
