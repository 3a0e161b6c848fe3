"""Orchestration in headless Chromium against the real app and a real Postgres: the approvals
inbox (its count in the navigation, approving and denying tool calls, rejecting a result with
a comment), the task tree (parent and children, linked both ways; the board's markers), the
task page's reject-with-comment sending the task back to Active, and resuming a paused agent
from the org chart. Data is seeded with the engine's own functions (app.dispatch.tasks).
Screenshots of the inbox and of a task tree land in docs/screenshots/.
"""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from tests.browser.conftest import PHONE, shot, sign_in


def seed(stack, fn):
    with tenant_transaction(stack.pool, stack.acme.id, actor="test") as conn:
        return fn(conn)


def active(conn, stack, agent: str, title: str, priority: str = "P1") -> dict:
    return repo.create_task(conn, stack.acme.id, title=title, priority=priority,
                            assignee_id=stack.acme.agents[agent], status="Active")


def ask_approval(stack, agent: str, title: str, tool: str, arguments: dict):
    """A run of `agent` wants to call `tool`: its task pauses until an operator decides."""
    def run(conn):
        task = active(conn, stack, agent, title)
        approval = repo.request_approval(conn, task, agent_id=stack.acme.agents[agent],
                                         tool=tool, arguments=arguments, call_id="call_1")
        return task, approval
    return seed(stack, run)


def to_review(stack, agent: str, title: str) -> dict:
    """A task whose agent handed in a result: Review, with the reply in its timeline."""
    def run(conn):
        task = active(conn, stack, agent, title)
        repo.add_event(conn, stack.acme.id, task["id"], "work.result",
                       {"reply": "Draft: our launch is on Monday."})
        return repo.move_task(conn, task["id"], "Review")
    return seed(stack, run)


def status_of(stack, task_id) -> str:
    return seed(stack, lambda conn: repo.get_task(conn, task_id))["status"]


def approval_row(stack, approval_id) -> dict:
    return seed(stack, lambda conn: conn.execute(
        "SELECT status, comment, decided_by FROM tool_approvals WHERE id = %s",
        [approval_id]).fetchone())


def inbox_count(stack) -> int:
    return seed(stack, repo.inbox_count)


def expect_badge(badge, count: int) -> None:
    """The navigation's Inbox badge shows the count, and is hidden at 0."""
    if count:
        expect(badge).to_have_text(str(count))
    else:
        expect(badge).to_be_hidden()


def test_inbox_count_approve_deny_and_reject_with_comment(browser, ui_stack):
    stack = ui_stack
    tag = uuid.uuid4().hex[:6]
    first_task, first = ask_approval(stack, "Orchestrator", f"Plan the launch {tag}", "delegate",
                                     {"to": "Marketing Lead", "title": "Launch post",
                                      "brief": "Write <b>the</b> post", "priority": "P1"})
    second_task, second = ask_approval(stack, "CTO", f"Publish the page {tag}", "post_to_cms",
                                       {"url": "http://100.64.0.9/cms", "draft": False})
    review = to_review(stack, "Creative", f"Tagline {tag}")
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        waiting = inbox_count(stack)
        assert waiting >= 3
        badge = page.get_by_test_id("inbox-count")
        expect(badge).to_have_text(str(waiting))  # on the board too, every page
        page.get_by_test_id("nav-inbox").click()
        page.wait_for_url(f"{stack.url}/inbox")
        expect(badge).to_have_text(str(waiting))

        approvals = page.get_by_test_id("approval")
        one = approvals.filter(has_text=first_task["title"])
        two = approvals.filter(has_text=second_task["title"])
        # the arguments are text (escaped), pretty-printed; the tool and the agent are named
        args = one.get_by_test_id("approval-args")
        expect(args).to_contain_text('"brief": "Write <b>the</b> post"')
        assert args.locator("b").count() == 0
        expect(one.get_by_test_id("approval-tool")).to_have_text("delegate")
        expect(one).to_contain_text("Orchestrator")
        # oldest first
        titles = approvals.locator('[data-testid="approval-task"]').all_inner_texts()
        assert titles.index(first_task["title"]) < titles.index(second_task["title"])
        shot(page, "inbox-desktop")

        one.get_by_test_id("approval-approve").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Tool call approved")
        expect_badge(badge, waiting - 1)
        assert approval_row(stack, first["id"])["status"] == "approved"
        assert status_of(stack, first_task["id"]) == "Active"

        two = page.get_by_test_id("approval").filter(has_text=second_task["title"])
        two.get_by_test_id("approval-comment").fill("Not before the legal review")
        two.get_by_test_id("approval-deny").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Tool call denied")
        expect_badge(badge, waiting - 2)
        denied = approval_row(stack, second["id"])
        assert denied["status"] == "denied"
        assert denied["comment"] == "Not before the legal review"
        assert denied["decided_by"]

        # a result rejected from the inbox: the comment is required (the browser checks it
        # before anything is sent), then the task goes back to work with it
        item = page.get_by_test_id("review").filter(has_text=review["title"])
        item.get_by_test_id("review-reject").click()
        expect(item.get_by_test_id("review-comment")).to_have_js_property("validity.valid",
                                                                          False)
        assert status_of(stack, review["id"]) == "Review"
        item.get_by_test_id("review-comment").fill("Shorter, and name the product")
        item.get_by_test_id("review-reject").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Active again")
        expect(page.get_by_test_id("review").filter(has_text=review["title"])).to_have_count(0)
        expect_badge(badge, waiting - 3)
        assert status_of(stack, review["id"]) == "Active"
        page.goto(f"{stack.url}/tasks/{review['id']}")
        expect(page.get_by_test_id("task-status")).to_have_text("Active")
        expect(page.get_by_test_id("timeline")).to_contain_text("Shorter, and name the product")
    finally:
        ctx.close()


