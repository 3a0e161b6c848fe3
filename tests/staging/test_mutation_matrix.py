"""The mutation matrix: for each invariant of the catalogue that a command can break on a
running host, one planted violation and its undo, all on the shared converged VM.

Plant every row, run the whole gate once and see each row's message; undo every row, run
the gate once more and see it green. Two gate runs for the whole matrix (~3 min under TCG)
instead of one throwaway VM, or one gate run, per mutation. Rows are independent of each
other by construction (different files, units, chains, settings), and every plant keeps SSH
over the mesh working, which the gate itself needs.

Runs on the shared converged VM after every test that needs it pristine (`converged_vm_last`)
and before the backups test (which only needs the mesh). The deploy gate's red branch (a real
`deploys/full.py` exiting non-zero with the invariant's message) is in
tests/staging/test_stack_staging.py (the second full deploy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from test_hardening import assert_gate_green, fail2ban_bans_repeated_bad_logins, gate


@dataclass(frozen=True)
class Mutation:
    """One row: the catalogue entry it breaks, how (shell, run with sudo rights on the VM),
    how to undo it, and the words the gate's message must contain."""

    invariant: int
    name: str
    plant: str
    undo: str
    expect: tuple[str, ...]


SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-a-vos-matrix.conf"  # first: first value wins
SSHD_LISTEN_DROP_IN = "/etc/ssh/sshd_config.d/00-b-vos-matrix-listen.conf"  # adds an address
APT_DROP_IN = "/etc/apt/apt.conf.d/99zz-vos-matrix"
DAEMON_JSON = "/etc/docker/daemon.json"
PROBE_IMAGE = (  # nothing but merged-/usr symlinks; run with the host's /usr read-only
    "d=$(mktemp -d) && mkdir -p $d/www $d/tmp && for l in bin sbin lib lib64; do "
    "ln -s usr/$l $d/$l; done && sudo tar -C $d -c . | sudo docker import - vos-probe:1 "
    ">/dev/null && rm -rf $d")
# A package named `make` with nothing in it: what the compilers check reads is dpkg's list.
DUMMY_MAKE = (
    "d=$(mktemp -d) && mkdir -p -m 0755 $d/DEBIAN && printf 'Package: make\\n"
    "Version: 0.0-vos-matrix\\nArchitecture: all\\nMaintainer: vos <vos@localhost>\\n"
    "Description: matrix stand-in\\n' "
    "> $d/DEBIAN/control && dpkg-deb -b $d /tmp/vos-matrix-make.deb >/dev/null && "
    "sudo dpkg -i /tmp/vos-matrix-make.deb >/dev/null && rm -rf $d /tmp/vos-matrix-make.deb")
UNCONFINED = (  # a container with AppArmor off, labelled as the stack's, with a writable root
    "d=$(mktemp -d) && for l in bin sbin lib lib64; do ln -s usr/$l $d/$l; done && sudo tar "
    "-C $d -c . | sudo docker import - vos-matrix-aa:1 >/dev/null && rm -rf $d && sudo docker "
    "run -d --name vos-matrix-aa --network none --security-opt apparmor=unconfined "
    "--label io.agent-vos.image=matrix -v /usr:/usr:ro vos-matrix-aa:1 /usr/bin/sleep 3600 "
    ">/dev/null")

