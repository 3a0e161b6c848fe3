"""The served door (issue #19's speed work), by its mechanisms, over real HTTP on loopback:
its HTTP protocol on httptools (deadlines, pipelining, one answer per request, a bounded head)
and `VOS_DOOR_WORKERS` processes sharing one port (one webhook-id accepted once across them,
every rejection still logged). `vos door serve` in a subprocess, as in test_door_hardening;
no timing assertions beyond the deadlines the door itself promises."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.integration.test_door import CREATE, Door, assert_fail2ban_filter_matches
from tests.integration.test_door_hardening import Served

DEADLINE = 3  # seconds: the served door's head and body deadlines below


@pytest.fixture
def door(app_pool, owner_dsn, make_tenant):
    return Door(app_pool, owner_dsn, make_tenant("served"))


def serve(door, app_dsn, tmp_path, **env: str) -> Served:
    return Served(door, app_dsn, tmp_path / "door.log",
                  VOS_DOOR_HEADER_TIMEOUT_SECONDS=str(DEADLINE),
                  VOS_DOOR_BODY_TIMEOUT_SECONDS=str(DEADLINE), **env)


@pytest.fixture
def served(door, app_dsn, tmp_path):
    server = serve(door, app_dsn, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def request(served: Served, body: dict | bytes, *, msg_id: str | None = None,
            forged: bool = False) -> bytes:
    """One POST to the door's route as raw HTTP/1.1 bytes, signed (or forged)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    ts = int(time.time())
    sig = Webhook(served.door.current).sign(msg_id, datetime.fromtimestamp(ts, UTC),
                                            raw.decode())
    if forged:
        sig = "v1," + "A" * 43 + "="
    head = (f"POST /callbacks/{served.door.source} HTTP/1.1\r\nhost: door\r\n"
            f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n"
            f"webhook-id: {msg_id}\r\nwebhook-timestamp: {ts}\r\n"
            f"webhook-signature: {sig}\r\n\r\n")
    return head.encode() + raw


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict, dict]:
    """One HTTP answer: status, headers (lowercased names), JSON body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(head[0].split()[1]), headers, json.loads(body) if body else {}


async def closed_after(reader: asyncio.StreamReader, give_up: float) -> float | None:
    """Seconds until the door closes the connection (None: still open at `give_up`)."""
    started = time.monotonic()
    try:
        while time.monotonic() - started < give_up:
            try:
                if not await asyncio.wait_for(reader.read(4096), 0.2):
                    return time.monotonic() - started
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        return time.monotonic() - started
    return None


def test_pipelined_requests_get_their_own_answers_in_order(served):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            writer.write(request(served, CREATE) + request(served, CREATE, forged=True)
                         + request(served, {**CREATE, "title": "third"}))
            return [await asyncio.wait_for(read_answer(reader), 20) for _ in range(3)]
        finally:
            writer.close()

    answers = asyncio.run(go())
    assert [status for status, _, _ in answers] == [202, 401, 202]
    assert answers[1][2]["error"] == "bad_signature"
    assert {a[1]["content-type"] for a in answers} == {"application/json"}
    assert served.door.rows() == {"callbacks": 2, "tasks": 2, "task_events": 2}


def test_a_kept_alive_connection_that_dribbles_its_next_head_is_cut_off(served):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            writer.write(request(served, CREATE))
            status = (await asyncio.wait_for(read_answer(reader), 20))[0]
            writer.write(f"POST /callbacks/{served.door.source} HTTP/1.1\r\nX-Slow: ".encode())
            started = time.monotonic()
            while time.monotonic() - started < DEADLINE + 12:
                try:
                    writer.write(b"x")
                    await writer.drain()
                    answer = await asyncio.wait_for(reader.read(4096), 0.2)
                    return status, answer, time.monotonic() - started
                except TimeoutError:
                    continue
                except (ConnectionError, OSError):
                    return status, b"", time.monotonic() - started
            return status, None, None
        finally:
            writer.close()

    status, answer, held = asyncio.run(go())
    assert status == 202
    assert held is not None and held < DEADLINE + 6, "the slow second head was never cut off"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    (line,) = [r for r in served.lines("door_reject") if r["reason"] == "slow_client"]
    assert (line["phase"], line["signed"], line["status"]) == ("head", False, 408)


def test_bytes_that_never_become_a_request_are_held_to_the_deadline(served):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            started = time.monotonic()
            while time.monotonic() - started < DEADLINE + 12:
                try:
                    writer.write(b"\r\n")
                    await writer.drain()
                except (ConnectionError, OSError):
                    return time.monotonic() - started
                held = await closed_after(reader, 0.2)
                if held is not None:
                    return time.monotonic() - started
            return None
        finally:
            writer.close()

    held = asyncio.run(go())
    assert held is not None and held < DEADLINE + 6


def test_an_oversized_head_is_refused_but_a_large_body_is_not(served):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            # head and body in one write: the body's bytes do not count against the head
            big = {**CREATE, "body": "x" * 60000}
            writer.write(request(served, big))
            status = (await asyncio.wait_for(read_answer(reader), 20))[0]
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            writer.write(b"POST /callbacks/x HTTP/1.1\r\nhost: door\r\n")
            for i in range(80):  # 80 KiB of headers, fast: no deadline is missed
                writer.write(f"x-pad-{i}: {'a' * 1000}\r\n".encode())
            # the door lingers after refusing: it keeps reading, so the client's writes
            # all succeed (no reset) and the answer is there to read, however the race goes
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 20)  # to the door's EOF
            return status, answer
        finally:
            writer.close()

    status, answer = asyncio.run(go())
    assert status == 202
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert answer.endswith(b'{"error": "head_too_large"}'), answer
    (line,) = [r for r in served.lines("door_reject") if r["reason"] == "head_too_large"]
    assert line["src"] == "127.0.0.1" and line["status"] == 431 and line["signed"] is False


@pytest.fixture
def served_by_two(door, app_dsn, tmp_path):
    server = serve(door, app_dsn, tmp_path, VOS_DOOR_WORKERS="2", VOS_DB_POOL_MAX_SIZE="4")
    try:
        yield server
    finally:
        server.stop()


def test_two_workers_accept_one_webhook_id_once_and_log_every_rejection(served_by_two):
    served = served_by_two
    same = request(served, CREATE, msg_id="msg_across_workers")

    async def client(requests: list[bytes]) -> list[int]:
        # one connection per client: the kernel spreads them over both workers
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            statuses = []
            for raw in requests:
                writer.write(raw)
                statuses.append((await asyncio.wait_for(read_answer(reader), 20))[0])
            return statuses
        finally:
            writer.close()

    async def go():
        return await asyncio.gather(*[
            client([same, request(served, CREATE, forged=True), same]) for _ in range(12)])

    statuses = [s for per_client in asyncio.run(go()) for s in per_client]
    assert sorted(statuses) == [200] * 23 + [202] + [401] * 12
    assert served.door.rows() == {"callbacks": 1, "tasks": 1, "task_events": 1}
    refused = [r for r in served.lines("door_reject") if r["reason"] == "bad_signature"]
    assert len(refused) == 12
    assert {(r["src"], r["signed"], r["status"]) for r in refused} == {("127.0.0.1", False, 401)}
    raw = next(line for line in served.log_path.read_text().splitlines()
               if '"bad_signature"' in line)
    assert_fail2ban_filter_matches(raw, "127.0.0.1")
    # two worker processes served the port (uvicorn's supervisor is their parent)
    assert len(_children(served.proc.pid)) >= 2


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_answers_on_a_kept_alive_connection_arrive_whole(served):
    """Ten answers on one connection, read with a plain socket: each arrives complete."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as sock:
        stream = sock.makefile("rb")
        for _ in range(10):
            sock.sendall(request(served, CREATE, forged=True))
            status = stream.readline()
            assert status.startswith(b"HTTP/1.1 401"), status
            length = 0
            while (line := stream.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert json.loads(stream.read(length))["error"] == "bad_signature"
    assert len([r for r in served.lines("door_reject") if r["reason"] == "bad_signature"]) == 10
