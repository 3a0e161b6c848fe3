"""The app stack alone, on a host the hardening deploy has converged (mesh + Docker up).

    vos image build --base vos-base:trixie            # operator side, prints agent-vos:<sha>
    VOS_DATABASE_URL=… VOS_DOOR_SECRETS=… VOS_OWNER_DATABASE_URL=… VOS_APP_PASSWORD=… \\
      pyinfra inventory/staging.py deploys/stack.py

The inventory needs a `stack` block (roles/settings.py StackSettings). The image is the one
built from the current git revision (`vos image build`), shipped with docker save/load
unless `stack.ship` is `registry`. NOT YET PROVEN on the staging VM.
"""

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from roles import mesh, stack
from roles.settings import settings_from_host_data

settings = settings_from_host_data(host.name, host.data.dict())
if settings.stack is None:
    raise DeployError(f"{host.name}: the inventory has no `stack` block (see roles/settings.py "
                      "StackSettings). Nothing was changed.")
mesh_ip = mesh.resolved_mesh_ip(settings)
if mesh_ip is None:
    raise DeployError(f"{host.name}: {settings.mesh.interface} has no address and the "
                      "inventory names none; run deploys/full.py first.")
stack.deploy_stack(settings.stack, mesh_ip=mesh_ip, door_port=settings.door_port,
                   public_address=str(settings.public_address))
