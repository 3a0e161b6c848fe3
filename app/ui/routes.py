"""The Command Center's HTTP routes, mounted at /ui in the private API process (mesh only).

Pages (server-rendered Jinja2; each has a `/fragment` twin that the page's script re-fetches):
    GET  /ui/board      duty board + live feed      GET /ui/board/fragment
    GET  /ui/org        org chart                    GET /ui/org/fragment
    GET  /ui/costs      cost tracker                 GET /ui/costs/fragment
    GET  /ui/tasks/{id} one task: reply, passages used, attempts, events, review
    GET  /ui/inbox      approvals inbox: tool calls to approve, results to review, paused
                        tasks and agents (oldest first)      GET /ui/inbox/fragment
    GET  /ui/documents  documents retrieval searches (upload: multipart, see upload_fields)
    GET  /ui/feed/stream  Server-Sent Events (Last-Event-ID or ?after= resumes)
Forms (CSRF value required with the session cookie; not with a Bearer token):
    POST /ui/tasks, /ui/tasks/{id}/assign, /ui/tasks/{id}/move, /ui/logout
    POST /ui/tasks/{id}/review (decision=approve|reject, comment), /ui/tasks/{id}/retry
    POST /ui/tasks/{id}/cancel (confirm=yes, reason), /ui/tasks/{id}/resume
    POST /ui/approvals/{id} (decision=approve|deny, comment), /ui/agents/{id}/resume
    POST /ui/documents (multipart upload), /ui/documents/{id}/remove
The orchestration forms (and review) take `back` (inbox | board | org | task:<id>) to say
where the answer lands; any other value lands on their default page (never a free URL).
Every full page shows the Inbox count in the navigation (one small read per page).
Sign-in: GET/POST /ui/login, POST /ui/logout (app/ui/auth.py).

Credentials: every route except GET/POST /ui/login and /ui/static needs either a browser
session (the `vos_session` cookie: a random id, stored hashed, that POST /ui/login starts
after the operator pastes their token and presses the button on our page) or an
`Authorization: Bearer vost_…` token. Pages redirect to the sign-in form without one; the
feed and fragments answer 401. Failed sign-ins are limited per source address (5 a minute,
then 429 with Retry-After) and logged as `{"event": "login_failed", "src": …}` lines for the
`vos-login` fail2ban jail.

Banners: errors a person can fix (a forbidden status step, an empty title, an unknown agent)
come back as a banner after the redirect; nothing is written. The text travels in a
short-lived, HMAC-signed, HttpOnly cookie (`vos_flash`), never in the URL: `?error=` and
`?notice=` only take fixed codes (ERROR_CODES / NOTICE_CODES); unknown codes show nothing.

Example:
    app = create_api_app(pool)      # calls mount_ui(app, pool)
    # browse http://100.64.0.1:8080/ui/
"""


import base64
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path, PurePath
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from app import jsonlog
from app.agents import documents as docs
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import InvalidTransition, Priority, Status
from app.ui import auth, feed, views

log = logging.getLogger("vos.ui")
HERE = Path(__file__).parent
SESSION_COOKIE = "vos_session"
LOGIN_CSRF_COOKIE = "vos_login_csrf"
FLASH_COOKIE = "vos_flash"
PREFIX = "/ui"
MAX_FORM_BYTES = 64 * 1024

SECURITY_HEADERS = {
    # no inline script or style anywhere: everything comes from /ui/static
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# The only banner texts a URL can ask for: `?error=<code>` / `?notice=<code>`.
ERROR_CODES = {
    "bad_token": "That token is not valid (mistyped, revoked, or of another database). Ask "
                 "the owner for a new one: vos operator create.",
    "session_ended": "Your session has ended (signed out, expired, or the token was revoked). "
                     "Sign in again.",
}
NOTICE_CODES = {
    "signed_out": "Signed out. This session no longer works, on this browser or any other.",
}


class NeedLogin(Exception):
    """No valid session: pages redirect to the sign-in form, fragments answer 401."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token, or from another origin."""


class TaskForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=100000)
    priority: Priority = Priority.P1
    assignee_id: uuid.UUID | None = None
    status: Status = Status.DRAFT


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form body as a dict of first values (our forms post nothing else)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


