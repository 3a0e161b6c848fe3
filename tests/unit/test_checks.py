# ruff: noqa: E501  (recorded command output is kept verbatim)
"""The invariant judgements of checks/invariants.py against recorded command output.

Each failing case asserts the message names the invariant, the offender, and the fix; each
passing case is the output of a converged host, so a check cannot fail on a healthy host.
"""

from checks.gate import GateResult, Target, pytest_command, ssh_config_text
from checks.invariants import (
    Listener,
    Published,
    docker_user_violations,
    exposure_violations,
    forward_jumps_to_docker_user,
    parse_docker_inspect,
    parse_fail2ban_dump,
    parse_fail2ban_status,
    parse_ss,
    parse_sshd_t,
    parse_ufw_status,
    published_violations,
    shadow_violations,
    sshd_listen_violations,
    sshd_violations,
    sysctl_violations,
    ufw_violations,
)

MESH = "100.64.0.2"

SS_CONVERGED = """\
udp   UNCONN 0      0         127.0.0.54:53        0.0.0.0:*    users:(("systemd-resolve",pid=301,fd=20))
udp   UNCONN 0      0            0.0.0.0:41641     0.0.0.0:*
tcp   LISTEN 0      128        100.64.0.2:22        0.0.0.0:*    users:(("sshd",pid=1201,fd=3))
tcp   LISTEN 0      128         127.0.0.1:22        0.0.0.0:*    users:(("sshd",pid=1201,fd=4))
tcp   LISTEN 0      4096           0.0.0.0:443      0.0.0.0:*    users:(("python3",pid=1500,fd=3))
tcp   LISTEN 0      4096      [::ffff:127.0.0.1]:631   *:*    users:(("cupsd",pid=9,fd=7))
"""


def test_ss_parses_addresses_ports_and_owners():
    listeners = parse_ss(SS_CONVERGED)
    assert Listener("tcp", "100.64.0.2", 22, "sshd", 1201) in listeners
    assert Listener("udp", "0.0.0.0", 41641, "(kernel socket)", None) in listeners
    assert len(listeners) == 6
    dhcp = parse_ss("udp UNCONN 0 0 10.0.2.15%eth0:68 0.0.0.0:* "
                    'users:(("systemd-network",pid=360,fd=33))')
    assert dhcp[0].address == "10.0.2.15" and dhcp[0].port == 68


SS_TCP_ONLY = """\
LISTEN 0      128        127.0.0.1:22    0.0.0.0:* users:(("sshd",pid=396,fd=6))
LISTEN 0      4096       127.0.0.1:37169 0.0.0.0:* users:(("containerd",pid=5705,fd=9))
LISTEN 0      4096      127.0.0.54:53    0.0.0.0:* users:(("systemd-resolve",pid=312,fd=17))
LISTEN 0      128       100.64.1.2:22    0.0.0.0:* users:(("sshd",pid=396,fd=7))
LISTEN 0      4096   127.0.0.53%lo:53    0.0.0.0:* users:(("systemd-resolve",pid=312,fd=15))
"""


def test_ss_without_netid_column_as_recorded_on_the_converged_vm():
    listeners = parse_ss(SS_TCP_ONLY)
    assert len(listeners) == 5 and all(item.proto == "tcp" for item in listeners)
    assert sshd_listen_violations(listeners, "100.64.1.2") == []
    assert exposure_violations(listeners, 443, "100.64.1.2") == []


def test_converged_listeners_pass():
    assert exposure_violations(parse_ss(SS_CONVERGED), 443, MESH, {41641: "mesh"}) == []


def test_wildcard_listener_is_named_with_process_and_fix():
    line = 'tcp LISTEN 0 5 0.0.0.0:9999 0.0.0.0:* users:(("python3",pid=812,fd=3))'
    (problem,) = exposure_violations(parse_ss(line), 443, MESH)
    assert problem == ("EXPOSURE §1: python3 (pid 812) listens on 0.0.0.0:9999/tcp — bind it to "
                       "the mesh IP 100.64.0.2 or 127.0.0.1, or stop it")


def test_ipv6_wildcard_and_public_ip_binds_fail_too():
    lines = ('tcp LISTEN 0 5 [::]:5432 [::]:* users:(("postgres",pid=7,fd=3))\n'
             'tcp LISTEN 0 5 203.0.113.10:8080 0.0.0.0:* users:(("node",pid=8,fd=3))')
    problems = exposure_violations(parse_ss(lines), 443, MESH)
    assert len(problems) == 2
    assert "[::]:5432" in problems[0] and "203.0.113.10:8080" in problems[1]


