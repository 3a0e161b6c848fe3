"""QEMU for the staging VM: accelerator choice, overlays, boot, bounded waits, shutdown.

Each VM boots its kernel directly (no bootloader) from a qcow2 overlay on a read-only backing
disk: the cached base image, or a converged snapshot. Two NICs:

* ``egress`` — QEMU user networking (NAT through the host), DHCP, default route: apt and PyPI.
* ``public`` — a tap that is moved into the slot's public namespace once QEMU holds it open.

Example:
    >>> accel_args()                      # ['-accel', 'tcg,thread=multi', '-cpu', 'max'] here
    >>> record = boot_vm(...)             # returns once QEMU runs; then wait_for_ssh(...)
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from staging.image import EGRESS_MAC, PUBLIC_MAC
from staging.mesh import pid_alive
from staging.proc import StagingError, progress, run, wait_until
from staging.state import SlotLayout, VmRecord

MEMORY_MIB = 2048
CPUS = 2
DEFAULT_BOOT_TIMEOUT = float(os.environ.get("VOS_STAGING_BOOT_TIMEOUT", "240"))
KEY_REFUSED_GRACE = 20.0


def kvm_usable() -> bool:
    """KVM only when the CPU advertises vmx/svm *and* /dev/kvm opens (see STAGING.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if not re.search(r"\b(vmx|svm)\b", flags):
        return False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def accel_args(warn: bool = True) -> list[str]:
    """QEMU accelerator arguments; warns once when falling back to TCG (slow, emulated)."""
    if kvm_usable():
        return ["-accel", "kvm", "-cpu", "host"]
    if warn:
        progress("WARNING: no usable KVM (no vmx/svm or /dev/kvm fails): using TCG, "
                 "expect ~30-60 s to boot and minutes to converge")
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def create_overlay(overlay: Path, backing: Path) -> None:
    """A fresh copy-on-write disk; the backing file is never written."""
    backing_format = "raw" if backing.suffix == ".raw" else "qcow2"
    overlay.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_format,
         str(overlay)])


def kernel_cmdline(layout: SlotLayout, authorized_key: str | None) -> str:
    """Kernel arguments: root disk, serial console, and the per-boot settings (the public
    IPv4 and IPv6 addresses, the operator's key), applied by the image's boot script.

    Example:
        >>> kernel_cmdline(SlotLayout(slot=3), None).split()[-2:]
        ['vos.public=203.0.113.58/28', 'vos.public6=2001:db8:3::10/64']
    """
    words = [
        "root=/dev/vda", "rw", "console=ttyS0", "panic=1", "net.ifnames=0",
        f"vos.public={layout.vm_public}/{layout.public_prefix_len}",
        f"vos.public6={layout.vm_public6}/{layout.public6_prefix_len}",
    ]
    if authorized_key:
        encoded = base64.b64encode(authorized_key.strip().encode()).decode()
        words.append(f"vos.authorized_key={encoded}")
    return " ".join(words)


def boot_vm(
    *,
    name: str,
    layout: SlotLayout,
    tap: str,
    directory: Path,
    backing: Path,
    kernel: Path,
    initrd: Path,
    authorized_key: str | None,
    new_overlay: bool = True,
) -> VmRecord:
    """Start QEMU daemonized on an overlay of `backing`; return its record (pid, files)."""
    overlay = directory / f"{name}.qcow2"
    if new_overlay or not overlay.exists():
        create_overlay(overlay, backing)
    console = directory / f"{name}.console.log"
    monitor = directory / f"{name}.monitor.sock"
    pidfile = directory / f"{name}.pid"
    for stale in (console, monitor, pidfile):
        stale.unlink(missing_ok=True)
    command = [
        "qemu-system-x86_64",
        "-name", f"vos-staging-{layout.slot}-{name}",
        "-machine", "q35",
        *accel_args(),
        "-smp", str(CPUS),
        "-m", str(MEMORY_MIB),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", kernel_cmdline(layout, authorized_key),
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-netdev", "user,id=egress",
        "-device", f"virtio-net-pci,netdev=egress,mac={EGRESS_MAC}",
        "-netdev", f"tap,id=public,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=public,mac={PUBLIC_MAC}",
        "-object", "rng-random,filename=/dev/urandom,id=rng0",
        "-device", "virtio-rng-pci,rng=rng0",
        "-serial", f"file:{console}",
        "-monitor", f"unix:{monitor},server=on,wait=off",
        "-pidfile", str(pidfile),
        "-daemonize",
    ]
    progress(f"vm: booting {name} from {overlay.name} (backing {backing.name})")
    run(command, timeout=60)
    pid = int(pidfile.read_text().strip())
    return VmRecord(
        name=name,
        pid=pid,
        tap=tap,
        overlay=str(overlay),
        backing=str(backing),
        console_log=str(console),
        monitor_socket=str(monitor),
    )


