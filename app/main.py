"""Where the Agent VOS starts: settings → Postgres → the API or the door.

`vos api serve` and `vos door serve` call `serve_api` / `serve_door`; tests build the apps
with `app.dispatch.api.create_api_app` and `app.door.app.create_door_app` around their own
pools. Two hops from here: dispatch/ (API, worker, status machine), door/ (the public app),
db/ (pool, tenant transactions, migrations).

Database resolution (`database`):
- DATABASE_URL set: used as is; it must name the confined `vos_app` role (checked at start).
- absent and VOS_ENV=local: an embedded Postgres is started in VOS_EMBEDDED_PG_DIR, migrated,
  and the app connects to it as `vos_app`; the CLI says so. Stopped again on exit.
- absent and VOS_ENV=production: refused by the settings model.

Example:
    serve_api(Settings(), host="100.64.0.1", port=8080)
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from app import jsonlog
from app.db import (
    APP_ROLE,
    UnsafeDatabaseRole,
    assert_app_role_is_confined,
    migrate,
    open_pool,
)
from app.db.embedded import EmbeddedPostgres
from app.settings import Settings

log = logging.getLogger("vos.main")


def _local_app_password(directory: Path) -> str:
    """The embedded cluster's `vos_app` password, kept beside it (local use only)."""
    path = directory / "vos_app.password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@contextlib.contextmanager
def database(settings: Settings, say: Callable[[str], None] = print) -> Iterator[str]:
    """Yield the DSN the app should use, starting an embedded Postgres in local use."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    root = settings.embedded_pg_dir
    say(f"DATABASE_URL is not set: starting the embedded Postgres in {root} (local use only)")
    server = EmbeddedPostgres(root)
    owner = server.start()
    try:
        password = _local_app_password(root)
        migrate(owner, app_password=password, log=say)
        yield make_conninfo(owner, user=APP_ROLE, password=password)
    finally:
        say("stopping the embedded Postgres")
        server.stop()


def check_role_at_start(pool: ConnectionPool) -> None:
    """Refuse to serve as an unconfined role; if Postgres is down, say so and start anyway
    (readiness answers 503 until it is back)."""
    try:
        role = assert_app_role_is_confined(pool)
    except psycopg.OperationalError as exc:
        jsonlog.emit(
            log, "db_unavailable_at_start", level=logging.ERROR, error=type(exc).__name__
        )
        return
    jsonlog.emit(log, "db_connected", role=role)


def _with_pool_lifespan(app: FastAPI, pool: ConnectionPool) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.close()

    app.router.lifespan_context = lifespan
    return app


def _serve(build: Callable[[ConnectionPool], FastAPI], settings: Settings, host: str,
           port: int, name: str, trusted_proxies: str = "",
           tls: tuple[str, str] | None = None, **uvicorn_options: object) -> None:
    jsonlog.configure()
    with database(settings) as dsn:
        pool = open_pool(  # connections opened up front: no SCRAM handshakes under load
            dsn, min_size=settings.db_pool_max_size, max_size=settings.db_pool_max_size,
            name=name,
            # every request answers (503) within ~5 s even when Postgres hangs
            **settings.db_pool_options(),
        )
        try:
            check_role_at_start(pool)
        except UnsafeDatabaseRole as exc:
            pool.close()
            raise SystemExit(f"error: {exc}") from None
        app = _with_pool_lifespan(build(pool), pool)
        jsonlog.emit(log, "listening", app=name, host=host, port=port)
        uvicorn.run(
            app, host=host, port=port, server_header=False, log_config=None,
            # believe X-Forwarded-For only from configured proxies, so the logged source
            # address (what fail2ban bans) cannot be forged by the client
            proxy_headers=bool(trusted_proxies), forwarded_allow_ips=trusted_proxies or None,
            # (certificate, key) files: the door speaks TLS itself, no proxy, no port 80
            **({"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}),
            **uvicorn_options,
        )


def serve_api(settings: Settings, host: str, port: int) -> None:
    """Run the private dispatch API until interrupted."""
    from app.dispatch.api import api_allowed_hosts, create_api_app

    hosts = api_allowed_hosts(host, settings.api_hosts())  # any other Host header gets 400
    _serve(lambda pool: create_api_app(pool, allowed_hosts=hosts), settings, host, port,
           "vos-api")


def serve_door(settings: Settings, host: str, port: int,
               tls: tuple[str, str] | None = None) -> None:
    """Run the door until interrupted; `tls` = (certificate file, key file) serves HTTPS.

    Connections get the door's deadlines and cap (app/door/protocol.py): slow clients are
    closed and logged for fail2ban, idle keep-alive ones closed after the idle timeout.
    The door awaits Postgres on the event loop (an async pool, one round trip per callback)
    in `VOS_DOOR_WORKERS` processes (app/door/worker.py builds each one's app and pool).
    """
    import os

    if not settings.door_secrets:
        raise SystemExit(
            "VOS_DOOR_SECRETS is empty: the door would refuse every callback. Set it to a JSON "
            'object like {"edge": "whsec_…"} (secrets from the sending side).'
        )
    jsonlog.configure()
    with database(settings) as dsn:
        # the role check once, on one short-lived connection; the workers open their own pools
        pool = open_pool(dsn, min_size=1, max_size=1, name="vos-door",
                         **settings.db_pool_options())
        try:
            check_role_at_start(pool)
        except UnsafeDatabaseRole as exc:
            raise SystemExit(f"error: {exc}") from None
        finally:
            pool.close()
        os.environ["DATABASE_URL"] = dsn  # what the workers (fresh interpreters) connect to
        jsonlog.emit(log, "listening", app="vos-door", host=host, port=port,
                     workers=settings.door_workers)
        uvicorn.run(
            "app.door.worker:create_app", factory=True, workers=settings.door_workers,
            http="app.door.worker:DoorProtocol", host=host, port=port, server_header=False,
            log_config=None, timeout_keep_alive=settings.door_idle_timeout_seconds,
            proxy_headers=bool(settings.door_trusted_proxies),
            forwarded_allow_ips=settings.door_trusted_proxies or None,
            **({"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}),
        )


def load_handler(spec: str) -> Callable[[dict], dict]:
    """Import a worker handler from `package.module:function`.

    Example:
        load_handler("app.agents.runner:work_task")
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: --handler {spec!r} must look like package.module:function")
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"error: cannot load handler {spec!r}: {exc}") from None
    if not callable(handler):
        raise SystemExit(f"error: handler {spec!r} is not callable")
    return handler


