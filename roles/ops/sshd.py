"""sshd facts and operations pyinfra does not ship: a drop-in validated by `sshd -t` before it
can take effect, host-key size and DH-moduli facts, and the operator-side mesh SSH probe.

Example (inside a `@deploy` function):
    dropin = sshd.validated_dropin(src="…/00-vos-hardening.conf.j2",
                                   dest="/etc/ssh/sshd_config.d/00-vos-hardening.conf", …)
    systemd.service(service="ssh.service", reloaded=True, _if=dropin.did_change)
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from io import StringIO

from pyinfra import host, state
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.util import get_template
from pyinfra.facts.files import Sha1File

SSHD_TEST = "mkdir -p /run/sshd && /usr/sbin/sshd -t"


def render(src: str, **data) -> str:
    """Render one Jinja2 template file with `data`.

    Example:
        render("templates/ssh/10-vos-listen.conf.j2", listen_addresses=["127.0.0.1"])
    """
    return get_template(src).render(data)


def swap_and_test_script(dest: str, candidate: str, test_command: str) -> str:
    """Shell that moves the candidate in place, runs the test, and restores the previous file
    (or removes the new one) when the test fails, so a bad drop-in never reaches a reload.

    Example:
        >>> "sshd -t" in swap_and_test_script("/a.conf", "/a.conf.new", "sshd -t")
        True
    """
    previous = f"{dest}.vos-previous"
    q = shlex.quote
    return (
        f"chown root:root {q(candidate)} && chmod 644 {q(candidate)} && "
        f"if [ -e {q(dest)} ]; then cp -p {q(dest)} {q(previous)}; fi && "
        f"mv {q(candidate)} {q(dest)} && "
        f"if ! ( {test_command} ); then "
        f"if [ -e {q(previous)} ]; then mv {q(previous)} {q(dest)}; else rm -f {q(dest)}; fi; "
        f"echo {q(f'rejected {dest}: `{test_command}` failed; previous config kept')} >&2; "
        f"exit 1; fi; rm -f {q(previous)}"
    )


@operation()
def validated_dropin(src: str, dest: str, test_command: str = SSHD_TEST, **data):
    """Place a rendered config file only if `test_command` accepts it (restore otherwise).

    Example:
        validated_dropin(src=template("ssh/00-vos-hardening.conf.j2"),
                         dest="/etc/ssh/sshd_config.d/00-vos-hardening.conf",
                         allow_users=["deploy"])
    """
    content = render(src, **data)
    wanted = hashlib.sha1(content.encode()).hexdigest()
    if host.get_fact(Sha1File, path=dest) == wanted:
        host.noop(f"{dest} is already up to date")
        return
    candidate = f"{dest}.vos-candidate"
    yield FileUploadCommand(
        StringIO(content), candidate, remote_temp_filename=host.get_temp_filename(candidate)
    )
    yield swap_and_test_script(dest, candidate, test_command)


class HostKeyBits(FactBase):
    """Size in bits of one host key (None when absent).

    Example value: 3072
    """

    def command(self, path: str) -> str:
        return f"ssh-keygen -lf {shlex.quote(path)} 2>/dev/null | cut -d' ' -f1 || true"

    def process(self, output: list[str]) -> int | None:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else None


class SmallModuli(FactBase):
    """Number of Diffie-Hellman group-exchange moduli smaller than 3072 bits in /etc/ssh/moduli.

    Example value: 61
    """

    def command(self) -> str:
        return (
            "if [ -f /etc/ssh/moduli ]; then awk '$1 !~ /^#/ && NF >= 7 && $5 < 3071' "
            "/etc/ssh/moduli | wc -l; else echo 0; fi"
        )

    def process(self, output: list[str]) -> int:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else 0


def ssh_probe_command(address: str, user: str, key_file: str | None,
                      known_hosts_file: str | None, timeout: int = 15) -> list[str]:
    """The operator-side OpenSSH command that proves a login over `address`.

    Example:
        >>> ssh_probe_command("100.64.0.2", "deploy", None, None)[-2:]
        ['deploy@100.64.0.2', 'true']
    """
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]
    if known_hosts_file:
        command += ["-o", f"UserKnownHostsFile={known_hosts_file}",
                    "-o", "StrictHostKeyChecking=accept-new"]
    if key_file:
        command += ["-o", "IdentitiesOnly=yes", "-i", key_file]
    return command + [f"{user}@{address}", "true"]


def probe_mesh_ssh(address: str, user: str, key_file: str | None,
                   known_hosts_file: str | None, timeout: int = 15) -> str | None:
    """Run the probe from the operator's machine; None on success, else the reason.

    Example:
        probe_mesh_ssh("100.64.0.2", "deploy", "~/.ssh/id_ed25519", None)  # -> None
    """
    command = ssh_probe_command(address, user, key_file, known_hosts_file, timeout)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)} did not finish: {exc}"
    if done.returncode == 0:
        return None
    detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"`{' '.join(command)}` exited {done.returncode}: {detail[0]}"


@operation(is_idempotent=True)
def mesh_ssh_verified(address: str, user: str, key_file: str | None = None,
                      known_hosts_file: str | None = None):
    """At execution time, prove SSH over the mesh from the operator side; on failure stop the
    deploy here, with public SSH untouched, and print why and what to do. Yields nothing when
    the probe succeeds, so it is not a change. Under `--dry` nothing is probed.

    Example:
        mesh_ssh_verified(address="100.64.0.2", user="deploy", key_file="~/.ssh/id_ed25519")
    """
    if not state.is_executing:
        host.noop(f"SSH over the mesh ({user}@{address}) is probed at execution time")
        return
    reason = probe_mesh_ssh(address, user, key_file, known_hosts_file)
    if reason is None:
        host.noop(f"SSH over the mesh works ({user}@{address}); the cutover may proceed")
        return
    message = (
        f"CUTOVER STOPPED: SSH over the mesh to {user}@{address} failed from the operator side "
        f"({reason}). Public SSH is left open and unchanged. Fix the mesh (is the operator "
        f"joined? `ping {address}`, `wg show` / `tailscale status`) and run the deploy again."
    )
    yield StringCommand("echo", shlex.quote(message), ">&2;", "exit", "1")
