"""The seed's whole diagram on the converged staging VM (issue #13 item 7).

The "desktop with local inference" is a fake Ollama (native API) bound to the operator's mesh
address, reachable only over the mesh; the cloud providers are fake Anthropic/OpenAI servers
on the operator's loopback, reached through the VM's egress (staging/providers.py). On the VM
the stack's worker serves the lab tenant with the agents file the deploy shipped and applied.

One flow, on the shared converged VM (no extra boot):
signed callback from the public network → task (unassigned, Active) → the worker routes it to
the orchestrator and works it with the chain [desktop Ollama, cloud] → with a scripted Ollama
failure it falls back to the cloud → Review → the operator approves through the Command
Center over the mesh → the cost tracker shows the local model at $0.0000 and the cloud model
at its price. Also: the worker container runs hardened, and the gate stays green with it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from decimal import Decimal

import httpx
import psycopg
import pytest
from test_stack_staging import (
    bind_door_source,
    door_certificate,
    post_callback,
    superuser_dsn,
)

from app.ui.auth import create_operator
from staging.managed_db import read_secrets
from staging.providers import (
    CLOUD_MODELS,
    LOCAL_MODEL,
    PROVIDER_KEY_ENV,
    TENANT,
    agents_document,
    start_fakes,
)

WORK_TIMEOUT = 240  # a task's whole trip under TCG: claim, route, calls, Review


@pytest.fixture
def fakes(converged_vm):
    """The desktop Ollama on the mesh address and the cloud fakes, for this test only."""
    key = read_secrets(converged_vm.state_dir / "secrets.env")[PROVIDER_KEY_ENV]
    fleet = start_fakes(converged_vm.lab.state.layout, key)
    try:
        yield fleet
    finally:
        for server in fleet.values():
            server.stop()


def query(vm, sql: str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(superuser_dsn(vm)) as conn:
        return conn.execute(sql, params or []).fetchall()


def wait_for(what: str, probe, timeout: float = WORK_TIMEOUT, every: float = 3):
    """Poll `probe()` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(every)


def tenant_id(vm) -> str:
    rows = query(vm, "SELECT id FROM tenants WHERE slug = %s", [TENANT])
    assert rows, (f"tenant {TENANT!r} does not exist: the deploy's `vos agents apply "
                  "--create-tenant` did not run")
    return str(rows[0][0])


def task_of_callback(vm, webhook_id: str):
    rows = query(vm, "SELECT task_id FROM callbacks WHERE webhook_id = %s", [webhook_id])
    return rows[0][0] if rows and rows[0][0] else None


def status_of(vm, task_id) -> str:
    return query(vm, "SELECT status::text FROM tasks WHERE id = %s", [task_id])[0][0]


def attempts_of(vm, task_id) -> list[tuple]:
    return query(vm, "SELECT deployment, model_requested, outcome, cost_usd FROM agent_calls "
                     "WHERE task_id = %s ORDER BY started_at, attempt_no", [task_id])


def settle_other_work(vm, tenant: str) -> None:
    """Wait until no other task of the tenant is being worked or about to be: the fakes'
    scripted failures are answered to whichever request comes first."""
    wait_for("the tenant's earlier tasks settling (no Active task left)", lambda: not query(
        vm, "SELECT 1 FROM tasks WHERE tenant_id = %s AND status = 'Active' "
            "AND parked_at IS NULL "
        "AND (next_attempt_at IS NULL OR next_attempt_at < now() + interval '1 minute')",
        [tenant]))


def operator_token(vm, tenant: str) -> str:
    with psycopg.connect(superuser_dsn(vm), autocommit=True) as conn:
        return create_operator(conn, tenant, f"e2e-{secrets.token_hex(3)}")


def form_csrf(html: str) -> str:
    """The csrf_token hidden field of a Command Center page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no csrf_token field in the page: {html[:300]}"
    return match.group(1)


def by_model_costs(html: str) -> dict[str, Decimal]:
    """model -> cost from the cost tracker's by-model table (what the operator sees)."""
    rows = re.findall(r"<tr><td>([^<]+)</td><td>[^<]*</td><td class=\"num\">[^<]*</td>"
                      r"<td class=\"num\">\$([0-9.]+)</td></tr>", html)
    return {model: Decimal(cost) for model, cost in rows}


