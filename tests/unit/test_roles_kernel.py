"""roles/kernel.py and roles/audit.py as data (INVARIANTS.md §21-25): run against the recorded
Debian 13 facts (tests/unit/recorded_facts/debian13.json, the staging VM before its first
deploy), with `set_fact` for what that recording never asked (these roles are newer than it):
a fresh host plans the files and commands, a converged host plans none.
"""

from __future__ import annotations

import hashlib

import pytest
from roles_harness import load_facts, plan_role, set_fact

from roles import audit, kernel
from roles.settings import DEFAULT_MODULE_BLACKLIST, KernelSettings

SYSTEMD = {"user_mode": False, "machine": None, "user_name": None}
SHM_MATCH = {"path": "/etc/fstab", "pattern": kernel.SHM_FSTAB_MATCH + ".*$",
             "interpolate_variables": False, "extended_regex": False}
SHM_EXACT = dict(SHM_MATCH, pattern=f"^{kernel.SHM_FSTAB_LINE}$")
DEBIAN13_SHM = {"device": "tmpfs", "type": "tmpfs",
                "options": ["rw", "nosuid", "nodev", "inode64"]}  # systemd's own mount
DOCKER_PRESENT = ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/sbin/runc",
                  "/run/containerd", "/var/lib/docker", "/etc/docker",
                  "/etc/docker/daemon.json", "/etc/default/docker",
                  "/usr/lib/systemd/system/docker.service",
                  "/usr/lib/systemd/system/docker.socket", "/run/docker.sock"]


def absent(facts: dict, *paths: str) -> dict:
    """Files (and their directories) that do not exist yet on a fresh host."""
    for path in paths:
        for fact in ("files.File", "files.Directory"):
            facts = set_fact(facts, fact, None, path=path)
        facts = set_fact(facts, "files.Directory", {"user": "root", "group": "root",
                                                    "mode": 755},
                         path=path.rsplit("/", 1)[0])
    return facts


def written(facts: dict, uploads: dict[str, str], mode: int = 644) -> dict:
    """The host after the uploads landed: same content (sha1), owner and mode."""
    for path, content in uploads.items():
        facts = set_fact(facts, "files.File", {"user": "root", "group": "root", "mode": mode,
                                               "size": len(content)}, path=path)
        facts = set_fact(facts, "files.Sha1File",
                         hashlib.sha1(content.encode()).hexdigest(), path=path)
        facts = set_fact(facts, "files.Directory", {"user": "root", "group": "root",
                                                    "mode": 755}, path=path.rsplit("/", 1)[0])
    return facts


def status(facts: dict, service: str, running: bool, enabled: bool) -> dict:
    facts = set_fact(facts, "systemd.SystemdStatus", {service: running}, **SYSTEMD,
                     services=[service])
    return set_fact(facts, "systemd.SystemdEnabled", {service: enabled}, **SYSTEMD,
                    services=[service])


def with_package(facts: dict, name: str, version: str) -> dict:
    packages = dict(facts["deb.DebPackages"][0]["value"], **{name: [version]})
    return set_fact(facts, "deb.DebPackages", packages)


@pytest.fixture
def debian():
    return load_facts("debian13")


# ---------------------------------------------------------------- §21 module blacklist


def blacklist_host(debian: dict, loaded: dict) -> dict:
    return set_fact(absent(debian, kernel.BLACKLIST_FILE), "server.KernelModules", loaded)


def test_blacklist_file_lists_install_false_and_blacklist_for_each_module(debian):
    plan = plan_role(kernel.module_blacklist, blacklist_host(debian, {"ext4": {}}))
    content = plan.uploads[kernel.BLACKLIST_FILE]
    lines = [line for line in content.splitlines() if not line.startswith("#")]
    assert lines == [line for module in DEFAULT_MODULE_BLACKLIST
                     for line in (f"install {module} /bin/false", f"blacklist {module}")]
    assert plan.named("Unload").commands == []  # nothing of the list is loaded
    for needed in ("overlay", "br_netfilter", "veth", "wireguard", "nf_conntrack"):
        assert needed not in content.split()


def test_a_loaded_blacklisted_module_is_unloaded_without_failing_the_deploy(debian):
    plan = plan_role(kernel.module_blacklist,
                     blacklist_host(debian, {"usb_storage": {}, "wireguard": {}}))
    (command,) = plan.named("Unload").commands
    assert command.startswith("modprobe -r usb-storage || echo")


def test_blacklist_knob_and_converged_host(debian):
    fresh = blacklist_host(debian, {})
    plan = plan_role(kernel.module_blacklist, fresh, modules=["dccp"])
    assert "install dccp /bin/false" in plan.uploads[kernel.BLACKLIST_FILE]
    assert "sctp" not in plan.uploads[kernel.BLACKLIST_FILE]
    converged = written(fresh, plan.uploads)
    assert plan_role(kernel.module_blacklist, converged, modules=["dccp"]).commands == []


