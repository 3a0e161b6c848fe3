"""After deploys/full.py: reached over the mesh (the checks and the scan: test_hardening.py)."""


def test_converged_vm_is_reached_over_the_mesh(converged_vm):
    assert converged_vm.address == converged_vm.mesh_address
    out = converged_vm.ssh("ip -4 -o addr show dev tailscale0").stdout
    assert f"inet {converged_vm.mesh_address}/24" in out


# The base checks run inside the whole gate (test_hardening.py: every check), and the
# operator's `vos staging scan --json` is the outside scan there: each would cost a minute
# or two of TCG per CI run if repeated here.
