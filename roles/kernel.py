"""Kernel role: modules that never load, no core dumps, /dev/shm without exec, USB devices
allowed by policy only (INVARIANTS.md §21-23; CIS Ubuntu 24.04 L2 1.1.x/1.5.x/3.2.x, dev-sec
linux-baseline, konstruktoid).

What Docker and the mesh need stays untouched: ip_forward (roles/sysctl.py), the overlay,
br_netfilter, veth, nf_*/xt_*/iptables and wireguard modules (KernelSettings refuses them in
the blacklist), and /tmp keeps exec (apt hooks run from it). fs.suid_dumpable=0 is in
roles/sysctl.py.

Example (inside deploys/full.py):
    kernel.module_blacklist(modules=settings.kernel.module_blacklist)
    kernel.core_dumps()
    kernel.shared_memory()
    kernel.usb_guard()
"""

from __future__ import annotations

from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import Directory, File
from pyinfra.facts.server import KernelModules, Mounts
from pyinfra.operations import apt, files, server, systemd

from roles._paths import template
from roles.settings import DEFAULT_MODULE_BLACKLIST

BLACKLIST_FILE = "/etc/modprobe.d/vos-blacklist.conf"
LIMITS_FILE = "/etc/security/limits.d/vos-coredump.conf"
COREDUMP_DROPIN = "/etc/systemd/coredump.conf.d/vos.conf"
DEBIAN_COREDUMP_LIMITS = "/etc/security/limits.d/10-coredump-debian.conf"
PROFILE_CORE = "/etc/profile.d/vos-core-dumps.sh"
GAP = "[[:space:]][[:space:]]*"  # sed and grep read basic regexes: no `+`
SHM_OPTIONS = ("nodev", "nosuid", "noexec")
SHM_FSTAB_LINE = "tmpfs /dev/shm tmpfs defaults,nodev,nosuid,noexec 0 0"
# any uncommented fstab entry for /dev/shm (basic regex: grep and sed read it alike)
SHM_FSTAB_MATCH = r"^[^#]*[[:space:]]/dev/shm[[:space:]]"


def loaded(modules: list[str], live: dict) -> list[str]:
    """The modules of `modules` that are loaded now (/proc/modules spells '-' as '_').

    Example:
        >>> loaded(["usb-storage", "dccp"], {"usb_storage": {}, "ext4": {}})
        ['usb-storage']
    """
    names = {name.replace("-", "_") for name in live}
    return [module for module in modules if module.replace("-", "_") in names]


def missing_options(options: list[str], wanted: tuple[str, ...] = SHM_OPTIONS) -> list[str]:
    """The wanted mount options the live mount lacks.

    Example:
        >>> missing_options(["rw", "nosuid", "nodev", "inode64"])
        ['noexec']
    """
    return [option for option in wanted if option not in options]


@deploy("Kernel: module blacklist")
def module_blacklist(modules: list[str] | None = None):
    """/etc/modprobe.d/vos-blacklist.conf, and unload a listed module that is loaded now (a
    module in use stays loaded until reboot: the deploy says so and the gate names it).

    Example:
        module_blacklist(modules=["dccp", "sctp"])
    """
    modules = list(DEFAULT_MODULE_BLACKLIST if modules is None else modules)
    files.template(
        name=f"Blacklist {len(modules)} kernel modules ({BLACKLIST_FILE})",
        src=template("kernel/vos-blacklist.conf.j2"),
        dest=BLACKLIST_FILE,
        user="root", group="root", mode=644,
        modules=modules,
        _sudo=True,
    )
    unload(name="Unload blacklisted modules that are loaded", modules=modules, _sudo=True)


@operation()
def unload(modules: list[str]):
    """`modprobe -r` each listed module that /proc/modules shows loaded (nothing when none is).

    Example:
        unload(modules=["dccp"])
    """
    present = loaded(modules, host.get_fact(KernelModules) or {})
    if not present:
        host.noop(f"none of the {len(modules)} blacklisted modules is loaded")
        return
    for module in present:
        yield (f"modprobe -r {module} || echo 'vos: {module} is in use and stays loaded until "
               f"the next reboot' >&2")


@deploy("Kernel: core dumps off")
def core_dumps():
    """No core dumps: a hard limit of 0 for everyone, and systemd-coredump stores nothing
    (fs.suid_dumpable=0 is roles/sysctl.py's).

    Example:
        core_dumps()
    """
    files.template(
        name=f"Core dump hard limit 0 ({LIMITS_FILE})",
        src=template("kernel/vos-coredump-limits.conf.j2"),
        dest=LIMITS_FILE,
        user="root", group="root", mode=644,
        _sudo=True,
    )
    # Debian's systemd-coredump ships `* hard core infinity` in its own limits file. pam_limits
    # reads ours after it, but a reader that takes the files in directory order (Lynis
    # KRNL-5820) finds Debian's line last: say 0 there too, so every reading agrees.
    if host.get_fact(File, path=DEBIAN_COREDUMP_LIMITS):
        for who, pattern in (("*", r"\*"), ("root", "root")):
            files.line(name=f"{DEBIAN_COREDUMP_LIMITS}: {who} hard core 0",
                       path=DEBIAN_COREDUMP_LIMITS,
                       line=rf"^{pattern}{GAP}hard{GAP}core[[:space:]].*$",
                       replace=f"{who}\thard\tcore\t0", _sudo=True)
    files.put(name=f"Shells start with core dumps off ({PROFILE_CORE})",
              src=StringIO("# Managed by agent-vos (roles/kernel.py): INVARIANTS.md §22.\n"
                           "ulimit -c 0\n"),
              dest=PROFILE_CORE, user="root", group="root", mode=644, _sudo=True)
    # explicit 0755: made under the deploy session's 027 umask it would hide the drop-in from
    # every reader but root
    files.directory(name="/etc/systemd/coredump.conf.d (0755)",
                    path=str(PurePosixPath(COREDUMP_DROPIN).parent), user="root",
                    group="root", mode=755, _sudo=True)
    files.template(
        name=f"systemd-coredump keeps nothing ({COREDUMP_DROPIN})",
        src=template("kernel/coredump-vos.conf.j2"),
        dest=COREDUMP_DROPIN,
        user="root", group="root", mode=644,
        create_remote_dir=True,
        _sudo=True,
    )


