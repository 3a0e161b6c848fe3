"""Firewall invariants (INVARIANTS.md §5): UFW deny by default, mesh + door only, IPv6 too.

Run alone: pytest -p checks.plugin checks/test_firewall.py --hosts=ssh://HOST
"""

from checks import plugin
from checks.invariants import parse_ufw_status, ufw_violations

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip


def test_ufw_policy_and_rules(host, expect):
    """Active; deny in, allow out, deny routed; ALLOW IN only on the mesh or to the door."""
    with host.sudo():
        status = host.run("ufw status verbose")
        defaults = host.file("/etc/default/ufw").content_string
    assert status.rc == 0, f"FIREWALL §5: `ufw status verbose` failed ({status.stderr.strip()})" \
                           " — install ufw or re-run the deploy (firewall step)"
    ipv6 = any(line.strip() == "IPV6=yes" for line in defaults.splitlines())
    problems = ufw_violations(parse_ufw_status(status.stdout), expect.mesh_interface,
                              expect.door_port, ipv6)
    assert not problems, "\n".join(problems)
