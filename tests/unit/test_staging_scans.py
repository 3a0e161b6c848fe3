"""Outside scans over UDP and IPv6 without a VM: the public IPv6 layout, the kernel command
line, the boot script's networkd file, the nmap argv, and nmap's XML as nmap 7.93 wrote it
between two network namespaces (a responder on 9999/udp behind a default-drop firewall),
trimmed to the elements the parser reads."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from staging import cli, image, scanner, vm
from staging.proc import StagingError
from staging.state import MAX_SLOTS, SlotLayout

# ------------------------------------------------------------------ the IPv6 layout


def test_slot_zero_has_the_documented_ipv6_addresses():
    layout = SlotLayout(slot=0)
    assert (layout.scanner_public6, layout.vm_public6) == ("2001:db8::1", "2001:db8::10")
    assert layout.public6_network == "2001:db8::/64"
    assert SlotLayout(slot=12).vm_public6 == "2001:db8:12::10"


def test_every_slot_has_its_own_documentation_prefix_holding_scanner_and_vm():
    documentation = ipaddress.IPv6Network("2001:db8::/32")
    networks = set()
    for slot in range(MAX_SLOTS):
        layout = SlotLayout(slot=slot)
        network = ipaddress.IPv6Network(layout.public6_network)
        assert network.subnet_of(documentation) and network.prefixlen == 64
        assert ipaddress.IPv6Address(layout.scanner_public6) in network
        assert ipaddress.IPv6Address(layout.vm_public6) in network
        networks.add(network)
    assert len(networks) == MAX_SLOTS


def test_vm_public_address_by_family():
    layout = SlotLayout(slot=3)
    assert layout.vm_public_address(4) == "203.0.113.58"
    assert layout.vm_public_address(6) == "2001:db8:3::10"
    with pytest.raises(ValueError, match="4 or 6"):
        layout.vm_public_address(5)


def test_kernel_cmdline_carries_both_public_addresses():
    words = vm.kernel_cmdline(SlotLayout(slot=3), None).split()
    assert "vos.public=203.0.113.58/28" in words
    assert "vos.public6=2001:db8:3::10/64" in words


# ------------------------------------------------------------------ the boot script


def run_boot_script(tmp_path: Path, cmdline: str) -> Path:
    """The image's boot script under POSIX sh, reading a fake /proc/cmdline and writing into
    a scratch dir instead of /run/systemd/network; returns that dir."""
    fake_cmdline = tmp_path / "cmdline"
    fake_cmdline.write_text(cmdline + "\n")
    network_dir = tmp_path / "network"
    script = image.boot_config_script().replace("/proc/cmdline", str(fake_cmdline)).replace(
        "/run/systemd/network", str(network_dir))
    result = subprocess.run(["sh", "-s"], input=script, text=True, capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return network_dir


def test_boot_script_writes_both_addresses_into_one_networkd_file(tmp_path):
    network_dir = run_boot_script(tmp_path, vm.kernel_cmdline(SlotLayout(slot=3), None))
    assert (network_dir / "20-public.network").read_text() == (
        "[Match]\n"
        f"MACAddress={image.PUBLIC_MAC}\n"
        "\n"
        "[Network]\n"
        "Address=203.0.113.58/28\n"
        "Address=2001:db8:3::10/64\n"
        "LinkLocalAddressing=ipv6\n"
        "IPv6AcceptRA=no\n")


def test_boot_script_with_an_ipv4_only_cmdline_writes_the_ipv4_address_alone(tmp_path):
    network_dir = run_boot_script(tmp_path, "root=/dev/vda vos.public=203.0.113.10/28")
    text = (network_dir / "20-public.network").read_text()
    assert "Address=203.0.113.10/28\n" in text and text.count("\nAddress=") == 1


def test_boot_script_without_public_addresses_writes_no_network_file(tmp_path):
    assert not run_boot_script(tmp_path, "root=/dev/vda console=ttyS0").exists()


def test_boot_script_change_moves_the_image_cache_key(monkeypatch):
    """The script is part of the recipe, so its IPv6 lines alone give a new cached image."""
    before = image.recipe_hash()
    monkeypatch.setattr(image, "BOOT_CONFIG_SCRIPT", image.BOOT_CONFIG_SCRIPT.replace(
        "vos.public6=*", "vos.publicv6=*"))
    assert image.recipe_hash() != before


# ------------------------------------------------------------------ the nmap argv


def test_tcp_over_ipv4_argv_is_unchanged_for_existing_callers():
    assert scanner.nmap_command("vos0-public", "203.0.113.10", "1-65535") == [
        "ip", "netns", "exec", "vos0-public",
        "nmap", "-Pn", "-n", "-sS", "-p", "1-65535",
        "--min-rate", "2000", "--max-retries", "2", "--host-timeout", "300s",
        "-oX", "-", "203.0.113.10"]


@pytest.mark.parametrize(("address", "protocol", "family", "kind", "rate"), [
    ("2001:db8::10", "tcp", ["-6"], "-sS", "2000"),
    ("203.0.113.10", "udp", [], "-sU", "5000"),
    ("2001:db8::10", "udp", ["-6"], "-sU", "5000"),
])
def test_argv_picks_the_family_from_the_address_and_the_scan_from_the_protocol(
        address, protocol, family, kind, rate):
    command = scanner.nmap_command("vos0-public", address, "1-65535", protocol)
    assert command[:4] == ["ip", "netns", "exec", "vos0-public"]
    assert command[4:9 + len(family)] == ["nmap", *family, "-Pn", "-n", kind, "-p"]
    assert command[command.index("--min-rate") + 1] == rate
    assert command[-3:] == ["-oX", "-", address]


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="tcp or udp"):
        scanner.nmap_command("vos0-public", "203.0.113.10", "1-65535", "sctp")


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_full_scan_of_a_silent_host_ends_well_inside_the_host_timeout(protocol):
    """Two probes a port (nmap retries each unanswered probe once when nothing answers)
    at the minimum rate: 65.5 s for TCP, 26.2 s for UDP (measured: 65.8 s and 26.5 s),
    against a 300 s host timeout that would make the scan raise."""
    worst = 2 * 65535 / scanner.MIN_RATE[protocol]
    assert worst * 2 < scanner.HOST_TIMEOUT_SECONDS


# ------------------------------------------------------------------ nmap's XML


def nmap_xml(ports: str, host: str = "") -> str:
    """A finished nmap run's XML with one host holding `ports` (the ``<ports>`` content)."""
    return (f'<nmaprun><host starttime="1796190615" endtime="1796190641"{host}>'
            '<status state="up" reason="arp-response" reason_ttl="0"/>'
            f"<ports>{ports}</ports></host>"
            '<runstats><finished exit="success"/><hosts up="1" down="0" total="1"/>'
            "</runstats></nmaprun>")


