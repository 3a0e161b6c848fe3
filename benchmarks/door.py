"""Benchmark: accepted callbacks per second through the door vs. pgbench single-row inserts.

What it measures, on this machine:
  1. the door as shipped (`vos door serve`, uvicorn, one process) on 127.0.0.1, receiving
     real Standard Webhooks-signed `task.create` callbacks from N concurrent clients; every
     accepted request verifies the HMAC, inserts a callback, a task and its task_event (with
     NOTIFY) in one transaction as the RLS-confined `vos_app` role;
  2. pgbench against the same Postgres: one `INSERT` of a single row per transaction, same
     number of clients;
and prints accepted/s, p50/p99 latency, pgbench TPS and the ratio door/pgbench.

Postgres: DATABASE_URL (an owner/superuser DSN; a scratch database is created and dropped) or,
when unset, a durable (fsync on) embedded Postgres in a temporary directory.

Example:
    .venv/bin/python benchmarks/door.py --seconds 10 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.db import migrate  # noqa: E402
from app.db.embedded import EmbeddedPostgres, free_port  # noqa: E402
from app.door.signature import decode_whsec, sign  # noqa: E402


def step(message: str) -> None:
    print(f"==> [bench door] {message}", flush=True)


def scratch_database(server_dsn: str) -> str:
    name = f"vos_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def prepare(owner: str, app_password: str, source: str) -> None:
    migrate(owner, app_password=app_password, log=lambda _m: None)
    with psycopg.connect(owner) as conn:
        (tenant,) = conn.execute(
            "INSERT INTO tenants (slug, name) VALUES ('bench', 'bench') RETURNING id").fetchone()
        conn.execute("INSERT INTO door_sources (source, tenant_id) VALUES (%s, %s)",
                     [source, tenant])
        conn.execute("CREATE TABLE pgbench_single (id bigint GENERATED ALWAYS AS IDENTITY "
                     "PRIMARY KEY, body text NOT NULL, created_at timestamptz DEFAULT now())")


def start_door(app_dsn: str, secret: str, source: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": app_dsn, "VOS_DOOR_SECRETS": json.dumps({source: secret}),
           "VOS_DB_POOL_MAX_SIZE": "16"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "door", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the door exited early; its log:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the door did not listen within 30 s; its log:\n{log.read_text()}")


def signed_requests(secret: str, count: int) -> list[tuple[bytes, dict]]:
    """Pre-signed requests, so the client's HMAC work stays out of the timed loop."""
    key, now, out = decode_whsec(secret), int(time.time()), []
    for i in range(count):
        body = json.dumps({"type": "task.create", "title": f"bench {i}", "priority": "P2"})
        msg_id = f"msg_{secrets.token_hex(10)}"
        out.append((body.encode(), {
            "webhook-id": msg_id, "webhook-timestamp": str(now),
            "webhook-signature": sign(key, msg_id, now, body.encode()),
            "content-type": "application/json"}))
    return out


async def hammer(url: str, requests: list, clients: int, seconds: float) -> tuple[list, dict]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def one_client() -> None:
            while time.monotonic() < stop_at:
                try:
                    body, headers = next(queue)
                except StopIteration:
                    return
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, statuses


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pgbench(owner: str, clients: int, seconds: int, workdir: Path) -> float:
    pgbench = shutil.which("pgbench") or next(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    script = workdir / "single_insert.sql"
    script.write_text("INSERT INTO pgbench_single (body) VALUES ('x');\n")
    info = conninfo_to_dict(owner)
    env = {**os.environ, "PGPASSWORD": info.get("password", "")}  # not on the command line
    out = subprocess.run(
        [str(pgbench), "-n", "-f", str(script), "-c", str(clients), "-j", "2", "-T", str(seconds),
         "-h", info.get("host", "127.0.0.1"), "-p", str(info.get("port", 5432)),
         "-U", info.get("user", "postgres"), info["dbname"]],
        capture_output=True, text=True, env=env, timeout=seconds + 60, check=True,
    ).stdout
    tps = [line for line in out.splitlines() if line.startswith("tps")]
    return float(tps[0].split("=")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vos-bench-"))
    tmp.chmod(0o711)
    server_dsn, embedded = os.environ.get("DATABASE_URL"), None
    if not server_dsn:
        step(f"DATABASE_URL not set: starting a durable embedded Postgres in {tmp}")
        embedded = EmbeddedPostgres(tmp / "pg")
        server_dsn = embedded.start()
    db, door = scratch_database(server_dsn), None
    try:
        owner = make_conninfo(server_dsn, dbname=db)
        app_password, source = secrets.token_urlsafe(18), "bench"
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        step(f"migrating scratch database {db}")
        prepare(owner, app_password, source)
        port = free_port()
        step(f"starting `vos door serve` on 127.0.0.1:{port}")
        door = start_door(make_conninfo(owner, user="vos_app", password=app_password),
                          secret, source, port, tmp / "door.log")
        requests = signed_requests(secret, 4000 * args.seconds)
        url = f"http://127.0.0.1:{port}/callbacks/{source}"
        step("warm-up (2 s)")
        asyncio.run(hammer(url, requests[:4000], args.clients, 2))
        requests = requests[4000:]
        step(f"door: {args.clients} clients for {args.seconds} s")
        door_cpu_before, client_cpu_before = cpu_seconds(door.pid), time.process_time()
        started = time.monotonic()
        latencies, statuses = asyncio.run(hammer(url, requests, args.clients, args.seconds))
        elapsed = time.monotonic() - started
        door_cpu = cpu_seconds(door.pid) - door_cpu_before
        client_cpu = time.process_time() - client_cpu_before
        door.terminate()
        door.wait(15)
        door = None
        with psycopg.connect(owner) as conn:
            stored = conn.execute("SELECT count(*) FROM callbacks").fetchone()[0]
        step(f"pgbench: single-row INSERT, {args.clients} clients for {args.seconds} s")
        tps = run_pgbench(owner, args.clients, args.seconds, tmp)
    finally:
        if door is not None:
            door.terminate()
            door.wait(15)
        drop_database(server_dsn, db)
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    accepted = statuses.get(202, 0)
    q = statistics.quantiles(latencies, n=100)
    rate = accepted / elapsed
    print(f"door accepted callbacks/s : {rate:8.1f}  ({accepted} accepted in {elapsed:.1f} s, "
          f"statuses {dict(sorted(statuses.items()))}, {stored} rows incl. warm-up)")
    print(f"door latency p50 / p99    : {q[49] * 1000:8.1f} ms / {q[98] * 1000:.1f} ms")
    print(f"CPU during the door run   : door {door_cpu / elapsed:.0%} of a core, "
          f"load generator {client_cpu / elapsed:.0%} ({os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}); door CPU per accepted callback "
          f"{door_cpu / max(accepted, 1) * 1000:.2f} ms")
    print(f"pgbench single-row INSERT : {tps:8.1f} TPS")
    print(f"ratio door / pgbench      : {rate / tps:8.3f}")


if __name__ == "__main__":
    main()
