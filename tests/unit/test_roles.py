"""Roles as data: run each role against recorded Debian 13 / Ubuntu 24.04 facts and assert
the commands it would issue (how pyinfra tests its own operations; no host involved).

debian13.json was recorded from the staging VM before its first deploy
(tests/unit/recorded_facts/record.py); ubuntu2404.json is derived from it for the facts that
differ on a stock Ubuntu 24.04 cloud image (derive_ubuntu2404.py), because Ubuntu cannot be
booted here. The Ubuntu-only branches — ssh.socket activation, docker-compose-v2, the
fail2ban 1.0.2 / Python 3.12 asynchat crash — are proven here.
"""

import subprocess

import pytest
from roles_harness import load_facts, plan_role, set_fact

from roles import base, docker, fail2ban, firewall, ssh, sysctl, users
from roles.ops.sshd import swap_and_test_script
from roles.ops.ufw import UfwState, normalise_rule, parse_ufw_state

MESH = "100.64.0.2"
LOCK_TIMEOUT = "/etc/apt/apt.conf.d/90-vos-lock-timeout"


def fresh(name: str) -> dict:
    """The recording, plus the answers a fresh host gives to facts the recording run never
    reached (pyinfra's planning stops at an operation's first command): services not yet
    installed are not enabled, the cutover's socket drop-in is absent, apt has upgrades."""
    facts = load_facts(name)
    for service in ("docker.service", "fail2ban.service"):
        facts = set_fact(facts, "systemd.SystemdEnabled", {service: False}, user_mode=False,
                         machine=None, user_name=None, services=[service])
    facts = set_fact(facts, "systemd.SystemdStatus", {"ssh.socket": name == "ubuntu2404"},
                     user_mode=False, machine=None, user_name=None, services=["ssh.socket"])
    facts = set_fact(facts, "files.File", None, path=ssh.SOCKET_DROPIN)
    for fact in ("files.File", "files.Directory"):
        facts = set_fact(facts, fact, None, path=LOCK_TIMEOUT)
    for scope in ("all", "default"):  # ufw (and its sysctl.conf) arrive with base packages
        facts = set_fact(facts, "files.FindInFile", [f"net/ipv4/conf/{scope}/log_martians=0"],
                         **martians_lookup(scope))
    facts = set_fact(facts, "files.Directory", None, path=ssh.SOCKET_DROPIN)
    facts = set_fact(facts, "files.Directory", None, path="/etc/systemd/system/ssh.socket.d")
    return set_fact(facts, "apt.SimulateOperationWillChange",
                    {"upgraded": 3, "newly_installed": 0, "removed": 0, "not_upgraded": 0},
                    arg0="upgrade")


def martians_lookup(scope: str) -> dict:
    return {"path": "/etc/ufw/sysctl.conf", "pattern": f"^net/ipv4/conf/{scope}/log_martians=.*$",
            "interpolate_variables": False, "extended_regex": False}


@pytest.fixture(params=["debian13", "ubuntu2404"])
def facts(request):
    return fresh(request.param)


@pytest.fixture
def debian():
    return fresh("debian13")


@pytest.fixture
def ubuntu():
    return fresh("ubuntu2404")


# ---------------------------------------------------------------- ssh


def test_ssh_harden_validates_before_reload(facts):
    plan = plan_role(ssh.harden, facts, allow_users=["deploy"])
    dropin = plan.named("sshd hardening drop-in")
    candidate = "/etc/ssh/sshd_config.d/00-vos-hardening.conf.vos-candidate"
    assert dropin.commands[0] == f"upload {candidate}"
    swap = dropin.commands[1]
    assert "/usr/sbin/sshd -t" in swap and "vos-previous" in swap and "exit 1" in swap
    reload = plan.named("sshd reload")
    assert reload.conditional and reload.commands == ["systemctl reload ssh.service"]
    # the reload comes after the validated swap, never before
    names = [op.name for op in plan]
    assert names.index(dropin.name) < names.index(reload.name)