def test_udp_on_all_interfaces_needs_an_allowance():
    line = 'udp UNCONN 0 0 0.0.0.0:5353 0.0.0.0:* users:(("avahi",pid=4,fd=3))'
    assert exposure_violations(parse_ss(line), 443, MESH)
    assert not exposure_violations(parse_ss(line), 443, MESH, {5353: "mdns"})


DOCKER_INSPECT = """[
 {"Name": "/door", "Config": {"Image": "vos-door", "Labels": {
    "com.docker.compose.service": "door", "com.docker.compose.project": "vos"}},
  "NetworkSettings": {"Ports": {"8443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}]}}},
 {"Name": "/ui", "Config": {"Image": "vos-ui"},
  "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "100.64.0.2", "HostPort": "8080"}],
                                "9000/tcp": null}}},
 {"Name": "/probe", "Config": {"Image": "vos-probe"},
  "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"},
                                           {"HostIp": "::", "HostPort": "8081"}]}}}
]"""


def test_published_ports_outside_mesh_fail_except_the_door():
    published = parse_docker_inspect(DOCKER_INSPECT)
    assert Published("ui", "vos-ui", MESH, 8080, "80/tcp") in published
    problems = published_violations(published, 443, MESH)
    assert len(problems) == 2
    assert problems[0].startswith("EXPOSURE §2: container probe (vos-probe) publishes "
                                  "0.0.0.0:8081->80/tcp")
    assert "100.64.0.2:8081:80" in problems[0]


def test_only_the_stacks_door_may_use_the_door_port_and_no_one_the_public_ip():
    """The drifted cases of the old copies: any container on the door port was excused, a
    bind on a specific public address passed, another project's `door` counted."""
    stray = [Published("stray", "nginx", "0.0.0.0", 443, "80/tcp"),
             Published("public-ip", "nginx", "203.0.113.5", 8080, "80/tcp"),
             Published("door-elsewhere", "x", "0.0.0.0", 9000, "9000/tcp", is_door=True),
             Published("hostnet", "x", "", 0, "", is_door=True, host_network=True)]
    problems = published_violations(stray, 443, MESH)
    assert [p.split(" (")[0] for p in problems] == [
        "EXPOSURE §2: container stray", "EXPOSURE §2: container public-ip",
        "EXPOSURE §2: container door-elsewhere", "EXPOSURE §2: container hostnet"]
    assert "neither the mesh IP" in problems[1] and "only the door port 443" in problems[2]
    other_project = DOCKER_INSPECT.replace('project": "vos"', 'project": "other"')
    assert any("container door " in p for p in published_violations(
        parse_docker_inspect(other_project), 443, MESH))


def test_no_containers_no_problem():
    assert parse_docker_inspect("") == []


DOCKER_USER_CONVERGED = """\
-N DOCKER-USER
-A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A DOCKER-USER -i tailscale0 -j RETURN
-A DOCKER-USER -i docker0 -j RETURN
-A DOCKER-USER -i br-+ -j RETURN
-A DOCKER-USER -i lo -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 443 --ctdir ORIGINAL -j RETURN
-A DOCKER-USER -m comment --comment vos-docker-guard -j DROP
""".splitlines()


def test_docker_user_guard_converged_passes():
    assert docker_user_violations(DOCKER_USER_CONVERGED, "tailscale0", 443) == []


def test_docker_user_default_chain_fails():
    stock = ["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"]
    problems = docker_user_violations(stock, "tailscale0", 443)
    assert any("lets every packet through" in problem for problem in problems)
    assert any("no final unconditional DROP" in problem for problem in problems)


def test_docker_user_missing_door_rule_is_named():
    rules = [rule for rule in DOCKER_USER_CONVERGED if "ctorigdstport" not in rule]
    (problem,) = docker_user_violations(rules, "tailscale0", 443)
    assert "door (443/tcp)" in problem and "ufw reload" in problem


def test_forward_jump_order():
    assert not forward_jumps_to_docker_user(["-P FORWARD DROP", "-A FORWARD -j ufw-before-forward",
                                             "-A FORWARD -j DOCKER-USER"])


