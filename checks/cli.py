"""`vos check`: run every invariant check in checks/ against a host; non-zero when one breaks.

Example:
    vos check --target staging          # the local staging VM, over the mesh
    vos check --target production       # inventory/production.py's host, over its mesh IP
    vos check --target 100.64.0.2 --user deploy --door-port 443
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Annotated

import typer

from checks.gate import REPO_ROOT, Target, run_checks


def _staging_target() -> tuple[Target, int, str, str | None]:
    from staging.state import default_state_dir, load_state

    recorded = load_state(default_state_dir())
    if recorded is None:
        raise typer.BadParameter(f"no staging VM recorded in {default_state_dir()}: run "
                                 "`vos staging up` first", param_hint="--target")
    target = Target(url="ssh://staging-mesh", ssh_config=recorded.ssh_config)
    return target, recorded.door_port, recorded.deploy_user, recorded.layout.vm_mesh


def _inventory_target(path: Path) -> tuple[Target, int, str, str | None]:
    hosts = [value for value in runpy.run_path(str(path)).values()
             if isinstance(value, list) and value and isinstance(value[0], tuple)]
    if not hosts:
        raise typer.BadParameter(f"{path} defines no hosts", param_hint="--target")
    _name, data = hosts[0][0]
    mesh = data.get("mesh", {})
    block = mesh.get(mesh.get("provider", ""), {}) or {}
    mesh_ip = block.get("address") or block.get("expected_address")
    address = mesh_ip or data["ssh_hostname"]
    target = Target(url=f"ssh://{data['ssh_user']}@{address}", ssh_key=data.get("ssh_key"),
                    known_hosts_file=data.get("ssh_known_hosts_file"))
    return target, data.get("door_port", 443), data.get("deploy_user", "deploy"), mesh_ip


def check(
    target: Annotated[str, typer.Option("--target", "-t",
                                        help="staging, production, or a host/IP (SSH)")],
    user: Annotated[str, typer.Option(help="SSH/deploy user for a HOST target")] = "deploy",
    door_port: Annotated[int, typer.Option(help="the one public port (HOST target)")] = 443,
    mesh_ip: Annotated[str | None, typer.Option(
        help="the host's mesh IP (default: read on the host)")] = None,
    family: Annotated[list[str] | None, typer.Option(
        "--family", "-f", help="only this invariant family (repeatable): exposure, ssh, "
                               "firewall, fail2ban, sysctl, docker, accounts, base")] = None,
) -> None:
    """Run every check in checks/ against TARGET; exit 1 naming each broken invariant."""
    if target == "staging":
        resolved, port, deploy_user, known_mesh_ip = _staging_target()
    elif target == "production":
        resolved, port, deploy_user, known_mesh_ip = _inventory_target(
            REPO_ROOT / "inventory" / "production.py")
    else:
        resolved, port, deploy_user, known_mesh_ip = (
            Target(url=f"ssh://{user}@{target}"), door_port, user, None)
    typer.echo(f"==> [check] running checks/ against {resolved.url}")
    try:
        result = run_checks(resolved, port, deploy_user, mesh_ip or known_mesh_ip,
                            families=family or None)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--family") from None
    typer.echo(result.summary())
    raise typer.Exit(0 if result.ok else 1)


def register(cli: typer.Typer) -> None:
    """Add `vos check` to the top-level CLI.

    Example:
        register(cli)
    """
    cli.command("check")(check)
