"""checks/kernel_rules.py on real command output and config files (INVARIANTS.md §21-25):
lsmod of a Debian 13 host running Docker and WireGuard, auditctl -l of audit 4.0 with the
vos rules loaded, /proc/mounts of the staging VM, Debian's own modprobe.d and coredump.conf.
"""

from __future__ import annotations

from checks import kernel_rules as rules
from checks.test_audit import SYSCALLS, WATCHED
from checks.test_kernel import BLACKLIST
from roles.settings import DEFAULT_MODULE_BLACKLIST

LSMOD = """\
Module                  Size  Used by
xt_conntrack           12288  2
nft_chain_nat          12288  4
xt_MASQUERADE          16384  2
nf_nat                 61440  2 nft_chain_nat,xt_MASQUERADE
nf_conntrack_netlink   57344  0
nf_conntrack          196608  4 xt_conntrack,nf_nat,nf_conntrack_netlink,xt_MASQUERADE
nf_defrag_ipv6         24576  1 nf_conntrack
nf_defrag_ipv4         12288  1 nf_conntrack
xfrm_user              61440  1
br_netfilter           32768  0
bridge                397312  1 br_netfilter
stp                    12288  1 bridge
llc                    16384  2 bridge,stp
overlay               217088  0
veth                   45056  0
wireguard             118784  0
libchacha20poly1305    16384  1 wireguard
curve25519_x86_64      36864  1 wireguard
ip6_udp_tunnel         16384  1 wireguard
udp_tunnel             32768  1 wireguard
nft_compat             20480  30
nf_tables             376832  218 nft_compat,nft_chain_nat
ext4                 1081344  1
crc16                  12288  1 ext4
mbcache                16384  1 ext4
jbd2                  196608  1 ext4
virtio_net             77824  0
virtio_blk             28672  2
"""
PROC_MODULES = ("usb_storage 81920 0 - Live 0x0000000000000000\n"
                "cramfs 53248 0 - Live 0x0000000000000000\n"
                "ext4 1081344 1 - Live 0x0000000000000000\n")

DEBIAN_MODPROBE = {
    # shipped by kmod / systemd on Debian 13 (under /usr/lib, and again through /lib)
    "/usr/lib/modprobe.d/systemd.conf": "# Load bonding without creating any bonding "
                                        "devices\noptions bonding max_bonds=0\n"
                                        "options dummy numdummies=0\n",
    "/lib/modprobe.d/systemd.conf": "options bonding max_bonds=0\n",
    "/usr/lib/modprobe.d/aliases.conf": "alias net-pf-3 off\nalias net-pf-6 off\n",
}


def vos_blacklist(modules=DEFAULT_MODULE_BLACKLIST) -> str:
    return "# Managed by agent-vos\n" + "".join(
        f"install {module} /bin/false\nblacklist {module}\n" for module in modules)


# ---------------------------------------------------------------- §21


def test_lsmod_of_a_docker_and_wireguard_host_has_nothing_blacklisted():
    loaded = rules.parse_lsmod(LSMOD)
    assert {"wireguard", "overlay", "br_netfilter", "veth", "nf_conntrack"} <= loaded
    assert "Module" not in loaded
    assert rules.loaded_violations(loaded, BLACKLIST) == []


def test_a_loaded_module_is_named_with_the_fix_dash_or_underscore():
    loaded = rules.parse_lsmod(LSMOD + "usb_storage            81920  0\n"
                                       "firewire_ohci          45056  0\n")
    problems = rules.loaded_violations(loaded, BLACKLIST)
    assert problems == [
        "KERNEL §21: usb-storage is loaded — `sudo modprobe -r usb-storage` (the blacklist "
        "stops it loading again)",
        "KERNEL §21: firewire-ohci is loaded — `sudo modprobe -r firewire-ohci` (the blacklist "
        "stops it loading again)"]
    assert rules.parse_lsmod(PROC_MODULES) == {"usb_storage", "cramfs", "ext4"}


def modprobe(files: dict[str, str]) -> list[tuple[str, str]]:
    return rules.effective_order(files, (), rules.MODPROBE_DIRS)


