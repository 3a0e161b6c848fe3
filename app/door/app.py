"""The door: the one app that faces the internet. Exactly one route, `POST /callbacks/{source}`.

No docs, no OpenAPI, no health route, no other path (those answer 404 and are logged).
A request is accepted only when, in this order:
 1. `source` is configured (VOS_DOOR_SECRETS)                 else 401 unknown_source
 2. the body fits `max_body` (Content-Length and streamed)    else 413 body_too_large
 3. the Standard Webhooks signature verifies within ±tolerance else 400/401 (see signature.py)
 4. the body is JSON matching `CallbackIn`                     else 400 malformed_json /
                                                                    422 invalid_payload
 5. the source is bound to a tenant (`vos door bind`)          else 403 source_not_bound
 6. a referenced task exists in that tenant                    else 422 unknown_task
Then, in one transaction as `vos_app` with the tenant set: insert into `callbacks` ON CONFLICT
(webhook_id) DO NOTHING; if the id was new, create the task or append the task event.
A replayed or retried webhook-id answers 200 {"status": "duplicate"} and writes nothing: a
sender retrying after a lost answer must see success, or it retries forever.

Every rejection is one JSON line on stdout, `{"event": "door_reject", "src": IP, "reason": …,
"signed": bool, …}`; `signed` is false when the request was not authenticated (the lines a
fail2ban jail should count). Postgres down: 503, logged as `door_db_unavailable`.

Example:
    app = create_door_app(pool, settings.door_keys(), max_body=65536, tolerance=300)
    uvicorn.run(app, host="0.0.0.0", port=8443)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import jsonlog
from app.dispatch import tasks as repo
from app.dispatch.status import Priority
from app.door.signature import SignatureError, verify

log = logging.getLogger("vos.door")


class TaskCreateIn(BaseModel):
    """An edge function asks for a new task (queued Active, or Draft for a human first)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["task.create"]
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=100000)
    priority: Priority = Priority.P1
    draft: bool = False


class TaskEventIn(BaseModel):
    """An edge function reports on an existing task (a result, a progress note…)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["task.event"]
    task_id: uuid.UUID
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    data: dict[str, Any] = Field(default_factory=dict)


class CallbackIn(BaseModel):
    callback: Annotated[TaskCreateIn | TaskEventIn, Field(discriminator="type")]


class Rejected(Exception):
    """A request the door refuses: HTTP status, stable reason code, human message."""

    def __init__(self, status: int, reason: str, message: str, *, signed: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.signed = status, reason, signed


async def read_capped(request: Request, max_body: int) -> bytes:
    """The body, refusing more than `max_body` bytes whether or not Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        raise Rejected(413, "body_too_large", f"the body exceeds {max_body} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise Rejected(413, "body_too_large", f"the body exceeds {max_body} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _has_nul(value: Any) -> bool:
    """Postgres text and jsonb cannot hold U+0000, so such a body is refused up front."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_callback(body: bytes) -> TaskCreateIn | TaskEventIn:
    """Validate the JSON body (after the signature checked out): strict JSON, then the model."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Rejected(400, "malformed_json", "the body is not JSON", signed=True) from None
    if _has_nul(data):
        raise Rejected(400, "malformed_json", "the body contains U+0000", signed=True)
    try:
        return CallbackIn.model_validate({"callback": data}).callback
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][2:]) or "body"
        raise Rejected(
            422, "invalid_payload", f"{where}: {first['msg']}", signed=True
        ) from None


