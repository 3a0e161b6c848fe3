"""The public network: a network namespace that plays "the internet" for one staging slot.

Inside the namespace ``vosN-public`` a bridge ``vosN-br`` (203.0.113.<16N+1>/28 and
2001:db8:N::1/64, where the scanner stands) joins the VM's public tap NIC and one end of a
veth pair. The other end, ``vosN-op`` (.2), stays on the operator host, so pyinfra on the
host reaches the VM's public address like a first login over the internet, and the mesh's
WireGuard packets travel the same way Tailscale's would. IPv6 stops at the namespace: only
the scanner talks to the VM's public IPv6 address (pyinfra and the mesh use IPv4), so the
operator host needs no IPv6 address of its own.

A slot is claimed by creating its namespace: ``ip netns add`` fails if it exists, which makes
the claim atomic between concurrent `staging up` runs.

Example:
    >>> layout = claim_slot()          # creates vos0-public (or the next free one)
    >>> create_public_network(layout)
    >>> destroy_public_network(layout)
"""

from __future__ import annotations

from staging.proc import StagingError, progress, run
from staging.state import MAX_SLOTS, SlotLayout


def existing_netns() -> set[str]:
    """Names of the network namespaces on this host."""
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def claim_slot() -> SlotLayout:
    """Create the first free ``vosN-public`` namespace and return that slot's layout."""
    for slot in range(MAX_SLOTS):
        layout = SlotLayout(slot=slot)
        if layout.netns in existing_netns():
            continue
        if run(["ip", "netns", "add", layout.netns], check=False).returncode == 0:
            progress(f"network: claimed slot {slot} (namespace {layout.netns})")
            return layout
    raise StagingError(
        f"all {MAX_SLOTS} staging slots are taken (ip netns list); "
        "run `vos staging destroy` in the state dirs that own them"
    )


def create_public_network(layout: SlotLayout) -> None:
    """Bridge + veth inside the claimed namespace; host end gets the operator address.

    The bridge carries the scanner's addresses (IPv4 and IPv6); the VM's come from its
    kernel command line (staging/vm.py).
    """
    ns = ["ip", "-n", layout.netns]
    progress(f"network: public {layout.public_network} and {layout.public6_network} "
             f"in {layout.netns}")
    run([*ns, "link", "set", "lo", "up"])
    # ageing_time 0: a hub, no MAC learning. Every VM of a slot uses the same MACs (baked
    # into the image), one after another; a learning bridge could keep sending to a gone tap.
    # mcast_snooping 0: a hub for multicast too, so IPv6 neighbour discovery never waits on
    # the bridge having heard the VM's MLD report.
    run([*ns, "link", "add", layout.bridge, "type", "bridge", "ageing_time", "0",
         "mcast_snooping", "0"])
    run([*ns, "addr", "add", f"{layout.scanner_public}/{layout.public_prefix_len}",
         "dev", layout.bridge])
    # nodad: usable at once, not "tentative" for the ~1 s of Duplicate Address Detection
    # (a scan started in that second would find no source address); the /64 is ours alone.
    run([*ns, "-6", "addr", "add", f"{layout.scanner_public6}/{layout.public6_prefix_len}",
         "dev", layout.bridge, "nodad"])
    run([*ns, "link", "set", layout.bridge, "up"])
    run(["ip", "link", "add", layout.host_veth, "type", "veth", "peer", "name", layout.ns_veth])
    run(["ip", "link", "set", layout.ns_veth, "netns", layout.netns])
    run([*ns, "link", "set", layout.ns_veth, "master", layout.bridge])
    run([*ns, "link", "set", layout.ns_veth, "up"])
    run(["ip", "addr", "add", f"{layout.operator_public}/{layout.public_prefix_len}",
         "dev", layout.host_veth])
    run(["ip", "link", "set", layout.host_veth, "up"])


def create_tap(layout: SlotLayout, index: int) -> str:
    """A persistent tap in the host namespace, for QEMU to open by name before it moves."""
    name = layout.tap(index)
    run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
    return name


def move_tap_to_public(layout: SlotLayout, tap: str) -> None:
    """After QEMU holds the tap open, move it into the namespace and onto the bridge.

    The open file descriptor keeps working across the move, while QEMU itself (and its
    user-mode egress NIC) stays in the host namespace where the mirror is reachable.
    """
    run(["ip", "link", "set", tap, "netns", layout.netns])
    run(["ip", "-n", layout.netns, "link", "set", tap, "master", layout.bridge])
    run(["ip", "-n", layout.netns, "link", "set", tap, "up"])


def delete_tap(layout: SlotLayout, tap: str) -> None:
    """Remove a tap wherever it is (host or the slot's namespace); absent is fine."""
    run(["ip", "-n", layout.netns, "link", "del", tap], check=False)
    run(["ip", "link", "del", tap], check=False)


def destroy_public_network(layout: SlotLayout) -> None:
    """Delete the veth (both ends go) and the namespace with everything left in it."""
    run(["ip", "link", "del", layout.host_veth], check=False)
    if layout.netns in existing_netns():
        run(["ip", "netns", "del", layout.netns], check=False)


def slot_interfaces(layout: SlotLayout) -> list[str]:
    """Host-namespace interfaces that belong to this slot (for destroy's leak check)."""
    out = run(["ip", "-o", "link", "show"]).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [name for name in names if name.startswith(f"{layout.prefix}-")]
