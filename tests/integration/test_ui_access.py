"""Command Center access, CSRF, bad input and the SSE feed, over HTTP against the real app
(uvicorn on loopback) and a real Postgres. The browser tier (tests/browser) covers the pages.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.ui import auth
from tests.browser.server import ServerThread, serving_api


@pytest.fixture(scope="module")
def served(migrated_db):
    with serving_api(migrated_db.app_dsn, "vos-ui-it") as (server, pool, _app):
        yield server, pool


@pytest.fixture
def operator(make_tenant, owner_dsn):
    """(tenant, token) of a fresh tenant with one operator."""
    def make(slug: str = "ops"):
        tenant = make_tenant(slug)
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            token = auth.create_operator(conn, tenant.id, "ada")
        return tenant, token
    return make


def client(server: ServerThread, token: str | None = None, bearer: bool = False) -> httpx.Client:
    """Anonymous, Bearer, or (default with a token) signed in through the real form."""
    c = httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False)
    if token and bearer:
        c.headers["Authorization"] = f"Bearer {token}"
    elif token:
        with httpx.Client(base_url=server.base_url, timeout=10) as form:
            nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.get("/ui/login").text)
            signed_in = form.post("/ui/login", data={"token": token,
                                                     "csrf_token": nonce.group(1)})
            assert signed_in.headers["location"] == "/ui/board", signed_in.headers
            c.cookies.set("vos_session", form.cookies["vos_session"], domain="127.0.0.1",
                          path="/ui")
    return c


def task_count(pool, tenant_id) -> int:
    with tenant_transaction(pool, tenant_id) as conn:
        return conn.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"]


def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page_html).group(1)


def test_pages_need_a_valid_token(served, operator):
    server, _pool = served
    acme, token = operator("acme")
    globex, _ = operator("globex")
    with client(server) as anonymous:
        assert anonymous.get("/ui/board").headers["location"] == "/ui/login"
        assert anonymous.get("/ui/board/fragment").status_code == 401
        assert anonymous.get("/ui/feed/stream").status_code == 401
    secret = token.rsplit("_", 1)[1]
    forged = [
        f"vost_{acme.id.hex}_{'x' * 43}",          # right tenant, made-up secret
        f"vost_{globex.id.hex}_{secret}",          # acme's secret presented for globex
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # one character off
        "not-a-token",
    ]
    for bad in forged:
        with client(server, bad, bearer=True) as c:
            assert c.get("/ui/board").status_code == 303, bad
            assert c.get("/ui/org/fragment").status_code == 401, bad
    with client(server, token, bearer=True) as c:
        page = c.get("/ui/board")
        assert page.status_code == 200 and acme.name in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_revoked_token_stops_working_and_cli_explains(served, operator, owner_dsn):
    from cli import cli

    server, _pool = served
    acme, token = operator("rev")
    runner = CliRunner()
    env = {"DATABASE_URL": owner_dsn}
    created = runner.invoke(cli, ["operator", "create", acme.slug, "--name", "grace"], env=env)
    assert created.exit_code == 0, created.output
    grace = re.search(r"vost_\S+", created.output).group(0)
    with client(server, grace, bearer=True) as c:
        assert c.get("/ui/board").status_code == 200
    revoked = runner.invoke(cli, ["operator", "revoke", acme.slug, "--name", "grace"], env=env)
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.output
    with client(server, grace, bearer=True) as c:
        assert c.get("/ui/board/fragment").status_code == 401
    with client(server, token, bearer=True) as c:  # ada's token is untouched
        assert c.get("/ui/board/fragment").status_code == 200
    unknown = runner.invoke(cli, ["operator", "create", "no-such-tenant", "--name", "x"], env=env)
    assert unknown.exit_code == 1 and "vos tenant create" in unknown.output
    bad_name = runner.invoke(cli, ["operator", "create", acme.slug, "--name", "a;b"], env=env)
    assert bad_name.exit_code == 2 and "--name" in bad_name.output


def test_forms_refuse_missing_wrong_or_cross_origin_csrf(served, operator):
    server, pool = served
    acme, token = operator("csrf")
    with client(server, token) as c:
        good = csrf_of(c.get("/ui/board").text)
        attempts = [
            ({"title": "no token"}, {}),
            ({"title": "wrong token", "csrf_token": "0" * 64}, {}),
            ({"title": "other session's token",
              "csrf_token": auth.csrf_for(auth.new_session_id(acme.id))}, {}),
            ({"title": "cross origin", "csrf_token": good}, {"Origin": "http://evil.example"}),
        ]
        for form, headers in attempts:
            answer = c.post("/ui/tasks", data=form, headers=headers)
            assert answer.status_code == 403, form["title"]
            assert "Reload the page and try again" in answer.text
        assert task_count(pool, acme.id) == 0, "a refused form wrote a task"
        ok = c.post("/ui/tasks", data={"title": "real one", "csrf_token": good},
                    headers={"Origin": server.base_url})
        assert ok.status_code == 303 and "created" in c.get(ok.headers["location"]).text
        assert task_count(pool, acme.id) == 1
    with client(server, token, bearer=True) as api_client:  # no ambient credential: no CSRF
        assert api_client.post("/ui/tasks", data={"title": "by bearer"}).status_code == 303
    assert task_count(pool, acme.id) == 2


def test_login_form_needs_its_own_csrf_nonce(served, operator):
    server, _pool = served
    _acme, token = operator("login")
    with client(server) as c:
        assert c.post("/ui/login", data={"token": token}).status_code == 403
        form = c.get("/ui/login")
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        wrong = c.post("/ui/login", data={"token": "vost_bad", "csrf_token": nonce})
        assert wrong.status_code == 303 and "error=" in wrong.headers["location"]
        signed_in = c.post("/ui/login", data={"token": token, "csrf_token": nonce})
        assert signed_in.headers["location"] == "/ui/board"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert c.get("/ui/board").status_code == 200


@pytest.mark.parametrize("form, message", [
    ({"title": ""}, "Task not created: title"),
    ({"title": "x" * 501}, "Task not created: title"),
    ({"title": "ok", "priority": "P9"}, "Task not created: priority"),
    ({"title": "ok", "status": "Approved"}, "a new task starts as Draft or Active"),
    ({"title": "ok", "assignee_id": "not-a-uuid"}, "Task not created: assignee_id"),
    ({"title": "ok", "assignee_id": str(uuid.uuid4())}, "is not an agent of this tenant"),
    ({"title": "nul \x00 byte"}, "Not applied"),
])
def test_bad_task_input_is_explained_and_writes_nothing(served, operator, form, message):
    server, pool = served
    acme, token = operator("bad")
    with client(server, token, bearer=True) as c:
        answer = c.post("/ui/tasks", data=form)
        assert answer.status_code == 303
        banner = c.get(answer.headers["location"]).text
    assert message in banner.replace("&#39;", "'")
    assert task_count(pool, acme.id) == 0


def test_moves_follow_the_status_machine(served, operator):
    server, pool = served
    acme, token = operator("moves")
    with tenant_transaction(pool, acme.id) as conn:
        task = repo.create_task(conn, acme.id, title="t")
    with client(server, token, bearer=True) as c:
        def move(status):
            answer = c.post(f"/ui/tasks/{task['id']}/move", data={"status": status})
            return c.get(answer.headers["location"]).text
        assert "cannot move from Draft to Approved" in move("Approved")
        assert "unknown status" in move("Done")
        for step in ("Active", "Review", "Rejected", "Active", "Review", "Approved"):
            assert "Not applied" not in move(step), step
        assert "from Approved it can move to: nothing" in move("Active")
    with tenant_transaction(pool, acme.id) as conn:
        kinds = [e["payload"]["changes"]["status"][1] for e in
                 repo.list_events(conn, task_id=task["id"]) if e["kind"] == "status_changed"]
        actors = {e["payload"]["actor"] for e in repo.list_events(conn, task_id=task["id"])}
    assert kinds == ["Active", "Review", "Rejected", "Active", "Review", "Approved"]
    assert actors == {None, "ui:ada"}  # created by the test (no actor), moved by the UI


def read_sse(lines, count: int) -> list[dict]:
    """Read `count` task events from an SSE line iterator (bounded by the client timeout)."""
    events, current = [], {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "id" in current:
            events.append(current)
            current = {}
            if len(events) == count:
                return events
    raise AssertionError(f"stream ended after {len(events)} of {count} events")


def test_sse_resumes_from_last_event_id_and_shows_one_tenant(served, operator):
    server, pool = served
    acme, token = operator("sse")
    globex, _ = operator("sse-globex")

    def create(tenant, title):
        with tenant_transaction(pool, tenant.id, actor="test") as conn:
            repo.create_task(conn, tenant.id, title=title)

    create(acme, "before-1")
    create(acme, "before-2")
    with client(server, token, bearer=True) as c:
        with c.stream("GET", "/ui/feed/stream?after=0") as stream:
            first = read_sse(stream.iter_lines(), 2)
        assert [e["data"]["title"] for e in first] == ["before-1", "before-2"]
        # while disconnected: other tenant's event and three of ours
        create(globex, "globex-secret")
        for i in range(3):
            create(acme, f"missed-{i}")
        with c.stream("GET", "/ui/feed/stream",
                      headers={"Last-Event-ID": str(first[-1]["id"])}) as stream:
            lines = stream.iter_lines()
            resumed = read_sse(lines, 3)
            # and live: an event created while connected arrives through NOTIFY
            create(globex, "globex-live")
            create(acme, "live-1")
            live = read_sse(lines, 1)
    assert [e["data"]["title"] for e in resumed] == ["missed-0", "missed-1", "missed-2"]
    assert live[0]["data"]["title"] == "live-1"
    ids = [e["id"] for e in first + resumed + live]
    assert ids == sorted(set(ids)), "events repeated or out of order"


def test_the_door_never_serves_the_command_center(served, operator):
    """The UI lives in the private API process only; the public door has no /ui at all."""
    from starlette.testclient import TestClient

    from app.door.app import create_door_app

    _server, pool = served
    _acme, token = operator("door")
    door = create_door_app(pool, {"edge": [b"k" * 24]})
    with TestClient(door) as c:
        for path in ("/ui/", "/ui/login", "/ui/board", "/ui/static/app.js", "/ui/feed/stream"):
            answer = c.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code in (404, 405), (path, answer.status_code)
            assert "Command Center" not in answer.text


def test_every_ui_route_needs_a_session(served):
    """Walks the app's own route table, so a route added later is covered too: without a
    credential, pages redirect to the sign-in form, and fragments, streams and every form
    answer 401 (nothing runs)."""
    from fastapi.routing import APIRoute

    def walk(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            # FastAPI ≥ 0.16x keeps an included router whole (its routes carry the prefix)
            yield from walk(getattr(getattr(route, "original_router", None), "routes", []))

    server, _pool = served
    open_routes = {"/ui/login"}
    routes = [r for r in walk(server.app.routes)
              if r.path.startswith("/ui") and r.path not in open_routes]
    assert len(routes) >= 20, [r.path for r in routes]
    assert {"/ui/inbox", "/ui/inbox/fragment", "/ui/approvals/{approval_id}",
            "/ui/tasks/{task_id}/cancel", "/ui/agents/{agent_id}/resume"} <= {
        r.path for r in routes}
    with client(server) as anonymous:
        for route in routes:
            path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
            for method in route.methods - {"HEAD"}:
                answer = anonymous.request(method, path, data={"x": "1"}
                                           if method == "POST" else None)
                page = method == "GET" and "fragment" not in path and "stream" not in path
                if page:
                    assert answer.status_code == 303, (method, route.path)
                    assert answer.headers["location"] == "/ui/login", (method, route.path)
                else:
                    assert answer.status_code == 401, (method, route.path, answer.status_code)
