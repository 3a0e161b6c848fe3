"""Inventory for the real VPS: a commented example with the same data model as staging.

Copy the shape, fill in your values, and keep secrets out: the Tailscale auth key is read
from the environment variable named by ``authkey_env`` at deploy time, never written here.
Validated by ``roles/settings.py`` on import, so a typo fails before any connection:

    export TAILSCALE_AUTHKEY=tskey-auth-…
    pyinfra inventory/production.py deploys/full.py
"""

from pathlib import Path

from roles.settings import inventory_hosts

production = inventory_hosts(
    [
        (
            "vps",
            {
                # First login goes to the public address; after the SSH cutover, set
                # ssh_hostname to the host's Tailscale IP (shown by the mesh step).
                "ssh_hostname": "203.0.113.10",
                "ssh_user": "deploy",
                "ssh_key": str(Path("~/.ssh/id_ed25519").expanduser()),
                "public_address": "203.0.113.10",
                "deploy_user": "deploy",
                "operator_public_keys": [
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleEx"
                    " operator@laptop",
                ],
                "door_port": 443,
                "mesh": {
                    "provider": "tailscale",
                    "tailscale": {"authkey_env": "TAILSCALE_AUTHKEY", "hostname": "agent-vos"},
                },
            },
        )
    ]
)
