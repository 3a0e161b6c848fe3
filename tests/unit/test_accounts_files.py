"""The account and file-permission controls (INVARIANTS.md §13, §16-20), as data.

Roles: planned against the recorded Debian 13 facts plus the answers a stock Debian 13 gives
to facts the recording never reached (read from a `vos-base:trixie` container: login.defs
without UMASK, /etc/issue naming the OS, /etc/cron.daily 0755, no cron, no sshd_config
change yet), then against a converged host, which must plan no command at all.

Checks: the pure judgements of checks/accounts_rules.py on recorded file contents, and the
cross-check that what the roles write by default passes the gate's judgement.
"""

import hashlib
from datetime import datetime

import pytest
from pydantic import ValidationError
from roles_harness import load_facts, plan_role, set_fact

from checks import accounts_rules as rules
from roles import accounts
from roles import files as file_roles
from roles.settings import LoginSettings

# /etc/login.defs of a stock Debian 13 (login.defs 1:4.17.4-2), the keys the role owns.
DEBIAN13_LOGIN_DEFS = {"PASS_MAX_DAYS": "PASS_MAX_DAYS\t99999", "PASS_MIN_DAYS":
                       "PASS_MIN_DAYS\t0", "PASS_WARN_AGE": "PASS_WARN_AGE\t7",
                       "LOGIN_RETRIES": "LOGIN_RETRIES\t\t5",
                       "ENCRYPT_METHOD": "ENCRYPT_METHOD YESCRYPT"}
DEBIAN13_ISSUE = "Debian GNU/Linux 13 \\n \\l\n\n"
NOW = datetime(2026, 12, 1)


def stat(mode: int, user: str = "root", group: str = "root") -> dict:
    """A files.File / files.Directory fact value."""
    return {"mode": mode, "user": user, "group": group, "size": 1, "atime": NOW,
            "mtime": NOW, "ctime": NOW}


def find_in_file(facts: dict, pattern: str, lines: list[str]) -> dict:
    return set_fact(facts, "files.FindInFile", lines, path=accounts.LOGIN_DEFS,
                    pattern=pattern, interpolate_variables=False, extended_regex=False)


def with_login_defs(facts: dict, present: dict[str, str]) -> dict:
    """login.defs answering each owned key with `present[key]` (absent: no line)."""
    for key, value in accounts.login_defs_values(LoginSettings()).items():
        facts = find_in_file(facts, accounts.key_pattern(key),
                             [present[key]] if key in present else [])
        facts = find_in_file(facts, f"^{key} {value}$",
                             [f"{key} {value}"] if present.get(key) == f"{key} {value}"
                             else [])
    return facts


def with_banners(facts: dict, content: dict[str, str]) -> dict:
    for path in accounts.BANNERS:
        facts = set_fact(facts, "files.File", stat(644), path=path)
        facts = set_fact(facts, "files.Sha1File",
                         hashlib.sha1(content[path].encode()).hexdigest(), path=path)
    return facts


def with_modes(facts: dict, modes: dict[str, dict | None]) -> dict:
    for item in file_roles.PERMISSION_BASELINE:
        kind = "files.Directory" if item.directory else "files.File"
        facts = set_fact(facts, kind, modes.get(item.path), path=item.path)
    return facts


def with_root_keys(facts: dict, present: bool) -> dict:
    for path in accounts.ROOT_KEY_FILES:
        facts = set_fact(facts, "files.File", stat(600) if present else None, path=path)
    return facts


@pytest.fixture
def debian():
    facts = load_facts("debian13")
    facts = with_login_defs(facts, DEBIAN13_LOGIN_DEFS)
    facts = with_banners(facts, {"/etc/issue": DEBIAN13_ISSUE,
                                 "/etc/issue.net": "Debian GNU/Linux 13\n",
                                 "/etc/motd": "The programs included with Debian…\n"})
    facts = with_modes(facts, {"/etc/passwd": stat(644), "/etc/group": stat(644),
                               "/etc/shadow": stat(640, group="shadow"),
                               "/etc/gshadow": stat(640, group="shadow"),
                               "/etc/ssh/sshd_config": stat(644),
                               "/etc/cron.daily": stat(755)})
    return with_root_keys(facts, present=True)


# ---------------------------------------------------------------- roles: login.defs


def test_login_defs_replaces_what_differs_and_appends_what_is_missing(debian):
    plan = plan_role(accounts.login_defs, debian)
    umask = plan.named("login.defs: UMASK 027").commands
    assert umask == ["echo 'UMASK 027' >> /etc/login.defs"]  # Debian 13 has no UMASK line
    (max_days,) = plan.named("PASS_MAX_DAYS 365").commands
    assert max_days.startswith("sed -i") and "PASS_MAX_DAYS 365" in max_days
    assert plan.named("ENCRYPT_METHOD YESCRYPT").commands == []  # already so
    assert plan.named("PASS_WARN_AGE 7").commands[0].startswith("sed")  # tab → one space
    assert "SHA_CRYPT_MIN_ROUNDS 5000" in plan.named("SHA_CRYPT_MIN_ROUNDS").commands[0]
    assert "LOGIN_RETRIES 3" in plan.named("LOGIN_RETRIES").commands[0]


