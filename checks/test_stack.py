"""The RUNTIME binding gate: the running containers, judged as an outsider (INVARIANTS.md §2, §12).

The seed's rule: "every deploy runs a check that greps the running container list for any
binding to all interfaces, and the deploy fails if anything comes back". The door is the one
exception (compose service `door`, on the door port only). Everything is read from the
engine itself (`docker inspect` of every running container), never from the compose file.

Run alone: pytest -p checks.plugin checks/test_stack.py --hosts=ssh://HOST --door-port 443
"""

from __future__ import annotations

import contextlib
import json

import pytest

from checks import plugin
from stack import binding
from stack.compose import PROJECT as STACK_PROJECT

expect, mesh_ip = plugin.expect, plugin.mesh_ip

FIX = ("fix the port mapping in templates/stack/compose.yml.j2 (bind it to the mesh IP or "
       "127.0.0.1) and deploy again, or stop the container: `sudo docker rm -f {name}`")


def container_name(container: dict) -> str:
    """`docker inspect`'s name without the leading slash."""
    return str(container.get("Name", "?")).lstrip("/")


def is_door(container: dict) -> bool:
    """The door is the stack's compose service `door` (labels set by Docker Compose)."""
    return binding.is_door(container, STACK_PROJECT)


def binding_violations(containers: list[dict], mesh_ip: str, door_port: int) -> list[str]:
    """One line per running container port that is reachable beyond the mesh/loopback, by
    the shared judgement (stack/binding.py).

    Example:
        >>> binding_violations([{"Name": "/x", "NetworkSettings": {"Ports": {"80/tcp": [
        ...     {"HostIp": "0.0.0.0", "HostPort": "18080"}]}}}], "100.64.0.2", 443)[0][:40]
        "STACK §2: container 'x' publishes 80/tcp"
    """
    problems = []
    for item in binding.from_inspect(containers, STACK_PROJECT):
        reason = binding.violation(item, mesh_ip, door_port)
        if reason is None:
            continue
        what = "runs" if item.host_network else f"publishes {item.target}"
        problems.append(f"STACK §2: container '{item.who}' {what} {reason} — "
                        f"{FIX.format(name=item.who)}")
    return problems


def hardening_violations(containers: list[dict]) -> list[str]:
    """Read-only root, no-new-privileges, all capabilities dropped, no writable mounts (§12)."""
    problems = []
    for container in containers:
        name = container_name(container)
        config = container.get("HostConfig") or {}
        fix = f"set it in templates/stack/compose.yml.j2 and deploy again (container '{name}')"
        if not config.get("ReadonlyRootfs"):
            problems.append(f"STACK §12: container '{name}' has a writable root filesystem — "
                            f"read_only: true; {fix}")
        if not any(str(option).startswith("no-new-privileges")
                   for option in config.get("SecurityOpt") or []):
            problems.append(f"STACK §12: container '{name}' lacks no-new-privileges — {fix}")
        if "ALL" not in [str(cap).upper() for cap in config.get("CapDrop") or []]:
            problems.append(f"STACK §12: container '{name}' keeps capabilities — cap_drop: "
                            f"[ALL]; {fix}")
        for mount in container.get("Mounts") or []:
            if mount.get("Type") in ("volume", "bind") and mount.get("RW"):
                problems.append(f"STACK §12: container '{name}' has a writable {mount['Type']} "
                                f"mount at {mount.get('Destination')} (state outside Postgres)"
                                f" — drop it or make it read-only; {fix}")
    return problems


def as_root(host):
    """sudo for the deploy user; nothing when already root (hosts without sudo, e.g. CI)."""
    return contextlib.nullcontext() if host.check_output("id -u").strip() == "0" \
        else host.sudo()


@pytest.fixture(scope="module")
def running(host) -> list[dict]:
    """`docker inspect` of every running container (empty list when none run)."""
    with as_root(host):
        if not host.exists("docker"):
            pytest.skip("docker is not installed on this host (no stack deployed)")
        ids = host.check_output("docker ps -q --no-trunc").split()
        if not ids:
            return []
        return json.loads(host.check_output(f"docker inspect {' '.join(ids)}"))


def test_no_container_binds_all_interfaces_except_the_door(running, mesh_ip, expect):
    """§2 at runtime: every published port is on the mesh IP or loopback, but the door's."""
    problems = binding_violations(running, mesh_ip, expect.door_port)
    assert not problems, "\n".join(problems)


def test_docker_ps_shows_no_all_interface_binding(host, running, expect, mesh_ip):
    """The seed's literal check: the `docker ps` listing, judged by the same rule."""
    doors = {container_name(container) for container in running if is_door(container)}
    with as_root(host):
        listing = host.check_output("docker ps --format '{{.Names}}\t{{.Ports}}'")
    hits = [f"{item.who}: {item.host_ip}:{item.host_port}->{item.target}"
            for item in binding.from_docker_ps(listing, doors)
            if binding.violation(item, mesh_ip, expect.door_port)]
    assert not hits, ("STACK §2: `docker ps` shows bindings beyond the mesh and loopback: "
                      + "; ".join(hits) + " — " + FIX.format(name=hits[0].split(':')[0]))


def test_stack_containers_are_hardened(running):
    """§12: the app's containers (compose project labels) are read-only, nnp, cap-less."""
    stack = [c for c in running
             if ((c.get("Config") or {}).get("Labels") or {}).get("io.agent-vos.image")]
    problems = hardening_violations(stack)
    assert not problems, "\n".join(problems)
