"""Files role: the permission baseline of account, SSH and cron files (INVARIANTS.md §19).

Each path that exists is set to its mode and owner with files.file / files.directory, which
compare first: a converged host plans no command. A path that does not exist (no cron on
the host, say) is left alone, never created. Existence is read when the operation runs, not
when the deploy is planned: cron's files, installed by the backups step earlier in the same
run, are set in that run, and the next run changes nothing.

Example (inside deploys/full.py):
    files.permissions()
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import Directory, File
from pyinfra.operations import files


@dataclass(frozen=True)
class Baseline:
    """One path's mode and owner; `directory` picks files.directory over files.file."""

    path: str
    mode: int  # as pyinfra writes modes: 640 means 0640
    user: str = "root"
    group: str = "root"
    directory: bool = False


# CIS Ubuntu 24.04 7.1.x (passwd, shadow, group, gshadow), 5.1.1 (sshd_config),
# 2.4.1.2-2.4.1.7 (crontab, cron directories); dev-sec linux-baseline os-03..os-05.
PERMISSION_BASELINE = (
    Baseline("/etc/passwd", 644),
    Baseline("/etc/group", 644),
    Baseline("/etc/shadow", 640, group="shadow"),
    Baseline("/etc/gshadow", 640, group="shadow"),
    Baseline("/etc/ssh/sshd_config", 600),
    Baseline("/etc/crontab", 600),
    *(Baseline(f"/etc/cron.{name}", 700, directory=True)
      for name in ("hourly", "daily", "weekly", "monthly", "d")),
)


@operation()
def baseline_path(item: Baseline):
    """Set one path's mode and owner if it exists when this runs (facts, not shell).

    Example:
        baseline_path(name="/etc/shadow 640", item=Baseline("/etc/shadow", 640, group="shadow"))
    """
    if not host.get_fact(Directory if item.directory else File, path=item.path):
        host.noop(f"{item.path} does not exist here: nothing to set")
        return
    inner = files.directory._inner if item.directory else files.file._inner
    yield from inner(path=item.path, user=item.user, group=item.group, mode=item.mode)


@deploy("Files: permission baseline")
def permissions(baseline: tuple[Baseline, ...] = PERMISSION_BASELINE):
    """Set mode and owner of each baseline path that exists; the others are skipped.

    Example:
        permissions(baseline=(Baseline("/etc/shadow", 600, group="shadow"),))
    """
    for item in baseline:
        baseline_path(name=f"{item.path} {item.mode:03d} {item.user}:{item.group}", item=item,
                      _sudo=True)
