"""`vos backup drill`, on the operator's side where the private key lives: prove the newest
backup restores with every row accounted for.

Steps (each failure names its cause and exits non-zero):
  1 find     the newest complete backup on the target          -> "no backup"
  2 age      younger than --max-age-hours (INVARIANTS §15: 26) -> "too old"
  3 fetch    the manifest, then check this machine's pg_restore is at least as new as the
             pg_dump that wrote the backup (before any download or restore)  -> "pg_restore
             too old", naming the package to install or the --pg-bin-dir to pass; then the dump
  4 checksum sha256 and size of the dump match the manifest       -> "checksum"
  5 restore  gpg --decrypt | pg_restore into a scratch database   -> "decrypt" / "restore"
             (a stream: the plaintext dump never touches a disk here either)
  6 compare  row counts per table against the manifest          -> "row counts"

The scratch database lives on `--scratch-dsn` (a superuser/CREATEDB DSN), or, when none is
given, in a throwaway Postgres started from this machine's binaries (app.db.embedded); it is
dropped at the end unless --keep.

Example:
    report = run_drill(Target("backup@203.0.113.7:/srv/vos"), gnupghome="~/.gnupg")
    print(report.summary()); sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backups.keyring import Keyring
from backups.naming import classify, dump_name, manifest_name, stem_time
from backups.pipeline import libpq_env, parse_major, pg_tool, scrub, tool_version
from backups.snapshot import count_rows
from backups.target import Target

RESTORE_TIMEOUT_SECONDS = 6 * 3600


class DrillFailure(RuntimeError):
    """The drill cannot vouch for the backup; `cause` is the operator's one-word reason."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class DrillReport:
    name: str | None = None
    age_hours: float | None = None
    bytes: int = 0
    tables: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (cause, message)

    @property
    def ok(self) -> bool:
        return not self.failures and self.name is not None

    def summary(self) -> str:
        """The operator's verdict, first line PASS or FAIL.

        Example:
            >>> DrillReport(failures=[("checksum", "sha256 differs")]).summary()
            'DRILL FAIL (checksum): sha256 differs'
        """
        if self.ok:
            return (f"DRILL PASS: {self.name} (age {self.age_hours:.1f} h, {self.bytes} bytes) "
                    f"restored; {self.tables} tables, {self.rows} rows match the manifest "
                    f"({self.seconds:.1f} s)")
        lines = [f"DRILL FAIL ({cause}): {message}" for cause, message in self.failures]
        return "\n".join(lines)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def compare_counts(expected: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Human lines for every table whose count differs, is missing or is unexpected.

    Example:
        >>> compare_counts({"public.t": 3, "public.u": 1}, {"public.t": 2})
        ['public.t: manifest 3 rows, restored 2', 'public.u: in the manifest, not restored']
    """
    problems = []
    for table in sorted(set(expected) | set(restored)):
        if table not in restored:
            problems.append(f"{table}: in the manifest, not restored")
        elif table not in expected:
            problems.append(f"{table}: restored, absent from the manifest")
        elif expected[table] != restored[table]:
            problems.append(f"{table}: manifest {expected[table]} rows, "
                            f"restored {restored[table]}")
    return problems


@contextmanager
def scratch_database(admin_dsn: str | None, log: Callable[[str], None],
                     keep: bool = False, pg_bin_dir: str | None = None) -> Iterator[str]:
    """Yield the DSN of a new empty database; drop it (and any embedded server) afterwards."""
    with _scratch_server(admin_dsn, log, pg_bin_dir) as server_dsn:
        name = f"vos_drill_{secrets.token_hex(4)}"
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_conninfo(server_dsn, dbname=name)
        finally:
            if keep:
                log(f"kept scratch database {name}")
            else:
                with psycopg.connect(server_dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                                 .format(sql.Identifier(name)))


@contextmanager
def _scratch_server(admin_dsn: str | None, log: Callable[[str], None],
                    pg_bin_dir: str | None = None) -> Iterator[str]:
    """The server the scratch database lives on: --scratch-dsn's; else, when --pg-bin-dir is
    a `vos backup pg-client` tree, that tree's own Postgres (pg_restore N writes SQL for a
    server N); else a throwaway one from this machine's newest binaries."""
    if admin_dsn:
        yield admin_dsn
        return
    from backups.pgclient import client_of_bin_dir, scratch_server

    client = client_of_bin_dir(pg_bin_dir)
    if client is not None:
        with scratch_server(client, log) as dsn:
            yield dsn
        return
    from app.db.embedded import EmbeddedPostgres  # operator side only

    base = Path(tempfile.mkdtemp(prefix="vos-drill-pg-"))
    base.chmod(0o711)
    server = EmbeddedPostgres(base / "cluster", fast_unsafe=True)
    log(f"starting a throwaway Postgres in {base} for the scratch database")
    try:
        yield server.start()
    finally:
        server.destroy()
        base.rmdir() if base.exists() else None


