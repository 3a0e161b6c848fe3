"""The browser tier: the real app (API + Command Center) on loopback over a real Postgres,
driven by Debian's headless Chromium through Playwright.

Fixtures:
    ui_stack   module   the app served by uvicorn on 127.0.0.1:<free port> (restartable, for
                        the reconnect test), two tenants with agents and operator tokens, the
                        fake providers and an agent runner (a real router over them)
    browser    module   headless Chromium (/usr/bin/chromium)

Every wait is bounded (Playwright's timeouts are set low; the server start is polled for at
most 15 s).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from app.agents.ledger import seed_prices
from app.db import open_pool, tenant_transaction
from app.db.embedded import free_port
from app.dispatch import tasks as repo
from app.dispatch.api import create_api_app
from app.ui.auth import create_operator
from devtools.demo import demo_workforce, seed_demo
from devtools.fakes import start_fake_fleet
from tests.browser.server import ServerThread

CHROMIUM = os.environ.get("VOS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}  # iPhone 13/14 logical size


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/browser/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@dataclass
class TenantSetup:
    id: uuid.UUID
    slug: str
    token: str
    agents: dict[str, uuid.UUID]


@dataclass
class UiStack:
    server: ServerThread
    pool: object
    acme: TenantSetup
    globex: TenantSetup
    demo: TenantSetup
    runner: Callable[[dict], dict]
    fleet: dict

    @property
    def url(self) -> str:
        return self.server.base_url + "/ui"


def _tenant(owner_dsn: str, pool, slug: str, agents: list[tuple[str, str, str | None]]
            ) -> TenantSetup:
    unique = f"{slug}-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        (tenant_id,) = conn.execute(
            "INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
            [unique, f"{slug.title()} workspace" if slug == "demo" else slug.title()]
        ).fetchone()
        token = create_operator(conn, tenant_id, f"{slug}-operator")
    ids: dict[str, uuid.UUID] = {}
    with tenant_transaction(pool, tenant_id, actor="test-setup") as conn:
        seed_prices(conn, tenant_id)
        for name, role, manager in agents:
            ids[name] = repo.create_agent(
                conn, tenant_id, name=name, role=role, manager_id=ids.get(manager),
                model_preferences={"chain": ["sonnet"]}, budget_usd=5)["id"]
    return TenantSetup(tenant_id, unique, token, ids)


@pytest.fixture(scope="module")
def ui_stack(migrated_db) -> UiStack:
    pool = open_pool(migrated_db.app_dsn, min_size=2, max_size=8, name="vos-ui-browser")
    pool.wait(timeout=30)
    fleet = start_fake_fleet()
    app = create_api_app(pool)
    server = ServerThread(app, free_port())
    server.start()
    try:
        acme = _tenant(migrated_db.owner_dsn, pool, "acme", [
            ("Orchestrator", "Orchestrator", None),
            ("Marketing Lead", "Lead · marketing", "Orchestrator"),
            ("Creative", "Specialist · copy", "Marketing Lead"),
            ("CTO", "Lead · engineering", "Orchestrator")])
        globex = _tenant(migrated_db.owner_dsn, pool, "globex", [
            ("Globex Secret Agent", "Orchestrator", None)])
        with tenant_transaction(pool, globex.id, actor="test-setup") as conn:
            repo.create_task(conn, globex.id, title="Globex secret merger plan", priority="P0",
                             assignee_id=globex.agents["Globex Secret Agent"])
        runner = demo_workforce(fleet, pool).handle
        demo = _tenant(migrated_db.owner_dsn, pool, "demo", [])
        assert seed_demo(pool, demo.id, runner, say=lambda _msg: None)
        yield UiStack(server, pool, acme, globex, demo, runner, fleet)
    finally:
        server.stop()
        app.state.ui_hub.stop()
        for fake in fleet.values():
            fake.stop()
        pool.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # assertions poll up to 10 s (default 5 s): this machine is shared with busy VMs
    expect.set_options(timeout=10_000)

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package "
                    "(scripts/bootstrap.sh does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser, stack: UiStack, token: str, *, viewport=DESKTOP, phone: bool = False):
    """A new browser context signed in with `token`, typed into the form and submitted with
    the button (the only way: there is no sign-in link); returns (context, page)."""
    context = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone,
                                  device_scale_factor=2 if phone else 1)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{stack.url}/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{stack.url}/board")
    return context, page


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
