"""Releases on the host: one directory per deploy, a `current` link, rollback to any kept one.

Layout on the host (root-owned, no secret inside: the env files live beside, 0600):

    /etc/vos-stack/releases/<id>/compose.yml     the rendered, gate-checked compose file
    /etc/vos-stack/releases/<id>/release.json    {"id", "image", "revision", "created"}
    /etc/vos-stack/current -> releases/<id>      what `docker compose up` last succeeded with

A release id is the git revision plus the UTC time, e.g. `3f2a1c0-20261124T172800Z`, so ids
sort by time within a revision and name the code they ran. Every function takes a `run`
callable (a shell command on the host -> stdout): `ssh_runner` for the real host,
`local_runner` for this machine (tests, or `vos releases` run on the host itself).

Example:
    run = ssh_runner("staging-mesh", ssh_config=".cache/staging/ssh_config")
    list_releases(run)          # -> [Release(id="3f2a1c0-2026…", current=True, …), …]
    rollback(run)               # back to the release before the current one
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from stack.compose import PROJECT, STACK_DIR

RELEASE_ID = re.compile(r"^[0-9a-f]{7,40}(-dirty-[0-9a-f]{4})?-\d{8}T\d{6}Z$")
Runner = Callable[[str], str]


class ReleaseError(RuntimeError):
    """A release operation failed; the message says what to do next."""


@dataclass(frozen=True)
class Release:
    """One kept release as recorded on the host."""

    id: str
    image: str
    revision: str
    created: str
    current: bool = False


def new_release_id(revision: str, now: datetime | None = None) -> str:
    """The id of a new release: revision + UTC time.

    Example:
        >>> new_release_id("3f2a1c0", datetime(2026, 11, 24, 17, 28, tzinfo=UTC))
        '3f2a1c0-20261124T172800Z'
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{revision}-{moment:%Y%m%dT%H%M%SZ}"


def validate_id(release_id: str) -> str:
    """Refuse anything that is not a release id (it ends up in shell commands and paths)."""
    if not RELEASE_ID.match(release_id):
        raise ReleaseError(f"{release_id!r} is not a release id (like 3f2a1c0-20261124T"
                           "172800Z); `vos releases` lists the kept ones")
    return release_id


def local_runner(command: str) -> str:
    """Run on this machine (bounded); ReleaseError with stderr on failure."""
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ReleaseError(f"`{command[:80]}` failed on the host: {result.stderr.strip()[-800:]}")
    return result.stdout


def ssh_runner(host: str, ssh_config: str | None = None) -> Runner:
    """Run as the deploy user over SSH with sudo (the host's files are root's)."""
    def run(command: str) -> str:
        ssh = ["ssh", *(["-F", ssh_config] if ssh_config else []), "-o", "BatchMode=yes", host,
               f"sudo sh -c {shlex.quote(command)}"]
        result = subprocess.run(ssh, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise ReleaseError(f"on {host}: `{command[:80]}` failed: "
                               f"{result.stderr.strip()[-800:]}")
        return result.stdout
    return run


def list_releases(run: Runner, root: str = STACK_DIR) -> list[Release]:
    """Every kept release, newest first, the current one marked."""
    out = run(f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
              "readlink current 2>/dev/null | sed 's|^releases/||; s|^|CURRENT |'; "
              "for f in releases/*/release.json; do [ -f \"$f\" ] && cat \"$f\" && echo; done")
    current = None
    releases = []
    for line in filter(None, (raw.strip() for raw in out.splitlines())):
        if line.startswith("CURRENT "):
            current = line.split(" ", 1)[1].strip("/")
            continue
        record = json.loads(line)
        releases.append(record)
    return sorted((Release(record["id"], record["image"], record["revision"],
                           record["created"], record["id"] == current)
                   for record in releases), key=lambda r: r.created, reverse=True)


def rollback_target(releases: list[Release], wanted: str | None = None) -> Release:
    """The release to go back to: `wanted`, or the newest one older than the current.

    Example:
        >>> a = Release("aaaaaaa-20261124T100000Z", "i:a", "aaaaaaa", "2026-11-24T10:00:00Z")
        >>> b = Release("bbbbbbb-20261124T110000Z", "i:b", "bbbbbbb", "2026-11-24T11:00:00Z",
        ...             current=True)
        >>> rollback_target([b, a]).id
        'aaaaaaa-20261124T100000Z'
    """
    if wanted:
        validate_id(wanted)
        for release in releases:
            if release.id == wanted:
                return release
        raise ReleaseError(f"release {wanted} is not kept on the host; `vos releases` "
                           "lists the ones that are")
    current = next((release for release in releases if release.current), None)
    older = [r for r in releases if current is None or r.created < current.created]
    if not older:
        raise ReleaseError("no release older than the current one is kept: nothing to roll "
                           "back to (deploy a fixed revision instead)")
    return older[0]


def record_command(release: Release, compose_text: str, root: str = STACK_DIR) -> str:
    """Shell that writes a release's directory (compose.yml + release.json), root-only."""
    directory = f"{root}/releases/{validate_id(release.id)}"
    record = json.dumps({"id": release.id, "image": release.image,
                         "revision": release.revision, "created": release.created})
    return (f"umask 077; mkdir -p {shlex.quote(directory)} && "
            f"printf %s {shlex.quote(compose_text)} > {shlex.quote(directory)}/compose.yml && "
            f"printf '%s\\n' {shlex.quote(record)} > {shlex.quote(directory)}/release.json")


def up_command(release_id: str, root: str = STACK_DIR, project: str = PROJECT) -> str:
    """`docker compose up -d` of a kept release, then point `current` at it."""
    directory = f"{root}/releases/{validate_id(release_id)}"
    return (f"docker compose -p {project} -f {directory}/compose.yml up -d --remove-orphans "
            f"&& ln -sfn releases/{release_id} {root}/current")


def prune_command(keep: int, root: str = STACK_DIR) -> str:
    """Delete all but the newest `keep` release directories (never the current one)."""
    return (f"cd {shlex.quote(root)}/releases 2>/dev/null || exit 0; "
            f"cur=$(readlink ../current | sed 's|^releases/||'); "
            "ls -1 | awk -F- '{print $NF, $0}' | sort -r | cut -d' ' -f2 | "
            f"tail -n +{keep + 1} | "
            f"while read -r d; do [ \"$d\" = \"$cur\" ] || rm -rf -- \"$d\"; done")


def rollback(run: Runner, wanted: str | None = None, root: str = STACK_DIR) -> Release:
    """Go back to `wanted` (or the previous release): compose up its file, move `current`."""
    target = rollback_target(list_releases(run, root), wanted)
    run(up_command(target.id, root))
    return target
