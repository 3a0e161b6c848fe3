"""Backups role: the host-side backup tooling, the operator's PUBLIC key, and the schedule.

What lands on the host:
  /opt/vos-backup/backups/*.py      the host half of backups/ (stdlib + psycopg + gnupg)
  /usr/local/bin/vos-backup         `vos-backup run|list`, with the distribution's python3
  /etc/vos-backup/config.json       spool, keyring, recipient, target, retention (no secret)
  /etc/vos-backup/database-url      the managed Postgres URL, 0600 vos-backup
  /var/lib/vos-backup/gnupg         keyring with the operator's PUBLIC key only
  /var/lib/vos-backup/.ssh/         the host's own key for the target (generated here)
  /etc/cron.d/vos-backup            the schedule: flock + one JSON line to the journal

Runs as the system user `vos-backup`, not root: the job needs the network, its spool and its
keyring, nothing else. Cron, not a systemd timer, because the seed says cron; `flock` in the
entry gives the no-overlap guarantee a timer would give by itself.

Example (deploys/backups.py, deploys/full.py):
    backups.scheduled(settings.backups)
"""

from __future__ import annotations

import json
import tempfile
from io import StringIO
from pathlib import Path

import gnupg
from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, python, server

from roles._paths import template
from roles.settings import BackupSettings, InventoryError

BACKUP_USER = "vos-backup"
HOME = Path("/var/lib/vos-backup")
GNUPGHOME = HOME / "gnupg"
SPOOL = HOME / "spool"
SSH_DIR = HOME / ".ssh"
SSH_KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
ETC = Path("/etc/vos-backup")
INSTALL_DIR = Path("/opt/vos-backup")
PUBLIC_KEY_DEST = ETC / "operator.pub.asc"
CRON_LOCK = HOME / "cron.lock"
PACKAGES = ["postgresql-client", "gnupg", "python3-gnupg", "python3-psycopg", "rsync",
            "openssh-client", "util-linux", "cron", "bsdutils"]
# The host half of backups/: what `vos-backup run` imports. The drill and the typer CLI stay
# on the operator's side.
HOST_MODULES = ["__init__.py", "naming.py", "keyring.py", "snapshot.py", "target.py",
                "pipeline.py", "host.py"]
SOURCE = Path(__file__).resolve().parent.parent / "backups"


def public_key_fingerprint(path: Path) -> str:
    """Fingerprint of the ONE public key in an armored file, read operator-side without
    importing it anywhere (python-gnupg scan_keys, in a throwaway GNUPGHOME).

    Example:
        public_key_fingerprint(Path("operator.pub.asc"))  # -> "3F2A…"
    """
    with tempfile.TemporaryDirectory(prefix="vos-scan-", dir="/tmp") as home:
        keys = gnupg.GPG(gnupghome=home).scan_keys(str(path))
    if len(keys) != 1 or keys[0]["type"] != "pub":
        raise InventoryError(f"backups.public_key_file: {path} must hold exactly one public "
                             f"key (found {len(keys)}); export it with gpg --export --armor")
    return keys[0]["fingerprint"]


def known_hosts_line(settings: BackupSettings) -> str | None:
    """The pinned host key of the target in known_hosts form.

    Example:
        >>> s = BackupSettings.model_construct(target_host="10.0.0.7", target_port=2222,
        ...                                    target_host_key="ssh-ed25519 AAAAC3")
        >>> known_hosts_line(s)
        '[10.0.0.7]:2222 ssh-ed25519 AAAAC3\\n'
    """
    if not settings.target_host_key:
        return None
    name = (settings.target_host if settings.target_port == 22
            else f"[{settings.target_host}]:{settings.target_port}")
    return f"{name} {settings.target_host_key.strip()}\n"


