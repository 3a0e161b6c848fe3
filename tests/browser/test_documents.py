"""The Documents page in headless Chromium: upload a file, see it listed, re-upload it
unchanged, remove it; a binary file gets the board's error banner and nothing is added."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from app.agents.retrieval import retrieve
from app.db import tenant_transaction
from tests.browser.conftest import sign_in


def row(page, source: str):
    return page.locator(f'[data-testid="document"][data-source="{source}"]')


def test_upload_list_and_remove_a_document(browser, ui_stack, tmp_path):
    stack = ui_stack
    name = f"runbook-{uuid.uuid4().hex[:6]}.md"
    path = tmp_path / name
    path.write_text("# Kestrel runbook\n\nThe kestrel gateway listens on port 7443; its "
                    "owner is Ines.\n")
    binary = tmp_path / "logo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    ctx, page = sign_in(browser, stack, stack.acme.token)
    try:
        page.get_by_role("link", name="Documents").click()
        page.wait_for_url(f"{stack.url}/documents")

        page.set_input_files('[data-testid="upload-file"]', str(path))
        page.click('[data-testid="upload"]')
        expect(page.get_by_test_id("notice")).to_contain_text(f"{name} added")
        listed = row(page, name)
        expect(listed).to_be_visible()
        expect(listed).to_contain_text("Kestrel runbook")
        expect(listed.get_by_test_id("passages")).to_have_text("1")
        document_id = listed.get_attribute("data-document-id")
        with tenant_transaction(stack.pool, stack.acme.id) as conn:
            found = retrieve(conn, "which port does the kestrel gateway listen on?", 400)
        assert found and found[0].document_id == uuid.UUID(document_id)

        # the same file again: unchanged, same document
        page.set_input_files('[data-testid="upload-file"]', str(path))
        page.click('[data-testid="upload"]')
        expect(page.get_by_test_id("notice")).to_contain_text(f"{name} unchanged")
        expect(row(page, name)).to_have_attribute("data-document-id", document_id)

        # a binary file: error banner, nothing added
        count = page.get_by_test_id("document").count()
        page.set_input_files('[data-testid="upload-file"]', str(binary))
        page.click('[data-testid="upload"]')
        expect(page.get_by_test_id("error")).to_contain_text("logo.txt: binary file")
        expect(page.get_by_test_id("document")).to_have_count(count)

        # another tenant's page does not list it
        ctx_g, globex = sign_in(browser, stack, stack.globex.token)
        try:
            globex.goto(f"{stack.url}/documents")
            expect(globex.get_by_test_id("upload-form")).to_be_visible()
            expect(row(globex, name)).to_have_count(0)
        finally:
            ctx_g.close()

        row(page, name).get_by_test_id("remove").click()
        expect(page.get_by_test_id("notice")).to_contain_text(f"{name} removed")
        expect(row(page, name)).to_have_count(0)
    finally:
        ctx.close()
