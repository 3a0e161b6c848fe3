"""`vos db|api|door|dev …`: the Agent VOS app's commands."""

import typer


def register(cli: typer.Typer) -> None:
    """Attach the app's command groups to the top-level `vos` CLI."""