def test_ssh_dropin_content_holds_every_invariant(debian):
    content = plan_role(ssh.harden, debian, allow_users=["deploy", "ops"]).uploads[
        "/etc/ssh/sshd_config.d/00-vos-hardening.conf.vos-candidate"]
    for line in ["PermitRootLogin no", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "AuthenticationMethods publickey",
                 "MaxAuthTries 3", "LoginGraceTime 30", "AllowUsers deploy ops",
                 "ClientAliveInterval 300", "ClientAliveCountMax 2", "MaxSessions 4",
                 "TCPKeepAlive no", "PermitTunnel no",
                 "X11Forwarding no", "AllowAgentForwarding no", "PermitUserEnvironment no",
                 "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
                 "umac-128-etm@openssh.com"]:
        assert line in content.splitlines(), line
    assert "mlkem768x25519" not in content  # not in the ssh-audit 24.04 policy


def test_ssh_harden_fixes_host_key_and_moduli_for_ssh_audit(debian):
    plan = plan_role(ssh.harden, debian, allow_users=["deploy"])
    assert "ssh-keygen -q -t rsa -b 4096 -N '' -f /etc/ssh/ssh_host_rsa_key" in plan.commands
    assert any("$5 >= 3071" in command for command in plan.commands)
    converged = set_fact(debian, "roles.ops.sshd.HostKeyBits", 4096,
                         path="/etc/ssh/ssh_host_rsa_key.pub")
    converged = set_fact(converged, "roles.ops.sshd.SmallModuli", 0)
    commands = plan_role(ssh.harden, converged, allow_users=["deploy"]).commands
    assert not any("ssh-keygen" in c or "moduli" in c for c in commands)


def test_ssh_harden_refuses_empty_user_list(debian):
    with pytest.raises(ValueError, match="allow_users is empty"):
        plan_role(ssh.harden, debian, allow_users=[])


def test_cutover_on_debian_uses_listenaddress_in_ssh_service(debian):
    plan = plan_role(ssh.cutover, debian, mesh_ip=MESH, user="deploy")
    names = [op.name for op in plan]
    assert names[0].endswith(f"Cutover: prove SSH over the mesh (deploy@{MESH})")
    listen = plan.named("sshd listens on the mesh IP")
    content = listen.uploads["/etc/ssh/sshd_config.d/10-vos-listen.conf.vos-candidate"]
    assert [line for line in content.splitlines() if line.startswith("ListenAddress")] == [
        f"ListenAddress {MESH}", "ListenAddress 127.0.0.1"]
    assert "/usr/sbin/sshd -t" in listen.commands[1]
    assert plan.named("Cutover: sshd reload").commands == ["systemctl reload ssh.service"]
    assert not any("ssh.socket" in command for command in plan.commands)
    wait = plan.named("waits (bounded) for the mesh")
    assert f'grep -q " inet {MESH}/"' in wait.uploads[ssh.SERVICE_MESH_DROPIN]


def test_cutover_on_ubuntu_uses_ssh_socket_with_freebind(ubuntu):
    plan = plan_role(ssh.cutover, ubuntu, mesh_ip=MESH, user="deploy")
    socket = plan.named("ssh.socket listens")
    content = socket.uploads[ssh.SOCKET_DROPIN]
    lines = content.splitlines()
    assert lines[lines.index("[Socket]") + 1] == "ListenStream="  # generated defaults dropped
    assert f"ListenStream={MESH}:22" in lines and "ListenStream=127.0.0.1:22" in lines
    assert "FreeBind=yes" in lines
    assert plan.named("daemon-reload").commands == ["systemctl daemon-reload"]
    assert plan.named("restart ssh.socket").commands == ["systemctl restart ssh.socket"]
    assert not any("10-vos-listen.conf" in command for command in plan.commands)


def test_cutover_closes_public_ssh_only_when_the_rule_exists(debian):
    open_state = parse_ufw_state(["Status: active", "##VOS-UFW-ADDED##", "ufw allow 22/tcp",
                                  "##VOS-UFW-DEFAULTS##", "IPV6=yes"])
    with_rule = set_fact(debian, UfwState.name, open_state)
    assert plan_role(ssh.cutover, with_rule, mesh_ip=MESH, user="deploy").named(
        "close public SSH").commands == ["ufw delete allow 22/tcp"]
    assert plan_role(ssh.cutover, debian, mesh_ip=MESH, user="deploy").named(
        "close public SSH").commands == []


