"""Sign-in, sign-out and revocation in a real browser (issue #14): no sign-in from a link,
sign-out ends the session, and an open board is sent to the sign-in form within seconds of
its token being revoked (the live feed's `session_ended`)."""

from __future__ import annotations

import re

import psycopg
from playwright.sync_api import expect

from app.ui import auth
from app.ui.routes import ERROR_CODES, NOTICE_CODES
from tests.browser.conftest import sign_in


def fresh_token(owner_dsn: str, tenant_id, name: str) -> str:
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        return auth.create_operator(conn, tenant_id, name)


def test_a_link_carrying_the_token_does_not_sign_in(browser, ui_stack):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{ui_stack.url}/login#{ui_stack.acme.token}")
        page.wait_for_load_state("load")
        page.wait_for_timeout(1500)  # what an auto-submit would have needed, and more
        assert page.url.split("#", 1)[0] == f"{ui_stack.url}/login"
        assert page.input_value("#token") == ""
        assert not [c for c in context.cookies() if c["name"] == "vos_session"]
        page.goto(f"{ui_stack.url}/board")
        expect(page).to_have_url(f"{ui_stack.url}/login")
    finally:
        context.close()


def test_sign_out_ends_the_session_for_every_copy(browser, ui_stack):
    context, page = sign_in(browser, ui_stack, ui_stack.acme.token)
    try:
        (session,) = [c for c in context.cookies() if c["name"] == "vos_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_test_id("notice")).to_have_text(NOTICE_CODES["signed_out"])
        # a copy of the cookie taken before sign-out, in another browser, is dead
        thief = browser.new_context()
        try:
            thief.add_cookies([session])
            other = thief.new_page()
            other.goto(f"{ui_stack.url}/board")
            expect(other).to_have_url(re.compile(r"/ui/login\?error=session_ended$"))
            expect(other.get_by_test_id("error")).to_have_text(ERROR_CODES["session_ended"])
        finally:
            thief.close()
    finally:
        context.close()


def test_revoking_the_token_sends_an_open_board_to_sign_in(browser, ui_stack, migrated_db):
    token = fresh_token(migrated_db.owner_dsn, ui_stack.acme.id, "revoked-in-browser")
    context, page = sign_in(browser, ui_stack, token)
    try:
        expect(page.get_by_test_id("feed-state")).to_have_text("live")
        with psycopg.connect(migrated_db.owner_dsn, autocommit=True) as conn:
            conn.execute("UPDATE operator_tokens SET revoked_at = now() "
                         "WHERE token_sha256 = %s", [auth.token_digest(token)])
        # the stream re-checks every 3 s, then the page reloads onto the sign-in form
        expect(page).to_have_url(re.compile(r"/ui/login\?error=session_ended$"),
                                 timeout=15_000)
    finally:
        context.close()
