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

from app.dispatch.status import INITIAL, Status, check_transition

TASK_COLUMNS = (
    "id, tenant_id, title, body, status::text AS status, priority::text AS priority, "
    "assignee_id, claimed_by, lease_until, created_at, updated_at"
)
AGENT_COLUMNS = (
    "id, tenant_id, name, role, persona, manager_id, model_preferences, budget_usd, created_at"
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
    if agent_id is not None and conn.execute(
        "SELECT 1 FROM agents WHERE id = %s", [agent_id]
    ).fetchone() is None:
        raise BadReference(f"{field} {agent_id} is not an agent of this tenant")


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


def list_agents(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY name").fetchall()


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
