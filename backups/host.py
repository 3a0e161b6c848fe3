"""`vos-backup`: the host-side command the backups role installs (stdlib + psycopg + gnupg,
so the host needs no typer, pydantic or the rest of the toolkit).

    vos-backup run  [--config /etc/vos-backup/config.json] [--lock-wait SECONDS] [--quiet]
    vos-backup list [--config …]        complete backups in the spool and on the target

`run` prints progress on stderr and ONE structured JSON line on stdout (cron pipes it to
the journal with `logger -t vos-backup`); exit 0 when the backup was taken and shipped, or
when another run was in progress (nothing to do), 1 otherwise.

Example:
    sudo -u vos-backup vos-backup run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from backups.naming import classify, stem_time
from backups.pipeline import BackupConfig, BackupError, run_backup

DEFAULT_CONFIG = Path("/etc/vos-backup/config.json")


def _progress(message: str) -> None:
    print(f"vos-backup: {message}", file=sys.stderr, flush=True)


def cmd_run(config: BackupConfig, quiet: bool = False) -> int:
    result = run_backup(config, log=(lambda _m: None) if quiet else _progress)
    print(result.log_line(), flush=True)
    if result.status == "failed" and not quiet:
        _progress(f"FAILED at step {result.step}: {result.error}")
        return 1
    return 0


def describe(names: list[str]) -> list[str]:
    """One line per complete backup, newest last.

    Example:
        >>> describe(["vos-backup-20261124T031700Z.dump.gpg",
        ...           "vos-backup-20261124T031700Z.manifest.json"])
        ['vos-backup-20261124T031700Z  2026-11-24 03:17 UTC']
    """
    return [f"{stem}  {stem_time(stem):%Y-%m-%d %H:%M} UTC" for stem in classify(names).complete]


def cmd_list(config: BackupConfig) -> int:
    spool = Path(config.spool_dir)
    local = [p.name for p in spool.iterdir()] if spool.is_dir() else []
    print(f"spool {spool}:")
    print("\n".join("  " + line for line in describe(local)) or "  (none)")
    target = config.target_or_none()
    if target:
        print(f"target {target.spec}:")
        print("\n".join("  " + line for line in describe(target.names())) or "  (none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vos-backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "list"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"backup config (default {DEFAULT_CONFIG})")
    parser.add_argument("--lock-wait", type=float, default=None,
                        help="seconds to wait for a run in progress (default: config)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr: only the JSON line (what cron logs)")
    args = parser.parse_args(argv)
    try:
        config = BackupConfig.load(args.config)
    except BackupError as error:
        print(f"vos-backup: {error}", file=sys.stderr)
        return 2
    if args.lock_wait is not None:
        config = dataclasses.replace(config, lock_wait_seconds=args.lock_wait)
    return cmd_run(config, args.quiet) if args.command == "run" else cmd_list(config)


if __name__ == "__main__":
    sys.exit(main())
