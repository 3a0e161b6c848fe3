"""Postgres access for the Agent VOS: the only state the app has.

Public API (other modules build on these names):

- `open_pool(dsn, ...) -> psycopg_pool.ConnectionPool`
    A pool of autocommit connections with dict rows and short timeouts, so a Postgres outage
    turns into an error within seconds (the API, the UI and the door map it to 503), whether
    Postgres refuses connections or hangs (a frozen server, a network blackhole).

- `BoundedConnection`, `DatabaseTimeout`
    The pool's connection class: every round trip that Postgres does not answer within the
    pool's `query_timeout` closes that connection and raises `DatabaseTimeout` (an
    `OperationalError`), because psycopg itself would wait forever on a silent server.

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

import inspect
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from app.db.migrate import APP_ROLE, MigrationError, migrate, rls_gaps

__all__ = [
    "APP_ROLE",
    "BoundedConnection",
    "DatabaseTimeout",
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


# psycopg 3.3 has a timeout on its wait functions (and `_WaitTimeout`); without them a
# frozen Postgres would hold a request forever, so refuse to run rather than hang later
if "timeout" not in inspect.signature(psycopg.Connection.wait).parameters or not hasattr(
    pg_errors, "_WaitTimeout"
):  # pragma: no cover - depends on the installed psycopg
    raise ImportError(
        f"psycopg {psycopg.__version__} cannot bound a query client-side; install psycopg>=3.3"
    )


class DatabaseTimeout(psycopg.OperationalError):
    """Postgres did not answer a round trip in time; the connection was closed (not reused)."""


class BoundedConnection(psycopg.Connection):
    """A connection whose every round trip gives up after `query_timeout` seconds.

    Why: psycopg has no client-side query timeout. `statement_timeout` is enforced by the
    server, so it does nothing when the server is frozen (SIGSTOP, a stuck host) or the
    network drops packets; and while the peer's kernel still acknowledges our packets (a
    frozen process on a live host) neither TCP keepalives nor `tcp_user_timeout` fire either.
    So the wait itself is bounded: every blocking call of psycopg goes through `wait()`, which
    takes a timeout in psycopg 3.3. A round trip cut short leaves the protocol mid-message,
    so the connection is closed and the pool drops it when it comes back.

    Example:
        conn = BoundedConnection.connect(dsn, autocommit=True)
        conn.query_timeout = 2.5
        conn.execute("SELECT pg_sleep(10)")   # DatabaseTimeout after 2.5 s if nobody answers
    """

    query_timeout: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = self.query_timeout if timeout is None else timeout  # explicit waits keep theirs
        try:
            return super().wait(gen, interval=interval, timeout=bound)
        except pg_errors._WaitTimeout:
            self.pgconn.finish()  # the server may answer later, into a connection nobody reads
            raise DatabaseTimeout(
                f"Postgres did not answer within {bound:g} s; the connection was closed"
            ) from None


def _bounded_check(check_timeout: float):
    """The pool's checkout check: an empty round trip, bounded more tightly than a query, so
    a dead or frozen pooled connection is found (and replaced) before a request uses it."""

    def check(conn: BoundedConnection) -> None:
        usual, conn.query_timeout = conn.query_timeout, check_timeout
        try:
            ConnectionPool.check_connection(conn)
        finally:
            conn.query_timeout = usual

    return check


def _tcp_options(tcp_timeout: float) -> dict[str, int]:
    """libpq TCP options so the kernel gives up on a dead peer within about `tcp_timeout` s.

    Keepalives find an idle pooled connection whose peer vanished; `tcp_user_timeout` (libpq
    12+) fails a send that nobody acknowledges. Both need a peer that stops acknowledging (a
    blackholed network); a frozen server on a live host is caught by BoundedConnection.
    """
    idle = max(1, int(tcp_timeout // 2))
    options = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": max(1, int((tcp_timeout - idle) // 3)),
        "keepalives_count": 3,
    }
    if psycopg.pq.version() >= 120000:  # an older libpq refuses the unknown option
        options["tcp_user_timeout"] = int(tcp_timeout * 1000)
    return options


def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 3.0,
    statement_timeout_ms: int = 10_000,
    query_timeout: float | None = None,
    check_timeout: float = 1.0,
    tcp_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    name: str = "vos",
) -> ConnectionPool:
    """Open a connection pool; returns at once even if Postgres is down (it retries).

    Bounds, so that nothing waits on an unhealthy Postgres for long:
    - `timeout`: waiting for a pooled connection (then `PoolTimeout`);
    - `connect_timeout`: opening a new connection, in the pool's background workers (not
      on a request's path: a slow handshake, e.g. SCRAM on an emulated CPU, must not make
      the pool give up on a database that is merely slow to accept);
    - `check_timeout`: the checkout check, which replaces a dead pooled connection;
    - `statement_timeout_ms`: server side, so the server cancels a slow statement cleanly
      (it cannot help when the server itself is frozen);
    - `query_timeout` (default: the statement timeout + 2 s): client side, any round trip,
      see BoundedConnection; keep it above the statement timeout;
    - `tcp_timeout`: keepalives and `tcp_user_timeout`, see `_tcp_options`.
    A request therefore fails within about `timeout` + `query_timeout` at worst.

    Example:
        pool = open_pool(dsn, max_size=4, timeout=2, statement_timeout_ms=2000,
                         query_timeout=2.5)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    """
    if query_timeout is None:
        query_timeout = statement_timeout_ms / 1000 + 2.0

    def configure(conn: BoundedConnection) -> None:
        conn.query_timeout = query_timeout

    pool = ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        open=False,
        connection_class=BoundedConnection,
        configure=configure,
        check=_bounded_check(min(check_timeout, query_timeout)),
        kwargs=connection_kwargs(name, statement_timeout_ms, connect_timeout, tcp_timeout),
    )
    pool.open(wait=False)
    return pool


def connection_kwargs(name: str, statement_timeout_ms: int, connect_timeout: float,
                      tcp_timeout: float) -> dict:
    """What every pooled connection of the app opens with (the sync pool here and the door's
    async one, app.door.pool): autocommit, dict rows, the server-side statement timeout,
    a connect timeout for the pool's background opening (off the request path), and the
    TCP bounds of `_tcp_options`.

    Example:
        >>> connection_kwargs("vos", 2000, 10, 10)["connect_timeout"]
        10
    """
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "connect_timeout": max(2, int(connect_timeout)),  # libpq: whole seconds, min 2
        "options": f"-c statement_timeout={statement_timeout_ms}",
        "application_name": name,
        **_tcp_options(tcp_timeout),
    }


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
