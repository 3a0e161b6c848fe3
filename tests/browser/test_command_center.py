"""The Command Center in headless Chromium against the real app and a real Postgres.

Flow of the issue: operator A creates a task; operator B (a second browser context) watches
it appear on the board and in the live feed; A moves it to Review (an agent works it through
the fake providers) and approves it; the org chart and the cost tracker update after that
agent call; nothing of the other tenant (globex) is ever visible. Screenshots of every view
at desktop and phone width land in docs/screenshots/.
"""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.worker import Worker
from app.ui.views import load_board, load_costs
from tests.browser.conftest import PHONE, shot, sign_in

GLOBEX_WORDS = re.compile(r"Globex|merger")


def card(page, column: str, title: str):
    return page.locator(f'[data-testid="column-{column}"] [data-testid="card"]',
                        has_text=title)


def feed_item(page, title: str):
    return page.locator('[data-testid="feed"] li', has_text=title)


def assert_no_globex(page) -> None:
    text = page.inner_text("body")
    assert not GLOBEX_WORDS.search(text), f"another tenant's data is visible: {text[:500]}"


def test_task_flow_live_between_two_contexts(browser, ui_stack):
    stack = ui_stack
    title = f"Launch post {uuid.uuid4().hex[:6]}"
    ctx_a, a = sign_in(browser, stack, stack.acme.token)
    ctx_b, b = sign_in(browser, stack, stack.acme.token)
    try:
        expect(b.get_by_test_id("feed-state")).to_have_text("live")
        draft_before = int(b.get_by_test_id("count-Draft").inner_text())

        # A creates the task, assigned to the Creative agent
        a.click('[data-testid="new-task"] summary')
        a.fill('[data-testid="new-title"]', title)
        a.select_option('[data-testid="new-priority"]', "P0")
        a.select_option('[data-testid="new-assignee"]', label="Creative")
        a.click('[data-testid="create-task"]')
        expect(a.get_by_test_id("notice")).to_contain_text("created")

        # B sees it on the board (card with priority and agent) and in the live feed, unreloaded
        created = card(b, "Draft", title)
        expect(created).to_be_visible()
        expect(created).to_contain_text("P0")
        expect(created.locator(".avatar")).to_have_text("C")
        expect(created).to_contain_text("Creative")
        expect(b.get_by_test_id("count-Draft")).to_have_text(str(draft_before + 1))
        expect(feed_item(b, title).first).to_contain_text("created as Draft P0")

        # A starts it; the agent works it (fake provider call, ledger row) → Review
        card(a, "Draft", title).get_by_role("button", name="Start").click()
        expect(card(b, "Active", title)).to_be_visible()
        worked = Worker(stack.pool, "browser-test/agent", stack.runner).run_once(stack.acme.id)
        assert worked, "the agent worker found no Active task to work"
        expect(card(b, "Review", title)).to_be_visible()
        expect(feed_item(b, title).first).to_contain_text("Active → Review")

        # a forbidden step is refused with the status machine's words (Review → Active)
        a.reload()
        task_id = card(a, "Review", title).get_attribute("data-task-id")
        csrf = a.locator('input[name="csrf_token"]').first.get_attribute("value")
        answer = a.request.post(f"{stack.url}/tasks/{task_id}/move",
                                form={"csrf_token": csrf, "status": "Active"})
        assert "cannot move from Review to Active" in answer.text()

        # A approves it from Review
        card(a, "Review", title).get_by_role("button", name="Approve").click()
        expect(card(b, "Approved", title)).to_be_visible()
        expect(feed_item(b, title).first).to_contain_text("Review → Approved")
        expect(card(b, "Approved", title).get_by_role("button")).to_have_count(0)
        assert_no_globex(b)
    finally:
        ctx_a.close()
        ctx_b.close()


