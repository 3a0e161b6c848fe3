"""The full converge, in runbook order. Each step is one call into roles/.

    pyinfra inventory/staging.py deploys/full.py      # the local staging VM
    pyinfra inventory/production.py deploys/full.py   # the VPS

Step 0 (preflight) happened already when the inventory was loaded: roles/settings.py
validated every host's data before pyinfra connected; it is re-read here, typed, so the
roles get values instead of dictionary lookups.
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import files

from roles import mesh
from roles.settings import settings_from_host_data

settings = settings_from_host_data(host.name, host.data.dict())

# 1. Mesh: the host joins the private network as tailscale0 (its IP is read back).
mesh.configure(settings.mesh)

# 2. Something small that proves the pipeline end to end (the hardening steps follow here).
files.put(
    name="Mark the host as managed by agent-vos",
    src=StringIO(
        "This host is managed by agent-vos (pyinfra deploys/full.py).\n"
        f"Door port: {settings.door_port}. Deploy user: {settings.deploy_user}.\n"
    ),
    dest="/etc/agent-vos-managed",
    user="root",
    group="root",
    mode="644",
    _sudo=True,
)
