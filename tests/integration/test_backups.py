"""Backups end to end with REAL Postgres, REAL gpg and real rsync (a local target directory).

The operator's key pair is generated fresh (ed25519/cv25519, no passphrase) in a temporary
GNUPGHOME; the "host" keyring gets its PUBLIC key only. The source database holds every
migration plus a canary table whose rows carry a known plaintext marker.

What these tests prove (issue 8's "done when", minus the VM):
  - a backup restores through the drill with every table's row count matching the manifest;
  - the marker is nowhere in the spool or the target (dumped uncompressed, so it WOULD show
    if anything wrote plaintext) — and a control plain dump shows the grep would find it;
  - a failed pg_dump leaves no file and exits non-zero; a bad password is not logged;
  - two overlapping real processes: the second skips (exit 0) or waits; both files verify;
  - a corrupted file fails the drill naming "checksum"; a 30-hour-old newest backup fails it
    naming "too old"; a missing secret key fails it naming "decrypt"; a tampered manifest
    fails it naming "row counts";
  - retention keeps N daily + M weekly on the spool and on the target.

Cost: ~10 backups and 5 restores of a small database, about 20-40 s on the loaded machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from app.db import migrate
from backups.drill import run_drill, sha256_of
from backups.keyring import Keyring, KeyringError
from backups.naming import classify, dump_name, manifest_name
from backups.pipeline import BackupConfig, pg_tool, run_backup
from backups.target import Target

REPO = Path(__file__).resolve().parents[2]
CANARY_ROWS = 500

OPERATOR_KEY_PARAMS = """\
%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ecdh
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Real: VOS test operator
Name-Email: operator@example.invalid
Expire-Date: 0
%commit
"""


@dataclass(frozen=True)
class OperatorKey:
    home: Path  # holds the SECRET key (operator side)
    fingerprint: str
    public_armored: str


def kill_agent(home: Path) -> None:
    """gpg starts a gpg-agent per GNUPGHOME for key generation and decryption: stop it."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                   capture_output=True, timeout=30, check=False)


