"""The worker: claims Active tasks with `FOR UPDATE SKIP LOCKED`, runs them, hands them on, and
fails safely: failure is a state, not a loop.

Several workers on several hosts can poll the same tenant: each claim is one short
transaction that locks the row it takes and skips rows others hold, then records the claim
(`claimed_by`, `lease_until`) so no other worker takes the task while the work runs outside
any transaction. Every claim, result and release writes a task_event (and NOTIFY) in its
transaction. What happens to a task (policy: `app.dispatch.policy.WorkerPolicy`):

- the handler returns: the result is recorded and the task moves to Review;
- the handler raises: the attempt is counted, the claim released and the task not claimable
  before `next_attempt_at` (exponential backoff with jitter); after `max_attempts` failures it
  is **Failed** with its last error, until an operator retries it (`tasks.retry_task`);
- the handler raises `TaskParked` (the workforce does on a budget denial): the task stays
  Active but parked, claimable again only once the agent's budget_usd changed or a new budget
  window began;
- the handler raises `NotWorkable`: the task goes back to Draft with the reason;
- with `route_unassigned` (the agent workforce), a task with no assignee or a retired one is
  given to the tenant's orchestrator in the claim's transaction, or sent back to Draft with
  the reason when there is none;
- while the handler runs, a heartbeat thread renews the lease, so a long call is never
  claimed twice; a claim lost anyway (`ClaimLost`) is logged and the result dropped;
- the loop reaps budget reservations left open by dead callers, counts stale claims (they
  are simply claimable again), survives a Postgres outage with bounded pauses, and touches
  `heartbeat_file` for the container's health check.

Example:
    def handler(task: dict) -> dict:
        return {"summary": f"did {task['title']}"}

    worker = Worker(pool, worker_id="host-a/1", handler=handler,
                    policy=WorkerPolicy(max_attempts=3, backoff_base_seconds=10))
    worker.run_once(tenant_id)        # True if it did something, False if nothing is workable
    worker.drain([tenant_id])         # until nothing is workable now
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from app import jsonlog
from app.db import tenant_transaction
from app.dispatch.policy import WorkerPolicy
from app.dispatch.status import Status
from app.dispatch.tasks import TASK_COLUMNS, add_event

log = logging.getLogger("vos.worker")

Handler = Callable[[dict], dict]

ERROR_LIMIT = 2000  # tasks.last_error / parked_reason column limit
ROUTE_SCAN_LIMIT = 20  # tasks sent back to Draft per claim call, at most (bounded work)

# The most urgent workable task: Active (never Waiting, Paused or Cancelled), not claimed (or
# its lease ran out), not waiting out a backoff, not parked (or parked on a budget that changed
# since, or a window that rolled), and not of a paused agent: its tasks wait in the queue until
# an operator resumes it (skipped, not routed away; unassigned tasks still route).
_CANDIDATE = """
SELECT t.id, t.assignee_id, t.claimed_by, t.parked_at, t.parked_budget_usd,
       a.retired_at IS NOT NULL AS assignee_retired,
       p.budget_usd AS park_budget_now, p.budget_period AS park_period
  FROM tasks t
  LEFT JOIN agents a ON a.id = t.assignee_id
  LEFT JOIN agents p ON p.id = t.parked_agent_id
 WHERE t.status = 'Active'
   AND a.paused_at IS NULL
   AND (t.claimed_by IS NULL OR t.lease_until < now())
   AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= now())
   AND (t.parked_at IS NULL
        OR p.budget_usd IS DISTINCT FROM t.parked_budget_usd
        OR budget_period_start(p.budget_period, now()) > t.parked_at)
 ORDER BY t.priority, t.created_at
 LIMIT 1
 FOR UPDATE OF t SKIP LOCKED
"""

_CLAIM = f"""
UPDATE tasks SET claimed_by = %(worker)s,
                 lease_until = now() + make_interval(secs => %(lease)s),
                 parked_at = NULL, parked_reason = NULL, parked_agent_id = NULL,
                 parked_amount_usd = NULL, parked_budget_usd = NULL
 WHERE id = %(id)s
