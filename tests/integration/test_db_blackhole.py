"""Postgres that hangs instead of refusing (issue #14): every API, UI and door request answers
503 within 5 s while Postgres is frozen, and the same processes recover once it answers.

The freeze is real: a throwaway cluster of our own (never the session's shared one) is
stopped with SIGSTOP, postmaster and every backend, so sockets stay open, the kernel keeps
acknowledging our packets, and nothing answers: what a hung host or a stuck server does. The
apps run on uvicorn on loopback with the pool bounds the production processes use
(`Settings().db_pool_options()`). A request "in flight" is one whose pooled connection is
already inside a statement (waiting on a table lock) when the freeze begins.

Example:
    .venv/bin/pytest tests/integration/test_db_blackhole.py -q
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from standardwebhooks import Webhook

from app.db import migrate, open_pool
from app.db.embedded import EmbeddedPostgres, free_port
from app.dispatch.api import create_api_app
from app.door.app import create_door_app
from app.settings import Settings, decode_whsec
from app.ui import auth
from tests.browser.server import ServerThread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="freezes the cluster's processes found through /proc")

BUDGET = 5.0  # what issue #14 demands of every request while Postgres hangs
MARGIN = 0.5  # loopback HTTP and thread scheduling on a loaded 2-core machine


@dataclass
class Cluster:
    server: EmbeddedPostgres
    owner_dsn: str
    app_dsn: str
    tenant_id: uuid.UUID
    token: str
    source: str
    secret: str


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Our own Postgres, migrated, with one tenant, one operator and one door source."""
    base = Path(tempfile.mkdtemp(prefix="vos-test-pg-freeze-"))
    base.chmod(0o711)  # the `postgres` user must traverse it when we run as root
    server = EmbeddedPostgres(base / "cluster", fast_unsafe=True)
    try:
        superuser = server.start()
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute("CREATE DATABASE vos_freeze")
        owner = make_conninfo(superuser, dbname="vos_freeze")
        password = secrets.token_urlsafe(18)
        migrate(owner, app_password=password, log=lambda _msg: None)
        source = "edge"
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        with psycopg.connect(owner, autocommit=True) as conn:
            (tenant_id,) = conn.execute(
                "INSERT INTO tenants (slug, name) VALUES ('frozen', 'Frozen Co') RETURNING id"
            ).fetchone()
            conn.execute("INSERT INTO door_sources (source, tenant_id) VALUES (%s, %s)",
                         [source, tenant_id])
            token = auth.create_operator(conn, tenant_id, "ada")
        yield Cluster(server, owner, make_conninfo(owner, user="vos_app", password=password),
                      tenant_id, token, source, secret)
    finally:
        server.destroy()
        base.rmdir() if base.exists() else None


@dataclass
class Served:
    api: ServerThread
    door: ServerThread


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> Iterator[Served]:
    """The API (with the UI) and the door, each with its own pool, bounded as in production."""
    bounds = Settings(env="local").db_pool_options()
    api_pool = open_pool(cluster.app_dsn, min_size=3, max_size=3, name="vos-api", **bounds)
    door_pool = open_pool(cluster.app_dsn, min_size=2, max_size=2, name="vos-door", **bounds)
    api_pool.wait(timeout=30)
    door_pool.wait(timeout=30)
    api_app = create_api_app(api_pool)
    door_app = create_door_app(door_pool, {cluster.source: [decode_whsec(cluster.secret)]})
    api, door = ServerThread(api_app, free_port()), ServerThread(door_app, free_port())
    api.start()
    door.start()
    try:
        yield Served(api, door)
    finally:
        api.stop()
        door.stop()
        api_app.state.ui_hub.stop()
        api_pool.close(timeout=5)
        door_pool.close(timeout=5)


def cluster_pids(data_dir: Path, postmaster: int) -> list[int]:
    """The postmaster's children (backends and helpers), read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            # the field after the parenthesised command name is the state, then the ppid
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return children


@contextmanager
def frozen(server: EmbeddedPostgres) -> Iterator[None]:
    """SIGSTOP the whole cluster; SIGCONT it again whatever happens inside."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    stopped: list[int] = []
    try:
        os.kill(postmaster, signal.SIGSTOP)  # first, so it forks no backend we would miss
        stopped.append(postmaster)
        for pid in cluster_pids(server.data, postmaster):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in reversed(stopped):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def api_get(cluster: Cluster, served: Served) -> httpx.Response:
    """`GET /tasks` as the operator (Bearer token; the tenant comes from it)."""
    return httpx.get(f"{served.api.base_url}/tasks", timeout=30, headers={
        "Authorization": f"Bearer {cluster.token}"})


def ui_get(cluster: Cluster, served: Served) -> httpx.Response:
    return httpx.get(f"{served.api.base_url}/ui/board/fragment", timeout=30,
                     headers={"Authorization": f"Bearer {cluster.token}"})


