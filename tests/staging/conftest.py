"""Fixtures for the staging tier: real QEMU VMs on a real public netns and WireGuard mesh.

Three fixtures, all returning a :class:`StagingVm`:

``staging_vm`` (session)
    A VM booted from a fresh overlay on the cached base image (a fresh "cloud VPS": password
    auth on, root login by key, public SSH open), networks and mesh operator side up.
``converged_vm`` (session)
    ``staging_vm`` after ``pyinfra inventory/staging.py deploys/full.py`` ran once; its disk
    is then frozen (clean shutdown, qcow2 kept read-only) and the VM boots again from a new
    overlay on that snapshot. Do not mutate it: use ``fresh_converged_vm`` for that.
``fresh_converged_vm`` (function)
    A VM booted from a NEW overlay on the converged snapshot, destroyed afterwards: break an
    invariant on purpose, run a check, see it fail.

One session owns one slot (addresses below) and runs one VM at a time, because all VMs of a
slot share the public address and the mesh keys. Switching VM costs a boot (~45 s under TCG),
so the tests are reordered: pristine ``staging_vm`` tests first, then ``converged_vm``, then
``fresh_converged_vm``. Each handle re-activates its VM when used out of that order.

The handle (``StagingVm``) offers:
    vm.ssh("sudo ss -tlnp", check=True) -> CompletedProcess   # as the sudo-able deploy user
    vm.public_address, vm.mesh_address                        # e.g. 203.0.113.10, 100.64.0.2
    vm.public_address6                                        # e.g. 2001:db8::10
    vm.testinfra_host                                         # over the mesh once it is up
    vm.inventory_path                                         # inventory/staging.py
    vm.pyinfra_env                                            # env for running pyinfra yourself
    vm.scan() -> [443]                                        # nmap from the public netns
    vm.scan(family=6) -> []                                   # the same over IPv6
    vm.scan_replies("udp", family=6) -> {}                    # UDP ports that replied
    vm.run_pyinfra("deploys/full.py") -> CompletedProcess
    vm.run_checks("checks/test_ssh.py") -> CompletedProcess    # pytest checks/ on this VM

Example:
    def test_only_the_door_is_open(converged_vm):
        assert converged_vm.scan() == [443]

Environment knobs: ``VOS_STAGING_BOOT_TIMEOUT`` (default 240 s), ``VOS_IMAGE_CACHE``,
``VOS_STAGING_CONVERGE_DEPLOY`` (default ``deploys/full.py``; e.g. ``deploys/mesh.py``),
``VOS_STAGING_KEEP_LOGS=1`` keeps the session's state dir (console logs, pyinfra output),
``VOS_STAGING_REUSE_LAB=/tmp/mine`` (iteration only) runs against a lab you brought up and
converged with ``VOS_STAGING_DIR=/tmp/mine vos staging up --deploy``, and keeps it; one run
per lab (the run freezes the converged disk and stops that VM).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra

from staging import lynis
from staging.lab import INVENTORY, PRIMARY, Lab, remove_state_dir
from staging.managed_db import ManagedDb
from staging.state import REPO_ROOT, temporary_state_dir

CONVERGED = "converged"
FRESH = "fresh"
FULL_DEPLOY = REPO_ROOT / "deploys" / "full.py"
# What `converged_vm` converges with: deploys/full.py unless overridden for iteration.
CONVERGE_DEPLOY = REPO_ROOT / os.environ.get("VOS_STAGING_CONVERGE_DEPLOY", "deploys/full.py")


def _still_starting(ps_line: str) -> bool:
    """`docker ps` "name state status" line of a container not yet settled (a one-shot that
    exited 0, like the migrations, is settled).

    Example:
        >>> _still_starting("vos-api-1 running Up 40 seconds (health: starting)")
        True
    """
    _name, state, status = (ps_line.split(None, 2) + ["", ""])[:3]
    return (state in ("created", "restarting") or "health: starting" in status
            or "unhealthy" in status or (state == "exited" and "Exited (0)" not in status))


class StagingVm:
    """One named VM of a staging lab, booted on demand from its backing disk."""

    def __init__(self, lab: Lab, name: str, backing: Path, converged: bool = False):
        self.lab = lab
        self.name = name
        self.backing = backing
        self.converged = converged

    def activate(self) -> StagingVm:
        """Make sure this VM is the one running (boots it when another one ran meanwhile);
        after a boot, wait for the app stack (if any) to be healthy."""
        running = self.lab.running_vm() == self.name
        self.lab.activate(self.name, self.backing)
        if not running:
            self.wait_for_boot()
            if self.converged:
                self.forget_boot_time_root_key()
            self.wait_for_stack()
        return self

    def forget_boot_time_root_key(self) -> None:
        """The staging image writes the operator's key for root on EVERY boot (from the kernel
        command line); a cloud writes it once per instance, and the deploy removed it
        (ACCOUNTS §16). A converged VM booted again takes back what the boot hook wrote, so
        the host the tests judge is the one the deploy left."""
        self.ssh("sudo rm -f /root/.ssh/authorized_keys")

    def wait_for_boot(self, timeout: int = 420) -> str:
        """After a boot, wait (bounded) until systemd has started every unit: SSH answers long
        before fail2ban has loaded its jails, auditd its rules or AppArmor its profiles under
        TCG, and a gate run in between judges a host still booting. Returns systemd's state
        ("running", or "degraded" when a unit failed: the gate then says which)."""
        out = self.ssh(f"timeout {timeout} systemctl is-system-running --wait", check=False,
                       timeout=timeout + 60)
        return out.stdout.strip()

    @property
    def public_address(self) -> str:
        return self.lab.state.layout.vm_public

    @property
    def public_address6(self) -> str:
        return self.lab.state.layout.vm_public6

    @property
    def mesh_address(self) -> str:
        return self.lab.state.layout.vm_mesh

    @property
    def address(self) -> str:
        """Where SSH goes right now: mesh when it is up, else public."""
        self.activate()
        return self.lab.address()

    @property
    def inventory_path(self) -> Path:
        return INVENTORY

    @property
    def state_dir(self) -> Path:
        return self.lab.state_dir

    @property
    def pyinfra_env(self) -> dict[str, str]:
        """Environment for `pyinfra <inventory_path> …` so the inventory finds this lab."""
        return {**os.environ, "VOS_STAGING_DIR": str(self.lab.state_dir)}

    @property
    def ssh_config(self) -> str:
        return self.lab.state.ssh_config

    def ssh(self, command: str, check: bool = True, timeout: float = 300):
        """Run `command` as the deploy user; `check=True` raises on a non-zero exit."""
        self.activate()
        return self.lab.ssh(command, check=check, timeout=timeout)

    @property
    def testinfra_host(self):
        """A testinfra host over SSH (mesh alias once the mesh answers, else public)."""
        self.activate()
        alias = "staging-mesh" if self.lab.address() == self.mesh_address else "staging-public"
        return testinfra.get_host(f"ssh://{alias}", ssh_config=self.ssh_config)

    def scan(self, ports: str = "1-65535", family: int = 4) -> list[int]:
        """Open TCP ports on the public address (IPv4; IPv6 with `family=6`), seen from the
        public namespace."""
        self.activate()
        return self.lab.scan(ports=ports, family=family)

    def scan_replies(self, protocol: str = "udp", family: int = 4,
                     ports: str = "1-65535") -> dict[int, str]:
        """Ports on the public address that replied to a `protocol` scan from the public
        namespace, with their state ("open" or "closed"), e.g. {} or {9999: "open"}."""
        self.activate()
        return self.lab.scan_replies(protocol, family=family, ports=ports)

    def lynis_start(self, profile: bool = True) -> float:
        """Start Lynis's audit of this VM in the background (staging.lynis.start)."""
        self.activate()
        return lynis.start(self.lab.ssh_command(), profile)

    def lynis_collect(self, started: float):
        """Wait for the audit `lynis_start` began; its figures (staging.lynis.LynisAudit)."""
        self.activate()
        return lynis.collect(self.lab.ssh_command(), started)

    def wait_for_stack(self, timeout: float = 420) -> str:
        """After a boot, wait until every container of the app stack runs and is healthy.

        Under TCG the containers start (and pass their start period) minutes after systemd
        reports the VM up; tests judging the stack before that would see a half-started
        host. No stack (a converge without one) returns at once. Returns the last status.
        """
        query = ("sudo docker ps -a --filter label=com.docker.compose.project=vos "
                 "--format '{{.Names}} {{.State}} {{.Status}}'")
        deadline = time.monotonic() + timeout
        while True:
            lines = self.ssh(query, check=False).stdout.strip().splitlines()
            waiting = [line for line in lines if _still_starting(line)]
            if not waiting:
                return "\n".join(lines)
            if time.monotonic() > deadline:
                pytest.fail(f"the app stack on {self.name} is not healthy {timeout:.0f} s after "
                            f"boot:\n" + "\n".join(lines))
            time.sleep(5)

    def run_pyinfra(self, deploy_path: str | Path, extra: list[str] | None = None):
        """`pyinfra -y inventory/staging.py <deploy_path>`; returns the CompletedProcess."""
        self.activate()
        return self.lab.run_pyinfra(deploy_path, extra=extra)


    def run_checks(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """`pytest checks/ --hosts=ssh://<alias> --ssh-config=…` (args replace `checks/`)."""
        self.activate()
        alias = "staging-mesh" if self.lab.address() == self.mesh_address else "staging-public"
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            *(args or ("checks/",)),
            f"--hosts=ssh://{alias}", f"--ssh-config={self.ssh_config}",
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO_ROOT)


