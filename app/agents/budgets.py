"""Per-agent budgets with a hard stop, enforced in the transaction that reserves the call.

Before an attempt we reserve its worst-case cost: an upper bound of the input tokens that
holds for any input (`PromptParts.max_input_tokens`: UTF-8 bytes plus framing, see
app/agents/tokens.py), all priced at the dearest input rate (uncached, cache write or cache
read), plus the full `max_tokens` of output. The reservation takes the agent's `agent_spend`
row lock (`SELECT … FOR UPDATE`), so concurrent calls queue on it and each sees the others'
reservations: spent + reserved never passes `agents.budget_usd`. After the attempt the
reservation is settled with the actual cost, in the same transaction as the attempt's
ledger row.

Spend changes only through SQL functions (app/db/migrations/0305_budget_functions.sql):
`budget_reserve`, `budget_settle`, `budget_expire_stale`, `budget_resume`. They are
SECURITY DEFINER, filter by the caller's `app.tenant_id`, and the app role may not INSERT,
UPDATE or DELETE `agent_spend` / `budget_reservations` itself. This module only calls them.

Budgets have a period (`agents.budget_period`: total, day, week or month, UTC windows): the
spend compared against `budget_usd` is the spend of the current window. `agent_spend` keeps
the window's start (`period_start`); the first reservation in a newer window resets
`spent_usd` to 0 under the same row lock (the ledger, `agent_calls`, keeps all history).
Money reserved in the old window and settled in the new one counts in the new one.

Overshoot: if an attempt's actual cost exceeds its reservation (a provider billing more than
the bound allows, e.g. after a price change), the settle records it in `budget_overshoots`
and stops the agent: every further reservation is a denial until an operator changes
`agents.budget_usd` or calls `resume`.

Example:
    >>> worst_case_usage(1000, 256)
    Usage(uncached_input=1000, cache_read=0, cache_write=0, output=256)
"""

import logging
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import psycopg

from app.agents.prices import COST_QUANTUM, MILLION, Price, Usage
from app.agents.router import BudgetExceeded

log = logging.getLogger(__name__)


def worst_case_usage(max_input_tokens: int, max_output_tokens: int) -> Usage:
    """The most a call can use: its input-token bound, all uncached, and its output cap.

    `max_input_tokens` is already an upper bound (`PromptParts.max_input_tokens`), so no
    safety margin is added; `worst_case_cost` prices it at the dearest input rate.
    """
    if max_input_tokens < 0 or max_output_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got input={max_input_tokens} "
                         f"output={max_output_tokens}")
    return Usage(max_input_tokens, 0, 0, max_output_tokens)


def worst_case_cost(worst: Usage, price: Price) -> Decimal:
    """What `worst` can cost at most: every input token at the dearest of the uncached,
    cache-write and cache-read rates (a cache write costs 1.25x-2x an uncached token),
    output at the output rate, rounded UP to 1e-8 USD so it never falls below `cost_usd`.

    Example:
        >>> p = Price("anthropic", "m", Decimal(3), Decimal(15), Decimal("0.3"), Decimal("3.75"))
        >>> worst_case_cost(Usage(1000, 0, 0, 100), p)
        Decimal('0.00525000')
    """
    input_rate = max(price.input_per_mtok, price.cache_write_per_mtok, price.cache_read_per_mtok)
    total = (worst.total_input * input_rate + worst.output * price.output_per_mtok) / MILLION
    return total.quantize(COST_QUANTUM, rounding=ROUND_CEILING)


@dataclass(frozen=True)
class Reservation:
    """Money set aside for one attempt; settled exactly once."""

    id: int
    agent_id: Any
    estimated_usd: Decimal
    price: Price


@dataclass(frozen=True)
class Denial:
    """Why a reservation was refused, with the figures an operator needs.

    `stopped_reason` is set when the agent is stopped after an overshoot (then the figures
    are its current spend, and no amount of headroom lets a call through).
    """

    agent_id: Any
    budget_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    estimated_usd: Decimal

    period: str = "total"
    stopped_reason: str | None = None

    def message(self) -> str:
        if self.stopped_reason:
            return f"agent {self.agent_id} is stopped: {self.stopped_reason}"
        window = "" if self.period == "total" else f" this {self.period} (UTC)"
        return (
            f"agent {self.agent_id} budget ${self.budget_usd}{window} is exhausted: spent "
            f"${self.spent_usd:.6f} + in flight ${self.reserved_usd:.6f} + this call's "
            f"worst case ${self.estimated_usd:.6f} would exceed it. Raise agents.budget_usd "
            "or wait for in-flight calls to settle."
        )


