"""The ledger rollup (migration 0101) equals a direct aggregate of agent_calls, per tenant.

The ledger is written the way production writes it (`PostgresAccounting.reserve` / `settle`
as `vos_app`: settled attempts, failed attempts, budget denials) plus owner bulk loads on
earlier days, across two tenants. The three rewritten views must return exactly what their
0100 definitions (reproduced here, aggregating agent_calls directly) return, value for value
and scale for scale; the rollup must stay exact after an owner's UPDATE / DELETE; tenant B
must see none of tenant A's rollup rows; and a rollup that misses rows must be caught.
"""

import uuid
from types import SimpleNamespace

import psycopg
import pytest

from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.prices import Usage
from app.agents.router import AttemptRecord, BudgetExceeded, CallContext
from app.db import tenant_transaction
from app.db.migrate import rls_gaps

# The 0100 view bodies: the semantics the rollup-backed views must keep.
DIRECT = {
    "agent_cost_per_call": """
        SELECT tenant_id, count(*) AS calls, avg(cost_usd) AS avg_cost_usd,
               avg(input_tokens) AS avg_input_tokens, avg(attempts) AS avg_attempts
          FROM (SELECT tenant_id, call_id, sum(cost_usd) AS cost_usd, count(*) AS attempts,
                       sum(uncached_input_tokens + cache_read_tokens + cache_write_tokens)
                         AS input_tokens
                  FROM agent_calls WHERE outcome <> 'budget_denied'
                 GROUP BY tenant_id, call_id) per_call
         GROUP BY tenant_id""",
    "agent_cost_by_model": """
        SELECT tenant_id, provider, model_requested,
               array_agg(DISTINCT model_served) FILTER (WHERE model_served IS NOT NULL)
                 AS models_served,
               count(*) FILTER (WHERE outcome = 'ok') AS ok_attempts, count(*) AS attempts,
               sum(cost_usd) AS cost_usd, sum(uncached_input_tokens) AS uncached_input_tokens,
               sum(cache_read_tokens) AS cache_read_tokens,
               sum(cache_write_tokens) AS cache_write_tokens, sum(output_tokens) AS output_tokens
          FROM agent_calls GROUP BY tenant_id, provider, model_requested""",
    "agent_cost_by_agent": """
        SELECT c.tenant_id, c.agent_id, a.name AS agent_name,
               count(DISTINCT c.call_id) FILTER (WHERE c.outcome = 'ok') AS calls,
               sum(c.cost_usd) AS cost_usd,
               sum(c.cost_usd) FILTER (WHERE c.created_at >= date_trunc('day', now()))
                 AS cost_today,
               max(a.budget_usd) AS budget_usd, max(s.spent_usd) AS spent_usd
          FROM agent_calls c JOIN agents a ON a.id = c.agent_id
          LEFT JOIN agent_spend s ON s.agent_id = c.agent_id
         GROUP BY c.tenant_id, c.agent_id, a.name""",
}

# The rollup's additive columns against the ledger, per rollup key.
ROLLUP_KEY = ("tenant_id, (created_at AT TIME ZONE 'UTC')::date AS day, agent_id, provider, "
              "model_requested, model_served, outcome = 'budget_denied' AS denied")
DIRECT_ROLLUP = f"""
    SELECT {ROLLUP_KEY}, count(*) AS attempts,
           count(*) FILTER (WHERE outcome = 'ok') AS ok_attempts,
           count(*) FILTER (WHERE outcome NOT IN ('ok', 'budget_denied')) AS failed_attempts,
           sum(cost_usd) AS cost_usd, sum(uncached_input_tokens) AS uncached_input_tokens,
           sum(cache_read_tokens) AS cache_read_tokens,
           sum(cache_write_tokens) AS cache_write_tokens, sum(output_tokens) AS output_tokens
      FROM agent_calls GROUP BY 1, 2, 3, 4, 5, 6, 7"""
ROLLUP = """
    SELECT tenant_id, day, agent_id, provider, model_requested, model_served, denied,
           attempts, ok_attempts, failed_attempts, cost_usd, uncached_input_tokens,
           cache_read_tokens, cache_write_tokens, output_tokens
      FROM agent_cost_daily"""


def exact(rows: list[dict]) -> list[tuple]:
    """Rows as sorted tuples of text, so 0.5 and 0.50000000 count as different."""
    return sorted(tuple(str(v) for v in row.values()) for row in rows)