def _order(item: pytest.Item) -> float:
    """Pristine VM first, then the converged VM, then the tests that change the converged
    VM for good (`converged_vm_last`: the backups role installs itself there), then the
    throwaway VMs (booted from the converged snapshot, so that change never reaches them),
    lifecycle last. One VM runs at a time: switching boots, so each group runs together."""
    if item.get_closest_marker("staging_last"):
        return 3
    names = set(getattr(item, "fixturenames", ()))
    if "fresh_converged_vm" in names:
        return 2
    last = item.get_closest_marker("converged_vm_last")
    if last is not None:
        return 1.5 + (last.args[0] if last.args else 0) / 100
    if "converged_vm" in names:
        return 1
    return 0


EXTENDED = os.environ.get("VOS_STAGING_EXTENDED") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "staging_last: run after every other staging test")
    config.addinivalue_line("markers", "converged_vm_last(rank=0): changes the shared converged "
                            "VM for good: runs after every other test on it, by rank")
    config.addinivalue_line(
        "markers", "staging_extended: a throwaway VM of its own, or a long run (~3-15 min each "
        "under TCG); "
        "runs only with VOS_STAGING_EXTENDED=1, so the default run fits CI's time budget")


@pytest.hookimpl(tryfirst=True)  # mark before `-m "not staging"` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/staging as `staging`; then order pristine-VM tests
    first, converged next, mutations last, so each VM boots once."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.staging)
    staging = [item for item in items if item.get_closest_marker("staging")]
    if not staging:
        return
    if not EXTENDED:
        skip = pytest.mark.skip(reason="extended staging test: set VOS_STAGING_EXTENDED=1 "
                                       "(`make test-staging-extended`) to run it")
        for item in staging:
            if item.get_closest_marker("staging_extended"):
                item.add_marker(skip)
    others = [item for item in items if not item.get_closest_marker("staging")]
    items[:] = others + sorted(staging, key=_order)


