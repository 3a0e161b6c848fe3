"""Accounts (INVARIANTS.md §11, §16-18): updates, passwords, who may be root, who may log in
as whom, login policy and banners.

  §11  unattended upgrades on; no login user has a password; root locked
  §16  root is the only uid 0 account, and has no authorized keys
  §17  no empty password field; system accounts have no login shell; `sudo` = the deploy user
  §18  login.defs (umask, password ageing, hashing, retries); banners without OS names;
       idle shells end (TMOUT), pam_pwquality and pam_tmpdir

The judgements are plain functions (checks/invariants.py, checks/accounts_rules.py); these
tests read the host's files and hand them over. Checks that need sshd skip where it is not
installed (a container), saying so.

Run alone: pytest -p checks.plugin checks/test_accounts.py --hosts=ssh://HOST
"""

import pytest

from checks import plugin
from checks.accounts_rules import (
    banner_violations,
    empty_password_violations,
    idle_timeout_violations,
    login_defs_violations,
    pam_module_violations,
    parse_login_defs,
    pwquality_dictionary,
    pwquality_dictionary_violations,
    pwquality_violations,
    root_keys_violation,
    sshd_banner_violations,
    sudo_group_violations,
    system_shell_violations,
    uid0_violations,
)
from checks.invariants import shadow_violations
from checks.kernel_rules import DUMP, parse_dump

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

ROOT_KEY_FILES = ("/root/.ssh/authorized_keys", "/root/.ssh/authorized_keys2")


def test_no_passwords_and_root_locked(host):
    """Keys are the only way in: every login user's password is locked or unset-and-locked."""
    with plugin.as_root(host):
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


def test_root_is_the_only_uid_0(host):
    """§16: exactly one account with uid 0, and it is root (dev-sec os-09, CIS 5.4.2.1)."""
    problems = uid0_violations(host.file("/etc/passwd").content_string)
    assert not problems, "\n".join(problems)


def test_root_has_no_authorized_keys(host):
    """§16: nobody logs in as root, not even with a key sshd would refuse today."""
    problems = []
    with plugin.as_root(host):
        for path in ROOT_KEY_FILES:
            keys = host.file(path)
            if keys.exists:
                problems += root_keys_violation(path, keys.content_string)
    assert not problems, "\n".join(problems)


def test_no_empty_password_field(host):
    """§17: no account, system or not, can be entered without a password (CIS 7.2.2)."""
    with plugin.as_root(host):
        shadow = host.file("/etc/shadow").content_string
    problems = empty_password_violations(shadow)
    assert not problems, "\n".join(problems)


def test_system_accounts_have_no_login_shell(host):
    """§17: uid 1-999 run nologin/false (Debian's `sync`: /bin/sync) (CIS 5.4.2.7)."""
    problems = system_shell_violations(host.file("/etc/passwd").content_string)
    assert not problems, "\n".join(problems)


def test_sudo_group_is_the_deploy_user(host, deploy_user):
    """§17: members of `sudo` (listed, or by primary group) are exactly the deploy user."""
    problems = sudo_group_violations(host.file("/etc/group").content_string,
                                     host.file("/etc/passwd").content_string, deploy_user)
    assert not problems, "\n".join(problems)


def test_login_defs_policy(host):
    """§18: UMASK 027, PASS_MAX_DAYS ≤ 365, PASS_MIN_DAYS ≥ 1, PASS_WARN_AGE ≥ 7,
    ENCRYPT_METHOD YESCRYPT/SHA512 with SHA_CRYPT rounds ≥ 5000, LOGIN_RETRIES ≤ 3."""
    defs = host.file("/etc/login.defs")
    assert defs.exists, "ACCOUNTS §18: /etc/login.defs is missing — `sudo apt-get install " \
        "--reinstall login.defs` and re-run the deploy (accounts step)"
    problems = login_defs_violations(parse_login_defs(defs.content_string))
    assert not problems, "\n".join(problems)


def test_login_banners_name_no_os(host):
    """§18: /etc/issue and /etc/issue.net hold an authorised-use notice without OS name or
    version, /etc/motd says nothing about the OS (CIS 1.7.1-1.7.3, Lynis BANN-7126/7130)."""
    problems = []
    for path, required in (("/etc/issue", True), ("/etc/issue.net", True),
                           ("/etc/motd", False)):
        banner = host.file(path)
        problems += banner_violations(path, banner.content_string if banner.exists else "",
                                      required)
    assert not problems, "\n".join(problems)


def test_sshd_shows_the_banner(host):
    """§18: sshd's effective Banner is /etc/issue.net. Skips where sshd is not installed
    (a container)."""
    with plugin.as_root(host):
        if not host.exists("sshd") and not host.file("/usr/sbin/sshd").exists:
            pytest.skip("ACCOUNTS §18: sshd is not installed here; its banner is not judged")
        out = host.run("/usr/sbin/sshd -T")
    assert out.rc == 0, f"ACCOUNTS §18: `sshd -T` failed ({out.stderr.strip()[:200]})"
    problems = sshd_banner_violations(out.stdout)
    assert not problems, "\n".join(problems)


def _read_all(host, paths: str) -> dict[str, str]:
    """Every file the paths (globs allowed) name, read in one command: the kernel checks'
    dump (path -> text)."""
    return parse_dump(host.run(DUMP.format(paths=paths)).stdout)


def test_session_policy(host):
    """§18: a read-only TMOUT of at most 900 s for login shells; pam_pwquality (minlen ≥ 14,
    its dictionary present) in common-password and pam_tmpdir in common-session."""
    problems = idle_timeout_violations(_read_all(host, "/etc/profile /etc/profile.d/*.sh"))
    problems += pam_module_violations(
        {path.rsplit("/", 1)[1]: text for path, text in
         _read_all(host, "/etc/pam.d/common-password /etc/pam.d/common-session").items()})
    pwquality = _read_all(host, "/etc/security/pwquality.conf "
                                "/etc/security/pwquality.conf.d/*.conf")
    in_order = [pwquality[path] for path in sorted(
        pwquality, key=lambda p: (p != "/etc/security/pwquality.conf", p))]
    problems += pwquality_violations(in_order)
    dictionary = pwquality_dictionary(in_order)
    problems += pwquality_dictionary_violations(
        dictionary, dictionary is None or host.file(f"{dictionary}.pwd").exists)
    assert not problems, "\n".join(problems)
