"""Backup benchmark: dump+encrypt throughput beside plain pg_dump on the same data, and the
restore drill's time, on a database of --size-mb (default 1024 MB, as the issue asks).

Steps (each printed as it starts):
  1 a throwaway Postgres (app.db.embedded) and a database filled to ~SIZE MB: a table of
    rows with a random-ish text payload (md5 chains: compress like real text ids, not zeros)
    plus an index, so pg_database_size() reaches the target;
  2 an operator key pair (ed25519/cv25519) in a temp GNUPGHOME, the public half imported into
    a separate "host" keyring;
  3 plain `pg_dump -Fc -f FILE`, timed;
  4 the backup pipeline's dump -> gpg -> atomic file (backups.pipeline.dump_encrypted), timed,
    and the full run (row counts in the snapshot + dump + manifest + rsync to a local target);
  5 `vos backup drill` against that target (fetch, sha256, decrypt | pg_restore, counts).

Printed: database size, dump sizes, MB/s of database per second for each, the ratio
plain/encrypted (1.00 = encryption costs nothing), and the drill's time.

Run:
    .venv/bin/python benchmarks/backup.py               # 1 GB; several minutes
    .venv/bin/python benchmarks/backup.py --size-mb 200 # quicker, on a loaded machine
"""

from __future__ import annotations

import argparse
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


def timed(function, *args, **kwargs):
    started = time.monotonic()
    value = function(*args, **kwargs)
    return value, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="database size (MB)")
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

        step("3/5 plain pg_dump -Fc")
        plain = work / "plain.dump"
        _, plain_s = timed(subprocess.run, [pg_tool("pg_dump"), "-Fc", "-f", str(plain),
                                            f"--dbname={dsn}"], check=True, timeout=7200)

        step("4/5 pg_dump | gpg --encrypt -> atomic file; then the full run")
        spool = work / "spool"
        spool.mkdir(mode=0o700)
        with exported_snapshot(dsn) as snap:
            (enc_bytes, _sha), enc_s = timed(dump_encrypted, dsn, snap.snapshot_id, host_ring,
                                             fingerprint, spool / "bench.dump.gpg")
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
              f"-> {plain.stat().st_size / 2**20:.0f} MB file")
        print(f"pg_dump | gpg (stream)   {enc_s:8.1f} s   {mb / enc_s:7.1f} MB/s  "
              f"-> {enc_bytes / 2**20:.0f} MB file")
        print(f"ratio encrypted/plain    {enc_s / plain_s:8.2f} x time "
              f"(throughput {plain_s / enc_s:.2f} of plain)")
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
