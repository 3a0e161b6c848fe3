"""The account and file checks (checks/test_accounts.py, checks/test_files.py) against a real
Debian 13 system: a container of the local base `vos-base:trixie`, reached with testinfra's
docker backend exactly as the gate reaches a host (`pytest -p checks.plugin … --hosts=`).

1. The container gets what the deploy's base, users and stack steps leave (fresh apt lists,
   a deploy user in `sudo`, an env file under /etc/vos-stack) plus a key in root's
   authorized_keys; then the
   REAL roles (roles/accounts.py, roles/files.py) converge it through pyinfra's docker
   connector, and a second run must change nothing.
2. Every check passes on the converged container (sshd's banner skips: no sshd here).
3. Violations are planted in fresh containers of the converged state, and each check fails
   naming the violation and its fix.

The container runs as root and has no sudo; a stand-in `sudo` that runs its command is put
in /usr/local/bin for pyinfra's `_sudo`. The planted compiler is a stand-in `make` package
built with dpkg-deb (no network); the check reads dpkg's database either way.
Cost: ~1 min with the base image cached.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from stack.engine import start_dockerd, stop_dockerd
from stack.images import REPO_ROOT, ensure_local_base

pytestmark = pytest.mark.integration

DEPLOY = "tests/integration/deploy_accounts_files.py"
SUDO_STANDIN = r"""#!/bin/sh
# test stand-in for sudo in a root container: drop sudo's options, run the command
while [ $# -gt 0 ]; do
  case "$1" in -u|-g|-p|-C|-D) shift 2;; --) shift; break;; -*) shift;; *) break;; esac
done
exec "$@"
"""
PREPARE = """
set -e
apt-get update -qq  # the base step's apt update: the accounts role installs PAM modules
useradd -m -s /bin/bash -G sudo deploy
mkdir -p /etc/vos-stack /root/.ssh
printf 'DATABASE_URL=postgresql://x\\n' > /etc/vos-stack/app.env
chmod 0600 /etc/vos-stack/app.env
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanted operator@laptop' > /root/.ssh/authorized_keys
"""
FAKE_MAKE = """
set -e
mkdir -p /tmp/make/DEBIAN
cat > /tmp/make/DEBIAN/control <<'CONTROL'
Package: make
Version: 99.0-vostest
Architecture: all
Maintainer: t <t@example.org>
Description: planted stand-in
CONTROL
dpkg-deb -b /tmp/make /tmp/make.deb >/dev/null
dpkg -i /tmp/make.deb >/dev/null
"""


def sh(container: str, script: str) -> str:
    result = subprocess.run(["docker", "exec", "-i", container, "sh", "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"in {container}: {script}\n{result.stderr}"
    return result.stdout


def start(image: str, name: str) -> str:
    subprocess.run(["docker", "run", "-d", "--name", name, image, "sleep", "3600"],
                   check=True, capture_output=True, timeout=120)
    return name


def remove(*names: str) -> None:
    subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=120)


def pyinfra(container: str) -> str:
    result = subprocess.run([str(REPO_ROOT / ".venv/bin/pyinfra"), "-y", f"@docker/{container}",
                             DEPLOY], capture_output=True, text=True, timeout=600,
                            cwd=REPO_ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def changed_operations(output: str) -> list[str]:
    """Operations pyinfra reports as changed ("Success"), from its per-operation lines.

    Example:
        >>> changed_operations("--> Starting operation: A\\n    [h] Success\\n"
        ...                    "--> Starting operation: B\\n    [h] No changes\\n")
        ['A']
    """
    changed, current = [], None
    for line in output.splitlines():
        if "--> Starting operation: " in line:
            current = line.split("--> Starting operation: ", 1)[1].strip()
        elif current and re.search(r"\] (Success|No changes)", line):
            if "] Success" in line:
                changed.append(current)
            current = None
    return changed


def run_checks(container: str, deploy_user: str = "deploy") -> subprocess.CompletedProcess:
    """The account and file checks against the container, as the gate runs them."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "-p", "checks.plugin", "checks/test_accounts.py", "checks/test_files.py",
         # unattended-upgrades is the base role's (§11), not installed in the bare base
         "--deselect", "checks/test_accounts.py::test_unattended_security_upgrades",
         f"--hosts=docker://{container}", f"--deploy-user={deploy_user}"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def converged():
    """An image of a base container converged by the real roles (its first and second
    pyinfra outputs are kept on the fixture for the idempotence test)."""
    try:
        started = start_dockerd()
    except RuntimeError as error:
        pytest.fail(str(error))
    tag = f"vos-acct-converged:{uuid.uuid4().hex[:8]}"
    name = f"vos-acct-{uuid.uuid4().hex[:6]}"
    try:
        start(ensure_local_base(), name)
        sh(name, f"cat > /usr/local/bin/sudo <<'EOF'\n{SUDO_STANDIN}EOF\n"
                 "chmod 0755 /usr/local/bin/sudo")
        sh(name, PREPARE)
        sh(name, FAKE_MAKE)  # a build tool the role must purge
        first, second = pyinfra(name), pyinfra(name)
        subprocess.run(["docker", "commit", name, tag], check=True, capture_output=True,
                       timeout=300)
        yield {"image": tag, "first": first, "second": second, "container": name}
    finally:
        remove(name)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
        stop_dockerd(started)


@pytest.fixture
def fresh(converged):
    """A new container of the converged image, removed afterwards."""
    name = start(converged["image"], f"vos-acct-{uuid.uuid4().hex[:6]}")
    yield name
    remove(name)


