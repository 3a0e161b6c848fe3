"""Parsers and judgements behind the checks: plain functions over command output, so each one
is unit-tested against recorded output and every failure message names the invariant, the
offending socket/rule/value, and the fix.

`checks/` imports nothing from `roles/`: it judges the host as an outsider would.

Example:
    >>> line = 'tcp LISTEN 0 5 0.0.0.0:9999 0.0.0.0:* users:(("python3",pid=812,fd=3))'
    >>> exposure_violations(parse_ss(line), door_port=443, mesh_ip="100.64.0.2")[0][:31]
    'EXPOSURE §1: python3 (pid 812) '
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from stack import binding
from stack.compose import PROJECT as STACK_PROJECT

_SS_PROCESS = re.compile(r'\("([^"]+)",pid=(\d+)')


@dataclass(frozen=True)
class Listener:
    """One listening socket from `ss -Htlnup`."""

    proto: str
    address: str
    port: int
    process: str
    pid: int | None

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def who(self) -> str:
        return f"{self.process} (pid {self.pid})" if self.pid else self.process


def _split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if "%" in host:  # "0.0.0.0%lo" or "[::]%eth0": the bind device does not change exposure
        host = host.split("%", 1)[0]
    return host or "*", int(port) if port.isdigit() else 0


def parse_ss(output: str) -> list[Listener]:
    """Parse `ss -Htlnup` (TCP listeners and UDP sockets, with processes); also `ss -Htlnp`,
    whose lines lack the Netid column.

    Example:
        >>> parse_ss('udp UNCONN 0 0 *:41641 *:* users:(("tailscaled",pid=9,fd=4))')[0].address
        '*'
    """
    listeners = []
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in ("LISTEN", "UNCONN"):
            # one socket type only (`ss -tln`): ss omits the Netid column
            fields = ["tcp" if fields[0] == "LISTEN" else "udp", *fields]
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, port = _split_address(fields[4])
        match = _SS_PROCESS.search(line)
        listeners.append(Listener(fields[0], address, port, match.group(1) if match else
                                  "(kernel socket)", int(match.group(2)) if match else None))
    return listeners


def is_wildcard(address: str) -> bool:
    """0.0.0.0, ::, * — reachable on every interface.

    Example:
        >>> is_wildcard("::"), is_wildcard("127.0.0.1")
        (True, False)
    """
    return address in ("*", "0.0.0.0", "::", "")


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1.

    Example:
        >>> is_loopback("127.0.0.53")
        True
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)  # "::ffff:127.0.0.1"
    return (mapped or parsed).is_loopback


def exposure_violations(listeners: list[Listener], door_port: int, mesh_ip: str,
                        udp_allowed: dict[int, str] | None = None) -> list[str]:
    """INVARIANTS §1: every TCP listener binds loopback or the mesh IP, except the door.

    UDP sockets bound to all interfaces are allowed only on `udp_allowed` ports (the mesh's
    own port, the DHCP client), each with its reason. A bind to any other specific address
    (e.g. the public IP) is as exposed as a wildcard, so it fails too.

    Example:
        >>> exposure_violations([Listener("tcp", "0.0.0.0", 443, "caddy", 5)], 443, "100.64.0.2")
        []
    """
    udp_allowed = udp_allowed or {}
    problems = []
    for item in listeners:
        if is_loopback(item.address) or item.address == mesh_ip:
            continue
        if item.proto == "tcp" and item.port == door_port:
            continue
        if item.proto == "udp" and item.port in udp_allowed:
            continue
        where = "listens on" if item.proto == "tcp" else "has a UDP socket on"
        problems.append(
            f"EXPOSURE §1: {item.who} {where} {item.endpoint}/{item.proto} — bind it to the "
            f"mesh IP {mesh_ip} or 127.0.0.1, or stop it"
        )
    return problems


@dataclass(frozen=True)
class Published:
    """One published container port from `docker inspect` (is_door: the stack's compose
    service `door`; host_network: the container shares the host's network namespace)."""

    container: str
    image: str
    host_ip: str
    host_port: int
    container_port: str
    is_door: bool = False
    host_network: bool = False


def parse_docker_inspect(text: str) -> list[Published]:
    """Published ports of every container in `docker inspect` JSON output.

    Example:
        >>> data = ('[{"Name": "/web", "Config": {"Image": "nginx"}, "NetworkSettings": '
        ...         '{"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}}]')
        >>> parse_docker_inspect(data)[0].host_port
        8080
    """
    text = text.strip()
    if not text:
        return []
    containers = json.loads(text)
    images = {str(c.get("Name", "?")).lstrip("/"): (c.get("Config") or {}).get("Image", "?")
              for c in containers}
    return [Published(item.who, images.get(item.who, "?"), item.host_ip,
                      int(item.host_port or 0), item.target, item.is_door, item.host_network)
            for item in binding.from_inspect(containers, project=STACK_PROJECT)]


def published_violations(published: list[Published], door_port: int, mesh_ip: str) -> list[str]:
    """INVARIANTS §2: every published port binds the mesh IP or 127.0.0.1, except the door's
    on the door port (the shared judgement: stack/binding.py).

    Example:
        >>> published_violations([Published("web", "nginx", "0.0.0.0", 8080, "80/tcp")],
        ...                      443, "100.64.0.2")[0][:45]
        'EXPOSURE §2: container web (nginx) publishes '
    """
    problems = []
    for item in published:
        reason = binding.violation(
            binding.Publication(item.container, item.host_ip, str(item.host_port or ""),
                                item.container_port, item.is_door, item.host_network),
            mesh_ip, door_port)
        if reason is None:
            continue
        if item.host_network:
            problems.append(f"EXPOSURE §2: container {item.container} ({item.image}) runs "
                            f"{reason} — remove --network host and publish on {mesh_ip}")
            continue
        shown = item.host_ip or "0.0.0.0"
        problems.append(
            f"EXPOSURE §2: container {item.container} ({item.image}) publishes "
            f"{shown}:{item.host_port}->{item.container_port} {reason} — publish it "
            f"as {mesh_ip}:{item.host_port}:{item.container_port.split('/')[0]} (or "
            f"127.0.0.1:…) in the compose file, or remove the port"
        )
    return problems


def docker_user_violations(rules: list[str], mesh_interface: str, door_port: int) -> list[str]:
    """INVARIANTS §3: DOCKER-USER lets the mesh, the bridges and the door through, then drops.

    `rules` are the lines of `iptables -S DOCKER-USER`.

    Example:
        >>> docker_user_violations(["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"],
        ...                        "tailscale0", 443)[0][:24]
        'EXPOSURE §3: DOCKER-USER'
    """
    appended = [rule for rule in rules if rule.startswith("-A DOCKER-USER")]
    fix = "run the deploy (firewall step) or `sudo ufw reload`"
    if not appended:
        return [f"EXPOSURE §3: DOCKER-USER chain is empty or missing, so published container "
                f"ports bypass UFW — {fix}"]
    problems = []
    final_drop = None
    for index, rule in enumerate(appended):
        body = rule.removeprefix("-A DOCKER-USER").strip()
        target = body.rsplit("-j ", 1)[-1].strip()
        matches = re.sub(r"-m comment --comment \S+", "", body.rsplit("-j ", 1)[0]).strip()
        if target == "DROP" and not matches:
            final_drop = index
            break
        if target in ("RETURN", "ACCEPT") and not matches:
            problems.append(f"EXPOSURE §3: DOCKER-USER rule `{rule}` lets every packet through "
                            f"before the drop — {fix}")
    if final_drop is None:
        problems.append(f"EXPOSURE §3: DOCKER-USER has no final unconditional DROP, so traffic "
                        f"from outside the mesh reaches containers — {fix}")
    if not any(f"-i {mesh_interface} " in f"{rule} " and rule.endswith("RETURN")
               for rule in appended):
        problems.append(f"EXPOSURE §3: DOCKER-USER does not let the mesh ({mesh_interface}) "
                        f"through — {fix}")
    if not any(f"--ctorigdstport {door_port} " in f"{rule} " for rule in appended):
        problems.append(f"EXPOSURE §3: DOCKER-USER does not let the door ({door_port}/tcp) "
                        f"through — {fix}")
    return problems


def forward_jumps_to_docker_user(forward_rules: list[str]) -> bool:
    """True when FORWARD's first rule jumps to DOCKER-USER (Docker's contract).

    Example:
        >>> forward_jumps_to_docker_user(["-P FORWARD DROP", "-A FORWARD -j DOCKER-USER"])
        True
    """
    appended = [rule for rule in forward_rules if rule.startswith("-A FORWARD")]
    return bool(appended) and appended[0] == "-A FORWARD -j DOCKER-USER"


@dataclass(frozen=True)
class UfwStatus:
    """`ufw status verbose`, parsed."""

    active: bool
    defaults: dict[str, str]
    rules: list[tuple[str, str, str]]  # (to, action, from)


def parse_ufw_status(output: str) -> UfwStatus:
    """Parse `ufw status verbose`.

    Example:
        >>> status = parse_ufw_status("Status: active\\nDefault: deny (incoming), allow "
        ...     "(outgoing), deny (routed)\\n\\nTo  Action  From\\n--  ------  ----\\n"
        ...     "443/tcp                    ALLOW IN    Anywhere")
        >>> status.rules
        [('443/tcp', 'ALLOW IN', 'Anywhere')]
    """
    active = False
    defaults: dict[str, str] = {}
    rules = []
    in_table = False
    for line in output.splitlines():
        if line.startswith("Status:"):
            active = line.split(":", 1)[1].strip() == "active"
        elif line.startswith("Default:"):
            defaults = {direction: policy for policy, direction
                        in re.findall(r"(\w+) \((\w+)\)", line)}
        elif line.startswith("--"):
            in_table = True
        elif in_table and line.strip():
            text = line.split(" # ", 1)[0].rstrip()
            columns = re.split(r"\s{2,}", text.strip())
            if len(columns) >= 3:
                rules.append((columns[0], columns[1], columns[2]))
    return UfwStatus(active, defaults, rules)


def ufw_violations(status: UfwStatus, mesh_interface: str, door_port: int,
                   ipv6_enabled: bool) -> list[str]:
    """INVARIANTS §5: active, deny in / allow out / deny routed, ALLOW IN only on the mesh
    interface or to the door, IPv6 managed too.

    Example:
        >>> ufw_violations(UfwStatus(True, {"incoming": "deny", "outgoing": "allow",
        ...     "routed": "deny"}, [("5432", "ALLOW IN", "Anywhere")]), "tailscale0", 443,
        ...     True)[0][:40]
        'FIREWALL §5: UFW rule `5432 ALLOW IN Any'
    """
    if not status.active:
        return ["FIREWALL §5: UFW is inactive — run the deploy (firewall step) or "
                "`sudo ufw enable` after checking its rules"]
    problems = []
    wanted = {"incoming": "deny", "outgoing": "allow", "routed": "deny"}
    for direction, policy in wanted.items():
        have = status.defaults.get(direction, "?")
        if have != policy:
            problems.append(f"FIREWALL §5: UFW default {direction} is {have}, must be {policy} "
                            f"— `sudo ufw default {policy} {direction}`")
    door = {f"{door_port}/tcp", f"{door_port}/tcp (v6)"}
    mesh = {f"Anywhere on {mesh_interface}", f"Anywhere (v6) on {mesh_interface}"}
    for to, action, source in status.rules:
        if not action.startswith("ALLOW") and not action.startswith("LIMIT"):
            continue
        if action.endswith("OUT") or to in mesh or (to in door and "on " not in to):
            continue
        rule = f"{to} {action} {source}"
        port = to.split(" ")[0]
        problems.append(f"FIREWALL §5: UFW rule `{rule}` opens {port} beyond the mesh and the "
                        f"door — remove it: `sudo ufw delete allow {port}` (reach it over "
                        f"{mesh_interface} instead)")
    if not ipv6_enabled:
        problems.append("FIREWALL §5: UFW does not manage IPv6 (IPV6=no in /etc/default/ufw) "
                        "— set IPV6=yes and `sudo ufw reload`")
    elif not any(to == f"{door_port}/tcp (v6)" for to, _, _ in status.rules):
        problems.append(f"FIREWALL §5: no IPv6 rule for the door {door_port}/tcp — "
                        f"`sudo ufw allow {door_port}/tcp` with IPV6=yes")
    return problems


def parse_sshd_t(output: str) -> dict[str, list[str]]:
    """`sshd -T` as {keyword: [values…]} (repeated keywords such as allowusers accumulate).

    Example:
        >>> parse_sshd_t("permitrootlogin no\\nallowusers deploy\\nallowusers ops")["allowusers"]
        ['deploy', 'ops']
    """
    config: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            config.setdefault(key.lower(), []).append(value.strip())
    return config


SSH_EXACT = {
    "permitrootlogin": "no",
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "pubkeyauthentication": "yes",
    "authenticationmethods": "publickey",
    "x11forwarding": "no",
    "allowagentforwarding": "no",
    "permittunnel": "no",
    "permituserenvironment": "no",
    "clientaliveinterval": "300",
    "tcpkeepalive": "no",
}
SSH_AT_MOST = {"maxauthtries": 3, "logingracetime": 30, "clientalivecountmax": 3,
               "maxsessions": 4}
ALLOWED_KEX = {
    "sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512", "mlkem768x25519-sha256",
    "curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group18-sha512",
    "diffie-hellman-group16-sha512", "diffie-hellman-group-exchange-sha256",
}
ALLOWED_CIPHERS = {
    "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
    # ssh-audit's Hardened Ubuntu 24.04 policy requires the CTR modes; paired with -etm MACs.
    "aes256-ctr", "aes192-ctr", "aes128-ctr",
}
SSH_FIX = ("fix the drop-in /etc/ssh/sshd_config.d/00-vos-hardening.conf (or remove the file "
           "that overrides it: sshd keeps the first value it reads), then `sudo sshd -t && "
           "sudo systemctl reload ssh` — or re-run the deploy")


def sshd_violations(config: dict[str, list[str]], allow_users: list[str]) -> list[str]:
    """INVARIANTS §6-7 on effective `sshd -T` values.

    Example:
        >>> sshd_violations({"permitrootlogin": ["yes"]}, ["deploy"])[0][:43]
        'SSH §6: permitrootlogin is yes, must be no '
    """
    problems = []

    def value(key: str) -> str:
        return (config.get(key) or ["(unset)"])[0]

    for key, wanted in SSH_EXACT.items():
        if value(key) != wanted:
            problems.append(f"SSH §6: {key} is {value(key)}, must be {wanted} — {SSH_FIX}")
    for key, limit in SSH_AT_MOST.items():
        have = value(key)
        if not have.isdigit() or int(have) > limit or int(have) == 0:
            problems.append(f"SSH §6: {key} is {have}, must be 1..{limit} — {SSH_FIX}")
    users = sorted(" ".join(config.get("allowusers", [])).split())
    if users != sorted(allow_users):
        problems.append(f"SSH §6: allowusers is {users or '(unset)'}, must be exactly "
                        f"{sorted(allow_users)} — {SSH_FIX}")
    for key, allowed, label in (("kexalgorithms", ALLOWED_KEX, "KEX"),
                                ("ciphers", ALLOWED_CIPHERS, "cipher")):
        extra = sorted(set(value(key).split(",")) - allowed)
        if extra:
            problems.append(f"SSH §7: {label} {', '.join(extra)} offered — {SSH_FIX}")
    macs = [mac for mac in value("macs").split(",") if "-etm@" not in mac]
    if macs:
        problems.append(f"SSH §7: non-ETM MAC {', '.join(macs)} offered — {SSH_FIX}")
    return problems


def sshd_listen_violations(listeners: list[Listener], mesh_ip: str) -> list[str]:
    """INVARIANTS §8: sshd listens on the mesh IP (and loopback) only.

    Example:
        >>> sshd_listen_violations([Listener("tcp", "0.0.0.0", 22, "sshd", 1)], "100.64.0.2")[0][:7]
        'SSH §8:'
    """
    sshd = [item for item in listeners if item.proto == "tcp" and item.process.startswith("sshd")
            or (item.proto == "tcp" and item.process == "systemd" and item.port == 22)]
    problems = [
        f"SSH §8: sshd listens on {item.endpoint} — after the cutover it listens on {mesh_ip} "
        f"and 127.0.0.1 only; re-run the deploy (cutover step) or fix ListenAddress"
        for item in sshd if not (item.address == mesh_ip or is_loopback(item.address))
    ]
    if not any(item.address == mesh_ip for item in sshd):
        problems.append(f"SSH §8: sshd does not listen on the mesh IP {mesh_ip} — the admins' "
                        f"only way in; check `ip addr show tailscale0` and the listen drop-in")
    return problems


def shadow_violations(shadow: str, passwd: str) -> list[str]:
    """INVARIANTS §11: no password set for any login user; root locked.

    Example:
        >>> shadow_violations("root:$6$x:1::::::", "root:x:0:0::/root:/bin/bash")[0][:9]
        'BASE §11:'
    """
    shells = {}
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) >= 7:
            shells[parts[0]] = parts[6]
    problems = []
    for line in shadow.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        user, password = parts[0], parts[1]
        login = not shells.get(user, "").endswith(("nologin", "false", "sync"))
        locked = password.startswith(("!", "*"))
        if user == "root" and not locked:
            problems.append("BASE §11: root's password is not locked — `sudo passwd -l root`")
        elif login and not locked:
            state = "is empty" if password == "" else "is set"
            problems.append(f"BASE §11: login user {user}'s password {state} — keys only: "
                            f"`sudo passwd -l {user}`")
    return problems


