"""Backups on the staging VM (issue 8's staging tier), on the shared converged VM, last there.

Around the VM, on the operator's side of the WireGuard mesh, this test stands up:
  - the "managed Postgres": the session's real Postgres, reached by the VM through a small TCP
    forwarder bound to the operator's mesh address (the embedded server binds 127.0.0.1);
  - the backup target "outside the VM": a real OpenSSH sshd (own host key, own
    authorized_keys, root only, key auth only) bound to the operator's mesh address, writing
    into a temporary directory.

Then, for real: deploys/backups.py with a `backups` inventory block (the first run stops
with the host's key to authorise — the operator's real first step), the key authorised, a
backup taken ON THE VM by the installed `vos-backup` and shipped over SSH, the checks green,
no plaintext on the VM or the target, the drill restoring every row, two overlapping runs on
the VM (one skips), and the failing cases: a planted secret key and a 30-hour-old newest
backup make checks/test_backups.py fail naming the cause; a corrupted file fails the drill
naming the checksum.

The drill runs with PostgreSQL 17 from the cached trixie tree (backups/pgclient.py) when this
machine's pg_restore is older (Debian 12: 15); with the machine's own it must stop up front.

Cost: the test body (~13 min measured 2026-11-24 with other VMs running; most of it the
role's apt of postgresql-client & co under TCG). It runs on the shared converged VM, after
every other test there (`converged_vm_last`: the role stays installed), so it boots nothing
of its own (a throwaway VM cost another ~3 min with the stack starting). Building the
PostgreSQL 17 tree, when not cached yet, adds ~150 s (`vos backup pg-client`), usually paid by
the integration tier first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.db import migrate
from backups.drill import run_drill
from backups.keyring import Keyring
from backups.naming import classify, dump_name, manifest_name
from backups.target import Target
from staging.managed_db import pump_until_eof
from staging.state import REPO_ROOT

KEY_PARAMS = """\
%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Subkey-Type: ecdh
Subkey-Curve: cv25519
Name-Real: VOS staging operator
Expire-Date: 0
%commit
"""
CANARY_ROWS = 300
# The VM is Debian 13, whose pg_dump is PostgreSQL 17; the drill restores on the operator side,
# and pg_restore refuses archives from a newer pg_dump. When this machine's client is older
# (Debian 12 ships 15), the test builds (once, cached) Debian's own trixie client in a tree
# beside it (backups/pgclient.py) and hands its bin dir to the drill, as an operator would.
VM_PG_DUMP_MAJOR = 17


@pytest.fixture(scope="session")
def pg_bin_dir() -> str | None:
    """None when this machine's pg_restore reads pg_dump 17 archives, else the bin dir of the
    cached trixie client (built here if missing: ~1 min, before any VM boots)."""
    from backups.pgclient import ensure_pg_client, tool_major
    from backups.pipeline import pg_tool

    if tool_major(pg_tool("pg_restore")) >= VM_PG_DUMP_MAJOR:
        return None
    client = ensure_pg_client(VM_PG_DUMP_MAJOR,
                              log=lambda m: print(f"==> [backups] {m}", file=sys.stderr))
    return str(client.bin_dir)


# Build (or find) the PostgreSQL 17 tree before the session's VM boots: a broken mirror then
# fails in a minute, not after the converge.
# the backups role installs itself on the shared converged VM: after every other test there
# (rank 1: after the host-side mutations, whose whole-gate run must not judge its plants)
pytestmark = [pytest.mark.usefixtures("pg_bin_dir"), pytest.mark.converged_vm_last(1)]


class TcpForwarder:
    """Accept on (host, port) and relay each connection to 127.0.0.1:target_port."""

    def __init__(self, host: str, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.5)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            for end in (client, upstream):
                end.settimeout(None)  # the accepted socket inherits the listener's 0.5 s
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump_until_eof, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=5)


class SshTarget:
    """A real sshd on the operator's mesh address; root logs in with authorised keys only."""

    def __init__(self, address: str, workdir: Path) -> None:
        self.dir = workdir
        self.path = workdir / "backups"
        self.authorized = workdir / "authorized_keys"
        self.authorized.write_text("")
        key = workdir / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, timeout=30)
        self.host_key = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        self.port = _free_port(address)
        config = workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {address}", f"HostKey {key}",
            f"PidFile {workdir}/sshd.pid", f"AuthorizedKeysFile {self.authorized}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "AllowUsers root", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "sshd.log", "w"))
        _wait_port(address, self.port)

    def authorise(self, public_key: str) -> None:
        with open(self.authorized, "a") as handle:
            handle.write(public_key.strip() + "\n")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _wait_port(address: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on {address}:{port} after {timeout} s")


@pytest.fixture
def operator_side(pg_bin_dir, converged_vm, fresh_database,
                  migrated_db) -> Iterator[dict]:
    """Source database + canary, mesh-reachable Postgres, sshd target, operator key pair."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("the backups staging test needs openssh-server (scripts/bootstrap.sh)")
    mesh = converged_vm.lab.state.layout.operator_mesh
    canary = f"STAGING-CANARY-{secrets.token_hex(6)}"
    dsn = fresh_database()
    migrate(dsn, app_password=migrated_db.app_password, log=lambda _m: None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE backup_canary (id int PRIMARY KEY, secret text)")
        conn.execute("INSERT INTO backup_canary SELECT g, %s || g FROM generate_series(1, %s) g",
                     [canary, CANARY_ROWS])
    params = conninfo_to_dict(dsn)
    forwarder = TcpForwarder(mesh, int(params["port"]))
    workdir = Path(tempfile.mkdtemp(prefix="vos-bk-stg-", dir="/tmp"))
    target = None
    operator_home = workdir / "op-gpg"
    try:
        target = SshTarget(mesh, workdir)
        ring = Keyring(operator_home)
        fingerprint = ring.gpg.gen_key(KEY_PARAMS).fingerprint
        public_file = workdir / "operator.pub.asc"
        public_file.write_text(ring.gpg.export_keys(fingerprint))
        yield {
            "vm": converged_vm, "canary": canary, "source_dsn": dsn, "target": target,
            "vm_dsn": make_conninfo(dsn, host=mesh, port=forwarder.port),
            "operator_home": operator_home, "fingerprint": fingerprint,
            "public_file": public_file, "workdir": workdir, "mesh": mesh,
            "pg_bin_dir": pg_bin_dir,
        }
    finally:
        subprocess.run(["gpgconf", "--homedir", str(operator_home), "--kill", "all"],
                       capture_output=True, timeout=30, check=False)
        if target:
            target.close()
        forwarder.close()
        shutil.rmtree(workdir, ignore_errors=True)


def write_inventory(side: dict) -> Path:
    """inventory/staging.py's host plus a `backups` block pointing at the sshd target."""
    target: SshTarget = side["target"]
    backups = {
        "target_host": side["mesh"], "target_user": "root", "target_port": target.port,
        "target_path": str(target.path), "target_host_key": target.host_key,
        "public_key_file": str(side["public_file"]), "keep_daily": 3, "keep_weekly": 2,
        "database_url_env": "VOS_TEST_BACKUP_DATABASE_URL",
    }
    path = side["workdir"] / "inventory_backups.py"
    path.write_text(
        "import runpy\n"
        "from roles.settings import inventory_hosts\n"
        f"_name, _data = runpy.run_path({str(REPO_ROOT / 'inventory' / 'staging.py')!r})"
        "['staging'][0]\n"
        f"staging = inventory_hosts([(_name, {{**_data, 'backups': {backups!r}}})])\n")
    return path


def deploy_backups(side: dict, inventory: Path) -> subprocess.CompletedProcess[str]:
    pyinfra = Path(sys.executable).with_name("pyinfra")
    env = {**side["vm"].pyinfra_env, "VOS_TEST_BACKUP_DATABASE_URL": side["vm_dsn"],
           "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([str(pyinfra), "-y", str(inventory), "deploys/backups.py"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=2400)


def run_checks(vm) -> subprocess.CompletedProcess[str]:
    return vm.run_checks("checks/test_backups.py", "-p", "checks.plugin", "--tb=line", "-rs")


def test_backups_on_the_vm_end_to_end(operator_side):
    side = operator_side
    vm, target = side["vm"], side["target"]

    # 1. The role. First run: everything installed, then the backup-now step stops because
    #    the target does not know the host's key yet — the operator's real first step.
    inventory = write_inventory(side)
    first = deploy_backups(side, inventory)
    assert first.returncode != 0, "the target accepted a key nobody authorised"
    host_key = vm.ssh("sudo cat /var/lib/vos-backup/.ssh/id_ed25519.pub").stdout
    assert host_key.startswith("ssh-ed25519 ")
    assert "must authorise this key" in first.stdout + first.stderr
    target.authorise(host_key)

    # 2. The scheduled entry and the keyring as the role left them.
    cron = vm.ssh("sudo cat /etc/cron.d/vos-backup").stdout
    assert "flock -w 3600" in cron and "vos-backup run --quiet" in cron and "logger -t" in cron
    secret_list = vm.ssh("sudo -u vos-backup gpg --homedir /var/lib/vos-backup/gnupg "
                         "--batch --list-secret-keys --with-colons").stdout
    assert "sec:" not in secret_list

    # 3. A backup taken on the VM, shipped over SSH to the target outside it.
    run = vm.ssh("sudo -u vos-backup vos-backup run --quiet", check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    line = json.loads(run.stdout.strip().splitlines()[-1])
    assert line["status"] == "ok" and line["shipped"], line
    assert classify(p.name for p in target.path.iterdir()).newest == line["name"]

    # 4. Checks green on the VM.
    green = run_checks(vm)
    assert green.returncode == 0 and "3 passed" in green.stdout, green.stdout + green.stderr

    # 5. No plaintext: neither the dump magic nor the canary on the VM or the target.
    found = vm.ssh(f"sudo grep -r -a -l -e PGDMP -e {side['canary']} /var/lib/vos-backup "
                   "/tmp /var/tmp /root /home", check=False)
    assert found.returncode == 1 and not found.stdout.strip(), found.stdout
    local = subprocess.run(["grep", "-r", "-a", "-l", "-e", "PGDMP", "-e", side["canary"],
                            str(target.path)], capture_output=True, text=True, timeout=60)
    assert local.returncode == 1, local.stdout

    # 6. The drill restores every row (target read from its directory, operator side), with
    #    a pg_restore as new as the VM's pg_dump. With this machine's own older client it
    #    stops up front, before fetching the dump, naming what to install / pass.
    manifest = json.loads((target.path / manifest_name(line["name"])).read_text())
    assert manifest["pg_dump_version"].startswith(f"pg_dump (PostgreSQL) {VM_PG_DUMP_MAJOR}.")
    if side["pg_bin_dir"]:
        old = run_drill(Target(str(target.path)), side["operator_home"],
                        make_conninfo(side["source_dsn"], dbname="postgres"))
        assert [cause for cause, _ in old.failures] == ["pg_restore too old"], old.summary()
        assert f"postgresql-client-{VM_PG_DUMP_MAJOR}" in old.summary()
        assert "--pg-bin-dir" in old.summary()
    report = run_drill(Target(str(target.path)), side["operator_home"], _scratch_server(side),
                       pg_bin_dir=side["pg_bin_dir"])
    assert report.ok, report.summary()
    assert manifest["tables"]["public.backup_canary"] == CANARY_ROWS
    assert report.rows == sum(manifest["tables"].values()) and report.rows >= CANARY_ROWS

    # 7. Two overlapping runs on the VM: one backs up, the other skips cleanly (exit 0).
    both = vm.ssh("sudo -u vos-backup sh -c 'vos-backup run --quiet & "
                  "vos-backup run --quiet; wait'", check=False)
    statuses = sorted(json.loads(x)["status"] for x in both.stdout.strip().splitlines())
    assert both.returncode == 0 and statuses == ["ok", "skipped"], both.stdout + both.stderr

    # 8. Mutations: a planted secret key, and a newest backup that is 30 hours old.
    secret = Keyring(side["operator_home"]).gpg.export_keys(
        side["fingerprint"], secret=True, expect_passphrase=False)
    vm.ssh(f"sudo gpg --batch --quiet --import <<'EOF'\n{secret}\nEOF")
    _age_newest_backup(target.path, hours=30)
    red = run_checks(vm)
    assert red.returncode == 1, red.stdout
    assert "BACKUPS §14: secret key material on the host: /root/.gnupg/private-keys-v1.d/" \
        in red.stdout, red.stdout
    assert "h old (limit 26 h)" in red.stdout, red.stdout

    # 9. A corrupted file fails the drill, naming the checksum.
    newest = classify(p.name for p in target.path.iterdir()).newest
    dump = target.path / dump_name(newest)
    dump.write_bytes(dump.read_bytes()[:-1] + b"\x00")
    broken = run_drill(Target(str(target.path)), side["operator_home"], _scratch_server(side),
                       max_age_hours=1000, pg_bin_dir=side["pg_bin_dir"])
    assert [cause for cause, _ in broken.failures] == ["checksum"], broken.summary()


def _scratch_server(side: dict) -> str | None:
    """None (the drill starts the pg-client tree's own Postgres 17: pg_restore 17 writes SQL
    that a 15 server rejects) when the drill uses that tree; else the session's Postgres."""
    if side["pg_bin_dir"]:
        return None
    return make_conninfo(side["source_dsn"], dbname="postgres")


def _age_newest_backup(directory: Path, hours: int) -> None:
    """Rename every complete backup so the newest is `hours` old (the check reads names)."""
    from datetime import UTC, datetime, timedelta

    from backups.naming import stem_for

    listing = classify(p.name for p in directory.iterdir())
    for index, stem in enumerate(reversed(listing.complete)):
        old = stem_for(datetime.now(UTC) - timedelta(hours=hours + index))
        for make in (dump_name, manifest_name):
            os.rename(directory / make(stem), directory / make(old))
