"""The door's HTTP/1.1 connection handling: deadlines and a connection cap for slow clients.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request that is *being* sent, so a client dribbling its headers one byte at a time holds a
socket forever (slowloris). `door_protocol(...)` returns an `H11Protocol` subclass (passed as
uvicorn's `http=`) that adds, per request:

- a head deadline: the request line and headers complete within `header_timeout` seconds of
  the connection opening (or of the first byte of the next request on a kept-alive one);
- a body deadline: the body complete within `body_timeout` seconds after the head;
- a cap: a request arriving while more than `max_connections` connections are open is
  answered 503 `{"error": "busy"}` at once (the ASGI app never runs).

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

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app import jsonlog

log = logging.getLogger("vos.door")

_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   b"content-length: 25\r\nconnection: close\r\n\r\n"
                   b'{"error": "slow_client"}\n')
_BUSY_BODY = b'{"error": "busy"}'


def door_protocol(*, header_timeout: float, body_timeout: float,
                  max_connections: int) -> type[H11Protocol]:
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


class _DoorProtocol(H11Protocol):
    header_timeout: float
    body_timeout: float
    max_connections: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "head" | "body" while a deadline runs, else None
        self._timer: asyncio.TimerHandle | None = None
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

    def _follow(self) -> None:
        """Move the deadline along with h11's view of the client's request."""
        state = self.conn.their_state
        if self._phase == "head" and state is not h11.IDLE:
            if state is h11.SEND_BODY:
                self._arm("body", self.body_timeout)
            else:
                self._disarm()
        elif self._phase == "body" and state is not h11.SEND_BODY:
            self._disarm()
        elif self._phase is None and state is h11.SEND_BODY:
            # a pipelined request whose head was already buffered
            self._arm("body", self.body_timeout)

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
        self._arm("head", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            # the first byte of the next request on a kept-alive connection
            self._arm("head", self.header_timeout)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._follow()
            if self._phase is None and self.conn.their_state is h11.IDLE \
                    and self.conn.trailing_data[0]:
                self._arm("head", self.header_timeout)  # part of a pipelined head is waiting

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