def test_task_tree_parent_and_children_linked_both_ways(browser, ui_stack):
    stack = ui_stack
    tag = uuid.uuid4().hex[:6]

    def tree(conn):
        parent = active(conn, stack, "Orchestrator", f"Launch campaign {tag}", "P0")
        kids = [repo.create_child_task(conn, parent, title=f"{what} {tag}", body="brief",
                                       priority="P1", assignee_id=stack.acme.agents[who])
                for what, who in (("Launch post", "Marketing Lead"),
                                  ("Landing page", "CTO"))]
        repo.wait_for_children(conn, parent["id"])
        repo.move_task(conn, kids[1]["id"], "Review")
        repo.review_task(conn, kids[1]["id"], True, "Looks right")
        return parent, kids
    parent, kids = seed(stack, tree)
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        # the board: the parent waits (a chip in the Active column), with its sub-task count;
        # each child carries a ↳ marker to its parent
        parent_card = page.locator('[data-testid="column-Active"] [data-testid="card"]',
                                   has_text=parent["title"])
        expect(parent_card.get_by_test_id("badge-waiting")).to_be_visible()
        expect(parent_card.get_by_test_id("card-subtasks")).to_have_text(
            "2 sub-tasks (1 approved)")
        child_card = page.locator('[data-testid="card"]', has_text=kids[0]["title"])
        expect(child_card.get_by_test_id("card-parent")).to_contain_text(parent["title"])

        child_card.get_by_test_id("card-link").click()
        page.wait_for_url(f"{stack.url}/tasks/{kids[0]['id']}")
        expect(page.get_by_test_id("task-parent")).to_contain_text(parent["title"])
        page.get_by_test_id("parent-link").click()
        page.wait_for_url(f"{stack.url}/tasks/{parent['id']}")
        expect(page.get_by_test_id("task-status")).to_have_text("Waiting")
        children = page.get_by_test_id("child")
        expect(children).to_have_count(2)
        expect(children.nth(0)).to_contain_text(kids[0]["title"])
        expect(children.nth(0)).to_contain_text("Marketing Lead")
        expect(children.nth(0).get_by_test_id("child-status")).to_have_text("Active")
        expect(children.nth(1).get_by_test_id("child-status")).to_have_text("Approved")
        expect(children.nth(1)).to_contain_text("CTO")
        shot(page, "task-tree-desktop")
        children.nth(1).get_by_test_id("child-link").click()
        page.wait_for_url(f"{stack.url}/tasks/{kids[1]['id']}")

        # cancelling the parent: the confirm box is required, then the open child goes too
        page.goto(f"{stack.url}/tasks/{parent['id']}")
        page.get_by_test_id("cancel").locator("summary").click()
        expect(page.get_by_test_id("cancel-form")).to_contain_text("1 open sub-task")
        page.get_by_test_id("cancel-submit").click()
        expect(page.get_by_test_id("cancel-confirm")).to_have_js_property("validity.valid",
                                                                          False)
        assert status_of(stack, parent["id"]) == "Waiting"
        page.get_by_test_id("cancel-confirm").check()
        page.get_by_test_id("cancel-reason").fill("campaign moved to Q3")
        page.get_by_test_id("cancel-submit").click()
        expect(page.get_by_test_id("notice")).to_contain_text("cancelled")
        expect(page.get_by_test_id("task-status")).to_have_text("Cancelled")
        expect(page.get_by_test_id("child").nth(0).get_by_test_id("child-status")
               ).to_have_text("Cancelled")
        expect(page.get_by_test_id("child").nth(1).get_by_test_id("child-status")
               ).to_have_text("Approved")
        expect(page.get_by_test_id("cancel")).to_have_count(0)
    finally:
        ctx.close()


