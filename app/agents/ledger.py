"""The cost ledger in Postgres: price versions, one row per attempt, the cost views.

`PostgresAccounting` is the router's accounting in production: `reserve` checks the agent's
budget (and writes a `budget_denied` ledger row when it refuses); `settle` prices the attempt
with the price version effective when it started, writes its ledger row and settles the
budget reservation, all in one tenant transaction. Both go through the SQL budget functions
(app/agents/budgets.py); an attempt billed above its reservation stops the agent.

Example:
    accounting = PostgresAccounting(pool)
    router = Router(deployments, accounting)
    router.complete(CallContext(tenant_id, agent_id, task_id), parts)
    cost_summary(pool, tenant_id)["today"]["cost_usd"]
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from app.agents import budgets
from app.agents.prices import DEFAULT_PRICES, Price, cost_usd
from app.agents.router import NO_USAGE, AttemptRecord, CallContext, Deployment
from app.db import tenant_transaction

_PRICE_COLUMNS = ("id, provider, model, effective_from, version, input_per_mtok, "
                  "output_per_mtok, cache_read_per_mtok, cache_write_per_mtok")


def seed_prices(conn: psycopg.Connection, tenant_id: Any,
                prices: tuple[Price, ...] = DEFAULT_PRICES) -> int:
    """Insert price versions that are not there yet; return how many were added."""
    added = 0
    for p in prices:
        added += conn.execute(
            """INSERT INTO model_prices (tenant_id, provider, model, effective_from, version,
                   input_per_mtok, output_per_mtok, cache_read_per_mtok, cache_write_per_mtok)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            [tenant_id, p.provider, p.model, p.effective_from, p.version, p.input_per_mtok,
             p.output_per_mtok, p.cache_read_per_mtok, p.cache_write_per_mtok],
        ).rowcount
    return added


def price_at(conn: psycopg.Connection, provider: str, model: str,
             at: datetime | None = None) -> Price:
    """The price version in force at `at` (newest effective_from not after it)."""
    at = at or datetime.now(UTC)
    row = conn.execute(
        f"""SELECT {_PRICE_COLUMNS} FROM model_prices
             WHERE provider = %s AND model = %s AND effective_from <= %s
             ORDER BY effective_from DESC LIMIT 1""",
        [provider, model, at],
    ).fetchone()
    if row is None:
        raise LookupError(
            f"no price for {provider}/{model} effective at {at.isoformat()}; run `vos agents "
            "seed-prices --tenant …` or insert a model_prices row before routing calls to it"
        )
    return Price(row["provider"], row["model"], row["input_per_mtok"], row["output_per_mtok"],
                 row["cache_read_per_mtok"], row["cache_write_per_mtok"],
                 row["effective_from"], row["version"], row["id"])


def insert_attempt(conn: psycopg.Connection, record: AttemptRecord,
                   price_id: Any = None) -> None:
    """Write one ledger row for one attempt."""
    ctx, usage = record.context, record.usage
    conn.execute(
        """INSERT INTO agent_calls (tenant_id, call_id, attempt_no, agent_id, task_id,
               provider, deployment, model_requested, model_served, uncached_input_tokens,
               cache_read_tokens, cache_write_tokens, output_tokens, latency_ms, outcome,
               next_action, http_status, error, price_id, cost_usd, started_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s, %s, %s)""",
        [ctx.tenant_id, ctx.call_id, record.attempt_no, ctx.agent_id, ctx.task_id,
         record.provider, record.deployment, record.model_requested, record.model_served,
         usage.uncached_input, usage.cache_read, usage.cache_write, usage.output,
         record.latency_ms, record.outcome, record.next_action, record.http_status,
         (record.error or None) and record.error[:1000], price_id, record.cost_usd,
         record.started_at],
    )


class PostgresAccounting:
    """Budget reservations and ledger rows in Postgres, one tenant transaction each."""

    def __init__(self, pool: Any):
        self.pool = pool
        self._denials: dict[Any, int] = {}

    def reserve(self, ctx: CallContext, deployment: Deployment, input_tokens: int,
                max_output_tokens: int) -> budgets.Reservation:
        worst = budgets.worst_case_usage(input_tokens, max_output_tokens)
        with tenant_transaction(self.pool, ctx.tenant_id, actor="agents") as conn:
            price = price_at(conn, deployment.provider_name, deployment.model)
            result = budgets.reserve(conn, ctx.tenant_id, ctx.agent_id, ctx.call_id, price,
                                     worst)
            if isinstance(result, budgets.Denial):
                attempt_no = self._next_denial_attempt(conn, ctx)
                insert_attempt(conn, AttemptRecord(
                    ctx, attempt_no, deployment.name, deployment.provider_name,
                    deployment.model, None, NO_USAGE, 0, "budget_denied",
                    "stop", None, result.message()), price.id)
        if isinstance(result, budgets.Denial):
            raise budgets.BudgetDenied(result)  # a BudgetExceeded with figures
        return result

    @staticmethod
    def _next_denial_attempt(conn: psycopg.Connection, ctx: CallContext) -> int:
        row = conn.execute(
            "SELECT coalesce(max(attempt_no), 0) + 1 AS n FROM agent_calls WHERE call_id = %s",
            [ctx.call_id],
        ).fetchone()
        return row["n"]

    def settle(self, reservation: budgets.Reservation, record: AttemptRecord) -> Decimal:
        with tenant_transaction(self.pool, record.context.tenant_id, actor="agents") as conn:
            price = price_at(conn, record.provider, record.model_requested, record.started_at)
            record.cost_usd = cost_usd(record.usage, price)
            insert_attempt(conn, record, price.id)
            budgets.settle(conn, reservation, record.cost_usd)
        return record.cost_usd


def cost_summary(pool: Any, tenant_id: Any) -> dict[str, Any]:
    """The Command Center's cost figures for one tenant, read from the views.

    Example:
        cost_summary(pool, tenant_id)["by_agent"][0]["agent_name"]
    """
    with tenant_transaction(pool, tenant_id) as conn:
        return {
            "today": conn.execute("SELECT * FROM agent_cost_today").fetchone() or {},
            "this_week": conn.execute("SELECT * FROM agent_cost_this_week").fetchone() or {},
            "per_call": conn.execute("SELECT * FROM agent_cost_per_call").fetchone() or {},
            "by_model": conn.execute(
                "SELECT * FROM agent_cost_by_model ORDER BY cost_usd DESC").fetchall(),
            "by_agent": conn.execute(
                "SELECT * FROM agent_cost_by_agent ORDER BY cost_usd DESC").fetchall(),
        }