def test_org_chart_and_cost_tracker_update_after_an_agent_call(browser, ui_stack):
    stack = ui_stack
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        page.goto(f"{stack.url}/org")
        chart = page.get_by_test_id("org-chart")
        # the tree: orchestrator at the root, leads under it, the creative under marketing
        expect(chart.locator(":scope > li > .agent-card")).to_have_attribute(
            "data-agent", "Orchestrator")
        creative_path = page.locator('li:has(> [data-agent="Marketing Lead"]) '
                                     '[data-agent="Creative"]')
        expect(creative_path).to_have_count(1)
        expect(page.locator('[data-agent="CTO"]')).to_contain_text("Lead · engineering")
        expect(page.locator('[data-agent="CTO"]')).to_contain_text("sonnet")
        budget = page.get_by_test_id("budget-CTO")
        before_org = budget.inner_text()

        costs = ctx.new_page()
        costs.goto(f"{stack.url}/costs")
        calls_before = int(costs.get_by_test_id("calls-today").inner_text())
        cost_before = costs.get_by_test_id("cost-today").inner_text()

        # the CTO agent works a task through the fake Anthropic server (real SDK, real ledger)
        with tenant_transaction(stack.pool, stack.acme.id, actor="test") as conn:
            repo.create_task(conn, stack.acme.id, title="Harden the mesh", priority="P0",
                             assignee_id=stack.acme.agents["CTO"], status="Active")
        assert Worker(stack.pool, "browser-test/agent", stack.runner).run_once(stack.acme.id)

        # both pages refresh themselves (every 5 s); bounded wait of 15 s
        expect(budget).not_to_have_text(before_org, timeout=15_000)
        expect(budget).not_to_contain_text("$0.0000 of")
        expect(costs.get_by_test_id("calls-today")).to_have_text(str(calls_before + 1),
                                                                 timeout=15_000)
        expect(costs.get_by_test_id("cost-today")).not_to_have_text(cost_before)
        expect(costs.get_by_test_id("by-model")).to_contain_text("claude-sonnet-4-6")
        expect(costs.get_by_test_id("by-agent")).to_contain_text("CTO")
        expect(costs.get_by_test_id("cache-hit")).to_have_text(re.compile(r"^\d+\.\d%$"))
        assert_no_globex(page)
        assert_no_globex(costs)
    finally:
        ctx.close()


def test_nothing_of_another_tenant_is_visible_or_reachable(browser, ui_stack):
    stack = ui_stack
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        expect(page.get_by_test_id("feed-state")).to_have_text("live")
        # globex works while acme watches: its events must not reach acme's feed
        with tenant_transaction(stack.pool, stack.globex.id, actor="test") as conn:
            secret = repo.create_task(conn, stack.globex.id, title="Globex merger follow-up",
                                      priority="P0")
        marker = f"Acme marker {uuid.uuid4().hex[:6]}"
        with tenant_transaction(stack.pool, stack.acme.id, actor="test") as conn:
            repo.create_task(conn, stack.acme.id, title=marker)
        expect(feed_item(page, marker).first).to_be_visible()  # later than globex's event
        for view in ("board", "org", "costs"):
            page.goto(f"{stack.url}/{view}")
            expect(page.get_by_test_id("tenant-name")).to_have_text("Acme")
            assert_no_globex(page)
        # acting on globex's task from acme's session finds nothing and changes nothing
        page.goto(f"{stack.url}/board")
        csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
        answer = page.request.post(f"{stack.url}/tasks/{secret['id']}/move",
                                   form={"csrf_token": csrf, "status": "Active"})
        assert "task not found in this tenant" in answer.text()
        with tenant_transaction(stack.pool, stack.globex.id) as conn:
            assert repo.get_task(conn, secret["id"])["status"] == "Draft"
        # and globex's operator sees globex only
        ctx_g, globex_page = sign_in(browser, stack, stack.globex.token)
        expect(card(globex_page, "Draft", "Globex merger follow-up")).to_be_visible()
        assert "Acme marker" not in globex_page.inner_text("body")
        ctx_g.close()
    finally:
        ctx.close()


