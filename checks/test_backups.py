"""Backups (INVARIANTS.md §13-15): private files, public key only, a fresh backup off-host.

Judged from the host as an outsider: the checks read the host's backup config
(/etc/vos-backup/config.json, written by the backups role) for WHERE things are, and then
look at the files and the target themselves; nothing is imported from roles/ or backups/.

  - no secret key material in any keyring on the host (always checked, role or not);
  - the spool, the keyring and the database URL file are closed to group and others;
  - the newest complete backup (dump + manifest) ON THE TARGET is younger than 26 h.

A host without the config is a host whose backups role has not run yet: the last two checks
skip and say so, unless backups are required (`--vos-require-backups`, or
VOS_CHECK_REQUIRE_BACKUPS=1), which turns the skip into a failure. VOS_CHECK_BACKUP_CONFIG
points at another config path (the integration tests use it).

Run alone: pytest -p checks.plugin checks/test_backups.py --hosts=ssh://HOST
"""

from __future__ import annotations

import json
import os
import re
import shlex
from contextlib import nullcontext
from datetime import UTC, datetime

import pytest

from checks import plugin

expect, mesh_ip = plugin.expect, plugin.mesh_ip

DEFAULT_CONFIG = "/etc/vos-backup/config.json"
MAX_AGE_HOURS = 26
# Where gpg keeps secret keys: private-keys-v1.d/*.key (gpg ≥ 2.1) and secring.gpg (gpg 1).
KEY_SCAN_ROOTS = ["/root", "/home", "/var/lib", "/etc", "/opt", "/srv", "/usr/local"]
BACKUP_NAME = re.compile(r"^vos-backup-(\d{8}T\d{6}Z)\.(dump\.gpg|manifest\.json)$")


def _option(request: pytest.FixtureRequest, name: str, env: str, default):
    value = request.config.getoption(name, default=None)
    return value if value is not None else os.environ.get(env, default)


def as_root(host):
    """testinfra's sudo when we are not root already (the gate connects as the deploy user)."""
    return nullcontext() if host.check_output("id -u").strip() == "0" else host.sudo()


@pytest.fixture(scope="module")
def backup_config(host, request: pytest.FixtureRequest) -> dict | None:
    """The host's backup config, or None when the backups role has not run there."""
    path = _option(request, "--vos-backup-config", "VOS_CHECK_BACKUP_CONFIG", DEFAULT_CONFIG)
    with as_root(host):
        config = host.file(path)
        if not config.exists:
            return None
        return json.loads(config.content_string)


@pytest.fixture(scope="module")
def configured(backup_config: dict | None, request: pytest.FixtureRequest) -> dict:
    """The config, or skip (fail when backups are required) on a host without the role."""
    if backup_config is not None:
        return backup_config
    required = _option(request, "--vos-require-backups", "VOS_CHECK_REQUIRE_BACKUPS", "")
    message = (f"BACKUPS §15: no {DEFAULT_CONFIG} on the host — the backups role has not run; "
               "run `pyinfra INVENTORY deploys/backups.py`")
    if str(required).lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def test_no_secret_key_in_any_keyring(host, backup_config):
    """§14: a stolen host must not be able to read old backups."""
    roots = list(KEY_SCAN_ROOTS)
    if backup_config:
        roots.append(backup_config["gnupghome"])
    command = ("find " + " ".join(shlex.quote(r) for r in roots) + " -xdev "
               "\\( -path '*/private-keys-v1.d/*.key' -o \\( -name secring.gpg -size +0 \\) "
               "\\) -print 2>/dev/null || true")
    with as_root(host):
        found = sorted(set(host.check_output(command).split()))
    assert not found, (
        f"BACKUPS §14: secret key material on the host: {', '.join(found)} — the host must "
        "hold the operator's PUBLIC key only. Delete these files, and treat the key pair as "
        "compromised: make a new one and re-run deploys/backups.py with its public key")


def test_backup_files_closed_to_others(host, configured):
    """§13/§14: backups, the keyring directory and the database URL are the backup user's."""
    # Every backup file and the URL file; of the keyring, the directory itself (it holds a
    # public key only, and 0700 closes everything inside).
    files = " ".join(shlex.quote(configured[k]) for k in ("spool_dir", "database_url_file"))
    command = (f"{{ find {files} -perm /077 -printf '%m %p\\n'; "
               f"find {shlex.quote(configured['gnupghome'])} -maxdepth 0 -perm /077 "
               "-printf '%m %p\\n'; } 2>/dev/null || true")
    with as_root(host):
        loose = host.check_output(command).splitlines()
    assert not loose, (
        "BACKUPS §13: readable by group or others: " + "; ".join(loose) +
        " — chmod them 0600 (files) / 0700 (directories), or re-run deploys/backups.py")


def newest_on_target(host, config: dict) -> tuple[str | None, str]:
    """(newest complete backup's timestamp or None, what was listed), via rsync on the host
    with the host's own key: the same path the backup takes."""
    target = config["target"].rstrip("/") + "/"
    ssh = ["ssh", "-p", str(config.get("target_port", 22)), "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=20"]
    if config.get("target_ssh_key"):
        ssh += ["-i", config["target_ssh_key"], "-o", "IdentitiesOnly=yes"]
    if config.get("target_known_hosts"):
        ssh += ["-o", f"UserKnownHostsFile={config['target_known_hosts']}",
                "-o", "StrictHostKeyChecking=yes"]
    command = (f"rsync -e {shlex.quote(shlex.join(ssh))} --list-only --dirs "
               f"{shlex.quote(target)}")
    with as_root(host):
        listing = host.run(command)
    assert listing.rc == 0, (
        f"BACKUPS §15: cannot list the backup target {config['target']} from the host "
        f"(rsync exit {listing.rc}: {listing.stderr.strip()[-300:]}) — check the network path "
        "and that the target authorises the host's key (/var/lib/vos-backup/.ssh/id_ed25519.pub)")
    kinds: dict[str, set[str]] = {}
    for line in listing.stdout.splitlines():
        match = BACKUP_NAME.match(line.split()[-1]) if line.startswith("-") else None
        if match:
            kinds.setdefault(match.group(1), set()).add(match.group(2))
    complete = sorted(stamp for stamp, found in kinds.items() if len(found) == 2)
    return (complete[-1] if complete else None), listing.stdout


def test_newest_backup_on_target_is_fresh(host, configured):
    """§15: the newest complete backup on the target is younger than 26 h."""
    newest, _listing = newest_on_target(host, configured)
    assert newest is not None, (
        f"BACKUPS §15: no complete backup (dump + manifest) on the target "
        f"{configured['target']} — run `sudo -u vos-backup vos-backup run` on the host and "
        "read its line in `journalctl -t vos-backup`")
    taken = datetime.strptime(newest, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    now = datetime.fromtimestamp(int(host.check_output("date +%s")), UTC)
    age_hours = (now - taken).total_seconds() / 3600
    assert age_hours < MAX_AGE_HOURS, (
        f"BACKUPS §15: the newest backup on {configured['target']} (vos-backup-{newest}) is "
        f"{age_hours:.1f} h old (limit {MAX_AGE_HOURS} h) — the scheduled run is failing or "
        "not running: check /etc/cron.d/vos-backup and `journalctl -t vos-backup`")
