"""The Command Center's orchestration forms over HTTP against the real app (uvicorn on
loopback) and a real Postgres: the approvals inbox and its count in the navigation, tool-call
decisions, reject-with-comment from the inbox, cancel (with its confirm step and the cascade
to sub-tasks), resume of tasks and agents. Each form is refused without a session and from
another origin, and a refused form writes nothing. Data is seeded with the engine's own
functions (app.dispatch.tasks), never with fakes.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.ui import auth
from tests.browser.server import serving_api
from tests.integration.test_ui_access import client, csrf_of


@pytest.fixture(scope="module")
def served(migrated_db):
    with serving_api(migrated_db.app_dsn, "vos-ui-orch") as (server, pool, _app):
        yield server, pool


@pytest.fixture
def workspace(served, make_tenant, owner_dsn):
    """A fresh tenant with an operator token and two agents (a lead over a specialist)."""
    _server, pool = served
    tenant = make_tenant("orch")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        token = auth.create_operator(conn, tenant.id, "ada")
    with tenant_transaction(pool, tenant.id, actor="test") as conn:
        lead = repo.create_agent(conn, tenant.id, name="Lead", role="Orchestrator")
        writer = repo.create_agent(conn, tenant.id, name="Writer", role="Copy",
                                   manager_id=lead["id"])
    return tenant, token, {"Lead": lead["id"], "Writer": writer["id"]}


def seed(pool, tenant, fn):
    with tenant_transaction(pool, tenant.id, actor="test") as conn:
        return fn(conn)


def active_task(conn, tenant, agent_id, title="Write the launch post"):
    return repo.create_task(conn, tenant.id, title=title, assignee_id=agent_id,
                            status="Active")


def pending_approval(pool, tenant, agent_id, *, tool="delegate", arguments=None,
                     title="Plan the launch"):
    """An Active task whose run asked to call `tool`: the engine pauses it for approval."""
    def run(conn):
        task = active_task(conn, tenant, agent_id, title)
        approval = repo.request_approval(conn, task, agent_id=agent_id, tool=tool,
                                         arguments=arguments or {"to": "Writer"},
                                         call_id="call_1")
        return task, approval
    return seed(pool, tenant, run)


def in_review(pool, tenant, agent_id, title="Draft the post"):
    def run(conn):
        task = active_task(conn, tenant, agent_id, title)
        return repo.move_task(conn, task["id"], "Review")
    return seed(pool, tenant, run)


def task_of(pool, tenant, task_id) -> dict:
    return seed(pool, tenant, lambda conn: repo.get_task(conn, task_id))


def approval_of(pool, tenant, approval_id) -> dict:
    return seed(pool, tenant, lambda conn: conn.execute(
        "SELECT * FROM tool_approvals WHERE id = %s", [approval_id]).fetchone())


def banner(c, answer) -> str:
    """The page a form's 303 lands on (its banner carries the notice or the refusal)."""
    assert answer.status_code == 303, (answer.status_code, answer.text[:300])
    return c.get(answer.headers["location"]).text


def nav_count(html: str) -> int:
    return int(re.search(r'data-testid="inbox-count"[^>]*>(\d+)<', html).group(1))


def test_new_routes_need_a_session(served, workspace):
    server, pool = served
    tenant, _token, agents = workspace
    task, approval = pending_approval(pool, tenant, agents["Lead"])
    posts = [f"/ui/tasks/{task['id']}/cancel", f"/ui/tasks/{task['id']}/resume",
             f"/ui/approvals/{approval['id']}", f"/ui/agents/{agents['Lead']}/resume"]
    with client(server) as anonymous:
        assert anonymous.get("/ui/inbox").headers["location"] == "/ui/login"
        assert anonymous.get("/ui/inbox/fragment").status_code == 401
        for path in posts:
            answer = anonymous.post(path, data={"decision": "approve", "confirm": "yes"})
            assert answer.status_code == 401, path
    assert task_of(pool, tenant, task["id"])["status"] == "Paused"
    assert approval_of(pool, tenant, approval["id"])["status"] == "pending"