def run_worker(settings: Settings, tenant_ids: list, handler_spec: str, worker_id: str,
               drain: bool, idle_seconds: float | None = None, policy=None,
               route_unassigned: bool = False) -> int:
    """Run a dispatch worker with a generic handler over the given tenants (`vos worker run`);
    returns how many tasks it worked. The agent workforce is `vos agents work`; both go
    through `serve_worker`.

    `drain` stops once nothing is workable (batch jobs, tests); otherwise it polls until
    interrupted. `policy` is an `app.dispatch.policy.WorkerPolicy` (e.g. the agents file's
    `worker:` block; default: the defaults); `idle_seconds` overrides its idle_seconds.

    Example:
        run_worker(settings, [tenant_id], "pkg.mod:handle", "host/1", drain=True,
                   policy=WorkerPolicy(max_attempts=3))
    """
    jsonlog.configure()
    handler = load_handler(handler_spec)
    with database(settings) as dsn:
        return serve_worker(settings, dsn, tenant_ids, lambda _pool: (handler, None), worker_id,
                            drain=drain, idle_seconds=idle_seconds, policy=policy,
                            route_unassigned=route_unassigned)


def serve_worker(settings: Settings, dsn: str, tenant_ids: list,
                 build: Callable[[ConnectionPool], tuple[Callable[[dict], dict], Callable | None]],
                 worker_id: str, *, drain: bool, idle_seconds: float | None = None,
                 policy=None, route_unassigned: bool = False, pool_name: str = "vos-worker",
                 pool_size: int = 2, pool_timeout: float | None = None,
                 retry: Callable[[Callable], object] = lambda step: step(),
                 beat: Callable[[], None] = lambda: None) -> int:
    """The one place a dispatch worker is put together: pool → role check → handler → Worker
    → serve (until interrupted) or drain (returns how many tasks it worked).

    `build(pool)` makes (handler, on_settled) once the role is known to be confined. An
    unconfined role (superuser, BYPASSRLS, table owner) exits cleanly: SystemExit("error: …"),
    exit status 1, no traceback. `retry(step)` runs the role check (e.g. retried while Postgres
    does not answer yet); `beat()` is called as start-up makes progress (a heartbeat file).

    Example:
        serve_worker(settings, dsn, [tenant_id], lambda pool: (handle, None), "host/1",
                     drain=True)
    """
    from app.dispatch.policy import WorkerPolicy
    from app.dispatch.worker import Worker

    pool = open_pool(dsn, max_size=pool_size, name=pool_name,
                     timeout=settings.db_timeout_seconds if pool_timeout is None else pool_timeout)
    try:
        try:
            retry(lambda: assert_app_role_is_confined(pool))
        except UnsafeDatabaseRole as exc:
            raise SystemExit(f"error: {exc}") from None
        beat()
        handler, on_settled = build(pool)
        beat()
        worker = Worker(pool, worker_id, handler, policy=policy or WorkerPolicy(),
                        route_unassigned=route_unassigned, on_settled=on_settled)
        jsonlog.emit(log, "worker_started", worker=worker_id, tenants=len(tenant_ids),
                     max_attempts=worker.policy.max_attempts)
        if not drain:
            worker.serve(tenant_ids, idle_seconds=idle_seconds)
            return 0
        worked = worker.drain(tenant_ids)
        jsonlog.emit(log, "worker_drained", worker=worker_id, worked=worked)
        return worked
    finally:
        pool.close()
