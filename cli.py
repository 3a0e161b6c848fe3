"""`vos`: the operator's command line (the toolkit's distribution, the repository root).

Thin commands over the modules that do the work; nothing clever lives here. pyinfra stays
visible: `vos staging up --deploy` prints the pyinfra command it runs.

`vos` is the app's command line (`vos-app`, app/entry.py) plus the toolkit's commands, in
one lazy group: each command's module is imported only when that command runs (`COMMANDS`
below says which module adds which command), so `vos door serve` loads the app's door and
nothing of the toolkit (pyinfra, testinfra, gnupg, the docker SDK, staging, roles, backups,
checks). `vos --help` still lists every command (it loads them all).

Example:
    vos staging up          # boot the local staging VM, print its addresses
    vos db migrate          # apply the app's SQL migrations
"""

from __future__ import annotations

from app.entry import APP_COMMANDS, commands_of, lazy_cli

# command name -> "module" whose register(cli) adds it, or "module:attribute", a Typer app
# added under that name. In the order `vos --help` lists them.
COMMANDS: dict[str, str] = {
    "staging": "staging.cli:staging_app",
    "backup": "backups.cli:backup_app",
    **APP_COMMANDS,
    "fake-providers": "devtools.cli",
    "dev": "devtools.cli",
    "check": "checks.cli",
    "image": "stack.cli",
    "releases": "stack.cli",
    "rollback": "stack.cli",
}

cli = lazy_cli(COMMANDS, "Agent VOS toolkit: staging VM, deploy helpers and the Agent VOS app.")

__all__ = ["COMMANDS", "cli", "commands_of", "main"]


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
