"""`vos backup run|drill|list`: the operator's face of backups/.

Example:
    vos backup run --config /etc/vos-backup/config.json   # what cron runs on the host
    vos backup list --target backup@203.0.113.7:/srv/vos-backups --ssh-key ~/.ssh/vos-backup
    vos backup drill --target backup@203.0.113.7:/srv/vos-backups --gnupghome ~/.gnupg
    vos backup pg-client --major 17     # a cached pg_restore 17 for --pg-bin-dir (Debian 12)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from backups.drill import run_drill
from backups.host import DEFAULT_CONFIG, cmd_run, describe
from backups.pgclient import PgClientError, ensure_pg_client
from backups.pipeline import BackupConfig, BackupError
from backups.target import Target, TargetError

backup_app = typer.Typer(help="GPG-encrypted Postgres backups and the restore drill.",
                         no_args_is_help=True)

TARGET_HELP = "backup target: /abs/dir or user@host:/abs/dir"


def _progress(message: str) -> None:
    typer.echo(f"backup: {message}", err=True)


@backup_app.command("run")
def run(
    config: Annotated[Path, typer.Option(help="backup config JSON (the role writes it)")] = (
        DEFAULT_CONFIG),
    lock_wait: float = typer.Option(None, help="seconds to wait for a run in progress"),
) -> None:
    """Dump, encrypt, write atomically, manifest, retention, ship (one JSON line on stdout)."""
    try:
        loaded = BackupConfig.load(config)
    except BackupError as error:
        raise typer.BadParameter(str(error), param_hint="--config") from None
    if lock_wait is not None:
        loaded = dataclasses.replace(loaded, lock_wait_seconds=lock_wait)
    raise typer.Exit(cmd_run(loaded))


@backup_app.command("list")
def list_backups(
    target: str = typer.Option(..., help=TARGET_HELP),
    ssh_key: str = typer.Option(None, help="SSH key for a remote target"),
    known_hosts: str = typer.Option(None, help="known_hosts file pinning the target"),
) -> None:
    """List the complete backups (dump + manifest) on a target, newest last."""
    try:
        lines = describe(Target(target, ssh_key, known_hosts).names())
    except TargetError as error:
        typer.echo(f"backup list: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo("\n".join(lines) or f"no complete backup in {target}")


@backup_app.command("drill")
def drill(
    target: str = typer.Option(..., help=TARGET_HELP),
    gnupghome: str = typer.Option("~/.gnupg", help="GNUPGHOME holding the operator's SECRET key"),
    scratch_dsn: str = typer.Option(
        None, envvar="VOS_DRILL_SCRATCH_DSN",
        help="Postgres DSN with CREATEDB for the scratch database (default: a throwaway "
             "local Postgres)"),
    max_age_hours: float = typer.Option(26.0, help="the newest backup must be younger"),
    ssh_key: str = typer.Option(None, help="SSH key for a remote target"),
    known_hosts: str = typer.Option(None, help="known_hosts file pinning the target"),
    keep: bool = typer.Option(
        False, help="keep the scratch database for inspection (on --scratch-dsn or the "
                    "throwaway local server; a --pg-bin-dir tree's cluster is always removed)"),
    pg_bin_dir: str = typer.Option(
        None, envvar="VOS_DRILL_PG_BIN_DIR",
        help="directory holding the pg_restore to use (default: the newest "
             "/usr/lib/postgresql/N/bin, else PATH); `vos backup pg-client` prints one"),
) -> None:
    """Fetch the newest backup, verify sha256, decrypt, restore, compare row counts; exit 1
    naming the cause on any mismatch."""
    report = run_drill(Target(target, ssh_key, known_hosts), gnupghome, scratch_dsn,
                       max_age_hours=max_age_hours, keep=keep, log=_progress,
                       pg_bin_dir=pg_bin_dir)
    typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


@backup_app.command("pg-client")
def pg_client(
    major: int = typer.Option(17, help="PostgreSQL major version of the client to provide"),
) -> None:
    """Build (once, cached under ~/.cache/vos/pg-client) a Debian trixie tree with
    PostgreSQL MAJOR (client and server) and print its bin dir, for `vos backup drill
    --pg-bin-dir`: its pg_restore, and its server for the scratch database. Needs root and
    debootstrap for the first build (~2-3 min)."""
    try:
        client = ensure_pg_client(major, log=_progress)
    except PgClientError as error:
        typer.echo(f"backup pg-client: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(client.bin_dir))