@pytest.fixture(scope="session")
def staging_lab() -> Iterator[Lab]:
    """The session's lab in its own state dir (never the developer's .cache/staging, and
    not pytest's tmp_path either: see staging.state.temporary_state_dir)."""
    if os.geteuid() != 0:
        pytest.skip("the staging tier needs root (network namespaces, taps)")
    missing = [tool for tool in ("qemu-system-x86_64", "wireguard-go", "nmap", "debootstrap")
               if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"staging tier needs {missing}: run `bash scripts/bootstrap.sh`")
    reuse = os.environ.get("VOS_STAGING_REUSE_LAB")
    if reuse:  # iteration only: a lab you brought up (and converged) yourself; kept after
        lab = Lab(Path(reuse))
        if lab.running_vm() is None:
            # `up` would destroy and re-create it (and the frozen converged disk with it)
            pytest.fail(f"VOS_STAGING_REUSE_LAB: no VM runs in {reuse} (a reuse run freezes "
                        "the converged VM's disk and stops it, so a lab serves one run); bring "
                        f"one up again: VOS_STAGING_DIR={reuse} vos staging up --deploy")
        lab.up()
        yield lab
        return
    lab = Lab(temporary_state_dir("session"))
    try:
        lab.up()
        yield lab
    finally:
        lab.destroy(keep_logs=True)
        # The managed Postgres outlives `destroy` on purpose (burn-down); not this lab's.
        ManagedDb(lab.state_dir, "").server.stop()
        keep = os.environ.get("VOS_STAGING_KEEP_LOGS")
        if not keep:
            remove_state_dir(lab.state_dir)


