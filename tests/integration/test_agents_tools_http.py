"""HTTP tools against a real server on 127.0.0.1, and delegation targets on a real Postgres
org chart (app/agents/tools.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.agents.apply import apply_agents_file
from app.agents.prefix import ToolSpec
from app.agents.sanitize import Sanitizer
from app.agents.spec import parse_agents_text
from app.agents.tools import (
    MAX_RESPONSE_BYTES,
    HttpToolConfig,
    call_http_tool,
    resolve_delegate_target,
)
from app.db import tenant_transaction

SPEC = ToolSpec("lookup", "Look a host up.", {
    "type": "object", "properties": {"host": {"type": "string"}}, "required": ["host"],
    "additionalProperties": False})
ARGS = {"host": "db-1"}
SECRET = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"


class ToolServer(ThreadingHTTPServer):
    daemon_threads = True
    stop = threading.Event()
    seen: list[tuple[str, dict, bytes]] = []


class Handler(BaseHTTPRequestHandler):
    server: ToolServer

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, dict(self.headers), body))
        route = getattr(self, "route_" + self.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.answer(404, b"no such tool")
        else:
            route(body)

    def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def route_json(self, body: bytes) -> None:
        self.answer(200, json.dumps({"host": json.loads(body)["host"], "status": "up",
                                     "uptime": "3 days"}, indent=4).encode(),
                    {"Content-Type": "application/json"})

    def route_echo(self, body: bytes) -> None:
        self.answer(200, json.dumps({"headers": dict(self.headers),
                                     "body": body.decode()}).encode())

    def route_down(self, body: bytes) -> None:
        self.answer(503, b"maintenance until 14:00")

    def route_secret(self, body: bytes) -> None:
        self.answer(200, f"the token is {SECRET}, keep it safe".encode())

    def route_redirect(self, body: bytes) -> None:
        self.answer(302, b"", {"Location": "/json"})

    def route_slow(self, body: bytes) -> None:
        self.server.stop.wait(10)  # never answers within the tool's timeout
        self.answer(200, b"too late")

    def route_trickle(self, body: bytes) -> None:
        # headers at once, then a byte every 0.1 s: each read is quick, the call is not
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            if self.server.stop.wait(0.1):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def route_huge(self, body: bytes) -> None:
        size = 20 * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"y" * 65536
        try:
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass  # the client stopped reading: that is the point


@pytest.fixture(scope="module")
def server() -> Iterator[ToolServer]:
    srv = ToolServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def tool(server: ToolServer, path: str, **kwargs) -> HttpToolConfig:
    return HttpToolConfig(url=f"http://127.0.0.1:{server.server_port}/{path}", **kwargs)


def call(server: ToolServer, path: str, arguments: dict = ARGS, environ: dict | None = None,
         **kwargs):
    return call_http_tool(tool(server, path, **kwargs), SPEC, arguments, Sanitizer(),
                          environ or {}, call_id="call_1")


def test_a_json_answer_comes_back_compact(server):
    result = call(server, "json")
    assert not result.is_error
    assert (result.call_id, result.name) == ("call_1", "lookup")
    assert result.content == '{"host":"db-1","status":"up","uptime":"3 days"}'


def test_the_arguments_are_posted_as_json_with_headers_from_env_names(server):
    result = call(server, "echo", {"host": "web-2"},
                  environ={"LOOKUP_TOKEN": "Bearer not-a-real-token-1", "TRACE": "abc"},
                  headers_env={"Authorization": "LOOKUP_TOKEN", "X-Trace": "TRACE"})
    assert not result.is_error, result.content
    path, headers, body = server.seen[-1]
    assert path == "/echo" and json.loads(body) == {"host": "web-2"}
    assert headers["Authorization"] == "Bearer not-a-real-token-1"
    assert headers["X-Trace"] == "abc" and headers["Content-Type"] == "application/json"
    assert headers["Accept-Encoding"] == "identity"


def test_a_non_2xx_answer_is_an_error_result(server):
    result = call(server, "down")
    assert result.is_error and result.content == "HTTP 503: maintenance until 14:00"
    assert call(server, "missing").content == "HTTP 404: no such tool"


def test_a_redirect_is_not_followed(server):
    before = len(server.seen)
    result = call(server, "redirect")
    assert result.is_error
    assert result.content == "HTTP 302: redirects are not followed (Location: /json)"
    assert [p for p, _, _ in server.seen[before:]] == ["/redirect"]  # /json never asked


@pytest.mark.parametrize("path", ["slow", "trickle"])
def test_a_slow_server_is_a_timeout_result_bounded_in_time(server, path):
    started = time.monotonic()
    result = call(server, path, timeout_seconds=0.5)
    elapsed = time.monotonic() - started
    assert result.is_error and result.content == "timed out after 0.5s"
    assert elapsed < 1.5, elapsed  # the whole call, not each read: a trickle is bounded too


def test_a_huge_answer_is_capped(server):
    started = time.monotonic()
    result = call(server, "huge", timeout_seconds=10)
    assert not result.is_error
    text, _, note = result.content.rpartition("\n")
    assert text == "y" * MAX_RESPONSE_BYTES
    assert note == f"[truncated: the answer is longer than {MAX_RESPONSE_BYTES} bytes]"
    assert time.monotonic() - started < 5  # stopped reading; did not wait for 20 MiB


def test_a_secret_in_the_answer_is_redacted(server):
    result = call(server, "secret")
    assert not result.is_error
    assert SECRET not in result.content
    assert result.content == "the token is [REDACTED:anthropic_key], keep it safe"


def test_nothing_listening_is_an_error_result():
    dead = HttpToolConfig(url="http://127.0.0.1:9/t", timeout_seconds=2)
    result = call_http_tool(dead, SPEC, ARGS, Sanitizer(), {})
    assert result.is_error and result.content.startswith("could not connect to 127.0.0.1:9")


CHART = """\
deployments:
  - {name: local, provider: ollama, base_url: "http://127.0.0.1:11434", model: "llama3.1:8b",
     context_window: 8192, prices: {input_per_mtok: 0, output_per_mtok: 0}}
