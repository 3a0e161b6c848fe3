"""`vos staging …`: the local staging VM that stands in for the VPS.

Example:
    vos staging up --deploy       # boot (or reuse) the VM, then run deploys/full.py on it
    vos staging ssh 'sudo ss -tlnp'
    vos staging scan --json       # e.g. [443]
    vos staging scan --udp --ipv6 # UDP ports that replied on the public IPv6 address: none
    vos staging destroy
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from staging.lab import REPO_ROOT, Lab
from staging.proc import StagingError

staging_app = typer.Typer(
    help="The local staging VM that stands in for the VPS (state in .cache/staging/).",
    no_args_is_help=True,
)

STATE_DIR_OPTION = typer.Option(
    None, "--state-dir", help="Where the state lives (default: $VOS_STAGING_DIR or .cache/staging)."
)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@staging_app.command()
def up(
    deploy: bool = typer.Option(False, "--deploy", help="Then run deploys/full.py with pyinfra."),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Boot the staging VM with its public network and mesh (reuses a running one)."""
    lab = Lab(state_dir)
    try:
        state = lab.up()
        typer.echo(f"public address: {state.layout.vm_public}")
        typer.echo(f"mesh address:   {state.layout.vm_mesh}")
        typer.echo(f"ssh:            ssh -F {state.ssh_config} staging-public")
        if deploy:
            result = lab.run_pyinfra(REPO_ROOT / "deploys" / "full.py", live=True)
            if result.returncode != 0:
                raise StagingError(f"deploy failed (exit {result.returncode}); see above")
            state = lab.state
            state.deployed = True
            state.save()
            typer.echo(f"deployed; now reached at {lab.address()}")
    except StagingError as error:
        _fail(error)


@staging_app.command()
def down(state_dir: Path = STATE_DIR_OPTION) -> None:
    """Same as destroy: stop the VM and remove everything staging created (not the DB)."""
    destroy(state_dir, drop_db=False)


@staging_app.command()
def destroy(
    state_dir: Path = STATE_DIR_OPTION,
    drop_db: bool = typer.Option(
        False, "--drop-db", help="Also stop the managed Postgres and DELETE its data and the "
        "generated secrets (by default they survive, like a managed database would)."),
) -> None:
    """Stop every VM and process, delete the namespace, interfaces, sockets and overlays.

    The managed Postgres (the app's state) keeps running with its data unless --drop-db.
    """
    try:
        lab = Lab(state_dir)
        lab.destroy()
        if drop_db:
            lab.drop_managed_db()
    except StagingError as error:
        _fail(error)


@staging_app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Show whether the VM runs, its addresses and whether the mesh is up."""
    info = Lab(state_dir).status()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            typer.echo(f"{key:22} {value}")
    if not info["up"]:
        raise typer.Exit(3)


@staging_app.command()
def ssh(
    command: Annotated[
        list[str] | None, typer.Argument(help="Command to run; none opens a shell.")
    ] = None,
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """SSH to the VM as the deploy user (over the mesh once it is up)."""
    try:
        argv = Lab(state_dir).ssh_command()
    except StagingError as error:
        _fail(error)
    if command:
        argv = [*argv, " ".join(command)]
    else:
        argv = [*argv[:-1], "-o", "BatchMode=no", "-t", argv[-1]]
    raise typer.Exit(subprocess.call(argv))


def scan_summary(found: list[int] | dict[int, str], udp: bool, ipv6: bool) -> str:
    """One line for a scan's result: open TCP ports, or the UDP ports that replied.

    Example:
        >>> scan_summary({9999: "open"}, udp=True, ipv6=False)
        'UDP ports that replied: 9999 (open)'
        >>> scan_summary([], udp=False, ipv6=True)
        'open TCP ports (IPv6): none'
    """
    family = " (IPv6)" if ipv6 else ""
    if udp:
        listed = ", ".join(f"{port} ({state})" for port, state in found.items())
        return f"UDP ports that replied{family}: " + (listed or "none")
    return f"open TCP ports{family}: " + (", ".join(map(str, found)) or "none")


@staging_app.command()
def scan(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: a list of open TCP "
                                 "ports, e.g. [443]; with --udp an object, e.g. {}."),
    ports: str = typer.Option("1-65535", help="nmap port range."),
    udp: bool = typer.Option(False, "--udp", help="UDP instead of TCP: list the ports that "
                             "replied (open, or closed = ICMP port-unreachable), i.e. got "
                             "past the firewall; the hardened host has none."),
    ipv6: bool = typer.Option(False, "--ipv6", help="Scan the VM's public IPv6 address "
                              "(2001:db8:<slot>::10) instead of its IPv4 one."),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Scan the VM's public address from inside the public namespace; print open TCP ports
    (or, with --udp, the UDP ports that replied)."""
    family = 6 if ipv6 else 4
    try:
        lab = Lab(state_dir)
        found = (lab.scan_replies("udp", family=family, ports=ports) if udp
                 else lab.scan(ports=ports, family=family))
    except StagingError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(found))
    else:
        typer.echo(scan_summary(found, udp=udp, ipv6=ipv6))


@staging_app.command()
def lynis(
    default_profile: bool = typer.Option(
        False, "--default-profile", help="Lynis's default profile alone (without "
        "staging/lynis.prf's skips of slow tests that award no points; ~10 min longer)."),
    limit: int = typer.Option(40, help="How many point-losing tests to list."),
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Audit the VM with Lynis (Debian 13's package, run from a scratch dir as root; ~30 min
    under TCG); print the hardening index, the warnings and the tests that withheld points."""
    try:
        audit = Lab(state_dir).lynis(profile=not default_profile)
    except StagingError as error:
        _fail(error)
    typer.echo(audit.summary(limit=limit))