def short_tempdir(prefix: str) -> Path:
    """gpg-agent's socket path must stay short (108 bytes): pytest's tmp_path may not be."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="module")
def operator_key() -> Iterator[OperatorKey]:
    home = short_tempdir("vos-op-gpg-")
    try:
        ring = Keyring(home)
        result = ring.gpg.gen_key(OPERATOR_KEY_PARAMS)
        assert result.fingerprint, f"gpg could not generate the test key: {result.stderr}"
        armored = ring.gpg.export_keys(result.fingerprint)
        yield OperatorKey(home, result.fingerprint, armored)
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def canary() -> str:
    return f"PLAINTEXT-CANARY-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def source_dsn(fresh_database, migrated_db, canary: str) -> str:
    """A database with every migration applied, a tenant, and CANARY_ROWS marked rows."""
    dsn = fresh_database()
    migrate(dsn, app_password=migrated_db.app_password, log=lambda _m: None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE backup_canary (id int PRIMARY KEY, secret text NOT NULL)")
        conn.execute("INSERT INTO backup_canary SELECT g, %s || '-' || g "
                     "FROM generate_series(1, %s) g", [canary, CANARY_ROWS])
        conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, %s)",
                     [f"bk-{secrets.token_hex(3)}", canary])
    return dsn


@pytest.fixture
def host(tmp_path: Path, operator_key: OperatorKey, source_dsn: str) -> Iterator[BackupConfig]:
    """A "host": public-key-only keyring, 0600 database URL file, spool, local target."""
    gnupghome = short_tempdir("vos-host-gpg-")
    try:
        ring = Keyring(gnupghome)
        fingerprint = ring.import_public_key(operator_key.public_armored)
        assert ring.secret_fingerprints() == []
        url_file = tmp_path / "database-url"
        url_file.write_text(source_dsn)
        url_file.chmod(0o600)
        yield BackupConfig(
            database_url_file=str(url_file), gnupghome=str(gnupghome), recipient=fingerprint,
            spool_dir=str(tmp_path / "spool"), target=str(tmp_path / "target"),
            keep_daily=7, keep_weekly=4, dump_compression=0,
        )
    finally:
        kill_agent(gnupghome)
        shutil.rmtree(gnupghome, ignore_errors=True)


def drill(config: BackupConfig, operator_home: Path, scratch_dsn: str, **kwargs):
    return run_drill(Target(config.target), operator_home, scratch_dsn, **kwargs)


def table_counts(dsn: str) -> dict[str, int]:
    from backups.snapshot import count_rows

    with psycopg.connect(dsn) as conn:
        return count_rows(conn)


# -- the happy path ------------------------------------------------------------------------

def test_backup_is_restored_by_the_drill_with_every_row(host, operator_key, pg_server,
                                                        source_dsn):
    result = run_backup(host)
    assert result.status == "ok", result.log_line()
    assert result.shipped and result.rows >= CANARY_ROWS + 1

    manifest = json.loads((Path(host.target) / manifest_name(result.name)).read_text())
    assert manifest["tables"] == table_counts(source_dsn)
    assert manifest["tables"]["public.backup_canary"] == CANARY_ROWS
    assert manifest["sha256"] == result.sha256 and manifest["bytes"] == result.bytes

    report = drill(host, operator_key.home, pg_server)
    assert report.ok, report.summary()
    assert report.summary().startswith("DRILL PASS")
    assert report.rows == sum(manifest["tables"].values())

    line = json.loads(result.log_line())
    assert line["event"] == "vos_backup" and line["status"] == "ok" and line["name"]


def test_no_plaintext_on_the_host_or_the_target(host, canary, source_dsn, tmp_path):
    result = run_backup(host)
    assert result.status == "ok", result.log_line()

    # Control: an uncompressed plain dump of the same data does contain the marker, so a
    # grep that finds nothing below means something.
    control = tmp_path / "control"
    control.mkdir()
    subprocess.run([pg_tool("pg_dump"), "-Fc", "--compress=0", "-f", str(control / "plain"),
                    f"--dbname={source_dsn}"], check=True, timeout=120)
    assert grep(canary, control), "control failed: the plaintext dump lacks the marker"

    for directory in (Path(host.spool_dir), Path(host.target)):
        assert not grep(canary, directory), f"plaintext marker found under {directory}"
        for path in directory.iterdir():
            if path.name.endswith(".dump.gpg"):
                assert not path.read_bytes()[:5] == b"PGDMP", f"{path} is a plaintext dump"


def grep(needle: str, directory: Path) -> bool:
    proc = subprocess.run(["grep", "-r", "-a", "-l", "-F", needle, str(directory)],
                          capture_output=True, timeout=60)
    return proc.returncode == 0


def test_backup_files_are_private(host):
    result = run_backup(host)
    assert result.status == "ok", result.log_line()
    for directory in (Path(host.spool_dir), Path(host.target)):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory
        for path in directory.iterdir():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


# -- failures ------------------------------------------------------------------------------

def test_failed_dump_leaves_no_file_and_fails(host, tmp_path):
    """Fault injection around the REAL pg_dump: its output is cut after 4 KiB and the
    wrapper exits 1, as when the connection drops mid-dump."""
    wrapper_dir = tmp_path / "pgbin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "pg_dump"
    wrapper.write_text(f"#!/bin/sh\n{pg_tool('pg_dump')} \"$@\" | head -c 4096\nexit 1\n")
    wrapper.chmod(0o755)

    result = run_backup(replace(host, pg_bin_dir=str(wrapper_dir)))
    assert result.status == "failed" and result.step == "dump", result.log_line()
    assert "pg_dump exited 1" in result.error
    assert sorted(p.name for p in Path(host.spool_dir).iterdir()) == [".lock"]
    assert not Path(host.target).exists()


def test_bad_password_fails_without_logging_it(host, tmp_path, source_dsn):
    from psycopg.conninfo import make_conninfo

    wrong = "not-the-password-" + secrets.token_hex(4)
    Path(host.database_url_file).write_text(make_conninfo(source_dsn, password=wrong))
    result = run_backup(host)
    assert result.status == "failed" and result.step == "snapshot", result.log_line()
    assert wrong not in result.log_line()
    assert "password authentication failed" in result.error


def test_missing_public_key_is_a_clear_error(host):
    result = run_backup(replace(host, recipient="0" * 40))
    assert result.status == "failed"
    assert "is not in" in result.error and "re-run the backups role" in result.error


def test_the_host_keyring_refuses_a_secret_key(operator_key, tmp_path):
    ring = Keyring(operator_key.home)
    secret = ring.gpg.export_keys(operator_key.fingerprint, secret=True, expect_passphrase=False)
    with pytest.raises(KeyringError, match="SECRET key"):
        Keyring(tmp_path / "ring").import_public_key(secret)


# -- the drill names the cause -------------------------------------------------------------

def test_drill_fails_on_a_corrupted_file_naming_the_checksum(host, operator_key, pg_server):
    result = run_backup(host)
    assert result.status == "ok", result.log_line()
    dump = Path(host.target) / dump_name(result.name)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))

    report = drill(host, operator_key.home, pg_server)
    assert not report.ok
    assert [cause for cause, _ in report.failures] == ["checksum"]
    assert "DRILL FAIL (checksum)" in report.summary()


def test_drill_fails_on_a_30_hour_old_newest_backup(host, operator_key, pg_server):
    old = datetime.now(UTC) - timedelta(hours=30)
    result = run_backup(host, now=old)
    assert result.status == "ok", result.log_line()

    report = drill(host, operator_key.home, pg_server)
    assert [cause for cause, _ in report.failures] == ["too old"], report.summary()
    assert "30.0 h old (limit 26.0 h)" in report.summary()


def test_drill_without_the_secret_key_fails_naming_decrypt(host, operator_key, pg_server):
    assert run_backup(host).status == "ok"
    report = drill(host, Path(host.gnupghome), pg_server)  # the host's public-only keyring
    assert [cause for cause, _ in report.failures] == ["decrypt"], report.summary()


def test_drill_fails_when_counts_differ_from_the_manifest(host, operator_key, pg_server):
    result = run_backup(host)
    manifest_path = Path(host.target) / manifest_name(result.name)
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["public.backup_canary"] += 1
    manifest_path.write_text(json.dumps(manifest))

    report = drill(host, operator_key.home, pg_server)
    assert [cause for cause, _ in report.failures] == ["row counts"], report.summary()
    assert f"public.backup_canary: manifest {CANARY_ROWS + 1} rows, restored {CANARY_ROWS}" \
        in report.summary()


def test_drill_with_an_empty_target_says_so(host, operator_key, pg_server):
    report = drill(host, operator_key.home, pg_server)
    assert [cause for cause, _ in report.failures] == ["no backup"]


# -- retention -----------------------------------------------------------------------------

def test_retention_keeps_daily_and_weekly_on_spool_and_target(host):
    """Planted older backups (names only matter to retention) plus one real run."""
    config = replace(host, keep_daily=2, keep_weekly=2)
    now = datetime.now(UTC)
    planted = [now - timedelta(days=d) for d in (1, 2, 3, 9, 16, 23)]
    for directory in (Path(config.spool_dir), Path(config.target)):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for moment in planted:
            stem = "vos-backup-" + moment.strftime("%Y%m%dT%H%M%SZ")
            (directory / dump_name(stem)).write_bytes(b"x")
            (directory / manifest_name(stem)).write_text("{}")

    result = run_backup(config, now=now)
    assert result.status == "ok", result.log_line()

    def expected_days() -> set:
        # today's (the new one) and yesterday's by day; the newest of last week by week
        kept = {now, now - timedelta(days=1)}
        last_week = [m for m in planted if m.isocalendar()[:2] != now.isocalendar()[:2]]
        if now.isocalendar()[:2] == (now - timedelta(days=1)).isocalendar()[:2]:
            kept.add(max(last_week))
        return {"vos-backup-" + m.strftime("%Y%m%dT%H%M%SZ") for m in kept}

    for directory in (Path(config.spool_dir), Path(config.target)):
        listing = classify(p.name for p in directory.iterdir())
        assert set(listing.complete) == expected_days(), directory
    assert result.pruned_target and result.pruned_local


# -- overlapping runs: two real processes ---------------------------------------------------

def test_two_overlapping_runs_never_corrupt_each_other(host, tmp_path):
    """Run A is slowed by a wrapper that sleeps 3 s before the REAL pg_dump; run B starts
    meanwhile without waiting (exits 0, skipped); run C waits for the lock and completes."""
    wrapper_dir = tmp_path / "slow"
    wrapper_dir.mkdir()
    (wrapper_dir / "pg_dump").write_text(f"#!/bin/sh\nsleep 3\nexec {pg_tool('pg_dump')} \"$@\"\n")
    (wrapper_dir / "pg_dump").chmod(0o755)
    slow = tmp_path / "slow.json"
    replace(host, pg_bin_dir=str(wrapper_dir)).save(slow)
    fast = tmp_path / "fast.json"
    host.save(fast)

    def start(config: Path, lock_wait: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "backups.host", "run", "--config", str(config),
             "--lock-wait", str(lock_wait)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    a = start(slow, 0)
    wait_for_lock_holder(Path(host.spool_dir), a.pid)
    b = start(fast, 0)
    c = start(fast, 60)
    outputs = {}
    for name, proc in (("a", a), ("b", b), ("c", c)):
        out, err = proc.communicate(timeout=120)
        outputs[name] = (proc.returncode, json.loads(out.strip().splitlines()[-1]), err)

    assert outputs["a"][0] == 0 and outputs["a"][1]["status"] == "ok", outputs["a"]
    assert outputs["b"][0] == 0 and outputs["b"][1]["status"] == "skipped", outputs["b"]
    assert "another backup run holds" in outputs["b"][2]
    assert outputs["c"][0] == 0 and outputs["c"][1]["status"] == "ok", outputs["c"]
    assert outputs["a"][1]["name"] != outputs["c"][1]["name"]

    # One backup per day is kept, so C's retention removed A's complete pair (by name, as
    # a finished backup: it would never remove a run's temporary file).
    a_name, c_name = outputs["a"][1]["name"], outputs["c"][1]["name"]
    assert {dump_name(a_name), manifest_name(a_name)} <= set(outputs["c"][1]["pruned_local"])
    for directory in (Path(host.spool_dir), Path(host.target)):
        manifest = json.loads((directory / manifest_name(c_name)).read_text())
        assert sha256_of(directory / dump_name(c_name)) == manifest["sha256"]
    leftovers = [p.name for p in Path(host.spool_dir).iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def wait_for_lock_holder(spool: Path, pid: int, timeout: float = 30) -> None:
    """Until run A has written its pid into the lock file (it holds the lock then)."""
    deadline = time.monotonic() + timeout
    lock = spool / ".lock"
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.1)
    pytest.fail(f"run A (pid {pid}) never took the lock in {timeout} s")


def test_vos_backup_cli_run_and_drill(host, operator_key, pg_server, tmp_path):
    """The operator's commands: `vos backup run` prints one JSON line; `vos backup drill`
    exits 0 with PASS, and 1 naming the cause once the file is corrupted."""
    config = tmp_path / "config.json"
    host.save(config)
    vos = [str(Path(sys.executable).parent / "vos"), "backup"]
    env = {**os.environ, "VOS_DRILL_SCRATCH_DSN": pg_server}
    run = subprocess.run([*vos, "run", "--config", str(config)], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    [line] = run.stdout.strip().splitlines()
    name = json.loads(line)["name"]
    assert "step 1/4" in run.stderr

    args = [*vos, "drill", "--target", host.target, "--gnupghome", str(operator_key.home)]
    ok = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert ok.returncode == 0 and "DRILL PASS" in ok.stdout, ok.stdout + ok.stderr

    dump = Path(host.target) / dump_name(name)
    dump.write_bytes(dump.read_bytes()[:-10])
    bad = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert bad.returncode == 1 and "DRILL FAIL (checksum)" in bad.stdout, bad.stdout


# -- checks/test_backups.py against this machine as the "host" (testinfra local backend) ----

def run_backup_checks(config: BackupConfig, tmp_path: Path, *extra: str) -> tuple[int, str]:
    """Run the real check module with testinfra's local backend; returns (rc, output)."""
    path = tmp_path / "host-config.json"
    config.save(path)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "checks" / "test_backups.py"),
         "-p", "checks.plugin", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
         "--tb=line", "--hosts=local://", "-rs", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "VOS_CHECK_BACKUP_CONFIG": str(path)})
    return proc.returncode, proc.stdout + proc.stderr


