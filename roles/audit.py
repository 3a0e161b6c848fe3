"""Audit role: auditd with rules for identity, sshd, time, modules and Docker's files; AppArmor
confining every container (INVARIANTS.md §24-25; CIS Ubuntu 24.04 L2 6.3.x and 1.3.1.x, CIS
Docker 1.1.x, Lynis ACCT-9628/9630, konstruktoid's auditd and AppArmor tasks).

Order in the deploy: `apparmor()` BEFORE the docker step (dockerd looks for apparmor_parser
once, when it starts: started without it, it runs every container unconfined), `auditd()`
AFTER it (its rules watch Docker's paths, loaded once Docker has installed them). The rules
file is the same on every host and every run (facts are read when the deploy is planned,
before Docker exists on a fresh host: a file built from them would change on the second
deploy); `-i` lets `augenrules` skip the watch of a path this host's packaging lacks.

Example (inside deploys/full.py):
    audit.apparmor()
    docker.engine(mesh_ip=mesh_ip)
    audit.auditd()
    audit.accounting()
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.server import Arch
from pyinfra.operations import apt, files, server, systemd

from roles._paths import template

RULES_FILE = "/etc/audit/rules.d/vos.rules"
# CIS Docker benchmark 1.1.3-1.1.18: the daemon, its runtimes, state, config and sockets.
DOCKER_AUDIT_PATHS = (
    "/usr/bin/dockerd",
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/runc",
    "/run/containerd",
    "/var/lib/docker",
    "/etc/docker",
    "/etc/docker/daemon.json",
    "/etc/default/docker",
    "/etc/containerd/config.toml",
    "/usr/lib/systemd/system/docker.service",
    "/usr/lib/systemd/system/docker.socket",
    "/usr/lib/systemd/system/containerd.service",
    "/run/docker.sock",
)


class DockerAppArmor(FactBase):
    """Whether the kernel enforces AppArmor, whether a running dockerd applies it, and the
    running containers that carry no profile (started before dockerd could apply one).
    None when dockerd is not running.

    Example value: {"kernel": True, "daemon": False, "unprofiled": ["vos-api-1"]}
    """

    def command(self) -> str:
        return (
            "systemctl is-active --quiet docker.service 2>/dev/null || exit 0; "
            "echo kernel=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo N); "
            "docker info --format '{{range .SecurityOptions}}option={{println .}}{{end}}'; "
            "docker ps -q | xargs -r docker inspect "
            "--format 'container={{.Name}} profile={{.AppArmorProfile}}'"
        )

    def process(self, output: list[str]) -> dict | None:
        return docker_apparmor_state(output)


def docker_apparmor_state(lines: list[str]) -> dict | None:
    """Parse :class:`DockerAppArmor`'s output.

    Example:
        >>> docker_apparmor_state(["kernel=Y", "option=name=apparmor",
        ...     "option=name=seccomp,profile=builtin", "container=/vos-api-1 profile=",
        ...     "container=/vos-door-1 profile=docker-default"])
        {'kernel': True, 'daemon': True, 'unprofiled': ['vos-api-1']}
        >>> docker_apparmor_state([]) is None
        True
    """
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        return None
    state = {"kernel": False, "daemon": False, "unprofiled": []}
    for line in lines:
        if line.startswith("kernel="):
            state["kernel"] = line.removeprefix("kernel=").strip().upper().startswith("Y")
        elif line.startswith("option=") and line.removeprefix("option=").split(",")[0] \
                == "name=apparmor":
            state["daemon"] = True
        elif line.startswith("container="):
            name, _, profile = line.removeprefix("container=").partition(" profile=")
            if not profile.strip():
                state["unprofiled"].append(name.lstrip("/"))
    return state


@deploy("Audit: auditd")
def auditd():
    """auditd installed, enabled and running; /etc/audit/rules.d/vos.rules (every Docker path
    of DOCKER_AUDIT_PATHS, 32-bit syscall rules on x86_64); `augenrules --load` only when the
    rules file changed.

    Example:
        auditd()
    """
    apt.packages(
        name="auditd",
        packages=["auditd"],
        no_recommends=True,
        _sudo=True,
        _env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    arches = ["b64", "b32"] if (host.get_fact(Arch) or "").strip() == "x86_64" else ["b64"]
    rules = files.template(
        name=f"Audit rules ({RULES_FILE}: identity, sshd, time, modules, Docker)",
        src=template("audit/vos.rules.j2"),
        dest=RULES_FILE,
        user="root", group="root", mode=640,
        arches=arches,
        docker_paths=list(DOCKER_AUDIT_PATHS),
        _sudo=True,
    )
    systemd.service(name="auditd running and enabled", service="auditd.service",
                    running=True, enabled=True, _sudo=True)
    server.shell(name="Load the audit rules (augenrules --load)", commands=["augenrules --load"],
                 _if=rules.did_change, _sudo=True)


@deploy("Audit: AppArmor")
def apparmor():
    """The apparmor package (its apparmor_parser is what dockerd looks for) and service; a
    dockerd started before AppArmor was usable is restarted, and containers it runs without a
    profile are restarted into docker-default (once: a converged host yields no command).

    Example:
        apparmor()
    """
    apt.packages(
        name="AppArmor (apparmor: apparmor_parser, aa-enabled, the service)",
        packages=["apparmor"],
        no_recommends=True,
        _sudo=True,
        _env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    systemd.service(name="apparmor running and enabled", service="apparmor.service",
                    running=True, enabled=True, _sudo=True)
    # the fact is read before the package lands: a dockerd without apparmor_parser reports
    # no AppArmor, so installing it here also restarts dockerd (and its unconfined containers)
    confine_containers(name="Docker applies AppArmor to every running container", _sudo=True)


@operation()
def confine_containers():
    """Restart dockerd when it runs without AppArmor on a kernel that enforces it, and restart
    the containers that carry no profile (live-restore keeps them up across the daemon
    restart; a container picks its profile when it starts).

    Example:
        confine_containers()
    """
    state = host.get_fact(DockerAppArmor)
    if not state:
        host.noop("dockerd is not running (the docker step starts it with AppArmor)")
        return
    if not state["kernel"]:
        host.noop("the kernel does not enforce AppArmor; nothing Docker can apply")
        return
    if not state["daemon"]:
        yield "systemctl restart docker.service"
    if state["unprofiled"]:
        yield "docker restart " + " ".join(state["unprofiled"])


ACCOUNTING_PACKAGES = ["acct", "sysstat"]


@deploy("Audit: process accounting")
def accounting():
    """Process accounting (`acct`: every command that ran, `lastcomm`/`sa`) and sysstat's
    activity history (`sar`), both on (INVARIANTS.md §26; Lynis ACCT-9622/9626).

    Example:
        accounting()
    """
    apt.packages(name=f"Accounting ({', '.join(ACCOUNTING_PACKAGES)})",
                 packages=ACCOUNTING_PACKAGES, no_recommends=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    # Debian installs sysstat collecting nothing until ENABLED is true.
    files.line(name="sysstat collects (/etc/default/sysstat ENABLED)",
               path="/etc/default/sysstat", line=r"^ENABLED=.*$", replace='ENABLED="true"',
               _sudo=True)
    for service in ("acct.service", "sysstat.service"):
        systemd.service(name=f"{service} running and enabled", service=service, running=True,
                        enabled=True, _sudo=True)
