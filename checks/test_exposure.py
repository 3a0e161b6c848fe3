"""Exposure invariants (INVARIANTS.md §1-3): one door, everything else on the mesh.

Run alone: pytest -p checks.plugin checks/test_exposure.py --hosts=ssh://HOST
"""

import pytest

from checks import plugin
from checks.invariants import (
    docker_user_violations,
    exposure_violations,
    forward_jumps_to_docker_user,
    parse_docker_inspect,
    parse_ss,
    published_violations,
)

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip


def _listeners(host):
    # testinfra enumerates every listener (not only `::` binds); ss -p names their owner.
    with host.sudo():
        sockets = host.socket.get_listening_sockets()
        ss = host.check_output("ss -Htlnup")
    return sockets, parse_ss(ss)


def test_no_listener_beyond_loopback_mesh_and_door(host, expect, mesh_ip):
    """§1: nothing listens on 0.0.0.0/:: (or the public IP) except the door."""
    sockets, listeners = _listeners(host)
    assert sockets, "EXPOSURE §1: no listening socket found at all — is `ss` installed?"
    problems = exposure_violations(listeners, expect.door_port, mesh_ip, expect.udp_allowed)
    assert not problems, "\n".join(problems)


def _published(host):
    with host.sudo():
        if host.run("command -v docker").rc != 0:
            pytest.fail("EXPOSURE §2: docker is not installed — run the deploy (docker step)")
        ids = host.check_output("docker ps -q").split()
        if not ids:
            return []
        return parse_docker_inspect(host.check_output("docker inspect " + " ".join(ids)))


def test_published_ports_bind_mesh_or_loopback(host, expect, mesh_ip):
    """§2: every running container's published port binds the mesh IP or 127.0.0.1."""
    problems = published_violations(_published(host), expect.door_port, mesh_ip)
    assert not problems, "\n".join(problems)


def test_docker_user_guard(host, expect):
    """§3: DOCKER-USER drops container traffic not from the mesh, a bridge, or to the door."""
    with host.sudo():
        chain = host.run("iptables -S DOCKER-USER")
        forward = host.run("iptables -S FORWARD")
    assert chain.rc == 0, ("EXPOSURE §3: iptables has no DOCKER-USER chain — run the deploy "
                           "(firewall + docker steps) or `sudo ufw reload`")
    problems = docker_user_violations(chain.stdout.splitlines(), expect.mesh_interface,
                                      expect.door_port)
    if not forward_jumps_to_docker_user(forward.stdout.splitlines()):
        problems.append("EXPOSURE §3: FORWARD does not jump to DOCKER-USER first — restart "
                        "docker (`sudo systemctl restart docker`) so it re-inserts the jump")
    assert not problems, "\n".join(problems)
