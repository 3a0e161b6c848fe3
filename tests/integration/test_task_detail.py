"""Results an operator can read: `GET /tasks/{id}` and the Command Center's task page, over
HTTP against the real app (uvicorn on loopback), a real Postgres and the fake providers.

A task is worked for real by the worker with the chain [desktop Ollama (native /api/chat),
sonnet]; the desktop answers 500 twice, so the router falls back and the ledger holds three
attempts. The detail then shows the reply, the passages, each attempt with tokens and cost,
and the timeline; review with a comment lands an event and moves the task.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import httpx
import psycopg
import pytest

from app.agents.config import WorkforceConfig, build_router
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.retrieval import add_document
from app.agents.workforce import Workforce
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.worker import Worker
from app.ui import auth
from devtools.fakes import start_fake_fleet
from tests.browser.server import serving_api

RUNBOOK = ("WireGuard keys rotate every ninety days; the rotation owner is Priya. "
           "Changes go through review. " * 3)
KEY = "sk-test-fake-0000000000000000000000"


@pytest.fixture(scope="module")
def served(migrated_db):
    fleet = start_fake_fleet(api_key=KEY)
    try:
        with serving_api(migrated_db.app_dsn, "vos-detail-it") as (server, pool, _app):
            yield server, pool, fleet
    finally:
        for fake in fleet.values():
            fake.stop()


def config_for(fleet) -> WorkforceConfig:
    return WorkforceConfig.model_validate({
        "deployments": [
            {"name": "desktop", "provider": "ollama", "base_url": fleet["ollama"].base_url,
             "model": "llama3.1:8b", "context_window": 8192, "max_output_tokens": 64},
            {"name": "sonnet", "provider": "anthropic", "base_url": fleet["anthropic"].base_url,
             "model": "claude-sonnet-4-6", "context_window": 200000, "api_key_env": "ANT_KEY",
             "max_output_tokens": 64},
        ],
        "default_chain": ["desktop", "sonnet"],
        "retry": {"max_attempts": 2, "base_delay": 0.01},
    })


@pytest.fixture
def worked(served, make_tenant, owner_dsn):
    """A tenant with an operator token and one task worked by the agent → Review."""
    server, pool, fleet = served
    for fake in fleet.values():
        fake.reset()
    tenant = make_tenant("detail")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        token = auth.create_operator(conn, tenant.id, "ada")
    with tenant_transaction(pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        add_document(conn, tenant.id, "Key runbook", RUNBOOK, source="docs/keys.md")
        agent = repo.create_agent(conn, tenant.id, name="SRE", persona="You are the SRE.",
                                  budget_usd="5")
        task = repo.create_task(conn, tenant.id, title="Who owns the WireGuard key rotation?",
                                assignee_id=agent["id"], status="Active")
    fleet["ollama"].script("500", "500")  # the desktop is down: retried, then fallback
    router = build_router(config_for(fleet), PostgresAccounting(pool), {"ANT_KEY": KEY})
    worker = Worker(pool, "detail-test/1",
                    Workforce(pool, router, system_prompt="You are an Agent VOS agent.").handle)
    assert worker.run_once(tenant.id) is True
    return server, pool, tenant, token, task["id"]


_OWNER: list[str] = []


@pytest.fixture(autouse=True)
def _owner(owner_dsn):
    _OWNER[:] = [owner_dsn]


def api(server, tenant_id) -> httpx.Client:
    """An API client with a fresh operator token of the tenant (the tenant comes from it)."""
    with psycopg.connect(_OWNER[0], autocommit=True) as conn:
        token = auth.create_operator(conn, tenant_id, "api-test")
    return httpx.Client(base_url=server.base_url, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def ui(server, token) -> httpx.Client:
    """A browser-like client signed in through the real form (a session cookie)."""
    client = httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False,
                          headers={"Origin": server.base_url})
    with httpx.Client(base_url=server.base_url, timeout=10) as form:
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.get("/ui/login").text)
        signed_in = form.post("/ui/login", data={"token": token, "csrf_token": nonce.group(1)})
        assert signed_in.headers["location"] == "/ui/board", signed_in.headers
        client.cookies.set("vos_session", form.cookies["vos_session"], domain="127.0.0.1",
                           path="/ui")
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html).group(1)


def test_api_detail_shows_reply_passages_attempts_and_events(worked, make_tenant):
    server, _pool, tenant, _token, task_id = worked
    with api(server, tenant.id) as c:
        detail = c.get(f"/tasks/{task_id}").json()
    assert detail["status"] == "Review" and detail["assignee_name"] == "SRE"
    assert detail["reply"].startswith("Acknowledged by claude-sonnet-4-6")
    assert detail["result"]["deployment"] == "sonnet" and "reply" not in detail["result"]
    (passage,) = detail["passages"]
    assert passage["document_title"] == "Key runbook"
    assert passage["document_source"] == "docs/keys.md"
    assert "rotation owner is Priya" in passage["excerpt"]
    attempts = detail["attempts"]
    assert [(a["deployment"], a["provider"], a["outcome"]) for a in attempts] == [
        ("desktop", "ollama", "server"), ("desktop", "ollama", "server"),
        ("sonnet", "anthropic", "ok")]
    ok = attempts[-1]
    assert ok["model_served"] == "claude-sonnet-4-6" and ok["output_tokens"] > 0
    assert ok["uncached_input_tokens"] > 0 and Decimal(ok["cost_usd"]) > 0
    assert Decimal(ok["cost_usd"]) == Decimal(detail["result"]["cost_usd"])
    assert all(Decimal(a["cost_usd"]) == 0 for a in attempts[:2])  # failed calls cost nothing
    assert "internal server error" in attempts[0]["error"]
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[0] == "created" and "work.result" in kinds
    assert "attempts_count" in detail and "last_error" in detail

    other = make_tenant("nosy")
    with api(server, other.id) as c:  # another tenant's task is simply not there
        answer = c.get(f"/tasks/{task_id}")
    assert answer.status_code == 404 and "Priya" not in answer.text


def test_api_review_needs_a_comment_to_reject_and_follows_the_status_machine(worked):
    server, pool, tenant, _token, task_id = worked
    with api(server, tenant.id) as c:
        refused = c.post(f"/tasks/{task_id}/review", json={"approve": False, "comment": " "})
        assert refused.status_code == 422 and "comment" in refused.text
        assert c.get(f"/tasks/{task_id}").json()["status"] == "Review"
        done = c.post(f"/tasks/{task_id}/review", json={"approve": True, "comment": "Good."})
        assert done.status_code == 200 and done.json()["status"] == "Approved"
        again = c.post(f"/tasks/{task_id}/review", json={"approve": True})
        assert again.status_code == 409 and "from Approved" in again.text
        detail = c.get(f"/tasks/{task_id}").json()
    approved = [e for e in detail["events"] if e["kind"] == "review.approved"]
    assert len(approved) == 1 and approved[0]["payload"]["comment"] == "Good."
    assert detail["review"]["comment"] == "Good."


def test_page_renders_the_reply_as_text_never_html(worked):
    server, pool, tenant, token, task_id = worked
    hostile = '<script>alert("x")</script>\nSecond line <b>bold</b>'
    with tenant_transaction(pool, tenant.id, actor="worker") as conn:
        repo.add_event(conn, tenant.id, task_id, "work.result",
                       {"reply": hostile, "passages": [], "deployment": "sonnet"})
    with ui(server, token) as c:
        page = c.get(f"/ui/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\nSecond line &lt;b&gt;bold" in html
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # the attempts table: deployment, model served, the four token buckets, cost, outcome
    table = html[html.index('data-testid="attempts"'):]
    assert "desktop" in table and "claude-sonnet-4-6" in table and "server" in table
    assert re.search(r"\d+ / 0 / 0 / \d+", table)


def test_ui_approve_with_comment_lands_an_event(worked):
    server, pool, tenant, token, task_id = worked
    with ui(server, token) as c:
        csrf = csrf_of(c.get(f"/ui/tasks/{task_id}").text)
        answer = c.post(f"/ui/tasks/{task_id}/review",
                        data={"csrf_token": csrf, "decision": "approve",
                              "comment": "Right owner, thanks"})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/tasks/{task_id}"  # text: flash cookie
        page = c.get(answer.headers["location"]).text
    assert "” approved" in page and "Right owner, thanks" in page
    with tenant_transaction(pool, tenant.id) as conn:
        assert repo.get_task(conn, task_id)["status"] == "Approved"
        (event,) = [e for e in repo.list_events(conn, task_id=task_id)
                    if e["kind"] == "review.approved"]
    assert event["payload"] == {"comment": "Right owner, thanks", "actor": "ui:ada"}


def test_ui_reject_needs_a_comment_then_lands_it(worked):
    server, pool, tenant, token, task_id = worked
    with ui(server, token) as c:
        csrf = csrf_of(c.get(f"/ui/tasks/{task_id}").text)
        empty = c.post(f"/ui/tasks/{task_id}/review",
                       data={"csrf_token": csrf, "decision": "reject", "comment": ""})
        assert "say what to change" in c.get(empty.headers["location"]).text
        with tenant_transaction(pool, tenant.id) as conn:
            assert repo.get_task(conn, task_id)["status"] == "Review"  # nothing changed
        forged = c.post(f"/ui/tasks/{task_id}/review",
                        data={"csrf_token": "0" * 64, "decision": "reject", "comment": "x"})
        assert forged.status_code == 403
        answer = c.post(f"/ui/tasks/{task_id}/review",
                        data={"csrf_token": csrf, "decision": "reject",
                              "comment": "Cite the runbook <please>"})
        page = c.get(answer.headers["location"]).text
    assert "Cite the runbook &lt;please&gt;" in page
    with tenant_transaction(pool, tenant.id) as conn:
        # a rejection sends the task back to work at once (Review → Rejected → Active)
        assert repo.get_task(conn, task_id)["status"] == "Active"
        kinds = [(e["kind"], e["payload"].get("comment"))
                 for e in repo.list_events(conn, task_id=task_id)]
    assert ("review.rejected", "Cite the runbook <please>") in kinds


def test_other_tenants_task_page_is_not_found_and_board_links_to_tasks(worked, make_tenant,
                                                                       owner_dsn):
    server, _pool, tenant, token, task_id = worked
    other = make_tenant("nosy-ui")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        other_token = auth.create_operator(conn, other.id, "eve")
    with ui(server, other_token) as c:
        page = c.get(f"/ui/tasks/{task_id}")
        assert page.status_code == 404 and "Who owns" not in page.text
        assert c.get("/ui/tasks/not-a-uuid").status_code == 404
    with ui(server, token) as c:
        board = c.get("/ui/board").text
    assert board.count(f'href="/ui/tasks/{task_id}"') >= 2  # the card and its feed entries


def test_failed_task_can_be_retried_from_its_page(served, make_tenant, owner_dsn):
    server, pool, _fleet = served
    tenant = make_tenant("retry")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        token = auth.create_operator(conn, tenant.id, "ada")
    with tenant_transaction(pool, tenant.id) as conn:
        task = repo.create_task(conn, tenant.id, title="Poison", status="Active")
        repo.move_task(conn, task["id"], "Failed")
    with ui(server, token) as c:
        page = c.get(f"/ui/tasks/{task['id']}").text
        assert 'data-testid="retry"' in page and 'data-testid="review-form"' not in page
        answer = c.post(f"/ui/tasks/{task['id']}/retry", data={"csrf_token": csrf_of(page)})
        assert "Task queued again" in c.get(answer.headers["location"]).text
    with tenant_transaction(pool, tenant.id) as conn:
        assert repo.get_task(conn, task["id"])["status"] == "Active"
        assert "work.retry" in [e["kind"] for e in repo.list_events(conn, task_id=task["id"])]


def test_unknown_task_is_404_on_the_api(served, make_tenant):
    server, _pool, _fleet = served
    tenant = make_tenant("empty")
    with api(server, tenant.id) as c:
        assert c.get(f"/tasks/{uuid.uuid4()}").status_code == 404
