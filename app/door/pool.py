"""The door's async Postgres pool: the bounds of `app.db.open_pool`, without the threads.

The door's request handler awaits Postgres on the event loop (psycopg's AsyncConnectionPool)
instead of handing each callback to anyio's thread pool: a callback is one round trip
(`door_accept`, migration 0307), and a thread hand-off plus GIL hand-back per round trip cost
more than the round trip itself (issue #19's profile).

Bounds kept from `open_pool` (the same `Settings.db_pool_options()`):
- `timeout`: waiting for a pooled connection, and connecting;
- `statement_timeout_ms`: server side;
- `query_timeout`: client side, every round trip (`BoundedAsyncConnection`), so a frozen or
  blackholed Postgres turns into a 503 within about `timeout` + `query_timeout`;
- `tcp_timeout`: keepalives and tcp_user_timeout;
- `check_timeout`: the checkout check, which replaces a dead pooled connection. It runs only
  on a connection idle for `check_idle` seconds or more: one that answered a moment ago is
  known to work, and checking it anyway would double the door's round trips under load.

Example:
    pool = open_async_pool(dsn, min_size=8, max_size=8, timeout=2, statement_timeout_ms=2000,
                           query_timeout=2.5)
    await pool.open(wait=False)
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from app.db import DatabaseTimeout, connection_kwargs

CHECK_IDLE_SECONDS = 1.0


class BoundedAsyncConnection(psycopg.AsyncConnection):
    """An async connection whose every round trip gives up after `query_timeout` seconds.

    The async twin of `app.db.BoundedConnection` (same reasons: psycopg has no client-side
    query timeout; a round trip cut short leaves the protocol mid-message, so the connection
    is closed and the pool drops it).

    Example:
        conn = await BoundedAsyncConnection.connect(dsn, autocommit=True)
        conn.query_timeout = 2.5
        await conn.execute("SELECT pg_sleep(10)")   # DatabaseTimeout after 2.5 s if frozen
    """

    query_timeout: float | None = None
    returned_at: float = 0.0  # monotonic time it last went back to the pool healthy

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = self.query_timeout if timeout is None else timeout
        try:
            return await super().wait(gen, interval=interval, timeout=bound)
        except pg_errors._WaitTimeout:
            self.pgconn.finish()  # the server may answer later, into a connection nobody reads
            raise DatabaseTimeout(
                f"Postgres did not answer within {bound:g} s; the connection was closed"
            ) from None


def open_async_pool(
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
    check_idle: float = CHECK_IDLE_SECONDS,
    name: str = "vos-door",
    connection_class: type[BoundedAsyncConnection] = BoundedAsyncConnection,
) -> AsyncConnectionPool:
    """An unopened AsyncConnectionPool of autocommit, dict-row, bounded connections
    (`connection_class`: a BoundedAsyncConnection subclass, e.g. one that counts queries).

    Open it inside the running event loop (`await pool.open(wait=False)`: it returns at once
    even if Postgres is down, and keeps retrying).
    """
    if query_timeout is None:
        query_timeout = statement_timeout_ms / 1000 + 2.0
    check_bound = min(check_timeout, query_timeout)

    async def configure(conn: BoundedAsyncConnection) -> None:
        conn.query_timeout = query_timeout
        conn.returned_at = time.monotonic()  # it has just answered its handshake

    async def check(conn: BoundedAsyncConnection) -> None:
        if time.monotonic() - conn.returned_at < check_idle:
            return  # it answered moments ago
        usual, conn.query_timeout = conn.query_timeout, check_bound
        try:
            await AsyncConnectionPool.check_connection(conn)
        finally:
            conn.query_timeout = usual

    async def reset(conn: BoundedAsyncConnection) -> None:
        # called as the connection goes back to the pool; a broken one is dropped instead
        if not conn.broken:
            conn.returned_at = time.monotonic()

    return AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        open=False,
        connection_class=connection_class,
        configure=configure,
        check=check,
        reset=reset,
        kwargs=connection_kwargs(name, statement_timeout_ms, connect_timeout, tcp_timeout),
    )
