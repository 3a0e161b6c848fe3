"""Documents as code: `vos docs add|list|remove`, the mesh API and retrieval, on a real Postgres.

Idempotence is checked on the rows themselves: re-adding an unchanged file keeps the passage
ids, the document's xmin (no UPDATE) and its updated_at; a changed file keeps the document id
and replaces every passage. Refused input (binary, oversize, unreadable, missing, mixed with
good files) leaves the tenant's tables exactly as they were.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.agents.documents import MAX_DOCUMENT_BYTES, html_to_text, read_paths
from app.agents.retrieval import retrieve
from app.db import tenant_transaction
from app.dispatch.api import create_api_app
from cli import cli

runner = CliRunner()

RUNBOOK = """# Mesh runbook

The WireGuard keys on the mesh rotate every ninety days; the rotation owner is Priya.

Backups are encrypted with the age public key and shipped nightly at 02:30 UTC.
"""
PAGE = """<!doctype html><html><head><title>Door notes</title>
<style>body { color: red }</style><script>alert("tracking pixel loader")</script></head>
<body><h1>The public door</h1><p>The door terminates TLS on port 8443 &amp; forwards
signed callbacks.</p><noscript>enable javascript</noscript>
<h2>Bans</h2><ul><li>fail2ban bans after five bad signatures</li></ul></body></html>
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("docs")


def docs_cli(app_dsn: str, *args: str):
    return runner.invoke(cli, ["docs", *args], env={"DATABASE_URL": app_dsn})


def snapshot(app_pool, tenant_id) -> dict:
    """Everything the documents tables hold for a tenant, with row versions (xmin)."""
    with tenant_transaction(app_pool, tenant_id) as conn:
        documents = conn.execute(
            "SELECT id, source, title, sha256, size_bytes, content_type, updated_at, "
            "xmin::text AS xmin FROM documents ORDER BY source").fetchall()
        passages = conn.execute(
            "SELECT p.id, d.source, p.ordinal, p.body FROM passages p "
            "JOIN documents d ON d.id = p.document_id ORDER BY d.source, p.ordinal").fetchall()
    return {"documents": documents, "passages": passages}


def test_add_unchanged_changed_remove(app_dsn, app_pool, tenant, workdir):
    (workdir / "runbook.md").write_text(RUNBOOK)
    (workdir / "notes").write_text("Extensionless notes: the on-call phone is in the safe.\n")

    first = docs_cli(app_dsn, "add", "./runbook.md", "notes", "--tenant", tenant.slug)
    assert first.exit_code == 0, first.output
    assert "+ added     runbook.md" in first.output and "+ added     notes" in first.output
    added = snapshot(app_pool, tenant.id)
    assert [d["source"] for d in added["documents"]] == ["notes", "runbook.md"]
    runbook = added["documents"][1]
    assert runbook["title"] == "Mesh runbook" and runbook["content_type"] == "markdown"
    assert runbook["size_bytes"] == len(RUNBOOK.encode())
    assert added["passages"], "no passages stored"

    # unchanged: nothing written at all (same passage ids, no new row version)
    again = docs_cli(app_dsn, "add", "runbook.md", "notes", "--tenant", str(tenant.id))
    assert again.exit_code == 0, again.output
    assert "= unchanged runbook.md" in again.output and "0 added, 0 replaced, 2 unchanged" \
        in again.output
    assert snapshot(app_pool, tenant.id) == added

    # changed: same document id, passages replaced in one go, updated_at moves
    (workdir / "runbook.md").write_text(RUNBOOK + "\nThe rotation owner is now Tomas.\n")
    changed = docs_cli(app_dsn, "add", "runbook.md", "--tenant", tenant.slug)
    assert "~ replaced  runbook.md" in changed.output, changed.output
    after = snapshot(app_pool, tenant.id)
    new_runbook = after["documents"][1]
    assert new_runbook["id"] == runbook["id"] and new_runbook["sha256"] != runbook["sha256"]
    assert new_runbook["updated_at"] > runbook["updated_at"]
    old_ids = {p["id"] for p in added["passages"] if p["source"] == "runbook.md"}
    new_rows = [p for p in after["passages"] if p["source"] == "runbook.md"]
    assert not old_ids & {p["id"] for p in new_rows}
    assert "Tomas" in " ".join(p["body"] for p in new_rows)
    assert [p for p in after["passages"] if p["source"] == "notes"] == \
        [p for p in added["passages"] if p["source"] == "notes"]

    listed = docs_cli(app_dsn, "list", "--tenant", tenant.slug)
    assert listed.exit_code == 0, listed.output
    assert "Mesh runbook" in listed.output and str(runbook["id"]) in listed.output

    removed = docs_cli(app_dsn, "remove", "./runbook.md", "--tenant", tenant.slug)
    assert removed.exit_code == 0 and "- removed   runbook.md" in removed.output, removed.output
    by_id = docs_cli(app_dsn, "remove", str(added["documents"][0]["id"]), "--tenant",
                     tenant.slug)
    assert by_id.exit_code == 0, by_id.output
    assert snapshot(app_pool, tenant.id) == {"documents": [], "passages": []}
    missing = docs_cli(app_dsn, "remove", "runbook.md", "--tenant", tenant.slug)
    assert missing.exit_code == 1 and "no document" in missing.output


