"""A worker that fails safely (issue #13 item 3), on a real Postgres and the fake providers:
backoff then Failed, retry, routing to the orchestrator, budget parking and unparking,
the lease heartbeat, a lost claim, drain termination and the loop's reaping."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from app.agents.config import WorkforceConfig, build_router
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.workforce import Workforce
from app.db import tenant_transaction
from app.dispatch.policy import WorkerPolicy
from app.dispatch.tasks import InvalidTransition, create_task, retry_task
from app.dispatch.worker import Worker, claim_next
from devtools.fakes import start_fake_fleet

KEY = "sk-test-failsafe-00000000000000000000"


def poison(task: dict) -> dict:
    raise RuntimeError(f"model refused {task['title']!r}")


def agent(conn, tenant_id, name, *, manager=None, orchestrator=False, budget="1",
          period="total", retired=False):
    return conn.execute(
        """INSERT INTO agents (tenant_id, name, manager_id, is_orchestrator, budget_usd,
                               budget_period, retired_at)
           VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) RETURNING id""",
        [tenant_id, name, manager, orchestrator, budget, period, retired]).fetchone()["id"]


def task_row(pool, tenant_id, task_id) -> dict:
    with tenant_transaction(pool, tenant_id) as conn:
        return conn.execute("SELECT *, status::text AS status FROM tasks WHERE id = %s",
                            [task_id]).fetchone()


def events(pool, tenant_id, task_id) -> list[dict]:
    with tenant_transaction(pool, tenant_id) as conn:
        return conn.execute("SELECT kind, payload FROM task_events WHERE task_id = %s "
                            "ORDER BY id", [task_id]).fetchall()


@pytest.fixture
def log_lines():
    """The worker's JSON log lines, whatever the `vos` logger's propagation."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("vos.worker")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture(scope="module")
def fleet():
    servers = start_fake_fleet(api_key=KEY)
    yield servers
    for server in servers.values():
        server.stop()


def workforce(fleet, pool) -> Workforce:
    cfg = WorkforceConfig.model_validate({
        "deployments": [{"name": "gpt", "provider": "openai",
                         "base_url": fleet["openai"].base_url, "model": "gpt-4.1",
                         "context_window": 1000000, "api_key_env": "OAI_KEY",
                         "max_output_tokens": 32}],
        "retry": {"max_attempts": 1, "base_delay": 0.01}})
    router = build_router(cfg, PostgresAccounting(pool), {"OAI_KEY": KEY})
    return Workforce(pool, router, system_prompt="You are an Agent VOS agent.")


# -- failure is a state ------------------------------------------------------------------------

def test_a_failed_attempt_waits_out_its_backoff(app_pool, make_tenant):
    tenant = make_tenant("backoff")
    with tenant_transaction(app_pool, tenant.id) as conn:
        task = create_task(conn, tenant.id, title="poison", status="Active")
    worker = Worker(app_pool, "w/backoff", poison,
                    policy=WorkerPolicy(backoff_base_seconds=30, jitter=0.5))
    before = datetime.now(UTC)
    assert worker.run_once(tenant.id) is True
    assert worker.run_once(tenant.id) is False, "claimed again during its backoff"
    row = task_row(app_pool, tenant.id, task["id"])
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("Active", 1, None)
    assert "model refused 'poison'" in row["last_error"]
    wait = (row["next_attempt_at"] - before).total_seconds()
    assert 15 - 1 <= wait <= 30 + 1, wait  # base 30 s, jitter draws from [15, 30]
    failed = [e["payload"] for e in events(app_pool, tenant.id, task["id"])
              if e["kind"] == "work.failed"]
    assert failed[0]["attempt"] == 1 and failed[0]["max_attempts"] == 5
    assert failed[0]["next_attempt_at"] is not None and failed[0]["status"] == "Active"


