"""The task page in headless Chromium: from the board card to the detail, the reply as text,
the attempts table, approving with a comment; and the page at phone width.
"""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.worker import Worker
from tests.browser.conftest import PHONE, shot, sign_in


def worked_task(stack, title: str) -> uuid.UUID:
    """A task the CTO agent works through the fake Anthropic server → Review."""
    with tenant_transaction(stack.pool, stack.acme.id, actor="test") as conn:
        task = repo.create_task(conn, stack.acme.id, title=title, priority="P0",
                                body="Line one\nLine two <i>not italic</i>",
                                assignee_id=stack.acme.agents["CTO"], status="Active")
    assert Worker(stack.pool, "browser-test/detail", stack.runner).run_once(stack.acme.id)
    return task["id"]


def test_click_from_board_to_task_and_approve_with_comment(browser, ui_stack):
    stack = ui_stack
    title = f"Rotate mesh keys {uuid.uuid4().hex[:6]}"
    task_id = worked_task(stack, title)
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        card = page.locator('[data-testid="column-Review"] [data-testid="card"]',
                            has_text=title)
        card.get_by_test_id("card-link").click()
        page.wait_for_url(f"{stack.url}/tasks/{task_id}")
        expect(page.get_by_test_id("task-title")).to_have_text(title)
        expect(page.get_by_test_id("task-status")).to_have_text("Review")
        expect(page.get_by_test_id("reply")).to_contain_text("Acknowledged by claude-sonnet-4-6")
        # the body's markup is text, and its line break is kept
        body = page.get_by_test_id("task-body")
        expect(body).to_contain_text("<i>not italic</i>")
        assert body.locator("i").count() == 0
        assert body.evaluate("e => e.getBoundingClientRect().height") > 30  # two lines
        rows = page.get_by_test_id("attempts").locator("tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("sonnet")
        expect(rows.first).to_contain_text("ok")
        shot(page, "task-desktop")

        page.get_by_test_id("review-comment").fill("Ship it, nice work")
        page.get_by_test_id("approve").click()
        expect(page.get_by_test_id("notice")).to_contain_text("approved")
        expect(page.get_by_test_id("task-status")).to_have_text("Approved")
        expect(page.get_by_test_id("review-form")).to_have_count(0)
        expect(page.get_by_test_id("timeline")).to_contain_text("approved: “Ship it, nice work”")
        with tenant_transaction(stack.pool, stack.acme.id) as conn:
            assert repo.get_task(conn, task_id)["status"] == "Approved"

        # the live feed links to the task page too
        page.goto(f"{stack.url}/board")
        page.locator('[data-testid="feed"] a.title', has_text=title).first.click()
        page.wait_for_url(f"{stack.url}/tasks/{task_id}")
    finally:
        ctx.close()


def test_task_page_fits_a_phone(browser, ui_stack):
    stack = ui_stack
    task_id = worked_task(stack, f"Phone check {uuid.uuid4().hex[:6]}")
    ctx, page = sign_in(browser, stack, stack.acme.token, viewport=PHONE, phone=True)
    try:
        page.goto(f"{stack.url}/tasks/{task_id}")
        expect(page.get_by_test_id("reply")).to_be_visible()
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the task page scrolls sideways on a phone by {overflow}px"
        shot(page, "task-phone")
    finally:
        ctx.close()