def test_login_defs_converged_plans_nothing(debian):
    values = accounts.login_defs_values(LoginSettings())
    converged = with_login_defs(debian, {key: f"{key} {value}" for key, value in values.items()})
    assert plan_role(accounts.login_defs, converged).commands == []


def test_login_defs_never_matches_the_commented_documentation():
    import re

    pattern = accounts.key_pattern("PASS_MAX_DAYS").replace("[[:space:]]", r"\s")
    assert re.match(pattern, "PASS_MAX_DAYS\t99999")
    assert not re.match(pattern, "#\tPASS_MAX_DAYS\tMaximum number of days a password …")


# ---------------------------------------------------------------- roles: banners, keys


def test_banners_replace_the_os_name(debian):
    plan = plan_role(accounts.banners, debian)
    uploads = plan.uploads
    assert uploads["/etc/issue"] == uploads["/etc/issue.net"] == LoginSettings().banner + "\n"
    assert uploads["/etc/motd"] == ""
    for path, text in uploads.items():
        assert rules.banner_violations(path, text, required=path != "/etc/motd") == []


def test_banners_converged_plans_nothing(debian):
    rendered = plan_role(accounts.banners, debian).uploads
    converged = with_banners(debian, rendered)
    assert plan_role(accounts.banners, converged).commands == []


def test_banner_naming_the_os_is_refused():
    with pytest.raises(ValidationError, match="must not name the OS"):
        LoginSettings(banner="Welcome to Ubuntu 24.04 LTS, authorised users only")
    with pytest.raises(ValidationError, match="getty escapes"):
        LoginSettings(banner="Authorised use only on \\n running \\r")


def test_root_keys_are_removed_only_when_present(debian):
    assert plan_role(accounts.no_root_keys, debian).commands == [
        "rm -f /root/.ssh/authorized_keys", "rm -f /root/.ssh/authorized_keys2"]
    assert plan_role(accounts.no_root_keys, with_root_keys(debian, False)).commands == []


# ---------------------------------------------------------------- roles: compilers


def test_compilers_are_purged_when_installed_and_runtime_libraries_stay(debian):
    packages = dict(debian["deb.DebPackages"][0]["value"], gcc=["4:14.2.0-1"],
                    **{"gcc-14": ["14.2.0-19"], "make": ["4.4.1-2"]})
    facts = set_fact(debian, "deb.DebPackages", packages)
    (command,) = plan_role(accounts.no_compilers, facts).commands
    assert command.endswith("purge gcc gcc-14 make"), command
    assert "gcc-14-base" not in command  # a runtime library every host has


def test_no_compilers_installed_plans_nothing(debian):
    assert plan_role(accounts.no_compilers, debian).commands == []  # recorded: none


# ---------------------------------------------------------------- roles: file permissions


def test_permissions_fix_what_differs_and_skip_what_is_absent(debian):
    plan = plan_role(file_roles.permissions, debian)
    assert plan.commands == ["chmod 600 /etc/ssh/sshd_config", "chmod 700 /etc/cron.daily"]
    assert plan.named("/etc/crontab").commands == []  # no cron here: nothing created


def test_permissions_repair_shadow_opened_to_everyone(debian):
    facts = with_modes(debian, {"/etc/shadow": stat(644, group="root")})
    assert plan_role(file_roles.permissions, facts).commands == [
        "chmod 640 /etc/shadow", "chown root:shadow /etc/shadow"]


def test_permissions_converged_plans_nothing(debian):
    converged = with_modes(debian, {item.path: stat(item.mode, item.user, item.group)
                                    for item in file_roles.PERMISSION_BASELINE})
    assert plan_role(file_roles.permissions, converged).commands == []


def test_role_baseline_and_check_baseline_agree():
    """The role writes exactly what the gate holds the host to (checks import no roles)."""
    role = {(b.path, int(str(b.mode), 8), b.user, b.group)
            for b in file_roles.PERMISSION_BASELINE}
    check = {(p.path, p.mode, p.user, p.groups[-1]) for p in rules.PERMISSION_BASELINE}
    assert role == check


# ---------------------------------------------------------------- defaults pass the gate


def test_default_login_settings_pass_the_login_defs_check():
    values = accounts.login_defs_values(LoginSettings())
    assert rules.login_defs_violations(values) == []
    assert rules.login_defs_violations(
        accounts.login_defs_values(LoginSettings(umask="077", encrypt_method="SHA512"))) == []


def test_every_package_the_check_flags_is_purged_by_default():
    flagged = ["build-essential", "gcc", "gcc-14", "g++", "g++-14", "clang", "clang-19",
               "tcc", "make"]
    assert all(rules.COMPILER_PACKAGES.fullmatch(name) for name in flagged)
    assert accounts.installed_matches(dict.fromkeys(flagged, ["1"]),
                                      LoginSettings().compiler_packages) == sorted(flagged)