def test_swap_script_restores_previous_config_when_the_test_fails(tmp_path):
    dest, candidate = tmp_path / "a.conf", tmp_path / "a.conf.vos-candidate"
    dest.write_text("good\n")
    candidate.write_text("bad\n")
    failed = subprocess.run(["sh", "-c", swap_and_test_script(str(dest), str(candidate),
                                                              "false")],
                            capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "previous config kept" in failed.stderr
    assert dest.read_text() == "good\n" and not candidate.exists()
    candidate.write_text("better\n")
    subprocess.run(["sh", "-c", swap_and_test_script(str(dest), str(candidate), "true")],
                   check=True)
    assert dest.read_text() == "better\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.conf"]


def test_swap_script_removes_a_new_file_that_fails(tmp_path):
    dest, candidate = tmp_path / "new.conf", tmp_path / "new.conf.vos-candidate"
    candidate.write_text("bad\n")
    subprocess.run(["sh", "-c", swap_and_test_script(str(dest), str(candidate), "false")],
                   capture_output=True, check=False)
    assert not dest.exists()


# ---------------------------------------------------------------- docker


def test_docker_packages_per_distribution(debian, ubuntu):
    debian_install = plan_role(docker.engine, debian, mesh_ip=MESH).named("Docker Engine")
    assert debian_install.commands[0].endswith(
        "install --no-install-recommends docker.io docker-cli docker-compose")
    ubuntu_install = plan_role(docker.engine, ubuntu, mesh_ip=MESH).named("Docker Engine")
    assert ubuntu_install.name.endswith("(docker.io, docker-compose-v2)")
    assert any("docker-compose-v2" in command for command in ubuntu_install.commands)


def test_docker_daemon_json_binds_mesh_and_restarts_only_on_change(debian):
    plan = plan_role(docker.engine, debian, mesh_ip=MESH)
    daemon = plan.uploads["/etc/docker/daemon.json"]
    assert f'"ip": "{MESH}"' in daemon and '"userland-proxy": false' in daemon
    assert '"live-restore": true' in daemon and '"no-new-privileges": true' in daemon
    assert plan.named("dockerd restart").conditional


def test_docker_without_mesh_ip_refuses(debian):
    with pytest.raises(ValueError, match="no mesh IP"):
        plan_role(docker.engine, debian, mesh_ip="")


# ---------------------------------------------------------------- fail2ban


def test_fail2ban_on_ubuntu_fresh_installs_newest_and_proves_the_import(ubuntu):
    plan = plan_role(fail2ban.jails, ubuntu, door_port=443)
    fix = plan.named("asynchat fix")
    assert fix.commands[0].endswith("install fail2ban")
    probe = plan.named("prove it imports")
    assert probe.commands == [fail2ban.ASYNCHAT_PROBE]


def test_fail2ban_on_ubuntu_with_broken_1_0_2_is_upgraded(ubuntu):
    packages = dict(ubuntu["deb.DebPackages"][0]["value"], fail2ban=["1.0.2-3"])
    broken = set_fact(ubuntu, "deb.DebPackages", packages)
    plan = plan_role(fail2ban.jails, broken, door_port=443)
    assert plan.named("asynchat").commands[0].endswith("install fail2ban")  # newest build
    fixed = set_fact(ubuntu, "deb.DebPackages",
                     dict(packages, fail2ban=[fail2ban.ASYNCHAT_FIXED_VERSION]))
    names = [op.name for op in plan_role(fail2ban.jails, fixed, door_port=443)]
    assert not any("asynchat" in name for name in names)