def test_html_is_text_without_script_or_style(app_dsn, app_pool, tenant, workdir):
    (workdir / "door.html").write_text(PAGE)
    result = docs_cli(app_dsn, "add", "door.html", "--tenant", tenant.slug)
    assert result.exit_code == 0, result.output
    stored = snapshot(app_pool, tenant.id)
    body = "\n\n".join(p["body"] for p in stored["passages"])
    assert "alert" not in body and "color: red" not in body and "enable javascript" not in body
    assert "The public door" in body.splitlines()  # a heading stays a line of its own
    assert "port 8443 & forwards signed callbacks" in body
    assert stored["documents"][0]["title"] == "Door notes"
    assert stored["documents"][0]["content_type"] == "html"


def test_a_directory_recurses_sorted_and_skips_dotfiles(app_dsn, app_pool, tenant, workdir):
    tree = workdir / "kb"
    (tree / "b" / "deep").mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / ".git" / "config").write_text("[core]\n")
    (tree / ".hidden.md").write_text("# Hidden\n\nnot for agents\n")
    (tree / "z.txt").write_text("Zulu passage text.\n")
    (tree / "a.md").write_text("# A\n\nAlpha passage text.\n")
    (tree / "b" / "deep" / "c.htm").write_text("<p>Charlie passage text.</p>")
    (tree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = docs_cli(app_dsn, "add", "kb/", "--tenant", tenant.slug)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("+", "-"))]
    assert lines[0].startswith("- skipped   kb/logo.png: unsupported type")
    assert [line.split()[2] for line in lines[1:]] == ["kb/a.md", "kb/b/deep/c.htm", "kb/z.txt"]
    assert [d["source"] for d in snapshot(app_pool, tenant.id)["documents"]] == \
        ["kb/a.md", "kb/b/deep/c.htm", "kb/z.txt"]


