"""`vos operator …`: the Command Center's operator tokens (thin; work is in app/ui).
(`vos dev`, the whole app on loopback with demo data, is the toolkit's: devtools/cli.py.)

Example:
    DATABASE_URL=postgresql://owner@db/vos vos operator create acme --name ada
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.clihelpers import owner_dsn_or_exit

operator_app = typer.Typer(help="Command Center operator tokens (owner operations).",
                           no_args_is_help=True)


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


def register(cli: typer.Typer) -> None:
    """Attach `vos operator …` to the top-level CLI."""
    cli.add_typer(operator_app, name="operator")

