"""`vos dev` and `vos operator …`: the Command Center's commands (thin; work is in app/ui).

Example:
    vos dev                                   # whole app on 127.0.0.1:8080, prints the URL
    DATABASE_URL=postgresql://owner@db/vos vos operator create acme --name ada
"""

from __future__ import annotations

import ipaddress
import signal
from typing import Annotated

import typer

from app.clihelpers import load_settings, owner_dsn_or_exit

operator_app = typer.Typer(help="Command Center operator tokens (owner operations).",
                           no_args_is_help=True)
LOOPBACK_NAMES = {"localhost"}


def _owner_conn():
    import psycopg

    return psycopg.connect(owner_dsn_or_exit(), autocommit=True)


def _tenant_id(conn, slug: str):
    row = conn.execute("SELECT id FROM tenants WHERE slug = %s", [slug]).fetchone()
    if row is None:
        typer.echo(f"error: no tenant with slug {slug!r}; create it with `vos tenant create`",
                   err=True)
        raise typer.Exit(1)
    return row[0]


@operator_app.command("create")
def operator_create(
    tenant: Annotated[str, typer.Argument(help="slug of the operator's tenant")],
    name: Annotated[str, typer.Option(help="who holds the token (letters, digits, . _ @ -)")],
) -> None:
    """Create an operator token for TENANT and print it once (only its hash is stored)."""
    import psycopg

    from app.ui.auth import create_operator

    with _owner_conn() as conn:
        tenant_id = _tenant_id(conn, tenant)
        try:
            token = create_operator(conn, tenant_id, name)
        except psycopg.errors.CheckViolation:
            typer.echo("error: --name takes 1-100 letters, digits, spaces and . _ @ -", err=True)
            raise typer.Exit(2) from None
    typer.echo(token)
    typer.echo("(shown once; paste it at /ui/login on the mesh address)", err=True)


@operator_app.command("revoke")
def operator_revoke(
    tenant: Annotated[str, typer.Argument(help="slug of the operator's tenant")],
    name: Annotated[str, typer.Option(help="the token holder's name")],
) -> None:
    """Revoke every live token of NAME in TENANT; their sessions end at the next request."""
    with _owner_conn() as conn:
        tenant_id = _tenant_id(conn, tenant)
        count = conn.execute(
            "UPDATE operator_tokens SET revoked_at = now() WHERE tenant_id = %s AND name = %s "
            "AND revoked_at IS NULL", [tenant_id, name]).rowcount
    if not count:
        typer.echo(f"error: {name!r} has no live token in {tenant}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {count} token(s) of {name} in {tenant}")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev(
    host: Annotated[str, typer.Option(help="loopback address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8080,
    tenant: Annotated[str, typer.Option(help="slug of the demo tenant")] = "demo",
    app_password_env: Annotated[str, typer.Option(
        help="with DATABASE_URL: variable holding the vos_app password to set")] =
        "VOS_APP_PASSWORD",
) -> None:
    """Run the whole app on loopback: Postgres (embedded unless DATABASE_URL names an owner
    role), the fake providers, an agent worker, demo data; prints the Command Center URL."""
    from app.ui.devserver import DevStack

    if not _is_loopback(host):
        typer.echo(f"error: vos dev serves loopback only (got {host}); the Command Center "
                   "is reached over the mesh in production (vos api serve --host MESH_IP)",
                   err=True)
        raise typer.Exit(2)
    stack = DevStack(load_settings(), tenant, app_password_env, say=typer.echo)
    # SIGTERM (a service manager, `timeout`, `kill`) stops everything like Ctrl-C, also while
    # starting: the embedded Postgres must never outlive `vos dev`
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        stack.serve(host, port)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # each part's error says what it was; the CLI adds what to do
        typer.echo(f"error: vos dev could not start: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        stack.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def register(cli: typer.Typer) -> None:
    """Attach `vos dev` and `vos operator …` to the top-level CLI."""
    cli.command("dev")(dev)
    cli.add_typer(operator_app, name="operator")