def restore_stream(dump: Path, keyring: Keyring, scratch_dsn: str,
                   pg_bin_dir: str | None = None) -> None:
    """gpg --decrypt DUMP | pg_restore --exit-on-error into the scratch database.

    Owners and grants are left out (--no-owner --no-privileges): the scratch server need
    not have the production roles, and counts do not depend on them.
    """
    conninfo, env = libpq_env(scratch_dsn)
    restore_cmd = [pg_tool("pg_restore", pg_bin_dir), "--no-owner", "--no-privileges",
                   "--exit-on-error", "--no-password", f"--dbname={conninfo}"]
    with open(dump, "rb") as source, tempfile.TemporaryFile() as gpg_err, \
            tempfile.TemporaryFile() as restore_err:
        gpg = subprocess.Popen(keyring.decrypt_command(), stdin=source,
                               stdout=subprocess.PIPE, stderr=gpg_err)
        restore = subprocess.Popen(restore_cmd, stdin=gpg.stdout, stderr=restore_err,
                                   stdout=subprocess.DEVNULL, env={**os.environ, **env})
        gpg.stdout.close()
        try:
            restore_rc = restore.wait(timeout=RESTORE_TIMEOUT_SECONDS)
            gpg_rc = gpg.wait(timeout=60)
        finally:
            for proc in (gpg, restore):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        gpg_message = _tail(gpg_err)
        # gpg dying of a broken pipe means pg_restore stopped reading first: its error is
        # the cause (e.g. a pg_restore older than the host's pg_dump), not the decryption.
        if gpg_rc != 0 and "Broken pipe" not in gpg_message:
            raise DrillFailure("decrypt", f"gpg could not decrypt {dump.name} (exit {gpg_rc}): "
                               f"{gpg_message} — is the operator's SECRET key in "
                               f"{keyring.home}? (pass --gnupghome)")
        if restore_rc != 0 or gpg_rc != 0:
            raise DrillFailure("restore", f"pg_restore failed (exit {restore_rc}): "
                               f"{scrub(_tail(restore_err), scratch_dsn)} — pg_restore must be "
                               "at least as new as the host's pg_dump (install "
                               "postgresql-client-N here)")


def _tail(handle) -> str:
    handle.seek(0)
    return handle.read().decode(errors="replace").strip()[-600:] or "(no message)"


def require_new_enough_pg_restore(manifest: dict, pg_bin_dir: str | None) -> str:
    """Fail up front when the local pg_restore cannot read the backup's archive format.

    pg_restore refuses archives from a newer pg_dump, and would only say so after the
    download and the decryption. The manifest names the pg_dump that wrote the backup
    (older manifests only the server's version, a lower bound: pg_dump is never older
    than the server it dumps). Returns the pg_restore path to use.

    Example:
        require_new_enough_pg_restore({"pg_dump_version": "pg_dump (PostgreSQL) 17.6"}, None)
        # on a machine with pg_restore 15: DrillFailure("pg_restore too old", "… Install
        # postgresql-client-17 here, or … `vos backup pg-client --major 17` … --pg-bin-dir")
    """
    written_by = manifest.get("pg_dump_version") or manifest.get("server_version") or ""
    needed = parse_major(written_by)
    program = pg_tool("pg_restore", pg_bin_dir)
    local_text = tool_version(program)
    local = parse_major(local_text)
    if not local_text:
        raise DrillFailure("pg_restore missing", f"cannot run {program}: install "
                           f"postgresql-client-{needed or 'N'} here, or pass --pg-bin-dir "
                           "(`vos backup pg-client --major N` builds one)")
    if needed and local < needed:
        raise DrillFailure(
            "pg_restore too old",
            f"this machine's pg_restore ({program}) is PostgreSQL {local}, but the backup was "
            f"written by {written_by!r}; pg_restore cannot read archives from a newer "
            f"pg_dump. Install postgresql-client-{needed} here, or build a cached client "
            f"with `vos backup pg-client --major {needed}` and pass the bin dir it prints "
            "as --pg-bin-dir")
    return program


