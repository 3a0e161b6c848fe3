"""The Command Center's HTTP routes, mounted at /ui in the private API process (mesh only).

Pages (server-rendered Jinja2; each has a `/fragment` twin that the page's script re-fetches):
    GET  /ui/board      duty board + live feed      GET /ui/board/fragment
    GET  /ui/org        org chart                    GET /ui/org/fragment
    GET  /ui/costs      cost tracker                 GET /ui/costs/fragment
    GET  /ui/feed/stream  Server-Sent Events (Last-Event-ID or ?after= resumes)
Forms (CSRF token required with the session cookie; not with a Bearer token):
    POST /ui/tasks, /ui/tasks/{id}/assign, /ui/tasks/{id}/move, /ui/logout
Sign-in: GET/POST /ui/login (operator token, see app/ui/auth.py).

Errors a person can fix (a forbidden status step, an empty title, an unknown agent) come back
as a banner on the board; nothing is written.

Example:
    app = create_api_app(pool)      # calls mount_ui(app, pool)
    # browse http://100.64.0.1:8080/ui/
"""


import logging
import secrets
import uuid
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from app import jsonlog
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import InvalidTransition, Priority, Status
from app.ui import auth, feed, views

log = logging.getLogger("vos.ui")
HERE = Path(__file__).parent
SESSION_COOKIE = "vos_session"
LOGIN_CSRF_COOKIE = "vos_login_csrf"
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


def mount_ui(app: FastAPI, pool: ConnectionPool) -> None:
    """Add the Command Center to the private API app.

    Example:
        mount_ui(app, pool)     # /ui/… routes, /ui/static, the LISTEN hub (lazy)
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(prefix=PREFIX, initials=views.initials)
    templates.env.trim_blocks = templates.env.lstrip_blocks = True  # leaner HTML, big boards
    hub = feed.NotifyHub(pool.conninfo)
    app.state.ui_hub = hub
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def operator_from(request: Request,
                      authorization: Annotated[str | None, Header()] = None) -> auth.Operator:
        bearer = _bearer(authorization)
        operator = auth.authenticate(pool, bearer or request.cookies.get(SESSION_COOKIE))
        if operator is None:
            raise NeedLogin()
        request.state.via_bearer = bearer is not None
        return operator

    Op = Annotated[auth.Operator, Depends(operator_from)]

    async def checked_form(request: Request, operator: auth.Operator) -> dict[str, str]:
        form = await read_form(request)
        if request.state.via_bearer:
            return form
        if not same_origin(request) or not auth.csrf_matches(operator.token,
                                                             form.get("csrf_token")):
            raise CsrfRefused()
        return form

    def page(request: Request, name: str, operator: auth.Operator | None, **context):
        context.update(operator=operator,
                       csrf=auth.csrf_for(operator.token) if operator else "",
                       error=request.query_params.get("error", "")[:300],
                       notice=request.query_params.get("notice", "")[:300])
        response = templates.TemplateResponse(request, name, context)
        response.headers.update(SECURITY_HEADERS)
        return response

    def back_to_board(error: str = "", notice: str = "") -> RedirectResponse:
        query = urlencode({k: v for k, v in (("error", error), ("notice", notice)) if v})
        return RedirectResponse(f"{PREFIX}/board" + (f"?{query}" if query else ""), 303)

    # -- sign-in -----------------------------------------------------------------------------

    @router.get("/")
    def home() -> RedirectResponse:
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
        form = await read_form(request)
        nonce = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not same_origin(request) or not nonce or not secrets.compare_digest(
                nonce, form.get("csrf_token", "")):
            raise CsrfRefused()
        token = form.get("token", "").strip()
        operator = await run_in_threadpool(auth.authenticate, pool, token)
        if operator is None:
            jsonlog.emit(log, "ui_login_refused", level=logging.WARNING,
                         source=request.client.host if request.client else None)
            return RedirectResponse(f"{PREFIX}/login?" + urlencode(
                {"error": "That token is not valid (mistyped, revoked, or of another "
                          "database). Ask the owner for a new one: vos operator create."}), 303)
        await run_in_threadpool(auth.record_login, pool, operator)
        jsonlog.emit(log, "ui_login", tenant=str(operator.tenant_id), operator=operator.name)
        response = RedirectResponse(f"{PREFIX}/board", 303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                            secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
        return response

    @router.post("/logout")
    async def logout(request: Request, operator: Op) -> Response:
        await checked_form(request, operator)
        response = RedirectResponse(f"{PREFIX}/login", 303)
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
        stream = feed.event_stream(pool, hub, operator.tenant_id, max(resume, 0),
                                   request.is_disconnected)
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

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    _install_ui_errors(app, templates)


def _install_ui_errors(app: FastAPI, templates: Jinja2Templates) -> None:
    @app.exception_handler(NeedLogin)
    def need_login(request: Request, _exc: NeedLogin) -> Response:
        if request.method == "GET" and "fragment" not in request.url.path \
                and not request.url.path.endswith("/stream"):
            return RedirectResponse(f"{PREFIX}/login", 303)
        return HTMLResponse("Sign in again: your session is missing or no longer valid.", 401,
                            headers=SECURITY_HEADERS)

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