def test_roles_converge_the_container_and_a_second_run_changes_nothing(converged):
    changed = changed_operations(converged["first"])
    for expected in ("login.defs: UMASK 027", "Login banner /etc/issue",
                     "Session policy /etc/profile.d/vos-idle-timeout.sh",
                     "PAM modules (libpam-tmpdir, libpam-pwquality, cracklib-runtime)",
                     "No /root/.ssh/authorized_keys", "Purge compilers and build tools (make)",
                     "/etc/cron.daily 700 root:root"):
        assert any(expected in name for name in changed), (expected, changed)
    assert changed_operations(converged["second"]) == [], converged["second"][-4000:]
    assert "Starting operation" in converged["second"]


def test_converged_container_passes_every_account_and_file_check(fresh):
    result = run_checks(fresh)
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\b13 passed, 1 skipped\b", result.stdout), result.stdout[-2000:]
    assert "ACCOUNTS §18: sshd is not installed here" in result.stdout


def test_converged_container_takes_a_strong_password_and_refuses_a_weak_one(fresh):
    """pam_pwquality really judges: its dictionary loads (a missing one refuses every
    password), a long four-class password is set, a short one is refused."""
    sh(fresh, "useradd -M -s /usr/sbin/nologin probe")
    strong = subprocess.run(["docker", "exec", "-i", fresh, "chpasswd"], text=True,
                            input="probe:Vos#Quiet-Meadow-2026x\n", capture_output=True,
                            timeout=60)
    assert strong.returncode == 0, strong.stderr
    weak = subprocess.run(["docker", "exec", "-i", fresh, "chpasswd"], text=True,
                          input="probe:short1A#\n", capture_output=True, timeout=60)
    assert weak.returncode != 0 and "BAD PASSWORD" in weak.stderr, weak.stderr


def test_planted_account_violations_fail_naming_each_fix(fresh):
    sh(fresh, """
set -e
echo 'toor:x:0:0::/root:/bin/sh' >> /etc/passwd
echo 'toor:*:20000:0:99999:7:::' >> /etc/shadow
useradd -r -s /usr/sbin/nologin ghost && passwd -d ghost >/dev/null
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanted again@laptop' > /root/.ssh/authorized_keys
useradd -m -s /bin/bash -G sudo alice
usermod -s /bin/bash daemon
sed -i 's/^UMASK.*/UMASK 022/' /etc/login.defs
printf 'Debian GNU/Linux 13 \\\\n \\\\l\\n' > /etc/issue
rm /etc/profile.d/vos-idle-timeout.sh
pam-auth-update --disable tmpdir
echo 'minlen = 8' > /etc/security/pwquality.conf.d/90-weak.conf
rm /var/cache/cracklib/cracklib_dict.pwd
""")
    result = run_checks(fresh)
    assert result.returncode == 1, result.stdout[-4000:]
    out = result.stdout
    for message in [
        "ACCOUNTS §16: toor has uid 0 — only root may be the superuser; remove it: "
        "`sudo sed -i '/^toor:/d' /etc/passwd /etc/shadow`",
        "ACCOUNTS §16: /root/.ssh/authorized_keys holds 1 key(s)",
        "`sudo rm /root/.ssh/authorized_keys`",
        "ACCOUNTS §17: ghost has an empty password field in /etc/shadow",
        "`sudo passwd -l ghost`",
        "ACCOUNTS §17: alice is in the sudo group",
        "`sudo gpasswd -d alice sudo`",
        "ACCOUNTS §17: system account daemon (uid 1) has the login shell /bin/bash",
        "`sudo usermod -s /usr/sbin/nologin daemon`",
        "ACCOUNTS §18: login.defs UMASK is 022, must be 027 or stricter",
        "ACCOUNTS §18: /etc/issue names the OS (Debian)",
        "ACCOUNTS §18: no TMOUT in /etc/profile or /etc/profile.d: idle shells never end",
        "ACCOUNTS §18: /etc/pam.d/common-session has no pam_tmpdir.so",
        "`sudo pam-auth-update --enable tmpdir`",
        "ACCOUNTS §18: pam_pwquality minlen is 8, must be at least 14",
        "ACCOUNTS §18: pam_pwquality has no dictionary (/var/cache/cracklib/cracklib_dict.pwd)",
    ]:
        assert message in out, f"missing: {message}\n{out[-5000:]}"
    assert "BASE §11: login user alice" not in out  # locked by useradd: §11 holds


def test_planted_file_violations_fail_naming_each_fix(fresh):
    sh(fresh, FAKE_MAKE + """
chmod 0644 /etc/shadow
touch /etc/vos-open.conf && chmod 0666 /etc/vos-open.conf
chmod 0755 /etc/cron.daily
chmod 0644 /etc/vos-stack/app.env
""")
    result = run_checks(fresh)
    assert result.returncode == 1, result.stdout[-4000:]
    out = result.stdout
    for message in [
        "FILES §19: /etc/shadow is 0644 root:shadow, must be 0640 root:shadow or stricter — "
        "`sudo chmod 0640 /etc/shadow && sudo chown root:shadow /etc/shadow`",
        "FILES §19: /etc/cron.daily is 0755 root:root, must be 0700 root:root",
        "FILES §19: /etc/vos-open.conf is world-writable — `sudo chmod o-w /etc/vos-open.conf`",
        "FILES §13: /etc/vos-stack/app.env is 0644 root:root, must be 0600 root:root",
        "FILES §20: make is installed (a build tool on a production host) — "
        "`sudo apt-get purge -y make`",
    ]:
        assert message in out, f"missing: {message}\n{out[-5000:]}"
    assert re.search(r"\b4 failed\b", out), out[-2000:]
