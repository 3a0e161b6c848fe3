"""What every `vos` app command shares: settings or a clear exit, the owner DSN.

The app's CLI modules (app/cli.py, app/agents/cli.py, app/agents/docs_cli.py, app/ui/cli.py)
import these; none of them imports another CLI module, so there is no import circle between
them. Kept light: typer and pydantic only, the settings model imported when first needed.

Example:
    settings = load_settings()      # exits 2 naming each bad setting
    dsn = owner_dsn_or_exit()       # DATABASE_URL, or exit 2 saying to set it
"""

from __future__ import annotations

import typer
from pydantic import ValidationError


def load_settings():
    """Load settings, or exit 2 with what is wrong and how to fix it."""
    from app.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        typer.echo(f"error: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None


def owner_dsn_or_exit() -> str:
    """The owner DSN (DATABASE_URL) for owner operations; they never use the embedded server
    implicitly, so nothing lands in a throwaway database by mistake."""
    settings = load_settings()
    if settings.database_url is None:
        typer.echo("error: DATABASE_URL is not set; point it at the schema owner role", err=True)
        raise typer.Exit(2)
    return settings.database_url.get_secret_value()
