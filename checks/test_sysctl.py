"""Kernel settings (INVARIANTS.md §10), read live with `sysctl -n`.

Run alone: pytest -p checks.plugin checks/test_sysctl.py --hosts=ssh://HOST
"""

from checks import plugin
from checks.invariants import sysctl_violations

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

WANTED = {
    "fs.protected_hardlinks": 1, "fs.protected_symlinks": 1, "fs.protected_fifos": 2,
    "fs.protected_regular": 2, "fs.suid_dumpable": 0, "kernel.kptr_restrict": 2,
    "kernel.randomize_va_space": 2, "kernel.sysrq": 0, "kernel.unprivileged_bpf_disabled": 1,
    "net.ipv4.conf.all.rp_filter": 1, "net.ipv4.tcp_syncookies": 1,
    "net.ipv4.conf.all.accept_redirects": 0, "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0, "net.ipv4.conf.all.log_martians": 1,
    "net.ipv4.icmp_echo_ignore_broadcasts": 1, "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv6.conf.all.accept_ra": 0, "net.ipv4.ip_forward": 1,
    "kernel.dmesg_restrict": 1, "kernel.perf_event_paranoid": 3, "dev.tty.ldisc_autoload": 0,
    "net.core.bpf_jit_harden": 2, "net.ipv4.conf.default.accept_source_route": 0,
    "net.ipv6.conf.all.accept_source_route": 0,
}
AT_LEAST = {"kernel.yama.ptrace_scope": 1}


def test_kernel_settings(host):
    """Every §10 value, live (a persisted file that was never applied fails here)."""
    keys = [*WANTED, *AT_LEAST]
    with host.sudo():  # /usr/sbin is not on a normal user's PATH on Debian
        out = host.run("sysctl " + " ".join(keys))
    values = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    problems = sysctl_violations(values, WANTED, AT_LEAST)
    assert not problems, "\n".join(problems)
