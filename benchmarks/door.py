"""Benchmark: accepted callbacks per second through the door vs. pgbench single-row inserts.

What it measures, on this machine, in one run:
  1. the door as shipped (`vos door serve`: uvicorn, `--workers` processes, default one
     per core, as VOS_DOOR_WORKERS would set them) on 127.0.0.1, receiving real Standard
     Webhooks-signed `task.create` callbacks from N concurrent keep-alive clients; every
     accepted request verifies the HMAC and makes one round trip (`door_accept`) that
     inserts a callback, a task and its task_event (with NOTIFY) in one transaction as the
     RLS-confined `vos_app` role;
  2. the same door refusing requests with a bad signature (401): rejected/s, and the
     `door_reject` JSON lines counted in its log (fail2ban needs every one);
  3. the door's memory: the RSS of its processes (the supervisor and its workers);
  4. pgbench against the same Postgres: one `INSERT` of a single row per transaction, same
     number of clients;
and prints accepted/s, p50/p99 latency, rejected/s, RSS, pgbench TPS and the ratio
door/pgbench, with the evidence of where the door's time goes: its CPU per callback (and per
rejection), how long it sat runnable waiting for a CPU (schedstat: a busy machine starving
it), its Postgres server's CPU per callback and transactions per callback (pg_stat_database:
how well group commit batched), how busy the whole machine was and how much of that was other
processes (/proc/stat: on a shared machine, the CPU the door never had), and what its
Postgres backends were doing (pg_stat_activity every 20 ms: on CPU, IO:WALSync,
Lock:object = the NOTIFY commit lock, idle = waiting for the door).
The load generator speaks HTTP/1.1 over raw asyncio streams with pre-signed
requests (an HTTP client library cost more CPU per request than the door itself, on the
same 2 cores).

Postgres: DATABASE_URL (an owner/superuser DSN; a scratch database is created and dropped) or,
when unset, a durable (fsync on) embedded Postgres in a temporary directory.

Example:
    .venv/bin/python benchmarks/door.py --seconds 10 --clients 16
    .venv/bin/python benchmarks/door.py --seconds 10 --clients 16 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def start_door(app_dsn: str, secret: str, source: str, port: int, log: Path,
               workers: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": app_dsn, "VOS_DOOR_SECRETS": json.dumps({source: secret}),
           "VOS_DB_POOL_MAX_SIZE": "16", "VOS_DOOR_WORKERS": str(workers)}
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


def raw_request(port: int, path: str, body: bytes, headers: dict) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}",
            f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def hammer(port: int, requests: list[bytes], clients: int,
                 seconds: float) -> tuple[list, dict]:
    """`clients` keep-alive connections sending the requests one after another until time or
    requests run out; returns the latencies and a count of the statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)
    stop_at = time.monotonic() + seconds

    async def one_client() -> None:
        reader = writer = None
        try:
            while time.monotonic() < stop_at:
                try:
                    request = next(queue)
                except StopIteration:
                    return
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(int(line.split(":", 1)[1]) for line in lines
                              if line.lower().startswith("content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                status = int(lines[0].split()[1])
                statuses[status] = statuses.get(status, 0) + 1
                if any(line.lower() == "connection: close" for line in lines):
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, statuses


class WaitSampler(threading.Thread):
    """Samples what the door's Postgres backends are doing (pg_stat_activity) every 20 ms:
    on CPU, or waiting on a lock, the WAL, the client… the evidence of where time goes."""

    def __init__(self, owner: str) -> None:
        super().__init__(daemon=True)
        self.owner, self.stop_flag = owner, threading.Event()
        self.counts: dict[str, int] = {}
        self.samples = 0

    def run(self) -> None:
        with psycopg.connect(self.owner, autocommit=True) as conn:
            while not self.stop_flag.wait(0.02):
                for state, kind, event in conn.execute(
                        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                        "WHERE application_name = 'vos-door' AND datname = current_database()"):
                    key = (f"{kind}:{event}" if kind else "on CPU") if state == "active" \
                        else state or "-"
                    self.counts[key] = self.counts.get(key, 0) + 1
                self.samples += 1

    def summary(self) -> str:
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:6]
        return ", ".join(f"{key} {n / max(self.samples, 1):.1f}" for key, n in top)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the door's supervisor and its worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def runqueue_seconds(pids: list[int]) -> float:
    """Time these processes' threads spent runnable but waiting for a CPU (schedstat): how
    much a busy machine starved them, as opposed to them waiting on Postgres or clients."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, from /proc (Linux)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postmaster_pid(owner: str) -> int | None:
    """The pid of this database's server if it runs on this machine (a backend's parent),
    else None: other Postgres servers on a shared machine are not counted as its CPU."""
    with psycopg.connect(owner, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            stat = Path(f"/proc/{backend}/stat").read_text()
        except OSError:
            return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def postgres_cpu_seconds(postmaster: int | None) -> float:
    """CPU time of the server's processes alive now (its backends, WAL writer, …)."""
    total = 0.0
    for pid in process_tree(postmaster) if postmaster else []:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds([pid])
    return total


