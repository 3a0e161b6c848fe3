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


def test_the_matrix_and_backups_run_after_every_other_converged_vm_test():
    order = collected()
    matrix = order.index("tests/staging/test_mutation_matrix.py::"
                         "test_every_planted_violation_fails_the_gate_then_clears")
    backups = order.index("tests/staging/test_backups_staging.py::"
                          "test_backups_on_the_vm_end_to_end")
    pristine_needed = [i for i, name in enumerate(order)
                       if name.startswith(("tests/staging/test_stack_staging.py",
                                           "tests/staging/test_workforce_staging.py",
                                           "tests/staging/test_b_converged.py"))
                       and "burn_down" not in name]
    assert pristine_needed and max(pristine_needed) < matrix < backups, order