def host_config(settings: BackupSettings, fingerprint: str) -> dict:
    """The JSON config `vos-backup run` reads (field names: backups.pipeline.BackupConfig)."""
    return {
        "database_url_file": str(ETC / "database-url"),
        "gnupghome": str(GNUPGHOME),
        "recipient": fingerprint,
        "spool_dir": str(SPOOL),
        "target": settings.target_spec,
        "target_ssh_key": str(SSH_KEY),
        "target_known_hosts": str(KNOWN_HOSTS) if settings.target_host_key else None,
        "target_port": settings.target_port,
        "keep_daily": settings.keep_daily,
        "keep_weekly": settings.keep_weekly,
        "lock_wait_seconds": 0,
    }


class GpgFingerprints(FactBase):
    """Fingerprints of the public keys in one GNUPGHOME, read as the user who owns it."""

    requires_command = "gpg"

    def command(self, homedir: str, user: str) -> str:
        return (f"runuser -u {user} -- gpg --homedir {homedir} --batch --list-keys "
                "--with-colons 2>/dev/null | awk -F: '$1 == \"fpr\" {print $10}' || true")

    def process(self, output: list[str]) -> list[str]:
        return [line.strip().upper() for line in output if line.strip()]


@operation()
def public_key_imported(homedir: str, user: str, key_file: str, fingerprint: str):
    """Import the operator's public key into the keyring unless its fingerprint is there.

    Example:
        public_key_imported(homedir="/var/lib/vos-backup/gnupg", user="vos-backup",
                            key_file="/etc/vos-backup/operator.pub.asc", fingerprint="3F2A…")
    """
    present = host.get_fact(GpgFingerprints, homedir=homedir, user=user) or []
    if fingerprint.upper() in present:
        host.noop(f"public key {fingerprint[-16:]} already in {homedir}")
        return
    yield (f"runuser -u {user} -- gpg --homedir {homedir} --batch --quiet --import {key_file}"
           f" && runuser -u {user} -- gpg --homedir {homedir} --batch --list-keys {fingerprint}"
           " >/dev/null")


