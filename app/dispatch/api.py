"""The private dispatch API (FastAPI), bound to the mesh address, never to the internet.

Every route except `/healthz` and `/readyz` needs an operator token:
`Authorization: Bearer vost_…` (`vos operator create`; app/ui/auth.py). The tenant comes from
the token, never from a header: the request runs in one `tenant_transaction` for the token's
tenant, so row-level security confines it (another tenant's task is simply "not found"). A
missing, malformed, unknown or revoked token gets 401 at once. The Command Center under /ui
uses the same tokens (a server-side session for browsers).

Only the Host names in `allowed_hosts` are served (a foreign Host gets 400): a browser that a
rebinding DNS name points at the mesh address cannot reach the API. `vos api serve` allows the
bind address (unless 0.0.0.0), 127.0.0.1, localhost and `VOS_API_ALLOWED_HOSTS`.

OpenAPI: `/docs` and `/redoc` are off (Swagger UI would load script from a CDN);
`GET /openapi.json` answers with a valid Bearer token only.

Routes:
    GET  /healthz                     process up (no I/O; no credential)
    GET  /readyz                      a Postgres round trip as the confined app role, else 503
                                      (no credential)
    GET  /openapi.json                the schema (Bearer)
    POST /agents, GET /agents
    POST /tasks, GET /tasks?status=&assignee_id=, DELETE /tasks/{id}
    GET  /tasks/{id}                  the task with its reply, passages used, ledger attempts,
                                      events, parent_id, parent, children and approvals
                                      (app.dispatch.tasks.task_detail)
    POST /tasks/{id}/review {"approve": bool, "comment": …}   Review → Approved, or
                                      Review → Rejected → Active (back to work, comment kept)
    POST /tasks/{id}/assign {"assignee_id": …}, POST /tasks/{id}/move {"status": …}
    POST /tasks/{id}/cancel {"reason"?}      the task and its open descendants → Cancelled
    POST /tasks/{id}/resume                  a Paused run → Active (not while an approval
                                             of it is pending)
    GET  /approvals                          pending tool approvals, oldest first
    POST /approvals/{id} {"approve": bool, "comment"?}   decide; the run goes on
    GET  /inbox                              approvals, reviews, paused tasks and agents
    POST /agents/{id}/resume                 a paused agent takes work again
    GET  /tasks/{id}/events, GET /events?after_id=
    GET  /documents, POST /documents {source, text, title?, content_type?},
    DELETE /documents/{id}            (app/agents/documents.py: same rules as `vos docs add`)

Errors: 401 no valid token, 400 foreign Host, 404 unknown row, 409 forbidden status step,
422 bad input, 413 document over the size limit, 503 Postgres unreachable
(within `timeout` seconds, logged as one `db_unavailable` line; nothing is queued or written
anywhere else).

Example:
    app = create_api_app(open_pool(dsn), allowed_hosts=["100.64.0.1", "127.0.0.1"])
    uvicorn.run(app, host="100.64.0.1", port=8080)
    # curl -H "Authorization: Bearer $TOKEN" http://100.64.0.1:8080/tasks
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from app import jsonlog
from app.agents import documents as docs
from app.db import UnsafeDatabaseRole, assert_app_role_is_confined, tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import InvalidTransition, Priority, Status
from app.ui import auth

log = logging.getLogger("vos.api")


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(default="", max_length=200)
    persona: str = Field(default="", max_length=20000)
    manager_id: uuid.UUID | None = None
    model_preferences: dict[str, Any] = Field(default_factory=dict)
    budget_usd: Decimal = Field(default=Decimal(0), ge=0, max_digits=12, decimal_places=4)


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=100000)
    priority: Priority = Priority.P1
    assignee_id: uuid.UUID | None = None
    status: Status = Status.DRAFT


class DocumentIn(BaseModel):
    """A document sent as text; `content_type` markdown | text | html (or text/…), else
    inferred from the source's extension."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=docs.MAX_SOURCE_CHARS)
    text: str = Field(max_length=docs.MAX_DOCUMENT_BYTES)  # bytes are checked after encoding
    title: str | None = Field(default=None, max_length=500)
    content_type: str | None = Field(default=None, max_length=40)


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee_id: uuid.UUID | None


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool
    comment: str = Field(default="", max_length=repo.MAX_REVIEW_COMMENT)

    @model_validator(mode="after")
    def _reject_says_why(self) -> ReviewIn:
        if not self.approve and not self.comment.strip():
            raise ValueError("comment: say what to change when rejecting")
        return self


