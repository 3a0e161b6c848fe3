"""Integrity role: AIDE records the host's code and configuration in a baseline and compares
them with it every day (INVARIANTS.md §26; CIS Ubuntu 24.04 1.3.2, Lynis FINT-4350/4402).

One compact configuration (templates/integrity/aide.conf.j2) rather than Debian's
aide-common: its ~240 per-package rule files are installed through `ucf` one by one (minutes
under emulation) and its catch-all rule hashes everything, the container engine's layers
included, with every hash AIDE knows. Here: SHA-512, the paths in `WATCHED`, minus
`EXCLUDED`. The baseline is written by a background unit (it hashes ~700 MB on a small
VPS), started by the deploy and at every boot until it exists; `vos-aide-check.timer`
compares daily and puts the report in the journal.

Example (inside deploys/full.py):
    integrity.aide()
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

from roles._paths import template

PACKAGES = ["aide"]
CONFIG = "/etc/aide/aide.conf"
DATABASE = "/var/lib/aide/aide.db"
BASELINE_UNIT = "vos-aide-baseline.service"
CHECK_UNIT = "vos-aide-check.service"
CHECK_TIMER = "vos-aide-check.timer"
# The code and configuration an intruder would change to stay.
WATCHED = ("/etc", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec", "/usr/local", "/boot",
           "/opt", "/root", "/var/spool/cron")
# Inside the watched paths, what changes by design (or is the baseline itself).
EXCLUDED = ("/etc/mtab", "/etc/adjtime", "/etc/resolv.conf", "/root/.cache",
            "/root/.bash_history")


@deploy("Integrity: AIDE")
def aide(watched: tuple[str, ...] = WATCHED, excluded: tuple[str, ...] = EXCLUDED,
         schedule: str = "*-*-* 04:20:00"):
    """AIDE installed with its configuration and units, the daily comparison on, and a
    baseline written in the background when none exists yet.

    Example:
        aide(excluded=(*EXCLUDED, "/etc/scratch"))
    """
    apt.packages(name="AIDE", packages=PACKAGES, no_recommends=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    for directory, mode in (("/etc/aide", 755), ("/var/lib/aide", 700)):
        files.directory(name=directory, path=directory, user="root", group="root", mode=mode,
                        _sudo=True)
    context = {"config": CONFIG, "database": DATABASE, "schedule": schedule}
    files.template(name=f"AIDE rules {CONFIG}", src=template("integrity/aide.conf.j2"),
                   dest=CONFIG, user="root", group="root", mode=600, watched=watched,
                   excluded=excluded, **context, _sudo=True)
    units = [files.template(name=f"Unit {unit}", src=template(f"integrity/{unit}.j2"),
                            dest=f"/etc/systemd/system/{unit}", user="root", group="root",
                            mode=644, **context, _sudo=True)
             for unit in (BASELINE_UNIT, CHECK_UNIT, CHECK_TIMER)]
    server.shell(name="systemd reads the AIDE units", commands=["systemctl daemon-reload"],
                 _if=lambda: any(unit.did_change() for unit in units), _sudo=True)
    # running=None: a oneshot is never "running"; starting it is the last step's decision
    systemd.service(name=f"{BASELINE_UNIT} enabled (runs at boot until a baseline exists)",
                    service=BASELINE_UNIT, running=None, enabled=True, _sudo=True)
    systemd.service(name=f"Daily comparison ({CHECK_TIMER}) on", service=CHECK_TIMER,
                    running=True, enabled=True, _sudo=True)
    if host.get_fact(File, path=DATABASE, _sudo=True):
        host.noop(f"AIDE baseline {DATABASE} exists")
        return
    server.shell(name=f"AIDE baseline: {BASELINE_UNIT} started in the background",
                 commands=[f"systemctl start --no-block {BASELINE_UNIT}"], _sudo=True)
