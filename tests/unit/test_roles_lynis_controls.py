"""The controls added for INVARIANTS.md §18, §21 and §26 (session policy, USBGuard, AIDE,
process accounting) as data, against the recorded Debian 13 facts plus `set_fact` for what
that recording never asked: what a fresh host plans, and that a baseline is written only
when none exists."""

from __future__ import annotations

from roles_harness import load_facts, plan_role, set_fact
from test_roles_kernel import absent, status, with_package, written

from roles import accounts, audit, base, integrity, kernel
from roles.settings import LoginSettings

FIND = {"interpolate_variables": False, "extended_regex": False}


def lines_absent(facts: dict, path: str, *patterns: str) -> dict:
    for pattern in patterns:
        facts = set_fact(facts, "files.FindInFile", [], path=path, pattern=pattern, **FIND)
    return facts


def aide_host(database: bool) -> dict:
    facts = absent(load_facts("debian13"), integrity.CONFIG,
                   *(f"/etc/systemd/system/{unit}" for unit in (
                       integrity.BASELINE_UNIT, integrity.CHECK_UNIT, integrity.CHECK_TIMER)))
    for directory in ("/etc/aide", "/var/lib/aide"):
        facts = set_fact(facts, "files.Directory", None, path=directory)
    facts = set_fact(facts, "files.File", {"size": 1} if database else None,
                     path=integrity.DATABASE)
    facts = status(facts, integrity.CHECK_TIMER, False, False)
    return status(facts, integrity.BASELINE_UNIT, False, False)


def test_aide_writes_its_baseline_in_the_background_only_when_none_exists():
    plan = plan_role(integrity.aide, aide_host(database=False))
    (start,) = plan.named("AIDE baseline").commands
    assert start == f"systemctl start --no-block {integrity.BASELINE_UNIT}"
    rules = plan.uploads[integrity.CONFIG].splitlines()
    assert "Checksums = sha512" in rules and "/usr/bin Code" in rules
    assert "database_in=file:/var/lib/aide/aide.db" in rules and "!/etc/mtab" in rules
    assert not any(line.startswith("/var/lib/docker") for line in rules)
    unit = plan.uploads[f"/etc/systemd/system/{integrity.BASELINE_UNIT}"]
    assert "ExecStart=/usr/bin/aide --config /etc/aide/aide.conf --init" in unit
    assert "ConditionPathExists=!/var/lib/aide/aide.db" in unit and "Nice=19" in unit
    check = plan.uploads[f"/etc/systemd/system/{integrity.CHECK_UNIT}"]
    assert "SuccessExitStatus=1 2 3 4 5 6 7" in check
    assert not any("AIDE baseline" in op.name
                   for op in plan_role(integrity.aide, aide_host(database=True)))
    assert plan.named("systemd reads the AIDE units").conditional


def test_aide_converged_changes_nothing():
    """A second deploy: the oneshot baseline unit is enabled and not running (it ran), the
    timer runs, the files are there: no command (a `start` of the oneshot on every deploy
    was the second deploy's one change, caught by the staging tier)."""
    fresh = aide_host(database=True)
    uploads = plan_role(integrity.aide, fresh).uploads
    converged = written(fresh, uploads, mode=644)
    converged = written(converged, {integrity.CONFIG: uploads[integrity.CONFIG]}, mode=600)
    for directory, mode in (("/etc/aide", 755), ("/var/lib/aide", 700)):
        converged = set_fact(converged, "files.Directory", {"user": "root", "group": "root",
                                                             "mode": mode}, path=directory)
    converged = with_package(converged, "aide", "0.19.1-2+deb13u6")
    converged = status(converged, integrity.CHECK_TIMER, True, True)
    converged = status(converged, integrity.BASELINE_UNIT, False, True)
    plan = plan_role(integrity.aide, converged)
    assert [c for op in plan if not op.conditional for c in op.commands] == []


def test_accounting_turns_sysstat_on_and_starts_acct():
    facts = lines_absent(load_facts("debian13"), "/etc/default/sysstat", "^ENABLED=.*$",
                         '^ENABLED="true"$')
    for service in ("acct.service", "sysstat.service"):
        facts = status(facts, service, False, False)
    plan = plan_role(audit.accounting, facts)
    assert any('ENABLED="true"' in c for c in plan.named("sysstat collects").commands)
    assert plan.named("acct.service running").commands


def test_usbguard_applies_its_policy_to_controllers_too_and_restarts_once_changed():
    facts = load_facts("debian13")
    for key, value in kernel.USBGUARD_POLICY.items():
        facts = lines_absent(facts, kernel.USBGUARD_CONF, f"^{key}=.*$", f"^{key}={value}$")
    facts = status(facts, "usbguard.service", True, True)
    facts = absent(facts, kernel.USBGUARD_DROPIN)
    with_bus = set_fact(facts, "files.Directory", {"mode": 755}, path=kernel.USB_BUS)
    plan = plan_role(kernel.usb_guard, with_bus)
    assert any("PresentControllerPolicy=apply-policy" in c
               for c in plan.named("usbguard PresentControllerPolicy").commands)
    assert plan.named("Restart usbguard").conditional
    assert "ConditionPathIsDirectory=/sys/bus/usb/devices" in plan.uploads[
        kernel.USBGUARD_DROPIN]
    # no USB bus (a VPS without a controller): enabled, never started, never restarted
    no_bus = plan_role(kernel.usb_guard, set_fact(facts, "files.Directory", None,
                                                  path=kernel.USB_BUS))
    assert not any("Restart usbguard" in op.name for op in no_bus)
    assert "no USB bus here" in " ".join(op.name for op in no_bus)


def test_session_policy_files():
    facts = absent(load_facts("debian13"), *accounts.SESSION_FILES)
    facts = set_fact(facts, "files.Directory", None, path="/etc/security/pwquality.conf.d")
    plan = plan_role(accounts.session_policy, facts, LoginSettings(idle_timeout_seconds=600))
    profile = plan.uploads["/etc/profile.d/vos-idle-timeout.sh"].splitlines()
    assert "TMOUT=600" in profile and "readonly TMOUT" in profile
    pwquality = plan.uploads["/etc/security/pwquality.conf.d/50-vos.conf"].splitlines()
    assert "minlen = 14" in pwquality and "enforce_for_root" in pwquality


def test_debsums_runs_weekly():
    facts = lines_absent(load_facts("debian13"), "/etc/default/debsums", "^CRON_CHECK=.*$",
                         "^CRON_CHECK=weekly$")
    (command,) = plan_role(base.upkeep, facts).named("debsums").commands
    assert "CRON_CHECK=weekly" in command