def _no_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{field}: must not contain NUL characters")
    return value


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=repo.MAX_REASON)

    @model_validator(mode="after")
    def _text(self) -> CancelIn:
        _no_nul(self.reason, "reason")
        return self


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool
    comment: str = Field(default="", max_length=repo.MAX_REVIEW_COMMENT)

    @model_validator(mode="after")
    def _text(self) -> DecisionIn:
        _no_nul(self.comment, "comment")
        return self


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
UNAUTHORIZED = "a valid operator token is required: Authorization: Bearer vost_… " \
               "(`vos operator create`)"


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def current_operator(request: Request) -> auth.Operator:
    """The operator whose Bearer token came with this request; 401 otherwise (also for a
    revoked token: the lookup runs on every request)."""
    token = bearer_token(request)
    operator = None
    if token:
        operator = await run_in_threadpool(auth.authenticate, request.app.state.vos_pool, token)
    if operator is None:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return operator


async def current_tenant(operator: Annotated[auth.Operator, Depends(current_operator)]
                         ) -> uuid.UUID:
    """The tenant of this request: always the token's."""
    return operator.tenant_id


Tenant = Annotated[uuid.UUID, Depends(current_tenant)]


def _host_key(host: str) -> str:
    """A Host header (or allowlist entry) without its port, lowercased; IPv6 unbracketed."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostAllowlist:
    """Answer 400 to any request whose Host header is not in the allowlist (ASGI middleware).

    Like Starlette's TrustedHostMiddleware, but IPv6-aware (`[::1]:8080`) and it logs the
    refusal as one JSON line. Defeats DNS rebinding: a page on evil.example whose name now
    resolves to the mesh address still sends `Host: evil.example`.

    Example:
        app.add_middleware(HostAllowlist, allowed=["100.64.0.1", "127.0.0.1", "localhost"])
    """

    def __init__(self, app: ASGIApp, allowed: set[str]):
        self.app = app
        self.allowed = allowed  # shared with app.state.allowed_hosts (see allow_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if _host_key(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        jsonlog.emit(log, "host_refused", level=logging.WARNING,
                     src=(scope.get("client") or ("?",))[0], host=host[:100])
        response = JSONResponse({"detail": "unknown Host: this API answers to its mesh address "
                                 "and the names in VOS_API_ALLOWED_HOSTS only"}, 400)
        await response(scope, receive, send)


def allow_hosts(app: FastAPI, hosts: Iterable[str]) -> None:
    """Let `app` answer to more Host names (e.g. `vos dev` once it knows its bind address).

    Example:
        allow_hosts(app, api_allowed_hosts("100.64.0.1"))
    """
    app.state.allowed_hosts.update(_host_key(h) for h in hosts if h.strip())


def api_allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host names `vos api serve` answers to: the bind address (unless it is a wildcard),
    loopback, and the configured extra names.

    Example:
        >>> api_allowed_hosts("100.64.0.1", ["vos.tail1234.ts.net"])
        ['100.64.0.1', '127.0.0.1', 'localhost', '::1', 'vos.tail1234.ts.net']
        >>> api_allowed_hosts("0.0.0.0")
        ['127.0.0.1', 'localhost', '::1']
    """
    hosts: list[str] = []
    try:
        wildcard = ipaddress.ip_address(bind_host).is_unspecified
    except ValueError:
        wildcard = False
    for host in ([] if wildcard else [bind_host]) + list(LOCAL_HOSTS) + list(extra):
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def check_ready(pool: ConnectionPool) -> str:
    """One round trip as the app role; raises psycopg errors or UnsafeDatabaseRole."""
    return assert_app_role_is_confined(pool)


