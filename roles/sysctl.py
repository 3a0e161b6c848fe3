"""Sysctl role: the kernel settings of INVARIANTS.md §10, persisted in one drop-in.

Example (inside deploys/full.py):
    sysctl.harden()
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.server import Sysctl
from pyinfra.operations import files

from roles._paths import template

# INVARIANTS.md §10: dev-sec's list plus the keys of Lynis's scan profile (KRNL-6000) that a
# Docker host can hold. Left out on purpose: kernel.modules_disabled=1 (Docker, UFW and
# fail2ban load netfilter modules on demand) and net.ipv4.conf.all.forwarding=0 (Docker needs
# forwarding: ip_forward stays on).
HARDENED_SYSCTLS: dict[str, int] = {
    "fs.protected_hardlinks": 1,
    "fs.protected_symlinks": 1,
    "fs.protected_fifos": 2,
    "fs.protected_regular": 2,
    "fs.suid_dumpable": 0,
    "kernel.kptr_restrict": 2,
    "kernel.randomize_va_space": 2,
    "kernel.sysrq": 0,
    "kernel.yama.ptrace_scope": 1,
    "kernel.unprivileged_bpf_disabled": 1,
    "kernel.dmesg_restrict": 1,
    "kernel.perf_event_paranoid": 3,
    "kernel.core_uses_pid": 1,
    "kernel.ctrl-alt-del": 0,
    "dev.tty.ldisc_autoload": 0,
    "net.core.bpf_jit_harden": 2,
    "net.ipv4.conf.all.rp_filter": 1,
    "net.ipv4.conf.default.rp_filter": 1,
    "net.ipv4.tcp_syncookies": 1,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.default.accept_redirects": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv4.conf.default.accept_source_route": 0,
    "net.ipv4.conf.all.log_martians": 1,
    "net.ipv4.conf.default.log_martians": 1,
    "net.ipv4.icmp_echo_ignore_broadcasts": 1,
    "net.ipv4.icmp_ignore_bogus_error_responses": 1,
    "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv6.conf.default.accept_redirects": 0,
    "net.ipv6.conf.all.accept_source_route": 0,
    "net.ipv6.conf.default.accept_source_route": 0,
    "net.ipv6.conf.all.accept_ra": 0,
    "net.ipv6.conf.default.accept_ra": 0,
    "net.ipv4.ip_forward": 1,
}


@deploy("Sysctl")
def harden(overrides: dict[str, int] | None = None):
    """Persist the settings in /etc/sysctl.d and apply each one live (facts compare values,
    so a converged host yields no command).

    Example:
        harden(overrides={"kernel.yama.ptrace_scope": 2})
    """
    settings = {**HARDENED_SYSCTLS, **(overrides or {})}
    files.template(
        name="Persist kernel settings (/etc/sysctl.d/99-vos-hardening.conf)",
        src=template("sysctl/99-vos-hardening.conf.j2"),
        dest="/etc/sysctl.d/99-vos-hardening.conf",
        user="root",
        group="root",
        mode=644,
        settings=settings,
        _sudo=True,
    )
    live(name="Apply the kernel settings that differ (sysctl -w)", settings=settings,
         _sudo=True)


@operation()
def live(settings: dict[str, int]):
    """Set, in one command, only the keys whose live value differs (one fact read for all
    keys: a per-key operation costs a round trip each, minutes under TCG).

    Example:
        live(settings={"kernel.sysrq": 0})
    """
    current = host.get_fact(Sysctl, keys=sorted(settings)) or {}
    differing = {key: value for key, value in settings.items()
                 if str(current.get(key)) != str(value)}
    if not differing:
        host.noop(f"all {len(settings)} kernel settings already hold")
        return
    yield "sysctl -w " + " ".join(f"{key}={value}" for key, value in sorted(differing.items()))
