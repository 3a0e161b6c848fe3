"""Fail2ban invariants (INVARIANTS.md §9): running, systemd backend, sshd/recidive/door/login
jails.

Run alone: pytest -p checks.plugin checks/test_fail2ban.py --hosts=ssh://HOST
"""

import pytest

from checks import plugin
from checks.invariants import parse_fail2ban_dump, parse_fail2ban_status

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

DOOR_JAIL = "vos-door"
LOGIN_JAIL = "vos-login"  # failed Command Center sign-ins (issue #14)
FIX = "re-run the deploy (fail2ban step) or `sudo systemctl restart fail2ban`"


def client(host, arguments: str) -> str:
    """fail2ban-client output (stdout+stderr). It exits 255 when the server is down, which
    testinfra's SSH backend would mistake for an SSH failure, so the exit code is folded."""
    with host.sudo():
        return host.run(f"fail2ban-client {arguments} 2>&1 || true").stdout


@pytest.fixture(scope="module")
def jails_running(host) -> list[str]:
    """`fail2ban-client status`, read once for every jail's test: each fail2ban-client is
    a Python start on the host (seconds under emulation, a round trip over the mesh)."""
    return parse_fail2ban_status(client(host, "status"))


@pytest.fixture(scope="module")
def jail_backends(host) -> dict[str, str]:
    """`fail2ban-client -d` (the parsed configuration), read once for every jail's test."""
    return parse_fail2ban_dump(client(host, "-d"))


def test_fail2ban_running(host):
    """The service is up and answers on its socket."""
    with host.sudo():
        active = host.run("systemctl is-active fail2ban || true").stdout.strip()
    ping = client(host, "ping")
    detail = ping.strip().splitlines()[-1:] or ["no answer"]
    assert "pong" in ping, (
        f"FAIL2BAN §9: fail2ban is not running (systemd: {active}; client: {detail[0][-120:]})"
        f" — {FIX}; `journalctl -u fail2ban` says why")


@pytest.mark.parametrize("jail", ["sshd", "recidive", DOOR_JAIL, LOGIN_JAIL])
def test_jail_active(jails_running, jail):
    """Each required jail is loaded."""
    running = jails_running
    assert jail in running, f"FAIL2BAN §9: jail {jail} is not running (running: " \
                            f"{running or 'none'}) — {FIX}"


@pytest.mark.parametrize("jail", ["sshd", DOOR_JAIL, LOGIN_JAIL])
def test_journal_jails_use_systemd_backend(jail_backends, jail):
    """backend = systemd (no auth.log on Debian; right for Ubuntu 24.04 too)."""
    backends = jail_backends
    assert backends.get(jail) == "systemd", (
        f"FAIL2BAN §9: jail {jail} uses backend {backends.get(jail, '(not configured)')}, "
        f"must be systemd — set `backend = systemd` in /etc/fail2ban/jail.local; {FIX}")


def test_sshd_threshold(host):
    """A ban follows at most 5 failures within 10 minutes."""
    maxretry = client(host, "get sshd maxretry").strip()
    findtime = client(host, "get sshd findtime").strip()
    assert maxretry.isdigit() and findtime.isdigit(), (
        f"FAIL2BAN §9: cannot read the sshd jail's threshold ({maxretry[-100:]}) — {FIX}")
    assert int(maxretry) <= 5 and int(findtime) >= 600, (
        f"FAIL2BAN §9: sshd jail bans after {maxretry} failures in {findtime} s, must be <= 5 "
        f"in >= 600 s — fix maxretry/findtime in /etc/fail2ban/jail.local; {FIX}")