class BudgetDenied(BudgetExceeded):
    """BudgetExceeded with the figures of the refusal (`denial`), for whoever parks the task.

    Example:
        except BudgetDenied as exc:
            park(task, agent=exc.denial.agent_id, amount=exc.denial.estimated_usd)
    """

    def __init__(self, denial: Denial):
        super().__init__(denial.message())
        self.denial = denial


def reserve(conn: psycopg.Connection, tenant_id: Any, agent_id: Any, call_id: Any,
            price: Price, worst_case: Usage) -> Reservation | Denial:
    """Reserve the worst-case cost under the agent's spend-row lock, or return a Denial.

    Must run inside `tenant_transaction` for `tenant_id` (the SQL function acts on the
    transaction's `app.tenant_id` only); the lock is held until that transaction ends.
    Raises LookupError when the agent is not this tenant's.

    Example:
        with tenant_transaction(pool, tenant_id) as conn:
            r = reserve(conn, tenant_id, agent_id, uuid4(), price, worst_case_usage(900, 64))
    """
    estimate = worst_case_cost(worst_case, price)
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
            row = conn.execute(
                "SELECT reservation, spent, reserved, budget, period, stop_reason "
                "FROM budget_reserve(%s, %s, %s)",
                [agent_id, call_id, estimate],
            ).fetchone()
    except psycopg.errors.NoDataFound as exc:
        raise LookupError(f"agent {agent_id} does not exist in tenant {tenant_id}") from exc
    reservation, spent, reserved, budget, period, stop_reason = _row_values(
        row, ("reservation", "spent", "reserved", "budget", "period", "stop_reason"))
    if reservation is None:
        return Denial(agent_id, budget, spent, reserved, estimate, period, stop_reason)
    return Reservation(reservation, agent_id, estimate, price)


def settle(conn: psycopg.Connection, reservation: Reservation, actual_usd: Decimal) -> Decimal:
    """Turn a reservation into spend: release the estimate, add the actual cost.

    Returns the overshoot (actual above the reservation; normally 0). A positive overshoot is
    recorded in `budget_overshoots` and stops the agent (see the module docstring).

    Example:
        with tenant_transaction(pool, tenant_id) as conn:
            settle(conn, reservation, Decimal("0.0031"))   # Decimal('0')
    """
    row = conn.execute("SELECT settled, overshoot FROM budget_settle(%s, %s)",
                       [reservation.id, actual_usd]).fetchone()
    settled, overshoot = _row_values(row, ("settled", "overshoot"))
    if not settled:
        raise RuntimeError(f"budget reservation {reservation.id} was already settled (or is "
                           "not one of this tenant's)")
    if overshoot > 0:
        log.warning("budget overshoot: agent %s reservation %s cost %s, %s over its worst "
                    "case; the agent is stopped until an operator acts", reservation.agent_id,
                    reservation.id, actual_usd, overshoot)
    return overshoot


def expire_stale(conn: psycopg.Connection, older_than_seconds: float = 900,
                 limit: int | None = None) -> int:
    """Settle reservations left open by a crashed caller, charging their full estimate.

    An attempt that never settled may still have been billed by the provider, so the
    worst case is the honest charge; it also frees the agent's reserved money. Returns how
    many were settled (at most `limit`, oldest first). The dispatch worker runs it every
    `WorkerPolicy.reap_seconds` inside each served tenant's transaction.

    Example:
        with tenant_transaction(pool, tenant_id, actor="reaper") as conn:
            settled = expire_stale(conn, older_than_seconds=900, limit=500)
    """
    row = conn.execute("SELECT budget_expire_stale(%s, %s) AS n",
                       [float(older_than_seconds), limit]).fetchone()
    return _row_values(row, ("n",))[0]


def resume(conn: psycopg.Connection, agent_id: Any) -> bool:
    """An operator's "go on" for an agent stopped after an overshoot; True if it was stopped.

    Changing `agents.budget_usd` lifts the stop too (at the agent's next reservation).

    Example:
        with tenant_transaction(pool, tenant_id, actor="operator") as conn:
            resume(conn, agent_id)
    """
    row = conn.execute("SELECT budget_resume(%s) AS resumed", [agent_id]).fetchone()
    return bool(_row_values(row, ("resumed",))[0])


def _row_values(row: Any, keys: tuple[str, ...]) -> tuple:
    """Read a row from either a dict-row or a tuple-row connection."""
    if isinstance(row, dict):
        return tuple(row[k] for k in keys)
    return tuple(row)