def run_drill(target: Target, gnupghome: str | Path, scratch_dsn: str | None = None,
              max_age_hours: float = 26.0, keep: bool = False,
              log: Callable[[str], None] = lambda _m: None,
              now: datetime | None = None, pg_bin_dir: str | None = None) -> DrillReport:
    """Run every step; never raises for a failed step, the report carries the cause."""
    report = DrillReport()
    started = time.monotonic()
    try:
        _drill_steps(target, Keyring(Path(gnupghome).expanduser()), scratch_dsn,
                     max_age_hours, keep, log, now or datetime.now(UTC), report, pg_bin_dir)
    except DrillFailure as failure:
        report.failures.append((failure.cause, str(failure)))
    except Exception as error:  # noqa: BLE001 - the operator gets a cause, not a traceback
        report.failures.append(("error", f"{type(error).__name__}: {error}"))
    report.seconds = time.monotonic() - started
    return report


def _drill_steps(target: Target, keyring: Keyring, scratch_dsn: str | None,
                 max_age_hours: float, keep: bool, log: Callable[[str], None],
                 now: datetime, report: DrillReport, pg_bin_dir: str | None) -> None:
    log(f"step 1/6: newest backup on {target.spec}")
    stem = classify(target.names()).newest
    if stem is None:
        raise DrillFailure("no backup", f"no complete backup (dump + manifest) in "
                           f"{target.spec}; run `vos-backup run` on the host and look at "
                           "its journal line (journalctl -t vos-backup)")
    report.name = stem
    report.age_hours = (now - stem_time(stem)).total_seconds() / 3600
    log(f"step 2/6: age of {stem}: {report.age_hours:.1f} h (limit {max_age_hours} h)")
    if report.age_hours > max_age_hours:
        report.failures.append(("too old", f"the newest backup {stem} is "
                                f"{report.age_hours:.1f} h old (limit {max_age_hours} h): "
                                "the host's scheduled run is not producing backups; check "
                                "its cron entry and journal (journalctl -t vos-backup)"))
    with tempfile.TemporaryDirectory(prefix="vos-drill-") as workdir:
        log("step 3/6: fetch the manifest, check the local pg_restore, fetch the dump")
        manifest_path, = target.fetch([manifest_name(stem)], Path(workdir))
        manifest = json.loads(manifest_path.read_text())
        program = require_new_enough_pg_restore(manifest, pg_bin_dir)
        log(f"step 3/6: {tool_version(program)} reads archives of "
            f"{manifest.get('pg_dump_version') or 'pg_dump (version not recorded)'}")
        dump, = target.fetch([dump_name(stem)], Path(workdir))
        report.bytes = dump.stat().st_size
        log("step 4/6: verify sha256 against the manifest")
        actual = sha256_of(dump)
        if actual != manifest["sha256"] or report.bytes != manifest["bytes"]:
            raise DrillFailure("checksum", f"{dump.name}: sha256 {actual[:16]}… / "
                               f"{report.bytes} bytes, manifest says "
                               f"{manifest['sha256'][:16]}… / {manifest['bytes']} bytes: the "
                               "file is corrupted or was altered; do not trust it, drill an "
                               "older backup and investigate the target")
        with scratch_database(scratch_dsn, log, keep, pg_bin_dir) as scratch:
            log("step 5/6: decrypt and restore into a scratch database")
            restore_stream(dump, keyring, scratch, pg_bin_dir)
            log("step 6/6: compare row counts per table with the manifest")
            with psycopg.connect(scratch) as conn:
                restored = count_rows(conn)
    expected = manifest["tables"]
    report.tables, report.rows = len(expected), sum(expected.values())
    problems = compare_counts(expected, restored)
    if problems:
        report.failures.append(("row counts", "; ".join(problems)))
