"""The gate's report: skipped checks are said (not folded into "all passed"), and the backup
checks' documented options (`--vos-require-backups`, `--vos-backup-config`) are real options.

The subprocess runs use testinfra's local backend on checks/test_backups.py, minus its
keyring scan (a `find` over this machine's disks): the two checks left need the host's backup
config, which the path given does not have, so they skip, or fail when backups are required.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from checks.gate import GateResult
from checks.plugin import skip_reason

REPO = Path(__file__).resolve().parents[2]
SKIP = "BACKUPS §15: no /etc/vos-backup/config.json on the host — the backups role has not run"


def run_backup_checks(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "checks" / "test_backups.py"),
         "-p", "checks.plugin", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rs",
         "--tb=line", "--hosts=local://", "-k", "not secret_key",
         f"--vos-backup-config={tmp_path / 'absent.json'}", f"--vos-report={report}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("VOS_CHECK_")})
    return done, json.loads(report.read_text()) if report.exists() else {}


def test_backup_options_are_registered_and_do_what_the_docs_say(tmp_path):
    skipped, report = run_backup_checks(tmp_path)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "2 skipped" in skipped.stdout and "unrecognized arguments" not in skipped.stderr
    assert [s["reason"].split(" — ")[0] for s in report["skipped"]] == [
        "BACKUPS §15: no /etc/vos-backup/config.json on the host"] * 2
    assert report["passed"] == 0 and report["failures"] == []

    required, report = run_backup_checks(tmp_path, "--vos-require-backups")
    assert required.returncode == 1, required.stdout + required.stderr
    assert "the backups role has not run" in required.stdout
    assert len(report["failures"]) == 2 and report["skipped"] == []


def test_a_green_gate_with_skips_says_how_many_and_why():
    result = GateResult(True, 24, skipped=[
        {"test": "checks/test_backups.py::test_backup_files_are_private[local://]",
         "reason": SKIP},
        {"test": "checks/test_backups.py::test_newest_backup_is_fresh[local://]",
         "reason": SKIP},
        {"test": "checks/test_x.py::test_y", "reason": "no docker on the host"},
    ])
    lines = result.summary().splitlines()
    assert lines[0] == "GATE: 24 invariant checks passed, 3 skipped (not judged)"
    assert lines[1:] == [f"  skipped 2: {SKIP}", "  skipped 1: no docker on the host"]
    assert "all" not in lines[0]


def test_a_gate_without_skips_still_says_all_passed():
    assert GateResult(True, 26).summary() == "GATE: all 26 invariant checks passed"


def test_a_red_gate_counts_the_skips_too():
    result = GateResult(False, 20, [{"test": "checks/test_ssh.py::test_sshd_effective_config",
                                     "message": "AssertionError: SSH §6: permitrootlogin is yes"}],
                        skipped=[{"test": "t", "reason": SKIP}])
    lines = result.summary().splitlines()
    assert lines[0] == "GATE FAILED: 1 check(s) broken, 20 passed, 1 skipped"
    assert f"  skipped 1: {SKIP}" in lines
    assert "  - SSH §6: permitrootlogin is yes" in lines


def test_skip_reason_reads_pytests_skip_tuple():
    assert skip_reason(("checks/test_backups.py", 71, f"Skipped: {SKIP}")) == SKIP
    assert skip_reason("odd") == "odd"