def test_the_knob_refuses_what_docker_and_the_mesh_load():
    for needed in ("overlay", "br_netfilter", "veth", "wireguard", "xt_conntrack",
                   "nf-nat", "iptable_nat", "ip_tables", "bridge"):
        with pytest.raises(ValueError, match="needed by Docker or the mesh"):
            KernelSettings(module_blacklist=["dccp", needed])
    with pytest.raises(ValueError, match="not a kernel module name"):
        KernelSettings(module_blacklist=["dccp /bin/true\ninstall x"])


# ------------------------------------------------------------------------ §22 core dumps


def test_core_dumps_files_then_converged(debian):
    fresh = absent(debian, kernel.LIMITS_FILE, kernel.COREDUMP_DROPIN, kernel.PROFILE_CORE,
                   kernel.DEBIAN_COREDUMP_LIMITS)  # no systemd-coredump (Ubuntu: apport)
    fresh = set_fact(fresh, "files.Directory", None, path="/etc/systemd/coredump.conf.d")
    plan = plan_role(kernel.core_dumps, fresh)
    assert plan.uploads[kernel.PROFILE_CORE].splitlines()[-1] == "ulimit -c 0"
    assert "* hard core 0" in plan.uploads[kernel.LIMITS_FILE].splitlines()
    dropin = plan.uploads[kernel.COREDUMP_DROPIN].splitlines()
    assert dropin[dropin.index("[Coredump]") + 1:] == ["Storage=none", "ProcessSizeMax=0"]
    assert "mkdir -p /etc/systemd/coredump.conf.d" in plan.commands  # absent on Debian 13
    assert plan_role(kernel.core_dumps, written(fresh, plan.uploads)).commands == []


def test_core_dumps_says_0_in_debians_own_limits_file_too(debian):
    """systemd-coredump's `* hard core infinity` loses to ours in pam_limits' order, but a
    reader in directory order (Lynis) finds it last: the role makes it 0 as well."""
    facts = absent(debian, kernel.LIMITS_FILE, kernel.COREDUMP_DROPIN, kernel.PROFILE_CORE)
    facts = set_fact(facts, "files.Directory", None, path="/etc/systemd/coredump.conf.d")
    facts = set_fact(facts, "files.File", {"user": "root", "group": "root", "mode": 644,
                                           "size": 100}, path=kernel.DEBIAN_COREDUMP_LIMITS)
    for who, pattern in (("*", r"\*"), ("root", "root")):
        line = rf"^{pattern}{kernel.GAP}hard{kernel.GAP}core[[:space:]].*$"
        facts = set_fact(facts, "files.FindInFile", [f"{who} hard core infinity"],
                         path=kernel.DEBIAN_COREDUMP_LIMITS, pattern=line,
                         interpolate_variables=False, extended_regex=False)
        facts = set_fact(facts, "files.FindInFile", [], path=kernel.DEBIAN_COREDUMP_LIMITS,
                         pattern=rf"^{who}\thard\tcore\t0$".replace("*", r"\*"),
                         interpolate_variables=False, extended_regex=False)
    plan = plan_role(kernel.core_dumps, facts)
    for who in ("*", "root"):
        (command,) = plan.named(f"10-coredump-debian.conf: {who} hard core 0").commands
        assert f"/{who}\thard\tcore\t0/" in command and "sed -i" in command


# -------------------------------------------------------------------------- §23 /dev/shm


def shm_host(debian: dict, fstab_lines: list[str], exact: list[str], live: dict | None) -> dict:
    facts = set_fact(debian, "files.FindInFile", fstab_lines, **SHM_MATCH)
    facts = set_fact(facts, "files.FindInFile", exact, **SHM_EXACT)
    return set_fact(facts, "server.Mounts", {"/dev/shm": live} if live else {})


def test_dev_shm_fresh_debian13_appends_fstab_and_remounts(debian):
    plan = plan_role(kernel.shared_memory, shm_host(debian, [], [], DEBIAN13_SHM))
    assert plan.named("/etc/fstab").commands == [
        "echo 'tmpfs /dev/shm tmpfs defaults,nodev,nosuid,noexec 0 0' >> /etc/fstab"]
    reload = plan.named("systemd reads the new fstab")
    assert reload.conditional and reload.commands == ["systemctl daemon-reload"]
    assert plan.named("Remount").commands == ["mount -o remount,nodev,nosuid,noexec /dev/shm"]


def test_dev_shm_other_fstab_entry_is_replaced(debian):
    plan = plan_role(kernel.shared_memory, shm_host(
        debian, ["none /dev/shm tmpfs defaults 0 0"], [], DEBIAN13_SHM))
    (command,) = plan.named("/etc/fstab").commands
    assert command.startswith("sed -i") and "noexec" in command


def test_dev_shm_converged_changes_nothing(debian):
    live = dict(DEBIAN13_SHM, options=["rw", "nosuid", "nodev", "noexec", "inode64"])
    plan = plan_role(kernel.shared_memory, shm_host(
        debian, [kernel.SHM_FSTAB_LINE], [kernel.SHM_FSTAB_LINE], live))
    assert [c for op in plan if not op.conditional for c in op.commands] == []


# ---------------------------------------------------------------------------- §24 auditd


