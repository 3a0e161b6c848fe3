"""Base role: packages, unattended security upgrades, time sync, journald limits, root locked.

Facts in, operations out. A full `apt upgrade` is a parameter (on in production, off in the
staging tier where it costs minutes under TCG); unattended-upgrades keeps security fixes
flowing either way.

Example (inside deploys/full.py):
    base.packages(upgrade=settings.apt_upgrade)
    base.upkeep()
    base.unattended_upgrades()
    base.time_sync()
    base.journald()
    base.lock_root()
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Users
from pyinfra.operations import apt, files, server, systemd

from roles._paths import template

# Required packages only: each one is used by a later step or a check.
BASE_PACKAGES = [
    "unattended-upgrades",  # §11
    "systemd-timesyncd",  # time sync
    "ufw",  # firewall role
    "fail2ban",  # fail2ban role
    "python3-systemd",  # fail2ban's systemd backend
    "iproute2",  # `ss` for the checks, `ip` for the mesh wait
    "sudo",
    "procps",  # `sysctl`
    # Patch management (Lynis PKGS-7370/7394, DEB-0811/0831): verify installed files against
    # their packages, list what is upgradable, show NEWS before an upgrade, and name the
    # services an upgrade left running on old libraries (list only: NEEDRESTART_CONF).
    "debsums",
    "apt-show-versions",
    "apt-listchanges",
    "needrestart",
]
# needrestart restarts services by itself in a non-interactive apt run unless told to list
# only: the deploy and unattended-upgrades must not restart sshd or dockerd behind our back.
NEEDRESTART_CONF = "/etc/needrestart/conf.d/50-vos.conf"
APT_CACHE_SECONDS = 3600


@deploy("Base: packages")
def packages(upgrade: bool = True, extra: list[str] | None = None):
    """apt update (cached an hour, so a re-run is a no-op), optional upgrade, base packages.

    Example:
        packages(upgrade=False)  # staging: skip the full upgrade, say so in the output
    """
    files.put(
        name="apt waits for the dpkg lock (a fresh VPS runs unattended-upgrades at boot)",
        src=StringIO('DPkg::Lock::Timeout "600";\n'),
        dest="/etc/apt/apt.conf.d/90-vos-lock-timeout",
        user="root", group="root", mode=644,
        _sudo=True,
    )
    for directory in ("/etc/needrestart", "/etc/needrestart/conf.d"):  # parents too: umask 027
        files.directory(name=directory, path=directory, user="root", group="root", mode=755,
                        _sudo=True)
    files.put(
        name=f"needrestart lists, never restarts ({NEEDRESTART_CONF})",
        src=StringIO("# Managed by agent-vos (roles/base.py): list the services to restart, "
                     "restart none.\n$nrconf{restart} = 'l';\n"),
        dest=NEEDRESTART_CONF,
        user="root", group="root", mode=644,
        _sudo=True,
    )
    apt.update(name="apt update (cached 1 h)", cache_time=APT_CACHE_SECONDS, _sudo=True)
    if upgrade:
        apt.upgrade(name="apt upgrade (only when something is upgradable)", _sudo=True)
    else:
        host.noop("apt upgrade skipped (apt_upgrade=False); unattended-upgrades still runs")
    apt.packages(
        name="Install the base packages",
        packages=BASE_PACKAGES + list(extra or []),
        no_recommends=True,
        _sudo=True,
        _env={"DEBIAN_FRONTEND": "noninteractive"},
    )


@deploy("Base: package upkeep")
def upkeep(debsums_schedule: str = "weekly"):
    """debsums compares every installed file with its package's checksums on a schedule
    (Debian installs it with CRON_CHECK=never; Lynis PKGS-7370).

    Example:
        upkeep(debsums_schedule="daily")
    """
    files.line(name=f"debsums checks installed files {debsums_schedule}",
               path="/etc/default/debsums", line=r"^CRON_CHECK=.*$",
               replace=f"CRON_CHECK={debsums_schedule}", _sudo=True)


@deploy("Base: unattended security upgrades")
def unattended_upgrades():
    """Enable the daily apt timers and unattended-upgrades (Debian/Ubuntu default origins =
    security pocket).

    Example:
        unattended_upgrades()
    """
    files.template(
        name="Enable unattended upgrades (20auto-upgrades)",
        src=template("base/20auto-upgrades.j2"),
        dest="/etc/apt/apt.conf.d/20auto-upgrades",
        user="root",
        group="root",
        mode=644,
        _sudo=True,
    )
    systemd.service(
        name="unattended-upgrades running and enabled",
        service="unattended-upgrades.service",
        running=True,
        enabled=True,
        _sudo=True,
    )


@deploy("Base: time sync")
def time_sync():
    """systemd-timesyncd running (TLS, TOTP-free logs and fail2ban windows need sane clocks).

    Example:
        time_sync()
    """
    systemd.service(
        name="systemd-timesyncd running and enabled",
        service="systemd-timesyncd.service",
        running=True,
        enabled=True,
        _sudo=True,
    )


@deploy("Base: journald limits")
def journald(system_max_use: str = "500M", system_max_file_size: str = "50M",
             max_retention: str = "1month"):
    """Bound the journal; restart journald only when the drop-in changed.

    Example:
        journald(system_max_use="1G")
    """
    dropin = files.template(
        name="journald size limits",
        src=template("base/journald-vos.conf.j2"),
        dest="/etc/systemd/journald.conf.d/60-vos.conf",
        user="root",
        group="root",
        mode=644,
        system_max_use=system_max_use,
        system_max_file_size=system_max_file_size,
        max_retention=max_retention,
        _sudo=True,
    )
    systemd.service(
        name="Restart journald (limits changed)",
        service="systemd-journald.service",
        restarted=True,
        _if=dropin.did_change,
        _sudo=True,
    )


@deploy("Base: root locked")
def lock_root():
    """Lock root's password (`passwd -l`): no password login for root, key-less console only.

    Example:
        lock_root()
    """
    root = (host.get_fact(Users, _sudo=True) or {}).get("root", {})
    password = root.get("password") or ""
    if password.startswith("!"):
        host.noop("root password is already locked")
        return
    server.shell(name="Lock root's password", commands=["passwd -l root"], _sudo=True)