def test_n_failures_make_the_task_failed_and_a_retry_brings_it_back(app_pool, make_tenant):
    tenant = make_tenant("poison")
    with tenant_transaction(app_pool, tenant.id) as conn:
        task = create_task(conn, tenant.id, title="poison", status="Active")
    worker = Worker(app_pool, "w/poison", poison,
                    policy=WorkerPolicy(max_attempts=3, backoff_base_seconds=0.05,
                                        backoff_max_seconds=0.1))
    deadline = time.monotonic() + 20
    while task_row(app_pool, tenant.id, task["id"])["status"] != "Failed":
        assert time.monotonic() < deadline, "never became Failed"
        worker.run_once(tenant.id) or time.sleep(0.05)
    row = task_row(app_pool, tenant.id, task["id"])
    assert (row["attempts"], row["claimed_by"], row["next_attempt_at"]) == (3, None, None)
    assert "RuntimeError: model refused 'poison'" in row["last_error"]
    kinds = [e["kind"] for e in events(app_pool, tenant.id, task["id"])]
    assert kinds.count("claimed") == 3 and kinds.count("work.failed") == 3
    last = [e["payload"] for e in events(app_pool, tenant.id, task["id"])
            if e["kind"] == "work.failed"][-1]
    assert (last["attempt"], last["max_attempts"], last["status"]) == (3, 3, "Failed")
    assert worker.run_once(tenant.id) is False, "a Failed task is not workable"

    with tenant_transaction(app_pool, tenant.id, actor="operator") as conn:
        retried = retry_task(conn, task["id"])
        with pytest.raises(InvalidTransition, match="only a Failed task can be retried"):
            retry_task(conn, task["id"])
    assert (retried["status"], retried["attempts"], retried["last_error"]) == ("Active", 0, None)
    assert events(app_pool, tenant.id, task["id"])[-2]["kind"] == "work.retry"
    assert worker.run_once(tenant.id) is True, "workable again after the retry"


def test_drain_ends_with_a_poison_task_in_the_queue(app_pool, make_tenant):
    tenant = make_tenant("drain")
    with tenant_transaction(app_pool, tenant.id) as conn:
        create_task(conn, tenant.id, title="poison", status="Active", priority="P0")
        good = create_task(conn, tenant.id, title="fine", status="Active")
    calls: list[str] = []

    def handler(task: dict) -> dict:
        calls.append(task["title"])
        return poison(task) if task["title"] == "poison" else {"summary": "ok"}

    worker = Worker(app_pool, "w/drain", handler, policy=WorkerPolicy(backoff_base_seconds=60))
    done = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: (result.append(worker.drain([tenant.id])),
                                              done.set()), daemon=True)
    thread.start()
    assert done.wait(30), "drain did not end"
    assert result == [1] and sorted(calls) == ["fine", "poison"]
    assert task_row(app_pool, tenant.id, good["id"])["status"] == "Review"


# -- routing -------------------------------------------------------------------------------------

def test_unassigned_and_retired_work_goes_to_the_orchestrator(app_pool, make_tenant):
    tenant = make_tenant("route")
    with tenant_transaction(app_pool, tenant.id) as conn:
        boss = agent(conn, tenant.id, "Boss")
        orch = agent(conn, tenant.id, "Orchestrator", manager=boss, orchestrator=True)
        gone = agent(conn, tenant.id, "Gone", manager=boss)
        door = create_task(conn, tenant.id, title="from the door", status="Active")
        stale = create_task(conn, tenant.id, title="old", status="Active", assignee_id=gone)
        # retired after the task was given to it (a retired agent takes no new assignment)
        conn.execute("UPDATE agents SET retired_at = now() WHERE id = %s", [gone])
    seen: list = []
    worker = Worker(app_pool, "w/route", lambda t: seen.append(t["assignee_id"]) or {},
                    route_unassigned=True)
    assert worker.drain([tenant.id]) == 2
    assert seen == [orch, orch], "the marked orchestrator wins over the agent without manager"
    for task_id, why in ((door["id"], "no assignee"), (stale["id"], "retired")):
        evs = events(app_pool, tenant.id, task_id)
        routed = next(e["payload"] for e in evs if e["kind"] == "work.routed")
        assert why in routed["reason"] and routed["agent"] == "Orchestrator"
        assert "assigned" in [e["kind"] for e in evs]
        assert task_row(app_pool, tenant.id, task_id)["status"] == "Review"


def test_the_single_agent_without_manager_is_the_orchestrator_by_default(app_pool, make_tenant):
    tenant = make_tenant("root")
    with tenant_transaction(app_pool, tenant.id) as conn:
        root = agent(conn, tenant.id, "Root")
        agent(conn, tenant.id, "Helper", manager=root)
        create_task(conn, tenant.id, title="x", status="Active")
    task = claim_next(app_pool, tenant.id, "w/root", route=True)
    assert task is not None and task["assignee_id"] == root