def console_tail(record: VmRecord, lines: int = 25) -> str:
    """Last lines of the serial console, for error messages."""
    try:
        text = Path(record.console_log).read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])


def tcp_open(address: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connect to address:port succeeds within `timeout`."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_ssh(
    record: VmRecord,
    target: Callable[[], tuple[list[str], str]],
    timeout: float = DEFAULT_BOOT_TIMEOUT,
) -> float:
    """Wait until `ssh … true` succeeds on `target()` (argv, address); return seconds waited.

    Bounded: fails with the console tail when QEMU dies, when sshd never answers, or when it
    answers but refuses the operator's key (the "no SSH key" case), instead of hanging.
    """
    started = time.monotonic()
    deadline = started + timeout
    port_seen = False
    last_error = ""
    address = "?"
    refused_since: float | None = None
    while time.monotonic() < deadline:
        ssh_command, address = target()
        if not pid_alive(record.pid):
            raise StagingError(
                f"QEMU for {record.name} exited during boot. Console tail:\n"
                f"{console_tail(record)}\nSee {record.console_log}"
            )
        if tcp_open(address, 22):
            port_seen = True
            try:
                result = subprocess.run(
                    [*ssh_command, "true"], capture_output=True, text=True, timeout=30
                )
            except subprocess.TimeoutExpired:
                last_error = "ssh did not complete within 30 s"
            else:
                if result.returncode == 0:
                    return time.monotonic() - started
                last_error = result.stderr.strip()[-500:]
                if "Permission denied" in last_error:
                    # The key is installed before sshd starts, so a refusal that lasts is
                    # final: fail now instead of waiting out the whole timeout.
                    refused_since = refused_since or time.monotonic()
                    if time.monotonic() - refused_since > KEY_REFUSED_GRACE:
                        break
                else:
                    refused_since = None
        time.sleep(2)
    if port_seen:
        reason = (
            f"sshd on {address}:22 answers but the operator key is refused ({last_error}). "
            "Was the VM booted without the operator's SSH key (vos.authorized_key)?"
        )
    else:
        reason = f"nothing answered on {address}:22"
    raise StagingError(
        f"VM {record.name} not reachable over SSH after {time.monotonic() - started:.0f} s "
        f"(limit {timeout:.0f} s): {reason}\n"
        f"Console tail:\n{console_tail(record)}\nFull console: {record.console_log}. "
        "Next: `vos staging destroy`, then `vos staging up` again; raise "
        "VOS_STAGING_BOOT_TIMEOUT if the machine is very busy."
    )


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until `pid` is gone (or a zombie, reaped if it is our child)."""
    gone = wait_until(lambda: not pid_alive(pid), timeout=timeout, interval=0.5)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return gone


def kill_vm(record: VmRecord) -> None:
    """Stop QEMU now (power cut): SIGTERM, then SIGKILL after 10 s."""
    if pid_alive(record.pid):
        os.kill(record.pid, signal.SIGTERM)
        if not wait_for_exit(record.pid, 10):
            os.kill(record.pid, signal.SIGKILL)
            wait_for_exit(record.pid, 10)


STARTUP_TIMEOUT = 300.0


def wait_for_startup(
    ssh_command: list[str], name: str, timeout: float = STARTUP_TIMEOUT
) -> str:
    """Wait until systemd has finished starting units (`systemctl is-system-running --wait`).

    SSH answers long before the slow units (dockerd, fail2ban under TCG) are up; judging a
    host in that window reports services as down that are merely starting. Returns systemd's
    word ("running", or "degraded" when a unit failed: the checks then name it); raises after
    `timeout` seconds, naming the jobs still queued.

    Example:
        wait_for_startup(["ssh", "-F", "ssh_config", "staging-mesh"], "primary")
    """
    try:
        result = subprocess.run(
            [*ssh_command, f"timeout {int(timeout)} systemctl is-system-running --wait"],
            capture_output=True, text=True, timeout=timeout + 30,
        )
    except subprocess.TimeoutExpired:
        result = None
    state = (result.stdout.strip().splitlines() or ["?"])[-1] if result else "?"
    if state in ("running", "degraded"):
        return state
    jobs = subprocess.run([*ssh_command, "systemctl list-jobs --no-legend"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    raise StagingError(
        f"{name}: systemd did not finish starting within {timeout:.0f} s (state {state!r}). "
        f"Jobs still queued:\n{jobs or '(none)'}\nLook at them with `vos staging ssh "
        f"'systemctl list-jobs'`, or raise the wait if the machine is very busy."
    )
