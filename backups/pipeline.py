"""`vos-backup run` on the host: dump → gpg stream → atomic file → manifest → retention → ship.

Nothing here writes plaintext: `pg_dump -Fc` writes into a pipe that `gpg --encrypt` reads;
only ciphertext reaches the disk, under a temporary dot-name in the spool directory, and is
fsynced and renamed into place only when pg_dump and gpg both exit 0. A failed run removes
its temporary file and exits non-zero. The manifest (time, size, sha256, row counts per table
from the dump's own snapshot) is written last, the same way, so "dump + manifest" means done.

Two runs never overlap: each holds an exclusive lock on `SPOOL/.lock`; a second run waits up
to `lock_wait_seconds` and then exits 0, saying another run is in progress.

Every run ends with ONE JSON line on stdout (cron hands it to the journal):
    {"event": "vos_backup", "status": "ok", "name": "vos-backup-…", "bytes": …, "rows": …}

Example:
    config = BackupConfig.load(Path("/etc/vos-backup/config.json"))
    result = run_backup(config, log=print)
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backups.keyring import Keyring
from backups.naming import dump_name, files_to_prune, manifest_name, stem_for
from backups.snapshot import exported_snapshot
from backups.target import Target

CHUNK = 1 << 20
MANIFEST_FORMAT = 1
DUMP_TIMEOUT_SECONDS = 6 * 3600


class BackupError(RuntimeError):
    """A step of the run failed; `step` names it (dump, encrypt, write, ship, …)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class BackupConfig:
    """What one host's backup run needs; the role writes it as JSON (no secret inside:
    the database URL lives in its own 0600 file).

    Example:
        BackupConfig(database_url_file="/etc/vos-backup/database-url",
                     gnupghome="/var/lib/vos-backup/gnupg", recipient="3F2A…",
                     spool_dir="/var/lib/vos-backup/spool",
                     target="backup@10.0.0.7:/srv/vos", keep_daily=7, keep_weekly=4)
    """

    database_url_file: str
    gnupghome: str
    recipient: str
    spool_dir: str
    target: str | None = None
    target_ssh_key: str | None = None
    target_known_hosts: str | None = None
    target_port: int = 22
    keep_daily: int = 7
    keep_weekly: int = 4
    lock_wait_seconds: float = 0
    pg_bin_dir: str | None = None
    dump_compression: int | None = None  # pg_dump --compress level; None = pg_dump's default

    @classmethod
    def load(cls, path: Path) -> BackupConfig:
        """Read the JSON config; unknown or missing keys are a clear error."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except FileNotFoundError:
            raise BackupError("config", f"{path} does not exist; run the backups role "
                                        "(deploys/backups.py) or pass --config") from None
        except (TypeError, json.JSONDecodeError) as error:
            raise BackupError("config", f"{path} is not a valid backup config: {error}") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def target_or_none(self) -> Target | None:
        if not self.target:
            return None
        return Target(self.target, self.target_ssh_key, self.target_known_hosts,
                      self.target_port)


@dataclass
class RunResult:
    """What one run did; `log_line()` is the structured line."""

    status: str  # ok | skipped | failed
    name: str | None = None
    bytes: int = 0
    sha256: str | None = None
    tables: int = 0
    rows: int = 0
    seconds: float = 0.0
    shipped: bool = False
    pruned_local: list[str] = field(default_factory=list)
    pruned_target: list[str] = field(default_factory=list)
    step: str | None = None
    error: str | None = None

    def log_line(self) -> str:
        """One JSON object, keys sorted, no secret inside (errors have DSNs scrubbed)."""
        record = {"event": "vos_backup", **{k: v for k, v in asdict(self).items()
                                            if v not in (None, [], 0, 0.0) or k == "status"}}
        return json.dumps(record, sort_keys=True)


# -- small helpers --------------------------------------------------------------------------

def pg_tool(name: str, bin_dir: str | None = None) -> str:
    """Path of pg_dump/pg_restore: from `bin_dir`, else the newest /usr/lib/postgresql/N/bin
    (a client at least as new as the server), else $PATH.

    Example:
        >>> pg_tool("pg_dump").endswith("pg_dump")
        True
    """
    if bin_dir:
        return str(Path(bin_dir) / name)
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0))
    if versions:
        return str(versions[-1])
    return shutil.which(name) or name


def tool_version(executable: str) -> str:
    """First line of `executable --version`, or "" when it cannot be run.

    Example:
        >>> tool_version("/nonexistent/pg_dump")
        ''
    """
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def parse_major(version_text: str) -> int:
    """PostgreSQL major version in a `--version` line (0 when there is none).

    Example:
        >>> parse_major("pg_dump (PostgreSQL) 17.6 (Debian 17.6-0+deb13u1)")
        17
        >>> parse_major("")
        0
    """
    found = re.search(r"\d+", version_text)
    return int(found.group(0)) if found else 0


def libpq_env(dsn: str) -> tuple[str, dict[str, str]]:
    """Split a DSN into a password-free conninfo and PGPASSWORD, so the password never
    shows in a process listing (`ps` shows argv to every user; the environment it does not).

    Example:
        >>> libpq_env("postgresql://u:s3cret@db:5432/app")
        ('user=u dbname=app host=db port=5432', {'PGPASSWORD': 's3cret'})
    """
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo(**params), env


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from an error message before it is logged."""
    password = conninfo_to_dict(dsn).get("password")
    return text.replace(str(password), "***") if password else text


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` via a temporary name, fsync, rename, fsync the directory."""
    tmp = dest.with_name(f".{dest.name}.partial")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


@contextmanager
def run_lock(spool: Path, wait_seconds: float) -> Iterator[bool]:
    """Exclusive lock on SPOOL/.lock; yields False when another run held it for longer than
    `wait_seconds` (the caller then skips). The lock dies with the process, so a crashed run
    never leaves a stale lock behind."""
    handle = open(spool / ".lock", "a+")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield True
    finally:
        handle.close()


# -- the steps -------------------------------------------------------------------------------

def read_database_url(config: BackupConfig) -> str:
    try:
        dsn = Path(config.database_url_file).read_text().strip()
    except OSError as error:
        raise BackupError("config", f"cannot read the database URL file "
                                    f"{config.database_url_file}: {error.strerror}") from None
    if not dsn:
        raise BackupError("config", f"{config.database_url_file} is empty; it must hold the "
                                    "managed Postgres URL of a role that owns the database")
    return dsn


def dump_encrypted(dsn: str, snapshot_id: str, keyring: Keyring, recipient: str,
                   dest: Path, pg_bin_dir: str | None = None,
                   compression: int | None = None) -> tuple[int, str]:
    """Stream `pg_dump -Fc --snapshot` through `gpg --encrypt` into `dest`, atomically.

    Returns (bytes, sha256 of the ciphertext). On any failure the temporary file is gone
    and BackupError says which side failed.
    """
    conninfo, env = libpq_env(dsn)
    tmp = dest.with_name(f".{dest.name}.partial")
    digest, size = hashlib.sha256(), 0
    dump_cmd = [pg_tool("pg_dump", pg_bin_dir), "--format=custom", f"--snapshot={snapshot_id}",
                "--no-password", f"--dbname={conninfo}"]
    if compression is not None:
        dump_cmd.append(f"--compress={compression}")
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as gpg_err:
        dump = subprocess.Popen(dump_cmd, stdout=subprocess.PIPE, stderr=dump_err,
                                env={**os.environ, **env})
        gpg = subprocess.Popen(keyring.encrypt_command(recipient), stdin=dump.stdout,
                               stdout=subprocess.PIPE, stderr=gpg_err)
        dump.stdout.close()  # gpg owns the read end now; pg_dump sees EPIPE if gpg dies
        try:
            with open(tmp, "wb") as out:
                while chunk := gpg.stdout.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            dump_rc = dump.wait(timeout=DUMP_TIMEOUT_SECONDS)
            gpg_rc = gpg.wait(timeout=60)
            if dump_rc != 0:
                raise BackupError("dump", f"pg_dump exited {dump_rc}: "
                                          f"{scrub(_tail(dump_err), dsn)}")
            if gpg_rc != 0:
                raise BackupError("encrypt", f"gpg exited {gpg_rc}: {_tail(gpg_err)}")
            if size == 0:
                raise BackupError("encrypt", "gpg produced no output")
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        finally:
            for proc in (dump, gpg):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            gpg.stdout.close()
            tmp.unlink(missing_ok=True)
    return size, digest.hexdigest()


def _tail(handle) -> str:
    handle.seek(0)
    return handle.read().decode(errors="replace").strip()[-800:] or "(no message)"


def prune_local(spool: Path, keep_daily: int, keep_weekly: int) -> list[str]:
    doomed = files_to_prune([p.name for p in spool.iterdir()], keep_daily, keep_weekly)
    for name in doomed:
        (spool / name).unlink(missing_ok=True)
    return doomed


def prune_target(target: Target, keep_daily: int, keep_weekly: int) -> list[str]:
    """Retention computed from the TARGET's own listing: a host rebuilt with an empty spool
    must not make the target forget its history."""
    doomed = files_to_prune(target.names(), keep_daily, keep_weekly)
    target.delete(doomed)
    return doomed


def run_backup(config: BackupConfig, log: Callable[[str], None] = lambda _m: None,
               now: datetime | None = None) -> RunResult:
    """One backup run. Never raises for an operational failure: the result says what broke.

    `now` exists for tests that need a backup of a given age.
    """
    previous_umask = os.umask(0o077)  # every file this run creates is the user's alone
    try:
        return _locked_run(config, log, now)
    finally:
        os.umask(previous_umask)


def _locked_run(config: BackupConfig, log: Callable[[str], None],
                now: datetime | None) -> RunResult:
    spool = Path(config.spool_dir)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    started = time.monotonic()
    with run_lock(spool, config.lock_wait_seconds) as acquired:
        if not acquired:
            log(f"another backup run holds {spool / '.lock'}; skipping this one")
            return RunResult(status="skipped", step="lock",
                             error="another run is in progress")
        result = RunResult(status="failed")
        try:
            _run_steps(config, spool, result, log, now)
            result.status = "ok"
        except Exception as error:  # noqa: BLE001 - the one line must say what broke
            result.step = getattr(error, "step", type(error).__name__)
            result.error = str(error)
        result.seconds = round(time.monotonic() - started, 3)
        return result


def _free_stem(spool: Path, now: datetime | None) -> tuple[str, datetime]:
    """The stem for this run; a run that follows another within the same second waits for
    the next second rather than replace that run's files (names have 1 s resolution)."""
    for _ in range(5):
        moment = now or datetime.now(UTC)
        stem = stem_for(moment)
        if not (spool / dump_name(stem)).exists() and not (spool / manifest_name(stem)).exists():
            return stem, moment
        if now is not None:
            break
        time.sleep(1)
    raise BackupError("name", f"a backup named {stem} exists already in {spool}; "
                              "nothing was overwritten")


def _run_steps(config: BackupConfig, spool: Path, result: RunResult,
               log: Callable[[str], None], now: datetime | None) -> None:
    stem, now = _free_stem(spool, now)
    dsn = read_database_url(config)
    keyring = Keyring(config.gnupghome)
    keyring.require_public_key(config.recipient)
    log("step 1/4: snapshot, row counts and encrypted dump")
    try:
        with exported_snapshot(dsn) as snap:
            size, sha256 = dump_encrypted(dsn, snap.snapshot_id, keyring, config.recipient,
                                          spool / dump_name(stem), config.pg_bin_dir,
                                          config.dump_compression)
    except psycopg.Error as error:
        raise BackupError("snapshot", f"cannot read the database: "
                                      f"{scrub(str(error).strip(), dsn)}") from None
    result.name, result.bytes, result.sha256 = stem, size, sha256
    result.tables, result.rows = len(snap.row_counts), sum(snap.row_counts.values())
    manifest = {
        "format": MANIFEST_FORMAT, "name": stem, "created_at": now.isoformat(),
        "dump": dump_name(stem), "bytes": size, "sha256": sha256,
        "recipient": config.recipient, "database": snap.database,
        "server_version": snap.server_version, "snapshot": snap.snapshot_id,
        # The drill needs a pg_restore at least this new; it checks before restoring.
        "pg_dump_version": tool_version(pg_tool("pg_dump", config.pg_bin_dir)),
        "tables": snap.row_counts,
    }
    log("step 2/4: manifest")
    write_atomically(spool / manifest_name(stem),
                     (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    log(f"step 3/4: retention in {spool} (daily {config.keep_daily}, "
        f"weekly {config.keep_weekly})")
    result.pruned_local = prune_local(spool, config.keep_daily, config.keep_weekly)
    target = config.target_or_none()
    if target is None:
        log("step 4/4: no target configured; the backup stays on this machine only")
        return
    log(f"step 4/4: ship to {target.spec} and apply retention there")
    try:
        target.push([spool / dump_name(stem), spool / manifest_name(stem)])
        result.shipped = True
        result.pruned_target = prune_target(target, config.keep_daily, config.keep_weekly)
    except Exception as error:
        raise BackupError("ship", str(error)) from None