def test_with_no_orchestrator_the_task_goes_back_to_draft_with_the_reason(app_pool,
                                                                          make_tenant):
    tenant = make_tenant("noorch")
    with tenant_transaction(app_pool, tenant.id) as conn:
        agent(conn, tenant.id, "A")
        agent(conn, tenant.id, "B")
        task = create_task(conn, tenant.id, title="from the door", status="Active")
    calls: list = []
    worker = Worker(app_pool, "w/noorch", lambda t: calls.append(t) or {},
                    route_unassigned=True)
    assert worker.drain([tenant.id]) == 0 and calls == []
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Draft" and row["attempts"] == 0
    assert "2 live agents have no manager (A, B)" in row["last_error"]
    assert "orchestrator: true" in row["last_error"]
    kinds = [e["kind"] for e in events(app_pool, tenant.id, task["id"])]
    assert kinds == ["created", "work.unroutable", "status_changed"]
    # the database refuses the same step without a reason (only the worker takes it)
    with tenant_transaction(app_pool, tenant.id) as conn:
        other = create_task(conn, tenant.id, title="y", status="Active")
    with pytest.raises(psycopg.errors.CheckViolation, match="without a reason"):
        with tenant_transaction(app_pool, tenant.id) as conn:
            conn.execute("UPDATE tasks SET status = 'Draft' WHERE id = %s", [other["id"]])


# -- budget parking ----------------------------------------------------------------------------

def test_a_budget_denial_parks_until_the_budget_is_raised(fleet, app_pool, make_tenant):
    fleet["openai"].reset()
    tenant = make_tenant("parked")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        broke = agent(conn, tenant.id, "Broke", budget="0")
        task = create_task(conn, tenant.id, title="Summarise", status="Active",
                           assignee_id=broke)
    worker = Worker(app_pool, "w/parked", workforce(fleet, app_pool).handle,
                    policy=WorkerPolicy(backoff_base_seconds=0.01, backoff_max_seconds=0.01))
    assert worker.run_once(tenant.id) is True
    for _ in range(5):  # however often it polls, a parked task costs nothing more
        assert worker.run_once(tenant.id) is False
        time.sleep(0.02)
    row = task_row(app_pool, tenant.id, task["id"])
    assert (row["status"], row["attempts"], row["parked_agent_id"]) == ("Active", 0, broke)
    assert row["parked_amount_usd"] > 0 and row["parked_budget_usd"] == 0
    assert "BudgetExceeded" in row["parked_reason"]
    with tenant_transaction(app_pool, tenant.id) as conn:
        outcomes = [r["outcome"] for r in conn.execute(
            "SELECT outcome FROM agent_calls ORDER BY id").fetchall()]
        conn.execute("UPDATE agents SET budget_usd = 1 WHERE id = %s", [broke])
    assert outcomes == ["budget_denied"] and fleet["openai"].received == []

    assert worker.run_once(tenant.id) is True
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Review" and row["parked_at"] is None
    unparked = next(e["payload"] for e in events(app_pool, tenant.id, task["id"])
                    if e["kind"] == "work.unparked")
    assert "budget changed from $0.0000 to $1.0000" in unparked["reason"]
    assert len(fleet["openai"].received) == 1


def test_a_new_budget_period_unparks_and_resets_the_spend(fleet, app_pool, owner_dsn,
                                                          make_tenant):
    fleet["openai"].reset()
    tenant = make_tenant("daily")
    with tenant_transaction(app_pool, tenant.id) as conn:
        seed_prices(conn, tenant.id)
        daily = agent(conn, tenant.id, "Daily", budget="1", period="day")
        task = create_task(conn, tenant.id, title="Summarise", status="Active",
                           assignee_id=daily)
    with psycopg.connect(owner_dsn) as conn:  # the app role may not write spend (0305)
        conn.execute("INSERT INTO agent_spend (tenant_id, agent_id, spent_usd) "
                     "VALUES (%s, %s, 1)", [tenant.id, daily])
    worker = Worker(app_pool, "w/daily", workforce(fleet, app_pool).handle)
    assert worker.run_once(tenant.id) is True
    assert task_row(app_pool, tenant.id, task["id"])["parked_at"] is not None
    assert worker.run_once(tenant.id) is False

    # Yesterday, as far as the database can tell: both the park and the spend window.
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("UPDATE tasks SET parked_at = parked_at - interval '1 day' "
                     "WHERE id = %s", [task["id"]])
        conn.execute("UPDATE agent_spend SET period_start = period_start - interval '1 day' "
                     "WHERE agent_id = %s", [daily])
    assert worker.run_once(tenant.id) is True
    assert task_row(app_pool, tenant.id, task["id"])["status"] == "Review"
    with tenant_transaction(app_pool, tenant.id) as conn:
        spend = conn.execute("SELECT spent_usd, period_start FROM agent_spend").fetchone()
        ledger = conn.execute("SELECT coalesce(sum(cost_usd), 0) AS s FROM agent_calls"
                              ).fetchone()["s"]
    assert spend["spent_usd"] == ledger < 1, "yesterday's dollar no longer counts"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert spend["period_start"] == today
    unparked = next(e["payload"] for e in events(app_pool, tenant.id, task["id"])
                    if e["kind"] == "work.unparked")
    assert unparked["reason"] == "a new day budget window began"