RETURNING {TASK_COLUMNS}
"""


class ClaimLost(RuntimeError):
    """The task is no longer claimed by this worker (lease expired and someone took it)."""


class TaskParked(Exception):  # noqa: N818 - it is an outcome, not an error
    """Raised by a handler: the task cannot run until an agent's budget allows it.

    The worker parks the task (Active, not claimable) with the agent, the amount it needed
    and the budget in force (`budget_usd`; None: read it now); it becomes claimable when the
    agent's budget_usd differs from that, or a new budget window began after `at`.

    Example:
        raise TaskParked("budget $5 exhausted", agent_id, Decimal("0.0123"), Decimal("5"))
    """

    def __init__(self, reason: str, agent_id: Any, amount_usd: Decimal | None = None,
                 budget_usd: Decimal | None = None, at: datetime | None = None):
        super().__init__(reason)
        self.reason, self.agent_id = reason, agent_id
        self.amount_usd, self.budget_usd = amount_usd, budget_usd
        self.at = at or datetime.now(UTC)


class TaskHeld(Exception):  # noqa: N818 - an outcome: out of the queue, no attempt counted
    """Raised by a handler: the task leaves the queue in a state `hold(conn)` writes, in the
    claim's transaction (the agent run: Waiting for its children, Paused for an operator).
    `outcome` is passed to the worker's `on_settled` hook ("held", or "breaker" when a circuit
    breaker stopped the run: it counts against the agent's failure streak).

    Example:
        raise TaskHeld("waiting for approval", lambda conn: pause_task(conn, task_id, why))
    """

    def __init__(self, reason: str, hold: Callable[[psycopg.Connection], None],
                 outcome: str = "held"):
        super().__init__(reason)
        self.reason, self.hold, self.outcome = reason, hold, outcome


class NotWorkable(Exception):  # noqa: N818 - an outcome: back to Draft, no retry
    """Raised by a handler: retrying cannot help (e.g. the task has no agent); the task goes
    back to Draft with this reason for an operator to fix."""


@dataclass(frozen=True)
class ClaimResult:
    """What one claim call did: the task it claimed (or None) and how many it routed away."""

    task: dict | None
    sent_to_draft: int = 0
    routed: int = 0


def find_orchestrator(conn: psycopg.Connection) -> tuple[dict | None, str]:
    """The tenant's orchestrator: the live agent marked so, else the single live agent with no
    manager. Returns (agent, "") or (None, why there is none).

    Example:
        agent, why = find_orchestrator(conn)
    """
    rows = conn.execute(
        """SELECT id, name, is_orchestrator FROM agents
            WHERE retired_at IS NULL AND (is_orchestrator OR manager_id IS NULL)
            ORDER BY is_orchestrator DESC, created_at"""
    ).fetchall()
    if rows and rows[0]["is_orchestrator"]:
        return rows[0], ""
    if len(rows) == 1:
        return rows[0], ""
    if not rows:
        return None, ("the tenant has no live agent without a manager to route unassigned work "
                      "to; declare one with `orchestrator: true` in the agents file")
    names = ", ".join(r["name"] for r in rows[:5]) + (", …" if len(rows) > 5 else "")
    return None, (f"{len(rows)} live agents have no manager ({names}) and none is marked "
                  "`orchestrator: true` in the agents file; mark one, or assign the task")


def _route(conn: psycopg.Connection, tenant_id: uuid.UUID, row: dict, worker_id: str
           ) -> bool:
    """Give an unassigned task (or one of a retired agent) to the orchestrator; False (and
    the task back in Draft with the reason) when there is none."""
    why = "no assignee" if row["assignee_id"] is None else "its assignee is retired"
    agent, missing = find_orchestrator(conn)
    if agent is not None:
        add_event(conn, tenant_id, row["id"], "work.routed", {
            "worker": worker_id, "reason": f"{why}: routed to the orchestrator",
            "agent_id": str(agent["id"]), "agent": agent["name"],
            "previous_assignee_id": row["assignee_id"] and str(row["assignee_id"])})
        conn.execute("UPDATE tasks SET assignee_id = %s WHERE id = %s", [agent["id"], row["id"]])
        return True
    reason = f"{why} and no orchestrator: {missing}"
    add_event(conn, tenant_id, row["id"], "work.unroutable", {"worker": worker_id,
                                                               "reason": reason})
    conn.execute(
        """UPDATE tasks SET status = 'Draft', last_error = %s, claimed_by = NULL,
                  lease_until = NULL, next_attempt_at = NULL WHERE id = %s""",
        [reason[:ERROR_LIMIT], row["id"]],
    )
    return False


def claim(pool: ConnectionPool, tenant_id: uuid.UUID, worker_id: str, *,
          lease_seconds: float = 300, route: bool = False) -> ClaimResult:
    """Claim the most urgent workable task of a tenant, routing it first when `route`.

    Tasks that cannot be routed go back to Draft in the same transaction (at most
    ROUTE_SCAN_LIMIT per call) and the next candidate is tried; a task routed to a paused
    orchestrator stays queued with it (the candidate query skips paused agents' tasks).
    """
    sent_to_draft = routed = 0
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        for _ in range(ROUTE_SCAN_LIMIT + 1):
            row = conn.execute(_CANDIDATE).fetchone()
            if row is None:
                break
            if route and (row["assignee_id"] is None or row["assignee_retired"]):
                if not _route(conn, tenant_id, row, worker_id):
                    sent_to_draft += 1
                    if sent_to_draft >= ROUTE_SCAN_LIMIT:
                        break
                    continue
                routed += 1
                # look again: the task now has an assignee, and a paused one is skipped
                continue
            if row["parked_at"] is not None:
                changed = row["park_budget_now"] != row["parked_budget_usd"]
                add_event(conn, tenant_id, row["id"], "work.unparked", {
                    "worker": worker_id,
                    "reason": (f"budget changed from ${row['parked_budget_usd']} to "
                               f"${row['park_budget_now']}") if changed else
                              f"a new {row['park_period']} budget window began"})
            if row["claimed_by"] is not None:
                jsonlog.emit(log, "stale_claim_taken", worker=worker_id, tenant=tenant_id,
                             task=row["id"], previous=row["claimed_by"])
            task = conn.execute(_CLAIM, {"worker": worker_id, "lease": lease_seconds,
                                         "id": row["id"]}).fetchone()
            return ClaimResult(task, sent_to_draft, routed)
    return ClaimResult(None, sent_to_draft, routed)


def claim_next(
    pool: ConnectionPool, tenant_id: uuid.UUID, worker_id: str, *, lease_seconds: float = 300,
    route: bool = False,
) -> dict | None:
    """Claim the most urgent workable task of a tenant, or return None (see `claim`)."""
    return claim(pool, tenant_id, worker_id, lease_seconds=lease_seconds, route=route).task


def _locked_own_claim(conn, task_id: uuid.UUID, worker_id: str) -> dict:
    row = conn.execute(
        "SELECT claimed_by, attempts, assignee_id FROM tasks "
        "WHERE id = %s AND status = 'Active' FOR UPDATE", [task_id]
    ).fetchone()
    if row is None or row["claimed_by"] != worker_id:
        raise ClaimLost(f"task {task_id} is no longer claimed by {worker_id}")
    return row


def renew_lease(pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID,
                worker_id: str, lease_seconds: float) -> None:
    """Extend our claim's lease by `lease_seconds` from now; ClaimLost if it is not ours."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        renewed = conn.execute(
            """UPDATE tasks SET lease_until = now() + make_interval(secs => %s)
                WHERE id = %s AND claimed_by = %s AND status = 'Active'""",
            [lease_seconds, task_id, worker_id],
        ).rowcount
    if renewed != 1:
        raise ClaimLost(f"task {task_id} is no longer claimed by {worker_id}")