def audit_host(debian: dict, present: list[str], arch: str = "x86_64") -> dict:
    facts = absent(debian, audit.RULES_FILE)
    facts = set_fact(facts, "server.Arch", arch)
    return status(facts, "auditd.service", False, False)


def test_auditd_fresh_installs_writes_rules_and_loads_them_once(debian):
    plan = plan_role(audit.auditd, audit_host(debian, DOCKER_PRESENT))
    assert plan.named("auditd").commands[0].endswith("install --no-install-recommends auditd")
    rules = plan.uploads[audit.RULES_FILE].splitlines()
    for line in ["-w /etc/shadow -p wa -k identity", "-w /etc/sudoers.d -p wa -k scope",
                 "-w /etc/ssh/sshd_config.d -p wa -k sshd", "-w /sbin/modprobe -p x -k modules",
                 "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
                 "-k modules",
                 "-a always,exit -F arch=b32 -S adjtimex,settimeofday,clock_settime "
                 "-k time-change",
                 "-w /usr/sbin/dockerd -p wa -k docker", "-w /run/containerd -p wa -k docker",
                 "-w /etc/docker/daemon.json -p wa -k docker"]:
        assert line in rules, line
    assert "-w /usr/bin/dockerd -p wa -k docker" in rules  # both packagings' paths
    assert rules[[line.strip() for line in rules].index("-i")] == "-i"  # a missing one skipped
    assert not any(line.startswith("-e 2") for line in rules)  # reloadable
    load = plan.named("augenrules")
    assert load.conditional and load.commands == ["augenrules --load"]
    assert "systemctl start auditd.service" in plan.named("auditd running").commands


def test_auditd_on_arm64_has_no_32_bit_rules(debian):
    rules = plan_role(audit.auditd, audit_host(debian, [], arch="aarch64")).uploads[
        audit.RULES_FILE]
    assert "arch=b32" not in rules and "arch=b64" in rules
    # the same Docker watches whether or not Docker is installed yet (the file never changes)
    assert "-w /etc/docker/daemon.json -p wa -k docker" in rules


def test_auditd_converged_changes_nothing(debian):
    fresh = audit_host(debian, DOCKER_PRESENT)
    uploads = plan_role(audit.auditd, fresh).uploads
    converged = status(with_package(written(fresh, uploads, mode=640), "auditd",
                                    "1:4.0.2-2+deb13u1"),
                       "auditd.service", True, True)
    plan = plan_role(audit.auditd, converged)
    assert [c for op in plan if not op.conditional for c in op.commands] == []


def test_the_check_expects_only_paths_the_role_may_watch():
    from checks import test_audit

    assert set(test_audit.DOCKER_PATHS) <= set(audit.DOCKER_AUDIT_PATHS)


# -------------------------------------------------------------------------- §25 AppArmor


def apparmor_host(debian: dict, docker_state: dict | None, installed: bool = False) -> dict:
    facts = with_package(debian, "apparmor", "4.1.0-1") if installed else debian
    facts = status(facts, "apparmor.service", installed, installed)
    return set_fact(facts, "roles.audit.DockerAppArmor", docker_state)


def test_apparmor_fresh_host_before_docker(debian):
    plan = plan_role(audit.apparmor, apparmor_host(debian, None))
    assert plan.named("AppArmor (apparmor").commands[0].endswith(
        "install --no-install-recommends apparmor")
    assert plan.named("Docker applies AppArmor").commands == []


def test_apparmor_restarts_a_dockerd_that_ran_without_it_and_its_unprofiled_containers(debian):
    state = {"kernel": True, "daemon": False, "unprofiled": ["vos-api-1", "vos-door-1"]}
    plan = plan_role(audit.apparmor, apparmor_host(debian, state))
    assert plan.named("Docker applies AppArmor").commands == [
        "systemctl restart docker.service", "docker restart vos-api-1 vos-door-1"]


def test_apparmor_converged_and_kernel_without_apparmor_change_nothing(debian):
    confined = {"kernel": True, "daemon": True, "unprofiled": []}
    plan = plan_role(audit.apparmor, apparmor_host(debian, confined, installed=True))
    assert plan.commands == []
    no_lsm = {"kernel": False, "daemon": False, "unprofiled": ["vos-api-1"]}
    plan = plan_role(audit.apparmor, apparmor_host(debian, no_lsm, installed=True))
    assert plan.commands == []  # nothing dockerd could apply: no restart loop


def test_docker_apparmor_fact_parses_real_output():
    output = ["kernel=Y", "option=name=apparmor", "option=name=seccomp,profile=builtin",
              "option=name=cgroupns", "container=/vos-door-1 profile=docker-default",
              "container=/vos-api-1 profile=", "container=/debug profile=unconfined"]
    assert audit.docker_apparmor_state(output) == {
        "kernel": True, "daemon": True, "unprofiled": ["vos-api-1"]}
    before = ["kernel=Y", "option=name=seccomp,profile=builtin", "option=name=cgroupns"]
    assert audit.docker_apparmor_state(before)["daemon"] is False
