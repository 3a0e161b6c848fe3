"""The pristine staging VM looks like a fresh cloud VPS, seen from inside and from outside."""

import subprocess

from staging.lab import Lab


def test_fresh_vm_has_the_cloud_defaults_hardening_must_fix(staging_vm):
    effective = staging_vm.ssh("sudo sshd -T").stdout
    assert "passwordauthentication yes" in effective
    assert "permitrootlogin without-password" in effective
    assert staging_vm.ssh("sudo -n id -u").stdout.strip() == "0"


def test_public_nic_carries_the_public_address(staging_vm):
    out = staging_vm.ssh("ip -4 -o addr show").stdout
    assert f"inet {staging_vm.public_address}/28" in out
    assert "10.0.2.15/24" in out  # QEMU user-mode egress NIC


def test_root_can_log_in_by_key_on_the_fresh_vm(staging_vm):
    result = subprocess.run(
        ["ssh", "-F", staging_vm.ssh_config, "-l", "root", "staging-public", "id -u"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "0", result.stderr


def test_vm_reaches_the_debian_mirror_through_egress(staging_vm):
    result = staging_vm.ssh(
        "timeout 20 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' && echo reachable",
        check=False,
    )
    assert "reachable" in result.stdout, f"no egress to deb.debian.org: {result.stderr}"


def test_scanner_sees_exactly_ssh_on_the_fresh_vm(staging_vm):
    # Truthful view: sshd (0.0.0.0:22) is open, nothing else listens publicly yet.
    assert staging_vm.scan() == [22]


def test_scanner_sees_a_new_listener_and_its_closing(staging_vm):
    staging_vm.ssh("sudo systemd-run --unit=vos-probe python3 -m http.server 8443")
    # Python starts slowly under TCG: wait (bounded) until the VM itself sees the listener.
    staging_vm.ssh("for i in $(seq 60); do ss -tln | grep -q ':8443 ' && exit 0; sleep 1; done;"
                   " echo 'probe never listened' >&2; exit 1")
    try:
        assert 8443 in staging_vm.scan(ports="8000-9000")
    finally:
        staging_vm.ssh("sudo systemctl stop vos-probe", check=False)
    assert 8443 not in staging_vm.scan(ports="8000-9000")


def test_up_again_reuses_the_running_vm(staging_vm):
    lab: Lab = staging_vm.lab
    before = lab.state.vms["primary"].pid
    state = lab.up()
    assert state.vms["primary"].pid == before