Settled = Callable[[psycopg.Connection, dict, str], None]


def complete(
    pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID, worker_id: str, result: dict,
    *, on_settled: Settled | None = None, task: dict | None = None,
) -> None:
    """Record the result and move the task Active → Review, dropping the claim."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task_id, worker_id)
        if on_settled is not None:
            on_settled(conn, task or {"id": task_id}, "complete")
        add_event(conn, tenant_id, task_id, "work.result", {"worker": worker_id, **result})
        conn.execute(
            "UPDATE tasks SET status = %s, claimed_by = NULL, lease_until = NULL, "
            "next_attempt_at = NULL WHERE id = %s",
            [str(Status.REVIEW), task_id],
        )


def release(
    pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID, worker_id: str, error: str,
    *, policy: WorkerPolicy | None = None, rng: random.Random | None = None,
    on_settled: Settled | None = None, task: dict | None = None,
) -> dict:
    """Count a failed attempt: back to the queue after a backoff, or Failed after the last one.

    Returns {"attempt", "max_attempts", "status", "next_attempt_at"} as written in the
    `work.failed` event.
    """
    policy = policy or WorkerPolicy()
    error = error[:ERROR_LIMIT]
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        attempt = _locked_own_claim(conn, task_id, worker_id)["attempts"] + 1
        final = attempt >= policy.max_attempts
        next_at = None if final else conn.execute(
            "SELECT now() + make_interval(secs => %s) AS at",
            [policy.backoff(attempt, rng)]).fetchone()["at"]
        outcome = {"attempt": attempt, "max_attempts": policy.max_attempts,
                   "status": str(Status.FAILED if final else Status.ACTIVE),
                   "next_attempt_at": next_at and next_at.isoformat()}
        add_event(conn, tenant_id, task_id, "work.failed",
                  {"worker": worker_id, "error": error, **outcome})
        conn.execute(
            """UPDATE tasks SET claimed_by = NULL, lease_until = NULL, attempts = %s,
                      last_error = %s, next_attempt_at = %s, status = %s
                WHERE id = %s""",
            [attempt, error, next_at, outcome["status"], task_id],
        )
        if final and on_settled is not None:
            on_settled(conn, task or {"id": task_id}, "failed")
    return outcome


def park(pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID, worker_id: str,
         parked: TaskParked) -> None:
    """Park the task on an agent's budget (see TaskParked); no attempt is counted."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task_id, worker_id)
        budget = parked.budget_usd
        if budget is None:
            row = conn.execute("SELECT budget_usd FROM agents WHERE id = %s",
                               [parked.agent_id]).fetchone()
            budget = row and row["budget_usd"]
        add_event(conn, tenant_id, task_id, "work.parked", {
            "worker": worker_id, "reason": parked.reason[:ERROR_LIMIT],
            "agent_id": str(parked.agent_id),
            "amount_usd": None if parked.amount_usd is None else str(parked.amount_usd),
            "budget_usd": None if budget is None else str(budget)})
        conn.execute(
            """UPDATE tasks SET claimed_by = NULL, lease_until = NULL, parked_at = %s,
                      parked_reason = %s, parked_agent_id = %s, parked_amount_usd = %s,
                      parked_budget_usd = %s
                WHERE id = %s""",
            [parked.at, parked.reason[:ERROR_LIMIT], parked.agent_id, parked.amount_usd,
             budget, task_id],
        )


