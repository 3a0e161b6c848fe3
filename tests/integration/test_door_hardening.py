"""Attacks on the door (issue #14), each reproduced and seen refused: slow clients (slowloris),
the connection cap, deeply nested signed JSON, slash redirects, and webhook-ids colliding
across sources. The slow-client and cap tests run the real `vos door serve` (uvicorn with the
door's protocol) on 127.0.0.1, with short deadlines set through the environment."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from app.db.embedded import free_port
from app.door.app import Rejected, json_depth, parse_callback
from tests.integration.test_door import CREATE, Door, assert_fail2ban_filter_matches, rejections

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 3  # seconds, for the served door below
CAP = 5


@pytest.fixture
def door(app_pool, owner_dsn, make_tenant):
    return Door(app_pool, owner_dsn, make_tenant("hard"))


class Served:
    """`vos door serve` in a subprocess, its JSON log lines in a file."""

    def __init__(self, door: Door, dsn: str, log_path: Path, **env: str) -> None:
        self.door, self.port, self.log_path = door, free_port(), log_path
        self.out = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "door", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT,
            env={**os.environ, "DATABASE_URL": dsn,
                 "VOS_DOOR_SECRETS": json.dumps({door.source: door.current}), **env},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"{self.url}/ready", timeout=1)
                return
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log_path.read_text()
                time.sleep(0.2)
        raise AssertionError(f"the door did not start: {self.log_path.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signed_post(self, msg_id: str) -> httpx.Response:
        raw = json.dumps(CREATE).encode()
        ts = int(time.time())
        sig = Webhook(self.door.current).sign(msg_id, datetime.fromtimestamp(ts, UTC),
                                              raw.decode())
        return httpx.post(f"{self.url}/callbacks/{self.door.source}", content=raw, timeout=10,
                          headers={"webhook-id": msg_id, "webhook-timestamp": str(ts),
                                   "webhook-signature": sig})

    def lines(self, event: str) -> list[dict]:
        self.out.flush()
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith(f'{{"event": "{event}"')]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()
        return self.log_path.read_text()


@pytest.fixture
def served(door, app_dsn, tmp_path):
    server = Served(door, app_dsn, tmp_path / "door.log",
                    VOS_DOOR_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
                    VOS_DOOR_BODY_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
                    VOS_DOOR_MAX_CONNECTIONS=str(CAP))
    try:
        yield server
    finally:
        server.stop()


async def _dribble(port: int, first: bytes, give_up: float) -> float | None:
    """Send `first`, then one byte every 0.2 s of a never-ending header; return how long the
    door kept the connection (None: still open at `give_up`)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        while time.monotonic() - started < give_up:
            try:
                writer.write(b"x")
                await writer.drain()
                await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue  # still connected, nothing answered: keep dribbling
            except (ConnectionError, OSError):
                pass  # reset: the door closed on bytes it no longer reads
            # an answer (the 408), the end of the stream or a reset: the door let go
            return time.monotonic() - started
        return None
    finally:
        writer.close()


def test_200_slow_clients_are_cut_off_at_the_deadline_and_logged_for_fail2ban(served):
    head = f"POST /callbacks/{served.door.source} HTTP/1.1\r\nHost: door\r\nX-Slow: ".encode()
    body = (f"POST /callbacks/{served.door.source} HTTP/1.1\r\nHost: door\r\n"
            "Content-Length: 1000\r\n\r\n{").encode()

    async def attack(first: bytes, clients: int):
        return await asyncio.gather(
            *[_dribble(served.port, first, give_up=HEADER_TIMEOUT + 12) for _ in range(clients)])

    held = asyncio.run(asyncio.wait_for(attack(head, 200), HEADER_TIMEOUT + 30))
    # then one whose head is complete but whose body never ends (under the cap, so it is
    # admitted and the body deadline applies)
    held += asyncio.run(asyncio.wait_for(attack(body, 1), HEADER_TIMEOUT + 30))
    assert None not in held, "a slow client was never disconnected"
    assert max(held) < HEADER_TIMEOUT + 6  # the deadline plus scheduling slack on a busy host
    slow = served.lines("door_reject")
    slow = [line for line in slow if line["reason"] == "slow_client"]
    assert len(slow) == 201
    assert {(line["src"], line["signed"], line["status"]) for line in slow} == {
        ("127.0.0.1", False, 408)}
    assert sorted(line["phase"] for line in slow).count("body") == 1
    raw = next(line for line in served.log_path.read_text().splitlines()
               if '"slow_client"' in line)
    assert_fail2ban_filter_matches(raw, "127.0.0.1")
    # the door was not held: an honest sender is served right after
    assert served.signed_post("msg_after_slowloris").status_code == 202


