"""`vos`: the operator's command line.

Thin commands over the modules that do the work; nothing clever lives here. pyinfra stays
visible: `vos staging up --deploy` prints the pyinfra command it runs.

Each command's module is imported only when that command runs (`COMMANDS` below says which
module adds which command): `vos door serve`, the one process that faces the internet, loads
the app's door and nothing of the toolkit (pyinfra, testinfra, gnupg, the docker SDK, staging,
roles, backups, checks). `vos --help` still lists every command (it loads them all).

Example:
    vos staging up          # boot the local staging VM, print its addresses
    vos db migrate          # apply the app's SQL migrations
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches

import typer
from typer.core import TyperGroup
from typer.main import get_group

# command name -> "module" whose register(cli) adds it, or "module:attribute", a Typer app
# added under that name. In the order `vos --help` lists them.
COMMANDS: dict[str, str] = {
    "staging": "staging.cli:staging_app",
    "backup": "backups.cli:backup_app",
    "db": "app.cli",
    "api": "app.cli",
    "door": "app.cli",
    "tenant": "app.cli",
    "worker": "app.cli",
    "fake-providers": "app.agents.cli",
    "agents": "app.agents.cli",
    "docs": "app.agents.docs_cli",
    "dev": "app.ui.cli",
    "operator": "app.ui.cli",
    "check": "checks.cli",
    "image": "stack.cli",
    "releases": "stack.cli",
    "rollback": "stack.cli",
}


def commands_of(spec: str, name: str) -> dict:
    """The click commands that `spec` (a COMMANDS value) adds, by name, importing it now.

    Example:
        >>> sorted(commands_of("app.cli", "door"))
        ['api', 'db', 'door', 'tenant', 'worker']
    """
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    scratch = typer.Typer()
    if attribute:
        scratch.add_typer(getattr(module, attribute), name=name)
    else:
        module.register(scratch)
    return dict(get_group(scratch).commands)


class LazyGroup(TyperGroup):
    """The top-level group: knows every command's name, imports its module when asked."""

    def list_commands(self, ctx) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update(commands_of(COMMANDS[cmd_name], cmd_name))
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS \
                and name not in self.commands:
            close = get_close_matches(name, list(COMMANDS))  # suggest without importing
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)


cli = typer.Typer(
    cls=LazyGroup,
    help="Agent VOS toolkit: staging VM, deploy helpers and the Agent VOS app.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.callback()
def _vos() -> None:
    """Agent VOS toolkit: staging VM, deploy helpers and the Agent VOS app."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