def hold(pool: ConnectionPool, tenant_id: uuid.UUID, task: dict, worker_id: str,
         held: TaskHeld, *, on_settled: Settled | None = None) -> None:
    """Write a handler's hold (see TaskHeld) in the claim's transaction; no attempt counted."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task["id"], worker_id)
        held.hold(conn)
        if on_settled is not None:
            on_settled(conn, task, held.outcome)


def back_to_draft(pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID,
                  worker_id: str, reason: str) -> None:
    """Send a claimed task back to Draft with the reason (a handler's NotWorkable)."""
    reason = reason[:ERROR_LIMIT] or "not workable"
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task_id, worker_id)
        add_event(conn, tenant_id, task_id, "work.not_workable",
                  {"worker": worker_id, "reason": reason})
        conn.execute(
            """UPDATE tasks SET status = 'Draft', claimed_by = NULL, lease_until = NULL,
                      next_attempt_at = NULL, last_error = %s WHERE id = %s""",
            [reason, task_id],
        )


class _LeaseHeartbeat:
    """Renews a claim's lease every `every` seconds in a thread until stopped or lost."""

    def __init__(self, worker: Worker, tenant_id: uuid.UUID, task_id: uuid.UUID):
        self.worker, self.tenant_id, self.task_id = worker, tenant_id, task_id
        self.stop_event = threading.Event()
        self.lost = False
        self.renewals = 0
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"lease-{str(task_id)[:8]}")

    def _run(self) -> None:
        policy = self.worker.policy
        while not self.stop_event.wait(policy.heartbeat_seconds):
            self.worker._touch_heartbeat_file()  # a long call is work, not a stuck loop
            try:
                renew_lease(self.worker.pool, self.tenant_id, self.task_id,
                            self.worker.worker_id, policy.lease_seconds)
                self.renewals += 1
            except ClaimLost as exc:
                self.lost = True
                jsonlog.emit(log, "claim_lost", level=logging.WARNING,
                             worker=self.worker.worker_id, tenant=self.tenant_id,
                             task=self.task_id, during="heartbeat", error=str(exc))
                return
            except Exception as exc:  # Postgres away: try again next beat, the lease may hold
                jsonlog.emit(log, "lease_renew_failed", level=logging.WARNING,
                             worker=self.worker.worker_id, task=self.task_id,
                             error=type(exc).__name__)

    def __enter__(self) -> _LeaseHeartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=self.worker.policy.heartbeat_seconds + 15)