def test_the_deployed_blacklist_passes_next_to_debians_own_files():
    files = dict(DEBIAN_MODPROBE, **{rules.BLACKLIST_FILE: vos_blacklist()})
    assert rules.modprobe_violations(modprobe(files), BLACKLIST) == []
    # the same file through the dump the check runs
    dump = "".join(f"==> {path} <==\n{content}\n" for path, content in files.items())
    assert rules.modprobe_violations(modprobe(rules.parse_dump(dump)), BLACKLIST) == []


def test_a_missing_file_names_every_module_and_the_deploy():
    problems = rules.modprobe_violations(modprobe(DEBIAN_MODPROBE), BLACKLIST)
    assert len(problems) == 2 * len(BLACKLIST)
    assert problems[0] == ("KERNEL §21: no `install dccp /bin/false` in modprobe.d, so "
                           "`modprobe dccp` loads it — re-run the deploy (kernel step), "
                           "which writes /etc/modprobe.d/vos-blacklist.conf")


def test_an_override_in_another_file_fails_naming_the_file_and_line():
    files = {rules.BLACKLIST_FILE: vos_blacklist(),
             "/etc/modprobe.d/zz-plant.conf": "install dccp /bin/true\n",
             "/etc/modprobe.d/sctp.conf": "install sctp /sbin/modprobe --ignore-install sctp "
                                          "# load it anyway\n"}
    problems = rules.modprobe_violations(modprobe(files), BLACKLIST)
    assert problems == [
        "KERNEL §21: dccp has `install dccp /bin/true` in /etc/modprobe.d/zz-plant.conf, so it "
        "can load — delete that line (`sudo sed -i '/^install dccp /d' "
        "/etc/modprobe.d/zz-plant.conf`), re-run the deploy (kernel step)",
        "KERNEL §21: sctp has `install sctp /sbin/modprobe --ignore-install sctp` in "
        "/etc/modprobe.d/sctp.conf, so it can load — delete that line (`sudo sed -i "
        "'/^install sctp /d' /etc/modprobe.d/sctp.conf`), re-run the deploy (kernel step)"]


def test_a_line_removed_from_the_file_is_caught_and_underscores_count():
    modules = [m for m in DEFAULT_MODULE_BLACKLIST if m != "sctp"]
    text = vos_blacklist(modules).replace("usb-storage", "usb_storage")
    problems = rules.modprobe_violations(modprobe({rules.BLACKLIST_FILE: text}), BLACKLIST)
    assert [p.split(" — ")[0] for p in problems] == [
        "KERNEL §21: no `install sctp /bin/false` in modprobe.d, so `modprobe sctp` loads it",
        "KERNEL §21: no `blacklist sctp` in modprobe.d"]


def test_etc_masks_a_same_named_file_in_usr_lib():
    files = {"/usr/lib/modprobe.d/vos-blacklist.conf": "install dccp /bin/true\n",
             rules.BLACKLIST_FILE: vos_blacklist()}
    assert rules.modprobe_violations(modprobe(files), BLACKLIST) == []


def test_the_check_list_is_the_deploys_default():
    assert BLACKLIST == list(DEFAULT_MODULE_BLACKLIST)


# ---------------------------------------------------------------- §22

DEBIAN_LIMITS_CONF = """\
# /etc/security/limits.conf
#
#Each line describes a limit for a user in the form:
#
#<domain>        <type>  <item>  <value>
#
#*               soft    core            0
#root            hard    core            100000
#*               hard    rss             10000
#@student        hard    nproc           20
#ftp             -       chroot          /ftp
#@student        -       maxlogins       4

# End of file
"""
DEBIAN_COREDUMP_CONF = """\
#  This file is part of systemd.
# Entries in this file show the compile time defaults.
[Coredump]
#Storage=external
#Compress=yes
#ProcessSizeMax=1G
#ExternalSizeMax=1G
#JournalSizeMax=767M
#MaxUse=
#KeepFree=
"""