def silent_except_9999(protocol: str, state: str, reason: str) -> str:
    """Every port dropped but 9999, as nmap folds them: one ``<extraports>``."""
    silent = "open|filtered" if protocol == "udp" else "filtered"
    return nmap_xml(
        f'<extraports state="{silent}" count="65534"><extrareasons reason="no-response" '
        f'count="65534" proto="{protocol}" ports="1-9998,10000-65535"/></extraports>'
        f'<port protocol="{protocol}" portid="9999"><state state="{state}" reason="{reason}"'
        ' reason_ttl="64"/></port>')


def test_udp_answer_is_open():
    xml = silent_except_9999("udp", "open", "udp-response")
    assert scanner.parse_replies(xml, "udp") == {9999: "open"}


def test_udp_port_unreachable_is_closed_and_a_reply_too():
    xml = silent_except_9999("udp", "closed", "port-unreach")
    assert scanner.parse_replies(xml, "udp") == {9999: "closed"}


def test_udp_silence_and_icmp_prohibited_are_not_replies():
    """open|filtered: no answer (a drop, or a silent service such as WireGuard); filtered:
    an ICMP unreachable other than port-unreachable, a firewall's REJECT, not a way in."""
    xml = nmap_xml(
        '<extraports state="open|filtered" count="65533"><extrareasons reason="no-response"'
        ' count="65533" proto="udp" ports="1-52,54-41640,41642-65535"/></extraports>'
        '<port protocol="udp" portid="53"><state state="filtered" reason="admin-prohibited"'
        ' reason_ttl="64"/></port>'
        '<port protocol="udp" portid="41641"><state state="open|filtered" reason="no-response"'
        ' reason_ttl="0"/></port>')
    assert scanner.parse_replies(xml, "udp") == {}


