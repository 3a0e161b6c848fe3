"""Row-level security, as the app role: tenant A reads, updates and deletes none of tenant B's
rows, through direct SQL on ONE pooled connection reused across tenants, and through the API."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.db import open_pool, rls_gaps, tenant_transaction
from app.dispatch.api import create_api_app

TENANT_TABLES = ("tenants", "agents", "tasks", "task_events", "callbacks")


@pytest.fixture
def one_connection_pool(app_dsn):
    """max_size=1: every transaction below runs on the very same server session."""
    pool = open_pool(app_dsn, min_size=1, max_size=1, name="rls-one-conn")
    pool.wait(timeout=10)
    yield pool
    pool.close()


def seed(pool, tenant) -> dict:
    """One agent, task, event and callback in `tenant`, written as the app role."""
    with tenant_transaction(pool, tenant.id, actor="seed") as conn:
        agent = conn.execute(
            "INSERT INTO agents (tenant_id, name) VALUES (%s, 'agent') RETURNING id", [tenant.id]
        ).fetchone()["id"]
        task = conn.execute(
            "INSERT INTO tasks (tenant_id, title, assignee_id) VALUES (%s, 'secret', %s) "
            "RETURNING id", [tenant.id, agent]
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO callbacks (tenant_id, source, webhook_id, sent_at, payload, task_id) "
            "VALUES (%s, 'edge', %s, now(), '{}', %s)", [tenant.id, f"msg_{task}", task]
        )
    return {"agent": agent, "task": task}


def snapshot(owner_dsn, tenant) -> list:
    """Everything of a tenant, as the owner sees it (superuser: bypasses RLS)."""
    with psycopg.connect(owner_dsn) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} WHERE "
                         f"{'id' if table == 'tenants' else 'tenant_id'} = %s ORDER BY 1",
                         [tenant.id]).fetchall()
            for table in TENANT_TABLES
        ]


def test_a_reused_pooled_connection_never_shows_another_tenants_rows(
    one_connection_pool, owner_dsn, make_tenant
):
    pool = one_connection_pool
    a, b = make_tenant("a"), make_tenant("b")
    seed(pool, a)
    theirs = seed(pool, b)
    before = snapshot(owner_dsn, b)
    pids = set()
    with tenant_transaction(pool, a.id) as conn:
        pids.add(conn.info.backend_pid)
        for table in TENANT_TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            rows = conn.execute(f"SELECT {column} AS t FROM {table}").fetchall()
            assert rows and {r["t"] for r in rows} == {a.id}, f"{table} leaks across tenants"
        assert conn.execute("SELECT * FROM tasks WHERE id = %s", [theirs["task"]]).fetchone() \
            is None
        assert conn.execute("UPDATE tasks SET title = 'pwned' WHERE id = %s",
                            [theirs["task"]]).rowcount == 0
        assert conn.execute("UPDATE agents SET budget_usd = 1e6").rowcount == 1  # its own only
        assert conn.execute("DELETE FROM tasks WHERE id = %s", [theirs["task"]]).rowcount == 0
        assert conn.execute("DELETE FROM agents WHERE id = %s", [theirs["agent"]]).rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        with tenant_transaction(pool, a.id) as conn:
            pids.add(conn.info.backend_pid)
            conn.execute("INSERT INTO tasks (tenant_id, title) VALUES (%s, 'planted')", [b.id])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        with tenant_transaction(pool, a.id) as conn:
            conn.execute("UPDATE agents SET tenant_id = %s", [b.id])
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot move to another tenant"):
        with tenant_transaction(pool, a.id) as conn:
            conn.execute("UPDATE tasks SET tenant_id = %s", [b.id])
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        with tenant_transaction(pool, a.id) as conn:
            conn.execute("INSERT INTO tasks (tenant_id, title, assignee_id) VALUES (%s, 'x', %s)",
                         [a.id, theirs["agent"]])
    # The same session, now for B, sees B's rows; and after each transaction nothing remains.
    with tenant_transaction(pool, b.id) as conn:
        pids.add(conn.info.backend_pid)
        titles = [r["title"] for r in conn.execute("SELECT title FROM tasks")]
        assert titles == ["secret"]
    with pool.connection() as conn:
        pids.add(conn.info.backend_pid)
        assert conn.execute("SELECT current_setting('app.tenant_id', true) AS t").fetchone() \
            == {"t": ""}, "SET LOCAL leaked the tenant past its transaction"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT * FROM tasks")  # no tenant: an error, never all rows
    assert len(pids) == 1, "the test meant to reuse one server session"
    assert snapshot(owner_dsn, b) == before


def test_tenant_a_cannot_touch_tenant_b_through_the_api(app_pool, owner_dsn, make_tenant):
    from app.ui.auth import create_operator

    api = TestClient(create_api_app(app_pool), base_url="http://127.0.0.1")
    a, b = make_tenant("a"), make_tenant("b")
    seed(app_pool, a)
    theirs = seed(app_pool, b)
    before = snapshot(owner_dsn, b)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        as_a = {"Authorization": f"Bearer {create_operator(conn, a.id, 'rls-a')}"}
    task = theirs["task"]
    assert api.get(f"/tasks/{task}", headers=as_a).status_code == 404
    assert api.get(f"/tasks/{task}/events", headers=as_a).status_code == 404
    assert api.post(f"/tasks/{task}/move", json={"status": "Active"},
                    headers=as_a).status_code == 404
    assert api.post(f"/tasks/{task}/assign", json={"assignee_id": None},
                    headers=as_a).status_code == 404
    assert api.delete(f"/tasks/{task}", headers=as_a).status_code == 404
    assert {t["tenant_id"] for t in api.get("/tasks", headers=as_a).json()} == {str(a.id)}
    assert {e["tenant_id"] for e in api.get("/events", headers=as_a).json()} == {str(a.id)}
    assert [x["name"] for x in api.get("/agents", headers=as_a).json()] == ["agent"]
    r = api.post("/tasks", json={"title": "t", "assignee_id": str(theirs["agent"])},
                 headers=as_a)
    assert r.status_code == 422
    assert snapshot(owner_dsn, b) == before


def test_the_app_role_is_confined_and_every_tenant_table_is_guarded(owner_dsn):
    with psycopg.connect(owner_dsn) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = 'vos_app'").fetchone()
        owned = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = 'vos_app'::regrole").fetchone()[0]
        assert role == (False, False, False, False)
        assert owned == 0
        assert rls_gaps(conn) == []  # every helper's tenant tables, not only the core ones


def test_the_audit_names_a_table_whose_rls_was_loosened(fresh_database):
    from app.db import migrate

    dsn = fresh_database()
    migrate(dsn, log=lambda _m: None)
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE agents DISABLE ROW LEVEL SECURITY")
        assert rls_gaps(conn) == [
            "agents: row-level security is not enabled",
            "tasks: row-level security is enabled but not FORCED",
        ]
