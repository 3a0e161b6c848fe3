"""Docker role: Engine + Compose v2 from the distribution, daemon.json bound to the mesh.

Ubuntu 24.04 packages Compose v2 as `docker-compose-v2`; Debian 13 as `docker-compose`
(2.26). `daemon.json` sets `"ip"` to the mesh IP (a `-p 8080:80` lands on the mesh, never
on all interfaces: INVARIANTS.md §3), rotates logs, keeps containers up across daemon
restarts, forbids privilege gain, and turns the userland proxy off (so no docker-proxy
listener appears and the DOCKER-USER guard sees every forwarded packet).

Example (inside deploys/full.py):
    docker.engine(mesh_ip="100.64.0.2")
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from roles._paths import template


def docker_packages(distribution: dict) -> list[str]:
    """Distribution packages for Engine + Compose v2. Debian 13 splits the CLI into
    `docker-cli` (only recommended by docker.io, and recommends are off); Ubuntu's docker.io
    still ships it.

    Example:
        >>> docker_packages({"name": "Ubuntu", "major": 24})
        ['docker.io', 'docker-compose-v2']
        >>> docker_packages({"name": "Debian", "major": 13})
        ['docker.io', 'docker-cli', 'docker-compose']
    """
    if distribution.get("name") == "Ubuntu":
        return ["docker.io", "docker-compose-v2"]
    if (distribution.get("major") or 0) >= 13:
        return ["docker.io", "docker-cli", "docker-compose"]
    return ["docker.io", "docker-compose"]


def daemon_config(mesh_ip: str, log_max_size: str = "10m", log_max_file: int = 3) -> dict:
    """The daemon.json content.

    Example:
        >>> daemon_config("100.64.0.2")["ip"]
        '100.64.0.2'
    """
    return {
        "ip": mesh_ip,
        "log-driver": "local",
        "log-opts": {"max-size": log_max_size, "max-file": str(log_max_file)},
        "live-restore": True,
        "no-new-privileges": True,
        "userland-proxy": False,
    }


@deploy("Docker")
def engine(mesh_ip: str):
    """Install, configure, and keep dockerd running; restart it only when daemon.json changed.

    Example:
        engine(mesh_ip="100.64.0.2")
    """
    if not mesh_ip:
        raise ValueError("docker.engine: no mesh IP; Docker's default bind would be 0.0.0.0. "
                         "Run the mesh step first (or set mesh.address in the inventory).")
    distribution = host.get_fact(LinuxDistribution) or {}
    daemon_json = files.template(
        name="Docker daemon.json (ip = mesh IP, log rotation, live-restore, no-new-privileges)",
        src=template("docker/daemon.json.j2"),
        dest="/etc/docker/daemon.json",
        user="root", group="root", mode=644,
        daemon=daemon_config(mesh_ip),
        _sudo=True,
    )
    apt.packages(
        name=f"Docker Engine + Compose v2 ({', '.join(docker_packages(distribution))})",
        packages=docker_packages(distribution),
        no_recommends=True,
        _sudo=True,
        _env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    systemd.service(name="dockerd running and enabled", service="docker.service",
                    running=True, enabled=True, _sudo=True)
    systemd.service(name="dockerd restart (daemon.json changed)", service="docker.service",
                    restarted=True, _if=daemon_json.did_change, _sudo=True)


def rendered_daemon_json(mesh_ip: str) -> str:
    """daemon.json as the template renders it (for tests and `--dry` readers).

    Example:
        >>> '"userland-proxy": false' in rendered_daemon_json("127.0.0.1")
        True
    """
    from jinja2 import Template

    with open(template("docker/daemon.json.j2")) as handle:
        return Template(handle.read()).render(daemon=daemon_config(mesh_ip))