@deploy("Kernel: /dev/shm options")
def shared_memory():
    """/dev/shm mounted nodev,nosuid,noexec: persisted in /etc/fstab (systemd-remount-fs
    applies it at boot) and remounted live only when the live options lack one. /tmp is not
    touched here (checked only: apt hooks may need exec there).

    Example:
        shared_memory()
    """
    fstab = files.line(
        name="/etc/fstab: /dev/shm nodev,nosuid,noexec",
        path="/etc/fstab",
        line=SHM_FSTAB_MATCH,
        replace=SHM_FSTAB_LINE,
        _sudo=True,
    )
    systemd.daemon_reload(name="systemd reads the new fstab", _if=fstab.did_change,
                          _sudo=True)
    remount(name="Remount /dev/shm when its live options differ", _sudo=True)


@operation()
def remount(mount_point: str = "/dev/shm", wanted: tuple[str, ...] = SHM_OPTIONS):
    """`mount -o remount,…` when the live mount lacks a wanted option (the Mounts fact).

    Example:
        remount()
    """
    live = (host.get_fact(Mounts) or {}).get(mount_point)
    if live is None:
        host.noop(f"{mount_point} is not mounted; the fstab line mounts it at boot")
        return
    lacking = missing_options(list(live.get("options") or []), wanted)
    if not lacking:
        host.noop(f"{mount_point} is already mounted {','.join(wanted)}")
        return
    yield f"mount -o remount,{','.join(wanted)} {mount_point}"


USBGUARD_CONF = "/etc/usbguard/usbguard-daemon.conf"
USBGUARD_DROPIN = "/etc/systemd/system/usbguard.service.d/vos-usb-bus.conf"
USB_BUS = "/sys/bus/usb/devices"
USBGUARD_CONDITION = ("# Managed by agent-vos (roles/kernel.py): no USB bus, nothing to guard.\n"
                      f"[Unit]\nConditionPathIsDirectory={USB_BUS}\n")
# The daemon's policy (Debian's defaults, but controllers too): devices present at install
# time are allowed by the rules Debian's postinst generates; anything plugged in later, or
# not in the rules, is blocked.
USBGUARD_POLICY = {
    "ImplicitPolicyTarget": "block",
    "PresentDevicePolicy": "apply-policy",
    "PresentControllerPolicy": "apply-policy",
    "InsertedDevicePolicy": "apply-policy",
    "RestoreControllerDeviceState": "false",
}


@deploy("Kernel: USB devices")
def usb_guard(policy: dict[str, str] | None = None):
    """USBGuard allows the USB devices present when it was installed and blocks every other
    one (on bare metal it stops a planted keyboard or stick: Lynis USB-3000). A host with
    no USB bus at all (many VPSes: no controller) has nothing to guard and the daemon would
    exit at once: a drop-in makes systemd skip it there (`ConditionPathIsDirectory`), the
    policy stays written and the unit enabled for the day a bus appears.

    Example:
        usb_guard()
    """
    apt.packages(name="usbguard", packages=["usbguard"], no_recommends=True, _sudo=True,
                 _env={"DEBIAN_FRONTEND": "noninteractive"})
    changed = [files.line(name=f"usbguard {key}={value}", path=USBGUARD_CONF,
                          line=f"^{key}=.*$", replace=f"{key}={value}", _sudo=True)
               for key, value in {**USBGUARD_POLICY, **(policy or {})}.items()]
    dropin = files.put(name=f"usbguard runs only where a USB bus exists ({USBGUARD_DROPIN})",
                       src=StringIO(USBGUARD_CONDITION), dest=USBGUARD_DROPIN, user="root",
                       group="root", mode=644, create_remote_dir=True, _sudo=True)
    # installed on a host without a bus, the daemon failed in a restart loop: forget that
    server.shell(name="usbguard: forget the failures from before the drop-in",
                 commands=["systemctl daemon-reload",
                           "systemctl reset-failed usbguard.service 2>/dev/null || true"],
                 _if=dropin.did_change, _sudo=True)
    bus = bool(host.get_fact(Directory, path=USB_BUS))
    systemd.service(name="usbguard enabled" + (" and running" if bus else
                                               " (no USB bus here: skipped by systemd)"),
                    service="usbguard.service", running=bus or None, enabled=True,
                    _sudo=True)
    if bus:
        systemd.service(name="Restart usbguard (policy changed)", service="usbguard.service",
                        restarted=True, _if=lambda: any(op.did_change() for op in changed),
                        _sudo=True)
