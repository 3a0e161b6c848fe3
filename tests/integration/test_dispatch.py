"""The dispatch engine on a real Postgres: status machine, events + NOTIFY, SKIP LOCKED workers,
health, and the gate that refuses an unconfined database role."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.db import UnsafeDatabaseRole, assert_app_role_is_confined, open_pool, tenant_transaction
from app.db.embedded import free_port
from app.dispatch.api import create_api_app
from app.dispatch.worker import ClaimLost, Worker, claim_next, complete
from app.ui.auth import create_operator, new_token

_TOKENS: dict[uuid.UUID, str] = {}
_OWNER: list[str] = []


@pytest.fixture(scope="module")
def api(app_pool, owner_dsn):
    _OWNER[:] = [owner_dsn]
    return TestClient(create_api_app(app_pool), base_url="http://127.0.0.1")


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("dispatch")


def headers(tenant) -> dict:
    """An operator token of `tenant` as a Bearer header (the tenant comes from the token)."""
    if tenant.id not in _TOKENS:
        with psycopg.connect(_OWNER[0], autocommit=True) as conn:
            _TOKENS[tenant.id] = create_operator(conn, tenant.id, "dispatch-test")
    return {"Authorization": f"Bearer {_TOKENS[tenant.id]}"}


def events_of(app_pool, tenant, task_id) -> list[str]:
    with tenant_transaction(app_pool, tenant.id) as conn:
        rows = conn.execute(
            "SELECT kind FROM task_events WHERE task_id = %s ORDER BY id", [task_id]
        ).fetchall()
    return [r["kind"] for r in rows]


def test_status_machine_walks_the_allowed_path_and_writes_an_event_per_step(api, app_pool, tenant):
    h = headers(tenant)
    task = api.post("/tasks", json={"title": "Ship it", "priority": "P0"}, headers=h).json()
    assert task["status"] == "Draft"
    for target in ["Active", "Review", "Rejected", "Active", "Review", "Approved"]:
        r = api.post(f"/tasks/{task['id']}/move", json={"status": target}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == target
    assert events_of(app_pool, tenant, task["id"]) == ["created"] + ["status_changed"] * 6


@pytest.mark.parametrize(
    ("path", "target"),
    [([], "Approved"), ([], "Review"), (["Active"], "Approved"), (["Active"], "Draft"),
     (["Active", "Review", "Approved"], "Active"), (["Active", "Review", "Rejected"], "Review")],
)
def test_forbidden_steps_are_refused_with_409_and_change_nothing(api, app_pool, tenant, path,
                                                                 target):
    h = headers(tenant)
    task = api.post("/tasks", json={"title": "t"}, headers=h).json()
    for step in path:
        assert api.post(f"/tasks/{task['id']}/move", json={"status": step}, headers=h).is_success
    before = events_of(app_pool, tenant, task["id"])
    r = api.post(f"/tasks/{task['id']}/move", json={"status": target}, headers=h)
    assert r.status_code == 409
    assert "cannot move from" in r.json()["detail"]
    assert api.get(f"/tasks/{task['id']}", headers=h).json()["status"] == (path or ["Draft"])[-1]
    assert events_of(app_pool, tenant, task["id"]) == before


def test_the_database_refuses_a_forbidden_step_even_from_direct_sql(app_pool, tenant):
    with tenant_transaction(app_pool, tenant.id) as conn:
        (task_id,) = conn.execute(
            "INSERT INTO tasks (tenant_id, title) VALUES (%s, 'x') RETURNING id", [tenant.id]
        ).fetchone().values()
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot move from Draft to Approved"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("UPDATE tasks SET status = 'Approved' WHERE id = %s", [task_id])
    with pytest.raises(psycopg.errors.CheckViolation, match="starts as Draft or Active"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute(
                "INSERT INTO tasks (tenant_id, title, status) VALUES (%s, 'y', 'Review')",
                [tenant.id],
            )


def test_assign_list_and_delete_through_the_api(api, app_pool, tenant, make_tenant):
    h = headers(tenant)
    boss = api.post("/agents", json={"name": "Ada", "role": "CTO"}, headers=h).json()
    dev = api.post("/agents", json={"name": "Bob", "manager_id": boss["id"],
                                    "model_preferences": {"default": "claude"},
                                    "budget_usd": "12.50"}, headers=h).json()
    assert dev["manager_id"] == boss["id"]
    task = api.post("/tasks", json={"title": "t"}, headers=h).json()
    r = api.post(f"/tasks/{task['id']}/assign", json={"assignee_id": dev["id"]}, headers=h)
    assert r.json()["assignee_id"] == dev["id"]
    listed = api.get("/tasks", params={"assignee_id": dev["id"]}, headers=h).json()
    assert [t["id"] for t in listed] == [task["id"]]
    # an agent of another tenant is refused with a clear message
    other = make_tenant("other")
    stranger = api.post("/agents", json={"name": "Eve"}, headers=headers(other)).json()
    r = api.post(f"/tasks/{task['id']}/assign", json={"assignee_id": stranger["id"]}, headers=h)
    assert r.status_code == 422 and "not an agent of this tenant" in r.json()["detail"]
    assert events_of(app_pool, tenant, task["id"]) == ["created", "assigned"]
    assert api.delete(f"/tasks/{task['id']}", headers=h).status_code == 204
    assert api.get(f"/tasks/{task['id']}", headers=h).status_code == 404
    # the audit trail outlives the task
    assert events_of(app_pool, tenant, task["id"]) == ["created", "assigned", "deleted"]


def test_only_draft_tasks_can_be_deleted(api, tenant):
    h = headers(tenant)
    task = api.post("/tasks", json={"title": "t", "status": "Active"}, headers=h).json()
    draft = api.post("/tasks", json={"title": "d"}, headers=h).json()
    assert [t["id"] for t in api.get("/tasks", params={"status": "Active"}, headers=h).json()] \
        == [task["id"]]
    assert [t["id"] for t in api.get("/tasks", params={"status": "Draft"}, headers=h).json()] \
        == [draft["id"]]
    r = api.delete(f"/tasks/{task['id']}", headers=h)
    assert r.status_code == 409 and "only Draft tasks" in r.json()["detail"]


def test_task_events_are_append_only_for_the_app_and_the_owner(app_pool, owner_dsn, tenant):
    with tenant_transaction(app_pool, tenant.id) as conn:
        conn.execute("INSERT INTO tasks (tenant_id, title) VALUES (%s, 'x')", [tenant.id])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("DELETE FROM task_events")
    with psycopg.connect(owner_dsn) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege, match="append-only"
    ):
        conn.execute("UPDATE task_events SET kind = 'forged' WHERE tenant_id = %s", [tenant.id])


def _listen(app_dsn: str, ready: threading.Event, out: list, seconds: float) -> None:
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("LISTEN task_events")
        ready.set()
        for note in conn.notifies(timeout=seconds, stop_after=1):
            out.append(json.loads(note.payload))


def test_notify_reaches_a_listener_on_commit_and_not_on_rollback(app_pool, app_dsn, tenant):
    got: list = []
    ready = threading.Event()
    listener = threading.Thread(target=_listen, args=(app_dsn, ready, got, 5.0))
    listener.start()
    assert ready.wait(5)
    with pytest.raises(RuntimeError):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("INSERT INTO tasks (tenant_id, title) VALUES (%s, 'gone')", [tenant.id])
            raise RuntimeError("roll back")
    with tenant_transaction(app_pool, tenant.id) as conn:
        task_id = conn.execute(
            "INSERT INTO tasks (tenant_id, title) VALUES (%s, 'kept') RETURNING id", [tenant.id]
        ).fetchone()["id"]
    listener.join(10)
    assert len(got) == 1, "exactly one notification: the rolled-back insert sent none"
    assert got[0]["tenant_id"] == str(tenant.id)
    assert got[0]["task_id"] == str(task_id)
    assert got[0]["kind"] == "created"
    assert set(got[0]) == {"id", "tenant_id", "task_id", "kind"}  # ids only, no content


TASKS = 3000
WORKERS = 6


def test_skip_locked_workers_never_claim_a_task_twice(app_dsn, owner_dsn, make_tenant):
    """Several workers, each its own Postgres session, drain thousands of Active tasks."""
    tenant = make_tenant("queue")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(
            """INSERT INTO tasks (tenant_id, title, status, priority)
               SELECT %s, 'job ' || g, 'Active', (ARRAY['P0','P1','P2'])[1 + g %% 3]::task_priority
                 FROM generate_series(1, %s) g""",
            [tenant.id, TASKS],
        )
    pool = open_pool(app_dsn, min_size=WORKERS, max_size=WORKERS, name="skip-locked")
    pool.wait(timeout=30)
    claims: list[list] = [[] for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)

    def drain(n: int) -> None:
        start.wait(10)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            task = claim_next(pool, tenant.id, f"w{n}")
            if task is None:
                return
            claims[n].append(task["id"])

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        pool.close()
    everything = [task_id for per_worker in claims for task_id in per_worker]
    twice = [task_id for task_id, n in Counter(everything).items() if n > 1]
    assert not twice, f"{len(twice)} task(s) claimed twice, e.g. {twice[:3]}"
    assert len(everything) == TASKS
    assert sum(1 for c in claims if c) >= 2, "the workers did not actually run concurrently"
    with psycopg.connect(owner_dsn) as conn:
        per_task = conn.execute(
            """SELECT count(*) FILTER (WHERE kind = 'claimed') AS claims, count(DISTINCT task_id)
                 FROM task_events WHERE tenant_id = %s""",
            [tenant.id],
        ).fetchone()
    assert per_task == (TASKS, TASKS), "every task has exactly one 'claimed' event"


def test_worker_completes_into_review_and_releases_on_failure(app_pool, tenant):
    with tenant_transaction(app_pool, tenant.id) as conn:
        ok, bad = (
            conn.execute(
                "INSERT INTO tasks (tenant_id, title, status, priority) "
                "VALUES (%s, %s, 'Active', %s) RETURNING id", [tenant.id, title, prio]
            ).fetchone()["id"]
            for title, prio in (("fine", "P0"), ("boom", "P1"))
        )

    def handler(task: dict) -> dict:
        if task["title"] == "boom":
            raise RuntimeError("model refused")
        return {"summary": "done"}

    worker = Worker(app_pool, "host-a/1", handler)
    assert worker.run_once(tenant.id) and worker.run_once(tenant.id)
    with tenant_transaction(app_pool, tenant.id) as conn:
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM tasks").fetchall()}
    assert rows[ok]["status"] == "Review" and rows[ok]["claimed_by"] is None
    assert rows[bad]["status"] == "Active" and rows[bad]["claimed_by"] is None
    assert events_of(app_pool, tenant, ok) == ["created", "claimed", "work.result",
                                               "status_changed"]
    assert events_of(app_pool, tenant, bad) == ["created", "claimed", "work.failed", "released"]


def test_an_expired_lease_can_be_reclaimed_and_the_late_worker_is_told(app_pool, tenant):
    with tenant_transaction(app_pool, tenant.id) as conn:
        conn.execute(
            "INSERT INTO tasks (tenant_id, title, status) VALUES (%s, 'x', 'Active')", [tenant.id]
        )
    first = claim_next(app_pool, tenant.id, "dead-worker", lease_seconds=1)
    assert claim_next(app_pool, tenant.id, "other", lease_seconds=60) is None, "lease ignored"
    time.sleep(1.1)
    again = claim_next(app_pool, tenant.id, "second", lease_seconds=60)
    assert again is not None and again["id"] == first["id"]
    with pytest.raises(ClaimLost, match="no longer claimed by dead-worker"):
        complete(app_pool, tenant.id, first["id"], "dead-worker", {})


def test_health_and_readiness_as_the_app_role(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200 and r.json()["role"] == "vos_app"


def test_postgres_down_gives_503_within_seconds_and_says_so(caplog):
    dead = f"postgresql://vos_app:x@127.0.0.1:{free_port()}/vos"
    pool = open_pool(dead, timeout=2)
    try:
        client = TestClient(create_api_app(pool), base_url="http://127.0.0.1")
        started = time.monotonic()
        ready = client.get("/readyz")
        # the token check itself needs Postgres: 503 (not 401) while it is down
        write = client.post("/tasks", json={"title": "t"},
                            headers={"Authorization": f"Bearer {new_token(uuid.uuid4())}"})
        elapsed = time.monotonic() - started
    finally:
        pool.close(timeout=1)
    assert ready.status_code == 503 and write.status_code == 503
    assert "Postgres is unavailable" in write.json()["detail"]
    assert elapsed < 10, f"took {elapsed:.1f}s to answer 503"
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "vos.api"]
    assert [line["event"] for line in logged] == ["db_unavailable", "db_unavailable"]


def test_the_app_refuses_to_run_as_an_unconfined_role(owner_dsn):
    pool = open_pool(owner_dsn)
    try:
        pool.wait(timeout=10)
        with pytest.raises(UnsafeDatabaseRole, match="is a superuser.*vos_app"):
            assert_app_role_is_confined(pool)
        r = TestClient(create_api_app(pool), base_url="http://127.0.0.1").get("/readyz")
        assert r.status_code == 503 and "row-level" in r.json()["detail"]
    finally:
        pool.close()


def test_a_real_outage_gives_503_within_seconds_and_recovers(tmp_path, migrated_db):
    """A second, private cluster is stopped under a running API and started again."""
    from pathlib import Path

    from psycopg.conninfo import make_conninfo

    from app.db import migrate
    from app.db.embedded import EmbeddedPostgres

    base = Path(tmp_path)
    for p in (base, *base.parents):
        if p == Path("/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o001)  # the postgres user must traverse pytest's tmp dirs
    server = EmbeddedPostgres(base / "outage", fast_unsafe=True)
    try:
        owner = server.start()
        migrate(owner, app_password=migrated_db.app_password, log=lambda _m: None)
        pool = open_pool(make_conninfo(owner, user="vos_app", password=migrated_db.app_password),
                         timeout=2)
        client = TestClient(create_api_app(pool), base_url="http://127.0.0.1")
        assert client.get("/readyz").status_code == 200
        server.stop()
        started = time.monotonic()
        down = client.get("/readyz")
        assert down.status_code == 503 and time.monotonic() - started < 10
        server.start()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover after Postgres returned"
            time.sleep(0.5)
        pool.close()
    finally:
        server.destroy()


def summarise(task: dict) -> dict:
    """A handler for `vos worker run` in the test below (importable by module path)."""
    return {"summary": task["title"].upper()}


def test_two_vos_worker_processes_drain_a_queue_without_overlap(app_dsn, owner_dsn, make_tenant):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tenant = make_tenant("procs")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("INSERT INTO tasks (tenant_id, title, status) SELECT %s, 'job ' || g, "
                     "'Active' FROM generate_series(1, 300) g", [tenant.id])
    env = {**os.environ, "DATABASE_URL": app_dsn}
    cmd = [sys.executable, "-m", "cli", "worker", "run", "--tenant", str(tenant.id),
           "--handler", "tests.integration.test_dispatch:summarise", "--drain"]
    procs = [subprocess.Popen([*cmd, "--id", f"proc-{n}"], cwd=Path(__file__).parents[2],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for n in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    worked = [int(out.strip().splitlines()[-1].split()[1]) for out in outputs]
    assert sum(worked) == 300, outputs
    with psycopg.connect(owner_dsn) as conn:
        statuses = conn.execute("SELECT status::text, count(*) FROM tasks WHERE tenant_id = %s "
                                "GROUP BY 1", [tenant.id]).fetchall()
        results = conn.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM task_events WHERE tenant_id = %s "
            "AND kind = 'work.result'", [tenant.id]).fetchone()
    assert statuses == [("Review", 300)]
    assert results == (300, 300), "a task was worked twice"


def test_vos_worker_run_refuses_a_bad_handler(app_dsn):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-m", "cli", "worker", "run", "--tenant", str(uuid.uuid4()),
         "--handler", "no_such_module:f", "--drain"], cwd=Path(__file__).parents[2],
        env={**os.environ, "DATABASE_URL": app_dsn}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot load handler 'no_such_module:f'" in out.stderr