@deploy("Backups")
def scheduled(settings: BackupSettings, run_now: bool = False):
    """Install the tooling, the public key, the config and the cron entry.

    `run_now` takes one backup at the end of the deploy (deploys/backups.py does), so a
    broken target or database URL shows up now rather than at 03:17.

    Example:
        scheduled(settings.backups, run_now=True)
    """
    fingerprint = public_key_fingerprint(settings.public_key_file)
    database_url = settings.database_url()  # fails before any change when unset
    apt.update(name="apt update (cached 1 h; deploys/backups.py may run alone)",
               cache_time=3600, _sudo=True)
    apt.packages(name="Backup tooling (pg_dump, gpg, rsync, cron, python3 libs)",
                 packages=PACKAGES, no_recommends=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    server.user(name=f"System user {BACKUP_USER}", user=BACKUP_USER, system=True,
                home=str(HOME), shell="/usr/sbin/nologin", ensure_home=True, _sudo=True)
    _directories()
    _tooling()
    files.put(name="Operator's PUBLIC key", src=str(settings.public_key_file),
              dest=str(PUBLIC_KEY_DEST), user="root", group="root", mode="644",
              create_remote_dir=False, _sudo=True)
    public_key_imported(name="Public key in the backup keyring", homedir=str(GNUPGHOME),
                        user=BACKUP_USER, key_file=str(PUBLIC_KEY_DEST),
                        fingerprint=fingerprint, _sudo=True)
    files.put(name="Backup config (/etc/vos-backup/config.json)",
              src=StringIO(json.dumps(host_config(settings, fingerprint), indent=2) + "\n"),
              dest=str(ETC / "config.json"), user="root", group=BACKUP_USER, mode="640",
              create_remote_dir=False, _sudo=True)
    files.put(name="Database URL for pg_dump (0600, secret)", src=StringIO(database_url + "\n"),
              dest=str(ETC / "database-url"), user=BACKUP_USER, group=BACKUP_USER,
              mode="600", create_remote_dir=False, _sudo=True)
    _target_access(settings)
    files.template(name="Schedule (/etc/cron.d/vos-backup, flock'd)",
                   src=template("backups/cron.j2"), dest="/etc/cron.d/vos-backup",
                   user="root", group="root", mode="644", schedule=settings.schedule,
                   run_as=BACKUP_USER, lock_file=str(CRON_LOCK), create_remote_dir=False,
                   _sudo=True)
    if run_now:
        server.shell(name="Take one backup now (same flock as cron)",
                     commands=[f"runuser -u {BACKUP_USER} -- /usr/bin/flock -w 3600 "
                               f"{CRON_LOCK} /usr/local/bin/vos-backup run"],
                     _sudo=True)


def _directories() -> None:
    """Every directory the role writes into, parents included (under login.defs UMASK 027 an
    implicit parent would be 0750 root, closed to vos-backup), made here with its owner and
    mode (the file
    operations run with create_remote_dir=False: pyinfra would otherwise chown a file's
    parent to the file's owner, e.g. /etc/vos-backup to vos-backup for database-url)."""
    for path, owner, group, mode in (
        (HOME, BACKUP_USER, BACKUP_USER, "700"), (GNUPGHOME, BACKUP_USER, BACKUP_USER, "700"),
        (SPOOL, BACKUP_USER, BACKUP_USER, "700"), (SSH_DIR, BACKUP_USER, BACKUP_USER, "700"),
        (ETC, "root", BACKUP_USER, "750"), (INSTALL_DIR, "root", "root", "755"),
        (INSTALL_DIR / "backups", "root", "root", "755"),
    ):
        files.directory(name=f"Directory {path} ({mode})", path=str(path), user=owner,
                        group=group, mode=mode, _sudo=True)


def _tooling() -> None:
    for module in HOST_MODULES:
        files.put(name=f"Tooling: backups/{module}", src=str(SOURCE / module),
                  dest=str(INSTALL_DIR / "backups" / module), user="root", group="root",
                  mode="644", create_remote_dir=False, _sudo=True)
    files.template(name="Tooling: /usr/local/bin/vos-backup",
                   src=template("backups/vos-backup.sh.j2"), dest="/usr/local/bin/vos-backup",
                   user="root", group="root", mode="755", install_dir=str(INSTALL_DIR),
                   create_remote_dir=False, _sudo=True)


@operation()
def ssh_key_present(path: str, user: str):
    """Generate the user's ed25519 key at `path` once; never replace an existing one (the
    target authorised it).

    Example:
        ssh_key_present(path="/var/lib/vos-backup/.ssh/id_ed25519", user="vos-backup")
    """
    if host.get_fact(File, path=path, _sudo=True):
        host.noop(f"{path} exists")
        return
    yield (f"runuser -u {user} -- ssh-keygen -q -t ed25519 -N '' "
           f"-C {user}@$(hostname) -f {path}")


def _target_access(settings: BackupSettings) -> None:
    made = ssh_key_present(name="The host's own SSH key for the backup target",
                           path=str(SSH_KEY), user=BACKUP_USER, _sudo=True)
    line = known_hosts_line(settings)
    if line:
        files.put(name="Pinned host key of the backup target", src=StringIO(line),
                  dest=str(KNOWN_HOSTS), user=BACKUP_USER, group=BACKUP_USER, mode="644",
                  create_remote_dir=False, _sudo=True)
    python.call(name="Show the new key to authorise on the backup target",
                function=_show_target_key, target=settings.target_spec,
                _if=made.did_change)


def _show_target_key(target: str) -> None:
    ok, output = host.run_shell_command(f"cat {SSH_KEY}.pub", _sudo=True)
    key = output.stdout.strip() if ok else "(unreadable)"
    logger.info(f"{host.print_prefix}backup target {target} must authorise this key "
                f"(restrict it: command=\"rrsync {target.partition(':')[2]}\"): {key}")