def test_bad_input_refuses_the_whole_run(app_dsn, app_pool, tenant, workdir):
    (workdir / "good.md").write_text(RUNBOOK)
    docs_cli(app_dsn, "add", "good.md", "--tenant", tenant.slug)
    before = snapshot(app_pool, tenant.id)
    (workdir / "good.md").write_text(RUNBOOK + "\nchanged\n")  # would be a replace
    (workdir / "new.txt").write_text("a new document\n")       # would be an add
    (workdir / "nul.txt").write_bytes(b"text\x00with a NUL")
    (workdir / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (workdir / "big.md").write_bytes(b"a " * 600)
    (workdir / "doc.pdf").write_bytes(b"%PDF-1.4")

    result = docs_cli(app_dsn, "add", "good.md", "new.txt", "nul.txt", "latin1.txt", "big.md",
                      "doc.pdf", "gone.md", "--max-bytes", "1000", "--tenant", tenant.slug)
    assert result.exit_code == 2, result.output
    out = result.output
    assert "nul.txt: binary file (NUL bytes)" in out
    assert "latin1.txt: binary file (not UTF-8 at byte 3)" in out
    assert "big.md: 1200 bytes is over the size limit of 1000 bytes" in out
    assert "doc.pdf: unsupported type '.pdf'" in out
    assert "gone.md: no such file or directory" in out
    assert "nothing was written" in out
    assert snapshot(app_pool, tenant.id) == before

    # the default limit is 2 MiB, and one byte over it is refused
    (workdir / "huge.txt").write_bytes(b"x" * (MAX_DOCUMENT_BYTES + 1))
    huge = docs_cli(app_dsn, "add", "huge.txt", "--tenant", tenant.slug)
    assert huge.exit_code == 2 and "over the size limit of 2097152 bytes" in huge.output
    unknown = docs_cli(app_dsn, "add", "good.md", "--tenant", "no-such-tenant")
    assert unknown.exit_code == 1 and "no tenant with slug 'no-such-tenant'" in unknown.output
    assert snapshot(app_pool, tenant.id) == before


def test_an_unreadable_file_is_refused(app_dsn, app_pool, tenant):
    # not pytest's tmp_path: its parent is private to root, and `nobody` must traverse it
    tmp_path = Path(tempfile.mkdtemp(prefix="vos-docs-"))
    base = tmp_path / "shared"
    base.mkdir()
    base.chmod(0o755)
    tmp_path.chmod(0o755)
    (base / "good.md").write_text(RUNBOOK)
    secret = base / "secret.md"
    secret.write_text("# Secret\n\nroot only\n")
    secret.chmod(0o000)
    paths = [str(base / "good.md"), str(secret)]
    if os.geteuid() != 0:
        result = docs_cli(app_dsn, "add", *paths, "--tenant", tenant.slug)
        shutil.rmtree(tmp_path)
        assert result.exit_code == 2 and "secret.md: unreadable" in result.output
        assert snapshot(app_pool, tenant.id) == {"documents": [], "passages": []}
        return
    # root reads everything: read the files as `nobody` in a child process instead
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no database, no threads used; always exits
        code = 0
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                read_paths(paths, cwd=tmp_path)
                answer = {"problems": []}
            except ValueError as exc:
                answer = {"problems": getattr(exc, "problems", [str(exc)])}
            os.write(write_end, json.dumps(answer).encode())
        except BaseException as exc:  # noqa: BLE001 - the parent shows it
            os.write(write_end, json.dumps({"child_error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(tmp_path)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    assert answer["problems"] == [["shared/secret.md", "unreadable (Permission denied)"]]


def bearer(owner_dsn, tenant_id) -> dict:
    """A fresh operator token of the tenant as a Bearer header."""
    import psycopg

    from app.ui import auth

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        return {"Authorization": f"Bearer {auth.create_operator(conn, tenant_id, 'docs')}"}


def test_api_documents(app_pool, owner_dsn, tenant, make_tenant):
    client = TestClient(create_api_app(app_pool), base_url="http://127.0.0.1")
    head = bearer(owner_dsn, tenant.id)
    added = client.post("/documents", headers=head, json={
        "source": "wiki/door", "content_type": "text/html", "text": PAGE})
    assert added.status_code == 201, added.text
    doc = added.json()
    assert doc["action"] == "added" and doc["title"] == "Door notes" and doc["passages"] >= 1
    same = client.post("/documents", headers=head, json={
        "source": "wiki/door", "content_type": "html", "text": PAGE})
    assert same.status_code == 200 and same.json()["action"] == "unchanged"
    assert same.json()["id"] == doc["id"]
    before = snapshot(app_pool, tenant.id)

    refusals = [
        ({"source": "x", "text": "a\x00b"}, 422, "binary file (NUL bytes)"),
        ({"source": "x", "text": "   \n\n "}, 422, "has no text"),
        ({"source": "x", "text": "t", "content_type": "application/pdf"}, 422,
         "content_type 'application/pdf' is not one of"),
        ({"source": "", "text": "t"}, 422, "source"),
        ({"source": "x", "text": "é" * (MAX_DOCUMENT_BYTES // 2 + 1)}, 413,
         "over the size limit"),
        ({"source": "x", "text": "t", "owner": "me"}, 422, "owner"),
        ({"text": "t"}, 422, "source"),
    ]
    for body, status, words in refusals:
        answer = client.post("/documents", headers=head, json=body)
        assert answer.status_code == status, (body.get("source"), answer.text[:300])
        assert words in answer.text, answer.text[:300]
    # no valid token, no write (a tenant header is no credential)
    assert client.post("/documents", headers={"X-VOS-Tenant": str(tenant.id)},
                       json={"source": "x", "text": "t"}).status_code == 401
    assert snapshot(app_pool, tenant.id) == before

    listed = client.get("/documents", headers=head).json()
    assert [(d["source"], d["passages"]) for d in listed] == [("wiki/door", doc["passages"])]

    # another tenant sees none of it and cannot delete it
    other = bearer(owner_dsn, make_tenant("other").id)
    assert client.get("/documents", headers=other).json() == []
    assert client.delete(f"/documents/{doc['id']}", headers=other).status_code == 404
    assert client.delete(f"/documents/{doc['id']}", headers=head).status_code == 204
    assert client.delete(f"/documents/{doc['id']}", headers=head).status_code == 404
    assert client.delete("/documents/not-a-uuid", headers=head).status_code == 422
    assert client.get("/documents", headers=head).json() == []


def test_rls_tenant_b_never_sees_tenant_a(app_dsn, app_pool, make_tenant, workdir):
    a, b = make_tenant("a"), make_tenant("b")
    (workdir / "runbook.md").write_text(RUNBOOK)
    assert docs_cli(app_dsn, "add", "runbook.md", "--tenant", a.slug).exit_code == 0
    listed = docs_cli(app_dsn, "list", "--tenant", b.slug)
    assert listed.exit_code == 0 and "no documents" in listed.output
    gone = docs_cli(app_dsn, "remove", "runbook.md", "--tenant", b.slug)
    assert gone.exit_code == 1
    with tenant_transaction(app_pool, b.id) as conn:
        assert retrieve(conn, "Who owns the WireGuard key rotation?", token_budget=400) == []
        assert conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"] == 0
    # B adding the same source makes B's own document; A's is untouched
    assert docs_cli(app_dsn, "add", "runbook.md", "--tenant", b.slug).exit_code == 0
    assert len(snapshot(app_pool, a.id)["documents"]) == 1
    assert snapshot(app_pool, a.id)["documents"][0]["id"] != \
        snapshot(app_pool, b.id)["documents"][0]["id"]


def test_retrieval_finds_a_passage_of_an_added_document(app_dsn, app_pool, tenant, workdir):
    (workdir / "runbook.md").write_text(RUNBOOK)
    (workdir / "door.html").write_text(PAGE)
    assert docs_cli(app_dsn, "add", "runbook.md", "door.html", "--tenant",
                    tenant.slug).exit_code == 0
    with tenant_transaction(app_pool, tenant.id) as conn:
        picked = retrieve(conn, "Who owns the WireGuard key rotation?", token_budget=400)
        door = retrieve(conn, "after how many bad signatures does fail2ban ban?",
                        token_budget=400)
    assert picked and "rotation owner is Priya" in picked[0].body
    assert picked[0].title == "Mesh runbook"
    assert door and "five bad signatures" in door[0].body and door[0].title == "Door notes"


def test_html_to_text_unit():
    text, title = html_to_text("<h1>Top</h1><script>x=1</script><p>a<br>b</p><h2>Sub</h2>")
    assert title == "Top"
    assert text == "Top\n\na\nb\n\nSub"


def test_a_run_on_line_is_cut_into_storable_passages(app_dsn, app_pool, tenant, workdir):
    (workdir / "wall.txt").write_text(" ".join(f"w{i}" for i in range(60_000)))  # no sentences
    result = docs_cli(app_dsn, "add", "wall.txt", "--tenant", tenant.slug)
    assert result.exit_code == 0, result.output
    bodies = [p["body"] for p in snapshot(app_pool, tenant.id)["passages"]]
    assert len(bodies) > 50 and max(map(len, bodies)) <= 4000
    assert " ".join(bodies).split() == [f"w{i}" for i in range(60_000)]


def test_uuid_tenant_that_does_not_exist_writes_nothing(app_dsn, workdir):
    (workdir / "a.md").write_text(RUNBOOK)
    result = docs_cli(app_dsn, "add", "a.md", "--tenant", str(uuid.uuid4()))
    assert result.exit_code == 1, result.output
    assert "nothing was written" in result.output


def test_ui_upload_needs_csrf_and_caps_the_form(app_pool, owner_dsn, tenant):
    import psycopg

    from app.ui import auth
    from app.ui.routes import MAX_UPLOAD_BYTES

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        token = auth.create_operator(conn, tenant.id, "ada")
    client = TestClient(create_api_app(app_pool, allowed_hosts=["mesh.test"]),
                        base_url="http://mesh.test", follow_redirects=False)
    session = auth.start_session(app_pool, auth.authenticate(app_pool, token))
    client.cookies.set("vos_session", session)

    def banner(answer) -> str:  # the text travels in the flash cookie, not the URL
        assert answer.status_code == 303 and "?" not in answer.headers["location"]
        return client.get(answer.headers["location"]).text
    files = {"file": ("kb.md", b"# KB\n\nThe kestrel port is 7443.\n", "text/markdown")}

    refused = client.post("/ui/documents", data={"csrf_token": "forged"}, files=files)
    assert refused.status_code == 403
    assert snapshot(app_pool, tenant.id) == {"documents": [], "passages": []}

    csrf = auth.csrf_for(session)
    too_big = {"file": ("big.md", b"a " * (MAX_UPLOAD_BYTES // 2 + 10), "text/markdown")}
    capped = client.post("/ui/documents", data={"csrf_token": csrf}, files=too_big)
    assert "the upload is over" in banner(capped)
    unsupported = client.post("/ui/documents", data={"csrf_token": csrf},
                              files={"file": ("x.pdf", b"%PDF", "application/pdf")})
    assert "unsupported type" in banner(unsupported)
    assert snapshot(app_pool, tenant.id) == {"documents": [], "passages": []}

    ok = client.post("/ui/documents", data={"csrf_token": csrf}, files=files)
    assert "kb.md added" in banner(ok)
    page = client.get("/ui/documents")
    assert page.status_code == 200 and "kb.md" in page.text and "KB" in page.text
    doc_id = snapshot(app_pool, tenant.id)["documents"][0]["id"]
    assert client.post(f"/ui/documents/{doc_id}/remove",
                       data={"csrf_token": "forged"}).status_code == 403
    gone = client.post(f"/ui/documents/{doc_id}/remove", data={"csrf_token": csrf})
    assert "kb.md removed" in banner(gone)
    assert snapshot(app_pool, tenant.id) == {"documents": [], "passages": []}
