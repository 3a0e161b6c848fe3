"""The worker: claims Active tasks with `FOR UPDATE SKIP LOCKED`, runs them, hands them on.

Several workers on several hosts can poll the same tenant: each claim is one short
transaction that locks the row it takes and skips rows others hold, then records the claim
(`claimed_by`, `lease_until`) so no other worker takes the task while the work runs outside
any transaction. A claim whose lease ran out (its worker died) can be taken again.
Every claim, result and release writes a task_event (and NOTIFY) in its transaction.

Example:
    def handler(task: dict) -> dict:
        return {"summary": f"did {task['title']}"}

    worker = Worker(pool, worker_id="host-a/1", handler=handler)
    worker.run_once(tenant_id)        # True if it worked a task, False if the queue was empty
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from app.db import tenant_transaction
from app.dispatch.status import Status
from app.dispatch.tasks import TASK_COLUMNS, add_event

log = logging.getLogger("vos.worker")

Handler = Callable[[dict], dict]

_CLAIM = f"""
UPDATE tasks SET claimed_by = %(worker)s,
                 lease_until = now() + make_interval(secs => %(lease)s)
 WHERE id = (SELECT id FROM tasks
              WHERE status = 'Active' AND (claimed_by IS NULL OR lease_until < now())
              ORDER BY priority, created_at
              LIMIT 1
              FOR UPDATE SKIP LOCKED)
RETURNING {TASK_COLUMNS}
"""


class ClaimLost(RuntimeError):
    """The task is no longer claimed by this worker (lease expired and someone took it)."""


def claim_next(
    pool: ConnectionPool, tenant_id: uuid.UUID, worker_id: str, *, lease_seconds: float = 300
) -> dict | None:
    """Claim the most urgent unclaimed Active task of a tenant, or return None."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        return conn.execute(_CLAIM, {"worker": worker_id, "lease": lease_seconds}).fetchone()


def _locked_own_claim(conn, task_id: uuid.UUID, worker_id: str) -> None:
    row = conn.execute(
        "SELECT claimed_by FROM tasks WHERE id = %s AND status = 'Active' FOR UPDATE", [task_id]
    ).fetchone()
    if row is None or row["claimed_by"] != worker_id:
        raise ClaimLost(f"task {task_id} is no longer claimed by {worker_id}")


def complete(
    pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID, worker_id: str, result: dict
) -> None:
    """Record the result and move the task Active → Review, dropping the claim."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task_id, worker_id)
        add_event(conn, tenant_id, task_id, "work.result", {"worker": worker_id, **result})
        conn.execute(
            "UPDATE tasks SET status = %s, claimed_by = NULL, lease_until = NULL WHERE id = %s",
            [str(Status.REVIEW), task_id],
        )


def release(
    pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID, worker_id: str, error: str
) -> None:
    """Give a task back to the queue after a failed attempt, recording why."""
    with tenant_transaction(pool, tenant_id, actor=f"worker:{worker_id}") as conn:
        _locked_own_claim(conn, task_id, worker_id)
        add_event(conn, tenant_id, task_id, "work.failed", {"worker": worker_id, "error": error})
        conn.execute(
            "UPDATE tasks SET claimed_by = NULL, lease_until = NULL WHERE id = %s", [task_id]
        )


@dataclass
class Worker:
    """Polls tenants for Active tasks and runs `handler` on each one it claims."""

    pool: ConnectionPool
    worker_id: str
    handler: Handler
    lease_seconds: float = 300

    def run_once(self, tenant_id: uuid.UUID) -> bool:
        """Claim and work at most one task of `tenant_id`; True if one was worked."""
        task = claim_next(self.pool, tenant_id, self.worker_id, lease_seconds=self.lease_seconds)
        if task is None:
            return False
        try:
            result = self.handler(task)
        except Exception as exc:  # the handler is the agent's work: any failure is reported
            log.warning("task %s failed in %s: %s", task["id"], self.worker_id, exc)
            error = f"{type(exc).__name__}: {exc}"
            release(self.pool, tenant_id, task["id"], self.worker_id, error)
            return True
        complete(self.pool, tenant_id, task["id"], self.worker_id, result)
        return True

    def run(
        self, tenant_ids: Iterable[uuid.UUID], stop: threading.Event, idle_seconds: float = 1.0
    ) -> None:
        """Loop over the tenants until `stop` is set, sleeping when every queue is empty."""
        tenants = list(tenant_ids)
        while not stop.is_set():
            worked = sum(self.run_once(t) for t in tenants)
            if not worked:
                stop.wait(idle_seconds)

    def serve(self, tenant_ids: Iterable[uuid.UUID], idle_seconds: float = 1.0) -> None:
        """`run` until Ctrl-C (the long-running worker process)."""
        stop = threading.Event()
        try:
            self.run(tenant_ids, stop, idle_seconds=idle_seconds)
        except KeyboardInterrupt:
            stop.set()

    def drain(self, tenant_ids: Iterable[uuid.UUID]) -> int:
        """Work every tenant's queue until all are empty; returns how many tasks were worked.

        Example (a batch job, or a test):
            worked = Worker(pool, "batch-1", handler).drain([tenant_id])
        """
        tenants, worked = list(tenant_ids), 0
        while round_worked := sum(self.run_once(t) for t in tenants):
            worked += round_worked
        return worked
