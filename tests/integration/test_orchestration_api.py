"""Orchestration's HTTP routes (issue #16) on the real app and a real Postgres: cancel, resume,
approvals, the inbox, resuming an agent, and the tree in GET /tasks/{id}; the 4xx answers
write nothing; every route needs the credential."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.api import create_api_app
from app.ui.auth import create_operator

NEW_ROUTES = [("POST", "/tasks/{id}/cancel"), ("POST", "/tasks/{id}/resume"),
              ("GET", "/approvals"), ("POST", "/approvals/{id}"), ("GET", "/inbox"),
              ("POST", "/agents/{id}/resume")]


@pytest.fixture(scope="module")
def api(app_pool):
    return TestClient(create_api_app(app_pool), base_url="http://127.0.0.1")


@pytest.fixture
def tenant(make_tenant, owner_dsn):
    """A tenant and a Bearer header of one of its operators."""
    t = make_tenant("orch-api")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        token = create_operator(conn, t.id, "orch-api-test")
    return t, {"Authorization": f"Bearer {token}"}


def snapshot(pool, tenant) -> tuple:
    """Everything the routes could write: events, task rows, approvals, agents."""
    with tenant_transaction(pool, tenant.id) as conn:
        return tuple(conn.execute(q).fetchall() for q in (
            "SELECT id, kind FROM task_events ORDER BY id",
            "SELECT id, status::text, updated_at FROM tasks ORDER BY id",
            "SELECT id, status, decided_at FROM tool_approvals ORDER BY id",
            "SELECT id, paused_at, failure_streak FROM agents ORDER BY id"))


def family(pool, tenant) -> dict:
    """A parent waiting on two children (one gated by a pending approval), and a paused agent."""
    with tenant_transaction(pool, tenant.id, actor="engine") as conn:
        lead = repo.create_agent(conn, tenant.id, name="Lead")
        writer = repo.create_agent(conn, tenant.id, name="Writer")
        parent = repo.create_task(conn, tenant.id, title="Launch", status="Active",
                                  assignee_id=lead["id"])
        kid = repo.create_child_task(conn, parent, title="Post", assignee_id=writer["id"])
        gated = repo.create_child_task(conn, parent, title="Deploy", assignee_id=writer["id"])
        approval = repo.request_approval(conn, gated, agent_id=writer["id"], tool="deploy",
                                         arguments={"env": "prod"}, call_id="toolu_9")
        repo.wait_for_children(conn, parent["id"])
        repo.pause_agent(conn, lead["id"], "failed 3 tasks in a row")
    return {"lead": lead, "writer": writer, "parent": parent, "kid": kid, "gated": gated,
            "approval": approval}


def test_get_task_shows_parent_id_and_children(api, app_pool, tenant):
    t, h = tenant
    f = family(app_pool, t)
    top = api.get(f"/tasks/{f['parent']['id']}", headers=h).json()
    assert top["parent_id"] is None and top["status"] == "Waiting"
    assert [(c["id"], c["title"], c["status"], c["assignee_id"]) for c in top["children"]] == [
        (str(f["kid"]["id"]), "Post", "Active", str(f["writer"]["id"])),
        (str(f["gated"]["id"]), "Deploy", "Paused", str(f["writer"]["id"]))]
    child = api.get(f"/tasks/{f['gated']['id']}", headers=h).json()
    assert child["parent_id"] == str(f["parent"]["id"]) and child["children"] == []
    assert child["parent"] == {"id": str(f["parent"]["id"]), "title": "Launch",
                               "status": "Waiting"}
    assert child["paused_reason"] == 'waiting for approval: deploy("env":"prod")'
    assert [a["id"] for a in child["approvals"]] == [str(f["approval"]["id"])]


def test_approvals_and_the_inbox(api, app_pool, tenant):
    t, h = tenant
    f = family(app_pool, t)
    (pending,) = api.get("/approvals", headers=h).json()
    assert (pending["id"], pending["tool"], pending["arguments"], pending["task_title"],
            pending["agent_name"]) == (str(f["approval"]["id"]), "deploy", {"env": "prod"},
                                       "Deploy", "Writer")
    box = api.get("/inbox", headers=h).json()
    assert [a["id"] for a in box["approvals"]] == [pending["id"]]
    assert box["reviews"] == [] and box["paused_tasks"] == []
    assert [a["name"] for a in box["paused_agents"]] == ["Lead"]
    assert box["count"] == 2

    # refusals first: each writes nothing
    before = snapshot(app_pool, t)
    approval_url = f"/approvals/{f['approval']['id']}"
    for body, status in [({}, 422), ({"approve": "maybe"}, 422),
                         ({"approve": True, "extra": 1}, 422),
                         ({"approve": False, "comment": "x" * 2001}, 422),
                         ({"approve": False, "comment": "a\x00b"}, 422)]:
        r = api.post(approval_url, json=body, headers=h)
        assert r.status_code == status, (body, r.text)
    assert api.post(f"/approvals/{uuid.uuid4()}", json={"approve": True},
                    headers=h).status_code == 404
    assert api.post("/approvals/not-a-uuid", json={"approve": True},
                    headers=h).status_code == 422
    r = api.post(f"/tasks/{f['gated']['id']}/resume", headers=h)
    assert r.status_code == 409 and "waits for a decision" in r.json()["detail"]
    assert snapshot(app_pool, t) == before

    r = api.post(approval_url, json={"approve": False, "comment": "not in prod"}, headers=h)
    assert r.status_code == 200, r.text
    decided = r.json()
    assert (decided["status"], decided["comment"], decided["decided_by"]) == (
        "denied", "not in prod", "api")
    assert decided["task"]["status"] == "Active"
    again = api.post(approval_url, json={"approve": True}, headers=h)
    assert again.status_code == 409 and "already denied" in again.json()["detail"]
    assert api.get("/approvals", headers=h).json() == []
    events = api.get(f"/tasks/{f['gated']['id']}/events", headers=h).json()
    assert [e["payload"]["comment"] for e in events if e["kind"] == "approval.denied"] == [
        "not in prod"]


def test_resume_a_paused_task_and_a_paused_agent(api, app_pool, tenant):
    t, h = tenant
    f = family(app_pool, t)
    with tenant_transaction(app_pool, t.id) as conn:
        repo.pause_task(conn, f["kid"]["id"], "cost cap reached")
    box = api.get("/inbox", headers=h).json()
    assert [p["id"] for p in box["paused_tasks"]] == [str(f["kid"]["id"])]
    assert box["paused_tasks"][0]["paused_reason"] == "cost cap reached"
    assert box["count"] == 3

    before = snapshot(app_pool, t)
    for url, status in [(f"/tasks/{f['parent']['id']}/resume", 409),  # Waiting, not Paused
                        (f"/tasks/{uuid.uuid4()}/resume", 404),
                        (f"/agents/{f['writer']['id']}/resume", 409),  # not paused
                        (f"/agents/{uuid.uuid4()}/resume", 404)]:
        r = api.post(url, headers=h)
        assert r.status_code == status, (url, r.text)
    assert snapshot(app_pool, t) == before

    r = api.post(f"/tasks/{f['kid']['id']}/resume", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "Active"
    assert r.json()["paused_reason"] is None
    r = api.post(f"/agents/{f['lead']['id']}/resume", headers=h)
    assert r.status_code == 200
    assert (r.json()["paused_at"], r.json()["failure_streak"]) == (None, 0)
    assert api.get("/inbox", headers=h).json()["count"] == 1  # the gated approval


def test_cancel_cascades_and_refuses_what_is_final(api, app_pool, tenant):
    t, h = tenant
    f = family(app_pool, t)
    before = snapshot(app_pool, t)
    url = f"/tasks/{f['parent']['id']}/cancel"
    for body in [{"reason": "x" * 2001}, {"reason": 5}, {"why": "x"}, {"reason": "a\x00b"}]:
        r = api.post(url, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
    assert api.post(f"/tasks/{uuid.uuid4()}/cancel", headers=h).status_code == 404
    assert snapshot(app_pool, t) == before

    r = api.post(url, json={"reason": "launch moved"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "Cancelled"
    tree = api.get(f"/tasks/{f['parent']['id']}", headers=h).json()
    assert {c["status"] for c in tree["children"]} == {"Cancelled"}
    assert api.get("/approvals", headers=h).json() == []  # the gated call was denied
    events = api.get(f"/tasks/{f['kid']['id']}/events", headers=h).json()
    (cancelled,) = [e["payload"] for e in events if e["kind"] == "task.cancelled"]
    assert cancelled["cancelled_ancestor_id"] == str(f["parent"]["id"])
    assert cancelled["reason"] == "launch moved"

    before = snapshot(app_pool, t)
    again = api.post(url, headers=h)  # no body at all is fine; Cancelled is final
    assert again.status_code == 409 and "it is final" in again.json()["detail"]
    assert snapshot(app_pool, t) == before


def test_a_cancel_without_a_body_and_the_moves_an_operator_may_not_make(api, app_pool, tenant):
    t, h = tenant
    task = api.post("/tasks", json={"title": "solo", "status": "Active"}, headers=h).json()
    before = snapshot(app_pool, t)
    for target in ("Waiting", "Paused"):
        r = api.post(f"/tasks/{task['id']}/move", json={"status": target}, headers=h)
        assert r.status_code == 409 and f"cannot move from Active to {target}" in r.text
    r = api.post("/tasks", json={"title": "born paused", "status": "Paused"}, headers=h)
    assert r.status_code == 409 and "starts as Draft or Active" in r.text
    assert snapshot(app_pool, t) == before
    r = api.post(f"/tasks/{task['id']}/move", json={"status": "Cancelled"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "Cancelled"
    assert api.get(f"/tasks/{task['id']}", headers=h).json()["children"] == []


def test_review_reject_sends_the_task_back_to_work(api, app_pool, tenant):
    t, h = tenant
    task = api.post("/tasks", json={"title": "essay", "status": "Active"}, headers=h).json()
    assert api.post(f"/tasks/{task['id']}/move", json={"status": "Review"},
                    headers=h).is_success
    r = api.post(f"/tasks/{task['id']}/review", json={"approve": False, "comment": "shorter"},
                 headers=h)
    assert r.status_code == 200 and r.json()["status"] == "Active"
    detail = api.get(f"/tasks/{task['id']}", headers=h).json()
    assert detail["review"] == {"kind": "review.rejected", "comment": "shorter", "actor": "api"}


def test_another_tenant_gets_404_and_sees_nothing(api, app_pool, tenant, make_tenant,
                                                  owner_dsn):
    t, h = tenant
    f = family(app_pool, t)
    other = make_tenant("orch-nosy")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        oh = {"Authorization": f"Bearer {create_operator(conn, other.id, 'nosy')}"}
    before = snapshot(app_pool, t)
    assert api.get("/approvals", headers=oh).json() == []
    assert api.get("/inbox", headers=oh).json() == {
        "approvals": [], "reviews": [], "paused_tasks": [], "paused_agents": [], "count": 0}
    for url, body in [(f"/approvals/{f['approval']['id']}", {"approve": True}),
                      (f"/tasks/{f['parent']['id']}/cancel", {}),
                      (f"/tasks/{f['gated']['id']}/resume", None),
                      (f"/agents/{f['lead']['id']}/resume", None)]:
        assert api.post(url, json=body, headers=oh).status_code == 404, url
    assert api.get(f"/tasks/{f['parent']['id']}", headers=oh).status_code == 404
    assert snapshot(app_pool, t) == before


@pytest.mark.parametrize(("method", "path"), NEW_ROUTES)
def test_every_new_route_needs_the_credential(api, app_pool, tenant, method, path):
    t, _h = tenant
    f = family(app_pool, t)
    before = snapshot(app_pool, t)
    ids = {"/tasks": f["gated"]["id"], "/approvals": f["approval"]["id"],
           "/agents": f["lead"]["id"]}
    url = path.replace("{id}", str(next((v for k, v in ids.items() if path.startswith(k)),
                                        "")))
    for headers in ({}, {"Authorization": "Bearer vost_not-a-real-token"},
                    {"Authorization": "Basic eDp5"}):
        r = api.request(method, url, json={"approve": True}, headers=headers)
        assert r.status_code == 401, (url, headers, r.text)
        assert "Deploy" not in r.text
    assert snapshot(app_pool, t) == before