@dataclass
class Worker:
    """Polls tenants for workable tasks and runs `handler` on each one it claims.

    `route_unassigned`: give tasks without a (live) assignee to the orchestrator first; the
    agent workforce needs it, a generic handler gets tasks as they are.
    """

    pool: ConnectionPool
    worker_id: str
    handler: Handler
    policy: WorkerPolicy = field(default_factory=WorkerPolicy)
    route_unassigned: bool = False
    rng: random.Random = field(default_factory=random.Random)
    # called in the transaction that writes a task's outcome: "complete", "failed" (out of
    # attempts), or a TaskHeld's outcome (the agent run keeps its failure streaks with it)
    on_settled: Settled | None = None
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("worked", "failed", "parked", "held", "draft", "routed", "claims_lost",
         "reaped_reservations",
         "stale_claims", "db_errors"), 0))
    _last_reap: float = field(default=float("-inf"), repr=False)

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def run_once(self, tenant_id: uuid.UUID) -> bool:
        """Claim and work at most one task of `tenant_id`; True if it did anything (worked a
        task, or sent unroutable ones back to Draft), False if nothing is workable now."""
        result = claim(self.pool, tenant_id, self.worker_id,
                       lease_seconds=self.policy.lease_seconds, route=self.route_unassigned)
        self._count("draft", result.sent_to_draft)
        self._count("routed", result.routed)
        task = result.task
        if task is None:
            return result.sent_to_draft > 0
        outcome: tuple[str, Any]
        with _LeaseHeartbeat(self, tenant_id, task["id"]):
            try:
                outcome = ("complete", self.handler(task))
            except TaskParked as parked:
                outcome = ("park", parked)
            except TaskHeld as held:
                outcome = ("hold", held)
            except NotWorkable as exc:
                outcome = ("draft", str(exc))
            except Exception as exc:  # the handler is the agent's work: any failure counts
                outcome = ("release", f"{type(exc).__name__}: {exc}")
        self._settle(tenant_id, task, *outcome)
        return True

    def _settle(self, tenant_id: uuid.UUID, task: dict, kind: str, value: Any) -> None:
        """Write the attempt's outcome; a lost claim drops it (the new owner's work counts)."""
        try:
            if kind == "complete":
                complete(self.pool, tenant_id, task["id"], self.worker_id, value,
                         on_settled=self.on_settled, task=task)
                self._count("worked")
            elif kind == "hold":
                hold(self.pool, tenant_id, task, self.worker_id, value,
                     on_settled=self.on_settled)
                self._count("held")
                jsonlog.emit(log, "task_held", worker=self.worker_id, task=task["id"],
                             reason=value.reason[:200])
            elif kind == "park":
                park(self.pool, tenant_id, task["id"], self.worker_id, value)
                self._count("parked")
                jsonlog.emit(log, "task_parked", worker=self.worker_id, task=task["id"],
                             agent=value.agent_id)
            elif kind == "draft":
                back_to_draft(self.pool, tenant_id, task["id"], self.worker_id, value)
                self._count("draft")
            else:
                outcome = release(self.pool, tenant_id, task["id"], self.worker_id, value,
                                  policy=self.policy, rng=self.rng,
                                  on_settled=self.on_settled, task=task)
                self._count("failed")
                jsonlog.emit(log, "task_failed", level=logging.WARNING, worker=self.worker_id,
                             task=task["id"], **outcome)
        except ClaimLost as exc:
            self._count("claims_lost")
            jsonlog.emit(log, "claim_lost", level=logging.WARNING, worker=self.worker_id,
                         tenant=tenant_id, task=task["id"], during=kind, error=str(exc))

    def reap(self, tenant_ids: Iterable[uuid.UUID]) -> dict[str, int]:
        """Settle budget reservations left open by dead callers and count stale claims (they
        are claimable again as they are), per tenant; returns the totals."""
        from app.agents.budgets import expire_stale  # the agents stack only when reaping

        totals = {"reservations": 0, "stale_claims": 0}
        for tenant_id in tenant_ids:
            with tenant_transaction(self.pool, tenant_id, actor=f"worker:{self.worker_id}"
                                    ) as conn:
                settled = expire_stale(conn, self.policy.stale_reservation_seconds,
                                       limit=self.policy.reap_limit)
                stale = conn.execute(
                    """SELECT count(*) AS n FROM tasks WHERE status = 'Active'
                          AND claimed_by IS NOT NULL AND lease_until < now()"""
                ).fetchone()["n"]
            if settled or stale:
                jsonlog.emit(log, "reaped", worker=self.worker_id, tenant=tenant_id,
                             reservations=settled, stale_claims=stale)
            totals["reservations"] += settled
            totals["stale_claims"] += stale
        self._count("reaped_reservations", totals["reservations"])
        self._count("stale_claims", totals["stale_claims"])
        return totals

    def _maybe_reap(self, tenants: list[uuid.UUID]) -> None:
        if time.monotonic() - self._last_reap >= self.policy.reap_seconds:
            self._last_reap = time.monotonic()
            self.reap(tenants)

    def _touch_heartbeat_file(self) -> None:
        if self.policy.heartbeat_file:
            try:
                Path(self.policy.heartbeat_file).touch()
            except OSError as exc:
                jsonlog.emit(log, "heartbeat_file_failed", level=logging.WARNING,
                             path=self.policy.heartbeat_file, error=type(exc).__name__)

    def run(self, tenant_ids: Iterable[uuid.UUID], stop: threading.Event,
            idle_seconds: float | None = None) -> None:
        """Loop over the tenants until `stop` is set: sleep when nothing is workable, pause
        (growing, capped at db_retry_max_seconds) while Postgres is unreachable."""
        tenants = list(tenant_ids)
        idle = self.policy.idle_seconds if idle_seconds is None else idle_seconds
        outage = 0
        while not stop.is_set():
            self._touch_heartbeat_file()
            try:
                self._maybe_reap(tenants)
                worked = sum(self.run_once(t) for t in tenants)
                outage = 0
            except psycopg.OperationalError as exc:
                outage += 1
                self._count("db_errors")
                pause = min(idle * 2 ** min(outage, 16), self.policy.db_retry_max_seconds)
                jsonlog.emit(log, "db_unavailable", level=logging.ERROR, worker=self.worker_id,
                             error=type(exc).__name__, retry_in_seconds=round(pause, 2))
                stop.wait(pause)
                continue
            except Exception as exc:  # our own bug or a bad row: say so, pause, carry on
                jsonlog.emit(log, "worker_error", level=logging.ERROR, worker=self.worker_id,
                             error=f"{type(exc).__name__}: {exc}"[:500])
                stop.wait(max(idle, 1.0))
                continue
            if not worked:
                stop.wait(idle)

    def serve(self, tenant_ids: Iterable[uuid.UUID], idle_seconds: float | None = None
              ) -> None:
        """`run` until Ctrl-C or SIGTERM (the long-running worker process)."""
        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            self.run(tenant_ids, stop, idle_seconds=idle_seconds)
        except KeyboardInterrupt:
            stop.set()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def drain(self, tenant_ids: Iterable[uuid.UUID]) -> int:
        """Work every tenant's queue until nothing is workable now (tasks waiting out a
        backoff, Failed, parked and Draft ones don't count); returns how many tasks were
        worked into Review.

        Example (a batch job, or a test):
            worked = Worker(pool, "batch-1", handler).drain([tenant_id])
        """
        tenants = list(tenant_ids)
        self.reap(tenants)
        before = self.stats["worked"]
        while sum(self.run_once(t) for t in tenants):
            pass
        return self.stats["worked"] - before