def test_replies_nmap_folded_into_extraports_are_named_from_their_ranges():
    """More than 25 ports alike are folded: 100 closed ports (no firewall, no ICMP rate
    limit) still count, one by one."""
    xml = nmap_xml(
        '<extraports state="closed" count="100"><extrareasons reason="port-unreach"'
        ' count="100" proto="udp" ports="1-100"/></extraports>'
        '<port protocol="udp" portid="9999"><state state="open" reason="udp-response"'
        ' reason_ttl="64"/></port>')
    replies = scanner.parse_replies(xml, "udp")
    assert len(replies) == 101 and replies[1] == replies[100] == "closed"
    assert replies[9999] == "open" and list(replies) == sorted(replies)


def test_folded_replies_nmap_does_not_name_are_an_error_not_silence():
    xml = nmap_xml('<extraports state="closed" count="100"><extrareasons '
                   'reason="port-unreach" count="100"/></extraports>')
    with pytest.raises(StagingError, match="folded 100 closed ports"):
        scanner.parse_replies(xml, "udp")


def test_ipv6_tcp_reset_on_the_door_is_a_reply_but_not_open():
    """The hardened VM over IPv6: UFW lets 443 in, nothing listens on [::]:443."""
    xml = silent_except_9999("tcp", "closed", "reset").replace('"9999"', '"443"').replace(
        "1-9998,10000-65535", "1-442,444-65535")
    assert scanner.parse_replies(xml, "tcp") == {443: "closed"}
    assert scanner.parse_open_ports(xml) == []


def test_replies_are_read_for_the_asked_protocol_only():
    xml = silent_except_9999("udp", "open", "udp-response")
    assert scanner.parse_replies(xml, "tcp") == {}
    assert scanner.parse_open_ports(xml) == []


def test_a_scan_that_hit_the_host_timeout_raises_instead_of_looking_silent():
    """nmap's XML for a host it gave up on lists no port at all: read as "no replies", an
    overloaded machine would pass the UDP judgement."""
    xml = nmap_xml("", host=' timedout="true"').replace("<ports></ports>", "")
    with pytest.raises(StagingError, match="host-timeout"):
        scanner.parse_replies(xml, "udp")
    with pytest.raises(StagingError, match="host-timeout"):
        scanner.parse_open_ports(xml)


def test_a_scan_that_reached_no_host_raises():
    """A VM without its IPv6 address: nmap's neighbour discovery gets no answer, it
    reports "0 hosts up" and no <host> element."""
    with pytest.raises(StagingError, match="no host"):
        scanner.parse_replies('<nmaprun><runstats><hosts up="0" down="1" total="1"/>'
                              "</runstats></nmaprun>", "udp")


# ------------------------------------------------------------------ `vos staging scan`


class FakeLab:
    """Stands in for staging.lab.Lab: records what the CLI asked for."""

    calls: list[tuple] = []

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def scan(self, ports="1-65535", family=4):
        FakeLab.calls.append(("tcp", family, ports))
        return [443] if family == 4 else []

    def scan_replies(self, protocol="udp", family=4, ports="1-65535"):
        FakeLab.calls.append((protocol, family, ports))
        return {9999: "open"} if family == 4 else {}


@pytest.mark.parametrize(("options", "call", "output"), [
    ([], ("tcp", 4, "1-65535"), [443]),
    (["--ipv6"], ("tcp", 6, "1-65535"), []),
    (["--udp"], ("udp", 4, "1-65535"), {"9999": "open"}),
    (["--udp", "--ipv6", "--ports", "9999"], ("udp", 6, "9999"), {}),
])
def test_scan_command_options_pick_protocol_and_family(monkeypatch, options, call, output):
    monkeypatch.setattr(cli, "Lab", FakeLab)
    FakeLab.calls = []
    result = CliRunner().invoke(cli.staging_app, ["scan", "--json", *options])
    assert result.exit_code == 0, result.output
    assert FakeLab.calls == [call]
    assert json.loads(result.output) == output


def test_scan_command_text_names_what_replied(monkeypatch):
    monkeypatch.setattr(cli, "Lab", FakeLab)
    assert CliRunner().invoke(cli.staging_app, ["scan"]).output == "open TCP ports: 443\n"
    assert CliRunner().invoke(cli.staging_app, ["scan", "--udp"]).output == (
        "UDP ports that replied: 9999 (open)\n")
    assert CliRunner().invoke(cli.staging_app, ["scan", "--udp", "--ipv6"]).output == (
        "UDP ports that replied (IPv6): none\n")