def door_post(cluster: Cluster, served: Served) -> httpx.Response:
    raw = json.dumps({"type": "task.create", "title": f"From the edge {secrets.token_hex(3)}",
                      "priority": "P2"}).encode()
    msg_id, now = f"msg_{secrets.token_hex(8)}", datetime.now(UTC)
    sig = Webhook(cluster.secret).sign(msg_id, now, raw.decode())
    return httpx.post(f"{served.door.base_url}/callbacks/{cluster.source}", content=raw,
                      timeout=30, headers={
                          "webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                          "webhook-signature": sig, "content-type": "application/json"})


CALLS = {"api": (api_get, 200), "ui": (ui_get, 200), "door": (door_post, 202)}


class Timed(threading.Thread):
    """One request in a thread: its answer (or error) and how long it took."""

    def __init__(self, name: str, cluster: Cluster, served: Served):
        super().__init__(name=f"freeze-{name}", daemon=True)
        self.call = lambda: CALLS[name][0](cluster, served)
        self.status: int | None = None
        self.error: BaseException | None = None
        self.elapsed = float("inf")

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.status = self.call().status_code
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        self.elapsed = time.monotonic() - started


def all_at_once(cluster: Cluster, served: Served) -> dict[str, Timed]:
    calls = {name: Timed(name, cluster, served) for name in CALLS}
    for t in calls.values():
        t.start()
    for t in calls.values():
        t.join(BUDGET * 4)
    return calls


def assert_fast_503(calls: dict[str, Timed], when: str) -> None:
    for name, t in calls.items():
        assert t.error is None, f"{when}: {name} failed without an answer: {t.error!r}"
        assert t.status == 503, f"{when}: {name} answered {t.status}, not 503"
        assert t.elapsed < BUDGET - MARGIN, f"{when}: {name} took {t.elapsed:.1f} s"


def wait_for_lock_waiters(owner_dsn: str, want: int, timeout: float = 10.0) -> None:
    """Until `want` backends of the apps wait on a lock (bounded), i.e. are mid-statement."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (n,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name IN ('vos-api', 'vos-door')").fetchone()
            if n >= want:
                return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {want} requests reached Postgres in {timeout} s")


def test_frozen_postgres_gives_503_within_5s_then_recovers(cluster, served, caplog):
    caplog.set_level(logging.INFO)
    for name, (call, ok) in CALLS.items():  # healthy first, so the pools hold connections
        assert call(cluster, served).status_code == ok, name

    # a table lock makes each request wait inside its statement, holding its pooled
    # connection, when the freeze begins: the case that hung for the whole outage
    locker = psycopg.connect(cluster.owner_dsn)
    try:
        locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        in_flight = {name: Timed(name, cluster, served) for name in CALLS}
        for t in in_flight.values():
            t.start()
        wait_for_lock_waiters(cluster.owner_dsn, want=len(in_flight))
        with frozen(cluster.server):
            freeze_began = time.monotonic()
            new_requests = all_at_once(cluster, served)
            for t in in_flight.values():
                t.join(BUDGET * 4)
            assert_fast_503(in_flight, "in flight")
            assert_fast_503(new_requests, "new during the freeze")
            # the pools have dropped the connections they gave up on; requests later in the
            # same outage (past the 5 s) must not hang on reconnecting either
            time.sleep(max(0.0, freeze_began + BUDGET + 1 - time.monotonic()))
            assert_fast_503(all_at_once(cluster, served), "later during the freeze")
    finally:
        locker.rollback()  # after SIGCONT (the frozen() block has ended)
        locker.close()

    # the in-flight ones were cut by the client-side bound, not by the frozen server
    cut = [json.loads(r.getMessage()) for r in caplog.records
           if '"db_unavailable"' in r.getMessage() or '"door_db_unavailable"' in r.getMessage()]
    assert any(line.get("error") == "DatabaseTimeout" for line in cut), cut

    # recovery without a restart: the same servers and pools answer the very next request
    for name, (call, ok) in CALLS.items():
        status = call(cluster, served).status_code
        assert status == ok, f"{name} answers {status} after Postgres came back"
    with psycopg.connect(cluster.owner_dsn) as conn:  # no request of the outage was applied
        (n,) = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert n == 2, "a door callback answered 503 but still created its task"


def test_client_bound_closes_only_the_stuck_connection(cluster):
    """A round trip that gets no answer raises DatabaseTimeout (an OperationalError) and that
    connection is dropped; the pool then serves the next caller from a fresh one."""
    from app.db import DatabaseTimeout

    pool = open_pool(cluster.owner_dsn, min_size=1, max_size=1, statement_timeout_ms=60_000,
                     query_timeout=1.0, timeout=5, connect_timeout=5, name="vos-bound")
    try:
        pool.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout) as caught, pool.connection() as conn:
            conn.execute("SELECT pg_sleep(30)")  # alive, but silent longer than the bound
        assert isinstance(caught.value, psycopg.OperationalError)
        assert time.monotonic() - started < 10, "the client-side bound did not cut the wait"
        assert conn.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 41 + 1 AS n").fetchone()["n"] == 42
            # the kernel-level bounds for a blackholed network reach libpq as well
            params = conn.info.get_parameters()
            assert params["keepalives"] == "1" and params["tcp_user_timeout"] == "10000"
            assert params["connect_timeout"] == "5"
    finally:
        pool.close(timeout=5)


def test_settings_refuse_a_client_bound_below_the_server_bound():
    with pytest.raises(ValueError, match="db_query_timeout_seconds"):
        Settings(env="local", db_statement_timeout_seconds=3, db_query_timeout_seconds=2)
    options = Settings(env="local").db_pool_options()
    # the defaults keep the worst case (pool wait + one round trip) inside the 5 s promise
    assert options["timeout"] + options["query_timeout"] < BUDGET
    assert options["statement_timeout_ms"] < options["query_timeout"] * 1000
