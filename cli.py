"""`vos`: the operator's command line.

Thin commands over the modules that do the work; nothing clever lives here. pyinfra stays
visible: `vos staging up --deploy` prints the pyinfra command it runs.

Example:
    vos staging up          # boot the local staging VM, print its addresses
    vos db migrate          # apply the app's SQL migrations
"""

import typer

from app.cli import register as register_app_commands
from backups.cli import backup_app
from checks.cli import register as register_check_command
from stack.cli import register as register_stack_commands
from staging.cli import staging_app

cli = typer.Typer(
    help="Agent VOS toolkit: staging VM, deploy helpers and the Agent VOS app.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(staging_app, name="staging")
cli.add_typer(backup_app, name="backup")
register_app_commands(cli)
register_check_command(cli)
register_stack_commands(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
