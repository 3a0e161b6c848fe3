"""pytest plugin for the invariant checks: what to expect of the host, and a JSON report.

The basics (`--deploy-user`, `--door-port`, `--mesh-interface`) come from checks/conftest.py.
The test modules import the fixtures below, so `pytest checks/` works alone; loading this
module as a plugin (`-p checks.plugin`, as the gate and `vos check` do) adds the options:
  --vos-mesh-ip 100.64.0.2      default: read from the mesh interface on the host
  --vos-extra-users ops,alice   more users allowed to log in besides the deploy user
  --vos-udp-allowed 41641:mesh  comma-separated PORT:REASON for all-interface UDP sockets
  --vos-require-backups         a host without the backups role fails the backup checks
                                (default: they skip; or VOS_CHECK_REQUIRE_BACKUPS=1)
  --vos-backup-config PATH      the host's backup config (default /etc/vos-backup/config.json;
                                or VOS_CHECK_BACKUP_CONFIG)
  --vos-report PATH             write {"failures": [...], "passed": N, "skipped": [...]} as JSON

Example:
    pytest -p checks.plugin checks --hosts=ssh://staging-mesh --ssh-config=… --door-port 443
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEFAULT_UDP_ALLOWED = "41641:mesh (Tailscale/WireGuard port),68:DHCP client"


@dataclass
class Expectations:
    """What the checks hold the host to."""

    door_port: int
    mesh_interface: str
    allow_users: list[str]
    udp_allowed: dict[int, str]
    mesh_ip: str | None = None
    failures: list[dict] = field(default_factory=list)


def parse_udp_allowed(text: str) -> dict[int, str]:
    """"41641:mesh,68:dhcp" -> {41641: "mesh", 68: "dhcp"}.

    Example:
        >>> parse_udp_allowed("41641:mesh,68:DHCP client")
        {41641: 'mesh', 68: 'DHCP client'}
    """
    allowed = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        port, _, reason = item.partition(":")
        allowed[int(port)] = reason or "allowed"
    return allowed


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vos", "Agent VOS invariant checks")
    group.addoption("--vos-mesh-ip", default=None, help="the host's mesh IPv4")
    group.addoption("--vos-extra-users", default="", help="more AllowUsers, comma-separated")
    group.addoption("--vos-udp-allowed", default=DEFAULT_UDP_ALLOWED,
                    help="PORT:REASON,… UDP ports allowed on all interfaces")
    # default None, not False: unset, checks/test_backups.py falls back to the environment
    group.addoption("--vos-require-backups", action="store_true", default=None,
                    help="fail (not skip) the backup checks on a host without the backups role")
    group.addoption("--vos-backup-config", default=None,
                    help="the host's backup config path (default /etc/vos-backup/config.json)")
    group.addoption("--vos-report", default=None, help="write failures as JSON here")


@pytest.fixture(scope="session")
def expect(request: pytest.FixtureRequest, deploy_user: str, door_port: int,
           mesh_interface: str) -> Expectations:
    """The expectations for this run (see module doc)."""
    option = request.config.getoption
    extra = [u.strip() for u in option("--vos-extra-users", default="").split(",") if u.strip()]
    return Expectations(
        door_port=door_port,
        mesh_interface=mesh_interface,
        allow_users=[deploy_user, *extra],
        udp_allowed=parse_udp_allowed(option("--vos-udp-allowed", default=DEFAULT_UDP_ALLOWED)),
        mesh_ip=option("--vos-mesh-ip", default=None),
    )


@pytest.fixture(scope="module")
def mesh_ip(host, expect: Expectations) -> str:
    """The host's mesh IPv4 (given, or read from the mesh interface)."""
    if expect.mesh_ip:
        return expect.mesh_ip
    out = host.run(f"ip -4 -o addr show dev {expect.mesh_interface}")
    fields = out.stdout.split()
    if out.rc != 0 or "inet" not in fields:
        pytest.fail(f"MESH: interface {expect.mesh_interface} has no IPv4 address on the host — "
                    "run the deploy (mesh step); every exposure check depends on it")
    return fields[fields.index("inet") + 1].split("/")[0]


def as_root(host):
    """testinfra's sudo, unless the checks already run as root (a container, `local://` as
    root): the gate connects as the deploy user, the integration tests as root.

    Example:
        with as_root(host):
            shadow = host.file("/etc/shadow").content_string
    """
    key = id(host)
    if key not in _connects_as_root:  # asked once per host: each remote command costs
        _connects_as_root[key] = host.check_output("id -u").strip() == "0"
    return nullcontext() if _connects_as_root[key] else host.sudo()


_connects_as_root: dict[int, bool] = {}


_results: dict[str, list] = {"failures": [], "passed": [], "skipped": []}


def skip_reason(longrepr: object) -> str:
    """The reason a skipped check gave (pytest keeps it as (path, line, "Skipped: why")).

    Example:
        >>> skip_reason(("checks/test_backups.py", 70, "Skipped: BACKUPS §15: no config"))
        'BACKUPS §15: no config'
    """
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _results["passed"].append(report.nodeid)
    elif report.skipped:
        _results["skipped"].append({"test": report.nodeid,
                                    "reason": skip_reason(report.longrepr)})
    elif report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash else str(report.longrepr)
        _results["failures"].append({"test": report.nodeid, "message": message})


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--vos-report")
    if path:
        Path(path).write_text(json.dumps({"failures": _results["failures"],
                                          "passed": len(_results["passed"]),
                                          "skipped": _results["skipped"]}, indent=2))
