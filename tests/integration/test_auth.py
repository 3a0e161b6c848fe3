"""One authentication model for the mesh API and the Command Center (issue #14), attacked over
HTTP against the real app (uvicorn on loopback, or Starlette's client) and a real Postgres.

Each test reproduces one finding of the issue and proves it refused: header-chosen tenants,
revoked tokens that still work, foreign Host headers, public OpenAPI docs, sign-out that
leaves the cookie valid, live streams that outlive revocation, `/ui/login#token` sign-in,
login CSRF, unlimited sign-in guessing and URL text in banners; and the route walk proves no
route answers without a credential except sign-in, health and static files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.api import api_allowed_hosts, create_api_app
from app.ui import auth
from app.ui.routes import ERROR_CODES, NOTICE_CODES
from tests.browser.server import ServerThread, serving_api

STATIC = Path(__file__).resolve().parents[2] / "app" / "ui" / "static"


@pytest.fixture(scope="module")
def served(migrated_db):
    with serving_api(migrated_db.app_dsn, "vos-auth-it", max_size=8) as served:
        yield served


@pytest.fixture
def operator(make_tenant, owner_dsn):
    """(tenant, token) of a fresh tenant with one operator."""
    def make(slug: str = "auth", name: str = "ada"):
        tenant = make_tenant(slug)
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            token = auth.create_operator(conn, tenant.id, name)
        return tenant, token
    return make


def revoke(owner_dsn: str, token: str) -> None:
    """What `vos operator revoke` does: stamp revoked_at (owner connection)."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        done = conn.execute("UPDATE operator_tokens SET revoked_at = now() "
                            "WHERE token_sha256 = %s", [auth.token_digest(token)])
        assert done.rowcount == 1


def browser(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False)


def sign_in(server: ServerThread, token: str) -> httpx.Client:
    """Sign in through the real form, as a browser does; returns a fresh client holding the
    session cookie (usable in a `with` block)."""
    with browser(server) as c:
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/ui/login").text)
        answer = c.post("/ui/login", data={"token": token, "csrf_token": nonce.group(1)})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/board"
        session = c.cookies["vos_session"]
    signed_in = browser(server)
    signed_in.cookies.set("vos_session", session, domain="127.0.0.1", path="/ui")
    return signed_in


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page_html).group(1)


# -- the API: Bearer only, tenant from the token ------------------------------------------------


def test_no_header_chooses_a_tenant_the_token_does(served, operator):
    server, pool, _app = served
    acme, token = operator("hdr-acme")
    globex, _ = operator("hdr-globex")
    with tenant_transaction(pool, globex.id) as conn:
        secret = repo.create_task(conn, globex.id, title="Globex merger")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        # the attack of the issue: a known tenant UUID in a header, no credential
        for path in ("/tasks", "/events", "/agents", "/documents", f"/tasks/{secret['id']}"):
            answer = c.get(path, headers={"X-VOS-Tenant": str(globex.id)})
            assert answer.status_code == 401, (path, answer.status_code)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "Globex" not in answer.text
        write = c.post("/tasks", json={"title": "planted"},
                       headers={"X-VOS-Tenant": str(globex.id)})
        assert write.status_code == 401
        # a valid token of acme plus globex's id in the header: acme's data, acme's writes
        both = {**bearer(token), "X-VOS-Tenant": str(globex.id)}
        assert c.get(f"/tasks/{secret['id']}", headers=both).status_code == 404
        created = c.post("/tasks", json={"title": "mine"}, headers=both).json()
        assert created["tenant_id"] == str(acme.id)
        assert {t["tenant_id"] for t in c.get("/tasks", headers=both).json()} == {str(acme.id)}
        for bad in ("Bearer", "Bearer not-a-token", f"Basic {token}", token,
                    f"Bearer vost_{globex.id.hex}_{token.rsplit('_', 1)[1]}"):
            assert c.get("/tasks", headers={"Authorization": bad}).status_code == 401, bad
    with tenant_transaction(pool, globex.id) as conn:
        assert [t["title"] for t in repo.list_tasks(conn)] == ["Globex merger"]


