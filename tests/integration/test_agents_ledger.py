"""The cost ledger in a real Postgres: every attempt is a row, costs equal hand-computed values.

Calls go through the router and the real SDKs to the fake providers over loopback; the fakes
count tokens and compute cache reads themselves. The prompt is built so the token counts can
be worked out by hand: system = 1500 x "alpha", persona = 100 x "beta" (stable prefix 1600
tokens), task = 50 x "gamma" wrapped as "<task> … </task>" (57 tokens), output capped at 10.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from app.agents.ledger import PostgresAccounting, cost_summary, seed_prices
from app.agents.prefix import PromptParts
from app.agents.providers import build_provider
from app.agents.router import CallContext, Deployment, RetryPolicy, Router
from app.db import tenant_transaction
from devtools.fakes import start_fake_fleet

PARTS = PromptParts(system=" ".join(["alpha"] * 1500), persona=" ".join(["beta"] * 100),
                    task=" ".join(["gamma"] * 50))


@pytest.fixture(scope="module")
def fleet():
    servers = start_fake_fleet()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def tenant_agent(make_tenant, owner_dsn, app_pool):
    """A fresh tenant with prices seeded and one agent with a $10 budget."""
    tenant = make_tenant("ledger")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        agent = conn.execute(
            "INSERT INTO agents (tenant_id, name, budget_usd) VALUES (%s, 'ops', 10) "
            "RETURNING id", [tenant.id]).fetchone()["id"]
    return tenant, agent


def make_router(fleet, app_pool, chain, **keys):
    def provider(name):
        return build_provider(name, fleet[name].base_url, keys.get(name, "fake-key"))

    deployments = [
        Deployment("sonnet", provider("anthropic"), "claude-sonnet-4-6", 200_000, 10),
        Deployment("gpt", provider("openai"), "gpt-4.1", 1_000_000, 10),
        Deployment("openrouter", provider("openrouter"), "openai/gpt-4.1-mini", 1_000_000, 10),
        Deployment("ollama", provider("ollama"), "llama3.1:8b", 128_000, 10),
    ]
    return Router(deployments, PostgresAccounting(app_pool), default_chain=chain,
                  policy=RetryPolicy(max_attempts=3, base_delay=0.01))


def ledger_rows(app_pool, tenant_id):
    with tenant_transaction(app_pool, tenant_id) as conn:
        return conn.execute("SELECT * FROM agent_calls ORDER BY id").fetchall()


# (deployment, [(uncached, cache_read, cache_write, output, cost)] for call 1 and call 2)
HAND_COMPUTED = {
    # Anthropic: input_tokens excludes cache tokens. Tail = "user" + 57 = 58 uncached.
    # 1st: 58*3 + 1600*3.75 + 10*15 = 6324 µ$; 2nd: 58*3 + 1600*0.30 + 10*15 = 804 µ$.
    "sonnet": [(58, 0, 1600, 10, "0.00632400"), (58, 1600, 0, 10, "0.00080400")],
    # OpenAI: prompt = "system" + 1600 + "user" + 57 = 1659 tokens, cached in 128-steps from
    # 1024, so the 2nd call reads 1536 and pays 123 uncached.
    # 1st: 1659*2 + 10*8 = 3398 µ$; 2nd: 123*2 + 1536*0.5 + 10*8 = 1094 µ$.
    "gpt": [(1659, 0, 0, 10, "0.00339800"), (123, 1536, 0, 10, "0.00109400")],
    # OpenRouter gpt-4.1-mini: 1659*0.4 + 10*1.6 = 679.6 µ$; 123*0.4 + 1536*0.1 + 16 = 218.8.
    "openrouter": [(1659, 0, 0, 10, "0.00067960"), (123, 1536, 0, 10, "0.00021880")],
    # Ollama: local, no cache reporting, free.
    "ollama": [(1659, 0, 0, 10, "0E-8"), (1659, 0, 0, 10, "0E-8")],
}


@pytest.mark.parametrize("deployment", sorted(HAND_COMPUTED))
def test_costs_equal_hand_computed_values(deployment, fleet, app_pool, tenant_agent):
    for server in fleet.values():
        server.reset()
    tenant, agent = tenant_agent
    router = make_router(fleet, app_pool, [deployment])
    for _ in range(2):
        router.complete(CallContext(tenant.id, agent), PARTS)
    rows = ledger_rows(app_pool, tenant.id)
    got = [(r["uncached_input_tokens"], r["cache_read_tokens"], r["cache_write_tokens"],
            r["output_tokens"], r["cost_usd"]) for r in rows]
    expected = [(u, r, w, o, Decimal(c)) for u, r, w, o, c in HAND_COMPUTED[deployment]]
    assert got == expected
    assert all(r["outcome"] == "ok" and r["price_id"] is not None for r in rows)
    spent = sum(Decimal(c) for *_, c in HAND_COMPUTED[deployment])
    with tenant_transaction(app_pool, tenant.id) as conn:
        spend = conn.execute("SELECT * FROM agent_spend").fetchone()
        open_reservations = conn.execute(
            "SELECT count(*) AS n FROM budget_reservations WHERE status = 'open'"
        ).fetchone()["n"]
    assert spend["spent_usd"] == spent and spend["reserved_usd"] == 0
    assert open_reservations == 0


def test_every_attempt_failed_or_not_is_a_ledger_row(fleet, app_pool, tenant_agent):
    for server in fleet.values():
        server.reset()
    tenant, agent = tenant_agent
    fleet["openai"].script("429:0.05", "500")
    router = make_router(fleet, app_pool, ["sonnet", "gpt", "ollama"], anthropic="revoked")
    result = router.complete(CallContext(tenant.id, agent, task_id=None), PARTS)
    assert result.deployment.name == "gpt"
    rows = ledger_rows(app_pool, tenant.id)
    assert [(r["attempt_no"], r["deployment"], r["outcome"], r["next_action"],
             r["http_status"]) for r in rows] == [
        (1, "sonnet", "auth", "cooldown", 401),
        (2, "gpt", "rate_limited", "retry", 429),
        (3, "gpt", "server", "retry", 500),
        (4, "gpt", "ok", None, 200),
    ]
    assert len({r["call_id"] for r in rows}) == 1
    assert [r["cost_usd"] for r in rows[:3]] == [0, 0, 0]
    assert rows[3]["cost_usd"] > 0 and rows[3]["model_served"] == "gpt-4.1"
    assert all(r["latency_ms"] >= 0 and r["agent_id"] == agent for r in rows)


def test_a_newer_price_version_applies_from_its_effective_date(fleet, app_pool, tenant_agent):
    for server in fleet.values():
        server.reset()
    tenant, agent = tenant_agent
    with tenant_transaction(app_pool, tenant.id) as conn:
        new_id = conn.execute(
            """INSERT INTO model_prices (tenant_id, provider, model, effective_from, version,
                   input_per_mtok, output_per_mtok, cache_read_per_mtok, cache_write_per_mtok)
               VALUES (%s, 'openai', 'gpt-4.1', %s, 'price-cut', 1, 4, 0.25, 1) RETURNING id""",
            [tenant.id, datetime.now(UTC) - timedelta(minutes=5)]).fetchone()["id"]
        conn.execute(  # a future version must not apply yet
            """INSERT INTO model_prices (tenant_id, provider, model, effective_from, version,
                   input_per_mtok, output_per_mtok, cache_read_per_mtok, cache_write_per_mtok)
               VALUES (%s, 'openai', 'gpt-4.1', %s, 'future', 9, 9, 9, 9)""",
            [tenant.id, datetime.now(UTC) + timedelta(days=1)])
    make_router(fleet, app_pool, ["gpt"]).complete(CallContext(tenant.id, agent), PARTS)
    (row,) = ledger_rows(app_pool, tenant.id)
    # 1659*1 + 10*4 = 1699 µ$ at the cut price.
    assert (row["price_id"], row["cost_usd"]) == (new_id, Decimal("0.00169900"))


def test_cost_views_add_up_and_stay_inside_the_tenant(fleet, app_pool, tenant_agent,
                                                      make_tenant):
    for server in fleet.values():
        server.reset()
    tenant, agent = tenant_agent
    fleet["anthropic"].script("500")
    router = make_router(fleet, app_pool, ["sonnet", "gpt"])
    for _ in range(2):
        router.complete(CallContext(tenant.id, agent), PARTS)
    summary = cost_summary(app_pool, tenant.id)
    # sonnet: retry then cache write (6324 µ$), then cache read (804 µ$).
    assert summary["today"]["cost_usd"] == Decimal("0.00712800")
    assert summary["today"]["calls"] == 2 and summary["today"]["attempts"] == 3
    assert summary["today"]["failed_attempts"] == 1
    assert summary["this_week"]["cost_usd"] == Decimal("0.00712800")
    assert summary["per_call"]["avg_cost_usd"] == Decimal("0.00356400")
    assert summary["per_call"]["avg_attempts"] == Decimal("1.5")
    (by_model,) = summary["by_model"]
    assert (by_model["model_requested"], by_model["models_served"]) == (
        "claude-sonnet-4-6", ["claude-sonnet-4-6"])
    assert (by_model["attempts"], by_model["ok_attempts"]) == (3, 2)
    assert (by_model["cache_read_tokens"], by_model["cache_write_tokens"]) == (1600, 1600)
    (by_agent,) = summary["by_agent"]
    assert (by_agent["agent_name"], by_agent["spent_usd"]) == ("ops", Decimal("0.00712800"))

    other = make_tenant("other")
    assert ledger_rows(app_pool, other.id) == []
    empty = cost_summary(app_pool, other.id)
    assert empty["today"] == {} and empty["by_agent"] == []


def test_the_app_role_cannot_rewrite_the_ledger(app_pool, tenant_agent):
    tenant, _ = tenant_agent
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("UPDATE agent_calls SET cost_usd = 0")
