"""Only the mesh step of deploys/full.py: join the host to the private network.

    pyinfra inventory/staging.py deploys/mesh.py

Useful on its own (re-key, move the host to another tailnet) and for iterating on the
staging machinery without the whole converge:
    VOS_STAGING_CONVERGE_DEPLOY=deploys/mesh.py pytest tests/staging/test_b_converged.py
"""

from pyinfra import host

from roles import mesh
from roles.settings import settings_from_host_data

settings = settings_from_host_data(host.name, host.data.dict())
mesh.configure(settings.mesh)
