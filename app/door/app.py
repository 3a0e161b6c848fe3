"""The door: the one app that faces the internet. Exactly one route, `POST /callbacks/{source}`.

No docs, no OpenAPI, no health route, no other path (those answer 404 and are logged).
A request is accepted only when, in this order:
 1. `source` is configured (VOS_DOOR_SECRETS)                 else 401 unknown_source
 2. the body fits `max_body` (Content-Length and streamed)    else 413 body_too_large
 3. the Standard Webhooks signature verifies within ±tolerance else 400/401 (see signature.py)
 4. the body nests at most `max_depth` arrays/objects          else 400 too_deep
 5. the body is JSON matching `CallbackIn`                     else 400 malformed_json /
                                                                    422 invalid_payload
 6. the source is bound to a tenant (`vos door bind`)          else 403 source_not_bound
 7. a referenced task exists in that tenant                    else 422 unknown_task
Then, in one round trip (`door_accept`, migration 0307: one transaction as `vos_app`, the
tenant set inside it so RLS confines every write): insert into `callbacks` ON CONFLICT
(source, webhook_id) DO NOTHING; if the id was new, create the task or append the task event.
A replayed or retried webhook-id answers 200 {"status": "duplicate"} and writes nothing: a
sender retrying after a lost answer must see success, or it retries forever. Idempotency is
per source: another source's message with the same webhook-id is a different message (one
sender cannot suppress, or learn about, another's ids).

Any other path or method is 404/405 (no slash redirects: `/callbacks/edge/` is not
redirected to a Location built from the Host header). Slow clients, the connection cap and
the idle timeout live in the HTTP protocol (app/door/protocol.py), not here.

Every rejection is one JSON line on stdout, `{"event": "door_reject", "src": IP, "reason": …,
"signed": bool, …}`; `signed` is false when the request was not authenticated (the lines a
fail2ban jail should count). Postgres down: 503, logged as `door_db_unavailable`.

The app is a bare ASGI callable (`DoorApp`, no framework router: see its docstring); served,
it awaits an async pool on the event loop (app/door/worker.py builds it per worker process).

Example:
    app = create_door_app(pool, settings.door_keys(), max_body=65536, tolerance=300)
    uvicorn.run(app, host="0.0.0.0", port=8443)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app import jsonlog
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


# the request headers the door reads (ASGI gives names lowercased, as bytes)
_WANTED = frozenset((b"content-length", b"webhook-id", b"webhook-timestamp",
                     b"webhook-signature"))


def request_headers(scope: dict) -> dict[str, str]:
    """The headers the door reads, the first of each name when repeated (as Starlette's
    `Headers.get`), decoded as latin-1; the others are not looked at.

    Example:
        >>> request_headers({"headers": [(b"webhook-id", b"msg_1"), (b"webhook-id", b"x"),
        ...                              (b"accept", b"*/*")]})
        {'webhook-id': 'msg_1'}
    """
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def read_capped(receive: Callable, headers: dict[str, str], max_body: int) -> bytes:
    """The body, refusing more than `max_body` bytes whether or not Content-Length says so
    (ClientDisconnect if the client goes away first)."""
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        raise Rejected(413, "body_too_large", f"the body exceeds {max_body} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise Rejected(413, "body_too_large", f"the body exceeds {max_body} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Answer:
    """A JSON answer as two ASGI messages (what Starlette's JSONResponse sent, without its
    per-request header machinery): compact JSON, content-length and content-type.

    Example:
        await Answer(202, {"status": "accepted"})(scope, receive, send)
    """

    __slots__ = ("body", "status")

    def __init__(self, status: int, content: dict | None) -> None:
        self.status = status
        self.body = b"" if content is None else json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = [(b"content-length", str(len(self.body)).encode())]
        if self.status != 499:  # no content: no content-type, as Starlette's Response
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _peer(scope: dict) -> str:
    client = scope.get("client")
    return client[0] if client else "-"


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


# the only bytes that matter for nesting: quotes, escapes (so \" stays in its string), brackets
_JSON_TOKEN = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
MAX_JSON_DEPTH = 32


def json_depth(body: bytes, stop_above: int | None = None) -> int:
    """How deeply arrays/objects nest in a JSON text, counted without parsing or recursion.

    Brackets inside strings do not count. For a malformed text the count is approximate (the
    parser refuses such a text afterwards anyway). With `stop_above`, counting ends as soon as
    the depth exceeds it.

    Example:
        >>> json_depth(b'{"a": [1, {"b": "[[["}]}'), json_depth(b"[" * 900), json_depth(b"1")
        (3, 900, 0)
        >>> json_depth(b"[" * 900, stop_above=32)
        33
    """
    depth = deepest = 0
    in_string = False
    for match in _JSON_TOKEN.finditer(body):  # one linear pass, whatever the input
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or token[0] == 0x5C:  # inside a string, or an escape
            continue
        elif token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if stop_above is not None and deepest > stop_above:
                break
        else:
            depth -= 1
    return deepest


def parse_callback(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> TaskCreateIn | TaskEventIn:
    """Validate the JSON body (after the signature checked out): depth, strict JSON, the model.

    The depth is checked before parsing, so no deeply nested text reaches a recursive parser
    or validator (a RecursionError is still answered, as too_deep, should one happen).
    """
    if json_depth(body, stop_above=max_depth) > max_depth:
        raise Rejected(400, "too_deep", f"the body nests deeper than {max_depth}", signed=True)
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise Rejected(400, "too_deep", "the body nests too deeply", signed=True) from None
    except ValueError:  # UnicodeDecodeError is a ValueError
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


# One round trip per callback: door_accept() (migration 0307) looks the source's tenant up,
# sets app.tenant_id/app.actor for its own transaction (so RLS confines what it writes),
# inserts the callback ON CONFLICT (source, webhook_id) DO NOTHING and then the task (whose
# trigger writes the `created` event and NOTIFYs) or the task event, all in one autocommit
# statement. `%s::text` keeps the body as the signed text: Postgres parses it to jsonb.
ACCEPT = "SELECT door_accept(%s, %s, %s, %s::text, %s, %s, %s, %s, %s, %s) AS outcome"


def _accept_params(source: str, webhook_id: str, sent_at: int, body: bytes,
                   callback: TaskCreateIn | TaskEventIn) -> tuple[uuid.UUID, list]:
    when = datetime.fromtimestamp(sent_at, UTC)
    if isinstance(callback, TaskCreateIn):
        task_id = uuid.uuid4()
        return task_id, [source, webhook_id, when, body.decode(), task_id, callback.title,
                         callback.body, str(callback.priority), callback.draft, None]
    task_id = callback.task_id
    return task_id, [source, webhook_id, when, body.decode(), task_id, None, None, None, None,
                     callback.kind]


def _outcome(outcome: str, source: str, webhook_id: str, task_id: uuid.UUID) -> dict:
    if outcome == "not_bound":
        raise Rejected(
            403, "source_not_bound",
            f"source {source!r} is not bound to a tenant (operator: `vos door bind`)",
            signed=True,
        )
    if outcome == "duplicate":
        return {"status": "duplicate", "webhook_id": webhook_id}
    return {"status": "accepted", "webhook_id": webhook_id, "task_id": str(task_id)}


_UNKNOWN_TASK = ("unknown_task", "task_id is not a task of this source's tenant")


def store(
    pool: ConnectionPool, source: str, webhook_id: str, sent_at: int, body: bytes,
    callback: TaskCreateIn | TaskEventIn,
) -> dict:
    """Insert the callback exactly once and apply it, in one tenant transaction (blocking).

    Example:
        store(pool, "edge", "msg_1", int(time.time()), raw, parse_callback(raw))["status"]
    """
    task_id, params = _accept_params(source, webhook_id, sent_at, body, callback)
    try:
        with pool.connection() as conn:
            row = conn.execute(ACCEPT, params).fetchone()
    except psycopg.errors.NoDataFound:
        raise Rejected(422, *_UNKNOWN_TASK, signed=True) from None
    return _outcome(row["outcome"], source, webhook_id, task_id)


ACCEPT_BATCH = """SELECT door_accept_batch(%s::text[], %s::text[], %s::timestamptz[],
    %s::text[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::boolean[], %s::text[])
    AS outcomes"""


class GroupCommit:
    """The async door's writer: callbacks that arrive together are written in one transaction.

    Why: every accepted callback NOTIFYs (task_events trigger), and Postgres commits notifying
    transactions one at a time, each waiting for its own WAL flush, so one transaction per
    callback caps the door far below the database's insert rate (migration 0307 has the
    figures). Here a callback joins the pending list; up to `max_inflight` batches of at most
    `max_batch` are written at once (`door_accept_batch`: one round trip, one commit), and
    each caller gets its own outcome. A batch that fails on its content (an unknown task, a
    payload Postgres refuses) wrote nothing and is replayed one `door_accept` per callback,
    so every caller gets exactly the answer it would have had alone; a database outage
    (OperationalError) fails every caller of the batch (503).

    Example:
        writer = GroupCommit(async_pool)
        await writer.store("edge", "msg_1", int(time.time()), raw, parse_callback(raw))
    """

    def __init__(self, pool: AsyncConnectionPool, *, max_batch: int = 32,
                 max_inflight: int = 2) -> None:
        self.pool, self.max_batch, self.max_inflight = pool, max_batch, max_inflight
        self.pending: list[tuple[list, asyncio.Future]] = []
        self.inflight = 0
        self.tasks: set[asyncio.Task] = set()  # a reference, so no flush is collected early

    async def store(self, source: str, webhook_id: str, sent_at: int, body: bytes,
                    callback: TaskCreateIn | TaskEventIn) -> dict:
        """`store`, batched with whatever else is being accepted at the same moment."""
        task_id, params = _accept_params(source, webhook_id, sent_at, body, callback)
        future = asyncio.get_running_loop().create_future()
        self.pending.append((params, future))
        self._start_flushes()
        try:
            outcome = await future
        except psycopg.errors.NoDataFound:
            raise Rejected(422, *_UNKNOWN_TASK, signed=True) from None
        return _outcome(outcome, source, webhook_id, task_id)

    def _start_flushes(self) -> None:
        while self.pending and self.inflight < self.max_inflight:
            batch, self.pending = (self.pending[:self.max_batch],
                                   self.pending[self.max_batch:])
            self.inflight += 1
            task = asyncio.create_task(self._flush(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _flush(self, batch: list[tuple[list, asyncio.Future]]) -> None:
        try:
            if len(batch) == 1:
                await self._one(*batch[0])
                return
            try:
                async with self.pool.connection() as conn:
                    cur = await conn.execute(ACCEPT_BATCH, [list(column) for column in zip(
                        *(params for params, _ in batch), strict=True)])
                    outcomes = (await cur.fetchone())["outcomes"]
            except psycopg.OperationalError as exc:
                for _, future in batch:
                    _settle(future, exc=exc)
                return
            except psycopg.Error:
                for params, future in batch:  # nothing was written: each on its own
                    await self._one(params, future)
                return
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)
        except BaseException as exc:  # never leave a caller waiting
            for _, future in batch:
                _settle(future, exc=exc if isinstance(exc, Exception) else
                        psycopg.OperationalError("the door is stopping"))
            raise
        finally:
            self.inflight -= 1
            self._start_flushes()

    async def _one(self, params: list, future: asyncio.Future) -> None:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(ACCEPT, params)
                _settle(future, (await cur.fetchone())["outcome"])
        except psycopg.Error as exc:
            _settle(future, exc=exc)


def _settle(future: asyncio.Future, outcome: str | None = None, *,
            exc: BaseException | None = None) -> None:
    if future.done():  # its caller went away (client disconnect): the write stands
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(outcome)


def create_door_app(
    pool: ConnectionPool | AsyncConnectionPool,
    keys: dict[str, list[bytes]],
    *,
    max_body: int = 64 * 1024,
    tolerance: int = 300,
    max_depth: int = MAX_JSON_DEPTH,
    clock: Callable[[], float] = time.time,
    max_inflight: int = 2,
) -> DoorApp:
    """Build the door around a `vos_app` pool (sync: a thread per callback, as in the tests;
    async: awaited on the event loop and group-committed, `max_inflight` transactions at a
    time, as served) and the per-source HMAC keys."""
    writer = (GroupCommit(pool, max_inflight=max_inflight)
              if isinstance(pool, AsyncConnectionPool) else None)

    def reject(scope: dict, exc: Rejected, source: str | None) -> Answer:
        jsonlog.emit(
            log, "door_reject", level=logging.WARNING, src=_peer(scope),
            reason=exc.reason, signed=exc.signed, status=exc.status, source=source,
            path=scope["path"][:200],
        )
        return Answer(exc.status, {"error": exc.reason, "detail": str(exc)})

    async def callback(source: str, scope: dict, receive: Callable) -> Answer:
        try:
            if source not in keys:
                raise Rejected(401, "unknown_source", "unknown source")
            h = request_headers(scope)
            body = await read_capped(receive, h, max_body)
            try:
                sent_at = verify(
                    keys[source], h.get("webhook-id"), h.get("webhook-timestamp"),
                    h.get("webhook-signature"), body, now=clock(), tolerance=tolerance,
                )
            except SignatureError as exc:
                raise Rejected(exc.status, exc.reason, str(exc)) from None
            parsed = parse_callback(body, max_depth)
            if writer is not None:
                result = await writer.store(source, h["webhook-id"], sent_at, body, parsed)
            else:
                result = await run_in_threadpool(
                    store, pool, source, h["webhook-id"], sent_at, body, parsed
                )
        except Rejected as exc:
            return reject(scope, exc, source)
        except ClientDisconnect:
            # the client went away mid-body (or the protocol closed it as slow_client and
            # logged that): nobody is left to answer, and it is not a second rejection
            jsonlog.emit(log, "door_client_gone", src=_peer(scope), source=source)
            return Answer(499, None)
        except psycopg.DataError as exc:
            # JSON that Python accepts but Postgres does not (e.g. lone surrogates)
            refused = Rejected(422, "unstorable_payload", str(exc).splitlines()[0], signed=True)
            return reject(scope, refused, source)
        except psycopg.OperationalError as exc:
            jsonlog.emit(
                log, "door_db_unavailable", level=logging.ERROR, error=type(exc).__name__,
                source=source,
            )
            return Answer(503, {"error": "unavailable", "detail": "try again later"})
        if result["status"] == "duplicate":
            # visible, but not a rejection: a sender's retry must not feed fail2ban
            jsonlog.emit(log, "door_duplicate", src=_peer(scope), source=source,
                         webhook_id=result["webhook_id"])
            return Answer(200, result)
        return Answer(202, result)

    return DoorApp(callback, reject)


# The one route, as Starlette compiled `/callbacks/{source}`. No slash redirects: a 307 to
# `/callbacks/edge` for `/callbacks/edge/` would build its Location from the client's Host
# header; the door answers 404 instead.
_ROUTE = re.compile(r"^/callbacks/(?P<source>[^/]+)$")


@contextlib.asynccontextmanager
async def _no_lifespan(_app: DoorApp) -> AsyncIterator[None]:
    yield


class DoorApp:
    """The door as a bare ASGI app: its one route, no framework router or middleware stack.

    Why bare: under load, FastAPI's middleware layers and router cost more CPU per request
    than the door's own work (signature, validation, one round trip), and the door has one
    route. Nor Starlette's Request/JSONResponse: the handler reads the four headers it needs
    from the ASGI scope (`request_headers`), the body from `receive` (`read_capped`) and
    answers with two ASGI messages (`Answer`), the same bytes JSONResponse sent.
    Any other path answers 404, the route with another method 405, both logged as
    `no_route` rejections; an unexpected exception is uvicorn's 500.
    `lifespan_context(app)` runs around the server's life (app/door/worker.py opens and
    closes its async pool there).

    Example:
        app = create_door_app(pool, keys)
        app.lifespan_context = my_lifespan       # optional
        uvicorn.run(app, port=8443)
    """

    def __init__(self, callback: Callable[[str, dict, Callable], Awaitable[Answer]],
                 reject: Callable[[dict, Rejected, str | None], Answer]) -> None:
        self.callback, self.reject = callback, reject
        self.lifespan_context: Callable[[DoorApp], Any] = _no_lifespan

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            route = _ROUTE.match(scope["path"])
            if route is not None and scope["method"] == "POST":
                response = await self.callback(route["source"], scope, receive)
            else:
                response = self.reject(
                    scope, Rejected(404 if route is None else 405, "no_route", "not found"),
                    None,
                )
            await response(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # a websocket: there is no such route (closed, as the router did)
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.lifespan_context(self):
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except Exception as exc:
            phase = "shutdown" if started else "startup"
            await send({"type": f"lifespan.{phase}.failed", "message": repr(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})
