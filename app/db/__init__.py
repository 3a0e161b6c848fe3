"""Postgres access for the Agent VOS: the only state the app has.

Public API (other modules build on these names):

- `open_pool(dsn, ...) -> psycopg_pool.ConnectionPool`
    A pool of autocommit connections with dict rows and short timeouts, so a Postgres outage
    turns into an error within seconds (the API maps it to 503).

- `tenant_transaction(pool, tenant_id, *, actor=None)` (context manager -> Connection)
    Opens a transaction on a pooled connection and runs
    `SELECT set_config('app.tenant_id', %s, true)` (= SET LOCAL, bound parameter), so the
    tenant lives exactly as long as the transaction: a pooled connection can never carry it to
    the next request. `actor` lands in `app.actor`, which the task-event trigger records.

- `migrate(owner_dsn, *, app_password=None, clear_failed=False) -> list[str]`
    Applies `app/db/migrations/NNNN_*.sql` in order (see `app.db.migrate`).

- `rls_gaps(conn) -> list[str]`
    Tenant tables (any table with a `tenant_id` column) lacking ENABLE + FORCE RLS or a
    policy. `migrate` refuses to commit while there are any; opt out only with a table
    comment `rls-exempt: <reason>`.

- `assert_app_role_is_confined(pool)`
    Refuses a connection role that is a superuser, has BYPASSRLS or owns a table: the app
    must connect as `vos_app`, or row-level security would not apply to it.

Conventions for migrations (every helper's 0100–0299 too): each tenant table has a
`tenant_id uuid NOT NULL REFERENCES tenants(id)`, `ENABLE` + `FORCE ROW LEVEL SECURITY`, a
policy `USING/WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid)`, and explicit
GRANTs to `vos_app` (no default privileges: an append-only table gets SELECT, INSERT only).

Example:
    pool = open_pool("postgresql://vos_app:…@db/vos")
    with tenant_transaction(pool, tenant_id, actor="api") as conn:
        rows = conn.execute("SELECT id, title FROM tasks").fetchall()
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from app.db.migrate import APP_ROLE, MigrationError, migrate, rls_gaps

__all__ = [
    "APP_ROLE",
    "MigrationError",
    "UnsafeDatabaseRole",
    "assert_app_role_is_confined",
    "migrate",
    "open_pool",
    "rls_gaps",
    "tenant_transaction",
]


class UnsafeDatabaseRole(RuntimeError):
    """The app was pointed at a role that row-level security would not confine."""


def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 3.0,
    statement_timeout_ms: int = 10_000,
    name: str = "vos",
) -> ConnectionPool:
    """Open a connection pool; returns at once even if Postgres is down (it retries).

    `timeout` bounds how long a caller waits for a connection; `statement_timeout_ms` bounds
    every statement, so nothing hangs while Postgres is unhealthy.

    Example:
        pool = open_pool(dsn, max_size=4)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    """
    pool = ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        open=False,
        check=ConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(1, int(timeout)),
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "application_name": name,
        },
    )
    pool.open(wait=False)
    return pool


@contextmanager
def tenant_transaction(
    pool: ConnectionPool, tenant_id: uuid.UUID | str, *, actor: str | None = None
) -> Iterator[psycopg.Connection]:
    """One transaction scoped to one tenant; commits on success, rolls back on error.

    Example:
        with tenant_transaction(pool, tenant.id) as conn:
            conn.execute("INSERT INTO tasks (tenant_id, title) VALUES (%s, %s)", [tenant.id, t])
    """
    tenant = str(uuid.UUID(str(tenant_id)))  # ValueError before touching the database
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "SELECT set_config('app.tenant_id', %s, true), set_config('app.actor', %s, true)",
            [tenant, actor or ""],
        )
        yield conn


def assert_app_role_is_confined(pool: ConnectionPool) -> str:
    """Return the connected role's name, or raise UnsafeDatabaseRole if RLS would not bind it.

    Example:
        assert_app_role_is_confined(pool)   # 'vos_app'
    """
    with pool.connection() as conn:
        row = conn.execute(
            """
            SELECT r.rolname, r.rolsuper, r.rolbypassrls,
                   (SELECT count(*) FROM pg_class c
                     WHERE c.relowner = r.oid AND c.relkind IN ('r', 'p')
                       AND c.relnamespace = 'public'::regnamespace) AS owned_tables
              FROM pg_roles r WHERE r.rolname = current_user
            """
        ).fetchone()
    if row["rolsuper"] or row["rolbypassrls"] or row["owned_tables"]:
        why = (
            "is a superuser" if row["rolsuper"]
            else "has BYPASSRLS" if row["rolbypassrls"]
            else f"owns {row['owned_tables']} table(s)"
        )
        raise UnsafeDatabaseRole(
            f"DATABASE_URL connects as {row['rolname']!r}, which {why}, so row-level "
            f"security would not confine it. Point the API and the door at the {APP_ROLE} "
            f"role (set its password with `vos db migrate --app-password-env VAR`)."
        )
    return row["rolname"]
