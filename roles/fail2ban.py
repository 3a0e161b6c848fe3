"""Fail2ban role: systemd backend, `sshd` + `recidive` + the door jail (INVARIANTS.md §9)
+ the `vos-login` jail for failed Command Center sign-ins (issue #14).

Ubuntu 24.04's fail2ban 1.0.2 crashes on Python 3.12 (`No module named 'asynchat'`,
fail2ban #3754). The fixed build (1.0.2-3ubuntu0.1, noble-updates) bundles the module, so
on a host whose installed fail2ban is older than that the role asks apt for the newest
fail2ban and then proves the import works before any restart; the deploy stops with the
reason otherwise.

Example (inside deploys/full.py):
    fail2ban.jails(door_port=443, ignore=["100.64.0.1"])
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from roles._paths import template

DOOR_JAIL = "vos-door"
LOGIN_JAIL = "vos-login"
API_LOG_IDENTIFIER = "vos-api"  # the compose stack's journald tag for the private API
ASYNCHAT_FIXED_VERSION = "1.0.2-3ubuntu0.1"
ASYNCHAT_PROBE = (
    "python3 -c 'import fail2ban.server.asyncserver' 2>/dev/null || "
    "{ echo 'fail2ban cannot import asynchat on this Python (fail2ban #3754): "
    "install fail2ban >= 1.0.2-3ubuntu0.1 from noble-updates or 1.1.0' >&2; exit 1; }"
)


def needs_asynchat_fix(distribution: dict, installed: list[str] | None) -> bool:
    """True on Ubuntu 24.04 when fail2ban is absent or older than the fixed 1.0.2 build.

    Example:
        >>> needs_asynchat_fix({"name": "Ubuntu", "major": 24}, ["1.0.2-3"])
        True
        >>> needs_asynchat_fix({"name": "Debian", "major": 13}, ["1.1.0-8"])
        False
    """
    if distribution.get("name") != "Ubuntu" or (distribution.get("major") or 0) < 24:
        return False
    if not installed:
        return True
    return all(version.startswith("1.0.") and version != ASYNCHAT_FIXED_VERSION
               and "ubuntu0" not in version for version in installed)


@deploy("Fail2ban")
def jails(door_port: int, ignore: list[str] | None = None, door_log_identifier: str = DOOR_JAIL,
          maxretry: int = 5, findtime: str = "10m", bantime: str = "1h", api_port: int = 8080,
          api_log_identifier: str = API_LOG_IDENTIFIER, login_maxretry: int = 10):
    """Write jail.local and the door and login filters, keep fail2ban running, reload on
    change only.

    `ignore` lists addresses never banned (the operator's mesh address, so a typo cannot
    lock the operator out of the admin plane). `login_maxretry` failed sign-ins within
    `findtime` ban the source (the API itself already answers 429 after 5 a minute).

    Example:
        jails(door_port=443, ignore=["100.64.0.1"], api_port=8080)
    """
    distribution = host.get_fact(LinuxDistribution) or {}
    installed = (host.get_fact(DebPackages) or {}).get("fail2ban")
    if needs_asynchat_fix(distribution, installed):
        apt.packages(name="fail2ban: newest build (Ubuntu 24.04 asynchat fix)",
                     packages=["fail2ban"], latest=True, _sudo=True)
        server.shell(name="fail2ban: prove it imports on this Python (fail2ban #3754)",
                     commands=[ASYNCHAT_PROBE], _sudo=True)
    jail = files.template(
        name="fail2ban jail.local (backend systemd; sshd, recidive, door, login)",
        src=template("fail2ban/jail.local.j2"),
        dest="/etc/fail2ban/jail.local",
        user="root", group="root", mode=644,
        maxretry=maxretry, findtime=findtime, bantime=bantime,
        ignore=list(ignore or []), door_jail=DOOR_JAIL, door_port=door_port,
        door_log_identifier=door_log_identifier, login_jail=LOGIN_JAIL, api_port=api_port,
        api_log_identifier=api_log_identifier, login_maxretry=login_maxretry,
        _sudo=True,
    )
    door_filter = files.template(
        name="fail2ban filter for the door's JSON rejections",
        src=template("fail2ban/door-filter.conf.j2"),
        dest=f"/etc/fail2ban/filter.d/{DOOR_JAIL}.conf",
        user="root", group="root", mode=644,
        _sudo=True,
    )
    login_filter = files.template(
        name="fail2ban filter for failed Command Center sign-ins (JSON lines)",
        src=template("fail2ban/login-filter.conf.j2"),
        dest=f"/etc/fail2ban/filter.d/{LOGIN_JAIL}.conf",
        user="root", group="root", mode=644,
        _sudo=True,
    )

    def changed() -> bool:
        return jail.did_change() or door_filter.did_change() or login_filter.did_change()

    server.shell(name="fail2ban: configuration test", commands=["fail2ban-client -t"],
                 _if=changed, _sudo=True)
    systemd.service(name="fail2ban running and enabled", service="fail2ban.service",
                    running=True, enabled=True, _sudo=True)
    systemd.service(name="fail2ban restart (jails changed)", service="fail2ban.service",
                    restarted=True, _if=changed, _sudo=True)
