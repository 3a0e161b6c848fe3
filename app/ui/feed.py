"""The live feed: task events over Server-Sent Events, woken by Postgres LISTEN/NOTIFY.

One `NotifyHub` per process holds one dedicated connection that LISTENs on `task_events`
(migration 0002 raises a NOTIFY carrying ids only). A notification only *wakes* the streams
of that tenant; each stream then re-reads the events after its last id inside a
`tenant_transaction`, so the data always passes row-level security and nothing travels in the
NOTIFY payload. Because a stream reads "everything after my last id", a reconnecting browser
that sends `Last-Event-ID` gets exactly the events it missed, and a notification that arrives
while a stream is reading is never lost (the stream's wake flag stays set).

Example:
    hub = NotifyHub(conninfo)          # started lazily by the first stream
    async for chunk in event_stream(pool, hub, tenant_id, after_id=0, ...):
        ...
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from app import jsonlog
from app.db import tenant_transaction

log = logging.getLogger("vos.ui.feed")

CHANNEL = "task_events"
BATCH = 200


class NotifyHub:
    """Listens on `task_events` in a daemon thread and wakes subscribed streams."""

    def __init__(self, conninfo: str, *, reconnect_seconds: float = 1.0):
        self.conninfo = conninfo
        self.reconnect_seconds = reconnect_seconds
        self._subscribers: dict[int, tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        """Start the listener thread once (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="vos-ui-listen",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; returns within about `timeout` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def subscribe(self, tenant_id: uuid.UUID) -> tuple[int, asyncio.Event]:
        """Register the calling stream (in its event loop); returns (key, wake event)."""
        self.start()
        event = asyncio.Event()
        event.set()  # read once at once: the first read catches up from the given id
        key = id(event)
        with self._lock:
            self._subscribers[key] = (str(tenant_id), asyncio.get_running_loop(), event)
        return key, event

    def unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subscribers.pop(key, None)

    def wake(self, tenant_id: str | None) -> None:
        """Wake the streams of `tenant_id` (all streams when None, e.g. after a reconnect)."""
        with self._lock:
            targets = [(loop, ev) for t, loop, ev in self._subscribers.values()
                       if tenant_id is None or t == tenant_id]
        for loop, event in targets:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop is gone; it unsubscribes itself
                pass

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self.wake(None)  # events may have landed while we were not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=100):
                            self.wake(_tenant_of(note.payload))
            except psycopg.Error as exc:
                self.connected.clear()
                jsonlog.emit(log, "ui_listen_lost", level=logging.WARNING,
                             error=type(exc).__name__)
                self._stop.wait(self.reconnect_seconds)
        self.connected.clear()


def _tenant_of(payload: str) -> str | None:
    """The tenant id in a task_events NOTIFY payload; None (wake all) if unreadable."""
    try:
        return str(json.loads(payload)["tenant_id"])
    except (ValueError, KeyError, TypeError):
        return None


_EVENTS = """SELECT e.id, e.task_id, e.kind, e.payload, e.created_at, t.title
               FROM task_events e LEFT JOIN tasks t ON t.id = e.task_id"""


def read_events(pool: ConnectionPool, tenant_id: uuid.UUID, after_id: int,
                limit: int = BATCH) -> list[dict]:
    """Events of this tenant after `after_id`, oldest first, with their task's title (RLS
    scopes both tables)."""
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        return conn.execute(f"{_EVENTS} WHERE e.id > %s ORDER BY e.id LIMIT %s",
                            [after_id, limit]).fetchall()


def recent_events(pool: ConnectionPool, tenant_id: uuid.UUID, count: int = 30) -> list[dict]:
    """The newest `count` events, oldest first (for the first paint of the feed)."""
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        rows = conn.execute(f"{_EVENTS} ORDER BY e.id DESC LIMIT %s", [count]).fetchall()
    return list(reversed(rows))


def describe(event: dict) -> str:
    """One line for an event, as the feed shows it.

    Example:
        >>> describe({"kind": "status_changed",
        ...           "payload": {"changes": {"status": ["Active", "Review"]}}})
        'status Active → Review'
    """
    payload = event.get("payload") or {}
    kind = event["kind"]
    if kind == "created":
        return f"created as {payload.get('status')} {payload.get('priority')}"
    if kind == "status_changed":
        old, new = payload.get("changes", {}).get("status", ["?", "?"])
        return f"status {old} → {new}"
    if kind == "assigned":
        return "assignee changed"
    if kind == "claimed":
        return f"claimed by {payload.get('changes', {}).get('claimed_by', [None, '?'])[1]}"
    if kind == "work.result":
        return "work result recorded"
    if kind == "work.failed":
        return f"work failed: {str(payload.get('error', ''))[:120]}"
    if kind in ("review.approved", "review.rejected"):
        comment = str(payload.get("comment") or "")[:120]
        verdict = "approved" if kind == "review.approved" else "rejected"
        return f"{verdict}: “{comment}”" if comment else verdict
    if kind == "work.retry":
        return "retried after failing"
    if kind == "task.delegated":
        return f"delegated “{_clip(payload.get('title'))}”"
    if kind == "task.created" and payload.get("parent_id"):
        return "created as a sub-task"
    if kind == "task.waiting":
        return f"waiting for {payload.get('children', '?')} sub-tasks"
    if kind == "task.children_done":
        return "every sub-task approved: back to work on the synthesis"
    if kind == "task.paused":
        return f"paused: {_clip(payload.get('reason'), 160)}"
    if kind == "task.resumed":
        return "resumed"
    if kind == "task.cancelled":
        reason = _clip(payload.get("reason"), 120)
        ancestor = payload.get("cancelled_ancestor_title")
        via = f" with “{_clip(ancestor)}”" if ancestor else ""
        return f"cancelled{via}" + (f": {reason}" if reason else "")
    if kind == "tool.called":
        outcome = "" if payload.get("ok", True) else " (failed)"
        return f"called {_clip(payload.get('tool'))}({_clip(payload.get('arguments'), 100)})" \
            + outcome
    if kind == "approval.requested":
        return f"asks approval to call {_clip(payload.get('tool'))}"
    if kind in ("approval.approved", "approval.denied"):
        verdict = "approved" if kind == "approval.approved" else "denied"
        return f"tool call {verdict}" + (f" ({_clip(payload.get('tool'))})"
                                         if payload.get("tool") else "")
    return kind.replace("_", " ")


def _clip(value: Any, limit: int = 80) -> str:
    """`value` as text, cut to `limit` characters with an ellipsis."""
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def event_json(event: dict, title: str | None = None) -> dict[str, Any]:
    """The JSON an SSE message carries (and the feed template renders)."""
    created = event["created_at"]
    return {
        "id": event["id"],
        "task_id": str(event["task_id"]) if event["task_id"] else None,
        "kind": event["kind"],
        "text": describe(event),
        "title": title or event.get("title") or (event.get("payload") or {}).get("title"),
        "actor": (event.get("payload") or {}).get("actor"),
        "at": created.isoformat() if isinstance(created, datetime) else str(created),
    }


def sse_message(event: dict) -> str:
    """Format one event as an SSE message with its id (what Last-Event-ID resumes from)."""
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event['id']}\nevent: task_event\ndata: {data}\n\n"


