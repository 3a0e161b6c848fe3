"""Kernel controls (INVARIANTS.md §21-23): modules that never load, no core dumps, /dev/shm
and /tmp mount options. Files are judged as kmod, pam_limits and systemd read them (every
drop-in, in their order), mounts by their live options.

`test_no_blacklisted_module_loaded` needs the host's own kernel: it skips inside a container
(whose lsmod would show the machine running the container). Everything else runs anywhere,
as root or not (the files are world-readable).

Run alone: pytest -p checks.plugin checks/test_kernel.py --hosts=ssh://HOST
"""

import pytest

from checks import kernel_rules as rules
from checks import plugin

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

# The deploy's default (roles/settings.py DEFAULT_MODULE_BLACKLIST; checks import no roles).
BLACKLIST = ["dccp", "sctp", "rds", "tipc", "cramfs", "freevxfs", "hfs", "hfsplus", "jffs2",
             "udf", "usb-storage", "firewire-core", "firewire-ohci", "bluetooth", "btusb"]


def in_container(host) -> bool:
    """The target is a container (Docker or Podman), not a host with its own kernel."""
    return host.run("test -f /.dockerenv -o -f /run/.containerenv").rc == 0


def dumped(host, main: tuple[str, ...], dirs: tuple[str, ...]) -> list[tuple[str, str]]:
    # as root: a drop-in directory made under a 027 umask is not readable by the deploy user,
    # and a check that cannot see a file must not conclude it is absent
    with plugin.as_root(host):
        out = host.run(rules.dump_command(main, dirs))
    return rules.effective_order(rules.parse_dump(out.stdout), main, dirs)


def test_modules_blacklisted(host):
    """§21: every listed module has `install M /bin/false` and `blacklist M`, nowhere undone."""
    ordered = dumped(host, (), rules.MODPROBE_DIRS)
    problems = rules.modprobe_violations(ordered, BLACKLIST)
    assert not problems, "\n".join(problems)


def test_no_blacklisted_module_loaded(host):
    """§21: none of them is loaded now (a blacklist written after the load does not unload)."""
    if in_container(host):
        pytest.skip("KERNEL §21: a container shares its kernel's modules; judged on a host")
    out = host.run("lsmod 2>/dev/null || cat /proc/modules")
    problems = rules.loaded_violations(rules.parse_lsmod(out.stdout), BLACKLIST)
    assert not problems, "\n".join(problems)


def test_core_dump_hard_limit_zero(host):
    """§22: pam_limits gives every login a hard core limit of 0."""
    ordered = dumped(host, rules.LIMITS_MAIN, rules.LIMITS_DIRS)
    problems = rules.limits_violations(ordered)
    assert not problems, "\n".join(problems)


def test_systemd_coredump_keeps_nothing(host):
    """§22: systemd-coredump's effective Storage=none and ProcessSizeMax=0."""
    ordered = dumped(host, rules.COREDUMP_MAIN, rules.COREDUMP_DIRS)
    where = ", ".join(path for path, _ in ordered) or "no file: systemd's defaults"
    problems = rules.coredump_violations(rules.coredump_values(ordered), where)
    assert not problems, "\n".join(problems)


def test_dev_shm_nodev_nosuid_noexec(host):
    """§23: /dev/shm, live, is nodev,nosuid,noexec. Read from /proc/mounts (the last mount on
    the point is the visible one; testinfra's mount_point takes the first)."""
    mounts = host.file("/proc/mounts").content_string
    options = rules.mount_options(mounts, "/dev/shm")
    assert options is not None, ("KERNEL §23: /dev/shm is not mounted — re-run the deploy "
                                 "(kernel step) and `sudo mount /dev/shm`")
    problems = rules.mount_violations("/dev/shm", options, ("nodev", "nosuid", "noexec"))
    assert not problems, "\n".join(problems)


def test_tmp_nodev_nosuid_when_its_own_mount(host):
    """§23: /tmp, when it is its own mount (Debian 13's tmp.mount), is nodev,nosuid (exec
    stays: apt hooks may run from it). /tmp on the root filesystem passes."""
    mounts = host.file("/proc/mounts").content_string
    problems = rules.mount_violations("/tmp", rules.mount_options(mounts, "/tmp"),
                                      ("nodev", "nosuid"))
    assert not problems, "\n".join(problems)


def test_usb_devices_allowed_by_policy_only(host):
    """§21: USBGuard enabled and blocking devices its rules do not allow, running wherever
    a USB bus exists. Needs the host's own kernel: skips inside a container."""
    if in_container(host):
        pytest.skip("KERNEL §21: USB devices are the host's; judged on a host")
    with plugin.as_root(host):
        conf = host.file("/etc/usbguard/usbguard-daemon.conf")
        text = conf.content_string if conf.exists else None
        active = host.run("systemctl is-active usbguard 2>/dev/null").stdout.strip()
        enabled = host.run("systemctl is-enabled usbguard 2>/dev/null").stdout.strip()
    usb_bus = host.file("/sys/bus/usb/devices").is_directory
    problems = rules.usbguard_violations(text, active or "absent", enabled or "absent",
                                         usb_bus)
    assert not problems, "\n".join(problems)
