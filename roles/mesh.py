"""Mesh role: put the host on the private mesh as ``tailscale0`` and read its mesh IP back.

Two providers behind one interface name, so firewall rules (`allow in on tailscale0`) and
sshd's listen address work the same in staging and production:

* ``tailscale`` (production): Tailscale's apt repository and signing key, ``tailscaled``,
  ``tailscale up --authkey`` with the key from the operator's environment (masked in output).
* ``wireguard`` (staging): a plain WireGuard interface via ``wg-quick@tailscale0`` whose one
  peer is the operator's wireguard-go (Tailscale cannot be downloaded in the sandbox).

Either way the step ends by reading the interface's IPv4 address as a fact and failing the
deploy when there is none (or it differs from the inventory's expectation), and, for
wireguard, waiting (bounded) for a handshake with the operator, so a later SSH cutover onto
the mesh never starts from a dead mesh.

Example (deploys/full.py):
    mesh.configure(settings.mesh)
"""

from __future__ import annotations

import re

from pyinfra import host, logger
from pyinfra.api import FactBase, HiddenValue, OperationError, deploy
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, python, server, systemd

from roles._paths import template
from roles.settings import HostSettings, MeshSettings, TailscaleMesh, WireguardMesh

TAILSCALE_KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
HANDSHAKE_WAIT_SECONDS = 30


class MeshAddress(FactBase):
    """IPv4 address (no prefix) on a network interface, or None when it has none.

    Example:
        host.get_fact(MeshAddress, interface="tailscale0")  # -> "100.64.0.2"
    """

    def command(self, interface: str) -> str:
        return f"ip -4 -o addr show dev {interface} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", line)
            if match:
                return match.group(1)
        return None


class TailscaleAddress(FactBase):
    """``tailscale ip -4`` — the node's Tailscale IPv4, or None before `tailscale up`."""

    def command(self) -> str:
        return "tailscale ip -4 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", line.strip()):
                return line.strip()
        return None


def wireguard_config(settings: WireguardMesh) -> dict[str, object]:
    """Template variables for templates/wireguard/tailscale0.conf.j2.

    Example:
        >>> wireguard_config(settings)["peer_endpoint"]
        '203.0.113.2:51820'
    """
    return {
        "address": str(settings.address),
        "prefix_len": settings.prefix_len,
        "private_key": settings.private_key(),
        "listen_port": settings.listen_port,
        "peer_public_key": settings.peer_public_key,
        "peer_address": str(settings.peer_address),
        "peer_endpoint": settings.peer_endpoint,
    }


def resolved_mesh_ip(settings: HostSettings) -> str | None:
    """The host's mesh IP: the inventory's when it knows it, else the address on the mesh
    interface now (None while the mesh has not come up yet: Tailscale assigns it).

    Example (deploys/full.py, deploys/stack.py):
        mesh_ip = resolved_mesh_ip(settings)
    """
    if settings.mesh_ip:
        return settings.mesh_ip
    return host.get_fact(MeshAddress, interface=settings.mesh.interface, _sudo=True)


def _verify_address(interface: str, expected: str | None) -> None:
    """Runs at execution time: read the mesh IP back and compare with the inventory."""
    address = host.get_fact(MeshAddress, interface=interface, _sudo=True)
    if address is None:
        raise OperationError(f"{interface} has no IPv4 address after the mesh step")
    if expected and address != expected:
        raise OperationError(f"{interface} has {address}, the inventory expects {expected}")
    logger.info(f"{host.print_prefix}mesh address on {interface}: {address}")


