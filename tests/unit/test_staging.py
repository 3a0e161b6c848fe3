"""Staging building blocks that need no VM: layout, image recipe, cmdline, scanner parsing,
state round-trip, inventory built from a recorded state, accelerator choice."""

import base64
import json
import os
import runpy
import subprocess
from pathlib import Path

import pytest

from staging import image, scanner, vm
from staging.proc import StagingError
from staging.state import SlotLayout, StagingState, load_state

REPO = Path(__file__).resolve().parents[2]


def test_slots_never_share_addresses_or_interface_names():
    layouts = [SlotLayout(slot=n) for n in range(16)]
    publics = {layout.vm_public for layout in layouts} | {
        layout.operator_public for layout in layouts
    }
    assert len(publics) == 32
    assert len({layout.vm_mesh for layout in layouts}) == 16
    names = [name for layout in layouts
             for name in (layout.netns, layout.bridge, layout.host_veth, layout.ns_veth,
                          layout.mesh_interface, layout.tap(9))]
    assert len(set(names)) == len(names)
    assert max(len(name) for name in names) <= 15  # Linux IFNAMSIZ - 1


def test_slot_zero_matches_the_documented_addresses():
    layout = SlotLayout(slot=0)
    assert (layout.scanner_public, layout.operator_public, layout.vm_public) == (
        "203.0.113.1", "203.0.113.2", "203.0.113.10")
    assert (layout.operator_mesh, layout.vm_mesh) == ("100.64.0.1", "100.64.0.2")


def test_slot_out_of_range_is_rejected():
    with pytest.raises(ValueError):
        SlotLayout(slot=16)


def test_recipe_hash_changes_with_the_recipe(monkeypatch):
    before = image.recipe_hash()
    assert before == image.recipe_hash()
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "nginx"))
    assert image.recipe_hash() != before


def test_kernel_cmdline_carries_key_and_public_address():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample operator"
    words = vm.kernel_cmdline(SlotLayout(slot=3), key).split()
    assert "vos.public=203.0.113.58/28" in words
    [encoded] = [w.split("=", 1)[1] for w in words if w.startswith("vos.authorized_key=")]
    assert base64.b64decode(encoded).decode() == key
    assert not any(w.startswith("vos.authorized_key") for w in
                   vm.kernel_cmdline(SlotLayout(slot=3), None).split())


def test_boot_script_is_valid_shell():
    script = image.BOOT_CONFIG_SCRIPT.replace("DEPLOY_USER", "deploy")
    result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_tcg_when_the_cpu_has_no_virtualisation(monkeypatch):
    monkeypatch.setattr(vm, "kvm_usable", lambda: False)
    assert vm.accel_args(warn=False) == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    monkeypatch.setattr(vm, "kvm_usable", lambda: True)
    assert vm.accel_args(warn=False)[:2] == ["-accel", "kvm"]


def test_parse_open_ports_keeps_only_open_tcp():
    xml = (
        '<nmaprun><host><ports>'
        '<port protocol="tcp" portid="443"><state state="open"/></port>'
        '<port protocol="tcp" portid="22"><state state="filtered"/></port>'
        '<port protocol="udp" portid="53"><state state="open"/></port>'
        '<port protocol="tcp" portid="80"><state state="open"/></port>'
        '</ports></host></nmaprun>'
    )
    assert scanner.parse_open_ports(xml) == [80, 443]


def test_scan_that_reached_no_host_is_an_error_not_an_empty_list():
    with pytest.raises(StagingError, match="no host"):
        scanner.parse_open_ports("<nmaprun></nmaprun>")


def test_nmap_runs_inside_the_namespace_only():
    command = scanner.nmap_command("vos0-public", "203.0.113.10", "1-65535")
    assert command[:4] == ["ip", "netns", "exec", "vos0-public"]
    assert command[-1] == "203.0.113.10"


def _recorded_state(tmp_path: Path) -> StagingState:
    for name in ("id_ed25519", "mesh-vm.wgkey", "known_hosts"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx op\n")
    (tmp_path / "mesh-vm.wgkey").write_text("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n")
    state = StagingState(
        state_dir=str(tmp_path), slot=5, image_dir="/nonexistent",
        ssh_private_key=str(tmp_path / "id_ed25519"),
        ssh_public_key=str(tmp_path / "id_ed25519.pub"),
        known_hosts=str(tmp_path / "known_hosts"), ssh_config=str(tmp_path / "ssh_config"),
        mesh_operator_private_key=str(tmp_path / "mesh-operator.wgkey"),
        mesh_operator_public_key="HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
        mesh_vm_private_key=str(tmp_path / "mesh-vm.wgkey"),
        mesh_vm_public_key="yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
    )
    state.save()
    return state


def test_state_round_trips_through_json(tmp_path):
    state = _recorded_state(tmp_path)
    assert load_state(tmp_path) == state
    assert json.loads((tmp_path / "state.json").read_text())["slot"] == 5


def test_staging_inventory_is_built_from_the_state_and_validated(tmp_path, monkeypatch):
    _recorded_state(tmp_path)
    monkeypatch.setenv("VOS_STAGING_DIR", str(tmp_path))
    monkeypatch.chdir(REPO)
    hosts = runpy.run_path(str(REPO / "inventory" / "staging.py"))["staging"]
    [(name, data)] = hosts
    assert name == "staging"
    # No mesh handshake exists for slot 5, so the first login goes to the public address.
    assert data["ssh_hostname"] == "203.0.113.90"
    assert data["mesh"]["wireguard"]["address"] == "100.64.5.2"
    assert data["mesh"]["wireguard"]["peer_endpoint"] == "203.0.113.82:51825"
    assert data["ssh_strict_host_key_checking"] == "yes"


def test_staging_inventory_without_state_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("VOS_STAGING_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match="run `vos staging up` first"):
        runpy.run_path(str(REPO / "inventory" / "staging.py"))


def test_cli_status_without_a_vm_exits_non_zero(tmp_path):
    result = subprocess.run(
        [str(Path(os.sys.executable).with_name("vos")), "staging", "status",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 3 and "False" in result.stdout


def test_guest_panic_is_read_from_the_console_log(tmp_path):
    """What `Lab.boot` retries once: the panic line as QEMU's serial console recorded it
    (the excerpt is the TCG boot that died on 2026-11-25)."""
    from staging.lab import guest_panic

    console = tmp_path / "primary.console.log"
    console.write_text(
        "[   18.730134] RIP: 0010:kmem_cache_free+0x103/0x440\n"
        "[   18.730372] Kernel panic - not syncing: Fatal exception in interrupt\n"
        "[   18.731530] Kernel Offset: 0x12800000 from 0xffffffff81000000\n")
    assert guest_panic(console) == "Kernel panic - not syncing: Fatal exception in interrupt"
    console.write_text("[  OK  ] Reached target multi-user.target\nvos-staging login:\n")
    assert guest_panic(console) is None
    assert guest_panic(tmp_path / "missing.log") is None