def test_checks_pass_on_a_healthy_backup_host(host, tmp_path):
    assert run_backup(host).status == "ok"
    rc, output = run_backup_checks(host, tmp_path)
    assert rc == 0 and "3 passed" in output, output


def test_check_fails_on_a_planted_secret_key(host, operator_key, tmp_path):
    assert run_backup(host).status == "ok"
    secret = Keyring(operator_key.home).gpg.export_keys(
        operator_key.fingerprint, secret=True, expect_passphrase=False)
    Keyring(host.gnupghome).gpg.import_keys(secret)  # what a careless operator might do
    rc, output = run_backup_checks(host, tmp_path)
    assert rc == 1 and "BACKUPS §14: secret key material on the host" in output, output
    assert f"{host.gnupghome}/private-keys-v1.d/" in output


def test_check_fails_on_a_30_hour_old_newest_backup(host, tmp_path):
    assert run_backup(host, now=datetime.now(UTC) - timedelta(hours=30)).status == "ok"
    rc, output = run_backup_checks(host, tmp_path)
    assert rc == 1 and "h old (limit 26 h)" in output, output
    assert "BACKUPS §15: the newest backup on" in output


def test_check_fails_on_a_backup_readable_by_others(host, tmp_path):
    result = run_backup(host)
    (Path(host.spool_dir) / dump_name(result.name)).chmod(0o644)
    rc, output = run_backup_checks(host, tmp_path)
    assert rc == 1 and "BACKUPS §13: readable by group or others: 644" in output, output


