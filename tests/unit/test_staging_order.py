"""The staging tier's order: tests that change the shared converged VM for good run after
every test that needs it as the converge left it (a misplaced marker once ran the mutation
matrix before the second full deploy)."""

from __future__ import annotations

import subprocess
import sys

from staging.state import REPO_ROOT


def collected() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "tests/staging", "--co", "-q",
                          "-p", "no:cacheprovider"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120, check=True).stdout
    return [line for line in out.splitlines() if "::" in line]


MATRIX = ("tests/staging/test_mutation_matrix.py::"
          "test_every_planted_violation_fails_the_gate_then_clears")
STACK_AND_WORKFORCE = ("tests/staging/test_stack_staging.py",
                       "tests/staging/test_workforce_staging.py")


def positions(order: list[str], *prefixes: str) -> list[int]:
    """Where the converged-VM tests of these files (or test name prefixes) run; the burn-down
    drill has its own VM."""
    return [i for i, name in enumerate(order)
            if name.startswith(prefixes) and "burn_down" not in name]


def test_the_matrix_and_backups_run_after_every_other_converged_vm_test():
    order = collected()
    matrix = order.index(MATRIX)
    backups = order.index("tests/staging/test_backups_staging.py::"
                          "test_backups_on_the_vm_end_to_end")
    pristine_needed = positions(order, *STACK_AND_WORKFORCE,
                                "tests/staging/test_b_converged.py")
    assert pristine_needed and max(pristine_needed) < matrix < backups, order


def test_lynis_is_read_back_after_the_readers_and_before_the_matrix():
    """Lynis starts first on the converged VM and is read back after every test that only
    reads it, before the matrix plants its violations."""
    order = collected()
    started = order.index("tests/staging/test_b_lynis.py::"
                          "test_lynis_audit_starts_on_the_converged_vm")
    collected_at = order.index("tests/staging/test_b_lynis.py::"
                               "test_lynis_hardening_index_and_warnings")
    matrix = order.index(MATRIX)
    readers = positions(order, *STACK_AND_WORKFORCE, "tests/staging/test_hardening.py::test_ssh")
    assert started < min(readers) and max(readers) < collected_at < matrix, order