def store(
    pool: ConnectionPool, source: str, webhook_id: str, sent_at: int, body: bytes,
    callback: TaskCreateIn | TaskEventIn,
) -> dict:
    """Insert the callback exactly once and apply it, in one tenant transaction."""
    with pool.connection() as conn, conn.transaction():
        # one round trip: find the source's tenant and scope the transaction to it
        row = conn.execute(
            """SELECT tenant_id, set_config('app.tenant_id', tenant_id::text, true),
                      set_config('app.actor', %s, true)
                 FROM door_sources WHERE source = %s""",
            [f"door:{source}", source],
        ).fetchone()
        if row is None:
            raise Rejected(
                403, "source_not_bound",
                f"source {source!r} is not bound to a tenant (operator: `vos door bind`)",
                signed=True,
            )
        tenant_id = row["tenant_id"]
        task_id = uuid.uuid4() if isinstance(callback, TaskCreateIn) else callback.task_id
        inserted = conn.execute(
            """INSERT INTO callbacks (tenant_id, source, webhook_id, sent_at, payload, task_id)
               VALUES (%s, %s, %s, %s, %s::jsonb, %s)
               ON CONFLICT (webhook_id) DO NOTHING RETURNING id""",
            # the raw text, parsed by Postgres itself: exactly what was signed
            [tenant_id, source, webhook_id, datetime.fromtimestamp(sent_at, UTC),
             body.decode(), task_id],
        ).fetchone()
        if inserted is None:
            return {"status": "duplicate", "webhook_id": webhook_id}
        if isinstance(callback, TaskCreateIn):
            repo.create_task(
                conn, tenant_id, title=callback.title, body=callback.body,
                priority=callback.priority, status="Draft" if callback.draft else "Active",
                task_id=task_id,
            )
        else:
            try:
                repo.add_event(
                    conn, tenant_id, task_id, f"callback.{callback.kind}",
                    {"source": source, "webhook_id": webhook_id, "data": callback.data},
                )
            except repo.NotFound:
                raise Rejected(
                    422, "unknown_task", "task_id is not a task of this source's tenant",
                    signed=True,
                ) from None
        return {"status": "accepted", "webhook_id": webhook_id, "task_id": str(task_id)}


def create_door_app(
    pool: ConnectionPool,
    keys: dict[str, list[bytes]],
    *,
    max_body: int = 64 * 1024,
    tolerance: int = 300,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the door around a `vos_app` pool and the per-source HMAC keys."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    def reject(request: Request, exc: Rejected, source: str | None) -> JSONResponse:
        jsonlog.emit(
            log, "door_reject", level=logging.WARNING,
            src=request.client.host if request.client else "-",
            reason=exc.reason, signed=exc.signed, status=exc.status, source=source,
            path=request.url.path[:200],
        )
        return JSONResponse({"error": exc.reason, "detail": str(exc)}, status_code=exc.status)

    @app.post("/callbacks/{source}")
    async def callback(source: str, request: Request) -> JSONResponse:
        try:
            if source not in keys:
                raise Rejected(401, "unknown_source", "unknown source")
            body = await read_capped(request, max_body)
            h = request.headers
            try:
                sent_at = verify(
                    keys[source], h.get("webhook-id"), h.get("webhook-timestamp"),
                    h.get("webhook-signature"), body, now=clock(), tolerance=tolerance,
                )
            except SignatureError as exc:
                raise Rejected(exc.status, exc.reason, str(exc)) from None
            parsed = parse_callback(body)
            result = await run_in_threadpool(
                store, pool, source, h["webhook-id"], sent_at, body, parsed
            )
        except Rejected as exc:
            return reject(request, exc, source)
        except psycopg.DataError as exc:
            # JSON that Python accepts but Postgres does not (e.g. lone surrogates)
            refused = Rejected(422, "unstorable_payload", str(exc).splitlines()[0], signed=True)
            return reject(request, refused, source)
        except psycopg.OperationalError as exc:
            jsonlog.emit(
                log, "door_db_unavailable", level=logging.ERROR, error=type(exc).__name__,
                source=source,
            )
            return JSONResponse(
                {"error": "unavailable", "detail": "try again later"}, status_code=503
            )
        if result["status"] == "duplicate":
            # visible, but not a rejection: a sender's retry must not feed fail2ban
            jsonlog.emit(log, "door_duplicate",
                         src=request.client.host if request.client else "-", source=source,
                         webhook_id=result["webhook_id"])
            return JSONResponse(result, status_code=200)
        return JSONResponse(result, status_code=202)

    @app.exception_handler(StarletteHTTPException)
    async def no_such_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """404/405 for anything but the one route, logged like any rejection."""
        reason = "no_route" if exc.status_code in (404, 405) else f"http_{exc.status_code}"
        return reject(request, Rejected(exc.status_code, reason, "not found"), None)

    return app
