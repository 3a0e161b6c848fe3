"""Audit and confinement (INVARIANTS.md §24-25): auditd running with the rules loaded, AppArmor
enabled and every running container confined by a profile.

auditd, auditctl and AppArmor need the host's own kernel and systemd: each of these checks
skips inside a container (a container cannot load audit rules or AppArmor policy, and would
report its host's state); they are judged on a host (the staging VM plants their violations).

Run alone: pytest -p checks.plugin checks/test_audit.py --hosts=ssh://HOST
"""

import json

import pytest

from checks import kernel_rules as rules
from checks import plugin

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

WATCHED = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/sudoers",
           "/etc/sudoers.d", "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d",
           "/etc/localtime", "/sbin/modprobe"]
# Docker's files and sockets (CIS Docker 1.1.x): watched when present on the host.
DOCKER_PATHS = ["/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/bin/containerd",
                "/usr/sbin/runc", "/usr/bin/runc", "/run/containerd", "/var/lib/docker",
                "/etc/docker", "/etc/docker/daemon.json", "/etc/default/docker",
                "/usr/lib/systemd/system/docker.service",
                "/usr/lib/systemd/system/docker.socket"]
SYSCALLS = {"time-change": ("adjtimex", "settimeofday", "clock_settime"),
            "module-loading": ("init_module", "finit_module"),
            "module-unloading": ("delete_module",)}
FIX_AUDITD = "`sudo systemctl enable --now auditd` or re-run the deploy (audit step)"


@pytest.fixture(scope="module")
def on_a_host(host):
    if host.run("test -f /.dockerenv -o -f /run/.containerenv").rc == 0:
        pytest.skip("AUDIT §24-25: auditd and AppArmor need the host's kernel; judged on a host")


def test_auditd_running(host, on_a_host):
    """§24: auditd enabled and running."""
    with host.sudo():
        service = host.service("auditd")
        running, enabled = service.is_running, service.is_enabled
    assert running and enabled, (f"AUDIT §24: auditd is {'running' if running else 'stopped'}"
                                 f" and {'enabled' if enabled else 'disabled'} — {FIX_AUDITD}")


def test_audit_rules_loaded(host, on_a_host):
    """§24: the kernel holds a watch for identity files, sshd's config, time, module loading
    and every Docker path present, and the time and module syscall rules."""
    present = host.run("for p in " + " ".join(DOCKER_PATHS) +
                       "; do if [ -e \"$p\" ]; then echo \"$p\"; fi; done").stdout.split()
    with host.sudo():
        out = host.run("auditctl -l")
    assert out.rc == 0, f"AUDIT §24: `auditctl -l` failed ({out.stderr.strip()}) — {FIX_AUDITD}"
    problems = rules.audit_violations(rules.parse_auditctl(out.stdout),
                                      WATCHED + present, SYSCALLS)
    assert not problems, "\n".join(problems)


def test_apparmor_enabled(host, on_a_host):
    """§25: the apparmor package (dockerd needs its apparmor_parser), the service enabled,
    and the kernel enforcing AppArmor."""
    assert host.package("apparmor").is_installed, (
        "AUDIT §25: the apparmor package is not installed, so dockerd runs every container "
        "unconfined — `sudo apt-get install apparmor` and `sudo systemctl restart docker`, or "
        "re-run the deploy (audit step)")
    with host.sudo():
        enabled_service = host.service("apparmor").is_enabled
        answer = host.run("aa-enabled 2>&1").stdout
    parameter = host.run("cat /sys/module/apparmor/parameters/enabled 2>/dev/null").stdout
    assert rules.apparmor_enabled(answer, parameter), (
        f"AUDIT §25: AppArmor is not enabled in the kernel (aa-enabled: {answer.strip()!r}) — "
        "remove apparmor=0 / a different security= from the kernel command line and reboot")
    assert enabled_service, ("AUDIT §25: apparmor.service is disabled, so no profile loads at "
                             "boot — `sudo systemctl enable --now apparmor`")


def test_every_running_container_is_confined(host, on_a_host):
    """§25: every running container has an AppArmor profile (docker-default or its own);
    `apparmor=unconfined`, --privileged or a container started before AppArmor was usable
    fails."""
    with host.sudo():
        ids = host.run("docker ps -q")
        if ids.rc != 0:
            pytest.skip(f"AUDIT §25: docker is not usable here ({ids.stderr.strip()[:80]})")
        if not ids.stdout.split():
            return
        containers = json.loads(host.check_output("docker inspect " + " ".join(
            ids.stdout.split())))
    problems = rules.unconfined_containers(containers)
    assert not problems, "\n".join(problems)


def _state(host, command: str) -> str:
    return host.run(command + " 2>/dev/null").stdout.strip() or "absent"


def _size(host, path: str) -> int | None:
    out = host.run(f"stat -c %s {path} 2>/dev/null")
    return int(out.stdout) if out.rc == 0 and out.stdout.strip().isdigit() else None


def test_file_integrity_baseline_checked_daily(host, on_a_host):
    """§26: AIDE with SHA-512 checksums, its baseline database written (or being written),
    and the daily comparison timer on."""
    with host.sudo():
        config = host.file("/etc/aide/aide.conf")
        text = config.content_string if config.exists else None
        database = _size(host, "/var/lib/aide/aide.db") or 0
        baseline = _state(host, "systemctl is-active vos-aide-baseline.service")
        enabled = _state(host, "systemctl is-enabled vos-aide-check.timer")
        active = _state(host, "systemctl is-active vos-aide-check.timer")
    problems = rules.aide_violations(text, database, baseline, enabled, active)
    assert not problems, "\n".join(problems)


def test_process_accounting_on(host, on_a_host):
    """§26: every process that ran is on record (acct: `lastcomm`, `sa`)."""
    with host.sudo():
        problems = rules.accounting_violations(_state(host, "systemctl is-active acct"),
                                               _size(host, "/var/log/account/pacct"))
    assert not problems, "\n".join(problems)