def test_a_revoked_token_gets_401_at_once_on_the_api_and_the_ui(served, operator, owner_dsn):
    server, _pool, _app = served
    _acme, token = operator("revoke")
    ui = sign_in(server, token)
    with httpx.Client(base_url=server.base_url, timeout=10, headers=bearer(token)) as api:
        assert api.get("/tasks").status_code == 200
        assert api.post("/tasks", json={"title": "before"}).status_code == 201
        assert ui.get("/ui/board").status_code == 200
        revoke(owner_dsn, token)
        # the very next request of every kind is refused: no cache, no grace period
        assert api.get("/tasks").status_code == 401
        assert api.post("/tasks", json={"title": "after"}).status_code == 401
        assert api.get("/ui/board/fragment").status_code == 401
        session_id = ui.cookies["vos_session"]
        board = ui.get("/ui/board")
        assert board.status_code == 303
        assert board.headers["location"] == "/ui/login?error=session_ended"
    ui.close()
    with browser(server) as again:  # the same session id, kept by someone: still dead
        again.cookies.set("vos_session", session_id, domain="127.0.0.1", path="/ui")
        assert again.get("/ui/board/fragment").status_code == 401


# -- Host allowlist and OpenAPI -----------------------------------------------------------------


def test_a_foreign_host_gets_400_everywhere(served, operator, caplog):
    server, _pool, _app = served
    _acme, token = operator("host")
    rebinding = ["evil.example", "evil.example:8080", f"127.0.0.1.evil.example:{server.port}",
                 "", "100.64.0.1"]
    with httpx.Client(base_url=server.base_url, timeout=10, headers=bearer(token)) as c:
        for host in rebinding:
            for path in ("/healthz", "/tasks", "/ui/login", "/ui/board", "/ui/static/app.js"):
                answer = c.get(path, headers={"Host": host})
                assert answer.status_code == 400, (host, path, answer.status_code)
                assert "VOS_API_ALLOWED_HOSTS" in answer.text
        for host in (f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}"):
            assert c.get("/tasks", headers={"Host": host}).status_code == 200, host
    refused = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "vos.api" and "host_refused" in r.getMessage()]
    assert refused and refused[0]["event"] == "host_refused" and "src" in refused[0]