def test_check_without_backups_role_skips_or_fails_when_required(tmp_path):
    path = tmp_path / "absent.json"
    env = {**os.environ, "VOS_CHECK_BACKUP_CONFIG": str(path)}
    argv = [sys.executable, "-m", "pytest", str(REPO / "checks" / "test_backups.py"),
            "-p", "checks.plugin", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rs",
            "--tb=line", "--hosts=local://"]
    skipped = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180,
                             env=env)
    assert skipped.returncode == 0 and "2 skipped" in skipped.stdout, skipped.stdout
    required = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180,
                              env={**env, "VOS_CHECK_REQUIRE_BACKUPS": "1"})
    assert required.returncode == 1 and "the backups role has not run" in required.stdout


# -- the inventory block and the role's operator-side helpers (no host needed) -------------

def _host_data(public_key_file: Path, **backups) -> dict:
    return {
        "ssh_hostname": "203.0.113.10", "ssh_user": "deploy", "public_address": "203.0.113.10",
        "operator_public_keys": ["ssh-ed25519 AAAAC3Nza op@laptop"],
        "mesh": {"provider": "tailscale", "tailscale": {}},
        "backups": {"target_host": "198.51.100.7", "public_key_file": str(public_key_file),
                    **backups},
    }


def test_inventory_backups_block_is_validated(operator_key, tmp_path):
    from roles.settings import InventoryError, validate_host

    public = tmp_path / "op.pub.asc"
    public.write_text(operator_key.public_armored)
    settings = validate_host("vps", _host_data(public)).backups
    assert settings.target_spec == "vos-backup@198.51.100.7:/srv/vos-backups"
    assert (settings.keep_daily, settings.keep_weekly, settings.schedule) == (7, 4, "17 3 * * *")

    with pytest.raises(InventoryError, match="backups.schedule: .*five cron fields"):
        validate_host("vps", _host_data(public, schedule="daily"))
    with pytest.raises(InventoryError, match="backups.target_path"):
        validate_host("vps", _host_data(public, target_path="srv/relative"))
    secret = tmp_path / "op.secret.asc"
    secret.write_text(Keyring(operator_key.home).gpg.export_keys(
        operator_key.fingerprint, secret=True, expect_passphrase=False))
    with pytest.raises(InventoryError, match="holds a SECRET key"):
        validate_host("vps", _host_data(secret))


