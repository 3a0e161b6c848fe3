"""`vos image …`, `vos releases`, `vos rollback`: the app image and its releases.

Example:
    vos image base                                  # debootstrap | docker import (no pulls)
    vos image build --base vos-base:trixie          # -> agent-vos:<git sha>
    vos image save agent-vos:3f2a1c0 -o /tmp/agent-vos.tar
    vos image load /tmp/agent-vos.tar               # on the host (or: ssh host docker load)
    vos releases --ssh staging-mesh --ssh-config .cache/staging/ssh_config
    vos rollback [RELEASE_ID] --ssh staging-mesh --ssh-config .cache/staging/ssh_config
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stack import images, releases

image_app = typer.Typer(help="Build, save and load the app image (no registry needed).",
                        no_args_is_help=True)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@image_app.command("base")
def image_base(
    tag: Annotated[str, typer.Option(help="tag of the local base image")] = images.LOCAL_BASE,
    suite: Annotated[str, typer.Option(help="Debian suite to debootstrap")] = "trixie",
) -> None:
    """Make a local base image with python3 by `debootstrap | docker import` (needs root)."""
    try:
        typer.echo(images.ensure_local_base(tag=tag, suite=suite))
    except images.ImageError as error:
        _fail(error)


@image_app.command("build")
def image_build(
    base: Annotated[str, typer.Option(help="base image: python:3.13-slim, or a local base "
                                           "from `vos image base`")] = "python:3.13-slim",
    repository: Annotated[str, typer.Option(help="image repository name")] = "agent-vos",
    tag: Annotated[str | None, typer.Option(help="tag (default: the git revision)")] = None,
) -> None:
    """Build the app image here, with no network inside the build; prints its reference."""
    try:
        typer.echo(images.build_image(base_image=base, repository=repository, tag=tag))
    except images.ImageError as error:
        _fail(error)


@image_app.command("save")
def image_save(
    reference: Annotated[str, typer.Argument(help="image to save, e.g. agent-vos:3f2a1c0")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="tar file to write; a .tar.zst name compresses it (docker "
                               "load reads it as it is)")],
) -> None:
    """`docker save` the image to a tar file to copy to the host."""
    try:
        typer.echo(images.save_image(reference, output))
    except images.ImageError as error:
        _fail(error)


@image_app.command("load")
def image_load(
    archive: Annotated[Path, typer.Argument(help="tar file written by `vos image save`",
                                            exists=True, dir_okay=False)],
) -> None:
    """`docker load` a saved image into this machine's engine; prints what was loaded."""
    try:
        typer.echo(images.load_image(archive))
    except images.ImageError as error:
        _fail(error)


SshHost = Annotated[str | None, typer.Option(
    "--ssh", help="SSH host (alias) of the server, e.g. staging-mesh; default: this machine")]
SshConfig = Annotated[str | None, typer.Option(
    help="ssh_config file, e.g. .cache/staging/ssh_config")]


def _runner(ssh: str | None, ssh_config: str | None) -> releases.Runner:
    return releases.ssh_runner(ssh, ssh_config) if ssh else releases.local_runner


def releases_command(ssh: SshHost = None, ssh_config: SshConfig = None) -> None:
    """List the releases kept on the host, newest first; `*` marks the running one.

    Example: vos releases --ssh staging-mesh --ssh-config .cache/staging/ssh_config
    """
    try:
        kept = releases.list_releases(_runner(ssh, ssh_config))
    except releases.ReleaseError as error:
        _fail(error)
    if not kept:
        typer.echo("no release on the host yet: the stack step of deploys/full.py makes one")
    for release in kept:
        marker = "*" if release.current else " "
        typer.echo(f"{marker} {release.id}  {release.image}  {release.created}")


def rollback_command(
    release_id: Annotated[str | None, typer.Argument(
        help="release to go back to (default: the one before the current)")] = None,
    ssh: SshHost = None, ssh_config: SshConfig = None,
) -> None:
    """Go back to a kept release: `docker compose up -d` of its file, then mark it current."""
    try:
        target = releases.rollback(_runner(ssh, ssh_config), release_id)
    except releases.ReleaseError as error:
        _fail(error)
    typer.echo(f"rolled back to {target.id} ({target.image})")


def register(cli: typer.Typer) -> None:
    """Add `vos image`, `vos releases` and `vos rollback` to the main CLI (cli.py)."""
    cli.add_typer(image_app, name="image")
    cli.command("releases")(releases_command)
    cli.command("rollback")(rollback_command)
