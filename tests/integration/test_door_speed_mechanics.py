"""The door's fast path (issue #19), by its mechanisms, not its timings: one round trip per
callback (`door_accept`), callbacks arriving together written in one transaction
(`GroupCommit`, `door_accept_batch`), idempotency under concurrent duplicates, row-level
security still confining what the function writes, and NOTIFY still sent for every event.
Real Postgres as `vos_app`, the door's own async pool; no timing assertions."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from app.door.app import GroupCommit, Rejected, create_door_app, parse_callback
from app.door.pool import BoundedAsyncConnection, open_async_pool
from app.settings import decode_whsec

CREATE = {"type": "task.create", "title": "From the edge", "priority": "P2"}


class Counting(BoundedAsyncConnection):
    """Records every statement the door sends (class-wide, reset per test)."""

    sent: list[tuple[str, object]] = []

    async def execute(self, query, params=None, **kwargs):  # type: ignore[override]
        Counting.sent.append((str(query), params))
        return await super().execute(query, params, **kwargs)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def bind(owner_dsn: str, tenant) -> str:
    source = f"fast-{secrets.token_hex(3)}"
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO door_sources (source, tenant_id) VALUES (%s, %s)",
                     [source, tenant.id])
    return source


def rows(owner_dsn: str, tenant) -> dict:
    with psycopg.connect(owner_dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = %s",
                                [tenant.id]).fetchone()[0]
                for t in ("callbacks", "tasks", "task_events")}


async def with_pool(app_dsn: str, work, **pool_options):
    """Run `work(pool)` with an opened door pool that counts statements."""
    Counting.sent = []
    pool = open_async_pool(app_dsn, min_size=2, max_size=4, timeout=10,
                           connection_class=Counting, **pool_options)
    await pool.open(wait=True, timeout=30)
    try:
        return await asyncio.wait_for(work(pool), 60)
    finally:
        await pool.close()


def signed(secret: str, body: dict, msg_id: str | None = None) -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    msg_id = msg_id or f"msg_{secrets.token_hex(8)}"
    ts = int(time.time())
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), raw.decode())
    return raw, {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig,
                 "content-type": "application/json"}


def test_an_accepted_callback_is_one_round_trip(app_dsn, owner_dsn, make_tenant):
    tenant = make_tenant("fast")
    source, secret = bind(owner_dsn, tenant), new_secret()

    async def work(pool):
        app = create_door_app(pool, {source: [decode_whsec(secret)]})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            raw, headers = signed(secret, CREATE)
            warm = await client.post(f"/callbacks/{source}", content=raw, headers=headers)
            Counting.sent.clear()  # after the pool's first checkout check
            raw, headers = signed(secret, CREATE)
            answer = await client.post(f"/callbacks/{source}", content=raw, headers=headers)
            return warm, answer

    # check_idle: the checkout check would run again only after an hour idle
    warm, answer = asyncio.run(with_pool(app_dsn, work, check_idle=3600))
    assert warm.status_code == 202 and answer.status_code == 202, answer.text
    assert [q.split("(")[0] for q, _ in Counting.sent] == ["SELECT door_accept"]
    assert rows(owner_dsn, tenant) == {"callbacks": 2, "tasks": 2, "task_events": 2}
    with psycopg.connect(owner_dsn) as conn:
        status, actor = conn.execute(
            "SELECT t.status::text, e.payload->>'actor' FROM tasks t JOIN task_events e "
            "ON e.task_id = t.id WHERE t.id = %s", [answer.json()["task_id"]]).fetchone()
    assert (status, actor) == ("Active", f"door:{source}")


def test_callbacks_arriving_together_share_one_transaction(app_dsn, owner_dsn, make_tenant):
    tenant = make_tenant("batch")
    source = bind(owner_dsn, tenant)

    async def work(pool):
        writer = GroupCommit(pool, max_inflight=1)
        calls = []
        for i in range(10):
            raw = json.dumps({**CREATE, "title": f"together {i}"}).encode()
            calls.append(writer.store(source, f"msg_{i}_{secrets.token_hex(4)}",
                                      int(time.time()), raw, parse_callback(raw)))
        return await asyncio.gather(*calls)

    results = asyncio.run(with_pool(app_dsn, work))
    assert [r["status"] for r in results] == ["accepted"] * 10
    # the first went alone; the nine that queued behind it went as one batch (one commit)
    sizes = [1 if "door_accept(" in q else len(params[0]) for q, params in Counting.sent
             if "door_accept" in q]
    assert sizes == [1, 9]
    assert rows(owner_dsn, tenant) == {"callbacks": 10, "tasks": 10, "task_events": 10}


def test_concurrent_duplicates_in_one_batch_are_accepted_once(app_dsn, owner_dsn, make_tenant):
    tenant = make_tenant("dupes")
    source = bind(owner_dsn, tenant)
    raw = json.dumps(CREATE).encode()

    async def work(pool):
        writer = GroupCommit(pool, max_inflight=1)
        same = [writer.store(source, "msg_same", int(time.time()), raw, parse_callback(raw))
                for _ in range(6)]
        return await asyncio.gather(*same)

    results = asyncio.run(with_pool(app_dsn, work))
    assert sorted(r["status"] for r in results) == ["accepted"] + ["duplicate"] * 5
    assert rows(owner_dsn, tenant) == {"callbacks": 1, "tasks": 1, "task_events": 1}


def test_a_batch_with_a_bad_callback_is_replayed_one_by_one(app_dsn, owner_dsn, make_tenant):
    """An unknown task aborts the batch; each callback then gets its own exact answer."""
    tenant = make_tenant("replay")
    source = bind(owner_dsn, tenant)
    good = json.dumps(CREATE).encode()
    stray = json.dumps({"type": "task.event", "task_id": str(uuid.uuid4()), "kind": "progress",
                        "data": {}}).encode()

    async def work(pool):
        writer = GroupCommit(pool, max_inflight=1)
        calls = [writer.store(source, f"msg_{i}_{secrets.token_hex(4)}", int(time.time()),
                              body, parse_callback(body))
                 for i, body in enumerate([good, good, stray, good])]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(with_pool(app_dsn, work))
    assert [r["status"] for r in (results[0], results[1], results[3])] == ["accepted"] * 3
    assert isinstance(results[2], Rejected) and results[2].reason == "unknown_task"
    assert rows(owner_dsn, tenant) == {"callbacks": 3, "tasks": 3, "task_events": 3}


def test_rls_still_confines_door_accept(app_dsn, owner_dsn, make_tenant):
    """It runs as vos_app (SECURITY INVOKER): another tenant's task is invisible to it, and
    the tenant it sets lives only as long as its own statement's transaction."""
    mine, theirs = make_tenant("mine"), make_tenant("theirs")
    my_source = bind(owner_dsn, mine)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        definers = conn.execute(
            "SELECT proname, prosecdef FROM pg_proc WHERE proname LIKE 'door_accept%' "
            "ORDER BY proname").fetchall()
        (their_task,) = conn.execute(
            "INSERT INTO tasks (tenant_id, title) VALUES (%s, 'private') RETURNING id",
            [theirs.id]).fetchone()
    assert definers == [("door_accept", False), ("door_accept_batch", False)]
    before = rows(owner_dsn, theirs)
    payload = json.dumps({"type": "task.event", "task_id": str(their_task), "kind": "x"})
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.NoDataFound):
            conn.execute("SELECT door_accept(%s, 'msg_x', now(), %s, %s, NULL, NULL, NULL, "
                         "NULL, 'progress')", [my_source, payload, their_task])
        outcome = conn.execute(
            "SELECT door_accept(%s, 'msg_y', now(), %s, gen_random_uuid(), 't', '', 'P1', "
            "false, NULL)", [my_source, json.dumps(CREATE)]).fetchone()[0]
        leaked = conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0]
        # a source nobody bound: refused before anything is written
        unbound = conn.execute(
            "SELECT door_accept('nobody-here', 'msg_z', now(), '{}', gen_random_uuid(), 't', "
            "'', 'P1', false, NULL)").fetchone()[0]
    assert outcome == "accepted" and unbound == "not_bound"
    assert leaked in (None, "")
    assert rows(owner_dsn, theirs) == before
    assert rows(owner_dsn, mine) == {"callbacks": 1, "tasks": 1, "task_events": 1}