@pytest.mark.parametrize("field, value", [("umask", "022"), ("pass_max_days", 99999),
                                          ("pass_min_days", 0), ("login_retries", 5),
                                          ("sha_crypt_min_rounds", 1000)])
def test_settings_refuse_what_the_gate_would_fail(field, value):
    with pytest.raises(ValidationError):
        LoginSettings(**{field: value})


# ---------------------------------------------------------------- check judgements

DEBIAN13_PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
deploy:x:1000:1000::/home/deploy:/bin/bash
"""
DEBIAN13_GROUP = "root:x:0:\nsudo:x:27:deploy\ndeploy:x:1000:\n"


def test_a_stock_debian_passes_the_account_judgements():
    assert rules.uid0_violations(DEBIAN13_PASSWD) == []
    assert rules.system_shell_violations(DEBIAN13_PASSWD) == []
    assert rules.sudo_group_violations(DEBIAN13_GROUP, DEBIAN13_PASSWD, "deploy") == []
    assert rules.empty_password_violations("root:*:20000:0:99999:7:::\ndeploy:!:1::::::") == []


def test_a_second_uid_0_and_a_login_shell_on_a_system_account_are_named():
    passwd = DEBIAN13_PASSWD + "toor:x:0:0::/root:/bin/sh\n"
    passwd = passwd.replace("daemon:/usr/sbin:/usr/sbin/nologin", "daemon:/usr/sbin:/bin/bash")
    (uid0,) = rules.uid0_violations(passwd)
    assert uid0.startswith("ACCOUNTS §16: toor has uid 0") and "sed -i '/^toor:/d'" in uid0
    (shell,) = rules.system_shell_violations(passwd)
    assert "daemon (uid 1)" in shell and "usermod -s /usr/sbin/nologin daemon" in shell


def test_sudo_membership_by_primary_group_counts():
    passwd = DEBIAN13_PASSWD + "ops:x:1001:27::/home/ops:/bin/bash\n"
    (extra,) = rules.sudo_group_violations(DEBIAN13_GROUP, passwd, "deploy")
    assert "ops is in the sudo group" in extra and "gpasswd -d ops sudo" in extra
    missing = rules.sudo_group_violations("sudo:x:27:", DEBIAN13_PASSWD, "deploy")
    assert "deploy user deploy is not in the sudo group" in missing[0]


def test_stock_debian_login_defs_fails_on_each_key():
    text = "\n".join(DEBIAN13_LOGIN_DEFS.values()) + "\n#\tPASS_MAX_DAYS\tMaximum number\n"
    problems = rules.login_defs_violations(rules.parse_login_defs(text))
    for key in ("UMASK is unset", "PASS_MAX_DAYS is 99999", "PASS_MIN_DAYS is 0",
                "LOGIN_RETRIES is 5", "SHA_CRYPT_MIN_ROUNDS is unset"):
        assert any(key in problem for problem in problems), (key, problems)
    assert not any("PASS_WARN_AGE" in p or "ENCRYPT_METHOD" in p for p in problems)


def test_banner_judgement():
    assert "names the OS (Debian)" in rules.banner_violations("/etc/issue", DEBIAN13_ISSUE)[0]
    assert "is empty or missing" in rules.banner_violations("/etc/issue.net", "\n")[0]
    assert rules.banner_violations("/etc/motd", "Kernel \\r", required=False)[0].endswith(
        "`sudo truncate -s 0 /etc/motd`")
    assert rules.sshd_banner_violations("banner /etc/issue.net\n") == []


def test_root_keys_comments_are_no_keys():
    assert rules.root_keys_violation("/root/.ssh/authorized_keys", "# none\n\n") == []


def test_permissions_judgement_accepts_stricter_and_names_the_fix():
    sshd = next(p for p in rules.PERMISSION_BASELINE if p.path == "/etc/ssh/sshd_config")
    assert rules.permission_violations(sshd, 0o400, "root", "root") == []
    (problem,) = rules.permission_violations(sshd, 0o644, "root", "root")
    assert "FILES §19: /etc/ssh/sshd_config is 0644 root:root, must be 0600" in problem
    cron = next(p for p in rules.PERMISSION_BASELINE if p.path == "/etc/cron.d")
    assert rules.permission_violations(cron, 0o755, "root", "root")


def test_env_files_and_world_writable():
    found = "600 root root /etc/vos-stack/app.env\n640 root root /etc/vos-stack/worker.env\n"
    (problem,) = rules.env_file_violations(found)
    assert problem.startswith("FILES §13: /etc/vos-stack/worker.env is 0640 root:root")
    assert rules.env_file_violations("600 deploy deploy /etc/vos-stack/app.env")
    assert rules.world_writable_violations("") == []


@pytest.mark.parametrize("module", [rules, accounts, file_roles])
def test_docstring_examples(module):
    import doctest

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module.__name__}"