def test_role_reads_the_fingerprint_and_demands_the_database_url(operator_key, tmp_path,
                                                                monkeypatch):
    from roles.backups import host_config, public_key_fingerprint
    from roles.settings import InventoryError, validate_host

    public = tmp_path / "op.pub.asc"
    public.write_text(operator_key.public_armored)
    assert public_key_fingerprint(public) == operator_key.fingerprint
    settings = validate_host("vps", _host_data(public, database_url_env="VOS_T_URL")).backups
    monkeypatch.delenv("VOS_T_URL", raising=False)
    with pytest.raises(InventoryError, match="VOS_T_URL is empty"):
        settings.database_url()
    # The config the role writes is exactly what the host-side tool loads.
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(host_config(settings, operator_key.fingerprint)))
    loaded = BackupConfig.load(config_path)
    assert loaded.recipient == operator_key.fingerprint
    assert loaded.target == "vos-backup@198.51.100.7:/srv/vos-backups"


# -- a pg_dump newer than the operator's pg_restore (the VM's 17 against Debian 12's 15) -----

@pytest.fixture(scope="module")
def pg17_client():
    """Debian trixie's PostgreSQL 17 client in a cached tree (backups/pgclient.py); built on
    first use (~1 min, root + debootstrap, as scripts/bootstrap.sh provides)."""
    from backups.pgclient import cache_root, ensure_pg_client, recipe_hash

    cached = (cache_root() / f"17-{recipe_hash(17)}" / "client.json").exists()
    if os.geteuid() != 0 and not cached:
        pytest.skip("building the PostgreSQL 17 client tree needs root (debootstrap)")
    return ensure_pg_client(17, log=lambda m: print(m, file=sys.stderr))