async def event_stream(pool: ConnectionPool, hub: NotifyHub, tenant_id: uuid.UUID,
                       after_id: int, is_disconnected: Callable[[], Any],
                       keepalive_seconds: float = 15.0,
                       still_signed_in: Callable[[], bool] | None = None,
                       recheck_seconds: float = 3.0) -> AsyncIterator[str]:
    """Yield SSE messages for every event after `after_id`, then live ones, until the client
    goes away or its credential does. The database reads run in the thread pool (psycopg here
    is synchronous).

    `still_signed_in` (a blocking check, e.g. the session lookup) runs every
    `recheck_seconds` while the stream is open, also while it is idle: after sign-out or a
    token's revocation the stream sends a `session_ended` event and closes within about that
    long (the page's script then reloads to the sign-in form). A check that errors ends the
    stream too (fail closed).

    Example:
        event_stream(pool, hub, tenant_id, 0, request.is_disconnected,
                     still_signed_in=lambda: auth.session_operator(pool, sid) is not None)
    """
    key, wake = hub.subscribe(tenant_id)
    last = after_id
    clock = asyncio.get_running_loop().time
    next_check = clock() + recheck_seconds
    next_keepalive = clock() + keepalive_seconds
    try:
        yield "retry: 1000\n\n"
        while True:
            if await is_disconnected():
                return
            deadline = min(next_keepalive, next_check if still_signed_in else next_keepalive)
            try:
                await asyncio.wait_for(wake.wait(), max(0.05, deadline - clock()))
            except TimeoutError:
                pass
            if still_signed_in is not None and clock() >= next_check:
                try:
                    valid = await run_in_threadpool(still_signed_in)
                except Exception as exc:  # noqa: BLE001 - fail closed, say why in the log
                    jsonlog.emit(log, "ui_stream_check_failed", level=logging.WARNING,
                                 error=type(exc).__name__)
                    valid = False
                if not valid:
                    yield "event: session_ended\ndata: {}\n\n"
                    return
                next_check = clock() + recheck_seconds
            if not wake.is_set():
                if clock() >= next_keepalive:
                    yield ": keepalive\n\n"
                    next_keepalive = clock() + keepalive_seconds
                continue
            wake.clear()  # cleared before reading: a NOTIFY during the read sets it again
            while True:
                rows = await run_in_threadpool(read_events, pool, tenant_id, last)
                for row in rows:
                    last = row["id"]
                    yield sse_message(row)
                if len(rows) < BATCH:
                    break
            next_keepalive = clock() + keepalive_seconds
    finally:
        hub.unsubscribe(key)
