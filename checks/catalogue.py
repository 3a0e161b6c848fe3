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
STACK_RUNTIME = "tests/integration/test_stack_runtime.py"
BACKUPS_INTEGRATION = "tests/integration/test_backups.py"

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
        planted=(f"{HARDENING}::test_mutations_host_side_each_fail_the_gate",),
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
        planted=(f"{HARDENING}::test_docker_published_ports_mutation",
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
        planted=None,
        cited_as=("EXPOSURE", "DOCKER"),
        gap="The staging test publishes on 0.0.0.0 and sees DOCKER-USER hold, but no test "
            "removes the guard (or daemon.json's \"ip\") and sees the check fail.",
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
        planted=(f"{HARDENING}::test_mutations_host_side_each_fail_the_gate",),
        cited_as=("FIREWALL",),
    ),
    # ------------------------------------------------------------------------------- SSH
    Invariant(
        6, "SSH", "sshd's effective settings are hardened",
        statement="Read from `sshd -T` (the values sshd uses, not the files): no root login, "
                  "no passwords, no keyboard-interactive, public keys only "
                  "(authenticationmethods publickey), maxauthtries ≤ 3, logingracetime ≤ 30, "
                  "no X11, agent or tunnel forwarding, no user environment, allowusers = the "
                  "deploy user(s), clientaliveinterval 300, clientalivecountmax ≤ 3.",
        why="A drop-in read earlier, or a default, can override what a file says; only the "
            "effective values count.",
        fix="Fix or remove the drop-in under /etc/ssh/sshd_config.d/ that sets it, or re-run "
            "the deploy (ssh step).",
        check=("checks/test_ssh.py::test_effective_sshd_config",
               "checks/invariants.py::sshd_violations"),
        planted=(f"{HARDENING}::test_mutations_host_side_each_fail_the_gate",),
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
        planted=None,
        cited_as=("SSH",),
        gap="No test offers a weak algorithm on a host; the judgement is tested on recorded "
            "`sshd -T` output only (tests/unit/test_checks.py).",
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
        planted=(f"{HARDENING}::test_cutover_stops_with_public_ssh_intact_when_mesh_ssh_fails",),
        cited_as=("SSH",),
        gap="The planted test covers the lock-out half (mesh SSH broken: the cutover stops); "
            "no test puts sshd back on the public address and runs the check.",
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
        planted=(f"{HARDENING}::test_mutations_host_side_each_fail_the_gate",
                 f"{STACK_STAGING}::test_a_burst_of_bad_signatures_gets_the_source_banned"),
        cited_as=("FAIL2BAN",),
    ),
    Invariant(
        10, "Firewall companions", "Kernel settings from the dev-sec baseline",
        statement="Live sysctl values: fs.protected_hardlinks=1, fs.protected_symlinks=1, "
                  "fs.protected_fifos=1, fs.protected_regular=2, fs.suid_dumpable=0, "
                  "kernel.kptr_restrict=2, kernel.randomize_va_space=2, kernel.sysrq=0, "
                  "kernel.yama.ptrace_scope≥1, kernel.unprivileged_bpf_disabled=1, "
                  "net.ipv4.conf.all.rp_filter=1, net.ipv4.tcp_syncookies=1, "
                  "net.ipv4.conf.all.accept_redirects=0, net.ipv4.conf.all.send_redirects=0, "
                  "net.ipv4.conf.all.accept_source_route=0, net.ipv4.conf.all.log_martians=1, "
                  "net.ipv4.icmp_echo_ignore_broadcasts=1, net.ipv6.conf.all.accept_redirects=0, "
                  "net.ipv6.conf.all.accept_ra=0. net.ipv4.ip_forward stays 1 (Docker needs "
                  "it).",
        why="Cheap kernel defences against local privilege escalation and network tricks "
            "(redirects, source routing, spoofing).",
        fix="Set it in /etc/sysctl.d/99-vos-hardening.conf and `sudo sysctl --system`, or "
            "re-run the deploy (sysctl step).",
        check=("checks/test_sysctl.py::test_kernel_settings",
               "checks/invariants.py::sysctl_violations"),
        planted=None,
        cited_as=("SYSCTL",),
        gap="No test changes a live sysctl on a host; judged on recorded values only.",
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
        planted=None,
        cited_as=("BASE",),
        gap="No test sets a password or turns upgrades off on a host; the shadow judgement "
            "is tested on recorded /etc/shadow lines only.",
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
        planted=(f"{STACK_RUNTIME}::test_unhardened_stack_container_fails",
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
        check=("checks/test_backups.py::test_backup_files_closed_to_others",),
        planted=(f"{BACKUPS_INTEGRATION}::test_check_fails_on_a_backup_readable_by_others",),
        cited_as=("BACKUPS",),
        gap="The stack's env files (written 0600 root:root by roles/stack.py) are not checked "
            "on the host; only the backups' files are.",
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