def test_the_drill_stops_up_front_when_pg_restore_is_older_than_the_pg_dump(
        host, operator_key, pg_server, pg17_client):
    """A backup written by pg_dump 17 (as on the Debian 13 host): with a pg_restore 15 the
    drill fails BEFORE fetching the dump, naming the package and --pg-bin-dir; with the
    cached 17 client passed as --pg-bin-dir it restores every row."""
    from backups.pgclient import tool_major

    local_major = tool_major(pg_tool("pg_restore"))
    result = run_backup(replace(host, pg_bin_dir=str(pg17_client.bin_dir)))
    assert result.status == "ok", result.log_line()
    manifest = json.loads((Path(host.target) / manifest_name(result.name)).read_text())
    assert manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL) 17."), manifest

    if local_major < 17:
        steps: list[str] = []
        old = drill(host, operator_key.home, pg_server, log=steps.append)
        assert [cause for cause, _ in old.failures] == ["pg_restore too old"], old.summary()
        assert "postgresql-client-17" in old.summary() and "--pg-bin-dir" in old.summary()
        assert not any("reads archives of" in step for step in steps), steps  # dump not fetched

    # No scratch DSN: the drill restores into the tree's own PostgreSQL 17 (pg_restore 17
    # writes SQL a 15 server rejects), started for the drill and removed after it.
    report = drill(host, operator_key.home, None, pg_bin_dir=str(pg17_client.bin_dir))
    assert report.ok, report.summary()
    assert report.rows == sum(manifest["tables"].values())


def test_the_client_check_falls_back_to_the_server_version_of_older_manifests(pg17_client):
    """Manifests written before pg_dump_version existed carry the server's version, a lower
    bound of the pg_dump's; a missing program is its own clear cause."""
    from backups.drill import DrillFailure, require_new_enough_pg_restore

    bin_dir = str(pg17_client.bin_dir)
    assert require_new_enough_pg_restore({"server_version": "17.2"}, bin_dir).endswith(
        "pg_restore")
    with pytest.raises(DrillFailure) as too_old:
        require_new_enough_pg_restore({"server_version": "18.0"}, bin_dir)
    assert too_old.value.cause == "pg_restore too old"
    assert "postgresql-client-18" in str(too_old.value)
    with pytest.raises(DrillFailure) as missing:
        require_new_enough_pg_restore({"server_version": "17.2"}, "/nonexistent/bin")
    assert missing.value.cause == "pg_restore missing"


def test_vos_backup_pg_client_prints_a_bin_dir_the_drill_accepts(host, operator_key,
                                                                   pg17_client):
    """`vos backup pg-client` (cached: no rebuild) prints the bin dir; `vos backup drill
    --pg-bin-dir` restores a pg_dump 17 backup with it."""
    vos = [str(Path(sys.executable).parent / "vos"), "backup"]
    printed = subprocess.run([*vos, "pg-client", "--major", "17"], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == str(pg17_client.bin_dir)
    assert "reusing the cached PostgreSQL 17 client" in printed.stderr

    assert run_backup(replace(host, pg_bin_dir=str(pg17_client.bin_dir))).status == "ok"
    args = [*vos, "drill", "--target", host.target, "--gnupghome", str(operator_key.home),
            "--pg-bin-dir", printed.stdout.strip()]
    env = {k: v for k, v in os.environ.items() if k != "VOS_DRILL_SCRATCH_DSN"}
    ok = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert ok.returncode == 0 and "DRILL PASS" in ok.stdout, ok.stdout + ok.stderr
    assert "starting PostgreSQL 17" in ok.stderr, ok.stderr
