"""The one binding judgement (INVARIANTS.md §1/§2): which published port may be reachable.

Rule: a published port binds the mesh IP or loopback; the door (compose service `door` of the
stack's project) is the one exception, and only on the door port. Everything else — no host
IP (Docker's default address), a wildcard, the public IP, any other address — is a
violation, and so are the door publishing any other port and any container (the door too)
in the host's network namespace, which bypasses Docker's NAT and the DOCKER-USER guard.

Every caller judges with `violation()`: the static gate on the rendered compose file
(stack/gate.py), the runtime checks on `docker inspect` (checks/test_stack.py,
checks/invariants.py) and, on the host, the release activation script, which pipes
`docker inspect` into this file (stdlib only, placed by roles/stack.py) instead of
re-writing the rule in shell:

    docker inspect $(docker ps -q) | python3 vos-binding.py --mesh-ip 100.64.0.2 \\
        --door-port 443 --project vos      # exit 1, one line per violation

Example:
    >>> violation(Publication("api", "0.0.0.0", "8080", "8080/tcp"), "100.64.0.2", 443)
    'on all interfaces (0.0.0.0:8080)'
    >>> violation(Publication("door", "203.0.113.5", "443", "8443/tcp", is_door=True),
    ...           "100.64.0.2", 443) is None
    True
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import dataclass

WILDCARDS = {"0.0.0.0", "::", "[::]", "*"}
DOOR_SERVICE = "door"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_PROJECT = "com.docker.compose.project"


@dataclass(frozen=True)
class Publication:
    """One published port: who publishes it, on which host address and port.

    host_ip is "" when nothing names one (a compose mapping without an address; Docker then
    uses its default address, all interfaces unless daemon.json sets "ip").
    """

    who: str
    host_ip: str
    host_port: str
    target: str
    is_door: bool = False
    host_network: bool = False


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback.

    Example:
        >>> is_loopback("127.0.0.53"), is_loopback("100.64.0.2")
        (True, False)
    """
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return (mapped or parsed).is_loopback


def violation(item: Publication, mesh_ip: str, door_port: int) -> str | None:
    """None when `item` may be published so; else why not, as a phrase ("on all interfaces
    (0.0.0.0:8080)") the caller puts in its own sentence with its own fix.

    Example:
        >>> violation(Publication("web", "", "8080", "80"), "100.64.0.2", 443)[:15]
        'with no host IP'
        >>> violation(Publication("door", "0.0.0.0", "9000", "9000", is_door=True),
        ...           "100.64.0.2", 443)
        'on port 9000, but the door may publish only the door port 443'
    """
    where = f"{item.host_ip or '(default)'}:{item.host_port or item.target}"
    if item.host_network:  # the door too: it would bypass Docker's NAT and DOCKER-USER
        return "in the host's network namespace: every port it opens is on all interfaces"
    if item.is_door:
        if str(item.host_port) == str(door_port):
            return None
        return (f"on port {item.host_port or item.target}, but the door may publish only the "
                f"door port {door_port}")
    if item.host_ip == mesh_ip or is_loopback(item.host_ip):
        return None
    if item.host_ip == "":
        return ("with no host IP (Docker's default address, all interfaces unless "
                'daemon.json sets "ip")')
    if item.host_ip in WILDCARDS:
        return f"on all interfaces ({where})"
    return f"on {where}, neither the mesh IP {mesh_ip} nor loopback"


def is_door(container: dict, project: str | None = None) -> bool:
    """The door: the container Compose labelled as service `door` (of `project`, if given).

    Example:
        >>> is_door({"Config": {"Labels": {"com.docker.compose.service": "door",
        ...                                "com.docker.compose.project": "other"}}}, "vos")
        False
    """
    labels = (container.get("Config") or {}).get("Labels") or {}
    return labels.get(COMPOSE_SERVICE) == DOOR_SERVICE and (
        project is None or labels.get(COMPOSE_PROJECT) == project)


def from_inspect(containers: list[dict], project: str | None = None) -> list[Publication]:
    """Publications of running containers (`docker inspect` JSON). The door is the container
    labelled as compose service `door` (of `project`, when given); a container in the host's
    network namespace is one publication with no port.

    Example:
        >>> from_inspect([{"Name": "/x", "NetworkSettings": {"Ports": {"80/tcp": [
        ...     {"HostIp": "0.0.0.0", "HostPort": "18080"}], "81/tcp": None}}}])[0].host_port
        '18080'
    """
    found = []
    for container in containers:
        name = str(container.get("Name", "?")).lstrip("/")
        door = is_door(container, project)
        if (container.get("HostConfig") or {}).get("NetworkMode") == "host":
            found.append(Publication(name, "", "", "", is_door=door, host_network=True))
        ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
        for inside, bindings in sorted(ports.items()):
            for binding in bindings or []:
                found.append(Publication(name, str(binding.get("HostIp", "")),
                                         str(binding.get("HostPort", "")), inside, door))
    return found


def from_docker_ps(listing: str, doors: set[str]) -> list[Publication]:
    """Publications in `docker ps --format '{{.Names}}\\t{{.Ports}}'` (the seed's literal
    check); unpublished ports ("80/tcp") are skipped.

    Example:
        >>> ps = from_docker_ps("web\\t0.0.0.0:8080->80/tcp, :::8080->80/tcp, 81/tcp", set())
        >>> [(item.host_ip, item.host_port) for item in ps]
        [('0.0.0.0', '8080'), ('::', '8080')]
    """
    found = []
    for line in listing.splitlines():
        name, _, ports = line.partition("\t")
        for mapping in filter(None, (part.strip() for part in ports.split(","))):
            published, arrow, target = mapping.partition("->")
            if not arrow:
                continue
            address, _, port = published.rpartition(":")
            found.append(Publication(name, address.strip("[]") or "::" if address else "",
                                     port, target, is_door=name in doors))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Judge `docker inspect` JSON (stdin) by the binding rule; exit 1 and one "
                    "line per violation.")
    parser.add_argument("--mesh-ip", required=True)
    parser.add_argument("--door-port", type=int, required=True)
    parser.add_argument("--project", help="the stack's compose project (whose door counts)")
    args = parser.parse_args(argv)
    text = sys.stdin.read().strip()
    containers = json.loads(text) if text else []
    lines = [f"container '{item.who}' publishes {item.target or 'ports'} {reason}"
             for item in from_inspect(containers, args.project)
             if (reason := violation(item, args.mesh_ip, args.door_port))]
    print("\n".join(lines))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
