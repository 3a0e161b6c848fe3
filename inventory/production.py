"""Inventory for the real VPS: a commented example with the same data model as staging.

Copy the shape, fill in your values, and keep secrets out: the Tailscale auth key is read
from the environment variable named by ``authkey_env`` at deploy time, never written here.
Validated by ``roles/settings.py`` on import, so a typo fails before any connection:

    export TAILSCALE_AUTHKEY=tskey-auth-…
    pyinfra inventory/production.py deploys/full.py
"""

from pathlib import Path

from roles.settings import inventory_hosts

_REPO = Path(__file__).resolve().parent.parent

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
                # The app stack (roles/stack.py). Secrets are NAMES of variables exported on
                # the operator's machine at deploy time, never values.
                "stack": {
                    # your tenant's workforce as code (copy examples/agents.yaml and edit
                    # it): applied on every deploy, and the worker works with it
                    "agents_file": str(_REPO / "examples" / "agents.yaml"),
                    "agents_tenant": "main",
                    "worker_replicas": 1,
                    # the provider keys the agents file names, for the worker only
                    "worker_env": {
                        "ANTHROPIC_API_KEY": "ANTHROPIC_API_KEY",
                        "OPENAI_API_KEY": "OPENAI_API_KEY",
                        "OPENROUTER_API_KEY": "OPENROUTER_API_KEY",
                    },
                    # DATABASE_URL (vos_app) and the door's secrets for the API and the door;
                    # the owner URL and vos_app's password for the migrations
                    "env": {"DATABASE_URL": "VOS_DATABASE_URL",
                            "VOS_DOOR_SECRETS": "VOS_DOOR_SECRETS"},
                    "migrate_env": {"DATABASE_URL": "VOS_OWNER_DATABASE_URL",
                                    "VOS_APP_PASSWORD": "VOS_APP_PASSWORD"},
                    # the door's TLS: "operator" with tls_cert_file/tls_key_file for a
                    # certificate of its public name; self-signed until you have one
                    "tls": "self-signed",
                },
            },
        )
    ]
)
