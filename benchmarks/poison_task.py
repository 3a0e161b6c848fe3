"""Benchmark: what a poison task and a spent budget cost the fail-safe worker (issue #13 item 3).

Setup (embedded Postgres, or DATABASE_URL as an owner/superuser DSN; a scratch database is
created and dropped): one tenant, an orchestrator agent with a budget and an agent whose
budget is spent, the fake OpenAI provider, and two Active tasks:
  - "poison": its handler always raises;
  - "broke": assigned to the agent with no budget left (the router's reservation is denied).
N workers (default 4) run the real loop (`Worker.run`) for a bounded time with a small
backoff base so the schedule is visible. Printed: task_events and agent_calls (ledger) rows
written, by kind, the tasks' final state, and the bound the policy implies per hour, beside
the figures from before this change (issue #13: one poison task made 837 claimed/released/
failed cycles in 10 s; four workers against a spent budget wrote 2,263 `budget_denied` ledger
rows in 45 s). No assertions: tests/integration/test_worker_failsafe.py asserts behaviour.

The bound (per task, whatever the number of workers or the run time):
  poison: at most max_attempts attempts, ever; each writes claimed + work.failed + released
          (the last one status_changed instead of released): 3 × max_attempts events, then
          nothing until an operator retries it. Ledger rows: those of the handler's own
          model calls per attempt (0 here: the handler raises before calling a model).
  parked: per budget change or budget period: 1 claim, 1 budget_denied ledger row,
          work.parked + released events. With the budget unchanged and period 'total': 1 row,
          ever.

Example:
    .venv/bin/python benchmarks/poison_task.py --seconds 20 --workers 4 --backoff-base 0.5
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.agents.config import WorkforceConfig, build_router  # noqa: E402
from app.agents.ledger import PostgresAccounting, seed_prices  # noqa: E402
from app.agents.workforce import Workforce  # noqa: E402
from app.db import migrate, open_pool, tenant_transaction  # noqa: E402
from app.db.embedded import EmbeddedPostgres  # noqa: E402
from app.dispatch.policy import WorkerPolicy  # noqa: E402
from app.dispatch.tasks import create_task  # noqa: E402
from app.dispatch.worker import Worker  # noqa: E402
from devtools.fakes import start_fake_fleet  # noqa: E402

KEY = "sk-bench-poison-0000000000000000000000"


def step(message: str) -> None:
    print(f"==> [bench poison] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long the workers run")
    parser.add_argument("--workers", type=int, default=4, help="concurrent workers")
    parser.add_argument("--backoff-base", type=float, default=0.5,
                        help="WorkerPolicy.backoff_base_seconds (small, to see the schedule)")
    parser.add_argument("--max-attempts", type=int, default=5)
    args = parser.parse_args()
    policy = WorkerPolicy(max_attempts=args.max_attempts, backoff_base_seconds=args.backoff_base,
                          backoff_max_seconds=max(args.backoff_base, 3600), idle_seconds=0.1)

    tmp = Path(tempfile.mkdtemp(prefix="vos-bench-poison-"))
    tmp.chmod(0o711)
    server_dsn, embedded = os.environ.get("DATABASE_URL"), None
    if not server_dsn:
        step(f"DATABASE_URL not set: starting an embedded Postgres in {tmp}")
        embedded = EmbeddedPostgres(tmp / "pg", fast_unsafe=True)
        server_dsn = embedded.start()
    db = f"vos_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    fleet = start_fake_fleet(api_key=KEY)
    pool = None
    try:
        owner, password = make_conninfo(server_dsn, dbname=db), secrets.token_urlsafe(18)
        migrate(owner, app_password=password, log=lambda _m: None)
        with psycopg.connect(owner) as conn:
            (tenant_id,) = conn.execute("INSERT INTO tenants (slug, name) VALUES ('bench', "
                                        "'bench') RETURNING id").fetchone()
        pool = open_pool(make_conninfo(owner, user="vos_app", password=password),
                         min_size=2, max_size=2 * args.workers + 2, name="bench-poison")
        with tenant_transaction(pool, tenant_id, actor="bench") as conn:
            seed_prices(conn, tenant_id)
            orch = conn.execute("INSERT INTO agents (tenant_id, name, is_orchestrator, "
                                "budget_usd) VALUES (%s, 'Orchestrator', true, 5) RETURNING id",
                                [tenant_id]).fetchone()["id"]
            broke = conn.execute("INSERT INTO agents (tenant_id, name, manager_id, budget_usd) "
                                 "VALUES (%s, 'Broke', %s, 0) RETURNING id",
                                 [tenant_id, orch]).fetchone()["id"]
            create_task(conn, tenant_id, title="poison", status="Active", assignee_id=orch)
            create_task(conn, tenant_id, title="broke", status="Active", assignee_id=broke)
        cfg = WorkforceConfig.model_validate({"deployments": [{
            "name": "gpt", "provider": "openai", "base_url": fleet["openai"].base_url,
            "model": "gpt-4.1", "context_window": 1000000, "api_key_env": "OAI_KEY",
            "max_output_tokens": 32}]})
        workforce = Workforce(pool, build_router(cfg, PostgresAccounting(pool),
                                                 {"OAI_KEY": KEY}), system_prompt="S")

        def handler(task: dict) -> dict:
            if task["title"] == "poison":
                raise RuntimeError("poison: this task always fails")
            return workforce.handle(task)

        step(f"{args.workers} worker(s) for {args.seconds:g} s, {policy.max_attempts} attempts, "
             f"backoff base {policy.backoff_base_seconds:g} s")
        stop = threading.Event()
        workers = [Worker(pool, f"bench/{n}", handler, policy=policy, route_unassigned=True)
                   for n in range(args.workers)]
        threads = [threading.Thread(target=w.run, args=([tenant_id], stop)) for w in workers]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started

        with tenant_transaction(pool, tenant_id) as conn:
            kinds = conn.execute("SELECT kind, count(*) AS n FROM task_events GROUP BY kind "
                                 "ORDER BY kind").fetchall()
            ledger = conn.execute("SELECT outcome, count(*) AS n FROM agent_calls GROUP BY "
                                  "outcome ORDER BY outcome").fetchall()
            tasks = conn.execute("SELECT title, status::text AS status, attempts, "
                                 "parked_at IS NOT NULL AS parked FROM tasks ORDER BY title"
                                 ).fetchall()
        events_total = sum(r["n"] for r in kinds)
        print(f"\nran {elapsed:.1f} s with {args.workers} worker(s)")
        print("task_events written:", events_total)
        for r in kinds:
            print(f"  {r['kind']:<16} {r['n']}")
        print("ledger rows (agent_calls):", sum(r["n"] for r in ledger))
        for r in ledger:
            print(f"  {r['outcome']:<16} {r['n']}")
        for t in tasks:
            print(f"task {t['title']!r}: {t['status']}, attempts {t['attempts']}, "
                  f"parked {t['parked']}")
        n = policy.max_attempts
        print(f"\nbound per task, per hour or ever: poison ≤ {n} attempts = ≤ {3 * n} events "
              "(+ created) and 0 ledger rows (its handler makes no model call); parked ≤ 1 "
              "budget_denied ledger row and 4 events per budget change or budget period")
        print("before this change (issue #13): 837 claimed/released/failed cycles in 10 s for "
              "one poison task (≈ 900,000 events per hour); 2,263 budget_denied rows in 45 s "
              "with 4 workers (≈ 181,000 per hour)")
    finally:
        if pool is not None:
            pool.close()
        for server in fleet.values():
            server.stop()
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(db)))
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
