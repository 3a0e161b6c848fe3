"""After deploys/full.py: reached over the mesh, base checks pass, the CLI scan agrees."""

import json
import subprocess
import sys

from staging.state import REPO_ROOT


def test_converged_vm_is_reached_over_the_mesh(converged_vm):
    assert converged_vm.address == converged_vm.mesh_address
    out = converged_vm.ssh("ip -4 -o addr show dev tailscale0").stdout
    assert f"inet {converged_vm.mesh_address}/24" in out


def test_base_checks_pass_on_the_converged_vm(converged_vm):
    # The whole checks/ set (the gate) and the idempotent re-run are asserted once, in
    # test_hardening.py; repeating them here would cost minutes of TCG per CI run.
    result = converged_vm.run_checks("checks/test_base.py")
    assert result.returncode == 0, f"checks failed:\n{result.stdout[-6000:]}{result.stderr}"


def test_vos_staging_scan_json_matches_the_scanner(converged_vm):
    result = subprocess.run(
        [sys.executable, "-m", "cli", "staging", "scan", "--json",
         "--state-dir", str(converged_vm.state_dir)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == converged_vm.scan()
