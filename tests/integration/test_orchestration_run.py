"""The orchestration loop end to end: real SDKs against the wire-format fakes, a real worker on
a real Postgres. A delegation tree is created, worked, approved and synthesised in every wire
format; a rejection's comment reaches the next prompt; each circuit breaker trips and says
why; an approval gate pauses a run until an operator decides; concurrent runs never spend
past an agent's budget."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb

from app.agents.config import WorkforceConfig, build_router
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.retrieval import add_document
from app.agents.run import AgentRunner, Breakers
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.worker import Worker
from devtools.fakes import FakeReply, demo_responder, start_fake_fleet

KEY = "sk-test-fake-0000000000000000000000"
ENV = {"FAKE_KEY": KEY}
SYSTEM = "You are an agent of the Agent VOS."

# provider kind -> (fake server, base URL attribute)
WIRES = {
    "anthropic": ("anthropic", "base_url", "claude-sonnet-4-6"),
    "openai": ("openai", "base_url", "gpt-4.1"),
    "openrouter": ("openai", "base_url", "anthropic/claude-sonnet-4.6"),
    "ollama": ("ollama", "base_url", "llama3.1:8b"),
    "ollama-openai": ("ollama", "openai_base_url", "llama3.1:8b"),
}


@pytest.fixture(scope="module")
def fleet():
    servers = start_fake_fleet(api_key=KEY)
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def clean_fleet(fleet):
    for server in fleet.values():
        server.reset()
    yield fleet
    for server in fleet.values():
        server.reset()


def router_for(fleet, kind: str, app_pool):
    server, attr, model = WIRES[kind]
    deployment = {"name": "main", "provider": kind,
                  "base_url": getattr(fleet[server], attr), "model": model,
                  "context_window": 200000, "max_output_tokens": 256}
    if kind not in ("ollama", "ollama-openai"):
        deployment["api_key_env"] = "FAKE_KEY"
    config = WorkforceConfig.model_validate({
        "deployments": [deployment], "retry": {"max_attempts": 1, "base_delay": 0.01}})
    return build_router(config, PostgresAccounting(app_pool), ENV)


def agent(conn, tenant_id, name, *, role="", manager=None, tools=(), policy=None,
          budget="5", persona=""):
    row = repo.create_agent(conn, tenant_id, name=name, role=role, manager_id=manager,
                            persona=persona or f"You are {name}.", budget_usd=budget)
    conn.execute("UPDATE agents SET tools = %s, run_policy = %s WHERE id = %s",
                 [Jsonb(list(tools)), Jsonb(policy or {}), row["id"]])
    return row


def task_row(app_pool, tenant_id, task_id) -> dict:
    with tenant_transaction(app_pool, tenant_id) as conn:
        return repo.get_task(conn, task_id) | {
            "paused_reason": conn.execute("SELECT paused_reason FROM tasks WHERE id = %s",
                                          [task_id]).fetchone()["paused_reason"]}


def events(app_pool, tenant_id, task_id, kind=None) -> list[dict]:
    with tenant_transaction(app_pool, tenant_id) as conn:
        rows = repo.list_events(conn, task_id=task_id)
    return [e for e in rows if kind is None or e["kind"] == kind]


def review(app_pool, tenant_id, task_id, approve=True, comment=""):
    with tenant_transaction(app_pool, tenant_id, actor="operator:test") as conn:
        return repo.review_task(conn, task_id, approve, comment)


def worker_for(app_pool, runner, name="test/orch"):
    return Worker(app_pool, worker_id=name, handler=runner.handle, route_unassigned=True,
                  on_settled=runner.on_settled)


@pytest.mark.parametrize("kind", list(WIRES))
def test_a_delegation_tree_is_created_worked_approved_and_synthesised(
        kind, clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    for server in fleet.values():
        server.respond_with(demo_responder)
    tenant = make_tenant(f"tree-{kind}")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        boss = agent(conn, tenant.id, "Orchestrator", role="orchestrator",
                     tools=("delegate", "report"))
        agent(conn, tenant.id, "Mara", role="marketing lead", manager=boss["id"],
              tools=("report",))
        agent(conn, tenant.id, "Theo", role="CTO", manager=boss["id"], tools=("report",))
        parent = repo.create_task(conn, tenant.id, title="Plan the spring launch",
                                  body="Positioning and the technical readiness.",
                                  assignee_id=boss["id"], status="Active")
    runner = AgentRunner(app_pool, router_for(fleet, kind, app_pool), SYSTEM)
    worker = worker_for(app_pool, runner)

    worker.drain([tenant.id])
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Waiting"
    with tenant_transaction(app_pool, tenant.id) as conn:
        children = repo.children_of(conn, parent["id"])
    assert sorted(c["assignee_name"] for c in children) == ["Mara", "Theo"]
    assert all(c["status"] == "Review" for c in children), children
    delegated = events(app_pool, tenant.id, parent["id"], "tool.called")
    assert [e["payload"]["tool"] for e in delegated] == ["delegate", "delegate"]

    # the parent does not move before EVERY child is approved
    review(app_pool, tenant.id, children[0]["id"])
    worker.drain([tenant.id])
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Waiting"
    review(app_pool, tenant.id, children[1]["id"])
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Active"

    worker.drain([tenant.id])
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Review"
    with tenant_transaction(app_pool, tenant.id) as conn:
        detail = repo.task_detail(conn, parent["id"])
        calls = conn.execute("SELECT count(*) AS n FROM agent_calls WHERE task_id = %s",
                             [parent["id"]]).fetchone()["n"]
    # the synthesis call saw both children's approved results as the delegate results
    last = fleet[WIRES[kind][0]].received[-1].body.decode()
    assert "Result of Mara" in last and "Result of Theo" in last
    assert detail["reply"], "the synthesis is the parent's result"
    assert calls == 2, "two model calls for the parent: delegate, then synthesise"
    review(app_pool, tenant.id, parent["id"])
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Approved"


def test_a_rejection_comment_reaches_the_next_prompt(clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    tenant = make_tenant("rework")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        cto = agent(conn, tenant.id, "Theo", role="CTO")
        task = repo.create_task(conn, tenant.id, title="Summarise the rollback plan",
                                assignee_id=cto["id"], status="Active")
    runner = AgentRunner(app_pool, router_for(fleet, "openai", app_pool), SYSTEM)
    worker = worker_for(app_pool, runner)
    worker.drain([tenant.id])
    first = events(app_pool, tenant.id, task["id"], "work.result")[-1]["payload"]["reply"]
    review(app_pool, tenant.id, task["id"], approve=False,
           comment="Cite runbook section 4 and name the owner")
    assert task_row(app_pool, tenant.id, task["id"])["status"] == "Active"
    worker.drain([tenant.id])
    prompt = fleet["openai"].received[-1].json()["messages"][-1]["content"]
    assert "Cite runbook section 4 and name the owner" in prompt
    assert first in prompt, "the rejected answer is shown with the comment"
    assert task_row(app_pool, tenant.id, task["id"])["status"] == "Review"


def _single_agent(app_pool, make_tenant, slug, *, tools=("search_knowledge", "report"),
                  policy=None, budget="5"):
    tenant = make_tenant(slug)
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        add_document(conn, tenant.id, "Runbook", "Backups ship nightly at 02:30 UTC. "
                     "The restore drill runs every Monday.")
        worker_agent = agent(conn, tenant.id, "Ana", tools=tools, policy=policy, budget=budget)
        task = repo.create_task(conn, tenant.id, title="When do backups ship?",
                                assignee_id=worker_agent["id"], status="Active")
    return tenant, worker_agent, task


def test_the_same_call_repeated_trips_its_breaker(clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    fleet["anthropic"].respond_with(
        lambda conv: FakeReply(tool_calls=(("search_knowledge", {"query": "backups"}),)))
    tenant, _, task = _single_agent(app_pool, make_tenant, "same-call")
    runner = AgentRunner(app_pool, router_for(fleet, "anthropic", app_pool), SYSTEM,
                         breakers=Breakers(same_call_repeats=3))
    worker_for(app_pool, runner).drain([tenant.id])
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Paused"
    assert "circuit breaker" in row["paused_reason"] and "3 times" in row["paused_reason"]
    assert "search_knowledge" in row["paused_reason"]
    # two searches ran, the third identical one did not
    assert len(events(app_pool, tenant.id, task["id"], "tool.called")) == 2
    assert len(fleet["anthropic"].received) == 3


def test_a_failure_streak_trips_its_breaker(clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    counter = iter(range(100))
    fleet["openai"].respond_with(
        lambda conv: FakeReply(tool_calls=(("no_such_tool", {"n": next(counter)}),)))
    tenant, _, task = _single_agent(app_pool, make_tenant, "streak")
    runner = AgentRunner(app_pool, router_for(fleet, "openai", app_pool), SYSTEM,
                         breakers=Breakers(failure_streak=3))
    worker_for(app_pool, runner).drain([tenant.id])
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Paused"
    assert "3 tool calls failed in a row" in row["paused_reason"]
    assert "unknown tool" in row["paused_reason"]


@pytest.mark.parametrize("policy, expect", [
    ({"task_token_cap": 1000}, "token cap 1000"),
    ({"task_budget_usd": "0.000001"}, "cost cap $0.000001"),
    ({"max_steps": 2}, "step cap reached (2 model calls"),
])
def test_caps_pause_the_task_and_say_which(policy, expect, clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    counter = iter(range(100))
    fleet["anthropic"].respond_with(lambda conv: FakeReply(
        tool_calls=(("search_knowledge", {"query": f"backups {next(counter)}"}),)))
    tenant, _, task = _single_agent(app_pool, make_tenant, f"cap-{len(expect)}", policy=policy)
    runner = AgentRunner(app_pool, router_for(fleet, "anthropic", app_pool), SYSTEM)
    worker_for(app_pool, runner).drain([tenant.id])
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Paused" and expect in row["paused_reason"], row["paused_reason"]
    paused = events(app_pool, tenant.id, task["id"], "task.paused")
    assert paused and expect in paused[-1]["payload"]["reason"]


def test_an_agent_failing_tasks_in_a_row_is_paused(clean_fleet, app_pool, make_tenant):
    fleet = clean_fleet
    fleet["openai"].respond_with(
        lambda conv: FakeReply(tool_calls=(("search_knowledge", {"query": "same"}),)))
    tenant, ana, _ = _single_agent(app_pool, make_tenant, "agent-streak")
    with tenant_transaction(app_pool, tenant.id) as conn:
        for n in range(3):
            repo.create_task(conn, tenant.id, title=f"More {n}", assignee_id=ana["id"],
                             status="Active")
    runner = AgentRunner(app_pool, router_for(fleet, "openai", app_pool), SYSTEM,
                         breakers=Breakers(same_call_repeats=2, agent_failed_tasks=2))
    worker_for(app_pool, runner).drain([tenant.id])
    with tenant_transaction(app_pool, tenant.id) as conn:
        row = conn.execute("SELECT paused_at, paused_reason FROM agents WHERE id = %s",
                           [ana["id"]]).fetchone()
        statuses = [r["status"] for r in conn.execute(
            "SELECT status::text AS status FROM tasks ORDER BY created_at").fetchall()]
    assert row["paused_at"] is not None and "2 tasks in a row" in row["paused_reason"]
    assert statuses.count("Paused") == 2 and statuses.count("Active") == 2, statuses


def test_an_approval_gate_pauses_until_an_operator_decides(clean_fleet, app_pool,
                                                           make_tenant):
    fleet = clean_fleet
    fleet["anthropic"].respond_with(demo_responder)
    tenant = make_tenant("gate")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        boss = agent(conn, tenant.id, "Orchestrator", tools=("delegate", "report"),
                     policy={"approval": {"delegate": True}})
        agent(conn, tenant.id, "Theo", role="CTO", manager=boss["id"], tools=("report",))
        parent = repo.create_task(conn, tenant.id, title="Check the door's TLS",
                                  assignee_id=boss["id"], status="Active")
    runner = AgentRunner(app_pool, router_for(fleet, "anthropic", app_pool), SYSTEM)
    worker = worker_for(app_pool, runner)
    worker.drain([tenant.id])
    row = task_row(app_pool, tenant.id, parent["id"])
    assert row["status"] == "Paused" and "waiting for approval: delegate" in row["paused_reason"]
    with tenant_transaction(app_pool, tenant.id) as conn:
        (pending,) = repo.pending_approvals(conn)
        assert repo.children_of(conn, parent["id"]) == [], "nothing delegated before approval"
    with tenant_transaction(app_pool, tenant.id, actor="operator:test") as conn:
        repo.decide_approval(conn, pending["id"], True, "go ahead")
    worker.drain([tenant.id])
    with tenant_transaction(app_pool, tenant.id) as conn:
        children = repo.children_of(conn, parent["id"])
    assert len(children) == 1 and children[0]["assignee_name"] == "Theo"
    assert task_row(app_pool, tenant.id, parent["id"])["status"] == "Waiting"


def test_a_denied_call_returns_the_operators_comment_to_the_model(clean_fleet, app_pool,
                                                                   make_tenant):
    fleet = clean_fleet
    replies = iter([FakeReply(tool_calls=(("search_knowledge", {"query": "backups"}),)),
                    FakeReply(text="Backups ship at 02:30 UTC (from memory).")])
    fleet["openai"].respond_with(lambda conv: next(replies))
    tenant, _, task = _single_agent(app_pool, make_tenant, "deny",
                                    policy={"approval": {"tools": ["search_knowledge"]}})
    runner = AgentRunner(app_pool, router_for(fleet, "openai", app_pool), SYSTEM)
    worker = worker_for(app_pool, runner)
    worker.drain([tenant.id])
    assert task_row(app_pool, tenant.id, task["id"])["status"] == "Paused"
    with tenant_transaction(app_pool, tenant.id, actor="operator:test") as conn:
        (pending,) = repo.pending_approvals(conn)
        repo.decide_approval(conn, pending["id"], False, "no searching on Sundays")
    worker.drain([tenant.id])
    assert task_row(app_pool, tenant.id, task["id"])["status"] == "Review"
    body = fleet["openai"].received[-1].json()
    tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
    assert "denied by the operator: no searching on Sundays" in tool_messages[-1]["content"]


def test_concurrent_runs_never_spend_past_the_budget(clean_fleet, app_pool, make_tenant):
    """Four workers run eight multi-turn tasks of one agent at once against a budget that
    covers only a few calls: the agent's spend never passes its budget (each call reserves
    its worst case under the agent's lock first), and what did not fit is parked."""
    fleet = clean_fleet
    counter = iter(range(10_000))
    lock = threading.Lock()

    def responder(conv):
        with lock:
            n = next(counter)
        if len(conv.tool_results) >= 2:
            return FakeReply(text="done")
        return FakeReply(tool_calls=(("search_knowledge", {"query": f"backups {n}"}),))

    fleet["anthropic"].respond_with(responder)
    budget = Decimal("0.05")
    tenant, ana, _ = _single_agent(app_pool, make_tenant, "race", budget=str(budget))
    with tenant_transaction(app_pool, tenant.id) as conn:
        for n in range(7):
            repo.create_task(conn, tenant.id, title=f"Backups question {n}",
                             assignee_id=ana["id"], status="Active")
    runner = AgentRunner(app_pool, router_for(fleet, "anthropic", app_pool), SYSTEM)
    workers = [worker_for(app_pool, runner, f"race/{i}") for i in range(4)]
    threads = [threading.Thread(target=w.drain, args=([tenant.id],)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    with tenant_transaction(app_pool, tenant.id) as conn:
        spent = conn.execute("SELECT coalesce(sum(cost_usd), 0) AS s FROM agent_calls "
                             "WHERE agent_id = %s", [ana["id"]]).fetchone()["s"]
        parked = conn.execute("SELECT count(*) AS n FROM tasks WHERE parked_at IS NOT NULL"
                              ).fetchone()["n"]
        done = conn.execute("SELECT count(*) AS n FROM tasks WHERE status = 'Review'"
                            ).fetchone()["n"]
    assert 0 < spent <= budget, f"spent {spent} against a budget of {budget}"
    assert parked > 0, "the budget was meant to run out"
    assert done + parked == 8, json.dumps({"done": done, "parked": parked})


def test_an_http_tool_runs_after_approval_and_its_output_is_sanitized(clean_fleet, app_pool,
                                                                     make_tenant):
    """An operator's HTTP tool (a URL on the mesh: loopback here) behind an approval gate:
    nothing is called before the approval; after it, the worker POSTs the arguments with the
    header from its env name, and the answer goes back to the model redacted."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from app.agents.config import ToolConfig

    seen: list[tuple[dict, str | None]] = []

    class Uptime(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            seen.append((body, self.headers.get("x-probe-token")))
            answer = json.dumps({"host": body.get("host"), "status": "up",
                                 "debug": "password=hunter2-correct-horse"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Uptime)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        check_uptime = ToolConfig.model_validate({
            "name": "check_uptime", "description": "Probe a host on the mesh.",
            "kind": "http",
            "parameters": {"type": "object", "properties": {"host": {"type": "string"}},
                           "required": ["host"], "additionalProperties": False},
            "http": {"url": f"http://127.0.0.1:{http.server_port}/probe",
                     "timeout_seconds": 5, "headers_env": {"X-Probe-Token": "PROBE_TOKEN"}}})
        replies = iter([FakeReply(tool_calls=(("check_uptime", {"host": "db-1"}),)),
                        FakeReply(text="db-1 is up.")])
        fleet = clean_fleet
        fleet["openai"].respond_with(lambda conv: next(replies))
        tenant, _, task = _single_agent(
            app_pool, make_tenant, "http-tool", tools=("check_uptime", "report"),
            policy={"approval": {"tools": ["check_uptime"]}})
        runner = AgentRunner(app_pool, router_for(fleet, "openai", app_pool), SYSTEM,
                             declared={"check_uptime": check_uptime},
                             environ={"PROBE_TOKEN": "probe-token-1"})
        worker = worker_for(app_pool, runner)
        worker.drain([tenant.id])
        assert seen == [], "an approval-gated tool must not run before the approval"
        with tenant_transaction(app_pool, tenant.id, actor="operator:test") as conn:
            (pending,) = repo.pending_approvals(conn)
            assert pending["tool"] == "check_uptime" and pending["arguments"] == {"host": "db-1"}
            repo.decide_approval(conn, pending["id"], True)
        worker.drain([tenant.id])
        assert seen == [({"host": "db-1"}, "probe-token-1")]
        assert task_row(app_pool, tenant.id, task["id"])["status"] == "Review"
        sent = fleet["openai"].received[-1].body.decode()
        assert '\\"status\\":\\"up\\"' in sent or '"status":"up"' in sent
        assert "hunter2-correct-horse" not in sent, "the tool's secret reached the model"
    finally:
        http.shutdown()