UFW_CONVERGED = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
Anywhere on tailscale0     ALLOW IN    Anywhere                   # vos mesh
443/tcp                    ALLOW IN    Anywhere                   # vos door
Anywhere (v6) on tailscale0 ALLOW IN    Anywhere (v6)              # vos mesh
443/tcp (v6)               ALLOW IN    Anywhere (v6)              # vos door
"""


def test_ufw_converged_passes():
    status = parse_ufw_status(UFW_CONVERGED)
    assert status.active and status.defaults["routed"] == "deny"
    assert ufw_violations(status, "tailscale0", 443, ipv6_enabled=True) == []


def test_ufw_allow_5432_is_named_with_the_delete_command():
    status = parse_ufw_status(UFW_CONVERGED + "5432                       ALLOW IN    Anywhere\n"
                              "5432 (v6)                  ALLOW IN    Anywhere (v6)\n")
    problems = ufw_violations(status, "tailscale0", 443, True)
    assert len(problems) == 2
    assert problems[0] == ("FIREWALL §5: UFW rule `5432 ALLOW IN Anywhere` opens 5432 beyond the "
                           "mesh and the door — remove it: `sudo ufw delete allow 5432` (reach it "
                           "over tailscale0 instead)")


def test_ufw_public_ssh_left_open_fails():
    status = parse_ufw_status(UFW_CONVERGED + "22/tcp                     ALLOW IN    Anywhere\n")
    assert "22/tcp" in ufw_violations(status, "tailscale0", 443, True)[0]


def test_ufw_inactive_or_lax_defaults_fail():
    assert "inactive" in ufw_violations(parse_ufw_status("Status: inactive\n"), "tailscale0",
                                        443, True)[0]
    lax = parse_ufw_status(UFW_CONVERGED.replace("deny (incoming)", "allow (incoming)"))
    assert ufw_violations(lax, "tailscale0", 443, True)[0].startswith(
        "FIREWALL §5: UFW default incoming is allow")


def test_ufw_without_ipv6_fails():
    assert "IPV6=no" in ufw_violations(parse_ufw_status(UFW_CONVERGED), "tailscale0", 443,
                                       False)[0]


SSHD_T_CONVERGED = """\
port 22
permitrootlogin no
passwordauthentication no
kbdinteractiveauthentication no
pubkeyauthentication yes
authenticationmethods publickey
maxauthtries 3
logingracetime 30
x11forwarding no
allowagentforwarding no
permittunnel no
permituserenvironment no
allowusers deploy
clientaliveinterval 300
clientalivecountmax 2
maxsessions 4
tcpkeepalive no
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512
ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-gcm@openssh.com,aes128-ctr
macs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com
listenaddress 100.64.0.2:22
listenaddress 127.0.0.1:22
"""


def test_sshd_converged_passes():
    assert sshd_violations(parse_sshd_t(SSHD_T_CONVERGED), ["deploy"]) == []


def test_sshd_password_and_root_login_are_named():
    config = parse_sshd_t(SSHD_T_CONVERGED.replace("passwordauthentication no",
                                                   "passwordauthentication yes")
                          .replace("permitrootlogin no", "permitrootlogin yes"))
    problems = sshd_violations(config, ["deploy"])
    assert problems[0].startswith("SSH §6: permitrootlogin is yes, must be no — fix the drop-in")
    assert problems[1].startswith("SSH §6: passwordauthentication is yes, must be no")


def test_sshd_weak_crypto_and_users_are_named():
    config = parse_sshd_t(SSHD_T_CONVERGED.replace("umac-128-etm@openssh.com", "hmac-sha1")
                          .replace("allowusers deploy", "allowusers deploy\nallowusers root")
                          .replace("aes128-ctr", "aes128-cbc"))
    text = "\n".join(sshd_violations(config, ["deploy"]))
    assert "allowusers is ['deploy', 'root']" in text
    assert "SSH §7: cipher aes128-cbc offered" in text
    assert "SSH §7: non-ETM MAC hmac-sha1 offered" in text


def test_sshd_limits_above_maximum_fail():
    config = parse_sshd_t(SSHD_T_CONVERGED.replace("maxauthtries 3", "maxauthtries 6"))
    assert sshd_violations(config, ["deploy"]) == [
        "SSH §6: maxauthtries is 6, must be 1..3 — fix the drop-in /etc/ssh/sshd_config.d/"
        "00-vos-hardening.conf (or remove the file that overrides it: sshd keeps the first "
        "value it reads), then `sudo sshd -t && sudo systemctl reload ssh` — or re-run the deploy"
    ]


def test_sshd_listening_publicly_fails_and_missing_mesh_fails():
    assert sshd_listen_violations(parse_ss(SS_CONVERGED), MESH) == []
    public = parse_ss('tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=5,fd=3))')
    problems = sshd_listen_violations(public, MESH)
    assert problems[0].startswith("SSH §8: sshd listens on 0.0.0.0:22")
    assert problems[1].startswith("SSH §8: sshd does not listen on the mesh IP 100.64.0.2")


def test_socket_activated_sshd_counts_as_sshd():
    socket = parse_ss('tcp LISTEN 0 4096 100.64.0.2:22 0.0.0.0:* users:(("systemd",pid=1,fd=50))')
    assert sshd_listen_violations(socket, MESH) == []


PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n" \
         "deploy:x:1000:1000::/home/deploy:/bin/bash\n"


def test_shadow_converged_passes_and_passwords_fail():
    assert shadow_violations("root:!*:20000::::::\ndaemon:*:1::::::\ndeploy:!:20000::::::\n",
                             PASSWD) == []
    problems = shadow_violations("root:$y$j9T$abc:1::::::\ndeploy:$y$j9T$def:1::::::\n"
                                 "daemon:*:1::::::\n", PASSWD)
    assert problems == ["BASE §11: root's password is not locked — `sudo passwd -l root`",
                        "BASE §11: login user deploy's password is set — keys only: "
                        "`sudo passwd -l deploy`"]
    assert "is empty" in shadow_violations("deploy::1::::::\n", PASSWD)[0]


def test_sysctl_values_and_minimums():
    wanted = {"kernel.sysrq": 0, "net.ipv4.ip_forward": 1}
    assert sysctl_violations({"kernel.sysrq": "0", "net.ipv4.ip_forward": "1",
                              "kernel.yama.ptrace_scope": "2"}, wanted,
                             {"kernel.yama.ptrace_scope": 1}) == []
    problems = sysctl_violations({"kernel.sysrq": "176"}, wanted, {"kernel.yama.ptrace_scope": 1})
    assert problems[0].startswith("SYSCTL §10: kernel.sysrq is 176, must be 0 — set it in")
    assert "net.ipv4.ip_forward is (missing)" in problems[1]
    assert "kernel.yama.ptrace_scope is (missing), must be >= 1" in problems[2]


def test_fail2ban_outputs():
    dump = "['set', 'loglevel', 'INFO']\n['add', 'sshd', 'systemd']\n" \
           "['add', 'recidive', 'auto']\n['add', 'vos-door', 'systemd']"
    assert parse_fail2ban_dump(dump) == {"sshd": "systemd", "recidive": "auto",
                                         "vos-door": "systemd"}
    status = "Status\n|- Number of jail:\t3\n`- Jail list:\trecidive, sshd, vos-door"
    assert parse_fail2ban_status(status) == ["recidive", "sshd", "vos-door"]
    assert parse_fail2ban_status("Status\n|- Number of jail:\t0\n`- Jail list:\t") == []


def test_gate_summary_lists_each_broken_invariant():
    result = GateResult(False, 20, [
        {"test": "checks/test_firewall.py::test_ufw_policy_and_rules[ssh://deploy@h]",
         "message": "AssertionError: FIREWALL §5: UFW rule `5432 ALLOW IN Anywhere` opens 5432"
                    "\nassert not ['FIREWALL §5: …']"},
    ])
    lines = result.summary().splitlines()
    assert lines[0] == "GATE FAILED: 1 check(s) broken, 20 passed"
    assert lines[1] == "  - FIREWALL §5: UFW rule `5432 ALLOW IN Anywhere` opens 5432"
    assert all(not line.strip().startswith("assert") for line in lines)


def test_gate_command_pins_host_keys_and_passes_expectations(tmp_path):
    target = Target("ssh://deploy@100.64.0.2", ssh_key="/k", known_hosts_file="/kh")
    command = pytest_command(target, 443, "deploy", tmp_path / "r.json", tmp_path / "cfg",
                             mesh_ip=MESH)
    assert "--hosts=ssh://deploy@100.64.0.2" in command
    assert f"--ssh-config={tmp_path / 'cfg'}" in command and f"--vos-mesh-ip={MESH}" in command
    config = ssh_config_text(target, tmp_path)
    assert "    UserKnownHostsFile /kh" in config and "    StrictHostKeyChecking yes" in config
    assert "    IdentityFile /k" in config and f"    ControlPath {tmp_path}/cm-%C" in config
