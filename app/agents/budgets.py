"""Per-agent budgets with a hard stop, enforced in the transaction that reserves the call.

Before an attempt we reserve its worst-case cost: every prompt token uncached, with a safety
margin over our token estimate, plus the full `max_tokens` of output. The reservation takes
the agent's `agent_spend` row lock (`SELECT … FOR UPDATE`), so concurrent calls queue on it
and each sees the others' reservations: spent + reserved never passes `agents.budget_usd`.
After the attempt the reservation is settled with the actual cost, in the same transaction
as the attempt's ledger row.

Example:
    >>> worst_case_usage(1000, 256)
    Usage(uncached_input=1266, cache_read=0, cache_write=0, output=256)
"""

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from app.agents.prices import Price, Usage, cost_usd

# Our estimate counts word pieces; provider tokenizers may count a little more.
INPUT_SAFETY_MARGIN = 1.25
INPUT_SAFETY_TOKENS = 16


def worst_case_usage(estimated_input_tokens: int, max_output_tokens: int) -> Usage:
    """The most a call can be billed for, given our estimate and its output cap."""
    padded = math.ceil(estimated_input_tokens * INPUT_SAFETY_MARGIN) + INPUT_SAFETY_TOKENS
    return Usage(padded, 0, 0, max_output_tokens)


@dataclass(frozen=True)
class Reservation:
    """Money set aside for one attempt; settled exactly once."""

    id: int
    agent_id: Any
    estimated_usd: Decimal
    price: Price


@dataclass(frozen=True)
class Denial:
    """Why a reservation was refused, with the figures an operator needs."""

    agent_id: Any
    budget_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    estimated_usd: Decimal

    def message(self) -> str:
        return (
            f"agent {self.agent_id} budget ${self.budget_usd} is exhausted: spent "
            f"${self.spent_usd:.6f} + in flight ${self.reserved_usd:.6f} + this call's "
            f"worst case ${self.estimated_usd:.6f} would exceed it. Raise agents.budget_usd "
            "or wait for in-flight calls to settle."
        )


def reserve(conn: psycopg.Connection, tenant_id: Any, agent_id: Any, call_id: Any,
            price: Price, worst_case: Usage) -> Reservation | Denial:
    """Reserve the worst-case cost under the agent's spend-row lock, or return a Denial.

    Must run inside `tenant_transaction`; the lock is held until that transaction ends.
    """
    estimate = cost_usd(worst_case, price)
    conn.execute(
        "INSERT INTO agent_spend (tenant_id, agent_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        [tenant_id, agent_id],
    )
    row = conn.execute(
        """SELECT s.spent_usd, s.reserved_usd, a.budget_usd
             FROM agent_spend s JOIN agents a ON a.id = s.agent_id
            WHERE s.agent_id = %s
              FOR UPDATE OF s""",
        [agent_id],
    ).fetchone()
    if row is None:
        raise LookupError(f"agent {agent_id} does not exist in tenant {tenant_id}")
    spent, reserved, budget = _row_values(row, ("spent_usd", "reserved_usd", "budget_usd"))
    if spent + reserved + estimate > budget:
        return Denial(agent_id, budget, spent, reserved, estimate)
    conn.execute(
        "UPDATE agent_spend SET reserved_usd = reserved_usd + %s, updated_at = now() "
        "WHERE agent_id = %s",
        [estimate, agent_id],
    )
    reservation = conn.execute(
        """INSERT INTO budget_reservations (tenant_id, agent_id, call_id, estimated_usd)
           VALUES (%s, %s, %s, %s) RETURNING id""",
        [tenant_id, agent_id, call_id, estimate],
    ).fetchone()
    return Reservation(_row_values(reservation, ("id",))[0], agent_id, estimate, price)


def settle(conn: psycopg.Connection, reservation: Reservation, actual_usd: Decimal) -> None:
    """Turn a reservation into spend: release the estimate, add the actual cost."""
    updated = conn.execute(
        """UPDATE budget_reservations SET status = 'settled', actual_usd = %s,
                  settled_at = now()
            WHERE id = %s AND status = 'open'""",
        [actual_usd, reservation.id],
    ).rowcount
    if updated != 1:
        raise RuntimeError(f"budget reservation {reservation.id} was already settled")
    conn.execute(
        """UPDATE agent_spend SET reserved_usd = reserved_usd - %s,
                  spent_usd = spent_usd + %s, updated_at = now()
            WHERE agent_id = %s""",
        [reservation.estimated_usd, actual_usd, reservation.agent_id],
    )


def expire_stale(conn: psycopg.Connection, older_than_seconds: float = 900) -> int:
    """Settle reservations left open by a crashed caller, charging their full estimate.

    An attempt that never settled may still have been billed by the provider, so the
    worst case is the honest charge; it also frees the agent's reserved money. Returns how
    many were settled. Run it periodically (or before reading budgets) inside a tenant
    transaction.
    """
    stale = conn.execute(
        """UPDATE budget_reservations SET status = 'settled', actual_usd = estimated_usd,
                  settled_at = now()
            WHERE status = 'open' AND created_at < now() - make_interval(secs => %s)
        RETURNING agent_id, estimated_usd""",
        [older_than_seconds],
    ).fetchall()
    for row in stale:
        agent_id, estimate = _row_values(row, ("agent_id", "estimated_usd"))
        conn.execute(
            """UPDATE agent_spend SET reserved_usd = reserved_usd - %s,
                      spent_usd = spent_usd + %s, updated_at = now()
                WHERE agent_id = %s""",
            [estimate, estimate, agent_id],
        )
    return len(stale)


def _row_values(row: Any, keys: tuple[str, ...]) -> tuple:
    """Read a row from either a dict-row or a tuple-row connection."""
    if isinstance(row, dict):
        return tuple(row[k] for k in keys)
    return tuple(row)
