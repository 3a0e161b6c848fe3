"""SSH role: hardened sshd drop-in (INVARIANTS.md §6-7) and the lockout-safe cutover (§8).

Every file reaches sshd only through `sshd -t` (roles/ops/sshd.validated_dropin), then a
reload. Debian runs `ssh.service` with `ListenAddress`; Ubuntu 24.04 activates sshd from
`ssh.socket`, where the listen addresses live in a socket drop-in with `FreeBind=yes`
(a mesh address absent at boot would otherwise stop the socket from starting).

Example (inside deploys/full.py):
    ssh.harden(allow_users=["deploy"])
    ssh.cutover(mesh_ip="100.64.0.2", user="deploy", key_file="~/.ssh/id_ed25519")
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.systemd import SystemdEnabled
from pyinfra.operations import files, server, systemd

from roles._paths import template
from roles.ops import sshd, ufw

HARDENING_DROPIN = "/etc/ssh/sshd_config.d/00-vos-hardening.conf"
LISTEN_DROPIN = "/etc/ssh/sshd_config.d/10-vos-listen.conf"
SOCKET_DROPIN = "/etc/systemd/system/ssh.socket.d/vos-listen.conf"
SERVICE_MESH_DROPIN = "/etc/systemd/system/ssh.service.d/vos-mesh.conf"
RSA_HOST_KEY = "/etc/ssh/ssh_host_rsa_key"

# ssh-audit's built-in "Hardened Ubuntu Server 24.04 LTS (version 2)" policy, exactly: the
# policy compares these lists as a whole, so adding mlkem768x25519 (offered by OpenSSH 10)
# or dropping the aes-ctr ciphers fails it. All MACs are encrypt-then-MAC.
KEX_ALGORITHMS = [
    "sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
    "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
]
CIPHERS = [
    "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes256-ctr", "aes192-ctr",
    "aes128-gcm@openssh.com", "aes128-ctr",
]
MACS = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
        "umac-128-etm@openssh.com"]
HOST_KEY_ALGORITHMS = ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]


def socket_activated() -> bool:
    """True when sshd is started by `ssh.socket` (Ubuntu 24.04's default).

    Example:
        if socket_activated(): ...
    """
    enabled = host.get_fact(SystemdEnabled, services=["ssh.socket"], _sudo=True) or {}
    return bool(enabled.get("ssh.socket"))


def cutover_done() -> bool:
    """True once the listen drop-in of a previous cutover is on the host.

    Example:
        firewall.ufw_baseline(..., public_ssh=not ssh.cutover_done())
    """
    path = SOCKET_DROPIN if socket_activated() else LISTEN_DROPIN
    return bool(host.get_fact(File, path=path, _sudo=True))


@deploy("SSH hardening")
def harden(allow_users: list[str], max_auth_tries: int = 3, login_grace_time: int = 30,
           client_alive_count_max: int = 2, max_sessions: int = 4):
    """Host keys and moduli for the ssh-audit policy, then the validated drop-in, then reload.

    Example:
        harden(allow_users=["deploy"])
    """
    if not allow_users:
        raise ValueError("ssh.harden: allow_users is empty; sshd would refuse everyone. "
                         "Set the deploy user in the inventory.")
    bits = host.get_fact(sshd.HostKeyBits, path=f"{RSA_HOST_KEY}.pub", _sudo=True)
    if bits is None or bits < 4096:
        server.shell(
            name="RSA host key: 4096 bits (ssh-audit policy)",
            commands=[f"rm -f {RSA_HOST_KEY} {RSA_HOST_KEY}.pub",
                      f"ssh-keygen -q -t rsa -b 4096 -N '' -f {RSA_HOST_KEY}"],
            _sudo=True,
        )
    if host.get_fact(sshd.SmallModuli, _sudo=True):
        server.shell(
            name="DH moduli: keep >= 3072 bits only (ssh-audit policy)",
            commands=["awk '$1 ~ /^#/ || $5 >= 3071' /etc/ssh/moduli > /etc/ssh/moduli.vos "
                      "&& mv /etc/ssh/moduli.vos /etc/ssh/moduli"],
            _sudo=True,
        )
    dropin = sshd.validated_dropin(
        name="sshd hardening drop-in (validated with sshd -t)",
        src=template("ssh/00-vos-hardening.conf.j2"),
        dest=HARDENING_DROPIN,
        allow_users=allow_users, max_auth_tries=max_auth_tries,
        login_grace_time=login_grace_time, client_alive_count_max=client_alive_count_max,
        max_sessions=max_sessions,
        kex_algorithms=KEX_ALGORITHMS, ciphers=CIPHERS, macs=MACS,
        host_key_algorithms=HOST_KEY_ALGORITHMS,
        _sudo=True,
    )
    systemd.service(name="sshd reload (config changed)", service="ssh.service",
                    running=True, reloaded=True, _if=dropin.did_change, _sudo=True)


@deploy("SSH cutover to the mesh")
def cutover(mesh_ip: str, user: str, key_file: str | None = None,
            known_hosts_file: str | None = None, mesh_wait_seconds: int = 60):
    """Prove SSH over the mesh from the operator side, then listen on the mesh IP and
    loopback only, then close public SSH in UFW. Stops before any change if the probe fails.

    Example:
        cutover(mesh_ip="100.64.0.2", user="deploy", key_file="/home/me/.ssh/id_ed25519")
    """
    sshd.mesh_ssh_verified(name=f"Cutover: prove SSH over the mesh ({user}@{mesh_ip})",
                           address=mesh_ip, user=user, key_file=key_file,
                           known_hosts_file=known_hosts_file)
    addresses = [mesh_ip, "127.0.0.1"]
    if socket_activated():
        _listen_via_socket(addresses)
    else:
        _listen_via_service(addresses, mesh_ip, mesh_wait_seconds)
    ufw.rule(name="Cutover: close public SSH in UFW", rule="allow 22/tcp", present=False,
             _sudo=True)


def _listen_via_service(addresses: list[str], mesh_ip: str, wait_seconds: int) -> None:
    """Debian: ListenAddress drop-in (validated) and a bounded wait for the mesh at boot."""
    wait = files.template(
        name="ssh.service waits (bounded) for the mesh address at boot",
        src=template("ssh/ssh.service-vos-mesh.conf.j2"),
        dest=SERVICE_MESH_DROPIN,
        user="root", group="root", mode=644,
        mesh_ip=mesh_ip, wait_seconds=wait_seconds,
        _sudo=True,
    )
    systemd.daemon_reload(name="systemd daemon-reload (ssh.service drop-in)",
                          _if=wait.did_change, _sudo=True)
    listen = sshd.validated_dropin(
        name="Cutover: sshd listens on the mesh IP and loopback only (validated)",
        src=template("ssh/10-vos-listen.conf.j2"),
        dest=LISTEN_DROPIN,
        listen_addresses=addresses,
        _sudo=True,
    )
    systemd.service(name="Cutover: sshd reload (listen addresses)", service="ssh.service",
                    running=True, reloaded=True, _if=listen.did_change, _sudo=True)


def _listen_via_socket(addresses: list[str]) -> None:
    """Ubuntu 24.04: the listen addresses live in ssh.socket; restart the socket on change."""
    socket = files.template(
        name="Cutover: ssh.socket listens on the mesh IP and loopback only (FreeBind)",
        src=template("ssh/ssh.socket-vos-listen.conf.j2"),
        dest=SOCKET_DROPIN,
        user="root", group="root", mode=644,
        listen_addresses=addresses,
        _sudo=True,
    )
    systemd.daemon_reload(name="systemd daemon-reload (ssh.socket drop-in)",
                          _if=socket.did_change, _sudo=True)
    systemd.service(name="Cutover: restart ssh.socket (listen addresses)", service="ssh.socket",
                    running=True, restarted=True, _if=socket.did_change, _sudo=True)
