"""Inventory for the local staging VM, read from what `vos staging up` wrote.

The state dir is ``$VOS_STAGING_DIR`` or ``.cache/staging``. The host is reached over the
mesh once it answers there (after the first deploy, and always after the hardening closes
public SSH), else over its public address, like a first login on a fresh VPS.

Example:
    vos staging up
    pyinfra inventory/staging.py deploys/full.py
    VOS_STAGING_DIR=/tmp/other pyinfra inventory/staging.py deploys/full.py
"""

import json as _json
import os as _os
from pathlib import Path as _Path

from roles.settings import inventory_hosts as _inventory_hosts
from staging.lab import Lab as _Lab
from staging.managed_db import ManagedDb as _ManagedDb
from staging.providers import PROVIDER_KEY_ENV as _PROVIDER_KEY_ENV
from staging.providers import TENANT as _PROVIDERS_TENANT
from staging.providers import write_agents_file as _write_agents_file
from staging.state import default_state_dir as _default_state_dir
from staging.state import load_state as _load_state


def _stack_overrides() -> dict:
    """Test knob: ``VOS_STACK_OVERRIDES`` = JSON merged into the `stack` block (e.g. a planted
    compose template for the gate's mutation tests). Validated like any inventory data."""
    return _json.loads(_os.environ.get("VOS_STACK_OVERRIDES") or "{}")


_state = _load_state(_default_state_dir())
if _state is None:
    raise SystemExit(
        f"no staging VM recorded in {_default_state_dir()}: run `vos staging up` first"
    )
_layout = _state.layout

# The stack's secrets (database URLs, door secret, the fake providers' key) come from the
# lab's 0600 secrets file, so `pyinfra inventory/staging.py deploys/full.py` works as
# written after `vos staging up`; values already exported win.
for _name, _value in _ManagedDb(_default_state_dir(), _layout.operator_mesh).deploy_env().items():
    _os.environ.setdefault(_name, _value)

staging = _inventory_hosts(
    [
        (
            "staging",
            {
                "ssh_hostname": _Lab(_default_state_dir()).address(),
                "ssh_user": _state.deploy_user,
                "ssh_key": _state.ssh_private_key,
                "ssh_known_hosts_file": _state.known_hosts,
                "ssh_strict_host_key_checking": "yes",
                "public_address": _layout.vm_public,
                "deploy_user": _state.deploy_user,
                "operator_public_keys": [_Path(_state.ssh_public_key).read_text().strip()],
                "door_port": _state.door_port,
                # Staging skips the full `apt upgrade` (minutes under TCG); production keeps it.
                "apt_upgrade": False,
                # The app stack (roles/stack.py): image built here from vos-base:trixie
                # (`debootstrap | docker import`, nothing can be pulled), shipped with docker
                # save/load, a self-signed door certificate. The secrets it names come from
                # the environment the lab exports (staging/managed_db.py), never the repo.
                "stack": {
                    "base_image": "vos-base:trixie",
                    "ship": "save-load",
                    "tls": "self-signed",
                    "health_timeout_seconds": 300,  # first start under TCG is slow
                    # The workforce: the seed's org chart over a desktop Ollama on the
                    # operator's mesh address and cloud providers through the VM's egress
                    # (fakes: staging/providers.py); the key's NAME comes from the lab.
                    "agents_file": _write_agents_file(_layout, _default_state_dir()),
                    "agents_tenant": _PROVIDERS_TENANT,
                    "worker_env": {"ANTHROPIC_API_KEY": _PROVIDER_KEY_ENV,
                                   "OPENAI_API_KEY": _PROVIDER_KEY_ENV},
                    **_stack_overrides(),
                },
                "mesh": {
                    "provider": "wireguard",
                    "wireguard": {
                        "address": _layout.vm_mesh,
                        "prefix_len": _layout.mesh_prefix_len,
                        "private_key_file": _state.mesh_vm_private_key,
                        "listen_port": _layout.vm_mesh_port,
                        "peer_public_key": _state.mesh_operator_public_key,
                        "peer_address": _layout.operator_mesh,
                        "peer_endpoint": f"{_layout.operator_public}:{_layout.operator_mesh_port}",
                    },
                },
            },
        )
    ]
)