def test_the_allowlist_takes_the_mesh_address_and_configured_names(app_pool):
    hosts = api_allowed_hosts("100.64.0.1", ["vos.tail1234.ts.net"])
    client = TestClient(create_api_app(app_pool, allowed_hosts=hosts), base_url="http://x")
    for host in ("100.64.0.1:8080", "vos.tail1234.ts.net", "127.0.0.1", "[::1]:8080"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    assert client.get("/healthz", headers={"Host": "[::2]:8080"}).status_code == 400
    # a wildcard bind (the compose stack's 0.0.0.0) is never itself an allowed Host
    assert "0.0.0.0" not in api_allowed_hosts("0.0.0.0", ["100.64.0.1"])
    stack = TestClient(create_api_app(app_pool, allowed_hosts=api_allowed_hosts("0.0.0.0")),
                       base_url="http://x")
    assert stack.get("/healthz", headers={"Host": "0.0.0.0:8080"}).status_code == 400


def test_openapi_docs_are_off_and_the_schema_needs_a_token(served, operator):
    server, _pool, _app = served
    _acme, token = operator("docs")
    with browser(server) as c:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert c.get(path).status_code == 404, path
            assert c.get(path, headers=bearer(token)).status_code == 404, path
        anonymous = c.get("/openapi.json")
        assert anonymous.status_code == 401 and "paths" not in anonymous.text
        schema = c.get("/openapi.json", headers=bearer(token))
        assert schema.status_code == 200 and "/tasks" in schema.json()["paths"]
        assert not any(p.startswith("/ui") for p in schema.json()["paths"])


# -- browser sessions -----------------------------------------------------------------------


def test_the_cookie_is_a_random_session_id_stored_hashed(served, operator, owner_dsn):
    server, _pool, _app = served
    acme, token = operator("cookie")
    with browser(server) as c:
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/ui/login").text)
        answer = c.post("/ui/login", data={"token": token, "csrf_token": nonce.group(1)})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        session_id = c.cookies["vos_session"]
    assert token not in cookie and token.rsplit("_", 1)[1] not in cookie
    secret = session_id.split(".", 1)[1]
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    with psycopg.connect(owner_dsn) as conn:
        rows = conn.execute("SELECT session_sha256, * FROM operator_sessions "
                            "WHERE tenant_id = %s", [acme.id]).fetchall()
    assert len(rows) == 1
    assert bytes(rows[0][0]) == hashlib.sha256(session_id.encode()).digest()
    assert session_id not in repr(rows) and secret not in repr(rows)


def test_sign_out_ends_the_session_so_a_captured_cookie_is_dead(served, operator, owner_dsn):
    server, _pool, _app = served
    _acme, token = operator("logout")
    c = sign_in(server, token)
    captured = c.cookies["vos_session"]
    page = c.get("/ui/board")
    out = c.post("/ui/logout", data={"csrf_token": csrf_of(page.text)},
                 headers={"Origin": server.base_url})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login?notice=signed_out"
    assert NOTICE_CODES["signed_out"] in c.get(out.headers["location"]).text
    c.close()
    with browser(server) as thief:  # the attacker replays the cookie they copied earlier
        thief.cookies.set("vos_session", captured, domain="127.0.0.1", path="/ui")
        board = thief.get("/ui/board")
        assert board.status_code == 303
        assert board.headers["location"] == "/ui/login?error=session_ended"
        assert thief.get("/ui/board/fragment").status_code == 401
        assert thief.get("/ui/feed/stream").status_code == 401
        assert thief.post("/ui/tasks", data={"title": "x"}).status_code == 401
    with psycopg.connect(owner_dsn) as conn:
        (ended,) = conn.execute("SELECT ended_at FROM operator_sessions WHERE session_sha256 "
                                "= %s", [hashlib.sha256(captured.encode()).digest()]).fetchone()
    assert ended is not None


def test_idle_and_expired_sessions_end(served, operator, owner_dsn):
    server, _pool, _app = served
    _acme, token = operator("idle")
    idle, old = sign_in(server, token), sign_in(server, token)
    digest = {name: hashlib.sha256(c.cookies["vos_session"].encode()).digest()
              for name, c in (("idle", idle), ("old", old))}
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("UPDATE operator_sessions SET last_seen_at = now() - interval '13 hours' "
                     "WHERE session_sha256 = %s", [digest["idle"]])
        conn.execute("UPDATE operator_sessions SET created_at = now() - interval '8 days', "
                     "expires_at = now() - interval '1 day' WHERE session_sha256 = %s",
                     [digest["old"]])
    for c in (idle, old):
        assert c.get("/ui/board/fragment").status_code == 401
        c.close()
    # the app role cannot extend a session or delete one (its grants)
    with psycopg.connect(owner_dsn) as conn:
        grants = {(r[0], r[1]) for r in conn.execute(
            "SELECT privilege_type, column_name FROM information_schema.column_privileges "
            "WHERE grantee = 'vos_app' AND table_name = 'operator_sessions' "
            "AND privilege_type = 'UPDATE'")}
        table = {r[0] for r in conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'vos_app' AND table_name = 'operator_sessions'")}
    assert grants == {("UPDATE", "last_seen_at"), ("UPDATE", "ended_at")}
    assert table == {"SELECT"}  # INSERT is column-level; no DELETE, no table-wide UPDATE


def read_until(lines, wanted: str, seconds: float) -> float:
    """Read SSE lines until `wanted` arrives; returns the seconds it took (bounded)."""
    started = time.monotonic()
    for line in lines:
        if line == wanted:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            break
    raise AssertionError(f"{wanted!r} did not arrive within {seconds} s")


@pytest.mark.parametrize("how", ["revoke", "sign-out"])
def test_an_open_live_feed_closes_within_seconds(served, operator, owner_dsn, how):
    server, pool, _app = served
    acme, token = operator(f"sse-{how}")
    c = sign_in(server, token)
    csrf = csrf_of(c.get("/ui/board").text)
    c.timeout = httpx.Timeout(15)  # the read bound: the stream itself would stay open
    with c.stream("GET", "/ui/feed/stream?after=0") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000"
        with tenant_transaction(pool, acme.id) as conn:
            repo.create_task(conn, acme.id, title="seen live")
        read_until(lines, "event: task_event", 10)
        if how == "revoke":
            revoke(owner_dsn, token)
        else:  # signed out in another tab of the same browser
            threading.Thread(target=lambda: httpx.post(
                f"{server.base_url}/ui/logout", data={"csrf_token": csrf}, timeout=10,
                cookies={"vos_session": c.cookies["vos_session"]},
                headers={"Origin": server.base_url})).start()
        read_until(lines, "event: session_ended", 12)  # recheck every 3 s
        with tenant_transaction(pool, acme.id) as conn:
            repo.create_task(conn, acme.id, title="after the end")
        rest = list(lines)  # the server closed the stream: iteration ends
    assert not any("after the end" in line for line in rest)
    c.close()


# -- sign-in: explicit, same-origin, rate limited --------------------------------------------


def test_a_link_with_the_token_in_the_fragment_signs_nobody_in(served, operator):
    server, _pool, _app = served
    _acme, token = operator("hash")
    script = (STATIC / "app.js").read_text()
    # no code reads the URL fragment or submits the sign-in form by itself
    assert "location.hash" not in script and ".submit()" not in script
    with browser(server) as c:
        page = c.get(f"/ui/login#{token}")  # the fragment never reaches the server anyway
        assert page.status_code == 200 and "<script>" not in page.text.replace(
            '<script src="/ui/static/app.js" defer></script>', "")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/ui/board").status_code == 303  # still signed out


def test_cross_site_sign_in_is_refused(served, operator, owner_dsn):
    server, _pool, _app = served
    acme, token = operator("loginx")
    with browser(server) as victim:
        # another site's auto-submitting form: no login nonce cookie (SameSite=Strict)
        forged = victim.post("/ui/login", data={"token": token, "csrf_token": "guess"},
                             headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "vos_session" not in victim.cookies
        # even with a nonce of its own, a foreign Origin is refused
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', victim.get("/ui/login").text)
        forged = victim.post("/ui/login", data={"token": token, "csrf_token": nonce.group(1)},
                             headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "vos_session" not in victim.cookies
    with psycopg.connect(owner_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM operator_sessions WHERE tenant_id = %s",
                            [acme.id]).fetchone()[0] == 0


def test_failed_sign_ins_are_rate_limited_and_logged(app_pool, operator, caplog):
    _acme, token = operator("limit")
    client = TestClient(create_api_app(app_pool), base_url="http://127.0.0.1",
                        follow_redirects=False)
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/login").text)
    form = {"csrf_token": nonce.group(1)}
    caplog.set_level(logging.INFO, logger="vos.ui")
    for i in range(5):
        wrong = client.post("/ui/login", data={**form, "token": f"vost_{'0' * 32}_{'x' * 40}{i}"})
        assert wrong.status_code == 303 and wrong.headers["location"] == \
            "/ui/login?error=bad_token"
    sixth = client.post("/ui/login", data={**form, "token": "vost_guess"})
    assert sixth.status_code == 429 and 1 <= int(sixth.headers["retry-after"]) <= 60
    # the right token does not get through while the limit holds
    assert client.post("/ui/login", data={**form, "token": token}).status_code == 429
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "vos.ui"]
    failed = [line for line in lines if line["event"] == "login_failed"]
    assert [f["reason"] for f in failed] == ["bad_token"] * 5 + ["rate_limited"] * 2
    assert all(f["src"] == "testclient" for f in failed)
    assert all(list(f)[:2] == ["event", "src"] for f in failed)  # what the jail's regex reads
    assert token not in caplog.text and "vost_guess" not in caplog.text


def test_the_limiter_is_per_source_and_forgets_after_the_window():
    limiter = auth.LoginLimiter(max_failures=5, window_seconds=60)
    for i in range(5):
        limiter.fail("10.0.0.1", now=float(i))
    assert limiter.retry_after("10.0.0.1", now=5) == 55
    assert limiter.retry_after("10.0.0.2", now=5) == 0
    assert limiter.retry_after("10.0.0.1", now=60.5) == 0  # the first failure left the window
    small = auth.LoginLimiter(max_failures=1, window_seconds=60, max_sources=3)
    for n in range(10):  # a spray of sources cannot grow memory without bound
        small.fail(f"10.0.1.{n}", now=float(n))
    assert len(small._failures) <= 3


# -- banners: fixed codes only ---------------------------------------------------------------


def test_banners_show_fixed_texts_for_known_codes_and_nothing_else(served, operator):
    server, _pool, _app = served
    _acme, token = operator("banner")
    lure = "Your account is locked. Call +1 555 0100 to unlock"
    with browser(server) as anonymous:
        for query in ("error=<script>alert(1)</script>", f"error={lure}", f"notice={lure}",
                      "error=bad_token%20x", "notice=signed_out&error=" + lure):
            page = anonymous.get(f"/ui/login?{query}").text
            assert "script>alert" not in page and "Call +1 555" not in page
            assert "alert(1)" not in page
        page = anonymous.get("/ui/login?error=<script>").text
        assert 'data-testid="error"' not in page
        assert ERROR_CODES["bad_token"] in anonymous.get("/ui/login?error=bad_token").text
    with sign_in(server, token) as c:
        page = c.get(f"/ui/board?error={lure}&notice={lure}").text
        assert "Call +1 555" not in page and 'data-testid="error"' not in page
        # a forged flash cookie is ignored too
        c.cookies.set("vos_flash", "eyJ4Ijoi.deadbeef", domain="127.0.0.1", path="/ui")
        assert 'data-testid="error"' not in c.get("/ui/board").text


# -- every route needs a credential ----------------------------------------------------------

OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/ui/login"), ("POST", "/ui/login")}
STATIC_MOUNT = "/ui/static"


def walk(routes) -> list[tuple[str, set[str]]]:
    """(path, methods) of every endpoint the app serves, included routers too (FastAPI
    >= 0.16x keeps an included router as one lazy entry). Fails on anything unknown, so a new
    kind of route cannot slip past the walk."""
    found = []
    for route in routes:
        if isinstance(route, Mount):
            assert route.path == STATIC_MOUNT, f"unexpected mount {route.path}"
        elif isinstance(route, APIRoute):
            found.append((route.path, set(route.methods)))
        elif hasattr(route, "effective_route_contexts"):
            found += [(ctx.path, set(ctx.methods)) for ctx in route.effective_route_contexts()]
        else:
            raise AssertionError(f"the walk does not know {route!r}")
    return found


def test_no_route_answers_without_a_valid_credential(app_pool, make_tenant):
    app = create_api_app(app_pool)
    victim = make_tenant("walk")
    forged_session = auth.new_session_id(victim.id)  # right shape, never issued
    calls = []
    for path, methods in walk(app.routes):
        for method in sorted(methods - {"HEAD"}):
            if (method, path) not in OPEN:
                calls.append((method, re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)))
    assert len(calls) >= 25, calls  # the walk saw the API and the UI
    assert {p for _m, p in calls if p.startswith("/ui/")} and {"/tasks", "/openapi.json"} <= {
        p for _m, p in calls}
    attempts = [
        {},                                                    # nothing at all
        {"headers": {"X-VOS-Tenant": str(victim.id)}},         # the old header
        {"cookies": {"vos_session": forged_session}},          # a made-up session
        {"headers": {"Authorization": f"Bearer {auth.new_token(victim.id)}"}},  # made-up token
    ]
    for credentials in attempts:
        client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False,
                            cookies=credentials.get("cookies"))
        for method, path in calls:
            answer = client.request(method, path, json={"title": "x", "status": "Active"},
                                    headers=credentials.get("headers"))
            status, where = answer.status_code, answer.headers.get("location", "")
            ok = status in (401, 403) or (status == 303 and where.startswith("/ui/login"))
            assert ok, (credentials, method, path, status, answer.text[:200])
            assert victim.slug not in answer.text
    with tenant_transaction(app_pool, victim.id) as conn:
        assert repo.list_tasks(conn) == [] and repo.list_agents(conn) == []
    # the open ones carry no tenant data
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/ui/static/app.js").status_code == 200