agents:
  - {name: Orchestrator, orchestrator: true, tools: [delegate]}
  - {name: CTO, role: Lead · engineering, manager: Orchestrator, tools: [delegate]}
  - {name: Marketing Lead, role: Lead · marketing, manager: Orchestrator, tools: [delegate]}
  - {name: Writer, role: Specialist, manager: Marketing Lead}
  - {name: Creative, role: Specialist, manager: Marketing Lead}
  - {name: Ops, role: Specialist, manager: CTO}
  - {name: Zed, role: ops, manager: CTO}
  - {name: Gone, role: Archivist, manager: CTO}
"""


@pytest.fixture
def chart(app_pool, make_tenant):
    """A tenant with the org chart above, Gone retired (applied, then left out)."""
    tenant = make_tenant("delegate")
    apply_agents_file(app_pool, tenant.id, parse_agents_text(CHART))
    apply_agents_file(app_pool, tenant.id, parse_agents_text(
        CHART.replace("  - {name: Gone, role: Archivist, manager: CTO}\n", "")))
    with tenant_transaction(app_pool, tenant.id) as conn:
        ids = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM agents")}
    return tenant, ids


def resolve(app_pool, tenant, caller, to) -> str:
    with tenant_transaction(app_pool, tenant.id) as conn:
        return resolve_delegate_target(conn, caller, to)["name"]


def test_a_descendant_by_name_at_any_depth(app_pool, chart):
    tenant, ids = chart
    assert resolve(app_pool, tenant, ids["Orchestrator"], "CTO") == "CTO"
    assert resolve(app_pool, tenant, ids["Orchestrator"], " creative ") == "Creative"
    assert resolve(app_pool, tenant, ids["Marketing Lead"], "WRITER") == "Writer"


def test_a_descendant_by_role_first_by_name_and_a_name_beats_a_role(app_pool, chart):
    tenant, ids = chart
    assert resolve(app_pool, tenant, ids["Orchestrator"], "lead · engineering") == "CTO"
    # Creative, Ops and Writer are Specialists: the first by name
    assert resolve(app_pool, tenant, ids["Orchestrator"], "specialist") == "Creative"
    assert resolve(app_pool, tenant, ids["CTO"], "Specialist") == "Ops"
    assert resolve(app_pool, tenant, ids["CTO"], "ops") == "Ops"  # Zed's role is "ops"
    with tenant_transaction(app_pool, tenant.id) as conn:
        row = resolve_delegate_target(conn, ids["CTO"], "ops")
    assert row["id"] == ids["Ops"] and row["manager_id"] == ids["CTO"]  # the whole row


def test_outside_the_callers_subtree_is_refused_listing_who_may_be_named(app_pool, chart):
    tenant, ids = chart
    with pytest.raises(ValueError) as caught:
        resolve(app_pool, tenant, ids["Marketing Lead"], "CTO")
    assert str(caught.value) == ("no report of yours is named or has the role 'CTO'; "
                                 "delegate to one of: Creative (Specialist), Writer "
                                 "(Specialist)")
    for to in ("Marketing Lead", "Orchestrator", ""):  # itself, its manager, nothing
        with pytest.raises(ValueError, match="no report of yours"):
            resolve(app_pool, tenant, ids["Marketing Lead"], to)
    with pytest.raises(ValueError, match="you have no reports to delegate to"):
        resolve(app_pool, tenant, ids["Creative"], "Writer")


def test_a_retired_agent_is_refused(app_pool, chart):
    tenant, ids = chart
    for to in ("Gone", "archivist"):
        with pytest.raises(ValueError) as caught:
            resolve(app_pool, tenant, ids["CTO"], to)
        assert "Gone" not in str(caught.value).split("delegate to one of:")[1]
        assert "Ops (Specialist), Zed (ops)" in str(caught.value)


def test_another_tenants_chart_is_invisible(app_pool, chart, make_tenant):
    tenant, ids = chart
    other = make_tenant("other")
    # the caller's id from another tenant: RLS shows no reports at all
    with pytest.raises(ValueError, match="you have no reports"):
        resolve(app_pool, other, ids["Orchestrator"], "CTO")