def test_feed_resumes_after_the_server_restarts_without_losing_events(browser, ui_stack):
    stack = ui_stack
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        expect(page.get_by_test_id("feed-state")).to_have_text("live")
        stack.server.stop()
        expect(page.get_by_test_id("feed-state")).to_have_text("reconnecting")
        missed = [f"While away {i} {uuid.uuid4().hex[:4]}" for i in range(3)]
        with tenant_transaction(stack.pool, stack.acme.id, actor="test") as conn:
            for title in missed:
                repo.create_task(conn, stack.acme.id, title=title)
        stack.server.start()
        expect(page.get_by_test_id("feed-state")).to_have_text("live", timeout=15_000)
        for title in missed:
            expect(feed_item(page, title)).to_have_count(1)  # each once: no loss, no repeat
        ids = [int(i) for i in page.locator('[data-testid="feed"] li').evaluate_all(
            "els => els.map(e => e.dataset.eventId)")]
        assert len(ids) == len(set(ids)), "an event was shown twice after the reconnect"
    finally:
        ctx.close()


def test_demo_workspace_views_and_screenshots(browser, ui_stack):
    """The `vos dev` demo data (seed_demo) as a newcomer sees it, at desktop width."""
    stack = ui_stack
    # The demo's counts as the database has them: the agents' delegation adds sub-tasks
    # (tree shapes follow the demo org chart), so the figures are read, not assumed.
    board = load_board(stack.pool, stack.demo.id)
    counts = {column.name: column.count for column in board.columns}
    costs = load_costs(stack.pool, stack.demo.id)
    assert counts["Draft"] == 3 and counts["Approved"] >= 3, counts
    assert counts["Review"] >= 3, "the demo leaves results for the inbox"
    ctx, page = sign_in(browser, stack, stack.demo.token)
    try:
        for column in ("Draft", "Active", "Review", "Approved"):
            expect(page.get_by_test_id(f"count-{column}")).to_have_text(str(counts[column]))
        expect(page.locator('[data-testid="column-Active"] .badge.working')).to_have_count(3)
        expect(page.locator('[data-testid="column-Active"] [data-testid="badge-waiting"]')
               ).not_to_have_count(0)
        expect(page.get_by_test_id("feed-state")).to_have_text("live")
        shot(page, "board-desktop")
        page.goto(f"{stack.url}/org")
        expect(page.get_by_test_id("agent")).to_have_count(4)
        shot(page, "org-desktop")
        page.goto(f"{stack.url}/costs")
        expect(page.get_by_test_id("calls-today")).to_have_text(
            str(costs["today"]["calls"] or 0))
        expect(page.get_by_test_id("by-agent").locator("tbody tr")).to_have_count(
            len(costs["by_agent"]))
        assert (costs["today"]["calls"] or 0) > 3, "the tree's calls are in the ledger"
        shot(page, "costs-desktop")
        page.goto(f"{stack.url}/login")
        shot(page, "login-desktop")
    finally:
        ctx.close()


def test_phone_layout_and_screenshots(browser, ui_stack):
    stack = ui_stack
    ctx, page = sign_in(browser, stack, stack.demo.token, viewport=PHONE, phone=True)
    try:
        draft = page.get_by_test_id("column-Draft").bounding_box()
        active = page.get_by_test_id("column-Active").bounding_box()
        assert abs(draft["x"] - active["x"]) < 2 and active["y"] > draft["y"], \
            "board columns should stack on a phone"
        assert draft["width"] > PHONE["width"] * 0.85
        for view in ("board", "org", "costs"):
            page.goto(f"{stack.url}/{view}")
            overflow = page.evaluate(
                "document.scrollingElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{view} scrolls sideways on a phone by {overflow}px"
            shot(page, f"{view}-phone")
    finally:
        ctx.close()
