"""`vos check`: run every invariant check in checks/ against a host; non-zero when one breaks.

Example:
    vos check --target staging          # the local staging VM, over the mesh
    vos check --target production       # inventory/production.py's host, over its mesh IP
    vos check --target 100.64.0.2 --user deploy --door-port 443
"""

from __future__ import annotations

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


def _inventory_targets(path: Path) -> list[tuple[Target, int, str, str | None]]:
    """Every host of the inventory, from the typed model (roles/settings.py): reached over
    its mesh IP when the inventory knows it, else its SSH address."""
    from roles.settings import InventoryError, hosts_of_inventory

    try:
        hosts = hosts_of_inventory(path)
    except InventoryError as error:
        raise typer.BadParameter(str(error), param_hint="--target") from None
    if not hosts:
        raise typer.BadParameter(f"{path} defines no hosts", param_hint="--target")
    return [(Target(url=f"ssh://{settings.ssh_user}@{settings.mesh_ip or settings.ssh_hostname}",
                    ssh_key=str(settings.ssh_key) if settings.ssh_key else None,
                    known_hosts_file=(str(settings.ssh_known_hosts_file)
                                      if settings.ssh_known_hosts_file else None)),
             settings.door_port, settings.deploy_user, settings.mesh_ip)
            for _name, settings in hosts]


def check(
    target: Annotated[str, typer.Option("--target", "-t",
                                        help="staging, production, or a host/IP (SSH)")],
    user: Annotated[str, typer.Option(help="SSH/deploy user for a HOST target")] = "deploy",
    door_port: Annotated[int, typer.Option(help="the one public port (HOST target)")] = 443,
    mesh_ip: Annotated[str | None, typer.Option(
        help="the host's mesh IP (default: read on the host)")] = None,
    family: Annotated[list[str] | None, typer.Option(
        "--family", "-f", help="only this invariant family (repeatable): exposure, ssh, "
                               "firewall, fail2ban, sysctl, docker, accounts, files, base")] = None,
) -> None:
    """Run every check in checks/ against TARGET; exit 1 naming each broken invariant."""
    if target == "staging":
        targets = [_staging_target()]
    elif target == "production":
        targets = _inventory_targets(REPO_ROOT / "inventory" / "production.py")
    else:
        targets = [(Target(url=f"ssh://{user}@{target}"), door_port, user, None)]
    ok = True
    for resolved, port, deploy_user, known_mesh_ip in targets:
        typer.echo(f"==> [check] running checks/ against {resolved.url}")
        try:
            result = run_checks(resolved, port, deploy_user, mesh_ip or known_mesh_ip,
                                families=family or None)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--family") from None
        typer.echo(result.summary())
        ok = ok and result.ok
    raise typer.Exit(0 if ok else 1)


def register(cli: typer.Typer) -> None:
    """Add `vos check` to the top-level CLI.

    Example:
        register(cli)
    """
    cli.command("check")(check)