def create_api_app(pool: ConnectionPool,
                   allowed_hosts: Iterable[str] = LOCAL_HOSTS) -> FastAPI:
    """Build the API around a pool of `vos_app` connections, answering only to
    `allowed_hosts` (default: loopback names; `vos api serve` adds the mesh address)."""
    # docs off: the schema is served below, behind the Bearer check, for API clients only
    app = FastAPI(title="Agent VOS dispatch API (private)", version="1", docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.vos_pool = pool
    app.state.allowed_hosts = set()
    allow_hosts(app, allowed_hosts)
    app.add_middleware(HostAllowlist, allowed=app.state.allowed_hosts)
    _install_error_handlers(app)

    def tx(tenant: uuid.UUID):
        return tenant_transaction(pool, tenant, actor="api")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict:
        role = check_ready(pool)
        return {"status": "ready", "role": role}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_tenant: Tenant) -> dict:
        return app.openapi()

    @app.post("/agents", status_code=201)
    def create_agent(agent: AgentIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.create_agent(conn, tenant, **agent.model_dump())

    @app.get("/agents")
    def list_agents(tenant: Tenant) -> list[dict]:
        with tx(tenant) as conn:
            return repo.list_agents(conn)

    @app.post("/tasks", status_code=201)
    def create_task(task: TaskIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.create_task(conn, tenant, **task.model_dump())

    @app.get("/tasks")
    def list_tasks(
        tenant: Tenant,
        status: Status | None = None,
        assignee_id: uuid.UUID | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict]:
        with tx(tenant) as conn:
            return repo.list_tasks(conn, status=status, assignee_id=assignee_id, limit=limit)

    @app.get("/tasks/{task_id}")
    def get_task(task_id: uuid.UUID, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.task_detail(conn, task_id)

    @app.post("/tasks/{task_id}/review")
    def review_task(task_id: uuid.UUID, body: ReviewIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.review_task(conn, task_id, body.approve, body.comment)

    @app.delete("/tasks/{task_id}", status_code=204)
    def delete_task(task_id: uuid.UUID, tenant: Tenant) -> None:
        with tx(tenant) as conn:
            repo.delete_task(conn, task_id)

    @app.post("/tasks/{task_id}/assign")
    def assign_task(task_id: uuid.UUID, body: AssignIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.assign_task(conn, task_id, body.assignee_id)

    @app.post("/tasks/{task_id}/move")
    def move_task(task_id: uuid.UUID, body: MoveIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.move_task(conn, task_id, body.status)

    @app.post("/tasks/{task_id}/cancel")
    def cancel_task(task_id: uuid.UUID, tenant: Tenant, body: CancelIn | None = None) -> dict:
        with tx(tenant) as conn:
            return repo.cancel_task(conn, task_id, body.reason if body else "")

    @app.post("/tasks/{task_id}/resume")
    def resume_task(task_id: uuid.UUID, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.resume_task(conn, task_id)

    @app.get("/approvals")
    def pending_approvals(tenant: Tenant) -> list[dict]:
        with tx(tenant) as conn:
            return repo.pending_approvals(conn)

    @app.post("/approvals/{approval_id}")
    def decide_approval(approval_id: uuid.UUID, body: DecisionIn, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.decide_approval(conn, approval_id, body.approve, body.comment)

    @app.get("/inbox")
    def inbox(tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return {**repo.inbox(conn), "count": repo.inbox_count(conn)}

    @app.post("/agents/{agent_id}/resume")
    def resume_agent(agent_id: uuid.UUID, tenant: Tenant) -> dict:
        with tx(tenant) as conn:
            return repo.resume_agent(conn, agent_id)

    @app.get("/tasks/{task_id}/events")
    def task_events(task_id: uuid.UUID, tenant: Tenant) -> list[dict]:
        with tx(tenant) as conn:
            repo.get_task(conn, task_id)
            return repo.list_events(conn, task_id=task_id)

    @app.get("/events")
    def events(
        tenant: Tenant,
        after_id: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict]:
        with tx(tenant) as conn:
            return repo.list_events(conn, after_id=after_id, limit=limit)

    @app.get("/documents")
    def list_documents(tenant: Tenant) -> list[dict]:
        with tx(tenant) as conn:
            return docs.list_documents(conn)

    @app.post("/documents", status_code=201)
    def add_document(body: DocumentIn, tenant: Tenant, response: Response) -> dict:
        # validated before the transaction opens: a refused document writes nothing
        doc = docs.prepare(body.source, body.text.encode("utf-8"), body.content_type,
                           body.title)
        with tx(tenant) as conn:
            result = docs.ingest(conn, tenant, doc)
        if result.action != "added":
            response.status_code = 200
        return {"id": result.document_id, "action": result.action, "source": doc.source,
                "title": doc.title, "passages": result.passages, "size_bytes": doc.size_bytes,
                "sha256": doc.sha256}

    @app.delete("/documents/{document_id}", status_code=204)
    def delete_document(document_id: uuid.UUID, tenant: Tenant) -> None:
        with tx(tenant) as conn:
            if docs.remove_document(conn, str(document_id)) is None:
                raise repo.NotFound(f"no document {document_id}")

    from app.ui import mount_ui  # the Command Center (/ui) lives here: mesh only, never the door

    mount_ui(app, pool)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Map domain and database errors to clear HTTP answers."""

    def answer(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(repo.NotFound)
    def not_found(_req: Request, exc: repo.NotFound) -> JSONResponse:
        return answer(404, str(exc))

    @app.exception_handler(InvalidTransition)
    def invalid_transition(_req: Request, exc: InvalidTransition) -> JSONResponse:
        return answer(409, str(exc))

    @app.exception_handler(docs.DocumentError)
    def bad_document(_req: Request, exc: docs.DocumentError) -> JSONResponse:
        return answer(413 if exc.too_large else 422, f"document refused: {exc}")

    @app.exception_handler(repo.BadReference)
    def bad_reference(_req: Request, exc: repo.BadReference) -> JSONResponse:
        return answer(422, str(exc))

    @app.exception_handler(ValueError)
    def bad_value(_req: Request, exc: ValueError) -> JSONResponse:
        return answer(409, str(exc))

    @app.exception_handler(psycopg.IntegrityError)
    def integrity(_req: Request, exc: psycopg.IntegrityError) -> JSONResponse:
        # e.g. a duplicate agent name, or a check constraint the model did not catch first
        diag = exc.diag.message_primary or str(exc)
        return answer(409, f"rejected by the database: {diag}")

    @app.exception_handler(psycopg.DataError)
    def bad_data(_req: Request, exc: psycopg.DataError) -> JSONResponse:
        # values the model let through but Postgres cannot store (NUL bytes, numeric overflow)
        first = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
        return answer(422, f"rejected by the database: {first}")

    @app.exception_handler(UnsafeDatabaseRole)
    def unsafe_role(_req: Request, exc: UnsafeDatabaseRole) -> JSONResponse:
        jsonlog.emit(log, "db_role_unsafe", level=logging.ERROR, detail=str(exc))
        return answer(503, str(exc))

    @app.exception_handler(psycopg.OperationalError)
    def db_down(req: Request, exc: psycopg.OperationalError) -> JSONResponse:
        jsonlog.emit(
            log, "db_unavailable", level=logging.ERROR, path=req.url.path,
            error=type(exc).__name__, detail=str(exc).strip().splitlines()[0][:300] if str(exc)
            else "",
        )
        return answer(503, "Postgres is unavailable; the request was not applied. Retry later.")