def test_callback_to_approved_through_the_workforce_on_the_vm(converged_vm, fakes, tmp_path):
    vm = converged_vm
    vm.wait_for_stack()  # the rollback test before this one may have just restarted it
    tenant = tenant_id(vm)
    bind_door_source(vm)
    agents = dict(query(vm, "SELECT name, is_orchestrator FROM agents WHERE tenant_id = %s "
                            "AND retired_at IS NULL", [tenant]))
    assert agents.get("Orchestrator") is True, f"the agents file was not applied: {agents}"
    settle_other_work(vm, tenant)
    cafile = door_certificate(vm, tmp_path)

    # 1. The desktop fails (a scripted 500 on each of the router's tries of it, no more: a
    #    leftover would fail the next task): fall back to the cloud.
    retry = agents_document(vm.lab.state.layout)["retry"]
    fakes["desktop"].script(*["500"] * retry["max_attempts"])
    title_fallback = f"e2e fallback {secrets.token_hex(4)}"
    status, webhook = post_callback(vm, cafile, json.dumps(
        {"type": "task.create", "title": title_fallback}).encode(), good_signature=True)
    assert status in (200, 201, 202), f"signed callback answered {status}"
    fallback_task = wait_for("the callback's task", lambda: task_of_callback(vm, webhook), 30)
    wait_for(f"task {fallback_task} in Review",
             lambda: status_of(vm, fallback_task) == "Review")
    calls = attempts_of(vm, fallback_task)
    assert [c[0] for c in calls if c[2] != "ok"] and all(
        c[0] == "desktop" for c in calls if c[2] != "ok"), f"no desktop failure first: {calls}"
    assert calls[-1][0] == "cloud" and calls[-1][2] == "ok", f"no cloud fallback: {calls}"
    routed = query(vm, "SELECT a.name FROM tasks t JOIN agents a ON a.id = t.assignee_id "
                       "WHERE t.id = %s", [fallback_task])
    assert routed == [("Orchestrator",)], f"unassigned task not routed: {routed}"

    # 2. The desktop answers: local inference, $0 (once its cooldown after the failures is
    #    over: until then the router rightly skips it).
    time.sleep(retry["cooldown_seconds"] + 1)
    title = f"e2e local {secrets.token_hex(4)}"
    status, webhook = post_callback(vm, cafile, json.dumps(
        {"type": "task.create", "title": title}).encode(), good_signature=True)
    assert status in (200, 201, 202)
    local_task = wait_for("the second callback's task", lambda: task_of_callback(vm, webhook), 30)
    wait_for(f"task {local_task} in Review", lambda: status_of(vm, local_task) == "Review")
    calls = attempts_of(vm, local_task)
    assert calls[-1][:3] == ("desktop", LOCAL_MODEL, "ok"), calls
    assert fakes["desktop"].received, "the desktop Ollama was never called over the mesh"

    # 3. The operator approves through the Command Center over the mesh: sign in on our own
    #    page (login CSRF cookie), open the task, Approve with a comment (form CSRF).
    token = operator_token(vm, tenant)
    base = f"http://{vm.mesh_address}:8080"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as api:
        detail = api.get(f"/tasks/{fallback_task}")
        assert detail.status_code == 200, detail.text[:500]
        assert detail.json().get("reply"), f"no reply in the task detail: {detail.text[:500]}"
    with httpx.Client(base_url=base, timeout=30) as browser:
        login = browser.get("/ui/login")
        signed_in = browser.post("/ui/login", data={
            "token": token, "csrf_token": form_csrf(login.text)})
        assert signed_in.status_code == 303 and "error" not in signed_in.headers["location"], (
            signed_in.status_code, signed_in.headers.get("location"))
        page = browser.get(f"/ui/tasks/{fallback_task}")
        assert page.status_code == 200 and title_fallback in page.text, page.text[:500]
        reviewed = browser.post(f"/ui/tasks/{fallback_task}/review", data={
            "decision": "approve", "comment": "checked on staging",
            "csrf_token": form_csrf(page.text)})
        assert reviewed.status_code == 303, reviewed.text[:500]
        assert status_of(vm, fallback_task) == "Approved"
        events = query(vm, "SELECT payload->>'comment' FROM task_events WHERE task_id = %s "
                           "AND kind = 'review.approved'", [fallback_task])
        assert events == [("checked on staging",)], events

        # 4. The cost tracker: the local model at $0, the cloud model at its price.
        costs = by_model_costs(browser.get("/ui/costs/fragment").text)
    assert costs.get(LOCAL_MODEL) == Decimal("0"), costs
    assert costs.get(CLOUD_MODELS["anthropic"], Decimal(0)) > 0, costs


def test_worker_runs_hardened_and_the_gate_stays_green(converged_vm):
    vm = converged_vm
    vm.wait_for_stack()
    out = vm.ssh("sudo docker ps -q --filter label=com.docker.compose.service=worker "
                 "| xargs -r sudo docker inspect").stdout
    workers = json.loads(out or "[]")
    assert workers, "no worker container runs on the converged VM"
    for worker in workers:
        config, host = worker["Config"], worker["HostConfig"]
        assert worker["State"]["Health"]["Status"] == "healthy", worker["State"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert any("no-new-privileges" in opt for opt in host["SecurityOpt"] or [])
        assert not host.get("PortBindings"), host.get("PortBindings")
        assert config["User"] == "10001:10001"
    result = vm.run_checks("checks/test_stack.py", "checks/test_exposure.py",
                           "checks/test_docker.py")
    assert result.returncode == 0, result.stdout[-3000:]
