"""Tasks and agents, one tenant at a time: the dispatch engine's data operations.

Every function takes a connection opened by `app.db.tenant_transaction`, so row-level
security already limits it to one tenant, and the caller's transaction makes the change, its
task_event (written by trigger) and the NOTIFY atomic.

Example:
    with tenant_transaction(pool, tenant_id, actor="api") as conn:
        task = create_task(conn, tenant_id, title="Write the launch post", priority="P0")
        move_task(conn, task["id"], Status.ACTIVE)
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.dispatch.status import INITIAL, InvalidTransition, Status, check_transition

TASK_COLUMNS = (
    "id, tenant_id, title, body, status::text AS status, priority::text AS priority, "
    "assignee_id, claimed_by, lease_until, created_at, updated_at, "
    # the worker's failure state (migration 0301): attempts and backoff, budget parking
    "attempts, next_attempt_at, last_error, parked_at, parked_reason, parked_agent_id, "
    "parked_amount_usd, parked_budget_usd"
)
AGENT_COLUMNS = (
    "id, tenant_id, name, role, persona, manager_id, model_preferences, budget_usd, created_at, "
    # agents as code (migration 0300): retired agents stay for the ledger, take no new work
    "retired_at, budget_period, tools, is_orchestrator"
)


class NotFound(LookupError):
    """No such row in this tenant (another tenant's rows are indistinguishable from none)."""


class BadReference(ValueError):
    """An id that points at nothing in this tenant (e.g. an assignee of another tenant)."""


def _one(conn: psycopg.Connection, query: str, params: list[Any], what: str) -> dict:
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise NotFound(f"{what} not found in this tenant")
    return row


def _agent_must_exist(conn: psycopg.Connection, agent_id: uuid.UUID | None, field: str) -> None:
    """Give a clear error before the composite foreign key would give an obscure one."""
    if agent_id is None:
        return
    row = conn.execute("SELECT retired_at FROM agents WHERE id = %s", [agent_id]).fetchone()
    if row is None:
        raise BadReference(f"{field} {agent_id} is not an agent of this tenant")
    if row["retired_at"] is not None:
        raise BadReference(f"{field} {agent_id} is a retired agent (removed from the agents "
                           "file); choose a live one or add it back to the file")


# -- agents ----------------------------------------------------------------------------------

def create_agent(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    *,
    name: str,
    role: str = "",
    persona: str = "",
    manager_id: uuid.UUID | None = None,
    model_preferences: dict | None = None,
    budget_usd: float | str = 0,
) -> dict:
    """Add an agent to the org chart; `manager_id` must be an agent of the same tenant."""
    _agent_must_exist(conn, manager_id, "manager_id")
    return conn.execute(
        f"""INSERT INTO agents (tenant_id, name, role, persona, manager_id, model_preferences,
                                budget_usd)
            VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {AGENT_COLUMNS}""",
        [tenant_id, name, role, persona, manager_id, Jsonb(model_preferences or {}), budget_usd],
    ).fetchone()


def list_agents(conn: psycopg.Connection, *, include_retired: bool = False) -> list[dict]:
    """The tenant's agents by name; retired ones (removed from the agents file) only when
    asked for (their names still label old tasks and ledger rows)."""
    where = "" if include_retired else " WHERE retired_at IS NULL"
    return conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents{where} ORDER BY name").fetchall()


def get_agent(conn: psycopg.Connection, agent_id: uuid.UUID) -> dict:
    return _one(conn, f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = %s", [agent_id], "agent")


# -- tasks -----------------------------------------------------------------------------------

def create_task(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    *,
    title: str,
    body: str = "",
    priority: str = "P1",
    assignee_id: uuid.UUID | None = None,
    status: str = Status.DRAFT,
    task_id: uuid.UUID | None = None,
) -> dict:
    """Create a task (Draft by default, or Active to queue it for a worker at once)."""
    if Status(status) not in INITIAL:
        raise ValueError(f"a new task starts as Draft or Active, not {status}")
    _agent_must_exist(conn, assignee_id, "assignee_id")
    return conn.execute(
        f"""INSERT INTO tasks (id, tenant_id, title, body, priority, assignee_id, status)
            VALUES (coalesce(%s, gen_random_uuid()), %s, %s, %s, %s, %s, %s)
            RETURNING {TASK_COLUMNS}""",
        [task_id, tenant_id, title, body, priority, assignee_id, status],
    ).fetchone()


def get_task(conn: psycopg.Connection, task_id: uuid.UUID, *, for_update: bool = False) -> dict:
    lock = " FOR UPDATE" if for_update else ""
    return _one(
        conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s{lock}", [task_id], "task"
    )


def list_tasks(
    conn: psycopg.Connection,
    *,
    status: str | None = None,
    assignee_id: uuid.UUID | None = None,
    limit: int = 100,
) -> list[dict]:
    """Tasks of this tenant, most urgent and newest first."""
    return conn.execute(
        f"""SELECT {TASK_COLUMNS} FROM tasks
             WHERE (%(status)s::task_status IS NULL OR status = %(status)s::task_status)
               AND (%(assignee)s::uuid IS NULL OR assignee_id = %(assignee)s::uuid)
             ORDER BY priority, created_at DESC LIMIT %(limit)s""",
        {"status": status, "assignee": assignee_id, "limit": limit},
    ).fetchall()


def assign_task(
    conn: psycopg.Connection, task_id: uuid.UUID, assignee_id: uuid.UUID | None
) -> dict:
    """Give the task to an agent of this tenant (None unassigns)."""
    get_task(conn, task_id, for_update=True)
    _agent_must_exist(conn, assignee_id, "assignee_id")
    return conn.execute(
        f"UPDATE tasks SET assignee_id = %s WHERE id = %s RETURNING {TASK_COLUMNS}",
        [assignee_id, task_id],
    ).fetchone()


def move_task(conn: psycopg.Connection, task_id: uuid.UUID, target: Status | str) -> dict:
    """Move a task one step through the status machine; leaving Active drops any claim."""
    task = get_task(conn, task_id, for_update=True)
    check_transition(task["status"], target)
    return conn.execute(
        f"""UPDATE tasks SET status = %s,
                   claimed_by = CASE WHEN %s = 'Active' THEN claimed_by END,
                   lease_until = CASE WHEN %s = 'Active' THEN lease_until END
             WHERE id = %s RETURNING {TASK_COLUMNS}""",
        [str(Status(target)), str(Status(target)), str(Status(target)), task_id],
    ).fetchone()


def delete_task(conn: psycopg.Connection, task_id: uuid.UUID) -> None:
    """Delete a Draft task (anything further along stays, for the audit trail)."""
    task = get_task(conn, task_id, for_update=True)
    if task["status"] != Status.DRAFT:
        raise ValueError(f"only Draft tasks can be deleted; this one is {task['status']}")
    conn.execute("DELETE FROM tasks WHERE id = %s", [task_id])


def add_event(
    conn: psycopg.Connection, tenant_id: uuid.UUID, task_id: uuid.UUID, kind: str, payload: dict
) -> dict:
    """Append an event of this tenant's task (e.g. a worker's result, a callback)."""
    get_task(conn, task_id)
    return conn.execute(
        """INSERT INTO task_events (tenant_id, task_id, kind, payload) VALUES (%s, %s, %s, %s)
           RETURNING id, tenant_id, task_id, kind, payload, created_at""",
        [tenant_id, task_id, kind, Jsonb(payload)],
    ).fetchone()


def list_events(
    conn: psycopg.Connection,
    *,
    task_id: uuid.UUID | None = None,
    after_id: int = 0,
    limit: int = 200,
) -> list[dict]:
    """Events in order, optionally of one task and after a given id (for live feeds)."""
    return conn.execute(
        """SELECT id, tenant_id, task_id, kind, payload, created_at FROM task_events
            WHERE (%(task)s::uuid IS NULL OR task_id = %(task)s::uuid) AND id > %(after)s
            ORDER BY id LIMIT %(limit)s""",
        {"task": task_id, "after": after_id, "limit": limit},
    ).fetchall()


def retry_task(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    """Give a Failed task another round: Failed → Active with attempts, backoff and last
    error reset (the database's status trigger does the reset, so a plain move does too),
    and a `work.retry` event saying what it had failed with.

    Example:
        with tenant_transaction(pool, tenant_id, actor="operator:ana") as conn:
            retry_task(conn, task_id)["attempts"]    # 0
    """
    task = get_task(conn, task_id, for_update=True)
    if task["status"] != Status.FAILED:
        raise InvalidTransition(
            f"only a Failed task can be retried; this one is {task['status']}")
    add_event(conn, task["tenant_id"], task_id, "work.retry",
              {"attempts": task["attempts"], "last_error": task["last_error"]})
    return conn.execute(
        f"UPDATE tasks SET status = 'Active' WHERE id = %s RETURNING {TASK_COLUMNS}", [task_id]
    ).fetchone()


# -- review and the task detail view (Command Center task page, GET /tasks/{id}) --------------

MAX_REVIEW_COMMENT = 2000
EXCERPT_CHARS = 400
DETAIL_EVENTS = 500
DETAIL_ATTEMPTS = 200


def review_task(conn: psycopg.Connection, task_id: uuid.UUID, approve: bool,
                comment: str = "") -> dict:
    """Approve or reject a task in Review, with the reviewer's comment.

    Writes a `review.approved` / `review.rejected` event carrying the comment, then moves the
    task (Review → Approved / Rejected) in the caller's transaction, so a refused step writes
    no event either. A rejection needs a comment: it is what the rework starts from.

    Example:
        with tenant_transaction(pool, tenant_id, actor="ui:ada") as conn:
            review_task(conn, task_id, False, "Cite the runbook")["status"]   # 'Rejected'
    """
    if not isinstance(comment, str):
        raise ValueError("comment must be text")
    comment = comment.strip()
    if len(comment) > MAX_REVIEW_COMMENT:
        raise ValueError(f"comment: at most {MAX_REVIEW_COMMENT} characters, got {len(comment)}")
    if "\x00" in comment:
        raise ValueError("comment: must not contain NUL characters")
    if not approve and not comment:
        raise ValueError("comment: say what to change when rejecting (it guides the rework)")
    task = get_task(conn, task_id, for_update=True)
    target = Status.APPROVED if approve else Status.REJECTED
    check_transition(task["status"], target)
    kind = "review.approved" if approve else "review.rejected"
    actor = conn.execute("SELECT nullif(current_setting('app.actor', true), '') AS a"
                         ).fetchone()["a"]
    add_event(conn, task["tenant_id"], task_id, kind, {"comment": comment, "actor": actor})
    return move_task(conn, task_id, target)


def _task_passages(conn: psycopg.Connection, ids: list[int]) -> list[dict]:
    """The passages a result used, in the order used, each with its document; a passage
    removed since (its document replaced or removed) is listed with `missing: True`."""
    if not ids:
        return []
    rows = {r["id"]: r for r in conn.execute(
        """SELECT p.id, p.ordinal, left(p.body, %s) AS excerpt, length(p.body) > %s AS cut,
                  p.tokens, d.id AS document_id, d.title AS document_title,
                  d.source AS document_source
             FROM passages p JOIN documents d ON d.id = p.document_id
            WHERE p.id = ANY(%s)""", [EXCERPT_CHARS, EXCERPT_CHARS, ids])}
    return [rows.get(i) or {"id": i, "missing": True} for i in ids]


def task_detail(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    """Everything an operator needs to judge a task's result, in one read.

    The task's columns plus: `assignee_name`; `reply` (the latest `work.result`'s reply, or
    None), `result` (that event's payload without the reply); `passages` used by that
    result (id, excerpt, document title/source); `attempts` (every ledger row of the task:
    deployment, provider, models requested/served, the four token buckets, cost, latency,
    outcome, error, started_at; oldest first); `events` (the timeline, oldest first);
    `attempts_count` / `last_error` (the worker's failure state, None before migration 0301's
    columns exist); `review` (the latest review event's kind, comment and actor, or None).

    Example:
        with tenant_transaction(pool, tenant_id) as conn:
            detail = task_detail(conn, task_id)
            detail["reply"], [a["outcome"] for a in detail["attempts"]]
    """
    task = get_task(conn, task_id)
    assignee = conn.execute("SELECT name FROM agents WHERE id = %s",
                            [task["assignee_id"]]).fetchone() if task["assignee_id"] else None
    events = list_events(conn, task_id=task_id, limit=DETAIL_EVENTS)
    results = [e for e in events if e["kind"] == "work.result"]
    result = dict(results[-1]["payload"]) if results else None
    reply = result.pop("reply", None) if result else None
    passage_ids = [int(i) for i in (result or {}).get("passages") or []
                   if isinstance(i, int) or (isinstance(i, str) and i.isdigit())]
    attempts = conn.execute(
        """SELECT call_id, attempt_no, deployment, provider, model_requested, model_served,
                  uncached_input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
                  cost_usd, latency_ms, outcome, next_action, http_status, error, started_at
             FROM agent_calls WHERE task_id = %s
            ORDER BY started_at, id LIMIT %s""", [task_id, DETAIL_ATTEMPTS]).fetchall()
    reviews = [e for e in events if e["kind"] in ("review.approved", "review.rejected")]
    return {
        **task,
        "assignee_name": assignee["name"] if assignee else None,
        # the worker's attempt counter (H1's columns); `attempts` below is the ledger's list
        "attempts_count": task.get("attempts"),
        "last_error": task.get("last_error"),
        "reply": reply,
        "result": result,
        "passages": _task_passages(conn, passage_ids),
        "attempts": attempts,
        "events": events,
        "review": {"kind": reviews[-1]["kind"], **reviews[-1]["payload"]} if reviews else None,
    }
