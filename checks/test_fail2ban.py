"""Fail2ban invariants (INVARIANTS.md §9): running, systemd backend, sshd/recidive/door jails.

Run alone: pytest -p checks.plugin checks/test_fail2ban.py --hosts=ssh://HOST
"""

import pytest

from checks import plugin
from checks.invariants import parse_fail2ban_dump, parse_fail2ban_status

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

DOOR_JAIL = "vos-door"
FIX = "re-run the deploy (fail2ban step) or `sudo systemctl restart fail2ban`"


def test_fail2ban_running(host):
    """The service is up and answers on its socket."""
    with host.sudo():
        ping = host.run("fail2ban-client ping")
    assert ping.rc == 0 and "pong" in ping.stdout, (
        f"FAIL2BAN §9: fail2ban is not running ({(ping.stderr or ping.stdout).strip()}) — "
        f"{FIX}; `journalctl -u fail2ban` says why")


@pytest.mark.parametrize("jail", ["sshd", "recidive", DOOR_JAIL])
def test_jail_active(host, jail):
    """Each required jail is loaded."""
    with host.sudo():
        status = host.run("fail2ban-client status")
    running = parse_fail2ban_status(status.stdout)
    assert jail in running, f"FAIL2BAN §9: jail {jail} is not running (running: " \
                            f"{running or 'none'}) — {FIX}"


@pytest.mark.parametrize("jail", ["sshd", DOOR_JAIL])
def test_journal_jails_use_systemd_backend(host, jail):
    """backend = systemd (no auth.log on Debian; right for Ubuntu 24.04 too)."""
    with host.sudo():
        dump = host.run("fail2ban-client -d")
    backends = parse_fail2ban_dump(dump.stdout)
    assert backends.get(jail) == "systemd", (
        f"FAIL2BAN §9: jail {jail} uses backend {backends.get(jail, '(not configured)')}, "
        f"must be systemd — set `backend = systemd` in /etc/fail2ban/jail.local; {FIX}")


def test_sshd_threshold(host):
    """A ban follows at most 5 failures within 10 minutes."""
    with host.sudo():
        maxretry = host.check_output("fail2ban-client get sshd maxretry").strip()
        findtime = host.check_output("fail2ban-client get sshd findtime").strip()
    assert int(maxretry) <= 5 and int(findtime) >= 600, (
        f"FAIL2BAN §9: sshd jail bans after {maxretry} failures in {findtime} s, must be <= 5 "
        f"in >= 600 s — fix maxretry/findtime in /etc/fail2ban/jail.local; {FIX}")
