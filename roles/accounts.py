"""Accounts role: login policy (login.defs), login banners, session policy, no compilers, no
root keys.

INVARIANTS.md §16, §18 and §20; the knobs are `LoginSettings` (roles/settings.py). Facts in,
operations out: every operation compares first, so a converged host plans no command.

Example (inside deploys/full.py):
    accounts.login_defs(settings.login)
    accounts.banners(settings.login)
    accounts.session_policy(settings.login)
    accounts.no_compilers(settings.login)
    accounts.no_root_keys()
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from roles._paths import template
from roles.settings import LoginSettings

LOGIN_DEFS = "/etc/login.defs"
ROOT_KEY_FILES = ("/root/.ssh/authorized_keys", "/root/.ssh/authorized_keys2")
BANNERS = {"/etc/issue": "accounts/issue.j2", "/etc/issue.net": "accounts/issue.net.j2",
           "/etc/motd": "accounts/motd.j2"}


def login_defs_values(settings: LoginSettings) -> dict[str, str]:
    """The login.defs keys this role owns, with their values.

    Example:
        >>> login_defs_values(LoginSettings())["UMASK"]
        '027'
    """
    return {
        "UMASK": settings.umask,
        "PASS_MAX_DAYS": str(settings.pass_max_days),
        "PASS_MIN_DAYS": str(settings.pass_min_days),
        "PASS_WARN_AGE": str(settings.pass_warn_age),
        "ENCRYPT_METHOD": settings.encrypt_method,
        "SHA_CRYPT_MIN_ROUNDS": str(settings.sha_crypt_min_rounds),
        "SHA_CRYPT_MAX_ROUNDS": str(settings.sha_crypt_max_rounds),
        "LOGIN_RETRIES": str(settings.login_retries),
    }


def key_pattern(key: str) -> str:
    """The (basic) regex of a live `KEY value` line; commented examples never match.

    Example:
        >>> key_pattern("UMASK")
        '^[[:space:]]*UMASK[[:space:]].*$'
    """
    return f"^[[:space:]]*{key}[[:space:]].*$"


@deploy("Accounts: login.defs")
def login_defs(settings: LoginSettings | None = None):
    """Set each key with one `files.line` (replaced where it is, appended where it is not:
    Debian 13 ships no UMASK line). A line already `KEY value` yields no command.

    Example:
        login_defs(LoginSettings(pass_max_days=180))
    """
    for key, value in login_defs_values(settings or LoginSettings()).items():
        files.line(name=f"login.defs: {key} {value}", path=LOGIN_DEFS, line=key_pattern(key),
                   replace=f"{key} {value}", _sudo=True)


@deploy("Accounts: login banners")
def banners(settings: LoginSettings | None = None):
    """/etc/issue and /etc/issue.net say the banner, /etc/motd nothing (no OS name or
    version anywhere: CIS 1.7). sshd shows /etc/issue.net (templates/ssh, `Banner`).

    Example:
        banners(LoginSettings(banner="Authorised access only; activity is monitored."))
    """
    text = (settings or LoginSettings()).banner.strip()
    for dest, source in BANNERS.items():
        files.template(name=f"Login banner {dest}", src=template(source), dest=dest,
                       user="root", group="root", mode=644, banner=text, _sudo=True)


# pam_tmpdir (a private $TMPDIR per session) and pam_pwquality; their pam-auth-update
# profiles are on by default once installed, and the gate reads the PAM stacks.
# cracklib-runtime builds the dictionary pwquality's dictcheck reads: only recommended, and
# without it every password change fails ("error loading dictionary"), found by the staging
# matrix. deploys/full.py hands them to the base role's one apt transaction; here they are
# ensured.
SESSION_PACKAGES = ["libpam-tmpdir", "libpam-pwquality", "cracklib-runtime"]
SESSION_FILES = {
    "/etc/profile.d/vos-idle-timeout.sh": "accounts/idle-timeout.sh.j2",
    "/etc/security/pwquality.conf.d/50-vos.conf": "accounts/pwquality.conf.j2",
}


@deploy("Accounts: session policy")
def session_policy(settings: LoginSettings | None = None):
    """Idle interactive shells end (a read-only TMOUT) and new passwords meet pam_pwquality's
    bar (length and character classes, root included).

    Example:
        session_policy(LoginSettings(idle_timeout_seconds=600))
    """
    settings = settings or LoginSettings()
    apt.packages(name=f"PAM modules ({', '.join(SESSION_PACKAGES)})", packages=SESSION_PACKAGES,
                 no_recommends=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    files.directory(name="/etc/security/pwquality.conf.d", path="/etc/security/pwquality.conf.d",
                    user="root", group="root", mode=755, _sudo=True)
    values = {"seconds": settings.idle_timeout_seconds,
              "min_length": settings.password_min_length,
              "min_classes": settings.password_min_classes}
    for dest, source in SESSION_FILES.items():
        files.template(name=f"Session policy {dest}", src=template(source), dest=dest,
                       user="root", group="root", mode=644, **values, _sudo=True)


def installed_matches(installed: dict, patterns: list[str]) -> list[str]:
    """Installed package names matching any pattern whole (sorted).

    Example:
        >>> installed_matches({"gcc-14": ["14.2"], "gcc-14-base": ["14.2"], "make": ["4.4"]},
        ...                   [r"gcc(-\\d+)?", "make"])
        ['gcc-14', 'make']
    """
    compiled = [re.compile(pattern) for pattern in patterns]
    return sorted(name for name in installed if any(c.fullmatch(name) for c in compiled))


@deploy("Accounts: no compilers")
def no_compilers(settings: LoginSettings | None = None):
    """Purge the compilers and build tools that are installed (read from dpkg's package
    list); none installed: no apt command at all.

    Example:
        no_compilers(LoginSettings(compiler_packages=["gcc", "make"]))
    """
    patterns = (settings or LoginSettings()).compiler_packages
    found = installed_matches(host.get_fact(DebPackages) or {}, patterns)
    if not found:
        host.noop("no compiler or build tool is installed")
        return
    apt.packages(name=f"Purge compilers and build tools ({', '.join(found)})", packages=found,
                 present=False, purge=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})


@deploy("Accounts: no keys for root")
def no_root_keys():
    """Remove root's authorized_keys files: admins log in as the deploy user (§16).

    Example:
        no_root_keys()
    """
    for path in ROOT_KEY_FILES:
        files.file(name=f"No {path}", path=path, present=False, _sudo=True)
