"""The stack `vos dev` runs: Postgres, fake providers, demo tenant and operator, the demo
agents applied from `examples/agents.yaml`, an agent worker, and the API app with the Command
Center, all on loopback.

Example:
    stack = DevStack(Settings(), "demo", "VOS_APP_PASSWORD")
    stack.start()                    # prints each step
    stack.serve("127.0.0.1", 8080)   # until Ctrl-C
    stack.stop()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import psycopg
import uvicorn
from psycopg.conninfo import make_conninfo

from app.db import APP_ROLE, migrate, open_pool
from app.settings import Settings

DEV_OPERATOR = "vos-dev"


class DevStack:
    """Everything `vos dev` starts, stopped again in reverse order by `stop()`."""

    def __init__(self, settings: Settings, tenant_slug: str, app_password_env: str,
                 say: Callable[[str], None] = print):
        self.settings = settings
        self.tenant_slug = tenant_slug
        self.app_password_env = app_password_env
        self.say = say
        self.server = None
        self.fleet: dict = {}
        self.pool = None
        self.app = None
        self.token = ""
        self.tenant_id = None
        self._stop_worker = threading.Event()
        self._worker_thread: threading.Thread | None = None

    def start(self) -> None:
        owner_dsn, app_dsn = self._database()
        self.tenant_id, self.token = self._tenant_and_operator(owner_dsn)
        self._start_fakes_and_app(app_dsn)

    def _database(self) -> tuple[str, str]:
        """(owner DSN, vos_app DSN) after migrating; embedded Postgres without DATABASE_URL."""
        from app.main import _local_app_password

        if self.settings.database_url is not None:
            owner = self.settings.database_url.get_secret_value()
            password = os.environ.get(self.app_password_env, "")
            if not password:
                raise RuntimeError(
                    f"DATABASE_URL is set, so vos dev uses it as the owner role and needs the "
                    f"vos_app password in ${self.app_password_env}; or unset DATABASE_URL to "
                    "use the embedded Postgres")
            self.say("step 1/5: migrating DATABASE_URL (as the owner role)")
        else:
            from app.db.embedded import EmbeddedPostgres

            root = self.settings.embedded_pg_dir
            self.say(f"step 1/5: DATABASE_URL is not set: starting the embedded Postgres in "
                     f"{root} (local use only)")
            self.server = EmbeddedPostgres(root)
            owner = self.server.start()
            password = _local_app_password(root)
        migrate(owner, app_password=password, log=self.say)
        return owner, make_conninfo(owner, user=APP_ROLE, password=password)

    def _tenant_and_operator(self, owner_dsn: str):
        """The demo tenant (created if missing) and a fresh dev operator token."""
        from app.ui.auth import create_operator

        self.say(f"step 2/5: tenant {self.tenant_slug!r} and a fresh operator token")
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, %s) "
                          "ON CONFLICT (slug) DO NOTHING",
                          [self.tenant_slug, f"{self.tenant_slug.title()} workspace"])
            (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE slug = %s",
                                        [self.tenant_slug]).fetchone()
            # one live dev token at a time: the previous run's stops working
            conn.execute("UPDATE operator_tokens SET revoked_at = now() WHERE tenant_id = %s "
                         "AND name = %s AND revoked_at IS NULL", [tenant_id, DEV_OPERATOR])
            token = create_operator(conn, tenant_id, DEV_OPERATOR)
        return tenant_id, token

    def _start_fakes_and_app(self, app_dsn: str) -> None:
        from app.dispatch.api import create_api_app
        from devtools.demo import demo_workforce, orchestrated, run_dev_worker, seed_demo
        from devtools.fakes import start_fake_fleet

        self.say("step 3/5: fake providers (Anthropic, OpenAI, OpenRouter, Ollama wire formats)")
        self.fleet = start_fake_fleet()
        for name, server in sorted(self.fleet.items()):
            self.say(f"  {name:<10} {server.base_url}")
        self.pool = open_pool(app_dsn, min_size=2, max_size=8, name="vos-dev")
        self.pool.wait(timeout=30)
        workforce = demo_workforce(self.fleet, self.pool)
        self.say("step 4/5: demo agents (examples/agents.yaml) and data")
        if not seed_demo(self.pool, self.tenant_id, workforce.handle, say=self.say,
                         on_settled=workforce.on_settled):
            self.say("  the tenant has tasks already: kept as it is")
        self._worker_thread = threading.Thread(
            target=run_dev_worker,
            args=(self.pool, self.tenant_id, orchestrated(self.pool, workforce.handle),
                  self._stop_worker),
            kwargs={"on_settled": workforce.on_settled},
            name="vos-dev-worker", daemon=True)
        self._worker_thread.start()
        self.app = create_api_app(self.pool)

    def serve(self, host: str, port: int) -> None:
        """Serve until interrupted; prints the sign-in URL and, separately, the token."""
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.say("step 5/5: serving the API and the Command Center")
        # no sign-in link: the operator pastes the token on our page (no cross-site sign-in)
        self.say(f"\nCommand Center: {base}/ui/login\n"
                 f"Operator token (paste it into the sign-in form): {self.token}\n"
                 "Move a task to Active: an agent works it through the fake providers, the "
                 "feed shows it, costs update.\nCtrl-C stops everything.")
        from app.dispatch.api import allow_hosts, api_allowed_hosts

        allow_hosts(self.app, api_allowed_hosts(host))  # the bind address, besides loopback
        uvicorn.run(self.app, host=host, port=port, log_level="warning", server_header=False)

    def stop(self) -> None:
        """Stop the worker, the listener, the pool, the fakes and Postgres (reverse order)."""
        self._stop_worker.set()
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=10)
        if self.app is not None:
            self.app.state.ui_hub.stop()
        if self.pool is not None:
            self.pool.close()
        for server in self.fleet.values():
            server.stop()
        if self.server is not None:
            self.say("stopping the embedded Postgres")
            self.server.stop()
            self.server = None