@deploy("Mesh: WireGuard as tailscale0 (staging stand-in for Tailscale)")
def wireguard(settings: WireguardMesh, interface: str = "tailscale0"):
    """wireguard-tools, the config (0600 root), wg-quick@tailscale0 enabled and running."""
    apt.packages(name="Install wireguard-tools", packages=["wireguard-tools"], _sudo=True)
    config = files.template(
        name=f"WireGuard config /etc/wireguard/{interface}.conf (0600)",
        src=template("wireguard/tailscale0.conf.j2"),
        dest=f"/etc/wireguard/{interface}.conf",
        user="root",
        group="root",
        mode="600",
        _sudo=True,
        **wireguard_config(settings),
    )
    started = systemd.service(
        name=f"wg-quick@{interface} enabled and running",
        service=f"wg-quick@{interface}",
        running=True,
        enabled=True,
        _sudo=True,
    )
    restarted = systemd.service(
        name=f"Restart wg-quick@{interface} (config changed)",
        service=f"wg-quick@{interface}",
        restarted=True,
        _sudo=True,
        _if=lambda: config.did_change() and not started.did_change(),
    )

    def mesh_changed() -> bool:
        return config.did_change() or started.did_change() or restarted.did_change()

    # The two checks below run only when the mesh changed, so an idempotent re-run reports
    # no changes; when nothing changed, the address read at plan time is shown instead.
    current = host.get_fact(MeshAddress, interface=interface, _sudo=True)
    if current:
        logger.info(f"{host.print_prefix}mesh address on {interface} (before): {current}")
    server.shell(
        name=f"Wait (≤{HANDSHAKE_WAIT_SECONDS} s) for a handshake with the operator",
        commands=[
            f"for i in $(seq {HANDSHAKE_WAIT_SECONDS}); do "
            f"wg show {interface} latest-handshakes | awk '$2 > 0 {{ok=1}} END {{exit !ok}}' "
            "&& exit 0; sleep 1; done; "
            f"echo 'no WireGuard handshake with the operator on {interface}' >&2; exit 1"
        ],
        _sudo=True,
        _if=mesh_changed,
    )
    python.call(
        name=f"Read the mesh address of {interface} back",
        function=_verify_address,
        interface=interface,
        expected=str(settings.address),
        _if=mesh_changed,
    )


@deploy("Mesh: Tailscale")
def tailscale(settings: TailscaleMesh, authkey: str, interface: str = "tailscale0"):
    """Tailscale's apt repo + key, tailscaled, `tailscale up` once, mesh IP read back."""
    distro = host.get_fact(LinuxDistribution)
    distro_id = (distro["release_meta"].get("ID") or "ubuntu").lower()
    codename = distro["release_meta"].get("VERSION_CODENAME") or "noble"
    base = f"https://pkgs.tailscale.com/stable/{distro_id}"
    key = files.download(
        name="Tailscale's apt signing key",
        src=f"{base}/{codename}.noarmor.gpg",
        dest=TAILSCALE_KEYRING,
        mode="644",
        _sudo=True,
    )
    repo = apt.repo(
        name="Tailscale's apt repository",
        src=f"deb [signed-by={TAILSCALE_KEYRING}] {base} {codename} main",
        filename="tailscale",
        _sudo=True,
    )
    apt.update(name="apt update (new repository)", _sudo=True,
               _if=lambda: key.did_change() or repo.did_change())
    apt.packages(name="Install tailscale", packages=["tailscale"], _sudo=True)
    systemd.service(name="tailscaled enabled and running", service="tailscaled",
                    running=True, enabled=True, _sudo=True)
    if host.get_fact(TailscaleAddress) is None:
        hostname = f" --hostname={settings.hostname}" if settings.hostname else ""
        server.shell(
            name="tailscale up (auth key from the operator's environment, masked)",
            commands=[f'tailscale up --auth-key="$TS_AUTHKEY"{hostname}'],
            _env={"TS_AUTHKEY": HiddenValue(authkey)},
            _sudo=True,
        )
    expected = str(settings.expected_address) if settings.expected_address else None
    python.call(name=f"Read the mesh address of {interface} back", function=_verify_address,
                interface=interface, expected=expected)


def configure(settings: MeshSettings) -> None:
    """Dispatch to the provider named in the inventory."""
    if settings.provider == "wireguard":
        wireguard(settings.wireguard, interface=settings.interface)
    else:
        tailscale(settings.tailscale, authkey=settings.tailscale.authkey(),
                  interface=settings.interface)