def limits(files: dict[str, str]) -> list[tuple[str, str]]:
    return rules.effective_order(files, rules.LIMITS_MAIN, rules.LIMITS_DIRS)


def test_debian_limits_conf_alone_allows_core_dumps_the_vos_file_fixes_it():
    stock = {"/etc/security/limits.conf": DEBIAN_LIMITS_CONF}
    assert rules.limits_violations(limits(stock))[0].startswith(
        "KERNEL §22: no `* hard core 0` in /etc/security/limits.conf or limits.d")
    deployed = dict(stock, **{"/etc/security/limits.d/vos-coredump.conf":
                              "# Managed by agent-vos\n* hard core 0\n"})
    assert rules.limits_violations(limits(deployed)) == []


def test_a_non_zero_hard_core_line_anywhere_fails():
    files = {"/etc/security/limits.d/vos-coredump.conf": "* hard core 0\n",
             "/etc/security/limits.d/zz-plant.conf": "*\thard\tcore\tunlimited\n",
             "/etc/security/limits.conf": "deploy - core 1024\n@adm soft core unlimited\n"}
    problems = rules.limits_violations(limits(files))
    assert problems == [
        "KERNEL §22: `deploy - core 1024` in /etc/security/limits.conf allows core dumps — "
        "delete that line from /etc/security/limits.conf, or give deploy `hard core 0` in a "
        "file read after it",
        "KERNEL §22: `*\thard\tcore\tunlimited` in /etc/security/limits.d/zz-plant.conf allows "
        "core dumps — delete that line from /etc/security/limits.d/zz-plant.conf, or give * "
        "`hard core 0` in a file read after it"]


def test_debians_coredump_limits_are_overridden_by_the_vos_file_read_after_it():
    """Debian 13's systemd-coredump ships 10-coredump-debian.conf (`*` and `root` hard core
    infinity); the vos file, read after it, sets both to 0 (found on the staging VM)."""
    debian = {"/etc/security/limits.d/10-coredump-debian.conf":
              "*               hard    core            infinity\n"
              "root            hard    core            infinity\n"}
    assert len(rules.limits_violations(limits(debian))) == 2
    ours = dict(debian, **{"/etc/security/limits.d/vos-coredump.conf":
                           "* hard core 0\nroot hard core 0\n"})
    assert rules.limits_violations(limits(ours)) == []
    only_star = dict(debian, **{"/etc/security/limits.d/vos-coredump.conf": "* hard core 0\n"})
    assert [p.split("`")[1].split()[0] for p in rules.limits_violations(limits(only_star))] \
        == ["root"]


def coredump(files: dict[str, str]) -> dict[str, str]:
    return rules.coredump_values(rules.effective_order(files, rules.COREDUMP_MAIN,
                                                       rules.COREDUMP_DIRS))


def test_coredump_defaults_fail_and_the_dropin_fixes_them():
    stock = {"/usr/lib/systemd/coredump.conf": DEBIAN_COREDUMP_CONF}
    problems = rules.coredump_violations(coredump(stock), "x")
    assert [p.split(" (")[0] for p in problems] == [
        "KERNEL §22: systemd-coredump Storage is external",
        "KERNEL §22: systemd-coredump ProcessSizeMax is 1G"]
    deployed = dict(stock, **{"/etc/systemd/coredump.conf.d/vos.conf":
                              "[Coredump]\nStorage=none\nProcessSizeMax=0\n"})
    assert rules.coredump_violations(coredump(deployed), "x") == []


def test_a_later_dropin_overrides_the_vos_one():
    files = {"/etc/systemd/coredump.conf.d/vos.conf":
             "[Coredump]\nStorage=none\nProcessSizeMax=0\n",
             "/usr/lib/systemd/coredump.conf.d/zz-plant.conf": "[Coredump]\nStorage=journal\n",
             "/etc/systemd/coredump.conf": "[Coredump]\nStorage=none\n"}
    assert coredump(files) == {"Storage": "journal", "ProcessSizeMax": "0"}
    # an /etc file of the same name masks it
    masked = dict(files, **{"/etc/systemd/coredump.conf.d/zz-plant.conf": "# masked\n"})
    assert coredump(masked) == {"Storage": "none", "ProcessSizeMax": "0"}


