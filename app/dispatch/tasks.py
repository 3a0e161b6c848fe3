"""Tasks and agents, one tenant at a time: the dispatch engine's data operations.

Every function takes a connection opened by `app.db.tenant_transaction`, so row-level
security already limits it to one tenant, and the caller's transaction makes the change, its
task_event (written by trigger) and the NOTIFY atomic.

Orchestration (issue #16, migration 0308): a task may be delegated into child tasks
(`create_child_task`), waits while they run (`wait_for_children`) and goes back to work when
the last one is settled; a run pauses for a reason or a tool call's approval (`pause_task`,
`request_approval`) until an operator resumes it or decides (`resume_task`,
`decide_approval`); cancelling cancels the open descendants too (`cancel_task`); an agent that
fails too many tasks in a row is paused (`note_task_outcome`, `resume_agent`); `inbox` is
what waits for an operator.

Lock order: whoever changes a task of a tree locks the task's parent before the task, and a
cascade locks ancestors before descendants, so two writers never wait on each other in a
cycle, and two concurrent approvals of the last two children cannot both miss the parent.

Example:
    with tenant_transaction(pool, tenant_id, actor="api") as conn:
        task = create_task(conn, tenant_id, title="Write the launch post", priority="P0")
        move_task(conn, task["id"], Status.ACTIVE)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.dispatch.status import (
    INITIAL,
    SETTLED,
    InvalidTransition,
    Status,
    check_transition,
)

TASK_COLUMNS = (
    "id, tenant_id, title, body, status::text AS status, priority::text AS priority, "
    "assignee_id, claimed_by, lease_until, created_at, updated_at, "
    # the worker's failure state (migration 0301): attempts and backoff, budget parking
    "attempts, next_attempt_at, last_error, parked_at, parked_reason, parked_agent_id, "
    "parked_amount_usd, parked_budget_usd, "
    # orchestration (migration 0308); run_state is left out: it is the run's, and large
    "parent_id, depth, paused_reason, paused_at"
)
AGENT_COLUMNS = (
    "id, tenant_id, name, role, persona, manager_id, model_preferences, budget_usd, created_at, "
    # agents as code (migration 0300): retired agents stay for the ledger, take no new work
    "retired_at, budget_period, tools, is_orchestrator, "
    # orchestration (migration 0308): the failure-streak breaker and the run policy
    "paused_at, paused_reason, failure_streak, run_policy"
)
APPROVAL_COLUMNS = (
    "id, tenant_id, task_id, agent_id, tool, arguments, call_id, status, comment, "
    "requested_at, decided_at, decided_by"
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


def _set_status(conn: psycopg.Connection, task_id: uuid.UUID, target: Status, **columns: Any
                ) -> dict:
    """UPDATE one task's status (and `columns`), returning the row. The caller holds the lock
    and has checked the step; the trigger drops the claim of a task that leaves Active."""
    sets = "".join(f", {name} = %({name})s" for name in columns)
    return conn.execute(
        f"UPDATE tasks SET status = %(status)s{sets} WHERE id = %(id)s RETURNING {TASK_COLUMNS}",
        {"status": str(target), "id": task_id, **columns},
    ).fetchone()


def _lock_with_parent(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    """Lock the task's parent (if it has one), then the task; return the task.

    Every writer of a tree takes ancestors before descendants (see the module docstring), so
    an approval racing a cancellation, or two approvals of siblings, queue on the parent.
    """
    row = conn.execute("SELECT parent_id FROM tasks WHERE id = %s", [task_id]).fetchone()
    if row is None:
        raise NotFound("task not found in this tenant")
    if row["parent_id"] is not None:  # parent_id never changes (trigger), so this read holds
        conn.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", [row["parent_id"]])
    return get_task(conn, task_id, for_update=True)


def move_task(conn: psycopg.Connection, task_id: uuid.UUID, target: Status | str) -> dict:
    """Move a task one step through the status machine (an operator's step); leaving Active
    drops any claim.

    Steps with more to them go through their function: → Cancelled is `cancel_task` (the
    open descendants too), Paused → Active is `resume_task` (refused while an approval is
    pending), and → Approved wakes a Waiting parent whose children are all settled. The
    engine's own steps (→ Waiting, → Paused, Waiting → Active) are refused here.

    Example:
        move_task(conn, task_id, Status.ACTIVE)["status"]    # 'Active'
    """
    target = Status(target)
    if target == Status.CANCELLED:
        return cancel_task(conn, task_id)
    task = _lock_with_parent(conn, task_id)
    if task["status"] == Status.PAUSED and target == Status.ACTIVE:
        return resume_task(conn, task_id)
    check_transition(task["status"], target)
    moved = _set_status(conn, task_id, target)
    if target == Status.APPROVED and task["parent_id"] is not None:
        _wake_parent(conn, task["parent_id"])
    return moved


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


def _actor(conn: psycopg.Connection) -> str | None:
    """Who acts in this transaction (`tenant_transaction(..., actor=…)`), or None."""
    return conn.execute("SELECT nullif(current_setting('app.actor', true), '') AS a"
                        ).fetchone()["a"]


def _clean_text(value: Any, field: str, limit: int, *, required: str = "") -> str:
    """`value` stripped, or ValueError naming `field` (not text, too long, NUL; empty when
    `required` says why it is needed)."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{field}: at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{field}: must not contain NUL characters")
    if required and not value:
        raise ValueError(f"{field}: {required}")
    return value


