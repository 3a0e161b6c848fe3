"""The operator's side of the mesh: a userspace WireGuard (wireguard-go) interface.

Stands in for the operator's Tailscale node. The host kernel has no wireguard module, so
``wireguard-go vosN-mesh`` provides the interface (100.64.N.1/24); the VM's side is set up by
`roles/mesh.py` as ``tailscale0`` (100.64.N.2). The VM's endpoint is its public address, so
mesh packets cross the public network exactly as Tailscale's would cross the internet.

wireguard-go keeps its control socket in ``/var/run/wireguard/<iface>.sock``; the interface
name is unique per slot, and destroy removes the socket with the process.

Example:
    >>> private, public = generate_keypair(Path("/tmp/k"), "operator")
    >>> pid = start_operator_side(layout, private, vm_public_key=..., log=Path("/tmp/wg.log"))
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from staging.proc import StagingError, progress, run, wait_until
from staging.state import SlotLayout

SOCKET_DIR = Path("/var/run/wireguard")


def generate_keypair(directory: Path, name: str) -> tuple[Path, str]:
    """Write ``<name>.wgkey`` (0600) and return (path, public key)."""
    private = run(["wg", "genkey"]).stdout.strip()
    path = directory / f"{name}.wgkey"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private + "\n")
    public = run(["wg", "pubkey"], input=private + "\n").stdout.strip()
    return path, public


def socket_path(layout: SlotLayout) -> Path:
    return SOCKET_DIR / f"{layout.mesh_interface}.sock"


def start_operator_side(
    layout: SlotLayout, private_key: Path, vm_public_key: str, log: Path
) -> int:
    """Start wireguard-go, configure the peer (the VM) and the address; return its pid."""
    progress(f"mesh: wireguard-go {layout.mesh_interface} {layout.operator_mesh}/24")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["wireguard-go", layout.mesh_interface],
            env={**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"},
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `vos staging up`; destroy stops it by pid
        )
    if not wait_until(lambda: socket_path(layout).exists(), timeout=15, interval=0.2):
        process.kill()
        raise StagingError(f"wireguard-go did not create {socket_path(layout)}; see {log}")
    run(
        [
            "wg", "set", layout.mesh_interface,
            "listen-port", str(layout.operator_mesh_port),
            "private-key", str(private_key),
            "peer", vm_public_key,
            "allowed-ips", f"{layout.vm_mesh}/32",
            "endpoint", f"{layout.vm_public}:{layout.vm_mesh_port}",
            "persistent-keepalive", "25",
        ]
    )
    run(["ip", "addr", "add", f"{layout.operator_mesh}/{layout.mesh_prefix_len}",
         "dev", layout.mesh_interface])
    run(["ip", "link", "set", layout.mesh_interface, "up"])
    return process.pid


def stop_operator_side(layout: SlotLayout, pid: int | None) -> None:
    """Stop wireguard-go by its pid; remove the interface and socket if they linger."""
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), timeout=10, interval=0.2):
            os.kill(pid, signal.SIGKILL)
    run(["ip", "link", "del", layout.mesh_interface], check=False)
    socket_path(layout).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def latest_handshake(layout: SlotLayout) -> int:
    """Unix time of the last handshake with the VM, 0 if none yet."""
    out = run(["wg", "show", layout.mesh_interface, "latest-handshakes"], check=False).stdout
    for line in out.splitlines():
        return int(line.split()[1])
    return 0
