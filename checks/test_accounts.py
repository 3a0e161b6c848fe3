"""Accounts and updates (INVARIANTS.md §11): unattended upgrades, no passwords, root locked.

Run alone: pytest -p checks.plugin checks/test_accounts.py --hosts=ssh://HOST
"""

from checks import plugin
from checks.invariants import shadow_violations

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip


def test_no_passwords_and_root_locked(host):
    """Keys are the only way in: every login user's password is locked or unset-and-locked."""
    with host.sudo():
        shadow = host.file("/etc/shadow").content_string
    passwd = host.file("/etc/passwd").content_string
    problems = shadow_violations(shadow, passwd)
    assert not problems, "\n".join(problems)


def test_unattended_security_upgrades(host):
    """unattended-upgrades installed and its periodic run enabled (as apt sees it)."""
    assert host.package("unattended-upgrades").is_installed, (
        "BASE §11: unattended-upgrades is not installed — re-run the deploy (base step)")
    dump = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert 'Unattended-Upgrade "1"' in dump, (
        f"BASE §11: APT::Periodic::Unattended-Upgrade is not 1 ({dump.strip() or 'unset'}) — "
        "fix /etc/apt/apt.conf.d/20auto-upgrades or re-run the deploy (base step)")
