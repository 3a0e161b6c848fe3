"""testinfra wiring for `checks/`: the host-side judgement of a converged host.

Run against any host testinfra can reach, e.g. the staging VM over the mesh:

    pytest checks/ --hosts=ssh://staging-mesh --ssh-config=.cache/staging/ssh_config
    pytest checks/ --hosts=ssh://deploy@100.64.0.2 --deploy-user=deploy --door-port=443

Checks import nothing from roles/: they judge the host as an outsider would, so a bug in a
role cannot hide itself in its own check. What they need to know about the intended host
(deploy user, door port, mesh interface) comes from the options below; testinfra's `host`
fixture comes from the pytest-testinfra plugin (`--hosts`, `--ssh-config`, `--sudo`).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agent-vos checks")
    group.addoption("--deploy-user", default="deploy", help="the deploy user (default: deploy)")
    group.addoption("--door-port", type=int, default=443, help="the one public port (443)")
    group.addoption("--mesh-interface", default="tailscale0", help="mesh interface name")


@pytest.fixture(scope="session")
def deploy_user(request: pytest.FixtureRequest) -> str:
    """Name of the operator's deploy user on the host."""
    return request.config.getoption("--deploy-user")


@pytest.fixture(scope="session")
def door_port(request: pytest.FixtureRequest) -> int:
    """The single port the host may expose publicly."""
    return request.config.getoption("--door-port")


@pytest.fixture(scope="session")
def mesh_interface(request: pytest.FixtureRequest) -> str:
    """The mesh interface (tailscale0 in production and staging alike)."""
    return request.config.getoption("--mesh-interface")