# -- leases ------------------------------------------------------------------------------------

def test_the_heartbeat_keeps_a_long_task_from_running_twice(app_pool, make_tenant):
    tenant = make_tenant("heartbeat")
    with tenant_transaction(app_pool, tenant.id) as conn:
        task = create_task(conn, tenant.id, title="long call", status="Active")
    # renewals every 0.3 s keep a 3 s lease alive through a 6 s call (the margin is for a
    # loaded machine: a renewal may wait for a CPU)
    policy = WorkerPolicy(lease_seconds=3, heartbeat_seconds=0.3)

    def long_call(task: dict) -> dict:
        time.sleep(6)
        return {"summary": "done"}

    worker = Worker(app_pool, "w/long", long_call, policy=policy)
    thread = threading.Thread(target=worker.run_once, args=(tenant.id,), daemon=True)
    thread.start()
    # poll only once the long call holds the claim (else the poller may simply claim first)
    claimed_by = None
    started = time.monotonic()
    while claimed_by != "w/long" and time.monotonic() - started < 10:
        claimed_by = task_row(app_pool, tenant.id, task["id"])["claimed_by"]
        time.sleep(0.05)
    assert claimed_by == "w/long", "the worker never claimed the task"
    stolen = []
    deadline = time.monotonic() + 6.5
    while thread.is_alive() and time.monotonic() < deadline:
        if (other := claim_next(app_pool, tenant.id, "w/second", lease_seconds=60)):
            stolen.append(other["id"])
        time.sleep(0.2)
    thread.join(10)
    assert stolen == [], "the lease ran out while the work was still running"
    row = task_row(app_pool, tenant.id, task["id"])
    assert row["status"] == "Review"
    kinds = [e["kind"] for e in events(app_pool, tenant.id, task["id"])]
    assert kinds == ["created", "claimed", "work.result", "status_changed"], \
        "a lease renewal is not an event"


def test_a_lost_claim_is_logged_and_the_result_dropped(app_pool, owner_dsn, make_tenant,
                                                       log_lines):
    tenant = make_tenant("lost")
    with tenant_transaction(app_pool, tenant.id) as conn:
        task = create_task(conn, tenant.id, title="slow", status="Active")

    def overtaken(task: dict) -> dict:
        with psycopg.connect(owner_dsn) as conn:  # another worker took it meanwhile
            conn.execute("UPDATE tasks SET claimed_by = 'w/other' WHERE id = %s", [task["id"]])
        return {"summary": "late"}

    worker = Worker(app_pool, "w/late", overtaken)
    assert worker.run_once(tenant.id) is True  # no exception escapes
    assert worker.stats["claims_lost"] == 1
    lost = [line for line in log_lines() if line["event"] == "claim_lost"]
    assert lost and lost[0]["during"] == "complete" and lost[0]["worker"] == "w/late"
    kinds = [e["kind"] for e in events(app_pool, tenant.id, task["id"])]
    assert "work.result" not in kinds
    assert task_row(app_pool, tenant.id, task["id"])["claimed_by"] == "w/other"


# -- the loop ------------------------------------------------------------------------------------

