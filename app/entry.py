"""`vos-app`: the app's own command line, the container's entry point.

The app image ships this distribution alone (app/pyproject.toml): `vos-app api serve`,
`vos-app door serve`, `vos-app agents work|apply`, `vos-app db migrate`, `vos-app tenant …`,
`vos-app docs …`, `vos-app operator …`. The operator's `vos` (the toolkit's cli.py) offers
the same commands plus the toolkit's, through the same lazy group.

Each command's module is imported only when that command runs (`APP_COMMANDS` says which
module adds which command): `vos-app door serve`, the one process that faces the internet,
loads the door and nothing else it does not need. `--help` still lists every command.

Example:
    vos-app door serve --host 0.0.0.0 --port 8443
    vos-app db migrate --app-password-env VOS_APP_PASSWORD
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches

import typer
from typer.core import TyperGroup
from typer.main import get_group

# command name -> "module" whose register(cli) adds it, or "module:attribute", a Typer app
# added under that name. In the order `--help` lists them.
APP_COMMANDS: dict[str, str] = {
    "db": "app.cli",
    "api": "app.cli",
    "door": "app.cli",
    "tenant": "app.cli",
    "worker": "app.cli",
    "agents": "app.agents.cli",
    "docs": "app.agents.docs_cli",
    "operator": "app.ui.cli",
}


def commands_of(spec: str, name: str) -> dict:
    """The click commands that `spec` (a command table's value) adds, by name, importing it now.

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

    table: dict[str, str] = {}  # set per CLI by lazy_cli

    def list_commands(self, ctx) -> list[str]:
        return [*self.table,
                *(name for name in super().list_commands(ctx) if name not in self.table)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in self.table:
            self.commands.update(commands_of(self.table[cmd_name], cmd_name))
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.table \
                and name not in self.commands:
            close = get_close_matches(name, list(self.table))  # suggest without importing
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)


def lazy_cli(commands: dict[str, str], help_text: str) -> typer.Typer:
    """A Typer app whose sub-commands are the table's, each imported when it runs.

    Example:
        lazy_cli(APP_COMMANDS, "The Agent VOS app.")(["door", "serve", "--help"])
    """
    group = type("Commands", (LazyGroup,), {"table": commands})
    app = typer.Typer(cls=group, help=help_text, no_args_is_help=True, add_completion=False)
    app.callback(help=help_text)(lambda: None)
    return app


cli = lazy_cli(APP_COMMANDS, "The Agent VOS app: API, Command Center, callback door, agent "
                             "workers, schema.")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
