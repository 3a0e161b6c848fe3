"""The private dispatch API (FastAPI), bound to the mesh address, never to the internet.

Every tenant route takes the tenant from the `X-VOS-Tenant` header (a UUID) and runs in one
`tenant_transaction`, so row-level security confines it: another tenant's task is simply
"not found". The mesh is the authentication boundary of this API (see the report).

Routes:
    GET  /healthz                     process up (no I/O)
    GET  /readyz                      a Postgres round trip as the confined app role, else 503
    POST /agents, GET /agents
    POST /tasks, GET /tasks?status=&assignee_id=, GET /tasks/{id}, DELETE /tasks/{id}
    POST /tasks/{id}/assign {"assignee_id": …}, POST /tasks/{id}/move {"status": …}
    GET  /tasks/{id}/events, GET /events?after_id=

Errors: 404 unknown row, 409 forbidden status step, 422 bad input, 503 Postgres unreachable
(within `timeout` seconds, logged as one `db_unavailable` line; nothing is queued or written
anywhere else).

Example:
    app = create_api_app(open_pool(dsn))
    uvicorn.run(app, host="100.64.0.1", port=8080)
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from app import jsonlog
from app.db import UnsafeDatabaseRole, assert_app_role_is_confined, tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import InvalidTransition, Priority, Status

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


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee_id: uuid.UUID | None


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status


def tenant_header(
    x_vos_tenant: Annotated[str, Header(description="tenant UUID")],
) -> uuid.UUID:
    """The tenant of this request, from `X-VOS-Tenant`."""
    try:
        return uuid.UUID(x_vos_tenant)
    except ValueError:
        raise HTTPException(422, "X-VOS-Tenant must be a tenant UUID") from None


Tenant = Annotated[uuid.UUID, Depends(tenant_header)]


def check_ready(pool: ConnectionPool) -> str:
    """One round trip as the app role; raises psycopg errors or UnsafeDatabaseRole."""
    return assert_app_role_is_confined(pool)


def create_api_app(pool: ConnectionPool) -> FastAPI:
    """Build the API around a pool of `vos_app` connections."""
    app = FastAPI(title="Agent VOS dispatch API (private)", version="1")
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
            return repo.get_task(conn, task_id)

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
