"""Firewall role: UFW deny-by-default, the mesh interface, the door, IPv6, the DOCKER-USER guard.

Public SSH stays open only until the cutover (roles/ssh.py) has proven SSH over the mesh;
the deploy passes `public_ssh` from the cutover's own fact, so a re-run never re-opens it.

Example (inside deploys/full.py):
    firewall.ufw_baseline(mesh_interface="tailscale0", door_port=443, public_ssh=True)
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from roles._paths import template
from roles.ops import ufw

PUBLIC_SSH_RULE = "allow 22/tcp"


def door_rule(door_port: int) -> str:
    """The one rule that opens the door to everyone (IPv4 and IPv6).

    Example:
        >>> door_rule(443)
        'allow 443/tcp'
    """
    return f"allow {door_port}/tcp"


def mesh_rule(mesh_interface: str) -> str:
    """Everything arriving on the mesh interface is allowed (the admin plane).

    Example:
        >>> mesh_rule("tailscale0")
        'allow in on tailscale0'
    """
    return f"allow in on {mesh_interface}"


@deploy("Firewall")
def ufw_baseline(mesh_interface: str, door_port: int, public_ssh: bool):
    """Policies first, then rules, then enable: enabling never precedes the SSH allow rule.

    Example:
        ufw_baseline("tailscale0", 443, public_ssh=False)  # after the cutover
    """
    ufw.ipv6(name="UFW manages IPv6 too", enabled=True, _sudo=True)
    ufw.policy(name="UFW default deny incoming", direction="incoming", policy="deny", _sudo=True)
    ufw.policy(name="UFW default allow outgoing", direction="outgoing", policy="allow",
               _sudo=True)
    ufw.policy(name="UFW default deny routed", direction="routed", policy="deny", _sudo=True)
    ufw.rule(name=f"UFW allow in on the mesh ({mesh_interface})", rule=mesh_rule(mesh_interface),
             comment="vos mesh", _sudo=True)
    ufw.rule(name=f"UFW allow the door {door_port}/tcp from anywhere", rule=door_rule(door_port),
             comment="vos door", _sudo=True)
    if public_ssh:
        ufw.rule(name="UFW allow public SSH until the mesh cutover", rule=PUBLIC_SSH_RULE,
                 comment="vos until cutover", _sudo=True)
    else:
        ufw.rule(name="UFW public SSH closed (cutover done)", rule=PUBLIC_SSH_RULE,
                 present=False, _sudo=True)
    for scope in ("all", "default"):
        # ufw re-applies /etc/ufw/sysctl.conf on every enable/reload (and at boot, after
        # systemd-sysctl): its log_martians=0 would undo INVARIANTS §10.
        files.line(
            name=f"UFW's sysctl.conf keeps log_martians on ({scope})",
            path="/etc/ufw/sysctl.conf",
            line=f"^net/ipv4/conf/{scope}/log_martians=.*$",
            replace=f"net/ipv4/conf/{scope}/log_martians=1",
            _sudo=True,
        )
    after_rules = files.template(
        name="UFW after.rules with the DOCKER-USER guard",
        src=template("ufw/after.rules.j2"),
        dest="/etc/ufw/after.rules",
        user="root",
        group="root",
        mode=640,
        mesh_interface=mesh_interface,
        door_port=door_port,
        _sudo=True,
    )
    ufw.reload_if_active(name="UFW reload (after.rules changed)", _if=after_rules.did_change,
                         _sudo=True)
    ufw.enabled(name="UFW enabled", _sudo=True)
