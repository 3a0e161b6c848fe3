"""`vos staging …`: the local staging VM (filled in by the staging foundation work)."""

import typer

staging_app = typer.Typer(help="The local staging VM that stands in for the VPS.", no_args_is_help=True)
