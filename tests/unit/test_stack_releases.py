"""Release records on a real filesystem through the same shell the host runs (local runner)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stack.releases import (
    Release,
    ReleaseError,
    list_releases,
    local_runner,
    new_release_id,
    prune_command,
    record_command,
    rollback_target,
    up_command,
)


def make(root, revision: str, hour: int, current: bool = False) -> Release:
    moment = datetime(2026, 11, 24, hour, tzinfo=UTC)
    release = Release(new_release_id(revision, moment), f"agent-vos:{revision}", revision,
                      moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
    local_runner(record_command(release, f"services: {{}}\n# {revision} 'quoted'\n", str(root)))
    if current:
        local_runner(f"ln -sfn releases/{release.id} {root}/current")
    return release


def test_records_list_newest_first_with_current_marked(tmp_path):
    old = make(tmp_path, "aaaaaaa", 10)
    new = make(tmp_path, "bbbbbbb", 11, current=True)
    releases = list_releases(local_runner, str(tmp_path))
    assert [r.id for r in releases] == [new.id, old.id]
    assert [r.current for r in releases] == [True, False]
    compose = (tmp_path / "releases" / new.id / "compose.yml")
    assert compose.read_text().endswith("'quoted'\n") and oct(compose.stat().st_mode)[-3:] == "600"


def test_rollback_goes_to_the_previous_release_or_the_named_one(tmp_path):
    first = make(tmp_path, "aaaaaaa", 9)
    second = make(tmp_path, "bbbbbbb", 10)
    make(tmp_path, "ccccccc", 11, current=True)
    releases = list_releases(local_runner, str(tmp_path))
    assert rollback_target(releases).id == second.id
    assert rollback_target(releases, first.id).id == first.id


def test_rollback_refuses_unknown_or_malformed_ids(tmp_path):
    make(tmp_path, "aaaaaaa", 9, current=True)
    releases = list_releases(local_runner, str(tmp_path))
    with pytest.raises(ReleaseError, match="nothing to roll back to"):
        rollback_target(releases)
    with pytest.raises(ReleaseError, match="not kept on the host"):
        rollback_target(releases, "fffffff-20261124T090000Z")
    with pytest.raises(ReleaseError, match="is not a release id"):
        up_command("x; rm -rf /")


def test_prune_keeps_the_newest_and_never_the_current(tmp_path):
    current = make(tmp_path, "aaaaaaa", 8, current=True)  # oldest, but live (after a rollback)
    kept = [make(tmp_path, f"{c * 7}", h) for c, h in (("b", 9), ("c", 10), ("d", 11))]
    local_runner(prune_command(2, str(tmp_path)))
    left = {r.id for r in list_releases(local_runner, str(tmp_path))}
    assert left == {current.id, kept[2].id, kept[1].id}


def test_no_releases_yet_is_an_empty_list(tmp_path):
    assert list_releases(local_runner, str(tmp_path / "absent")) == []
