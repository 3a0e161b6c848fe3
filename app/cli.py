"""`vos db|api|door|tenant …`: the Agent VOS app's commands (thin; the work is in app/).

Example:
    DATABASE_URL=postgresql://owner@db/vos VOS_APP_PASSWORD=… \\
        vos db migrate --app-password-env VOS_APP_PASSWORD
    vos tenant create acme --name "Acme Ltd"
    vos door bind edge --tenant acme
    DATABASE_URL=postgresql://vos_app:…@db/vos vos api serve --host 100.64.0.1 --port 8080
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from app.clihelpers import load_settings, owner_dsn_or_exit

db_app = typer.Typer(help="The app's Postgres schema.", no_args_is_help=True)
api_app = typer.Typer(help="The private dispatch API (bind it to the mesh).", no_args_is_help=True)
door_app = typer.Typer(help="The public callback door.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants (owner operations).", no_args_is_help=True)

Host = Annotated[str, typer.Option(help="address to listen on")]
Port = Annotated[int, typer.Option(help="TCP port to listen on", min=1, max=65535)]


@db_app.command("migrate")
def db_migrate(
    app_password_env: Annotated[str | None, typer.Option(
        help="name of an environment variable holding the vos_app password to set "
             "(hashed with SCRAM before it leaves this process)")] = None,
    clear_failed: Annotated[bool, typer.Option(
        help="forget a recorded failed migration after fixing it")] = False,
) -> None:
    """Apply pending SQL migrations as the owner (DATABASE_URL), in one transaction."""
    import psycopg

    from app.db import MigrationError, migrate

    password = None
    if app_password_env:
        password = os.environ.get(app_password_env)
        if not password:
            typer.echo(f"error: environment variable {app_password_env} is empty or unset",
                       err=True)
            raise typer.Exit(2)
    try:
        migrate(owner_dsn_or_exit(), app_password=password, clear_failed=clear_failed)
    except MigrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(f"error: cannot reach Postgres ({first}); check DATABASE_URL and that the "
                   "server is up", err=True)
        raise typer.Exit(1) from None


@api_app.command("serve")
def api_serve(host: Host = "127.0.0.1", port: Port = 8080) -> None:
    """Serve the dispatch API (DATABASE_URL as vos_app; embedded Postgres if unset, locally)."""
    from app.main import serve_api

    serve_api(load_settings(), host, port)


@door_app.command("serve")
def door_serve(
    host: Host = "0.0.0.0", port: Port = 8443,
    tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate (chain) file: serve HTTPS; needs --tls-key")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key file")] = None,
) -> None:
    """Serve the door: POST /callbacks/{source} only, secrets from VOS_DOOR_SECRETS.

    Example: vos door serve --port 8443 --tls-cert /run/tls/door.crt --tls-key /run/tls/door.key
    """
    from app.main import serve_door

    if bool(tls_cert) != bool(tls_key):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    serve_door(load_settings(), host, port, (str(tls_cert), str(tls_key)) if tls_cert else None)


@door_app.command("bind")
def door_bind(
    source: Annotated[str, typer.Argument(help="source name, as in VOS_DOOR_SECRETS")],
    tenant: Annotated[str, typer.Option(help="slug of the tenant this source feeds")],
) -> None:
    """Route a door source's callbacks to a tenant (owner operation, DATABASE_URL)."""
    import psycopg

    try:
        row = _bind(psycopg, source, tenant)
    except psycopg.IntegrityError as exc:
        typer.echo(f"error: {exc.diag.message_primary} (source names: lowercase letters, "
                   "digits, - and _)", err=True)
        raise typer.Exit(1) from None
    if row is None:
        typer.echo(f"error: no tenant with slug {tenant!r}; create it with "
                   "`vos tenant create`", err=True)
        raise typer.Exit(1)
    typer.echo(f"door source {source} -> tenant {tenant} ({row[0]})")


def _bind(psycopg, source: str, tenant: str):
    with psycopg.connect(owner_dsn_or_exit()) as conn:
        return conn.execute(
            """INSERT INTO door_sources (source, tenant_id)
               SELECT %s, id FROM tenants WHERE slug = %s
               ON CONFLICT (source) DO UPDATE SET tenant_id = EXCLUDED.tenant_id
               RETURNING tenant_id""",
            [source, tenant],
        ).fetchone()


@tenant_app.command("create")
def tenant_create(
    slug: Annotated[str, typer.Argument(help="lowercase letters, digits and dashes")],
    name: Annotated[str | None, typer.Option(help="display name (default: the slug)")] = None,
) -> None:
    """Create a tenant (owner operation, DATABASE_URL); prints its id."""
    import psycopg

    try:
        with psycopg.connect(owner_dsn_or_exit()) as conn:
            (tenant_id,) = conn.execute(
                "INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
                [slug, name or slug],
            ).fetchone()
    except psycopg.IntegrityError as exc:
        typer.echo(f"error: {exc.diag.message_primary}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(tenant_id))


worker_app = typer.Typer(help="Dispatch workers (claim tasks with SKIP LOCKED).",
                         no_args_is_help=True)


@worker_app.command("run")
def worker_run(
    tenant: Annotated[list[str], typer.Option(help="tenant UUID to serve (repeatable)")],
    handler: Annotated[str, typer.Option(
        help="package.module:function that works one task dict and returns a result dict")],
    worker_id: Annotated[str | None, typer.Option(
        "--id", help="this worker's name in claims and events (default: host/pid)")] = None,
    drain: Annotated[bool, typer.Option(help="stop when every queue is empty")] = False,
    idle_seconds: Annotated[float, typer.Option(help="poll interval when idle", min=0.05)] = 1.0,
) -> None:
    """Claim Active tasks of the given tenants and run HANDLER on each (DATABASE_URL as vos_app)."""
    import socket
    import uuid

    from app.main import run_worker

    try:
        tenant_ids = [uuid.UUID(t) for t in tenant]
    except ValueError:
        typer.echo("error: --tenant takes tenant UUIDs (`vos tenant create` prints them)", err=True)
        raise typer.Exit(2) from None
    name = worker_id or f"{socket.gethostname()}/{os.getpid()}"
    worked = run_worker(load_settings(), tenant_ids, handler, name, drain, idle_seconds)
    if drain:
        typer.echo(f"worked {worked} task(s)")


def register(cli: typer.Typer) -> None:
    """Attach the app's own command groups (db, api, door, tenant, worker) to `vos`.

    The agents', documents' and Command Center's commands register themselves
    (app/agents/cli.py, app/agents/docs_cli.py, app/ui/cli.py); cli.py loads each module
    only when its command is invoked, so `vos door serve` imports none of the others.
    """
    cli.add_typer(db_app, name="db")
    cli.add_typer(api_app, name="api")
    cli.add_typer(door_app, name="door")
    cli.add_typer(tenant_app, name="tenant")
    cli.add_typer(worker_app, name="worker")
