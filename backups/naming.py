"""Backup file names and the retention plan (pure functions, no I/O).

A backup is a pair of files with one stem, the UTC time the run started:

    vos-backup-20261124T031700Z.dump.gpg        pg_dump -Fc, encrypted to the operator's key
    vos-backup-20261124T031700Z.manifest.json   time, size, sha256, row counts per table

The manifest is written last, so a dump without its manifest is an unfinished backup: the
drill, the check and retention ignore it (retention removes it once a newer pair exists).

Example:
    >>> stem = stem_for(datetime(2026, 11, 24, 3, 17, tzinfo=UTC))
    >>> stem, dump_name(stem), manifest_name(stem)
    ('vos-backup-20261124T031700Z', 'vos-backup-20261124T031700Z.dump.gpg', \
'vos-backup-20261124T031700Z.manifest.json')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "vos-backup-"
DUMP_SUFFIX = ".dump.gpg"
MANIFEST_SUFFIX = ".manifest.json"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_RE = re.compile(r"^(vos-backup-(\d{8}T\d{6}Z))(\.dump\.gpg|\.manifest\.json)$")


def stem_for(moment: datetime) -> str:
    """The stem of a backup started at `moment` (converted to UTC)."""
    return PREFIX + moment.astimezone(UTC).strftime(STAMP_FORMAT)


def dump_name(stem: str) -> str:
    return stem + DUMP_SUFFIX


def manifest_name(stem: str) -> str:
    return stem + MANIFEST_SUFFIX


def stem_time(stem: str) -> datetime:
    """When the backup with this stem was started.

    Example:
        >>> stem_time("vos-backup-20261124T031700Z").isoformat()
        '2026-11-24T03:17:00+00:00'
    """
    return datetime.strptime(stem.removeprefix(PREFIX), STAMP_FORMAT).replace(
        tzinfo=UTC)


@dataclass(frozen=True)
class Listing:
    """Backup files found in one directory, by stem."""

    complete: list[str]  # stems with both the dump and the manifest, oldest first
    unfinished: list[str]  # stems with only one of the two files

    @property
    def newest(self) -> str | None:
        return self.complete[-1] if self.complete else None


def classify(names: Iterable[str]) -> Listing:
    """Group file names into complete backups and unfinished ones; other files are ignored.

    Example:
        >>> classify(["vos-backup-20261124T031700Z.dump.gpg",
        ...           "vos-backup-20261124T031700Z.manifest.json",
        ...           "vos-backup-20261125T031700Z.dump.gpg", "notes.txt"]).unfinished
        ['vos-backup-20261125T031700Z']
    """
    parts: dict[str, set[str]] = {}
    for name in names:
        match = NAME_RE.match(name)
        if match:
            parts.setdefault(match.group(1), set()).add(match.group(3))
    complete = sorted(s for s, kinds in parts.items() if len(kinds) == 2)
    unfinished = sorted(s for s, kinds in parts.items() if len(kinds) == 1)
    return Listing(complete, unfinished)


def plan_retention(stems: Iterable[str], keep_daily: int, keep_weekly: int) -> set[str]:
    """The stems to KEEP: the newest backup of each of the newest `keep_daily` days that have
    one, plus the newest of each of the newest `keep_weekly` ISO weeks that have one.

    The newest backup is always kept, whatever the settings, so retention can never leave
    a target empty.

    Example:
        >>> stems = [f"vos-backup-202611{d:02d}T031700Z" for d in range(1, 25)]
        >>> sorted(s[11:19] for s in plan_retention(stems, keep_daily=3, keep_weekly=3))
        ['20261115', '20261122', '20261123', '20261124']
    """
    ordered = sorted(stems, reverse=True)  # names sort by time: newest first
    keep: set[str] = set(ordered[:1])
    for period, count in ((_day, keep_daily), (_iso_week, keep_weekly)):
        seen: list[tuple] = []
        for stem in ordered:
            key = period(stem_time(stem))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep.add(stem)
    return keep


def _day(moment: datetime) -> tuple:
    return (moment.date(),)


def _iso_week(moment: datetime) -> tuple:
    iso = moment.isocalendar()
    return (iso.year, iso.week)


def files_to_prune(names: Iterable[str], keep_daily: int, keep_weekly: int) -> list[str]:
    """File names retention removes from one directory: complete backups not kept, and
    unfinished ones older than the newest complete backup (a run in progress is younger).

    Example:
        >>> files_to_prune(["vos-backup-20261101T031700Z.dump.gpg",
        ...                 "vos-backup-20261101T031700Z.manifest.json",
        ...                 "vos-backup-20261102T031700Z.dump.gpg",
        ...                 "vos-backup-20261102T031700Z.manifest.json"], 1, 0)
        ['vos-backup-20261101T031700Z.dump.gpg', 'vos-backup-20261101T031700Z.manifest.json']
    """
    names = list(names)
    listing = classify(names)
    keep = plan_retention(listing.complete, keep_daily, keep_weekly)
    newest = listing.newest or ""
    doomed = {s for s in listing.complete if s not in keep}
    doomed |= {s for s in listing.unfinished if s < newest}
    return sorted(n for n in names if (m := NAME_RE.match(n)) and m.group(1) in doomed)
