"""The door's HTTP/1.1 connection handling: deadlines and a connection cap for slow clients.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request that is *being* sent, so a client dribbling its headers one byte at a time holds a
socket forever (slowloris). `door_protocol(...)` returns a subclass of uvicorn's httptools
protocol (passed as uvicorn's `http=`) that adds, per request:

- a head deadline: the request line and headers complete within `header_timeout` seconds of
  the connection opening (or of the first byte of the next request on a kept-alive one);
- a body deadline: the body complete within `body_timeout` seconds after the head;
- a cap: a request arriving while more than `max_connections` connections are open is
  answered 503 `{"error": "busy"}` at once (the ASGI app never runs);
- a head size limit (`MAX_HEAD_BYTES`, answered 431 with a lingering close): httptools has
  none of its own;
- one send() per answer (`_CoalescingTransport`).

Why httptools (llhttp, C) and not h11 (pure Python): issue #19's profile of the door under
load, h11 parsing and serialising was the largest single cost per request (cProfile with a
CPU clock: 45% of the door's CPU, profiler overhead included); on httptools the door's CPU
per refused request fell from 0.33 to 0.12 ms in back-to-back runs on the same machine.

A missed deadline answers 408 (if nothing was answered yet), closes the connection and logs
`{"event": "door_reject", "src": <TCP peer>, "reason": "slow_client", "signed": false, …}`,
the line the fail2ban door jail counts. A 503 over the cap is logged as `door_busy` and is
NOT a rejection: during a flood, honest senders are refused too and must not be banned (the
flood's own slow connections are logged as slow_client and banned).

Example:
    uvicorn.run(app, http=door_protocol(header_timeout=10, body_timeout=20,
                                        max_connections=100), timeout_keep_alive=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import jsonlog

log = logging.getLogger("vos.door")

_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   b"content-length: 25\r\nconnection: close\r\n\r\n"
                   b'{"error": "slow_client"}\n')
_HEAD_TOO_LARGE_ANSWER = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                          b"content-type: application/json\r\ncontent-length: 27\r\n"
                          b"connection: close\r\n\r\n"
                          b'{"error": "head_too_large"}')
_BUSY_BODY = b'{"error": "busy"}'
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers longer than this: 431 and closed
# After refusing a head the door half-closes and keeps reading (and dropping) what the client
# is still sending, for this long or this much, before it closes: closing a socket with unread
# bytes sends a TCP reset, which can destroy the answer before the client reads it (nginx's
# "lingering close", for the same reason)
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


def door_protocol(*, header_timeout: float, body_timeout: float,
                  max_connections: int) -> type[HttpToolsProtocol]:
    """An uvicorn HTTP protocol class enforcing these deadlines and this connection cap.

    Example:
        >>> cls = door_protocol(header_timeout=10, body_timeout=20, max_connections=100)
        >>> (cls.header_timeout, cls.body_timeout, cls.max_connections)
        (10, 20, 100)
    """
    if header_timeout <= 0 or body_timeout <= 0 or max_connections < 1:
        raise ValueError("header_timeout and body_timeout must be > 0, max_connections >= 1")
    return type("DoorProtocol", (_DoorProtocol,), {
        "header_timeout": header_timeout, "body_timeout": body_timeout,
        "max_connections": max_connections,
    })


class _CoalescingTransport:
    """The connection's transport, but what is written within one turn of the event loop
    leaves in ONE send.

    Why: uvicorn writes a response's head and its body separately, two send() calls and two
    TCP segments per answer (with TCP_NODELAY, which the door needs: see connection_made);
    each send wakes the peer, and on a busy 2-core machine that wake-up is also when the door
    loses its CPU (issue #19's profile: 13-22% of the door's samples sat in
    transport.write). Here write() only collects; the protocol flushes when a response is
    complete, and a call_soon flush catches any other write (an error answer, a 408) in the
    same loop turn, so nothing waits longer than that. Everything else is the real transport.
    """

    __slots__ = ("_pending", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _DoorProtocol(HttpToolsProtocol):
    header_timeout: float
    body_timeout: float
    max_connections: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "head" | "body" while a deadline runs, else None
        self._timer: asyncio.TimerHandle | None = None
        self._in_message = False  # from a request's first byte to its last
        self._head_bytes = 0  # bytes received while the current head was incomplete
        self._lingering = 0  # > 0: refused, half-closed, dropping what still arrives (bytes)
        self.app = self._capped(self.app)

    # deadlines -------------------------------------------------------------------------

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _too_slow(self) -> None:
        phase, self._timer, self._phase = self._phase, None, None
        if self.transport is None or self.transport.is_closing():
            return
        jsonlog.emit(
            log, "door_reject", level=logging.WARNING,
            src=self.client[0] if self.client else "-", reason="slow_client", signed=False,
            status=408, phase=phase,
        )
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_ANSWER)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn writes a response's head and body separately; without TCP_NODELAY Nagle
        # holds the body until the client's delayed ACK (~40 ms a request). asyncio sets it
        # only when the socket's proto reads IPPROTO_TCP, which the listening socket uvicorn
        # hands its worker processes does not (2 workers, issue #19's benchmark: 330
        # rejected/s without it, 1,280 with it)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # every write of uvicorn's (and ours) goes through it: one send per answer
        self.transport = _CoalescingTransport(transport)  # type: ignore[assignment]
        self._arm("head", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self._phase is None and not self._in_message:
            # the first byte of the next request on a kept-alive connection (or bytes that
            # never become a request: they are held to the head deadline all the same)
            self._arm("head", self.header_timeout)
        super().data_received(data)
        if self._phase == "head" and not self.transport.is_closing():
            # httptools has no limit of its own on a head's size (h11 had 16 KiB): a client
            # fast enough to beat the deadline could otherwise grow one without bound
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        """Answer 431, half-close, and drop what the client still sends until the linger
        ends (see LINGER_SECONDS)."""
        self._disarm()
        jsonlog.emit(
            log, "door_reject", level=logging.WARNING,
            src=self.client[0] if self.client else "-", reason="head_too_large",
            signed=False, status=431,
        )
        self.transport.write(_HEAD_TOO_LARGE_ANSWER)
        self.transport.flush()
        self._lingering = 1
        with contextlib.suppress(OSError, RuntimeError):
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # httptools' parser callbacks, in order for each request
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message, self._head_bytes = True, 0
        if self._phase is None:  # a pipelined request's first byte
            self._arm("head", self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self.body_timeout)  # disarmed at once if there is no body

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        self._disarm()

    def on_response_complete(self) -> None:
        self.transport.flush()  # the answer's head and body, in one send
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # the cap ---------------------------------------------------------------------------

    def _capped(self, app: Any) -> Any:
        protocol = self

        async def capped(scope: dict, receive: Any, send: Any) -> None:
            # `connections` counts this one too, and every slow client still sending
            if len(protocol.connections) <= protocol.max_connections:
                await app(scope, receive, send)
                return
            jsonlog.emit(
                log, "door_busy", level=logging.WARNING,
                src=protocol.client[0] if protocol.client else "-",
                connections=len(protocol.connections), cap=protocol.max_connections,
            )
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BUSY_BODY)).encode()),
                (b"retry-after", b"5"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": _BUSY_BODY})

        return capped