def test_every_batched_callback_still_notifies(app_dsn, owner_dsn, make_tenant):
    tenant = make_tenant("notify")
    source = bind(owner_dsn, tenant)
    with psycopg.connect(owner_dsn, autocommit=True) as listener:
        listener.execute("LISTEN task_events")

        async def work(pool):
            writer = GroupCommit(pool, max_inflight=1)
            calls = []
            for i in range(4):
                raw = json.dumps({**CREATE, "title": f"heard {i}"}).encode()
                calls.append(writer.store(source, f"msg_n{i}_{secrets.token_hex(4)}",
                                          int(time.time()), raw, parse_callback(raw)))
            return await asyncio.gather(*calls)

        results = asyncio.run(with_pool(app_dsn, work))
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=10, stop_after=4)]
    mine = [n for n in heard if n["tenant_id"] == str(tenant.id)]
    assert sorted(n["task_id"] for n in mine) == sorted(r["task_id"] for r in results)
    assert {n["kind"] for n in mine} == {"created"}


def test_postgres_down_is_still_a_503_on_the_async_path(caplog):
    from app.db.embedded import free_port

    secret = new_secret()
    dead = f"postgresql://vos_app:x@127.0.0.1:{free_port()}/vos"

    async def work():
        pool = open_async_pool(dead, min_size=1, max_size=2, timeout=1)
        await pool.open(wait=False)
        try:
            app = create_door_app(pool, {"edge": [decode_whsec(secret)]})
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
                raw, headers = signed(secret, CREATE)
                return await client.post("/callbacks/edge", content=raw, headers=headers)
        finally:
            await pool.close(timeout=1)

    answer = asyncio.run(asyncio.wait_for(work(), 30))
    assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
    assert any('"door_db_unavailable"' in r.getMessage() for r in caplog.records)