def test_beyond_the_connection_cap_a_request_gets_503_and_is_logged(served):
    import socket

    holders = []
    try:
        for _ in range(CAP):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            sock.sendall(b"POST /callbacks/x HTTP/1.1\r\nHost: door\r\n")  # head never ends
            holders.append(sock)
        busy = served.signed_post("msg_over_cap")
    finally:
        for sock in holders:
            sock.close()
    assert busy.status_code == 503 and busy.json() == {"error": "busy"}, busy.text
    assert busy.headers["connection"] == "close"
    (line,) = served.lines("door_busy")
    assert line["src"] == "127.0.0.1" and line["cap"] == CAP
    # not a rejection: honest senders caught in someone's flood must not be banned
    assert not [r for r in served.lines("door_reject") if r["reason"] != "no_route"]
    deadline = time.monotonic() + 20
    while (r := served.signed_post(f"msg_cap_{time.monotonic_ns()}")).status_code == 503:
        assert time.monotonic() < deadline, "the cap never freed up"
        time.sleep(0.3)
    assert r.status_code == 202


def _nested(depth: int) -> bytes:
    inner = "[" * (depth - 1) + "]" * (depth - 1)  # the top-level object is one level
    return ('{"type": "task.create", "title": "deep", "body": ' + inner + "}").encode()


@pytest.mark.parametrize("depth", [33, 450, 900])
def test_deeply_nested_signed_json_is_400_too_deep_without_a_traceback(door, caplog, depth):
    caplog.set_level(logging.DEBUG)
    before = door.rows()
    r = door.post(_nested(depth))
    assert r.status_code == 400 and r.json()["error"] == "too_deep", r.text
    assert door.rows() == before
    (line,) = rejections(caplog)
    assert line["reason"] == "too_deep" and line["signed"] is True
    assert not [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]


def test_json_at_the_depth_limit_is_still_judged_on_its_content(door):
    body = {"type": "task.event", "task_id": "00000000-0000-0000-0000-000000000000",
            "kind": "deep", "data": {"x": json.loads("[" * 30 + "]" * 30)}}
    assert json_depth(json.dumps(body).encode()) == 32
    r = door.post(body)
    assert r.status_code == 422 and r.json()["error"] == "unknown_task", r.text


def test_brackets_inside_strings_do_not_count_and_a_parser_recursion_error_is_too_deep():
    assert json_depth(b'{"title": "' + b"[" * 500 + b'\\"{{{"}') == 1
    with pytest.raises(Rejected) as caught:  # limit lifted: the parser itself gives up
        parse_callback(b"[" * 200_000 + b"]" * 200_000, max_depth=10**6)
    assert caught.value.status == 400 and caught.value.reason == "too_deep"


@pytest.mark.parametrize("path", ["/callbacks/{source}/", "/callbacks/", "/callbacks//{source}"])
def test_a_trailing_slash_is_a_logged_404_never_a_redirect(door, caplog, path):
    r = door.client.post(path.format(source=door.source), content=json.dumps(CREATE),
                         headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    assert "evil.example" not in r.text
    assert rejections(caplog)[-1]["reason"] == "no_route"


def test_a_webhook_id_is_unique_per_source_not_across_tenants(app_pool, owner_dsn, make_tenant):
    ours, theirs = (Door(app_pool, owner_dsn, make_tenant(n)) for n in ("ours", "theirs"))
    first = theirs.post(CREATE, msg_id="msg_shared_1")
    second = ours.post(CREATE, msg_id="msg_shared_1")
    assert first.status_code == 202 and second.status_code == 202, second.text
    assert second.json()["status"] == "accepted" and second.json()["task_id"] != \
        first.json()["task_id"]
    again = ours.post(CREATE, msg_id="msg_shared_1")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert ours.rows()["callbacks"] == 1 and theirs.rows()["callbacks"] == 1
    with psycopg.connect(owner_dsn) as conn:
        (definition,) = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'callbacks'::regclass AND contype = 'u'").fetchone()
    assert definition == "UNIQUE (source, webhook_id)"


@pytest.mark.parametrize(("field", "value"), [
    ("door_header_timeout_seconds", 0), ("door_body_timeout_seconds", -1),
    ("door_idle_timeout_seconds", 0), ("door_max_connections", 0), ("door_max_json_depth", 1),
])
def test_door_limits_refuse_values_that_would_disable_them(field, value):
    from pydantic import ValidationError

    from app.door.protocol import door_protocol
    from app.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert field in str(caught.value)
    with pytest.raises(ValueError, match="max_connections"):
        door_protocol(header_timeout=1, body_timeout=1, max_connections=0)