def test_reject_on_the_task_page_sends_it_back_to_active_with_the_comment(browser, ui_stack):
    stack = ui_stack
    task = to_review(stack, "Creative", f"Slogan {uuid.uuid4().hex[:6]}")
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        page.goto(f"{stack.url}/tasks/{task['id']}")
        expect(page.get_by_test_id("task-status")).to_have_text("Review")
        page.get_by_test_id("reject").click()  # no comment: the browser asks for one
        expect(page.get_by_test_id("review-comment")).to_have_js_property("validity.valid",
                                                                          False)
        assert status_of(stack, task["id"]) == "Review"
        page.get_by_test_id("review-comment").fill("Too long: five words at most")
        page.get_by_test_id("reject").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Active again")
        expect(page.get_by_test_id("task-status")).to_have_text("Active")
        expect(page.get_by_test_id("review-form")).to_have_count(0)
        timeline = page.get_by_test_id("timeline")
        expect(timeline.locator('[data-kind="review.rejected"]')).to_contain_text(
            "Too long: five words at most")
        expect(timeline).to_contain_text("Rejected → Active")
        expect(page.get_by_test_id("review-outcome")).to_contain_text(
            "Too long: five words at most")
        assert status_of(stack, task["id"]) == "Active"
        # and on the board it is back in the Active column
        page.goto(f"{stack.url}/board")
        expect(page.locator('[data-testid="column-Active"] [data-testid="card"]',
                            has_text=task["title"])).to_be_visible()
    finally:
        ctx.close()


def test_paused_task_and_agent_resume(browser, ui_stack):
    stack = ui_stack
    tag = uuid.uuid4().hex[:6]
    task = seed(stack, lambda conn: repo.pause_task(
        conn, active(conn, stack, "CTO", f"Looping fix {tag}")["id"],
        "same call 3 times: search_knowledge({\"query\": \"vpn\"})"))
    seed(stack, lambda conn: repo.pause_agent(conn, stack.acme.agents["Creative"],
                                              "failed 3 tasks in a row"))
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        card = page.locator('[data-testid="column-Active"] [data-testid="card"]',
                            has_text=task["title"])
        expect(card.get_by_test_id("badge-paused")).to_be_visible()
        expect(card.get_by_test_id("card-reason")).to_contain_text("same call 3 times")

        page.goto(f"{stack.url}/tasks/{task['id']}")
        expect(page.get_by_test_id("paused-reason")).to_contain_text("same call 3 times")
        page.get_by_test_id("resume").click()
        expect(page.get_by_test_id("notice")).to_contain_text("resumed")
        expect(page.get_by_test_id("task-status")).to_have_text("Active")

        page.goto(f"{stack.url}/org")
        creative = page.locator('[data-agent="Creative"]')
        expect(creative.get_by_test_id("agent-paused-reason")).to_have_text(
            "failed 3 tasks in a row")
        creative.get_by_test_id("agent-resume").click()
        expect(page.get_by_test_id("notice")).to_contain_text("Creative resumed")
        expect(page.locator('[data-agent="Creative"]').get_by_test_id("agent-paused")
               ).to_have_count(0)
    finally:
        ctx.close()


def test_inbox_fits_a_phone(browser, ui_stack):
    stack = ui_stack
    long_word = "x" * 300  # a model can send one long unbroken argument
    task, _approval = ask_approval(stack, "Marketing Lead", f"Phone ask {uuid.uuid4().hex[:6]}",
                                   "delegate", {"to": "Creative", "brief": long_word})
    ctx, page = sign_in(browser, stack, stack.acme.token, viewport=PHONE, phone=True)
    try:
        page.goto(f"{stack.url}/inbox")
        expect(page.get_by_test_id("approval").filter(has_text=task["title"])).to_be_visible()
        expect(page.get_by_test_id("inbox-count")).to_be_visible()
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the inbox scrolls sideways on a phone by {overflow}px"
        shot(page, "inbox-phone")
    finally:
        ctx.close()


def test_the_badge_follows_new_requests_without_a_reload(browser, ui_stack):
    stack = ui_stack
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        expect(page.get_by_test_id("feed-state")).to_have_text("live")
        before = inbox_count(stack)
        task, _approval = ask_approval(stack, "CTO", f"Live ask {uuid.uuid4().hex[:6]}",
                                       "delegate", {"to": "nobody"})
        # the feed's event re-renders the board, whose fragment carries the count
        expect(page.locator('[data-testid="card"]', has_text=task["title"])
               .get_by_test_id("badge-paused")).to_be_visible()
        expect_badge(page.get_by_test_id("inbox-count"), before + 1)
        expect(page.locator('[data-testid="card"]', has_text=task["title"])
               .get_by_test_id("card-decide")).to_be_visible()
    finally:
        ctx.close()