# ---------------------------------------------------------------- §23

STAGING_MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=987652k,nr_inodes=246913,mode=755,inode64 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=201216k,mode=755,inode64 0 0
/dev/vda / ext4 rw,relatime,errors=remount-ro 0 0
securityfs /sys/kernel/security securityfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,inode64 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev,size=1006084k,nr_inodes=1048576,inode64 0 0
overlay /var/lib/docker/rootfs/overlayfs/4f1c overlay rw,relatime,lowerdir=/x 0 0
"""
REQUIRED_SHM = ("nodev", "nosuid", "noexec")


def test_debian13_dev_shm_lacks_noexec_until_remounted():
    options = rules.mount_options(STAGING_MOUNTS, "/dev/shm")
    assert rules.mount_violations("/dev/shm", options, REQUIRED_SHM) == [
        "KERNEL §23: /dev/shm is mounted without noexec (live options rw,nosuid,nodev,inode64) "
        "— `sudo mount -o remount,nodev,nosuid,noexec /dev/shm` and keep it in /etc/fstab "
        "(re-running the deploy, kernel step, does both)"]
    remounted = STAGING_MOUNTS.replace("rw,nosuid,nodev,inode64", "rw,nosuid,nodev,noexec,"
                                                                   "relatime,inode64")
    options = rules.mount_options(remounted, "/dev/shm")
    assert rules.mount_violations("/dev/shm", options, REQUIRED_SHM) == []


def test_a_mount_stacked_on_dev_shm_is_the_one_judged():
    stacked = STAGING_MOUNTS + "tmpfs /dev/shm tmpfs rw,relatime,inode64 0 0\n"
    problems = rules.mount_violations("/dev/shm", rules.mount_options(stacked, "/dev/shm"),
                                      REQUIRED_SHM)
    assert problems and "without nodev,nosuid,noexec" in problems[0]


def test_tmp_as_tmpfs_mount_passes_and_tmp_on_root_is_not_a_mount():
    assert rules.mount_violations("/tmp", rules.mount_options(STAGING_MOUNTS, "/tmp"),
                                  ("nodev", "nosuid")) == []
    without = "\n".join(line for line in STAGING_MOUNTS.splitlines() if " /tmp " not in line)
    assert rules.mount_options(without, "/tmp") is None
    assert rules.mount_violations("/tmp", None, ("nodev", "nosuid")) == []
    suid = STAGING_MOUNTS.replace("tmpfs /tmp tmpfs rw,nosuid,nodev,", "tmpfs /tmp tmpfs rw,")
    assert "without nodev,nosuid" in rules.mount_violations(
        "/tmp", rules.mount_options(suid, "/tmp"), ("nodev", "nosuid"))[0]


def test_octal_escapes_in_mount_points():
    assert rules.mount_options("tmpfs /mnt/a\\040b tmpfs rw 0 0\n", "/mnt/a b") == ["rw"]


# ---------------------------------------------------------------- §24

AUDITCTL = """\
-w /etc/passwd -p wa -k identity
-w /etc/group -p wa -k identity
-w /etc/shadow -p wa -k identity
-w /etc/gshadow -p wa -k identity
-w /etc/sudoers -p wa -k scope
-w /etc/sudoers.d -p wa -k scope
-w /etc/ssh/sshd_config -p wa -k sshd
-w /etc/ssh/sshd_config.d -p wa -k sshd
-a always,exit -F arch=b64 -S adjtimex,settimeofday,clock_settime -F key=time-change
-a always,exit -F arch=b32 -S adjtimex,settimeofday,clock_settime -F key=time-change
-w /etc/localtime -p wa -k time-change
-a always,exit -F arch=b64 -S init_module,delete_module,finit_module -F key=modules
-a always,exit -F arch=b32 -S init_module,delete_module,finit_module -F key=modules
-w /sbin/insmod -p x -k modules
-w /sbin/rmmod -p x -k modules
-w /sbin/modprobe -p x -k modules
-w /usr/sbin/dockerd -p wa -k docker
-w /usr/bin/containerd -p wa -k docker
-w /usr/sbin/runc -p wa -k docker
-w /run/containerd -p wa -k docker
-w /var/lib/docker -p wa -k docker
-w /etc/docker -p wa -k docker
-w /etc/docker/daemon.json -p wa -k docker
-w /usr/lib/systemd/system/docker.service -p wa -k docker
-w /usr/lib/systemd/system/docker.socket -p wa -k docker
"""
DOCKER = ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/sbin/runc", "/run/containerd",
          "/var/lib/docker", "/etc/docker", "/etc/docker/daemon.json",
          "/usr/lib/systemd/system/docker.service", "/usr/lib/systemd/system/docker.socket"]


def test_the_loaded_vos_rules_pass():
    parsed = rules.parse_auditctl(AUDITCTL)
    assert rules.audit_violations(parsed, WATCHED + DOCKER, SYSCALLS) == []


def test_no_rules_names_every_path_and_the_fix():
    problems = rules.audit_violations(rules.parse_auditctl("No rules\n"), WATCHED + DOCKER,
                                      SYSCALLS)
    assert problems[0].startswith("AUDIT §24: auditctl -l has no watch on /etc/passwd, "
                                  "/etc/group, /etc/shadow")
    assert "/usr/sbin/dockerd" in problems[0] and "`sudo augenrules --load`" in problems[0]
    assert [p.split(" (")[0] for p in problems[1:]] == [
        "AUDIT §24: auditctl -l audits no time-change syscall",
        "AUDIT §24: auditctl -l audits no module-loading syscall",
        "AUDIT §24: auditctl -l audits no module-unloading syscall"]


def test_a_deleted_watch_is_named_alone():
    live = "\n".join(line for line in AUDITCTL.splitlines() if "/etc/shadow" not in line)
    problems = rules.audit_violations(rules.parse_auditctl(live), WATCHED + DOCKER, SYSCALLS)
    assert len(problems) == 1
    assert problems[0].startswith("AUDIT §24: auditctl -l has no watch on /etc/shadow — ")


def test_field_style_rules_and_old_separate_syscalls_count():
    text = ("-a always,exit -F dir=/etc/sudoers.d/ -F perm=wa -F key=scope\n"
            "-a always,exit -S all -F path=/usr/bin/kmod -F perm=x -F auid>=1000 "
            "-F auid!=-1 -F key=kernel_modules\n"
            "-a always,exit -F arch=b64 -S init_module -S delete_module -F key=modules\n")
    parsed = rules.parse_auditctl(text)
    assert parsed.watches == {"/etc/sudoers.d", "/usr/bin/kmod"}
    assert {"init_module", "delete_module", "all"} == parsed.syscalls


# ---------------------------------------------------------------- §25


def test_apparmor_enabled_answers():
    assert rules.apparmor_enabled("Yes\n", "")
    assert rules.apparmor_enabled("bash: aa-enabled: command not found", "Y\n")
    assert not rules.apparmor_enabled("No - disabled at boot.\n", "N\n")


def test_containers_without_or_with_unconfined_profile_fail():
    inspect = [{"Name": "/vos-door-1", "AppArmorProfile": "docker-default"},
               {"Name": "/vos-api-1", "AppArmorProfile": ""},
               {"Name": "/debug", "AppArmorProfile": "unconfined"},
               {"Name": "/custom", "AppArmorProfile": "vos-worker"}]
    problems = rules.unconfined_containers(inspect)
    assert problems == [
        "AUDIT §25: container 'vos-api-1' has no AppArmor profile (dockerd started before "
        "AppArmor was usable) — `sudo systemctl restart docker && sudo docker restart "
        "vos-api-1`, or re-run the deploy (audit step)",
        "AUDIT §25: container 'debug' runs unconfined (AppArmorProfile 'unconfined': "
        "`--security-opt apparmor=unconfined` or --privileged) — drop that option and "
        "recreate it, or `sudo docker rm -f debug`"]
