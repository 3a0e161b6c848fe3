"""The kernel checks' file and mount judgements (checks/test_kernel.py, INVARIANTS.md §21-23)
against a real Debian 13 userland: a container of the local base (`debootstrap | docker
import`, nothing pulled), reached by testinfra's docker backend (`--hosts=docker://NAME`),
exactly as the gate runs the checks. Files are planted wrong (missing, overridden by a later
drop-in) and then right (the deploy's own templates, rendered), and the check must fail naming
the file and the fix, then pass.

The module-loaded check needs a kernel of the target's own and skips here (the staging VM
plants a loaded module).

Cost: ~25 s with the base image cached.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from jinja2 import Environment, StrictUndefined

from roles.kernel import BLACKLIST_FILE, COREDUMP_DROPIN, LIMITS_FILE
from roles.settings import DEFAULT_MODULE_BLACKLIST
from stack.images import REPO_ROOT

pytestmark = pytest.mark.integration


def rendered(name: str, **values) -> str:
    """A deploy template rendered the way pyinfra renders it."""
    text = (REPO_ROOT / "templates" / name).read_text()
    return Environment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(
        text).render(**values)


@pytest.fixture
def target(base_image):
    """Start a container by docker run args; removed afterwards. Returns a handle."""
    names: list[str] = []

    def start(*args: str) -> Target:
        name = f"vos-kernel-{uuid.uuid4().hex[:6]}"
        subprocess.run(["docker", "run", "-d", "--name", name, *args, base_image,
                        "sleep", "600"], check=True, capture_output=True, timeout=120)
        names.append(name)
        return Target(name)

    yield start
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=120)


class Target:
    def __init__(self, name: str):
        self.name = name

    def write(self, path: str, content: str) -> None:
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c",
                        f'mkdir -p "$(dirname {path})" && cat > {path}'],
                       input=content, text=True, check=True, timeout=60)

    def remove(self, path: str) -> None:
        subprocess.run(["docker", "exec", self.name, "rm", "-f", path], check=True,
                       timeout=60)

    def check(self, *tests: str) -> subprocess.CompletedProcess[str]:
        """pytest checks/test_kernel.py (these tests) against the container, as the gate."""
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
             "checks.plugin", *[f"checks/test_kernel.py::{test}" for test in tests],
             f"--hosts=docker://{self.name}", "-rs"],
            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_modprobe_files_planted_wrong_then_right(target):
    host = target()
    missing = host.check("test_modules_blacklisted")
    assert missing.returncode == 1, missing.stdout[-3000:]
    assert "KERNEL §21: no `install dccp /bin/false` in modprobe.d" in missing.stdout
    assert "KERNEL §21: no `blacklist usb-storage` in modprobe.d" in missing.stdout

    host.write(BLACKLIST_FILE, rendered("kernel/vos-blacklist.conf.j2",
                                        modules=list(DEFAULT_MODULE_BLACKLIST)))
    assert host.check("test_modules_blacklisted").returncode == 0

    host.write("/etc/modprobe.d/zz-plant.conf", "install dccp /bin/true\n")
    planted = host.check("test_modules_blacklisted")
    assert planted.returncode == 1, planted.stdout[-3000:]
    assert ("KERNEL §21: dccp has `install dccp /bin/true` in /etc/modprobe.d/zz-plant.conf"
            in planted.stdout)
    host.remove("/etc/modprobe.d/zz-plant.conf")

    # a same-named file in /etc masks the one in /usr/lib (kmod's rule): the /usr/lib one
    # with the wrong command is not what kmod reads
    host.write("/usr/lib/modprobe.d/vos-blacklist.conf", "install dccp /bin/true\n")
    assert host.check("test_modules_blacklisted").returncode == 0

    loaded = host.check("test_no_blacklisted_module_loaded")
    assert loaded.returncode == 0 and "1 skipped" in loaded.stdout, loaded.stdout[-2000:]


def test_coredump_files_planted_wrong_then_right(target):
    host = target()
    tests = ("test_core_dump_hard_limit_zero", "test_systemd_coredump_keeps_nothing")
    missing = host.check(*tests)
    assert missing.returncode == 1, missing.stdout[-3000:]
    assert "KERNEL §22: no `* hard core 0`" in missing.stdout
    assert "KERNEL §22: systemd-coredump Storage is external (default), must be none" \
        in missing.stdout
    assert "2 failed" in missing.stdout

    host.write(LIMITS_FILE, rendered("kernel/vos-coredump-limits.conf.j2"))
    host.write(COREDUMP_DROPIN, rendered("kernel/coredump-vos.conf.j2"))
    assert host.check(*tests).returncode == 0

    host.write("/etc/security/limits.d/zz-plant.conf", "* hard core unlimited\n")
    host.write("/etc/systemd/coredump.conf.d/zz-plant.conf",
               "[Coredump]\nStorage=external\n")
    planted = host.check(*tests)
    assert planted.returncode == 1, planted.stdout[-3000:]
    assert ("KERNEL §22: `* hard core unlimited` in /etc/security/limits.d/zz-plant.conf "
            "allows core dumps") in planted.stdout
    assert "KERNEL §22: systemd-coredump Storage is external, must be none" in planted.stdout
    assert "/etc/systemd/coredump.conf.d/zz-plant.conf" in planted.stdout
    host.remove("/etc/security/limits.d/zz-plant.conf")
    host.remove("/etc/systemd/coredump.conf.d/zz-plant.conf")
    assert host.check(*tests).returncode == 0


def test_mount_options_planted_wrong_then_right(target):
    tests = ("test_dev_shm_nodev_nosuid_noexec", "test_tmp_nodev_nosuid_when_its_own_mount")
    # Docker's own /dev/shm is nodev,nosuid,noexec; /tmp is no mount of its own: both pass
    right = target().check(*tests)
    assert right.returncode == 0, right.stdout[-3000:]
    # a /dev/shm with exec and a /tmp tmpfs with suid and dev (docker's tmpfs defaults are
    # noexec,nosuid,nodev; the options given here override them)
    wrong = target("--tmpfs", "/dev/shm:rw,exec,nosuid,nodev",
                   "--tmpfs", "/tmp:rw,exec,suid,dev").check(*tests)
    assert wrong.returncode == 1, wrong.stdout[-3000:]
    assert "KERNEL §23: /dev/shm is mounted without noexec" in wrong.stdout
    assert "`sudo mount -o remount,nodev,nosuid,noexec /dev/shm`" in wrong.stdout
    assert "KERNEL §23: /tmp is mounted without nodev,nosuid" in wrong.stdout
