"""The invariant catalogue: what a converged host must hold, as data.

Every gate message cites an entry as "FAMILY §N" (e.g. "EXPOSURE §1: python3 (pid 812)
listens on 0.0.0.0:9999/tcp — …"): N is the entry's number, FAMILY the check family that
reports it (one of the entry's `cited_as`). Comments and docs cite "INVARIANTS.md §N".
docs/INVARIANTS.md is rendered from this module (`python -m checks.catalogue >
docs/INVARIANTS.md`); tests/unit/test_catalogue.py keeps the two in step, checks that every
citation in the code names an entry here, and that every `check` and `planted` reference
exists.

References are "path::function" (a function in checks/, stack/, … or a test function).
`check` judges the invariant; `planted` is the test that plants a violation on a real system
(the staging VM, real containers, a real keyring) and sees the check catch it, or None when
no test does that yet. `gap` says honestly what the checks do not cover.

Values come from public hardening baselines (dev-sec ssh/linux baselines, CIS Ubuntu 24.04,
ssh-audit's "Hardened Ubuntu Server 24.04 LTS" policy, CIS Docker benchmark 5.14); where they
disagree the stricter value wins unless it breaks Docker or the mesh.

Example:
    >>> CATALOGUE[1].cite("EXPOSURE")
    'EXPOSURE §1'
    >>> CATALOGUE[1].section
    'Exposure'
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Invariant:
    """One entry: its number (the §N every message cites), and what, why, how to fix it."""

    number: int
    section: str
    title: str
    statement: str
    why: str
    fix: str
    check: tuple[str, ...]
    planted: tuple[str, ...] | None
    cited_as: tuple[str, ...] = ()
    gap: str | None = None

    @property
    def id(self) -> str:
        return f"§{self.number}"

    def cite(self, family: str) -> str:
        """The prefix a check message starts with, e.g. "SSH §6"."""
        if family not in self.cited_as:
            raise ValueError(f"{self.id} is not reported by family {family}: {self.cited_as}")
        return f"{family} {self.id}"


HARDENING = "tests/staging/test_hardening.py"
STACK_STAGING = "tests/staging/test_stack_staging.py"
MATRIX = "tests/staging/test_mutation_matrix.py"
STACK_RUNTIME = "tests/integration/test_stack_runtime.py"
BACKUPS_INTEGRATION = "tests/integration/test_backups.py"
KERNEL_CONTAINER = "tests/integration/test_kernel_checks.py"
ACCOUNTS_FILES = "tests/integration/test_checks_accounts_files.py"

ENTRIES = [
    # ------------------------------------------------------------------ Exposure (one door)
    Invariant(
        1, "Exposure", "Nothing listens on all interfaces but the door",
        statement="No TCP socket listens on 0.0.0.0, :: or the public address except the door "
                  "port (443/tcp by default). Every listener is enumerated (`ss`), not probed "
                  "port by port: a probe of one port sees only the binds it asks about.",
        why="The host has one public door; anything else bound to every interface is an "
            "unreviewed service on the internet the moment the firewall slips.",
        fix="Bind the service to the mesh IP or 127.0.0.1, or stop it.",
        check=("checks/test_exposure.py::test_no_listener_beyond_loopback_mesh_and_door",
               "checks/invariants.py::exposure_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("EXPOSURE",),
    ),
    Invariant(
        2, "Exposure", "Published container ports bind the mesh or loopback",
        statement="Every port Docker publishes binds the mesh IP or 127.0.0.1, except the door "
                  "service on the door port. Judged twice: on the rendered compose file before "
                  "`up` (the static gate) and on the running containers after.",
        why="Docker's published ports bypass UFW; a `0.0.0.0:` mapping is public whatever the "
            "firewall says.",
        fix="Give the port mapping a host IP (the mesh IP or 127.0.0.1) in "
            "templates/stack/compose.yml.j2, or remove the container.",
        check=("checks/test_exposure.py::test_published_ports_bind_mesh_or_loopback",
               "checks/test_stack.py::test_no_container_binds_all_interfaces_except_the_door",
               "checks/test_stack.py::test_docker_ps_shows_no_all_interface_binding",
               "stack/gate.py::compose_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{HARDENING}::test_docker_published_ports_mutation",
                 f"{STACK_RUNTIME}::test_all_interfaces_binding_fails_naming_container_and_fix",
                 f"{STACK_STAGING}::test_static_gate_stops_planted_templates_before_anything_"
                 "starts"),
        cited_as=("EXPOSURE", "STACK"),
    ),
    Invariant(
        3, "Exposure", "Docker cannot publish past the mesh by default",
        statement="Docker's default bind address (daemon.json \"ip\") is the mesh IP or "
                  "127.0.0.1, so a mapping without a host IP never lands on every interface; "
                  "and the DOCKER-USER chain drops traffic to containers that does not come "
                  "from the mesh interface or a bridge, except to the door.",
        why="Published ports skip UFW's INPUT rules through Docker's own chains; these two "
            "guards hold even when a mapping is written carelessly.",
        fix="Re-run the deploy (docker and firewall steps): they write daemon.json and the "
            "DOCKER-USER rules.",
        check=("checks/test_docker.py::test_default_bind_is_mesh_or_loopback",
               "checks/test_exposure.py::test_docker_user_guard",
               "checks/invariants.py::docker_user_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("EXPOSURE", "DOCKER"),
        gap="daemon.json is judged as written; a dockerd started with other flags (a systemd "
            "drop-in's --ip) is not looked at.",
    ),
    Invariant(
        4, "Exposure", "From outside, exactly one port is open",
        statement="A scanner on the public network (not on the host) finds exactly one open "
                  "TCP port, the door; SSH, the Command Center, the private API and Postgres "
                  "do not answer there.",
        why="The host's own view can be wrong (a forgotten NAT rule, a provider firewall); "
            "the outsider's view is what an attacker gets.",
        fix="Find the listener or the rule behind the extra port (invariants 1-3, 5) and "
            "close it.",
        check=(f"{HARDENING}::test_outside_scan_sees_exactly_the_door",
               "staging/scanner.py::scan"),
        planted=("tests/staging/test_a_fresh_vm.py::"
                 "test_scanner_sees_a_new_listener_and_its_closing",),
        gap="Judged on the staging VM only (the scanner lives in the lab's public namespace); "
            "`vos check` and the deploy gate run on the host and cannot see it.",
    ),
    Invariant(
        5, "Exposure", "UFW denies by default, the mesh and the door excepted",
        statement="UFW is active: incoming denied, outgoing allowed, routed denied except "
                  "Docker's; incoming allowed only on the mesh interface, plus the door port "
                  "from anywhere; the same for IPv6.",
        why="The firewall is the second wall behind correct binds: a service that binds "
            "wrongly still is not reachable.",
        fix="Delete the extra rule (`sudo ufw delete allow PORT`) or re-run the deploy "
            "(firewall step).",
        check=("checks/test_firewall.py::test_ufw_policy_and_rules",
               "checks/invariants.py::ufw_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("FIREWALL",),
    ),
    # ------------------------------------------------------------------------------- SSH
    Invariant(
        6, "SSH", "sshd's effective settings are hardened",
        statement="Read from `sshd -T` (the values sshd uses, not the files): no root login, "
                  "no passwords, no keyboard-interactive, public keys only "
                  "(authenticationmethods publickey), maxauthtries ≤ 3, logingracetime ≤ 30, "
                  "no X11, agent or tunnel forwarding, no user environment, allowusers = the "
                  "deploy user(s), clientaliveinterval 300, clientalivecountmax ≤ 3, "
                  "maxsessions ≤ 4, tcpkeepalive no (liveness inside the channel).",
        why="A drop-in read earlier, or a default, can override what a file says; only the "
            "effective values count.",
        fix="Fix or remove the drop-in under /etc/ssh/sshd_config.d/ that sets it, or re-run "
            "the deploy (ssh step).",
        check=("checks/test_ssh.py::test_effective_sshd_config",
               "checks/invariants.py::sshd_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("SSH",),
    ),
    Invariant(
        7, "SSH", "Modern SSH crypto only",
        statement="Key exchange sntrup761x25519 / mlkem768x25519 where offered, and "
                  "curve25519; ciphers chacha20-poly1305 and AES-GCM; encrypt-then-MAC MACs "
                  "only. ssh-audit's built-in \"Hardened Ubuntu Server 24.04 LTS\" policy "
                  "passes on the mesh address.",
        why="Legacy algorithms are the usual findings of an audit and the easiest downgrade.",
        fix="Re-run the deploy (ssh step); remove any drop-in that widens the algorithm lists.",
        check=("checks/test_ssh.py::test_effective_sshd_config",
               "checks/invariants.py::sshd_violations",
               f"{HARDENING}::test_ssh_audit_hardened_ubuntu_2404_policy"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("SSH",),
    ),
    Invariant(
        8, "SSH", "sshd on the mesh only, and a cutover that cannot lock out",
        statement="After the cutover sshd listens on the mesh IP (and loopback) only. The "
                  "cutover closes public SSH only after an SSH session over the mesh has "
                  "succeeded, and keeps a way back when it has not. Ubuntu 24.04's socket "
                  "activation (ssh.socket) holds the listen addresses, and a ListenAddress "
                  "absent at boot stops sshd: both are handled.",
        why="Public SSH is the most attacked service there is; closing it wrongly is the one "
            "mistake that needs console access to undo.",
        fix="Re-run the deploy (ssh step) once the mesh is up; it moves sshd to the mesh IP.",
        check=("checks/test_ssh.py::test_sshd_listens_on_mesh_and_loopback_only",
               "checks/invariants.py::sshd_listen_violations",
               f"{HARDENING}::test_ssh_answers_only_on_the_mesh"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{HARDENING}::test_cutover_stops_with_public_ssh_intact_when_mesh_ssh_fails"),
        cited_as=("SSH",),
    ),
    # ----------------------------------------------------------------- Firewall companions
    Invariant(
        9, "Firewall companions", "Fail2ban bans repeat offenders within seconds",
        statement="Fail2ban runs with the systemd backend: an sshd jail, a recidive jail, and "
                  "a jail for the door that bans sources of repeated bad signatures. A ban "
                  "lands within seconds of the threshold (default: 5 failures in 10 minutes).",
        why="The door is public by design; repeated forgeries and guessing must cost the "
            "sender its access.",
        fix="Re-run the deploy (fail2ban step); `sudo systemctl start fail2ban`.",
        check=("checks/test_fail2ban.py::test_fail2ban_running",
               "checks/test_fail2ban.py::test_jail_active",
               "checks/test_fail2ban.py::test_journal_jails_use_systemd_backend",
               "checks/test_fail2ban.py::test_sshd_threshold"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{STACK_STAGING}::test_a_burst_of_bad_signatures_gets_the_source_banned"),
        cited_as=("FAIL2BAN",),
    ),
    Invariant(
        10, "Firewall companions", "Kernel settings from the dev-sec baseline",
        statement="Live sysctl values: fs.protected_hardlinks=1, fs.protected_symlinks=1, "
                  "fs.protected_fifos=2, fs.protected_regular=2, fs.suid_dumpable=0, "
                  "kernel.kptr_restrict=2, kernel.randomize_va_space=2, kernel.sysrq=0, "
                  "kernel.yama.ptrace_scope≥1, kernel.unprivileged_bpf_disabled=1, "
                  "net.ipv4.conf.all.rp_filter=1, net.ipv4.tcp_syncookies=1, "
                  "net.ipv4.conf.all.accept_redirects=0, net.ipv4.conf.all.send_redirects=0, "
                  "net.ipv4.conf.all.accept_source_route=0, net.ipv4.conf.all.log_martians=1, "
                  "net.ipv4.icmp_echo_ignore_broadcasts=1, net.ipv6.conf.all.accept_redirects=0, "
                  "net.ipv6.conf.all.accept_ra=0, kernel.dmesg_restrict=1, "
                  "kernel.perf_event_paranoid=3, dev.tty.ldisc_autoload=0, "
                  "net.core.bpf_jit_harden=2, no source routing on IPv6 or new IPv4 interfaces "
                  "(the rest of Lynis's KRNL-6000 profile is persisted too). "
                  "net.ipv4.ip_forward stays 1 (Docker needs it).",
        why="Cheap kernel defences against local privilege escalation and network tricks "
            "(redirects, source routing, spoofing).",
        fix="Set it in /etc/sysctl.d/99-vos-hardening.conf and `sudo sysctl --system`, or "
            "re-run the deploy (sysctl step).",
        check=("checks/test_sysctl.py::test_kernel_settings",
               "checks/invariants.py::sysctl_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("SYSCTL",),
    ),
    Invariant(
        11, "Firewall companions", "Security upgrades on, no passwords, root locked",
        statement="Unattended security upgrades are enabled; no login user has a password; "
                  "root's password is locked.",
        why="Keys over the mesh are the only way in; a password is a second, weaker door, "
            "and unpatched packages are the commonest way past the first.",
        fix="`sudo passwd -l USER`; re-run the deploy (base and users steps).",
        check=("checks/test_accounts.py::test_no_passwords_and_root_locked",
               "checks/test_accounts.py::test_unattended_security_upgrades",
               "checks/invariants.py::shadow_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("BASE",),
    ),
    # ---------------------------------------------------------------- State (stateless VPS)
    Invariant(
        12, "State", "Containers are read-only, unprivileged and stateless",
        statement="Containers run with a read-only root filesystem, no-new-privileges and all "
                  "capabilities dropped (unless a service names one); no named volume or "
                  "writable bind mount holds application state. Postgres, reached over the "
                  "mesh or TLS, is the only durable store.",
        why="A host that keeps no state can be rebuilt from the repository in minutes, and a "
            "compromised container cannot write itself a foothold.",
        fix="Restore the hardening block (read_only, security_opt, cap_drop) and remove the "
            "volume in templates/stack/compose.yml.j2; deploy again.",
        check=("checks/test_stack.py::test_stack_containers_are_hardened",
               "stack/gate.py::compose_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{STACK_RUNTIME}::test_unhardened_stack_container_fails",
                 f"{STACK_STAGING}::test_static_gate_stops_planted_templates_before_anything_"
                 "starts"),
        cited_as=("STACK",),
    ),
    Invariant(
        13, "State", "No secret is readable by others",
        statement="No application secret is world-readable: the stack's env files are 0600 "
                  "root:root, the backup spool, the database URL file and the backup keyring "
                  "are closed to group and others.",
        why="Every local account and process would otherwise hold the keys to the database "
            "and the backups.",
        fix="chmod 0600 (files) / 0700 (directories), or re-run the deploy.",
        check=("checks/test_backups.py::test_backup_files_closed_to_others",
               "checks/test_files.py::test_stack_env_files_are_closed",
               "checks/accounts_rules.py::env_file_violations"),
        planted=(f"{BACKUPS_INTEGRATION}::test_check_fails_on_a_backup_readable_by_others",
                 f"{ACCOUNTS_FILES}::test_planted_file_violations_fail_naming_each_fix"),
        cited_as=("BACKUPS", "FILES"),
    ),
    Invariant(
        14, "State", "The host holds the backup public key only",
        statement="The host encrypts backups to the operator's public key; no private key is "
                  "in any keyring on it.",
        why="A stolen host must not be able to read its own old backups.",
        fix="Delete the secret key files, treat the pair as compromised, make a new one and "
            "re-run deploys/backups.py with its public key.",
        check=("checks/test_backups.py::test_no_secret_key_in_any_keyring",),
        planted=(f"{BACKUPS_INTEGRATION}::test_check_fails_on_a_planted_secret_key",
                 "tests/staging/test_backups_staging.py::test_backups_on_the_vm_end_to_end"),
        cited_as=("BACKUPS",),
    ),
    Invariant(
        15, "State", "A fresh backup exists and restores",
        statement="The newest complete encrypted backup on the target is younger than 26 "
                  "hours, and it decrypts and restores (the restore drill, run off the host).",
        why="An untested backup is a hope; a day-old one bounds what a loss can cost.",
        fix="Read the backup runs' journal on the host (`journalctl -t vos-backup`) and the "
            "target's reachability; then run `vos backup drill`.",
        check=("checks/test_backups.py::test_newest_backup_on_target_is_fresh",
               "backups/drill.py::run_drill"),
        planted=(f"{BACKUPS_INTEGRATION}::test_check_fails_on_a_30_hour_old_newest_backup",),
        cited_as=("BACKUPS",),
    ),
    # ------------------------------------------------------------ Accounts and files
    Invariant(
        16, "Accounts and files", "Root is the only superuser, and nobody logs in as root",
        statement="Exactly one account has uid 0, and it is root. root has no authorized_keys "
                  "(/root/.ssh/authorized_keys and authorized_keys2 absent or without a key): "
                  "admins log in as the deploy user and use sudo.",
        why="A second uid 0 account is the classic backdoor; a key in root's authorized_keys "
            "is one sshd setting away from a root login nobody can attribute.",
        fix="Delete the extra uid 0 line (`sudo sed -i '/^NAME:/d' /etc/passwd /etc/shadow`); "
            "`sudo rm /root/.ssh/authorized_keys`; the accounts step removes root's keys.",
        check=("checks/test_accounts.py::test_root_is_the_only_uid_0",
               "checks/test_accounts.py::test_root_has_no_authorized_keys",
               "checks/accounts_rules.py::uid0_violations",
               "checks/accounts_rules.py::root_keys_violation"),
        planted=(f"{ACCOUNTS_FILES}::test_planted_account_violations_fail_naming_each_fix",),
        cited_as=("ACCOUNTS",),
    ),
    Invariant(
        17, "Accounts and files", "No empty passwords, no system logins, one sudoer",
        statement="No /etc/shadow entry has an empty password field; every system account "
                  "(uid 1-999) has a shell that gives no login (/usr/sbin/nologin, /bin/false; "
                  "Debian's `sync`: /bin/sync); the `sudo` group (listed members and primary "
                  "group) is exactly the deploy user.",
        why="An empty password field logs anyone in; a system account with a shell is a "
            "login nobody watches; every extra sudoer is another root.",
        fix="`sudo passwd -l NAME`; `sudo usermod -s /usr/sbin/nologin NAME`; "
            "`sudo gpasswd -d NAME sudo`.",
        check=("checks/test_accounts.py::test_no_empty_password_field",
               "checks/test_accounts.py::test_system_accounts_have_no_login_shell",
               "checks/test_accounts.py::test_sudo_group_is_the_deploy_user",
               "checks/accounts_rules.py::empty_password_violations",
               "checks/accounts_rules.py::system_shell_violations",
               "checks/accounts_rules.py::sudo_group_violations"),
        planted=(f"{ACCOUNTS_FILES}::test_planted_account_violations_fail_naming_each_fix",),
        cited_as=("ACCOUNTS",),
        gap="Judged from /etc/passwd, /etc/group and /etc/shadow only: sudoers rules naming "
            "other users (a line in /etc/sudoers.d) are not judged.",
    ),
    Invariant(
        18, "Accounts and files", "Login policy and banners",
        statement="/etc/login.defs: UMASK 027 (or stricter), PASS_MAX_DAYS ≤ 365, "
                  "PASS_MIN_DAYS ≥ 1, PASS_WARN_AGE ≥ 7, ENCRYPT_METHOD YESCRYPT or SHA512, "
                  "SHA_CRYPT_MIN_ROUNDS and SHA_CRYPT_MAX_ROUNDS ≥ 5000, LOGIN_RETRIES ≤ 3. "
                  "/etc/issue and /etc/issue.net hold an authorised-use notice and /etc/motd "
                  "nothing about the OS (no name, version or getty escape); sshd shows "
                  "/etc/issue.net before authentication. Login shells get a read-only TMOUT "
                  "of at most 900 s; pam_pwquality (minlen ≥ 14, its cracklib dictionary "
                  "present) is in common-password and pam_tmpdir in common-session.",
        why="New files closed to others by default, password ageing and hashing for the day "
            "a password exists (Lynis AUTH-9230/9286/9328); banners that tell an attacker "
            "nothing about the OS and tell a user the rules (CIS 1.7, Lynis BANN-7126/7130); "
            "a forgotten root shell that ends, passwords an attacker cannot guess, and no "
            "shared /tmp for a session's files (Lynis SHLL-6220, AUTH-9262, DEB-0280).",
        fix="Re-run the deploy (accounts step), or the `sed`/`tee` command the message gives.",
        check=("checks/test_accounts.py::test_login_defs_policy",
               "checks/test_accounts.py::test_login_banners_name_no_os",
               "checks/test_accounts.py::test_sshd_shows_the_banner",
               "checks/test_accounts.py::test_session_policy",
               "checks/accounts_rules.py::login_defs_violations",
               "checks/accounts_rules.py::banner_violations",
               "checks/accounts_rules.py::idle_timeout_violations",
               "checks/accounts_rules.py::pam_module_violations",
               "checks/accounts_rules.py::pwquality_violations",
               "checks/accounts_rules.py::pwquality_dictionary_violations"),
        planted=(f"{ACCOUNTS_FILES}::test_planted_account_violations_fail_naming_each_fix",),
        cited_as=("ACCOUNTS",),
        gap="sshd's Banner is judged only where sshd runs (skipped in the container of the "
            "planted test); the dynamic motd (/etc/update-motd.d, e.g. Debian's 10-uname) is "
            "not judged, only /etc/motd.",
    ),
    Invariant(
        19, "Accounts and files", "Permission baseline under /etc",
        statement="/etc/passwd and /etc/group 0644 root:root, /etc/shadow and /etc/gshadow "
                  "0640 root:shadow, /etc/ssh/sshd_config and /etc/crontab 0600 root:root, "
                  "/etc/cron.hourly, cron.daily, cron.weekly, cron.monthly and cron.d 0700 "
                  "root:root (stricter passes; absent paths are skipped). No regular file "
                  "under /etc is world-writable.",
        why="Readable hashes can be cracked offline; a world-writable file under /etc is a "
            "configuration anyone on the host can rewrite; cron's files say what runs as "
            "root (CIS 7.1, 5.1.1, 2.4.1; dev-sec os-03..os-06).",
        fix="The `chmod`/`chown` the message names, or re-run the deploy (files step).",
        check=("checks/test_files.py::test_permission_baseline",
               "checks/test_files.py::test_no_world_writable_file_under_etc",
               "checks/accounts_rules.py::permission_violations",
               "checks/accounts_rules.py::world_writable_violations"),
        planted=(f"{ACCOUNTS_FILES}::test_planted_file_violations_fail_naming_each_fix",),
        cited_as=("FILES",),
    ),
    Invariant(
        20, "Accounts and files", "No compilers on the host",
        statement="No compiler or build tool is installed: build-essential, gcc, g++, clang "
                  "(any version), tcc, make. The host runs images built elsewhere.",
        why="A compiler on the host lets an intruder build an exploit for the exact kernel "
            "and libraries in place; Docker needs none of them.",
        fix="`sudo apt-get purge -y PACKAGE`, or re-run the deploy (accounts step purges "
            "LoginSettings.compiler_packages).",
        check=("checks/test_files.py::test_no_compilers",
               "checks/accounts_rules.py::compiler_violations"),
        planted=(f"{ACCOUNTS_FILES}::test_planted_file_violations_fail_naming_each_fix",),
        cited_as=("FILES",),
        gap="The planted package is a stand-in `make` built with dpkg-deb in the container "
            "(no network needed); the check reads dpkg's database, as it would for the real "
            "package.",
    ),
    # ---------------------------------------------------------------------------- Kernel
    Invariant(
        21, "Kernel", "Unused and risky kernel modules cannot load; USB devices by policy",
        statement="Every module of the blacklist (dccp, sctp, rds, tipc; cramfs, freevxfs, hfs, "
                  "hfsplus, jffs2, udf; usb-storage, firewire-core, firewire-ohci, bluetooth, "
                  "btusb) has `install M /bin/false` and `blacklist M` in modprobe.d "
                  "(/etc/modprobe.d/vos-blacklist.conf), no other file gives it another install "
                  "command, and none of them is loaded. Docker's and the mesh's modules "
                  "(overlay, br_netfilter, veth, nf_*/xt_*/iptables, wireguard) are never listed "
                  "(the inventory model refuses them). USBGuard is enabled with "
                  "ImplicitPolicyTarget block and Present/InsertedDevicePolicy apply-policy, "
                  "and runs wherever a USB bus exists (systemd skips it on a host without "
                  "one): a USB device its rules (those present at install) do not name is "
                  "blocked.",
        why="Rare protocols and filesystems are where kernel bugs reachable by an unprivileged "
            "socket(2) or mount(2) live (CIS 1.1.1.x, 3.2.x; Lynis NETW-3200, USB-1000, "
            "STRG-1846); a VPS needs none of them. A USB device plugged into bare metal "
            "(a keyboard that types, a stick) is an intruder's tool (Lynis USB-3000).",
        fix="Re-run the deploy (kernel step); delete the line that overrides the install "
            "command; `sudo modprobe -r MODULE` for a loaded one.",
        check=("checks/test_kernel.py::test_modules_blacklisted",
               "checks/test_kernel.py::test_no_blacklisted_module_loaded",
               "checks/test_kernel.py::test_usb_devices_allowed_by_policy_only",
               "checks/kernel_rules.py::modprobe_violations",
               "checks/kernel_rules.py::loaded_violations",
               "checks/kernel_rules.py::usbguard_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{KERNEL_CONTAINER}::test_modprobe_files_planted_wrong_then_right"),
        cited_as=("KERNEL",),
    ),
    Invariant(
        22, "Kernel", "No core dumps",
        statement="pam_limits gives everyone a hard core limit of 0 (`* hard core 0` in "
                  "/etc/security/limits.d/vos-coredump.conf, no non-zero hard core line "
                  "anywhere); systemd-coredump's effective Storage=none and ProcessSizeMax=0 "
                  "(/etc/systemd/coredump.conf.d/vos.conf); fs.suid_dumpable=0 (§10).",
        why="A core dump of the API, the worker or sshd holds secrets, provider keys and "
            "session material in a file on disk (CIS 1.5.x, Lynis KRNL-5820).",
        fix="Re-run the deploy (kernel step) and delete the line that overrides it.",
        check=("checks/test_kernel.py::test_core_dump_hard_limit_zero",
               "checks/test_kernel.py::test_systemd_coredump_keeps_nothing",
               "checks/kernel_rules.py::limits_violations",
               "checks/kernel_rules.py::coredump_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{KERNEL_CONTAINER}::test_coredump_files_planted_wrong_then_right"),
        cited_as=("KERNEL",),
    ),
    Invariant(
        23, "Kernel", "/dev/shm and /tmp cannot host devices or set-uid programs",
        statement="/dev/shm is mounted nodev,nosuid,noexec (live, and in /etc/fstab for the "
                  "next boot); /tmp, when it is its own mount (Debian 13's tmp.mount tmpfs), "
                  "is nodev,nosuid. /tmp keeps exec: apt hooks may run from it.",
        why="World-writable places are where an intruder drops a tool; noexec/nosuid/nodev "
            "take away running it, set-uid tricks and device nodes (CIS 1.1.2.x).",
        fix="Re-run the deploy (kernel step); `sudo mount -o remount,nodev,nosuid,noexec "
            "/dev/shm`.",
        check=("checks/test_kernel.py::test_dev_shm_nodev_nosuid_noexec",
               "checks/test_kernel.py::test_tmp_nodev_nosuid_when_its_own_mount",
               "checks/kernel_rules.py::mount_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",
                 f"{KERNEL_CONTAINER}::test_mount_options_planted_wrong_then_right"),
        cited_as=("KERNEL",),
    ),
    # ------------------------------------------------------------ Audit and confinement
    Invariant(
        24, "Audit and confinement", "auditd records identity, sshd, time, module and "
                                     "Docker changes",
        statement="auditd is enabled and running, and the kernel's loaded rules (`auditctl -l`) "
                  "watch /etc/passwd, group, shadow, gshadow, sudoers, sudoers.d, sshd_config "
                  "and sshd_config.d, /etc/localtime, /sbin/modprobe and every Docker path "
                  "present (dockerd, containerd, runc, /run/containerd, /var/lib/docker, "
                  "/etc/docker, daemon.json, /etc/default/docker, docker.service, docker.socket:"
                  " CIS Docker 1.1.x), and audit the time syscalls and init/finit/delete_module. "
                  "Not immutable (no -e 2): the deploy reloads rules without a reboot.",
        why="After an intrusion the audit log is how you learn what changed; the rules cover "
            "what an intruder changes first (accounts, sudo, sshd, kernel modules, the "
            "container engine) (CIS 6.3.x, Lynis ACCT-9628/9630).",
        fix="`sudo augenrules --load`; `sudo systemctl enable --now auditd`; or re-run the "
            "deploy (audit step).",
        check=("checks/test_audit.py::test_auditd_running",
               "checks/test_audit.py::test_audit_rules_loaded",
               "checks/kernel_rules.py::audit_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("AUDIT",),
        gap="Judged on a host only (the checks skip in a container); the Docker paths watched "
            "are those present when the deploy runs.",
    ),
    Invariant(
        25, "Audit and confinement", "AppArmor confines every container",
        statement="The apparmor package is installed (dockerd applies profiles only when "
                  "apparmor_parser exists at its start), apparmor.service is enabled, the kernel "
                  "enforces AppArmor, and every running container has a profile "
                  "(docker-default or its own): none runs `apparmor=unconfined`, privileged, "
                  "or without a profile.",
        why="The profile is the container's second wall after capabilities and "
            "no-new-privileges: it denies mount, /proc and /sys writes and raw kernel "
            "interfaces even to root in the container (CIS 1.3.1.x, CIS Docker 5.1).",
        fix="`sudo apt-get install apparmor && sudo systemctl restart docker`, then restart "
            "(or recreate without the unconfined option) the container; or re-run the deploy "
            "(audit step).",
        check=("checks/test_audit.py::test_apparmor_enabled",
               "checks/test_audit.py::test_every_running_container_is_confined",
               "checks/kernel_rules.py::unconfined_containers"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("AUDIT",),
        gap="Judged on a host only (the checks skip in a container).",
    ),
    Invariant(
        26, "Audit and confinement", "File integrity baseline checked daily; process "
                                     "accounting on",
        statement="AIDE is installed with SHA-512 (or SHA-256) checksums, its baseline "
                  "/var/lib/aide/aide.db exists (or vos-aide-baseline.service is writing it "
                  "right now, in the background after a first deploy) and "
                  "vos-aide-check.timer is enabled and active; process accounting (acct) is "
                  "active and writing /var/log/account/pacct.",
        why="auditd records the changes it has rules for; AIDE notices any change to the "
            "files it baselined (a replaced binary, a new set-uid file, an edited unit) even "
            "when no rule saw it; process accounting keeps every command that ran (`lastcomm`)"
            " (CIS 1.3.2, 6.1.x; Lynis FINT-4350/4402, ACCT-9622).",
        fix="Re-run the deploy (integrity and audit steps); `sudo systemctl start "
            "vos-aide-baseline` to write a baseline, `sudo systemctl enable --now "
            "vos-aide-check.timer acct`.",
        check=("checks/test_audit.py::test_file_integrity_baseline_checked_daily",
               "checks/test_audit.py::test_process_accounting_on",
               "checks/kernel_rules.py::aide_violations",
               "checks/kernel_rules.py::accounting_violations"),
        planted=(f"{MATRIX}::test_every_planted_violation_fails_the_gate_then_clears",),
        cited_as=("INTEGRITY",),
        gap="Judged on a host only (the checks skip in a container). The daily comparison's "
            "findings are the operator's to read (`journalctl -u vos-aide-check`); the gate "
            "judges that the comparison runs, not what it found.",
    ),
]

CATALOGUE: dict[int, Invariant] = {entry.number: entry for entry in ENTRIES}


def render_markdown() -> str:
    """docs/INVARIANTS.md, from the entries above."""

    def para(text: str, first: str = "", rest: str = "") -> list[str]:
        return textwrap.wrap(text, 100, initial_indent=first, subsequent_indent=rest,
                             break_on_hyphens=False, break_long_words=False)

    def refs(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{ref}`" for ref in items)

    lines = [
        "# Invariants a converged host must hold", "",
        "<!-- Generated from checks/catalogue.py: edit it there, then run",
        "     `python -m checks.catalogue > docs/INVARIANTS.md` (a unit test compares). -->", "",
        *para("The deploy gate (`vos check`, and the last step of deploys/full.py) judges every "
              "entry on a running host; its messages cite an entry as `FAMILY §N` (e.g. "
              "`EXPOSURE §1: …`), comments as `INVARIANTS.md §N`. Each entry names the check "
              "that judges it and the test that plants its violation; what is not covered "
              "yet is said under *Gap*."),
    ]
    section = None
    for entry in ENTRIES:
        if entry.section != section:
            section = entry.section
            lines += ["", f"## {section}"]
        lines += ["", f"### §{entry.number} {entry.title}", "", *para(entry.statement), ""]
        items = [("Why", entry.why), ("Fix", entry.fix), ("Checked by", refs(entry.check)),
                 ("Violation planted by", refs(entry.planted) if entry.planted else "none yet")]
        if entry.cited_as:
            items.append(("Cited as", ", ".join(f"`{entry.cite(f)}`" for f in entry.cited_as)))
        if entry.gap:
            items.append(("Gap", entry.gap))
        for label, text in items:
            lines += para(f"**{label}:** {text}", "- ", "  ")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