def test_fail2ban_on_debian_needs_no_workaround_and_uses_systemd(debian):
    plan = plan_role(fail2ban.jails, debian, door_port=443, ignore=["100.64.0.1"])
    assert not any("asynchat" in op.name for op in plan)
    jail = plan.uploads["/etc/fail2ban/jail.local"]
    assert "backend = systemd" in jail and "[sshd]" in jail and "[recidive]" in jail
    assert "[vos-door]" in jail and "journalmatch = SYSLOG_IDENTIFIER=vos-door" in jail
    door = jail.split("[vos-door]", 1)[1]
    assert "chain = DOCKER-USER" in door and "banaction = %(banaction_allports)s" in door
    assert "ignoreip = 127.0.0.1/8 ::1 100.64.0.1" in jail
    assert plan.named("restart (jails changed)").conditional
    # failed Command Center sign-ins: the API's journald lines, banned in DOCKER-USER as well
    login = jail.split("[vos-login]", 1)[1]
    assert "journalmatch = SYSLOG_IDENTIFIER=vos-api" in login
    assert "chain = DOCKER-USER" in login and "banaction = %(banaction_allports)s" in login
    assert "filter = vos-login" in login and "maxretry = 10" in login


def test_login_filter_matches_failed_sign_ins_only(debian):
    import re

    text = plan_role(fail2ban.jails, debian, door_port=443).uploads[
        "/etc/fail2ban/filter.d/vos-login.conf"]
    regex = text.split("failregex = ", 1)[1].splitlines()[0].replace(
        "<ADDR>", r"(?P<addr>[0-9a-f.:]+)")
    # the exact shape app.jsonlog writes (event first, src second)
    failed = ('{"event": "login_failed", "src": "100.64.0.7", "reason": "bad_token", '
              '"status": 303, "ts": "2026-12-01T00:00:00Z"}')
    assert re.search(regex, failed).group("addr") == "100.64.0.7"
    assert re.search(regex, failed.replace("login_failed", "ui_login")) is None
    # a field value cannot smuggle a second "src" in front of the real one
    assert re.search(regex, '{"event": "ui_login", "src": "1.2.3.4", '
                            '"operator": "\\"event\\": \\"login_failed\\""}') is None


def test_door_filter_matches_unsigned_rejections_only(debian):
    import re

    text = plan_role(fail2ban.jails, debian, door_port=443).uploads[
        "/etc/fail2ban/filter.d/vos-door.conf"]
    regex = text.split("failregex = ", 1)[1].splitlines()[0].replace(
        "<ADDR>", r"(?P<addr>[0-9a-f.:]+)")
    unsigned = ('{"event": "door_reject", "src": "203.0.113.7", "reason": "bad_signature", '
                '"signed": false, "status": 401}')
    signed = unsigned.replace('"signed": false', '"signed": true')
    assert re.search(regex, unsigned).group("addr") == "203.0.113.7"
    assert re.search(regex, signed) is None


# ---------------------------------------------------------------- firewall


def test_firewall_on_fresh_host_orders_rules_before_enable(debian):
    plan = plan_role(firewall.ufw_baseline, debian, mesh_interface="tailscale0", door_port=443,
                     public_ssh=True)
    commands = plan.commands
    assert "ufw allow in on tailscale0 comment 'vos mesh'" in commands
    assert "ufw allow 443/tcp comment 'vos door'" in commands
    assert "ufw allow 22/tcp comment 'vos until cutover'" in commands
    assert commands[-1] == "ufw --force enable"
    assert commands.index("ufw allow 22/tcp comment 'vos until cutover'") < len(commands) - 1
    after = plan.uploads["/etc/ufw/after.rules"]
    assert ":DOCKER-USER - [0:0]" in after and "-A DOCKER-USER -i tailscale0 -j RETURN" in after
    assert after.rstrip().endswith("COMMIT")
    martians = plan.named("log_martians on (all)").commands
    assert len(martians) == 1 and "log_martians=1" in martians[0]


