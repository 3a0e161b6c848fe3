"""Backup benchmark: dump+encrypt throughput beside plain pg_dump on the same data, and the
restore drill's time, on a database of --size-mb (default 1024 MB, as the issue asks).

Steps (each printed as it starts):
  1 a throwaway Postgres (app.db.embedded) and a database filled to ~SIZE MB: a table of
    rows with a random-ish text payload (md5 chains: compress like real text ids, not zeros)
    plus an index, so pg_database_size() reaches the target;
  2 an operator key pair (ed25519/cv25519) in a temp GNUPGHOME, the public half imported into
    a separate "host" keyring;
  3 plain `pg_dump -Fc -f FILE` and the pipeline's dump -> gpg -> atomic file
    (backups.pipeline.dump_encrypted), alternating;
  4 the full run (row counts in the snapshot + dump + manifest + rsync to a local target);
  5 `vos backup drill` against that target (fetch, sha256, decrypt | pg_restore, counts).

Printed: database size, dump sizes, MB/s of database per second and CPU seconds (pg_dump +
gpg) for each, the ratios encrypted/plain (1.00 = encryption costs nothing), and the drill's
time. After one unmeasured warm-up dump the two run alternately, --repeat times, best kept:
on a shared, loaded machine wall time swings with the neighbours; CPU seconds do not.

Run:
    .venv/bin/python benchmarks/backup.py               # 1 GB; several minutes
    .venv/bin/python benchmarks/backup.py --size-mb 200 # quicker, on a loaded machine
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from app.db.embedded import EmbeddedPostgres
from backups.drill import run_drill
from backups.keyring import Keyring
from backups.pipeline import BackupConfig, dump_encrypted, pg_tool, run_backup
from backups.snapshot import exported_snapshot
from backups.target import Target

KEY_PARAMS = """\
%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Subkey-Type: ecdh
Subkey-Curve: cv25519
Name-Real: VOS benchmark operator
Expire-Date: 0
%commit
"""
ROWS_PER_BATCH = 200_000


def step(text: str) -> None:
    print(f"--> {text}", flush=True)


def fill(dsn: str, size_mb: int) -> int:
    """Insert batches until the database reaches size_mb; returns its size in bytes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, tenant int NOT NULL, "
                     "kind text NOT NULL, body text NOT NULL, at timestamptz DEFAULT now())")
        size = 0
        while size < size_mb * 1024 * 1024:
            conn.execute(
                "INSERT INTO events (tenant, kind, body) SELECT g %% 97, "
                "(ARRAY['task','call','reply','error'])[1 + g %% 4], "
                "md5(random()::text) || ' ' || md5(g::text) || ' ' || md5(random()::text) "
                "|| ' status=' || (g %% 7) FROM generate_series(1, %s) g", [ROWS_PER_BATCH])
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            print(f"    {size / 2**20:.0f} MB", flush=True)
        conn.execute("VACUUM ANALYZE events")
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def measure(function, *args, **kwargs):
    """(value, wall seconds, CPU seconds of the child processes: pg_dump, gpg)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    value, wall = timed(function, *args, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return value, wall, cpu


def timed(function, *args, **kwargs):
    started = time.monotonic()
    value = function(*args, **kwargs)
    return value, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="database size (MB)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of each dump (best kept)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vos-bench-bk-", dir="/tmp"))
    work.chmod(0o711)
    server = EmbeddedPostgres(work / "cluster", fast_unsafe=True)
    operator_home, host_home = work / "op-gpg", work / "host-gpg"
    try:
        step(f"1/5 throwaway Postgres and a ~{args.size_mb} MB database")
        admin = server.start()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = server.dsn("bench")
        db_bytes = fill(dsn, args.size_mb)

        step("2/5 operator key pair; public half into the host keyring")
        operator = Keyring(operator_home)
        fingerprint = operator.gpg.gen_key(KEY_PARAMS).fingerprint
        host_ring = Keyring(host_home)
        host_ring.import_public_key(operator.gpg.export_keys(fingerprint))

        step(f"3/5 warm-up pass, then plain pg_dump -Fc and pg_dump | gpg, alternating, "
             f"{args.repeat} each")
        subprocess.run([pg_tool("pg_dump"), "-Fc", "--no-sync", "-f", "/dev/null",
                        f"--dbname={dsn}"],
                       check=True, timeout=7200)
        spool = work / "spool"
        spool.mkdir(mode=0o700)
        plain = work / "plain.dump"
        plain_runs, enc_runs = [], []
        for round_ in range(args.repeat):
            plain_runs.append(measure(subprocess.run, [pg_tool("pg_dump"), "-Fc", "-f",
                                                       str(plain), f"--dbname={dsn}"],
                                      check=True, timeout=7200))
            with exported_snapshot(dsn) as snap:
                enc_runs.append(measure(dump_encrypted, dsn, snap.snapshot_id, host_ring,
                                        fingerprint, spool / f"bench{round_}.dump.gpg"))
            print(f"    round {round_ + 1}: plain {plain_runs[-1][1]:.1f} s wall / "
                  f"{plain_runs[-1][2]:.1f} s CPU, encrypted {enc_runs[-1][1]:.1f} s wall / "
                  f"{enc_runs[-1][2]:.1f} s CPU", flush=True)
        enc_bytes = enc_runs[-1][0][0]
        plain_s, plain_cpu = min(r[1] for r in plain_runs), min(r[2] for r in plain_runs)
        enc_s, enc_cpu = min(r[1] for r in enc_runs), min(r[2] for r in enc_runs)
        for path in spool.iterdir():
            path.unlink()

        step("4/5 the full run: counts in the snapshot + dump + manifest + rsync")
        url_file = work / "database-url"
        url_file.write_text(dsn)
        config = BackupConfig(database_url_file=str(url_file), gnupghome=str(host_home),
                              recipient=fingerprint, spool_dir=str(spool),
                              target=str(work / "target"))
        result, full_s = timed(run_backup, config)
        assert result.status == "ok", result.log_line()

        step("5/5 drill: fetch, sha256, decrypt | pg_restore, compare counts")
        report, drill_s = timed(run_drill, Target(str(work / "target")), operator_home, admin)
        print(report.summary())

        mb = db_bytes / 2**20
        print()
        print(f"database                 {mb:8.0f} MB  ({result.rows} rows)")
        print(f"plain pg_dump -Fc        {plain_s:8.1f} s   {mb / plain_s:7.1f} MB/s  "
              f"{plain_cpu:6.1f} s CPU  -> {plain.stat().st_size / 2**20:.0f} MB file")
        print(f"pg_dump | gpg (stream)   {enc_s:8.1f} s   {mb / enc_s:7.1f} MB/s  "
              f"{enc_cpu:6.1f} s CPU  -> {enc_bytes / 2**20:.0f} MB file")
        print(f"ratio encrypted/plain    wall {enc_s / plain_s:5.2f} x   "
              f"CPU {enc_cpu / plain_cpu:5.2f} x"
              f"   (throughput {plain_s / enc_s:.2f} of plain; best of {args.repeat} each)")
        print(f"full run (counts+dump+manifest+rsync) {full_s:.1f} s  "
              f"({mb / full_s:.1f} MB/s)")
        print(f"drill (fetch+verify+decrypt+restore+counts) {drill_s:.1f} s  "
              f"{'PASS' if report.ok else 'FAIL'}")
    finally:
        for home in (operator_home, host_home):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                           capture_output=True, timeout=30, check=False)
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