def review_task(conn: psycopg.Connection, task_id: uuid.UUID, approve: bool,
                comment: str = "") -> dict:
    """Approve or reject a task in Review, with the reviewer's comment.

    Approve: a `review.approved` event carrying the comment, Review → Approved; if the task
    is a child whose parent is Waiting and every sibling is settled (Approved or Cancelled),
    the parent goes back to work (Waiting → Active, `task.children_done`): its agent writes
    the synthesis. The parent is locked first, so of two concurrent approvals of the last two
    children exactly one wakes it.

    Reject: a `review.rejected` event carrying the comment, then Review → Rejected → Active in
    this same transaction: the task goes back to work at once with its attempts reset (a
    rework starts afresh), and the comment reaches the next prompt. A rejection needs a
    comment: it is what the rework starts from.

    A refused step writes no event either (the caller's transaction rolls back).

    Example:
        with tenant_transaction(pool, tenant_id, actor="ui:ada") as conn:
            review_task(conn, task_id, False, "Cite the runbook")["status"]   # 'Active'
    """
    comment = _clean_text(comment, "comment", MAX_REVIEW_COMMENT)
    if not approve and not comment:
        raise ValueError("comment: say what to change when rejecting (it guides the rework)")
    task = _lock_with_parent(conn, task_id)
    target = Status.APPROVED if approve else Status.REJECTED
    check_transition(task["status"], target)
    kind = "review.approved" if approve else "review.rejected"
    add_event(conn, task["tenant_id"], task_id, kind, {"comment": comment, "actor": _actor(conn)})
    moved = _set_status(conn, task_id, target)
    if approve:
        if task["parent_id"] is not None:
            _wake_parent(conn, task["parent_id"])
        return moved
    check_transition(Status.REJECTED, Status.ACTIVE)
    return _set_status(conn, task_id, Status.ACTIVE)


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
    columns exist); `review` (the latest review event's kind, comment and actor, or None);
    `parent_id` and `parent` ({id, title, status} or None), `children` (`children_of`),
    `approvals` (this task's tool approvals, newest first), `paused_reason`.

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
    parent = conn.execute("SELECT id, title, status::text AS status FROM tasks WHERE id = %s",
                          [task["parent_id"]]).fetchone() if task["parent_id"] else None
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
        # orchestration: where the task sits in its tree, and what its run waits for
        "parent_id": task["parent_id"],
        "parent": parent,
        "children": children_of(conn, task_id),
        "approvals": approvals_of(conn, task_id),
        "paused_reason": task["paused_reason"],
    }


# -- orchestration: parent and child tasks (migration 0308) -----------------------------------

MAX_DEPTH = 5  # the database's CHECK on tasks.depth: a delegation loop ends here
MAX_REASON = 2000
INBOX_LIMIT = 200

_OPEN = "status::text NOT IN ('Approved', 'Cancelled')"  # not settled (status.SETTLED)


def create_child_task(conn: psycopg.Connection, parent: dict, *, title: str, body: str = "",
                      priority: str = "P1", assignee_id: uuid.UUID | None = None) -> dict:
    """Delegate: an Active child task of `parent` (one level deeper), with a `task.delegated`
    event on the parent ({child_id, title, assignee_id}) and `task.created` on the child
    ({parent_id}).

    Only an Active parent delegates (its run is the one delegating; a parent cancelled
    meanwhile gets no new children: InvalidTransition). ValueError when the child would be
    deeper than MAX_DEPTH; BadReference for an assignee not of this tenant or retired.

    Example:
        child = create_child_task(conn, parent, title="Draft the post", body="…",
                                  priority="P1", assignee_id=writer_id)
        child["parent_id"] == parent["id"], child["depth"]     # (True, 1)
    """
    locked = get_task(conn, parent["id"], for_update=True)
    if locked["status"] != Status.ACTIVE:
        raise InvalidTransition(
            f"only an Active task can delegate; task {locked['id']} is {locked['status']}")
    if locked["depth"] + 1 > MAX_DEPTH:
        raise ValueError(f"delegation is at most {MAX_DEPTH} levels deep; task {locked['id']} "
                         f"is already at level {locked['depth']}, so it cannot delegate further")
    _agent_must_exist(conn, assignee_id, "assignee_id")
    child = conn.execute(
        # clock_timestamp(): children delegated in one transaction keep their order
        f"""INSERT INTO tasks (tenant_id, title, body, priority, assignee_id, status, parent_id,
                               created_at)
            VALUES (%s, %s, %s, %s, %s, 'Active', %s, clock_timestamp())
            RETURNING {TASK_COLUMNS}""",
        [locked["tenant_id"], title, body, priority, assignee_id, locked["id"]],
    ).fetchone()
    add_event(conn, locked["tenant_id"], child["id"], "task.created",
              {"parent_id": str(locked["id"])})
    add_event(conn, locked["tenant_id"], locked["id"], "task.delegated", {
        "child_id": str(child["id"]), "title": child["title"],
        "assignee_id": assignee_id and str(assignee_id)})
    return child


def children_of(conn: psycopg.Connection, task_id: uuid.UUID) -> list[dict]:
    """The task's children (TASK_COLUMNS + assignee_name), oldest first.

    Example:
        [(c["title"], c["status"]) for c in children_of(conn, parent_id)]
    """
    return conn.execute(
        f"""SELECT {TASK_COLUMNS},
                   (SELECT a.name FROM agents a WHERE a.id = tasks.assignee_id) AS assignee_name
              FROM tasks WHERE parent_id = %s ORDER BY created_at, id""", [task_id]).fetchall()


def child_results(conn: psycopg.Connection, task_id: uuid.UUID) -> list[dict]:
    """What each child produced, for the parent's synthesis, oldest child first: id, title,
    assignee_name, status, reply (the latest `work.result` reply, or None).

    Example:
        for r in child_results(conn, parent_id):
            print(f"{r['assignee_name']} ({r['status']}): {r['reply']}")
    """
    return conn.execute(
        """SELECT t.id, t.title, a.name AS assignee_name, t.status::text AS status,
                  (SELECT e.payload->>'reply' FROM task_events e
                    WHERE e.task_id = t.id AND e.kind = 'work.result'
                    ORDER BY e.id DESC LIMIT 1) AS reply
             FROM tasks t LEFT JOIN agents a ON a.id = t.assignee_id
            WHERE t.parent_id = %s ORDER BY t.created_at, t.id""", [task_id]).fetchall()


def _children_count(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    return conn.execute(
        f"""SELECT count(*) AS total, count(*) FILTER (WHERE {_OPEN}) AS open,
                   count(*) FILTER (WHERE status::text = 'Approved') AS approved,
                   count(*) FILTER (WHERE status::text = 'Cancelled') AS cancelled
              FROM tasks WHERE parent_id = %s""", [task_id]).fetchone()


def wait_for_children(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    """The engine's step after delegating: Active → Waiting (claim dropped), event
    `task.waiting` ({"children": n, "open": m}). If no child is open (every one is Approved
    or Cancelled already, or there are none) the task does not wait: it is returned
    unchanged, still Active, and the caller goes on to the synthesis.

    Example:
        task = wait_for_children(conn, task_id)
        if task["status"] == "Active":
            results = child_results(conn, task_id)     # write the synthesis now
    """
    task = get_task(conn, task_id, for_update=True)
    counts = _children_count(conn, task_id)
    if counts["open"] == 0:
        return task
    check_transition(task["status"], Status.WAITING, engine=True)
    add_event(conn, task["tenant_id"], task_id, "task.waiting",
              {"children": counts["total"], "open": counts["open"]})
    return _set_status(conn, task_id, Status.WAITING)


def _wake_parent(conn: psycopg.Connection, parent_id: uuid.UUID) -> dict | None:
    """Waiting → Active (`task.children_done`) when no child of the parent is open any more;
    the parent's row lock makes the check and the move one step. Returns the parent if it
    woke, else None."""
    parent = conn.execute(
        "SELECT tenant_id, status::text AS status FROM tasks WHERE id = %s FOR UPDATE",
        [parent_id]).fetchone()
    if parent is None or parent["status"] != Status.WAITING:
        return None
    counts = _children_count(conn, parent_id)
    if counts["open"]:
        return None
    check_transition(Status.WAITING, Status.ACTIVE, engine=True)
    add_event(conn, parent["tenant_id"], parent_id, "task.children_done", {
        "children": counts["total"], "approved": counts["approved"],
        "cancelled": counts["cancelled"]})
    return _set_status(conn, parent_id, Status.ACTIVE)


def _deny_pending(conn: psycopg.Connection, task_ids: list[uuid.UUID], comment: str) -> None:
    """Close the pending approvals of tasks that will never run again (cancelled)."""
    denied = conn.execute(
        """UPDATE tool_approvals SET status = 'denied', comment = %s, decided_at = now(),
                  decided_by = nullif(current_setting('app.actor', true), '')
            WHERE task_id = ANY(%s) AND status = 'pending'
        RETURNING id, tenant_id, task_id, tool""", [comment[:MAX_REASON], task_ids]).fetchall()
    for row in denied:
        add_event(conn, row["tenant_id"], row["task_id"], "approval.denied",
                  {"approval_id": str(row["id"]), "tool": row["tool"], "comment": comment})


def cancel_task(conn: psycopg.Connection, task_id: uuid.UUID, reason: str = "") -> dict:
    """Cancel a task (final) and, in the same transaction, every open (not Approved or
    Cancelled) descendant at any depth. The task gets a `task.cancelled` event ({reason,
    actor}); each descendant one naming the cancelled ancestor ({reason, actor,
    cancelled_ancestor_id, cancelled_ancestor_title}). Pending tool approvals of those tasks
    are denied. InvalidTransition from Approved or Cancelled.

    A child cancelled on its own counts as settled: if its parent is Waiting and no sibling
    is open any more, the parent goes back to work (`task.children_done`).

    Locks: the parent, the task, then the descendants level by level (and again for children
    a run created meanwhile), so a concurrent approval or delegation queues behind it and
    then finds the tree cancelled.

    Example:
        with tenant_transaction(pool, tenant_id, actor="api") as conn:
            cancel_task(conn, task_id, "the launch moved")["status"]    # 'Cancelled'
    """
    reason = _clean_text(reason, "reason", MAX_REASON)
    task = _lock_with_parent(conn, task_id)
    check_transition(task["status"], Status.CANCELLED)
    actor = _actor(conn)
    add_event(conn, task["tenant_id"], task_id, "task.cancelled",
              {"reason": reason, "actor": actor})
    cancelled = _set_status(conn, task_id, Status.CANCELLED)
    denial = f"task cancelled{': ' + reason if reason else ''}"
    _deny_pending(conn, [task_id], denial)
    seen: set[uuid.UUID] = set()
    while True:  # until a pass finds no descendant it has not locked yet
        tree = conn.execute(
            """WITH RECURSIVE d AS (SELECT id FROM tasks WHERE parent_id = %s
                                    UNION SELECT t.id FROM tasks t JOIN d ON t.parent_id = d.id)
               SELECT id FROM d""", [task_id]).fetchall()
        new = [r["id"] for r in tree if r["id"] not in seen]
        if not new:
            break
        seen.update(new)
        rows = conn.execute(  # ancestors before descendants, like every writer of a tree
            "SELECT id, status::text AS status FROM tasks WHERE id = ANY(%s) "
            "ORDER BY depth, id FOR UPDATE", [new]).fetchall()
        open_ids = [r["id"] for r in rows if Status(r["status"]) not in SETTLED]
        if not open_ids:
            continue
        for child_id in open_ids:
            add_event(conn, task["tenant_id"], child_id, "task.cancelled", {
                "reason": reason, "actor": actor, "cancelled_ancestor_id": str(task_id),
                "cancelled_ancestor_title": task["title"]})
        conn.execute("UPDATE tasks SET status = 'Cancelled' WHERE id = ANY(%s)", [open_ids])
        _deny_pending(conn, open_ids, f"{denial} (ancestor {task_id})")
    if task["parent_id"] is not None:
        _wake_parent(conn, task["parent_id"])
    return cancelled


# -- orchestration: paused runs and tool approvals --------------------------------------------

def _pending_approval(conn: psycopg.Connection, task_id: uuid.UUID) -> dict | None:
    return conn.execute(
        f"SELECT {APPROVAL_COLUMNS} FROM tool_approvals WHERE task_id = %s AND status = "
        "'pending'", [task_id]).fetchone()


def pause_task(conn: psycopg.Connection, task_id: uuid.UUID, reason: str) -> dict:
    """The engine stops a run (a circuit breaker): Active → Paused with the reason (shown to
    the operator), claim dropped, event `task.paused` ({"reason"}).

    Example:
        pause_task(conn, task_id, "the same call search_knowledge({...}) 3 times in a row")
    """
    reason = _clean_text(reason, "reason", MAX_REASON, required="say why the run is paused")
    task = get_task(conn, task_id, for_update=True)
    check_transition(task["status"], Status.PAUSED, engine=True)
    add_event(conn, task["tenant_id"], task_id, "task.paused", {"reason": reason})
    return _set_status(conn, task_id, Status.PAUSED, paused_reason=reason)


def resume_task(conn: psycopg.Connection, task_id: uuid.UUID) -> dict:
    """An operator resumes a paused run: Paused → Active, event `task.resumed` ({reason it
    was paused for, actor}). Refused (ValueError) while a tool approval of the task is
    pending: that is decided with `decide_approval`, which resumes it.

    Example:
        with tenant_transaction(pool, tenant_id, actor="api") as conn:
            resume_task(conn, task_id)["status"]     # 'Active'
    """
    task = get_task(conn, task_id, for_update=True)
    if task["status"] != Status.PAUSED:
        raise InvalidTransition(f"only a Paused task can be resumed; this one is "
                                f"{task['status']}")
    pending = _pending_approval(conn, task_id)
    if pending is not None:
        raise ValueError(f"the task waits for a decision on its call of {pending['tool']!r} "
                         f"(approval {pending['id']}): approve or deny it instead")
    add_event(conn, task["tenant_id"], task_id, "task.resumed",
              {"paused_reason": task["paused_reason"], "actor": _actor(conn)})
    return _set_status(conn, task_id, Status.ACTIVE)


def _short_arguments(arguments: dict, limit: int = 80) -> str:
    """The call's arguments as compact JSON, cut to `limit` characters (for a pause reason)."""
    text = json.dumps(arguments, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      default=str)
    text = text[1:-1] if text.startswith("{") else text
    return text if len(text) <= limit else text[:limit - 1] + "…"


def request_approval(conn: psycopg.Connection, task: dict, *, agent_id: uuid.UUID, tool: str,
                     arguments: dict, call_id: str) -> dict:
    """The engine asks an operator before a gated tool call: a pending `tool_approvals` row
    and the task Active → Paused with reason "waiting for approval: <tool>(<short args>)",
    event `approval.requested`. Returns the approval row. At most one pending approval per
    task (ValueError; the database's unique index backs it).

    Example:
        approval = request_approval(conn, task, agent_id=agent["id"], tool="delegate",
                                    arguments={"to": "CTO", "title": "…"}, call_id="toolu_1")
        approval["status"]      # 'pending'; the task is Paused until decide_approval
    """
    tool = _clean_text(tool, "tool", 200, required="name the tool")
    call_id = _clean_text(call_id or "", "call_id", 200)
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be a JSON object")
    locked = get_task(conn, task["id"], for_update=True)
    check_transition(locked["status"], Status.PAUSED, engine=True)
    pending = _pending_approval(conn, locked["id"])
    if pending is not None:
        raise ValueError(f"task {locked['id']} already waits for approval {pending['id']}")
    _agent_must_exist(conn, agent_id, "agent_id")
    approval = conn.execute(
        f"""INSERT INTO tool_approvals (tenant_id, task_id, agent_id, tool, arguments, call_id)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {APPROVAL_COLUMNS}""",
        [locked["tenant_id"], locked["id"], agent_id, tool, Jsonb(arguments), call_id],
    ).fetchone()
    reason = f"waiting for approval: {tool}({_short_arguments(arguments)})"[:MAX_REASON]
    add_event(conn, locked["tenant_id"], locked["id"], "approval.requested", {
        "approval_id": str(approval["id"]), "tool": tool, "call_id": call_id,
        "agent_id": str(agent_id), "reason": reason})
    _set_status(conn, locked["id"], Status.PAUSED, paused_reason=reason)
    return approval


def decide_approval(conn: psycopg.Connection, approval_id: uuid.UUID, approve: bool,
                    comment: str = "") -> dict:
    """An operator decides a pending tool call: the approval becomes approved/denied (with
    the comment, who and when), event `approval.approved` / `approval.denied` on the task,
    and the task goes Paused → Active (its run reads the decision and goes on). Returns the
    decided approval row plus `task` (the task row after the move). NotFound for an unknown
    approval; InvalidTransition for one already decided.

    Example:
        with tenant_transaction(pool, tenant_id, actor="api") as conn:
            decided = decide_approval(conn, approval_id, False, "not this week")
            decided["status"], decided["task"]["status"]      # ('denied', 'Active')
    """
    comment = _clean_text(comment, "comment", MAX_REVIEW_COMMENT)
    found = conn.execute("SELECT task_id FROM tool_approvals WHERE id = %s",
                         [approval_id]).fetchone()
    if found is None:
        raise NotFound("approval not found in this tenant")
    task = get_task(conn, found["task_id"], for_update=True)  # the task first, as cancel does
    current = conn.execute(f"SELECT {APPROVAL_COLUMNS} FROM tool_approvals WHERE id = %s "
                           "FOR UPDATE", [approval_id]).fetchone()
    if current["status"] != "pending":
        raise InvalidTransition(f"approval {approval_id} was already {current['status']}")
    actor = _actor(conn)
    status = "approved" if approve else "denied"
    decided = conn.execute(
        f"""UPDATE tool_approvals SET status = %s, comment = %s, decided_at = now(),
                   decided_by = %s WHERE id = %s RETURNING {APPROVAL_COLUMNS}""",
        [status, comment, actor, approval_id]).fetchone()
    add_event(conn, task["tenant_id"], task["id"], f"approval.{status}", {
        "approval_id": str(approval_id), "tool": current["tool"], "comment": comment,
        "actor": actor})
    if task["status"] == Status.PAUSED:
        task = _set_status(conn, task["id"], Status.ACTIVE)
    return {**decided, "task": task}


def approvals_of(conn: psycopg.Connection, task_id: uuid.UUID) -> list[dict]:
    """Every tool approval of a task, newest first (+ agent_name)."""
    return conn.execute(
        f"""SELECT {', '.join('ap.' + c for c in APPROVAL_COLUMNS.split(', '))},
                   a.name AS agent_name
              FROM tool_approvals ap LEFT JOIN agents a ON a.id = ap.agent_id
             WHERE ap.task_id = %s ORDER BY ap.requested_at DESC, ap.id""", [task_id]).fetchall()


def pending_approvals(conn: psycopg.Connection, limit: int = INBOX_LIMIT) -> list[dict]:
    """The pending tool approvals (+ task_title, agent_name), oldest first.

    Example:
        [(p["agent_name"], p["tool"], p["task_title"]) for p in pending_approvals(conn)]
    """
    return conn.execute(
        f"""SELECT {', '.join('ap.' + c for c in APPROVAL_COLUMNS.split(', '))},
                   t.title AS task_title, a.name AS agent_name
              FROM tool_approvals ap JOIN tasks t ON t.id = ap.task_id
              LEFT JOIN agents a ON a.id = ap.agent_id
             WHERE ap.status = 'pending' ORDER BY ap.requested_at, ap.id LIMIT %s""",
        [limit]).fetchall()


_INBOX_REVIEWS = "status = 'Review'"
_INBOX_PAUSED = ("status = 'Paused' AND NOT EXISTS (SELECT 1 FROM tool_approvals ap "
                 "WHERE ap.task_id = tasks.id AND ap.status = 'pending')")
_INBOX_AGENTS = "paused_at IS NOT NULL AND retired_at IS NULL"


def inbox(conn: psycopg.Connection, limit: int = INBOX_LIMIT) -> dict:
    """What waits for an operator, each list oldest first (at most `limit` each):
    `approvals` (pending_approvals), `reviews` (tasks in Review + assignee_name, longest
    waiting first), `paused_tasks` (Paused without a pending approval: a breaker stopped
    them), `paused_agents` (agents paused by their failure streak).

    Example:
        box = inbox(conn)
        len(box["approvals"]), [t["title"] for t in box["reviews"]]
    """
    assignee = "(SELECT a.name FROM agents a WHERE a.id = tasks.assignee_id) AS assignee_name"
    return {
        "approvals": pending_approvals(conn, limit),
        "reviews": conn.execute(
            f"SELECT {TASK_COLUMNS}, {assignee} FROM tasks WHERE {_INBOX_REVIEWS} "
            "ORDER BY updated_at, id LIMIT %s", [limit]).fetchall(),
        "paused_tasks": conn.execute(
            f"SELECT {TASK_COLUMNS}, {assignee} FROM tasks WHERE {_INBOX_PAUSED} "
            "ORDER BY paused_at, id LIMIT %s", [limit]).fetchall(),
        "paused_agents": conn.execute(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE {_INBOX_AGENTS} "
            "ORDER BY paused_at, id LIMIT %s", [limit]).fetchall(),
    }


def inbox_count(conn: psycopg.Connection) -> int:
    """How many things wait for an operator (the four lists of `inbox`, unbounded): the
    navigation's badge.

    Example:
        inbox_count(conn)     # 3
    """
    return conn.execute(
        f"""SELECT (SELECT count(*) FROM tool_approvals WHERE status = 'pending')
                 + (SELECT count(*) FROM tasks WHERE {_INBOX_REVIEWS})
                 + (SELECT count(*) FROM tasks WHERE {_INBOX_PAUSED})
                 + (SELECT count(*) FROM agents WHERE {_INBOX_AGENTS}) AS n""").fetchone()["n"]


# -- orchestration: agents paused by their failure streak -------------------------------------

def pause_agent(conn: psycopg.Connection, agent_id: uuid.UUID, reason: str) -> dict:
    """The engine pauses an agent: the worker claims none of its tasks (they stay queued)
    until an operator resumes it. Already paused: unchanged (the first reason stays).

    Example:
        pause_agent(conn, agent_id, "failed 3 tasks in a row")["paused_at"] is not None
    """
    reason = _clean_text(reason, "reason", MAX_REASON, required="say why the agent is paused")
    agent = _one(conn, f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = %s FOR UPDATE",
                 [agent_id], "agent")
    if agent["paused_at"] is not None:
        return agent
    return conn.execute(
        f"""UPDATE agents SET paused_at = now(), paused_reason = %s, updated_at = now()
             WHERE id = %s RETURNING {AGENT_COLUMNS}""", [reason, agent_id]).fetchone()


def resume_agent(conn: psycopg.Connection, agent_id: uuid.UUID) -> dict:
    """An operator resumes a paused agent: pause cleared, failure streak back to 0, its tasks
    claimable again. InvalidTransition if it is not paused.

    Example:
        resume_agent(conn, agent_id)["failure_streak"]     # 0
    """
    agent = _one(conn, f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = %s FOR UPDATE",
                 [agent_id], "agent")
    if agent["paused_at"] is None:
        raise InvalidTransition(f"agent {agent['name']} is not paused")
    return conn.execute(
        f"""UPDATE agents SET paused_at = NULL, paused_reason = NULL, failure_streak = 0,
                   updated_at = now() WHERE id = %s RETURNING {AGENT_COLUMNS}""",
        [agent_id]).fetchone()


def note_task_outcome(conn: psycopg.Connection, agent_id: uuid.UUID, ok: bool,
                      max_streak: int) -> bool:
    """The engine records how a task of the agent ended: ok (it reached Review) resets the
    failure streak; a failure (Failed, or paused by a breaker) adds one, and at `max_streak`
    pauses the agent with "failed N tasks in a row". True if this call paused it.

    Example:
        if note_task_outcome(conn, agent_id, ok=False, max_streak=3):
            log.warning("agent paused")
    """
    if max_streak < 1:
        raise ValueError(f"max_streak must be at least 1, got {max_streak}")
    agent = _one(conn, "SELECT failure_streak, paused_at FROM agents WHERE id = %s FOR UPDATE",
                 [agent_id], "agent")
    streak = 0 if ok else agent["failure_streak"] + 1
    conn.execute("UPDATE agents SET failure_streak = %s WHERE id = %s", [streak, agent_id])
    if ok or streak < max_streak or agent["paused_at"] is not None:
        return False
    pause_agent(conn, agent_id, f"failed {streak} tasks in a row")
    return True