MATRIX: list[Mutation] = [
    Mutation(1, "a listener on all interfaces",
             "sudo systemd-run --unit vos-matrix-9999 python3 -m http.server 9999 "
             "--bind 0.0.0.0",
             "sudo systemctl stop vos-matrix-9999",
             ("EXPOSURE §1: python3 (pid", "listens on 0.0.0.0:9999", "bind it to the mesh IP")),
    Mutation(2, "a container published on every interface",
             f"{PROBE_IMAGE} && sudo docker run -d --name vos-matrix-probe -p 0.0.0.0:8081:80 "
             "-v /usr:/usr:ro -w /www vos-probe:1 /usr/bin/python3 -m http.server 80",
             "sudo docker rm -f vos-matrix-probe && sudo docker rmi vos-probe:1",
             ("EXPOSURE §2: container vos-matrix-probe (vos-probe:1) publishes 0.0.0.0:8081",
              "STACK §2: container 'vos-matrix-probe' publishes 80/tcp on all interfaces")),
    Mutation(3, "the DOCKER-USER guard opened",
             "sudo iptables -I DOCKER-USER 1 -j RETURN",
             "sudo iptables -D DOCKER-USER -j RETURN",
             ("EXPOSURE §3: DOCKER-USER rule `-A DOCKER-USER -j RETURN` lets every packet",)),
    Mutation(3, "the daemon's default bind address removed",
             f"sudo cp -p {DAEMON_JSON} /root/daemon.json.matrix && sudo python3 -c \"import "
             f"json; p = '{DAEMON_JSON}'; d = json.load(open(p)); d.pop('ip'); "
             "json.dump(d, open(p, 'w'))\"",
             f"sudo mv /root/daemon.json.matrix {DAEMON_JSON}",
             ('DOCKER §3: daemon.json "ip" is 0.0.0.0 (unset)',)),
    Mutation(5, "a UFW rule past the mesh",
             "sudo ufw allow 5432", "sudo ufw delete allow 5432",
             ("FIREWALL §5: UFW rule `5432 ALLOW IN Anywhere`", "sudo ufw delete allow 5432")),
    Mutation(6, "password logins and root login allowed",
             f"printf 'PasswordAuthentication yes\\nPermitRootLogin yes\\n"
             f"MACs hmac-sha1,hmac-sha2-256-etm@openssh.com\\n' | sudo tee {SSHD_DROP_IN} "
             ">/dev/null && sudo sshd -t",
             # reload: §8's reload made these settings live too
             f"sudo rm {SSHD_DROP_IN} && sudo sshd -t && sudo systemctl reload ssh",
             ("SSH §6: passwordauthentication is yes, must be no",
              "SSH §6: permitrootlogin is yes, must be no")),
    Mutation(7, "a weak MAC offered (same drop-in as §6)", "true", "true",
             ("SSH §7: non-ETM MAC hmac-sha1 offered",)),
    Mutation(8, "sshd's listen addresses widened",
             f"printf 'ListenAddress 0.0.0.0:2222\\n' | sudo tee {SSHD_LISTEN_DROP_IN} >/dev/null "
             "&& sudo sshd -t && sudo systemctl reload ssh && sleep 3",
             f"sudo rm {SSHD_LISTEN_DROP_IN} && sudo sshd -t && sudo systemctl reload ssh",
             ("SSH §8: sshd listens on 0.0.0.0:2222",)),
    Mutation(9, "fail2ban stopped",
             "sudo systemctl stop fail2ban",
             # fail2ban takes seconds to load its jails under TCG: wait (bounded) for sshd's
             "sudo systemctl start fail2ban && for i in $(seq 90); do sudo fail2ban-client "
             "status sshd >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1",
             ("FAIL2BAN §9: fail2ban is not running",)),
    Mutation(10, "a kernel setting reverted",
             "sudo sysctl -qw kernel.sysrq=1", "sudo sysctl -qw kernel.sysrq=0",
             ("SYSCTL §10: kernel.sysrq is 1, must be 0",)),
    # pam_pwquality (§18) refuses a weak one: minlen 14, four classes, for root too
    Mutation(11, "a password on the deploy user",
             "sudo cp -p /etc/shadow /root/shadow.matrix && echo 'deploy:Vos#Matrix-Plant-2026x' "
             "| sudo chpasswd",
             "sudo cp -p /root/shadow.matrix /etc/shadow && sudo rm /root/shadow.matrix",
             ("BASE §11: login user deploy's password is set",)),
    Mutation(13, "a stack env file opened to others",
             "sudo chmod 0644 /etc/vos-stack/app.env", "sudo chmod 0600 /etc/vos-stack/app.env",
             ("FILES §13: /etc/vos-stack/app.env is 0644",)),
    Mutation(16, "a second superuser",
             "echo 'toor:x:0:0::/nonexistent:/usr/sbin/nologin' | sudo tee -a /etc/passwd "
             ">/dev/null",
             "sudo sed -i '/^toor:/d' /etc/passwd",
             ("ACCOUNTS §16: toor has uid 0",)),
    Mutation(16, "a key for root",
             "sudo mkdir -p /root/.ssh && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0e3w5d2x"
             "L2tLUn8l8oZ8h0p0i8Y5a4fGq3o1d0x3Xy matrix' | sudo tee /root/.ssh/authorized_keys "
             ">/dev/null",
             "sudo rm /root/.ssh/authorized_keys",
             ("ACCOUNTS §16: /root/.ssh/authorized_keys holds 1 key(s)",)),
    Mutation(17, "a system account given a shell and sudo",
             "sudo usermod -s /bin/bash daemon && sudo gpasswd -a daemon sudo >/dev/null",
             "sudo gpasswd -d daemon sudo >/dev/null && sudo usermod -s /usr/sbin/nologin daemon",
             ("ACCOUNTS §17: system account daemon (uid 1)",
              "ACCOUNTS §17: daemon is in the sudo group")),
    Mutation(18, "login.defs umask and a banner naming the OS",
             "sudo sed -i 's/^UMASK.*/UMASK 022/' /etc/login.defs && sudo cp -p /etc/issue.net "
             "/root/issue.net.matrix && echo 'Debian GNU/Linux 13' | sudo tee /etc/issue.net "
             ">/dev/null",
             "sudo sed -i 's/^UMASK.*/UMASK 027/' /etc/login.defs && sudo mv "
             "/root/issue.net.matrix /etc/issue.net",
             ("ACCOUNTS §18: login.defs UMASK is 022",
              "ACCOUNTS §18: /etc/issue.net names the OS")),
    Mutation(18, "idle shells never end, pam_tmpdir off, pwquality's dictionary gone",
             "sudo mv /etc/profile.d/vos-idle-timeout.sh /root/idle-timeout.matrix && "
             "sudo pam-auth-update --disable tmpdir && "
             "sudo mv /var/cache/cracklib/cracklib_dict.pwd /root/cracklib-dict.matrix",
             "sudo mv /root/idle-timeout.matrix /etc/profile.d/vos-idle-timeout.sh && "
             "sudo pam-auth-update --enable tmpdir && "
             "sudo mv /root/cracklib-dict.matrix /var/cache/cracklib/cracklib_dict.pwd",
             ("ACCOUNTS §18: no TMOUT in /etc/profile or /etc/profile.d",
              "ACCOUNTS §18: /etc/pam.d/common-session has no pam_tmpdir.so",
              "ACCOUNTS §18: pam_pwquality has no dictionary")),
    Mutation(19, "shadow readable by all, a world-writable file in /etc",
             "sudo chmod 0644 /etc/shadow && echo x | sudo tee /etc/vos-matrix-ww.conf "
             ">/dev/null && sudo chmod 0666 /etc/vos-matrix-ww.conf",
             "sudo rm /etc/vos-matrix-ww.conf && sudo chmod 0640 /etc/shadow",
             ("FILES §19: /etc/shadow is 0644", "FILES §19: /etc/vos-matrix-ww.conf is "
              "world-writable")),
    Mutation(20, "a build tool installed", DUMMY_MAKE, "sudo dpkg -r make >/dev/null",
             ("FILES §20: make is installed",)),
    Mutation(21, "a blacklisted module made loadable",
             "echo 'install dccp /bin/true' | sudo tee /etc/modprobe.d/zz-vos-matrix.conf "
             ">/dev/null",
             "sudo rm /etc/modprobe.d/zz-vos-matrix.conf",
             ("KERNEL §21: dccp has `install dccp /bin/true` in "
              "/etc/modprobe.d/zz-vos-matrix.conf",)),
    Mutation(21, "USBGuard accepting everything and disabled",
             "sudo sed -i 's/^ImplicitPolicyTarget=.*/ImplicitPolicyTarget=allow/' "
             "/etc/usbguard/usbguard-daemon.conf && sudo systemctl disable usbguard 2>/dev/null",
             "sudo sed -i 's/^ImplicitPolicyTarget=.*/ImplicitPolicyTarget=block/' "
             "/etc/usbguard/usbguard-daemon.conf && sudo systemctl enable usbguard 2>/dev/null",
             ("KERNEL §21: usbguard ImplicitPolicyTarget is allow, must be block or reject",
              "KERNEL §21: usbguard.service is disabled")),
    Mutation(22, "core dumps allowed",
             "echo '* hard core unlimited' | sudo tee /etc/security/limits.d/zz-vos-matrix.conf "
             ">/dev/null && sudo mkdir -p /etc/systemd/coredump.conf.d && printf '[Coredump]\\n"
             "Storage=external\\n' | sudo tee /etc/systemd/coredump.conf.d/zz-vos-matrix.conf "
             ">/dev/null",
             "sudo rm /etc/security/limits.d/zz-vos-matrix.conf "
             "/etc/systemd/coredump.conf.d/zz-vos-matrix.conf",
             ("KERNEL §22: `* hard core unlimited` in /etc/security/limits.d/zz-vos-matrix.conf",
              "KERNEL §22: systemd-coredump Storage is external, must be none")),
    Mutation(23, "/dev/shm executable",
             "sudo mount -o remount,exec /dev/shm", "sudo mount -o remount,noexec /dev/shm",
             ("KERNEL §23: /dev/shm is mounted without noexec",)),
    Mutation(24, "an audit watch removed, auditd disabled",
             "sudo auditctl -W /etc/shadow -p wa -k identity >/dev/null && "
             "sudo systemctl disable auditd 2>/dev/null",
             "sudo systemctl enable auditd 2>/dev/null && sudo augenrules --load >/dev/null",
             ("AUDIT §24: auditctl -l has no watch on /etc/shadow",
              "AUDIT §24: auditd is running and disabled")),
    Mutation(25, "a container without AppArmor, the AppArmor service disabled",
             f"{UNCONFINED} && sudo systemctl disable apparmor 2>/dev/null",
             "sudo systemctl enable apparmor 2>/dev/null && sudo docker rm -f vos-matrix-aa "
             ">/dev/null && sudo docker rmi vos-matrix-aa:1 >/dev/null",
             ("AUDIT §25: container 'vos-matrix-aa' runs unconfined",
              "AUDIT §25: apparmor.service is disabled")),
    Mutation(26, "AIDE's daily check and process accounting off",
             "sudo systemctl disable --now vos-aide-check.timer 2>/dev/null && "
             "sudo systemctl stop acct",
             "sudo systemctl enable --now vos-aide-check.timer 2>/dev/null && "
             "sudo systemctl start acct",
             ("INTEGRITY §26: vos-aide-check.timer is disabled and inactive",
              "INTEGRITY §26: process accounting is off (acct.service inactive")),
    Mutation(12, "a stack container with a writable root (the §25 row's container)",
             "true", "true",
             ("STACK §12: container 'vos-matrix-aa' has a writable root filesystem",)),
    Mutation(11, "unattended security upgrades off",
             f"echo 'APT::Periodic::Unattended-Upgrade \"0\";' | sudo tee {APT_DROP_IN} "
             ">/dev/null",
             f"sudo rm {APT_DROP_IN}",
             ("BASE §11: APT::Periodic::Unattended-Upgrade is not 1",)),
]