def test_firewall_converged_changes_nothing(debian):
    converged = parse_ufw_state([
        "Status: active", "Default: deny (incoming), allow (outgoing), deny (routed)",
        "##VOS-UFW-ADDED##", "ufw allow in on tailscale0 comment 'vos mesh'",
        "ufw allow 443/tcp comment 'vos door'", "##VOS-UFW-DEFAULTS##", "IPV6=yes",
        'DEFAULT_INPUT_POLICY="DROP"', 'DEFAULT_OUTPUT_POLICY="ACCEPT"',
        'DEFAULT_FORWARD_POLICY="DROP"'])
    facts = set_fact(debian, UfwState.name, converged)
    for scope in ("all", "default"):
        facts = set_fact(facts, "files.FindInFile", [f"net/ipv4/conf/{scope}/log_martians=1"],
                         **martians_lookup(scope))
    plan = plan_role(firewall.ufw_baseline, facts, mesh_interface="tailscale0", door_port=443,
                     public_ssh=False)
    unconditional = [c for op in plan if not op.conditional for c in op.commands
                     if c.startswith("ufw")]
    assert unconditional == []
    assert plan.named("UFW reload").conditional  # only when after.rules changed


def test_ufw_rule_normalisation():
    assert normalise_rule("ufw allow 5432 comment 'x y'") == "allow 5432"
    assert normalise_rule("allow   in on tailscale0") == "allow in on tailscale0"


# ---------------------------------------------------------------- base, users, sysctl


def test_sysctl_sets_only_what_differs(debian):
    live = {"fs.protected_hardlinks": 1, "kernel.sysrq": 16, "net.ipv4.ip_forward": 1}
    facts = set_fact(debian, "server.Sysctl", live, keys=sorted(sysctl.HARDENED_SYSCTLS))
    plan = plan_role(sysctl.harden, facts)
    (command,) = plan.named("sysctl -w").commands
    assert "kernel.sysrq=0" in command.split() and "fs.protected_fifos=2" in command.split()
    assert "fs.protected_hardlinks=1" not in command  # already holds
    converged = set_fact(debian, "server.Sysctl", dict(sysctl.HARDENED_SYSCTLS),
                         keys=sorted(sysctl.HARDENED_SYSCTLS))
    assert plan_role(sysctl.harden, converged).named("sysctl -w").commands == []
    assert "kernel.yama.ptrace_scope = 1" in plan.uploads["/etc/sysctl.d/99-vos-hardening.conf"]


def before_needrestart(facts: dict) -> dict:
    """The recorded host predates needrestart's drop-in: no directory, no file."""
    for path in ("/etc/needrestart", "/etc/needrestart/conf.d", base.NEEDRESTART_CONF):
        facts = set_fact(facts, "files.Directory", None, path=path)
    return set_fact(facts, "files.File", None, path=base.NEEDRESTART_CONF)


def test_apt_waits_for_the_dpkg_lock_before_anything_else(debian):
    plan = plan_role(base.packages, before_needrestart(debian), upgrade=False)
    first = plan.operations[0]
    assert "dpkg lock" in first.name
    assert first.uploads[LOCK_TIMEOUT] == 'DPkg::Lock::Timeout "600";\n'


def test_needrestart_lists_only_before_it_is_installed(debian):
    plan = plan_role(base.packages, before_needrestart(debian), upgrade=False)
    names = [op.name for op in plan.operations]
    drop_in = next(i for i, name in enumerate(names) if "needrestart lists" in name)
    install = next(i for i, name in enumerate(names) if "Install the base packages" in name)
    assert drop_in < install
    assert "$nrconf{restart} = 'l';" in plan.uploads[base.NEEDRESTART_CONF]


def test_apt_upgrade_is_a_setting(debian):
    debian = before_needrestart(debian)
    assert not any("apt upgrade" in op.name for op in plan_role(base.packages, debian,
                                                              upgrade=False))
    assert any("apt upgrade" in op.name for op in plan_role(base.packages, debian,
                                                            upgrade=True))


def test_deploy_user_without_keys_is_refused_before_anything_is_planned(debian):
    with pytest.raises(ValueError, match="no public key"):
        plan_role(users.deploy_user, debian, "deploy", public_keys=["  "])


def test_root_is_locked_when_it_has_a_password(debian):
    assert plan_role(base.lock_root, debian).commands == ["passwd -l root"]
