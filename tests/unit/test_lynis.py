"""staging/lynis.py: Lynis's report and log read back into figures, the pinned package, and
the script that runs it standalone on the VM."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime

import pytest

from staging import lynis
from staging.proc import StagingError

LOG = """\
2026-12-02 06:00:00 Performing test ID SSH-7408 (Check SSH specific defined options)
2026-12-02 06:00:01 Hardening: assigned maximum number of hardening points for this item (3). \
Currently having 3 points (out of 3)
2026-12-02 06:00:02 Hardening: assigned partial number of hardening points (1 of 2). \
Currently having 4 points (out of 5)
2026-12-02 06:00:04 Performing test ID CRYP-7902 (Check expire date of SSL certificates)
2026-12-02 06:01:04 Skipped test DEB-0510 (encrypted partitions)
2026-12-02 06:01:04 Performing test ID FINT-4350 (File integrity software installed)
2026-12-02 06:01:05 Hardening: assigned partial number of hardening points (0 of 5). \
Currently having 4 points (out of 10)
"""
REPORT = """\
report_version_major=1
hardening_index=40
warning[]=FINT-4316|No AIDE database was found, needed for AIDE functionality|-|-|
suggestion[]=FINT-4350|Install a file integrity tool to monitor changes|-|-|
suggestion[]=LOGG-2154|Enable logging to an external logging host|-|-|
"""


def test_the_log_gives_points_and_durations_per_test():
    tests = lynis.parse_log(LOG)
    assert list(tests) == ["SSH-7408", "CRYP-7902", "FINT-4350"]
    ssh = tests["SSH-7408"]
    assert (ssh.points, ssh.possible, ssh.lost, ssh.seconds) == (4, 5, 1, 4.0)
    assert (tests["CRYP-7902"].possible, tests["CRYP-7902"].seconds) == (0, 60.0)
    assert tests["FINT-4350"].lost == 5


def test_the_report_gives_index_warnings_and_suggestions():
    audit = lynis.parse_report(REPORT)
    audit.tests = lynis.parse_log(LOG)
    assert audit.index == 40 and audit.points == (4, 10)
    assert audit.warnings == [("FINT-4316", "No AIDE database was found, needed for AIDE "
                                            "functionality")]
    assert [test for test, _ in audit.suggestions] == ["FINT-4350", "LOGG-2154"]
    assert [t.test_id for t in audit.losses()] == ["FINT-4350", "SSH-7408"]
    summary = audit.summary()
    assert summary.splitlines()[0].startswith("Lynis hardening index: 40 (4/10 points, 3 tests")
    assert "-5   FINT-4350  0/5 File integrity software installed" in summary
    assert "warning    FINT-4316: No AIDE database" in summary


def test_a_report_without_an_index_is_an_unfinished_audit():
    with pytest.raises(StagingError, match="did not finish"):
        lynis.parse_report("report_version_major=1\n")


def test_the_package_is_checked_by_sha256(tmp_path, monkeypatch):
    served = tmp_path / "mirror" / lynis.PACKAGE
    served.parent.mkdir(parents=True)
    served.write_bytes(b"not lynis")
    with pytest.raises(StagingError, match="refusing to run it as root"):
        lynis.package(tmp_path / "cache", mirror=(tmp_path / "mirror").as_uri())
    assert not list((tmp_path / "cache").iterdir())  # nothing half-downloaded stays
    monkeypatch.setattr(lynis, "PACKAGE_SHA256", hashlib.sha256(b"not lynis").hexdigest())
    got = lynis.package(tmp_path / "cache", mirror=(tmp_path / "mirror").as_uri())
    assert got.read_bytes() == b"not lynis"
    served.unlink()  # cached: no second download
    assert lynis.package(tmp_path / "cache", mirror="http://127.0.0.1:9/") == got


def test_the_remote_script_runs_lynis_standalone_as_root_with_its_default_profile():
    script = lynis.remote_script()
    assert "dpkg-deb -x lynis.deb pkg" in script
    assert "chown -R root:root run && chmod -R go-rwx run" in script
    assert "cp pkg/etc/lynis/default.prf run/" in script  # always in force
    assert f"--profile {lynis.REMOTE_DIR}/vos.prf" in script
    assert "--profile" not in lynis.remote_script(profile=False)
    assert f"--report-file {lynis.REMOTE_DIR}/report.dat" in script


def test_the_profile_skips_only_tests_that_award_no_points():
    """A skipped test that could award points would move the index away from the default
    profile's: the pinned package's own sources say which tests call AddHP."""
    skipped = lynis.skipped_tests()
    assert skipped, "staging/lynis.prf skips nothing: then it is not needed"
    awarding = lynis.awarding_tests(lynis.package())
    assert len(awarding) > 100, "the sources were not read"
    assert not set(skipped) & awarding, set(skipped) & awarding


def test_the_static_date_answers_as_coreutils_date_and_hands_on_the_rest(tmp_path):
    """Lynis's timestamps from the static helper must read as coreutils' own (the log's
    per-test durations are parsed from them); any other call reaches /usr/bin/date."""
    helper = lynis.date_helper(tmp_path)
    if helper is None:
        pytest.skip("no static C toolchain on this machine (the audit then uses coreutils')")
    assert lynis.date_helper(tmp_path) == helper  # compiled once, kept by source hash

    def both(*args: str) -> tuple[str, str]:
        ours = subprocess.run([str(helper), *args], capture_output=True, text=True, timeout=30)
        theirs = subprocess.run(["date", *args], capture_output=True, text=True, timeout=30)
        return ours.stdout, theirs.stdout

    for fmt in ("+%Y-%m-%d %H:%M:%S", "+%F %H:%M:%S"):
        ours, theirs = both(fmt)
        assert abs(datetime.strptime(ours.strip(), "%Y-%m-%d %H:%M:%S")
                   - datetime.strptime(theirs.strip(), "%Y-%m-%d %H:%M:%S")).total_seconds() <= 1
    ours, theirs = both("+%s%N")
    assert len(ours.strip()) == len(theirs.strip()) and abs(int(ours) - int(theirs)) < 10**10
    ours, theirs = both("+%N")
    assert len(ours.strip()) == 9 and ours.strip().isdigit()
    ours, theirs = both("-d", "2024-02-29 12:00", "+%s")  # Lynis's kernel-date tests
    assert ours == theirs and ours.strip().isdigit()
    ours, theirs = both("+%A")  # any other format: coreutils' own answer
    assert ours == theirs and ours.strip()


def test_the_remote_script_puts_the_static_date_first_in_lynis_path():
    script = lynis.remote_script()
    assert "install -D -m 0700 date run/bin/date" in script
    assert f'PATH={lynis.REMOTE_DIR}/run/bin:"$PATH" ./lynis audit system' in script
    assert "run/bin" not in lynis.remote_script(fast_date=False)