def sysctl_violations(values: dict[str, str], wanted: dict[str, int],
                      at_least: dict[str, int]) -> list[str]:
    """INVARIANTS §10.

    Example:
        >>> sysctl_violations({"kernel.sysrq": "1"}, {"kernel.sysrq": 0}, {})[0][:38]
        'SYSCTL §10: kernel.sysrq is 1, must be'
    """
    problems = []
    fix = "set it in /etc/sysctl.d/99-vos-hardening.conf and `sudo sysctl --system`"
    for key, value in wanted.items():
        have = values.get(key, "(missing)")
        if have != str(value):
            problems.append(f"SYSCTL §10: {key} is {have}, must be {value} — {fix}")
    for key, value in at_least.items():
        have = values.get(key, "(missing)")
        if not have.isdigit() or int(have) < value:
            problems.append(f"SYSCTL §10: {key} is {have}, must be >= {value} — {fix}")
    return problems


def parse_fail2ban_dump(output: str) -> dict[str, str]:
    """{jail: backend} from `fail2ban-client -d` (lines like "['add', 'sshd', 'systemd']").

    Example:
        >>> parse_fail2ban_dump("['add', 'sshd', 'systemd']\\n['start', 'sshd']")
        {'sshd': 'systemd'}
    """
    jails = {}
    for match in re.finditer(r"\['add', '([^']+)', '([^']+)'\]", output):
        jails[match.group(1)] = match.group(2)
    return jails


def parse_fail2ban_status(output: str) -> list[str]:
    """Running jails from `fail2ban-client status`.

    Example:
        >>> parse_fail2ban_status("|- Number of jail: 2\\n`- Jail list:\\tsshd, recidive")
        ['sshd', 'recidive']
    """
    match = re.search(r"Jail list:\s*(.*)", output)
    if not match or not match.group(1).strip():
        return []
    return [name.strip() for name in match.group(1).split(",") if name.strip()]