def same_origin(request: Request) -> bool:
    """True unless the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Flash:
    """One banner text carried across a redirect in a signed cookie (never in the URL).

    Signed with a per-process key, so only this process's answers can set a banner; a
    restart drops an unread one.

    Example:
        >>> flash = Flash(b"k" * 32)
        >>> flash.read(flash.value("notice", "“t” created"))
        ('notice', '“t” created')
        >>> flash.read("forged.value") is None
        True
    """

    def __init__(self, key: bytes | None = None):
        self.key = key or secrets.token_bytes(32)

    def _mac(self, raw: bytes) -> str:
        return hmac.new(self.key, raw, hashlib.sha256).hexdigest()[:32]

    def value(self, kind: str, text: str) -> str:
        raw = json.dumps([kind, text[:300]]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + self._mac(raw)

    def read(self, value: str | None) -> tuple[str, str] | None:
        body, _, mac = (value or "").partition(".")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if not mac or not hmac.compare_digest(self._mac(raw), mac):
            return None
        kind, text = json.loads(raw)
        return (kind, text) if kind in ("error", "notice") else None


def mount_ui(app: FastAPI, pool: ConnectionPool, *, stream_recheck_seconds: float = 3.0,
             login_limiter: auth.LoginLimiter | None = None) -> None:
    """Add the Command Center to the private API app.

    `stream_recheck_seconds`: how often an open live feed re-checks its session (it closes
    that soon after sign-out or revocation). `login_limiter`: failed sign-ins per source
    (default 5 a minute).

    Example:
        mount_ui(app, pool)     # /ui/… routes, /ui/static, the LISTEN hub (lazy)
    """
    limiter = login_limiter or auth.LoginLimiter()
    app.state.ui_login_limiter = limiter
    flash = Flash()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(prefix=PREFIX, initials=views.initials)
    templates.env.trim_blocks = templates.env.lstrip_blocks = True  # leaner HTML, big boards
    hub = feed.NotifyHub(pool.conninfo)
    app.state.ui_hub = hub
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def operator_from(request: Request,
                      authorization: Annotated[str | None, Header()] = None) -> auth.Operator:
        """Bearer token (API clients, tests) or the browser's session; never anything else."""
        bearer = _bearer(authorization)
        if bearer is not None:
            operator = auth.authenticate(pool, bearer)
        else:
            operator = auth.session_operator(pool, request.cookies.get(SESSION_COOKIE))
        if operator is None:
            raise NeedLogin()
        request.state.via_bearer = not operator.via_session
        return operator

    Op = Annotated[auth.Operator, Depends(operator_from)]

    async def checked_form(request: Request, operator: auth.Operator) -> dict[str, str]:
        form = await read_form(request)
        if request.state.via_bearer:
            return form
        if not same_origin(request) or not auth.csrf_matches(operator.secret,
                                                             form.get("csrf_token")):
            raise CsrfRefused()
        return form

    def page(request: Request, name: str, operator: auth.Operator | None, **context):
        # banners: a fixed text per known code from the URL, or the signed flash cookie;
        # no text from the URL is ever rendered
        banner = {"error": ERROR_CODES.get(request.query_params.get("error", ""), ""),
                  "notice": NOTICE_CODES.get(request.query_params.get("notice", ""), "")}
        full_page = not name.startswith("_")  # fragments never consume the banner
        flashed = flash.read(request.cookies.get(FLASH_COOKIE)) if full_page else None
        if flashed:
            banner[flashed[0]] = flashed[1]
        context.update(operator=operator,
                       csrf=auth.csrf_for(operator.secret)
                       if operator and operator.via_session else "", **banner)
        if operator is not None and "inbox_count" not in context and (
                full_page or name == "_board.html"):
            # the board's fragment carries it too: the page's script updates the badge live
            context["inbox_count"] = views.inbox_count(pool, operator.tenant_id)
        response = templates.TemplateResponse(request, name, context)
        response.headers.update(SECURITY_HEADERS)
        if full_page and FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=PREFIX)
        return response

    def redirect(path: str, error: str = "", notice: str = "") -> RedirectResponse:
        """303 to `path`, with the banner text in the signed flash cookie."""
        response = RedirectResponse(f"{PREFIX}{path}", 303)
        if error or notice:
            response.set_cookie(FLASH_COOKIE, flash.value("error" if error else "notice",
                                                          error or notice),
                                httponly=True, samesite="strict", path=PREFIX, max_age=300)
        return response

    def back_to_board(error: str = "", notice: str = "") -> RedirectResponse:
        return redirect("/board", error, notice)

    # -- sign-in -----------------------------------------------------------------------------

    @router.get("/")
    def home(_operator: Op) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/board", 303)

    @router.get("/login")
    def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = page(request, "login.html", None, login_csrf=nonce)
        response.set_cookie(LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict",
                            path=PREFIX, secure=request.url.scheme == "https")
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        src = _source(request)
        wait = limiter.retry_after(src)
        if wait:
            jsonlog.emit(log, "login_failed", level=logging.WARNING, src=src,
                         reason="rate_limited", status=429)
            return HTMLResponse(f"Too many failed sign-ins from your address: try again in "
                                f"{wait} seconds.", 429,
                                headers={**SECURITY_HEADERS, "Retry-After": str(wait)})
        form = await read_form(request)
        # the nonce cookie is SameSite=Strict and set by our own form: a POST from another
        # site (login CSRF) arrives without it and is refused before the token is looked at
        nonce = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not same_origin(request) or not nonce or not secrets.compare_digest(
                nonce, form.get("csrf_token", "")):
            raise CsrfRefused()
        token = form.get("token", "").strip()
        operator = await run_in_threadpool(auth.authenticate, pool, token)
        if operator is None:
            limiter.fail(src)
            jsonlog.emit(log, "login_failed", level=logging.WARNING, src=src,
                         reason="bad_token", status=303)
            return RedirectResponse(f"{PREFIX}/login?error=bad_token", 303)
        session_id = await run_in_threadpool(auth.start_session, pool, operator)
        await run_in_threadpool(auth.record_login, pool, operator)
        jsonlog.emit(log, "ui_login", src=src, tenant=str(operator.tenant_id),
                     operator=operator.name)
        response = RedirectResponse(f"{PREFIX}/board", 303)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict",
                            path=PREFIX, secure=request.url.scheme == "https",
                            max_age=auth.SESSION_MAX_SECONDS)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
        return response

    @router.post("/logout")
    async def logout(request: Request, operator: Op) -> Response:
        await checked_form(request, operator)
        if operator.via_session:  # ended server-side: a captured copy of the cookie is dead
            await run_in_threadpool(auth.end_session, pool, operator.secret)
            jsonlog.emit(log, "ui_logout", tenant=str(operator.tenant_id),
                         operator=operator.name)
        response = RedirectResponse(f"{PREFIX}/login?notice=signed_out", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    # -- duty board and live feed ------------------------------------------------------------

    @router.get("/board")
    def board_page(request: Request, operator: Op) -> Response:
        board = views.load_board(pool, operator.tenant_id)
        events = [feed.event_json(e, e["title"])
                  for e in feed.recent_events(pool, operator.tenant_id)]
        last_id = events[-1]["id"] if events else 0
        return page(request, "board.html", operator, board=board, events=events,
                    last_event_id=last_id, view="board")

    @router.get("/board/fragment")
    def board_fragment(request: Request, operator: Op) -> Response:
        board = views.load_board(pool, operator.tenant_id)
        return page(request, "_board.html", operator, board=board)

    @router.get("/feed/stream")
    async def feed_stream(request: Request, operator: Op, after: int = 0,
                          last_event_id: Annotated[str | None, Header()] = None
                          ) -> StreamingResponse:
        resume = after
        if last_event_id and last_event_id.isdigit():
            resume = int(last_event_id)  # the browser's reconnect: exactly what it missed
        secret = operator.secret
        if operator.via_session:
            def still_signed_in() -> bool:
                return auth.session_operator(pool, secret) is not None
        else:
            def still_signed_in() -> bool:
                return auth.authenticate(pool, secret) is not None
        stream = feed.event_stream(pool, hub, operator.tenant_id, max(resume, 0),
                                   request.is_disconnected, still_signed_in=still_signed_in,
                                   recheck_seconds=stream_recheck_seconds)
        return StreamingResponse(stream, media_type="text/event-stream", headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.post("/tasks")
    async def create_task(request: Request, operator: Op) -> Response:
        form = await checked_form(request, operator)
        form = {k: v for k, v in form.items() if v != ""}
        try:
            task = TaskForm.model_validate(form)
        except ValidationError as exc:
            first = exc.errors()[0]
            return back_to_board(f"Task not created: {first['loc'][0]}: {first['msg']}")
        return await _change(operator, "created", lambda conn: repo.create_task(
            conn, operator.tenant_id, **task.model_dump()))

    @router.post("/tasks/{task_id}/assign")
    async def assign_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        raw = form.get("assignee_id", "")
        try:
            assignee = uuid.UUID(raw) if raw else None
        except ValueError:
            return back_to_board("Not assigned: pick an agent from the list")
        return await _change(operator, "assigned",
                             lambda conn: repo.assign_task(conn, task_id, assignee))

    @router.post("/tasks/{task_id}/move")
    async def move_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        try:
            target = Status(form.get("status", ""))
        except ValueError:
            return back_to_board(f"Not moved: unknown status {form.get('status', '')[:40]!r}")
        return await _change(operator, f"moved to {target}",
                             lambda conn: repo.move_task(conn, task_id, target))

    async def _change(operator: auth.Operator, what: str, change) -> Response:
        """Run one dispatch-engine change in a tenant transaction; explain refusals."""
        def run():
            with tenant_transaction(pool, operator.tenant_id,
                                    actor=f"ui:{operator.name}") as conn:
                return change(conn)
        try:
            task = await run_in_threadpool(run)
        except (InvalidTransition, repo.NotFound, repo.BadReference, ValueError) as exc:
            return back_to_board(f"Not applied: {exc}")
        except psycopg.IntegrityError as exc:
            return back_to_board(f"Not applied: {exc.diag.message_primary}")
        except psycopg.DataError as exc:
            return back_to_board(f"Not applied: {str(exc).splitlines()[0]}")
        return back_to_board(notice=f"“{task['title'][:80]}” {what}")

    # -- one task: what the agent answered, from what, at what cost -------------------------

    def back_to_task(task_id: uuid.UUID, error: str = "", notice: str = "") -> RedirectResponse:
        return redirect(f"/tasks/{task_id}", error, notice)

    @router.get("/tasks/{task_id}")
    def task_page(request: Request, task_id: str, operator: Op) -> Response:
        try:
            detail = views.load_task_detail(pool, operator.tenant_id, uuid.UUID(task_id))
        except (ValueError, repo.NotFound):  # a bad id and another tenant's id look the same
            response = page(request, "error.html", operator, title="No such task",
                            message="This task does not exist in your workspace.")
            response.status_code = 404
            return response
        return page(request, "task.html", operator, task=detail, view="board")

    @router.post("/tasks/{task_id}/review")
    async def review_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        back = back_path(form, f"/tasks/{task_id}")
        decision = form.get("decision", "")
        if decision not in ("approve", "reject"):
            return redirect(back, "Not reviewed: decision must be approve or reject")

        def said(task: dict) -> str:
            if decision == "approve":
                return f"“{task['title'][:80]}” approved"
            # a rejection sends the task back to work at once, the comment in its prompt
            return f"“{task['title'][:80]}” rejected: {task['status']} again, with your comment"
        return await _apply(operator, back, said, lambda conn: repo.review_task(
            conn, task_id, decision == "approve", form.get("comment", "")))

    @router.post("/tasks/{task_id}/retry")
    async def retry_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        await checked_form(request, operator)
        return await _task_change(operator, task_id, "queued again",
                                  lambda conn: repo.retry_task(conn, task_id))

    async def _task_change(operator: auth.Operator, task_id: uuid.UUID, what: str,
                           change) -> Response:
        """Like `_change`, but the answer (notice or refusal) lands on the task's page."""
        return await _apply(operator, f"/tasks/{task_id}", f"Task {what}", change)

    async def _apply(operator: auth.Operator, back: str, what, change) -> Response:
        """Run one change in a tenant transaction as this operator, then 303 to `back` with
        a notice (`what`: text, or a function of the change's result) or the refusal's own
        words (the engine's exception text; the template escapes it). A refused change
        rolls back whole, so nothing of it is written."""
        def run():
            with tenant_transaction(pool, operator.tenant_id,
                                    actor=f"ui:{operator.name}") as conn:
                return change(conn)
        try:
            result = await run_in_threadpool(run)
        except (InvalidTransition, repo.NotFound, repo.BadReference, ValueError) as exc:
            return redirect(back, f"Not applied: {exc}")
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            return redirect(back, f"Not applied: {str(exc).splitlines()[0]}")
        return redirect(back, notice=what(result) if callable(what) else what)

    # -- orchestration: cancel with the sub-tasks, resume, tool-call approvals, the inbox ----

    @router.post("/tasks/{task_id}/cancel")
    async def cancel_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        back = back_path(form, f"/tasks/{task_id}")
        # the confirm step without script: the form's checkbox (required) must come along
        if form.get("confirm") != "yes":
            return redirect(back, "Not cancelled: tick “yes, cancel” to confirm (open "
                                  "sub-tasks are cancelled too)")
        reason = form.get("reason", "").strip()[:500]
        return await _apply(operator, back, lambda task: f"“{task['title'][:80]}” cancelled",
                            lambda conn: repo.cancel_task(conn, task_id, reason))

    @router.post("/tasks/{task_id}/resume")
    async def resume_task(request: Request, task_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        return await _apply(operator, back_path(form, f"/tasks/{task_id}"),
                            lambda task: f"“{task['title'][:80]}” resumed",
                            lambda conn: repo.resume_task(conn, task_id))

    @router.post("/approvals/{approval_id}")
    async def decide_approval(request: Request, approval_id: uuid.UUID,
                              operator: Op) -> Response:
        form = await checked_form(request, operator)
        back = back_path(form, "/inbox")
        decision = form.get("decision", "")
        if decision not in ("approve", "deny"):
            return redirect(back, "Not decided: decision must be approve or deny")
        comment = form.get("comment", "").strip()
        return await _apply(
            operator, back, f"Tool call {'approved' if decision == 'approve' else 'denied'}",
            lambda conn: repo.decide_approval(conn, approval_id, decision == "approve",
                                              comment))

    @router.post("/agents/{agent_id}/resume")
    async def resume_agent(request: Request, agent_id: uuid.UUID, operator: Op) -> Response:
        form = await checked_form(request, operator)
        return await _apply(operator, back_path(form, "/org"),
                            lambda agent: f"{(agent or {}).get('name') or 'Agent'} resumed",
                            lambda conn: repo.resume_agent(conn, agent_id))

    @router.get("/inbox")
    def inbox_page(request: Request, operator: Op) -> Response:
        inbox = views.load_inbox(pool, operator.tenant_id)
        return page(request, "inbox.html", operator, inbox=inbox, inbox_count=inbox["count"],
                    view="inbox")

    @router.get("/inbox/fragment")
    def inbox_fragment(request: Request, operator: Op) -> Response:
        inbox = views.load_inbox(pool, operator.tenant_id)
        return page(request, "_inbox.html", operator, inbox=inbox, inbox_count=inbox["count"])

    # -- org chart and cost tracker ----------------------------------------------------------

    @router.get("/org")
    def org_page(request: Request, operator: Op) -> Response:
        return page(request, "org.html", operator,
                    roots=views.load_org_chart(pool, operator.tenant_id), view="org")

    @router.get("/org/fragment")
    def org_fragment(request: Request, operator: Op) -> Response:
        return page(request, "_org.html", operator,
                    roots=views.load_org_chart(pool, operator.tenant_id))

    @router.get("/costs")
    def costs_page(request: Request, operator: Op) -> Response:
        return page(request, "costs.html", operator,
                    costs=views.load_costs(pool, operator.tenant_id), view="costs")

    @router.get("/costs/fragment")
    def costs_fragment(request: Request, operator: Op) -> Response:
        return page(request, "_costs.html", operator,
                    costs=views.load_costs(pool, operator.tenant_id))

    # -- documents (app/agents/documents.py: the same rules as `vos docs add`) ----------------

    def back_to_documents(error: str = "", notice: str = "") -> RedirectResponse:
        return redirect("/documents", error, notice)

    @router.get("/documents")
    def documents_page(request: Request, operator: Op) -> Response:
        with tenant_transaction(pool, operator.tenant_id, actor=f"ui:{operator.name}") as conn:
            rows = docs.list_documents(conn)
        return page(request, "documents.html", operator, documents=rows, view="documents",
                    max_bytes=docs.MAX_DOCUMENT_BYTES, human_size=docs.human_size)

    @router.post("/documents")
    async def upload_documents(request: Request, operator: Op) -> Response:
        fields, files = await upload_fields(request)
        if fields.get("_too_large"):  # refused unread, so before the CSRF check: no write
            return back_to_documents(f"Nothing added: the upload is over {MAX_UPLOAD_BYTES} "
                                     f"bytes (each file at most {docs.MAX_DOCUMENT_BYTES})")
        if not request.state.via_bearer and (not same_origin(request) or not auth.csrf_matches(
                operator.secret, fields.get("csrf_token"))):
            raise CsrfRefused()
        if not files:
            return back_to_documents("Nothing added: choose a file first")
        try:  # every file is checked before anything is written
            prepared = [docs.prepare(_supported(name), data) for name, data in files]
        except docs.DocumentError as exc:
            return back_to_documents(f"Nothing added: {exc}")

        def write():
            with tenant_transaction(pool, operator.tenant_id,
                                    actor=f"ui:{operator.name}") as conn:
                return [docs.ingest(conn, operator.tenant_id, d) for d in prepared]
        try:
            results = await run_in_threadpool(write)
        except psycopg.Error as exc:
            return back_to_documents(f"Nothing added: {str(exc).splitlines()[0]}")
        return back_to_documents(notice="; ".join(
            f"{d.source} {r.action} ({r.passages} passages)"
            for d, r in zip(prepared, results, strict=True)))

    @router.post("/documents/{document_id}/remove")
    async def remove_document(request: Request, document_id: uuid.UUID,
                              operator: Op) -> Response:
        await checked_form(request, operator)

        def run():
            with tenant_transaction(pool, operator.tenant_id,
                                    actor=f"ui:{operator.name}") as conn:
                return docs.remove_document(conn, str(document_id))
        row = await run_in_threadpool(run)
        if row is None:
            return back_to_documents("Not removed: no such document (already removed?)")
        return back_to_documents(notice=f"{row['source'] or row['title']} removed")

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    _install_ui_errors(app, templates)


MAX_UPLOAD_BYTES = 4 * docs.MAX_DOCUMENT_BYTES + 64 * 1024  # a few files of the largest size


def back_path(form: dict[str, str], default: str) -> str:
    """Where a form's answer lands: one of a few fixed pages or a task's page, never a URL
    from the form (no open redirect).

    Example:
        >>> back_path({"back": "inbox"}, "/org"), back_path({"back": "//evil"}, "/org")
        ('/inbox', '/org')
        >>> back_path({"back": "task:00000000-0000-0000-0000-000000000001"}, "/org")
        '/tasks/00000000-0000-0000-0000-000000000001'
    """
    target = form.get("back", "")
    if target in ("inbox", "board", "org"):
        return f"/{target}"
    if target.startswith("task:"):
        try:
            return f"/tasks/{uuid.UUID(target[5:])}"
        except ValueError:
            pass
    return default


def _supported(name: str) -> str:
    """The file name, or the clear error for a file type documents do not take."""
    if docs.content_type_for(name) is None:
        raise docs.DocumentError([(name, "unsupported type (use .md, .markdown, .txt, .html, "
                                         ".htm or no extension)")])
    return name


async def upload_fields(request: Request) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart/form-data body, read up to MAX_UPLOAD_BYTES, as (text fields, files).

    Parsed with the stdlib email parser (no extra dependency); a file is (base name, bytes).
    Over the cap: ({"_too_large": "1"}, []) without reading the rest (the caller answers
    with a banner and writes nothing).

    Example:
        fields, files = await upload_fields(request)   # ({'csrf_token': '…'}, [('a.md', b'…')])
    """
    declared = request.headers.get("content-length", "")
    body = b""
    too_large = declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES
    if not too_large:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                too_large = True
                break
            chunks.append(chunk)
        body = b"".join(chunks)
    content_type = request.headers.get("content-type", "")
    if too_large or not content_type.lower().startswith("multipart/form-data"):
        return ({"_too_large": "1"} if too_large else {}), []
    message = BytesParser(policy=email_policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            # browsers send UTF-8 names raw; the parser keeps their bytes as surrogates
            filename = filename.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if filename or data:
                files.append((PurePath(filename.replace("\\", "/")).name or "upload", data))
        elif name:
            fields.setdefault(name, data.decode("utf-8", "replace"))
    return fields, files


def _install_ui_errors(app: FastAPI, templates: Jinja2Templates) -> None:
    @app.exception_handler(NeedLogin)
    def need_login(request: Request, _exc: NeedLogin) -> Response:
        had_session = SESSION_COOKIE in request.cookies
        if request.method == "GET" and "fragment" not in request.url.path \
                and not request.url.path.endswith("/stream"):
            response: Response = RedirectResponse(
                f"{PREFIX}/login" + ("?error=session_ended" if had_session else ""), 303)
        else:
            response = HTMLResponse("Sign in again: your session is missing or no longer "
                                    "valid.", 401, headers=SECURITY_HEADERS)
        if had_session:  # a dead session id is of no use to keep
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @app.exception_handler(CsrfRefused)
    def csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        jsonlog.emit(log, "ui_csrf_refused", level=logging.WARNING, path=request.url.path)
        response = templates.TemplateResponse(request, "error.html", {
            "title": "Form refused",
            "message": "This form was stale or was sent from another site, so nothing was "
                       "changed. Reload the page and try again.",
            "operator": None}, status_code=403)
        response.headers.update(SECURITY_HEADERS)
        return response
