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

expect, mesh_ip = plugin.expect, plugin.mesh_ip

ALL_INTERFACES = {"0.0.0.0", "::", "[::]", ""}
DOOR_SERVICE = "door"
FIX = ("fix the port mapping in templates/stack/compose.yml.j2 (bind it to the mesh IP or "
       "127.0.0.1) and deploy again, or stop the container: `sudo docker rm -f {name}`")


def container_name(container: dict) -> str:
    """`docker inspect`'s name without the leading slash."""
    return str(container.get("Name", "?")).lstrip("/")


def is_door(container: dict) -> bool:
    """The door is the compose service named `door` (label set by Docker Compose)."""
    labels = (container.get("Config") or {}).get("Labels") or {}
    return labels.get("com.docker.compose.service") == DOOR_SERVICE


def published_bindings(container: dict) -> list[tuple[str, str, str]]:
    """(container port, host IP, host port) for every published port of one container.

    Example:
        >>> published_bindings({"NetworkSettings": {"Ports": {"80/tcp": [
        ...     {"HostIp": "0.0.0.0", "HostPort": "18080"}], "81/tcp": None}}})
        [('80/tcp', '0.0.0.0', '18080')]
    """
    ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
    return [(inside, str(binding.get("HostIp", "")), str(binding.get("HostPort", "")))
            for inside, bindings in sorted(ports.items()) for binding in bindings or []]


def binding_violations(containers: list[dict], mesh_ip: str, door_port: int) -> list[str]:
    """One line per running container port that is reachable beyond the mesh/loopback.

    Example:
        >>> binding_violations([{"Name": "/x", "NetworkSettings": {"Ports": {"80/tcp": [
        ...     {"HostIp": "0.0.0.0", "HostPort": "18080"}]}}}], "100.64.0.2", 443)[0][:40]
        "STACK §2: container 'x' publishes 80/tcp"
    """
    problems = []
    for container in containers:
        name = container_name(container)
        host_mode = (container.get("HostConfig") or {}).get("NetworkMode") == "host"
        if host_mode and not is_door(container):
            problems.append(f"STACK §2: container '{name}' runs with --network host: every "
                            f"port it opens is on all interfaces — {FIX.format(name=name)}")
        for inside, host_ip, host_port in published_bindings(container):
            where = f"{host_ip or '(all)'}:{host_port}"
            if is_door(container) and host_port == str(door_port):
                continue
            if host_ip in ALL_INTERFACES:
                problems.append(
                    f"STACK §2: container '{name}' publishes {inside} on {where}, i.e. on all "
                    f"interfaces; only the door may, on port {door_port} — "
                    f"{FIX.format(name=name)}")
            elif host_ip not in (mesh_ip, "127.0.0.1"):
                problems.append(
                    f"STACK §2: container '{name}' publishes {inside} on {where}, neither the "
                    f"mesh IP {mesh_ip} nor loopback — {FIX.format(name=name)}")
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


def test_docker_ps_shows_no_all_interface_binding(host, running, expect):
    """The seed's literal check: grep `docker ps` for 0.0.0.0/:: (the door's port excepted)."""
    doors = {container_name(container) for container in running if is_door(container)}
    with as_root(host):
        listing = host.check_output("docker ps --format '{{.Names}}\t{{.Ports}}'")
    hits = []
    for line in listing.splitlines():
        name, _, ports = line.partition("\t")
        for mapping in filter(None, (part.strip() for part in ports.split(","))):
            public = mapping.startswith(("0.0.0.0:", ":::", "[::]:"))
            door_mapping = name in doors and f":{expect.door_port}->" in mapping
            if public and not door_mapping:
                hits.append(f"{name}: {mapping}")
    assert not hits, ("STACK §2: `docker ps` shows bindings to all interfaces: "
                      + "; ".join(hits) + " — " + FIX.format(name=hits[0].split(':')[0]))


def test_stack_containers_are_hardened(running):
    """§12: the app's containers (compose project labels) are read-only, nnp, cap-less."""
    stack = [c for c in running
             if ((c.get("Config") or {}).get("Labels") or {}).get("io.agent-vos.image")]
    problems = hardening_violations(stack)
    assert not problems, "\n".join(problems)