def mismatches(conn: psycopg.Connection) -> list[str]:
    """What differs between the rollup (and its views) and the ledger, for this session."""
    found = []
    for view, direct in DIRECT.items():
        got = exact(conn.execute(f"SELECT * FROM {view}").fetchall())
        want = exact(conn.execute(direct).fetchall())
        if got != want:
            found.append(f"{view}: rollup gives {got}, ledger gives {want}")
    got = exact(conn.execute(ROLLUP).fetchall())
    want = exact(conn.execute(DIRECT_ROLLUP).fetchall())
    if got != want:
        found.append(f"agent_cost_daily: {got} != ledger {want}")
    return found


DEPLOYMENTS = {
    "sonnet": SimpleNamespace(name="sonnet", provider_name="anthropic",
                              model="claude-sonnet-4-6"),
    "gpt": SimpleNamespace(name="gpt", provider_name="openai", model="gpt-4.1"),
}


def attempt(accounting, ctx, n, deployment, outcome, usage, served):
    """Reserve and settle one attempt the way the router does; BudgetExceeded on denial."""
    dep = DEPLOYMENTS[deployment]
    reservation = accounting.reserve(ctx, dep, 2000, 64)
    record = AttemptRecord(ctx, n, dep.name, dep.provider_name, dep.model, served,
                           Usage(*usage), 120, outcome,
                           None if outcome == "ok" else "retry", 200 if outcome == "ok" else 429)
    accounting.settle(reservation, record)