def test_forms_refused_cross_origin_or_without_csrf_write_nothing(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    task, approval = pending_approval(pool, tenant, agents["Lead"])
    review = in_review(pool, tenant, agents["Writer"])
    with client(server, token) as c:
        good = csrf_of(c.get("/ui/inbox").text)
        forms = [
            (f"/ui/approvals/{approval['id']}", {"decision": "approve"}),
            (f"/ui/tasks/{task['id']}/cancel", {"confirm": "yes"}),
            (f"/ui/tasks/{review['id']}/review", {"decision": "reject", "comment": "redo"}),
            (f"/ui/agents/{agents['Lead']}/resume", {}),
            (f"/ui/tasks/{task['id']}/resume", {}),
        ]
        for path, form in forms:
            no_token = c.post(path, data=form)
            assert no_token.status_code == 403, path
            cross = c.post(path, data={**form, "csrf_token": good},
                           headers={"Origin": "http://evil.example"})
            assert cross.status_code == 403, path
            assert "Reload the page and try again" in cross.text
    assert task_of(pool, tenant, task["id"])["status"] == "Paused"
    assert approval_of(pool, tenant, approval["id"])["status"] == "pending"
    assert task_of(pool, tenant, review["id"])["status"] == "Review"


def test_inbox_lists_the_four_sections_oldest_first_with_the_count(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    _first, a1 = pending_approval(pool, tenant, agents["Lead"], title="First ask",
                                  arguments={"to": "Writer", "brief": "<script>x</script>"})
    _second, a2 = pending_approval(pool, tenant, agents["Writer"], tool="post_to_blog",
                                   title="Second ask", arguments={"url": "https://x"})
    review = in_review(pool, tenant, agents["Writer"], "Result to judge")
    paused = seed(pool, tenant, lambda conn: repo.pause_task(
        conn, active_task(conn, tenant, agents["Writer"], "Looping task")["id"],
        "same call 3 times: search_knowledge({\"query\": \"x\"})"))
    seed(pool, tenant, lambda conn: repo.pause_agent(conn, agents["Writer"],
                                                     "failed 3 tasks in a row"))
    with client(server, token) as c:
        page = c.get("/ui/inbox")
        fragment = c.get("/ui/inbox/fragment")
        board = c.get("/ui/board")
    assert page.status_code == 200 and fragment.status_code == 200
    html = page.text
    assert nav_count(html) == 5 and nav_count(board.text) == 5
    assert 'data-inbox-count="5"' in fragment.text
    # oldest first, and the arguments are escaped text, pretty-printed
    assert html.index(str(a1["id"])) < html.index(str(a2["id"]))
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html
    assert '"brief": ' in html.replace("&#34;", '"')
    for text in ("post_to_blog", review["title"], paused["title"], "same call 3 times",
                 "failed 3 tasks in a row", "Writer"):
        assert text in html.replace("&#34;", '"'), text


def test_approve_and_deny_a_tool_call(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    task1, a1 = pending_approval(pool, tenant, agents["Lead"], title="Approve me")
    task2, a2 = pending_approval(pool, tenant, agents["Lead"], title="Deny me")
    with client(server, token) as c:
        csrf = csrf_of(c.get("/ui/inbox").text)
        ok = c.post(f"/ui/approvals/{a1['id']}", data={
            "csrf_token": csrf, "decision": "approve", "back": "inbox"})
        assert ok.headers["location"] == "/ui/inbox"
        assert "Tool call approved" in banner(c, ok)
        # from the task page, landing back on it
        no = c.post(f"/ui/approvals/{a2['id']}", data={
            "csrf_token": csrf, "decision": "deny", "comment": "Not <that> agent",
            "back": f"task:{task2['id']}"})
        assert no.headers["location"] == f"/ui/tasks/{task2['id']}"
        page = banner(c, no)
        assert "Tool call denied" in page and "Not &lt;that&gt; agent" in page
        again = c.post(f"/ui/approvals/{a2['id']}", data={"csrf_token": csrf,
                                                          "decision": "approve"})
        assert "Not applied" in banner(c, again)  # decided once, for good
        bad = c.post(f"/ui/approvals/{a1['id']}", data={"csrf_token": csrf,
                                                        "decision": "maybe"})
        assert "decision must be approve or deny" in banner(c, bad)
    first, second = approval_of(pool, tenant, a1["id"]), approval_of(pool, tenant, a2["id"])
    assert first["status"] == "approved" and first["decided_by"]
    assert second["status"] == "denied" and second["comment"] == "Not <that> agent"
    assert task_of(pool, tenant, task1["id"])["status"] == "Active"
    assert task_of(pool, tenant, task2["id"])["status"] == "Active"


def test_reject_from_the_inbox_needs_a_comment_and_sends_the_task_back(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    review = in_review(pool, tenant, agents["Writer"])
    with client(server, token) as c:
        csrf = csrf_of(c.get("/ui/inbox").text)
        empty = c.post(f"/ui/tasks/{review['id']}/review", data={
            "csrf_token": csrf, "decision": "reject", "comment": "  ", "back": "inbox"})
        assert empty.headers["location"] == "/ui/inbox"
        assert "say what to change" in banner(c, empty)
        assert task_of(pool, tenant, review["id"])["status"] == "Review"
        rejected = c.post(f"/ui/tasks/{review['id']}/review", data={
            "csrf_token": csrf, "decision": "reject", "comment": "Cite the runbook",
            "back": "inbox"})
        page = banner(c, rejected)
        assert "rejected: Active again" in page
        assert nav_count(page) == 0
        detail = c.get(f"/ui/tasks/{review['id']}").text
    assert "Cite the runbook" in detail
    assert task_of(pool, tenant, review["id"])["status"] == "Active"


def test_cancel_needs_the_confirm_box_and_cancels_open_children(served, workspace):
    server, pool = served
    tenant, token, agents = workspace

    def tree(conn):
        parent = active_task(conn, tenant, agents["Lead"], "Launch campaign")
        kids = [repo.create_child_task(conn, parent, title=f"Part {i}", body="do it",
                                       priority="P1", assignee_id=agents["Writer"])
                for i in range(2)]
        return parent, kids
    parent, kids = seed(pool, tenant, tree)
    with client(server, token) as c:
        page = c.get(f"/ui/tasks/{parent['id']}").text
        assert "its 2 open sub-tasks" in page
        for kid in kids:
            assert f'href="/ui/tasks/{kid["id"]}"' in page
        csrf = csrf_of(page)
        unconfirmed = c.post(f"/ui/tasks/{parent['id']}/cancel", data={"csrf_token": csrf})
        assert "tick" in banner(c, unconfirmed)
        assert task_of(pool, tenant, parent["id"])["status"] == "Active"
        done = c.post(f"/ui/tasks/{parent['id']}/cancel", data={
            "csrf_token": csrf, "confirm": "yes", "reason": "campaign dropped"})
        assert "cancelled" in banner(c, done)
        twice = c.post(f"/ui/tasks/{parent['id']}/cancel", data={
            "csrf_token": csrf, "confirm": "yes"})
        assert "Not applied" in banner(c, twice)
        child_page = c.get(f"/ui/tasks/{kids[0]['id']}").text
    assert f'href="/ui/tasks/{parent["id"]}"' in child_page  # the child links its parent
    statuses = {task_of(pool, tenant, t["id"])["status"] for t in [parent, *kids]}
    assert statuses == {"Cancelled"}


def test_resume_a_paused_task_and_agent(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    task = seed(pool, tenant, lambda conn: repo.pause_task(
        conn, active_task(conn, tenant, agents["Writer"])["id"], "cost cap $0.50 reached"))
    held, approval = pending_approval(pool, tenant, agents["Lead"])
    seed(pool, tenant, lambda conn: repo.pause_agent(conn, agents["Writer"],
                                                     "failed 3 tasks in a row"))
    with client(server, token) as c:
        org = c.get("/ui/org").text
        assert "failed 3 tasks in a row" in org and f"/ui/agents/{agents['Writer']}/resume" in org
        csrf = csrf_of(org)
        # a task held by a pending approval is decided, not resumed
        refused = c.post(f"/ui/tasks/{held['id']}/resume", data={"csrf_token": csrf})
        assert "Not applied" in banner(c, refused)
        resumed = c.post(f"/ui/tasks/{task['id']}/resume", data={"csrf_token": csrf,
                                                                  "back": "board"})
        assert resumed.headers["location"] == "/ui/board"
        assert "resumed" in banner(c, resumed)
        agent = c.post(f"/ui/agents/{agents['Writer']}/resume", data={"csrf_token": csrf,
                                                                       "back": "org"})
        assert agent.headers["location"] == "/ui/org"
        assert "Writer resumed" in banner(c, agent)
    assert task_of(pool, tenant, task["id"])["status"] == "Active"
    assert task_of(pool, tenant, held["id"])["status"] == "Paused"
    row = seed(pool, tenant, lambda conn: conn.execute(
        "SELECT paused_at, failure_streak FROM agents WHERE id = %s",
        [agents["Writer"]]).fetchone())
    assert row["paused_at"] is None and row["failure_streak"] == 0
    assert approval_of(pool, tenant, approval["id"])["status"] == "pending"


def test_another_tenants_approval_is_not_found_and_untouched(served, workspace, make_tenant,
                                                              owner_dsn):
    server, pool = served
    tenant, token, _agents = workspace
    other = make_tenant("orch-other")
    other_agent = seed(pool, other, lambda conn: repo.create_agent(conn, other.id, name="X"))
    _task, approval = pending_approval(pool, other, other_agent["id"], title="Other's secret")
    with client(server, token) as c:
        inbox = c.get("/ui/inbox").text
        assert "Other&#39;s secret" not in inbox and "Other's secret" not in inbox
        answer = c.post(f"/ui/approvals/{approval['id']}", data={
            "csrf_token": csrf_of(inbox), "decision": "approve"})
        assert "Not applied" in banner(c, answer)
    assert approval_of(pool, other, approval["id"])["status"] == "pending"


def test_back_never_leaves_the_command_center(served, workspace):
    server, pool = served
    tenant, token, agents = workspace
    _task, approval = pending_approval(pool, tenant, agents["Lead"])
    with client(server, token) as c:
        csrf = csrf_of(c.get("/ui/inbox").text)
        for back in ("https://evil.example/", "//evil.example", "task:not-a-uuid", "../x"):
            answer = c.post(f"/ui/approvals/{approval['id']}",
                            data={"csrf_token": csrf, "decision": "maybe", "back": back})
            assert answer.headers["location"] == "/ui/inbox", back


def test_board_marks_children_parents_and_paused_tasks(served, workspace):
    server, pool = served
    tenant, token, agents = workspace

    def tree(conn):
        parent = active_task(conn, tenant, agents["Lead"], "Parent of two")
        kid = repo.create_child_task(conn, parent, title="Child one", body="",
                                     priority="P1", assignee_id=agents["Writer"])
        repo.create_child_task(conn, parent, title="Child two", body="", priority="P2",
                               assignee_id=agents["Writer"])
        repo.wait_for_children(conn, parent["id"])
        repo.pause_task(conn, kid["id"], "token cap reached")
        return parent
    parent = seed(pool, tenant, tree)
    with client(server, token, bearer=True) as c:
        board = c.get("/ui/board/fragment").text
    assert "2 sub-tasks (0 approved)" in board
    assert board.count(f'href="/ui/tasks/{parent["id"]}"') == 3  # its card + two ↳ markers
    assert 'data-testid="badge-waiting"' in board and 'data-testid="badge-paused"' in board
    assert "token cap reached" in board
    # no one-click Cancelled, Waiting or Paused steps on the board
    for target in ("Cancelled", "Waiting", "Paused"):
        assert f'value="{target}"' not in board