def machine_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, /proc/stat): with the door's, its
    Postgres's and the load generator's, what else on a shared machine took."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def transactions(owner: str) -> int:
    """Transactions committed or rolled back in this database so far (pg_stat_database)."""
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0]


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
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("VOS_DOOR_WORKERS", "0")) or None,
        help="door processes (VOS_DOOR_WORKERS; default: VOS_DOOR_WORKERS if set, else one "
             "per core)")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1

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
        door_log = tmp / "door.log"
        door = start_door(make_conninfo(owner, user="vos_app", password=app_password),
                          secret, source, port, door_log, workers)
        path = f"/callbacks/{source}"
        requests = [raw_request(port, path, body, headers)
                    for body, headers in signed_requests(secret, 4000 * args.seconds)]
        step("warm-up (2 s)")
        asyncio.run(hammer(port, requests[:4000], args.clients, 2))
        requests = requests[4000:]
        pids = process_tree(door.pid)
        step(f"door: {args.clients} clients for {args.seconds} s ({len(pids)} processes)")
        door_cpu_before, client_cpu_before = cpu_seconds(pids), time.process_time()
        postmaster = postmaster_pid(owner)
        starved_before, pg_cpu_before = runqueue_seconds(pids), postgres_cpu_seconds(postmaster)
        xacts_before, machine_before = transactions(owner), machine_cpu_seconds()
        sampler = WaitSampler(owner)
        sampler.start()
        started = time.monotonic()
        latencies, statuses = asyncio.run(hammer(port, requests, args.clients, args.seconds))
        elapsed = time.monotonic() - started
        sampler.stop_flag.set()
        sampler.join(5)
        door_cpu = cpu_seconds(pids) - door_cpu_before
        starved = runqueue_seconds(pids) - starved_before
        client_cpu = time.process_time() - client_cpu_before
        pg_cpu = postgres_cpu_seconds(postmaster) - pg_cpu_before
        machine_cpu = machine_cpu_seconds() - machine_before
        # the sampler's own queries are one autocommit transaction each
        xacts = transactions(owner) - xacts_before - sampler.samples - 1
        load = os.getloadavg()[0]
        step(f"door refusing bad signatures: {args.clients} clients for {args.seconds} s")
        log_lines_before = door_log.read_text().count("\n")
        forged = [raw_request(port, path, body, {**headers, "webhook-signature": "v1,"
                                                 + base64.b64encode(b"x" * 32).decode()})
                  for body, headers in signed_requests(secret, 10000 * args.seconds)]
        door_cpu_before = cpu_seconds(pids)
        started = time.monotonic()
        _, refused = asyncio.run(hammer(port, forged, args.clients, args.seconds))
        refused_elapsed = time.monotonic() - started
        refused_cpu = cpu_seconds(pids) - door_cpu_before
        rss = rss_mib(process_tree(door.pid))
        door.terminate()
        door.wait(15)
        door = None
        reject_lines = sum(
            1 for line in door_log.read_text().splitlines()[log_lines_before:]
            if line.startswith('{"event": "door_reject"') and '"bad_signature"' in line)
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
    rejected = refused.get(401, 0)
    print(f"door accepted callbacks/s : {rate:8.1f}  ({accepted} accepted in {elapsed:.1f} s, "
          f"statuses {dict(sorted(statuses.items()))}, {stored} rows incl. warm-up; "
          f"{workers} worker(s))")
    print(f"door latency p50 / p99    : {q[49] * 1000:8.1f} ms / {q[98] * 1000:.1f} ms")
    print(f"CPU during the door run   : door {door_cpu / elapsed:.0%} of a core, "
          f"load generator {client_cpu / elapsed:.0%} ({os.cpu_count()} cores, "
          f"load average {load:.1f}); door CPU per accepted callback "
          f"{door_cpu / max(accepted, 1) * 1000:.2f} ms; door runnable but waiting for a CPU "
          f"{starved / elapsed:.0%} of the time")
    print(f"Postgres during the door run: {pg_cpu / elapsed:.0%} of a core, "
          f"{pg_cpu / max(accepted, 1) * 1000:.2f} ms CPU and "
          f"{xacts / max(accepted, 1):.2f} transactions per accepted callback "
          f"({accepted / max(xacts, 1):.1f} callbacks per transaction)")
    others = machine_cpu - door_cpu - pg_cpu - client_cpu
    print(f"machine CPU, door run     : {machine_cpu / elapsed:.0%} of {os.cpu_count()} cores "
          f"busy, of which other processes {max(others, 0) / elapsed:.0%} of a core")
    print(f"door's Postgres backends  : {sampler.summary()} (average number of backends "
          "in each state, sampled every 20 ms)")
    print(f"door rejected requests/s  : {rejected / refused_elapsed:8.1f}  ({rejected} bad "
          f"signatures answered 401, statuses {dict(sorted(refused.items()))}; "
          f"{reject_lines} door_reject lines logged; door CPU per rejection "
          f"{refused_cpu / max(rejected, 1) * 1000:.2f} ms)")
    print(f"door memory (RSS)         : {rss:8.1f} MiB (all door processes)")
    print(f"pgbench single-row INSERT : {tps:8.1f} TPS")
    print(f"ratio door / pgbench      : {rate / tps:8.3f}")


if __name__ == "__main__":
    main()