def write_ledger(app_pool, owner_dsn, tenant_id) -> dict[str, uuid.UUID]:
    """A mixed ledger for one tenant: returns the agent ids by name."""
    with tenant_transaction(app_pool, tenant_id) as conn:
        seed_prices(conn, tenant_id)
        agents = {name: conn.execute(
            "INSERT INTO agents (tenant_id, name, budget_usd) VALUES (%s, %s, %s) RETURNING id",
            [tenant_id, name, budget]).fetchone()["id"]
            for name, budget in (("ops", 10), ("writer", 10), ("broke", 0))}
    accounting = PostgresAccounting(app_pool)
    # A call that fails over: rate limited on sonnet, then ok on gpt (two settles).
    retry = CallContext(tenant_id, agents["ops"])
    attempt(accounting, retry, 1, "sonnet", "rate_limited", (0, 0, 0, 0), None)
    attempt(accounting, retry, 2, "gpt", "ok", (1200, 300, 0, 40), "gpt-4.1-2025-04-14")
    # Plain calls on both agents, with cache reads and writes.
    for agent, dep, usage in (("ops", "sonnet", (58, 1600, 0, 10)),
                              ("writer", "sonnet", (58, 0, 1600, 10)),
                              ("writer", "gpt", (123, 1536, 0, 10))):
        attempt(accounting, CallContext(tenant_id, agents[agent]), 1, dep, "ok", usage,
                DEPLOYMENTS[dep].model)
    # A denied call (budget_denied row, cost 0), then the same agent denied again.
    for _ in range(2):
        with pytest.raises(BudgetExceeded):
            attempt(accounting, CallContext(tenant_id, agents["broke"]), 1, "sonnet", "ok",
                    (10, 0, 0, 1), "claude-sonnet-4-6")
    # Owner bulk loads on earlier days: 100 one-attempt calls (the statement path without
    # per-call locks), and one call's three attempts in a single statement.
    multi = uuid.uuid4()
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO agent_calls (tenant_id, call_id, attempt_no, agent_id, provider,
                   deployment, model_requested, model_served, uncached_input_tokens,
                   output_tokens, outcome, cost_usd, created_at)
               SELECT %s, gen_random_uuid(), 1, %s, 'openai', 'gpt', 'gpt-4.1',
                      CASE WHEN g %% 7 = 0 THEN NULL ELSE 'gpt-4.1' END, 100 + g, g,
                      CASE WHEN g %% 7 = 0 THEN 'server' ELSE 'ok' END, g / 100000.0,
                      now() - (g %% 5) * interval '1 day'
                 FROM generate_series(1, 100) g""", [tenant_id, agents["writer"]])
        conn.execute(
            """INSERT INTO agent_calls (tenant_id, call_id, attempt_no, agent_id, provider,
                   deployment, model_requested, model_served, output_tokens, outcome,
                   cost_usd, created_at)
               VALUES (%(t)s, %(c)s, 1, %(a)s, 'anthropic', 'sonnet', 'claude-sonnet-4-6',
                       NULL, 0, 'overloaded', 0, now() - interval '2 days'),
                      (%(t)s, %(c)s, 2, %(a)s, 'anthropic', 'sonnet', 'claude-sonnet-4-6',
                       'claude-sonnet-4-6', 12, 'ok', 0.0004, now() - interval '2 days'),
                      (%(t)s, %(c)s, 3, %(a)s, 'openai', 'gpt', 'gpt-4.1', 'gpt-4.1', 9,
                       'ok', 0.0002, now() - interval '1 day')""",
            {"t": tenant_id, "c": multi, "a": agents["ops"]})
    return agents


@pytest.fixture
def two_tenants(make_tenant, app_pool, owner_dsn):
    tenants = [make_tenant("rollup-a"), make_tenant("rollup-b")]
    for tenant in tenants:
        write_ledger(app_pool, owner_dsn, tenant.id)
    return tenants


def test_rollup_views_equal_the_direct_ledger_aggregates(two_tenants, app_pool):
    for tenant in two_tenants:
        with tenant_transaction(app_pool, tenant.id) as conn:
            assert mismatches(conn) == []
            per_call = conn.execute("SELECT * FROM agent_cost_per_call").fetchone()
            by_agent = conn.execute("SELECT * FROM agent_cost_by_agent").fetchall()
        # 1 fail-over call + 3 plain + 100 bulk + 1 multi-attempt; denials are not calls.
        assert per_call["calls"] == 105
        assert {r["agent_name"] for r in by_agent} == {"ops", "writer", "broke"}


def test_rollup_stays_exact_after_owner_updates_and_deletes(two_tenants, app_pool, owner_dsn):
    a, b = two_tenants
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("UPDATE agent_calls SET cost_usd = cost_usd * 2, outcome = 'server' "
                     "WHERE tenant_id = %s AND outcome = 'ok' AND output_tokens %% 3 = 0",
                     [a.id])
        conn.execute("DELETE FROM agent_calls WHERE tenant_id = %s AND attempt_no = 2",
                     [b.id])
    for tenant in two_tenants:
        with tenant_transaction(app_pool, tenant.id) as conn:
            assert mismatches(conn) == []


def test_tenant_b_sees_none_of_tenant_as_rollup_rows(two_tenants, app_pool):
    a, b = two_tenants
    with tenant_transaction(app_pool, a.id) as conn:
        assert conn.execute("SELECT count(*) AS n FROM agent_cost_daily").fetchone()["n"] > 0
    with tenant_transaction(app_pool, b.id) as conn:
        seen = conn.execute("SELECT DISTINCT tenant_id FROM agent_cost_daily").fetchall()
        assert [r["tenant_id"] for r in seen] == [b.id]
        for view in DIRECT:
            leaked = conn.execute(
                f"SELECT count(*) AS n FROM {view} WHERE tenant_id = %s", [a.id]).fetchone()
            assert leaked["n"] == 0, f"{view} shows tenant A's rows to tenant B"


def test_the_app_role_cannot_write_the_rollup(two_tenants, app_pool):
    a, _ = two_tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with tenant_transaction(app_pool, a.id) as conn:
            conn.execute("UPDATE agent_cost_daily SET cost_usd = 0")


def test_rls_audit_accepts_the_rollup(owner_dsn):
    with psycopg.connect(owner_dsn) as conn:
        assert rls_gaps(conn) == []
        forced = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                              "WHERE relname = 'agent_cost_daily'").fetchone()
        assert forced == (True, True)


def test_a_rollup_that_misses_rows_is_caught(two_tenants, owner_dsn, app_pool):
    """Break the invariant (insert with the trigger off) and see the comparison fail."""
    a, _ = two_tenants
    with psycopg.connect(owner_dsn) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("ALTER TABLE agent_calls DISABLE TRIGGER agent_cost_daily_insert")
            conn.execute(
                """INSERT INTO agent_calls (tenant_id, call_id, attempt_no, agent_id, provider,
                       deployment, model_requested, outcome, cost_usd)
                   SELECT tenant_id, gen_random_uuid(), 1, agent_id, 'openai', 'gpt',
                          'gpt-4.1', 'ok', 1 FROM agent_calls WHERE tenant_id = %s LIMIT 1""",
                [a.id])
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(a.id)])
            conn.row_factory = psycopg.rows.dict_row
            found = mismatches(conn)
    assert found and any("agent_cost_daily" in m for m in found), found
    with tenant_transaction(app_pool, a.id) as conn:  # rolled back: consistent again
        assert mismatches(conn) == []