@pytest.fixture(scope="session")
def staging_vm(staging_lab: Lab) -> StagingVm:
    """A fresh-cloud-VPS VM on the cached base image (see module doc)."""
    base = Path(staging_lab.state.image_dir) / "base.raw"
    return StagingVm(staging_lab, PRIMARY, base).activate()


@pytest.fixture(scope="session")
def converge_deploy() -> Path:
    """The deploy `converged_vm` was converged with (deploys/full.py unless overridden)."""
    return CONVERGE_DEPLOY


@pytest.fixture(scope="session")
def converge_result(staging_vm: StagingVm) -> subprocess.CompletedProcess[str] | None:
    """The converge: deploys/full.py run once on the pristine VM (its output, for tests
    that judge what the deploy itself said, like its gate step). None with
    ``VOS_STAGING_REUSE_LAB`` (iteration only: the lab's VM was converged by hand)."""
    if os.environ.get("VOS_STAGING_REUSE_LAB"):
        return None
    staging_vm.activate()
    result = staging_vm.run_pyinfra(CONVERGE_DEPLOY)
    if result.returncode != 0:
        pytest.fail(
            f"{CONVERGE_DEPLOY.name} failed on the staging VM (exit {result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def converged_snapshot(staging_vm: StagingVm, converge_result) -> Path:
    """The converged VM's disk, frozen (clean shutdown) after the converge.

    With ``VOS_STAGING_REUSE_LAB`` (iteration only) the lab's running VM is taken as
    converged already (`vos staging up --deploy`), and a frozen disk found there is reused.
    """
    frozen = staging_vm.lab.state_dir / "converged-base.qcow2"
    if converge_result is None and frozen.exists():
        return frozen
    return staging_vm.lab.snapshot(PRIMARY, frozen.stem)


@pytest.fixture(scope="session")
def converged_vm(staging_lab: Lab, converged_snapshot: Path) -> StagingVm:
    """The converged VM, booted from a new overlay on the converged snapshot."""
    return StagingVm(staging_lab, CONVERGED, converged_snapshot, converged=True).activate()


@pytest.fixture
def fresh_converged_vm(staging_lab: Lab, converged_snapshot: Path) -> Iterator[StagingVm]:
    """A throwaway converged VM for mutation tests; removed after the test."""
    vm = StagingVm(staging_lab, FRESH, converged_snapshot, converged=True).activate()
    try:
        yield vm
    finally:
        staging_lab.remove_vm(FRESH)



def pyinfra_output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout+stderr of a pyinfra run, for assertion messages (used by other tier modules)."""
    return f"{result.stdout}\n{result.stderr}"