def test_the_matrix_covers_the_invariants_a_command_can_break():
    """Every catalogue entry has a row here, or a reason why this matrix cannot plant it."""
    from checks.catalogue import CATALOGUE

    elsewhere = {
        4: "outside scan: tests/staging/test_hardening.py (row 1 also shows up there)",
        13: "secrets at rest: tests/integration/test_backups.py and the files family",
        14: "backup key: tests/staging/test_backups_staging.py plants a secret key",
        15: "a fresh backup: tests/staging/test_backups_staging.py ages the newest backup",
    }
    covered = {row.invariant for row in MATRIX}
    missing = [number for number in CATALOGUE if number not in covered | set(elsewhere)]
    assert missing == [], f"catalogue entries with no planted violation here: {missing}"


def report(request, line: str) -> None:
    """A line in pytest's own output (shown without -s): the matrix's score."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.mark.converged_vm_last(0)
def test_every_planted_violation_fails_the_gate_then_clears(converged_vm, request):
    """Plant all rows, one gate run names every one; undo all, one gate run is green. Then
    (it re-opens public SSH on purpose, so last) a real fail2ban ban of repeated bad logins."""
    vm = converged_vm
    planted: list[Mutation] = []
    try:
        for row in MATRIX:
            vm.ssh(row.plant, timeout=300)
            planted.append(row)
        time.sleep(3)  # the listeners bind
        summary = gate(vm).summary()
        missing = [f"§{row.invariant} {row.name}: {fragment!r}" for row in MATRIX
                   for fragment in row.expect if fragment not in summary]
        caught = sum(all(fragment in summary for fragment in row.expect) for row in MATRIX)
        report(request, f"\nmutation matrix: the gate named {caught}/{len(MATRIX)} planted "
                        f"violations (catalogue entries {len({r.invariant for r in MATRIX})})")
        assert not missing, ("the gate did not name these planted violations:\n  "
                             + "\n  ".join(missing) + f"\n\ngate output:\n{summary}")
    finally:
        failed_undo = []
        for row in reversed(planted):
            undo = vm.ssh(row.undo, check=False, timeout=300)
            if undo.returncode != 0:
                failed_undo.append(f"{row.name} (exit {undo.returncode}: "
                                   f"{(undo.stderr or undo.stdout).strip()[-300:]})")
        assert not failed_undo, f"could not undo: {failed_undo}"
    assert_gate_green(vm)

    try:
        fail2ban_bans_repeated_bad_logins(vm)
    finally:
        vm.ssh("sudo rm -f /etc/ssh/sshd_config.d/11-test-public.conf && sudo sshd -t && "
               "sudo systemctl reload ssh && sudo ufw delete allow 22/tcp", check=False)