def test_the_loop_reaps_stale_reservations_counts_stale_claims_and_survives_a_poison_task(
        app_pool, owner_dsn, make_tenant, tmp_path):
    tenant = make_tenant("reap")
    with tenant_transaction(app_pool, tenant.id) as conn:
        crashed = agent(conn, tenant.id, "Crashed")
        create_task(conn, tenant.id, title="poison", status="Active")
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("INSERT INTO agent_spend (tenant_id, agent_id, reserved_usd) "
                     "VALUES (%s, %s, 0.5)", [tenant.id, crashed])  # app may not (0305)
        conn.execute("""INSERT INTO budget_reservations (tenant_id, agent_id, call_id,
                            estimated_usd, created_at)
                        VALUES (%s, %s, gen_random_uuid(), 0.5, now() - interval '2 hours')""",
                     [tenant.id, crashed])
        conn.execute("""INSERT INTO tasks (tenant_id, title, status, claimed_by, lease_until,
                                           next_attempt_at)
                        VALUES (%s, 'abandoned', 'Active', 'dead', now() - interval '1 hour',
                                now() + interval '1 hour')""", [tenant.id])
    beat = tmp_path / "worker.beat"
    worker = Worker(app_pool, "w/loop", poison, policy=WorkerPolicy(
        stale_reservation_seconds=60, backoff_base_seconds=60, idle_seconds=0.1,
        heartbeat_file=str(beat)))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=([tenant.id], stop), daemon=True)
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert worker.stats["reaped_reservations"] == 1 and worker.stats["stale_claims"] == 1
    assert worker.stats["failed"] == 1, "the poison task failed once, then waited its backoff"
    assert beat.exists() and time.time() - beat.stat().st_mtime < 5
    with tenant_transaction(app_pool, tenant.id) as conn:
        spend = conn.execute("SELECT spent_usd, reserved_usd FROM agent_spend").fetchone()
        open_left = conn.execute("SELECT count(*) AS n FROM budget_reservations "
                                 "WHERE status = 'open'").fetchone()["n"]
    assert open_left == 0 and spend["reserved_usd"] == 0 and spend["spent_usd"] == Decimal(
        "0.5")


def test_the_loop_survives_postgres_being_unreachable(log_lines):
    from app.db import open_pool

    pool = open_pool("postgresql://vos_app:x@127.0.0.1:9/vos", min_size=0, max_size=1,
                     timeout=0.2, name="down")
    try:
        worker = Worker(pool, "w/down", poison,
                        policy=WorkerPolicy(idle_seconds=0.05, db_retry_max_seconds=0.2))
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=([uuid.uuid4()], stop), daemon=True)
        thread.start()
        time.sleep(2)
        stop.set()
        thread.join(10)
    finally:
        pool.close(timeout=1)
    assert not thread.is_alive()
    errors = worker.stats["db_errors"]
    assert 1 <= errors <= 2 / 0.05, "retried, with pauses (no tight loop)"
    assert any(line["event"] == "db_unavailable" for line in log_lines())


def test_a_parked_task_stays_parked_across_a_period_that_never_rolls(app_pool, make_tenant):
    """'total' budgets never roll over: only a budget change unparks (the common default)."""
    tenant = make_tenant("total")
    with tenant_transaction(app_pool, tenant.id) as conn:
        spender = agent(conn, tenant.id, "Spender", budget="1")
        task = create_task(conn, tenant.id, title="x", status="Active", assignee_id=spender)
        conn.execute("""UPDATE tasks SET parked_at = now() - interval '400 days',
                               parked_agent_id = %s, parked_budget_usd = 1,
                               parked_reason = 'test' WHERE id = %s""", [spender, task["id"]])
    assert claim_next(app_pool, tenant.id, "w/total") is None
    with tenant_transaction(app_pool, tenant.id) as conn:
        conn.execute("UPDATE agents SET budget_period = 'month' WHERE id = %s", [spender])
    assert claim_next(app_pool, tenant.id, "w/total")["id"] == task["id"]


def test_budget_windows_are_utc_days_iso_weeks_and_months(app_pool, make_tenant):
    tenant = make_tenant("periods")
    with tenant_transaction(app_pool, tenant.id) as conn:
        at = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # a Wednesday
        starts = conn.execute(
            """SELECT budget_period_start('day', %(at)s) AS day,
                      budget_period_start('week', %(at)s) AS week,
                      budget_period_start('month', %(at)s) AS month,
                      budget_period_start('total', %(at)s) = '-infinity' AS never""",
            {"at": at}).fetchone()
    assert starts["day"] == datetime(2026, 12, 2, tzinfo=UTC)
    assert starts["week"] == datetime(2026, 12, 2, tzinfo=UTC) - timedelta(days=2)  # Monday
    assert starts["month"] == datetime(2026, 12, 1, tzinfo=UTC)
    assert starts["never"] is True
