"""After deploys/full.py: reached over the mesh, checks pass, a re-run changes nothing."""

import re

from staging.state import REPO_ROOT


def pyinfra_output(result) -> str:
    return f"{result.stdout}\n{result.stderr}"


def test_converged_vm_is_reached_over_the_mesh(converged_vm):
    assert converged_vm.address == converged_vm.mesh_address
    out = converged_vm.ssh("ip -4 -o addr show dev tailscale0").stdout
    assert f"inet {converged_vm.mesh_address}/24" in out


def test_checks_pass_on_the_converged_vm(converged_vm):
    result = converged_vm.run_checks("checks/")
    assert result.returncode == 0, f"checks failed:\n{result.stdout[-6000:]}{result.stderr}"


def test_second_deploy_changes_nothing(converged_vm, converge_deploy):
    result = converged_vm.run_pyinfra(converge_deploy)
    output = pyinfra_output(result)
    assert result.returncode == 0, output[-4000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total, f"no pyinfra results table in the output:\n{output[-2000:]}"
    assert total.group(2) == "-", f"a re-run changed {total.group(2)} operation(s):\n" + "\n".join(
        line for line in output.splitlines() if "Success" in line or "Changed" in line
    )


def test_vos_staging_scan_json_matches_the_scanner(converged_vm):
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "cli", "staging", "scan", "--json",
         "--state-dir", str(converged_vm.state_dir)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == converged_vm.scan()
