"""Parsers and judgements behind the account and file checks (INVARIANTS.md §13, §16-20).

Plain functions over file contents and command output, each unit-tested with doctests and
tests/unit/test_accounts_rules.py. Every message names the family and the entry, what is
wrong, and a command the operator can paste to fix it. Like checks/invariants.py, nothing
here imports from roles/: the values are the baseline's (CIS Ubuntu 24.04 Level 2, dev-sec
linux-baseline), not whatever a role happens to write.

Example:
    >>> uid0_violations("root:x:0:0::/root:/bin/bash\\ntoor:x:0:0::/root:/bin/sh")[0][:32]
    'ACCOUNTS §16: toor has uid 0 — o'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Shells that do not give a login (Debian's `sync` account runs /bin/sync and exits).
NON_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")
SYNC_SHELLS = ("/bin/sync", "/usr/bin/sync")
SYSTEM_UID_MAX = 999  # login.defs SYS_UID_MAX on Debian and Ubuntu


@dataclass(frozen=True)
class Account:
    """One /etc/passwd line."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def parse_passwd(text: str) -> list[Account]:
    """/etc/passwd -> accounts (comments, blank and NIS `+` lines skipped).

    Example:
        >>> parse_passwd("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin")[0].shell
        '/usr/sbin/nologin'
    """
    accounts = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 7 or line.startswith(("#", "+", "-")) or not parts[2].isdigit():
            continue
        accounts.append(Account(parts[0], int(parts[2]), int(parts[3]) if parts[3].isdigit()
                                else -1, parts[5], parts[6]))
    return accounts


def uid0_violations(passwd: str) -> list[str]:
    """ACCOUNTS §16: root is the only account with uid 0.

    Example:
        >>> uid0_violations("root:x:0:0::/root:/bin/bash")
        []
    """
    accounts = parse_passwd(passwd)
    problems = [f"ACCOUNTS §16: {a.name} has uid 0 — only root may be the superuser; remove "
                f"it: `sudo sed -i '/^{a.name}:/d' /etc/passwd /etc/shadow`"
                for a in accounts if a.uid == 0 and a.name != "root"]
    if not any(a.name == "root" and a.uid == 0 for a in accounts):
        problems.append("ACCOUNTS §16: no root account with uid 0 in /etc/passwd — restore "
                        "/etc/passwd from /etc/passwd- (`sudo cp -p /etc/passwd- /etc/passwd`)")
    return problems


def empty_password_violations(shadow: str) -> list[str]:
    """ACCOUNTS §17: no account has an empty password field (a login without a password).

    Example:
        >>> empty_password_violations("root:*:1::::::\\nghost::1::::::")[0][-31:]
        'lock it: `sudo passwd -l ghost`'
    """
    problems = []
    for line in shadow.splitlines():
        parts = line.split(":")
        if len(parts) >= 2 and parts[0] and parts[1] == "":
            problems.append(f"ACCOUNTS §17: {parts[0]} has an empty password field in "
                            f"/etc/shadow (no password needed to log in as it) — lock it: "
                            f"`sudo passwd -l {parts[0]}`")
    return problems


def authorized_keys_lines(text: str) -> list[str]:
    """The key lines of an authorized_keys file (blank lines and comments are not keys).

    Example:
        >>> authorized_keys_lines("# none\\n\\nssh-ed25519 AAAA x\\n")
        ['ssh-ed25519 AAAA x']
    """
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def root_keys_violation(path: str, text: str) -> list[str]:
    """ACCOUNTS §16: root has no authorized keys (the file is absent or holds no key).

    Example:
        >>> root_keys_violation("/root/.ssh/authorized_keys", "ssh-ed25519 AAAA op")[0][:45]
        'ACCOUNTS §16: /root/.ssh/authorized_keys hold'
    """
    keys = authorized_keys_lines(text)
    if not keys:
        return []
    return [f"ACCOUNTS §16: {path} holds {len(keys)} key(s) — nobody logs in as root, admins "
            f"use the deploy user and sudo; remove it: `sudo rm {path}`"]


def system_shell_violations(passwd: str, uid_max: int = SYSTEM_UID_MAX) -> list[str]:
    """ACCOUNTS §17: every system account (uid 1..uid_max) has a shell that gives no login.

    Example:
        >>> system_shell_violations("sync:x:4:65534:sync:/bin:/bin/sync\\n"
        ...                         "www-data:x:33:33::/var/www:/bin/bash")[0][:44]
        'ACCOUNTS §17: system account www-data (uid 3'
    """
    problems = []
    for account in parse_passwd(passwd):
        if account.uid == 0 or account.uid > uid_max:
            continue
        if account.shell in NON_LOGIN_SHELLS:
            continue
        if account.name == "sync" and account.shell in SYNC_SHELLS:
            continue
        problems.append(f"ACCOUNTS §17: system account {account.name} (uid {account.uid}) has "
                        f"the login shell {account.shell or '(empty: /bin/sh)'} — "
                        f"`sudo usermod -s /usr/sbin/nologin {account.name}`")
    return problems


def group_members(group: str, passwd: str, name: str) -> set[str]:
    """Members of group `name`: listed in /etc/group, or having it as primary group.

    Example:
        >>> sorted(group_members("sudo:x:27:deploy", "ops:x:1001:27::/home/ops:/bin/bash",
        ...                      "sudo"))
        ['deploy', 'ops']
    """
    members: set[str] = set()
    gid = None
    for line in group.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == name:
            members.update(filter(None, (m.strip() for m in parts[3].split(","))))
            gid = int(parts[2]) if parts[2].isdigit() else None
    if gid is not None:
        members.update(a.name for a in parse_passwd(passwd) if a.gid == gid)
    return members


def sudo_group_violations(group: str, passwd: str, deploy_user: str) -> list[str]:
    """ACCOUNTS §17: the `sudo` group holds exactly the deploy user.

    Example:
        >>> sudo_group_violations("sudo:x:27:deploy,alice", "", "deploy")[0][:44]
        'ACCOUNTS §17: alice is in the sudo group — o'
    """
    members = group_members(group, passwd, "sudo")
    problems = [f"ACCOUNTS §17: {user} is in the sudo group — only the deploy user "
                f"{deploy_user} may administer the host: `sudo gpasswd -d {user} sudo`"
                for user in sorted(members - {deploy_user})]
    if deploy_user not in members:
        problems.append(f"ACCOUNTS §17: the deploy user {deploy_user} is not in the sudo group "
                        f"— `sudo usermod -aG sudo {deploy_user}` or re-run the deploy "
                        "(users step)")
    return problems


# ------------------------------------------------------------------ login.defs (§18)


def parse_login_defs(text: str) -> dict[str, str]:
    """KEY value lines of /etc/login.defs (comments skipped; the last value of a key wins,
    as in shadow's getdef).

    Example:
        >>> parse_login_defs("# UMASK 022\\nUMASK\\t027\\nPASS_MAX_DAYS 99999\\n")
        {'UMASK': '027', 'PASS_MAX_DAYS': '99999'}
    """
    values = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            values[fields[0]] = fields[1]
    return values


def _umask_too_open(value: str) -> bool:
    """A umask that does not take at least group-write and all 'other' bits away (027).

    Example:
        >>> _umask_too_open("022"), _umask_too_open("027"), _umask_too_open("077")
        (True, False, False)
    """
    try:
        bits = int(value, 8)
    except ValueError:
        return True
    return bits & 0o027 != 0o027


def login_defs_violations(values: dict[str, str]) -> list[str]:
    """ACCOUNTS §18: umask, password ageing, hashing and retries as the baseline wants.

    Example:
        >>> login_defs_violations({"UMASK": "022"})[0]
        'ACCOUNTS §18: login.defs UMASK is 022, must be 027 or stricter — \
`sudo sed -i "s/^UMASK.*/UMASK 027/" /etc/login.defs`'
    """
    def fix(key: str, value: str) -> str:
        return (f'`sudo sed -i "/^{key}[[:space:]]/d" /etc/login.defs && '
                f'echo "{key} {value}" | sudo tee -a /etc/login.defs`')

    def number(key: str) -> int | None:
        text = values.get(key, "")
        return int(text) if text.isdigit() else None

    problems = []
    umask = values.get("UMASK")
    if umask is None or _umask_too_open(umask):
        problems.append(f"ACCOUNTS §18: login.defs UMASK is {umask or 'unset'}, must be 027 or "
                        "stricter — " + ('`sudo sed -i "s/^UMASK.*/UMASK 027/" /etc/login.defs`'
                                         if umask else fix("UMASK", "027")))
    bounds = [("PASS_MAX_DAYS", "at most", 365, lambda v: v <= 365),
              ("PASS_MIN_DAYS", "at least", 1, lambda v: v >= 1),
              ("PASS_WARN_AGE", "at least", 7, lambda v: v >= 7),
              ("LOGIN_RETRIES", "at most", 3, lambda v: v <= 3),
              ("SHA_CRYPT_MIN_ROUNDS", "at least", 5000, lambda v: v >= 5000),
              ("SHA_CRYPT_MAX_ROUNDS", "at least", 5000, lambda v: v >= 5000)]
    for key, relation, limit, good in bounds:
        have = number(key)
        if have is None or not good(have):
            problems.append(f"ACCOUNTS §18: login.defs {key} is {values.get(key, 'unset')}, "
                            f"must be {relation} {limit} — {fix(key, str(limit))}")
    method = values.get("ENCRYPT_METHOD", "unset")
    if method.upper() not in ("YESCRYPT", "SHA512"):
        problems.append(f"ACCOUNTS §18: login.defs ENCRYPT_METHOD is {method}, must be "
                        f"YESCRYPT or SHA512 — {fix('ENCRYPT_METHOD', 'YESCRYPT')}")
    return problems


# ------------------------------------------------------------------ banners (§18)

BANNER_FORBIDDEN = re.compile(r"\\[mrsv]|debian|ubuntu|linux", re.IGNORECASE)
BANNER_FIX = "`echo 'Authorised access only; activity is monitored.' | sudo tee {path}`"


def banner_violations(path: str, text: str, required: bool = True) -> list[str]:
    """ACCOUNTS §18: a login banner that says nothing about the OS (CIS 1.7); /etc/issue and
    /etc/issue.net must say something (an authorised-use notice), /etc/motd may be empty.

    Example:
        >>> banner_violations("/etc/issue", "Debian GNU/Linux 13 \\\\n \\\\l")[0][:56]
        'ACCOUNTS §18: /etc/issue names the OS (Debian) — replace'
        >>> banner_violations("/etc/motd", "", required=False)
        []
    """
    found = BANNER_FORBIDDEN.search(text)
    if found:
        fix = (f"`sudo truncate -s 0 {path}`" if not required
               else BANNER_FIX.format(path=path))
        return [f"ACCOUNTS §18: {path} names the OS ({found.group(0)}) — replace it with an "
                f"authorised-use notice: {fix}"]
    if required and not text.strip():
        return [f"ACCOUNTS §18: {path} is empty or missing — write an authorised-use notice: "
                + BANNER_FIX.format(path=path)]
    return []


def sshd_banner_violations(sshd_t: str) -> list[str]:
    """ACCOUNTS §18: sshd shows /etc/issue.net before authentication (`sshd -T` output).

    Example:
        >>> sshd_banner_violations("port 22\\nbanner none\\n")[0][:46]
        'ACCOUNTS §18: sshd shows no banner (banner non'
    """
    values = dict(line.split(None, 1) for line in sshd_t.splitlines() if len(line.split()) > 1)
    banner = values.get("banner", "none").strip()
    if banner == "/etc/issue.net":
        return []
    return [f"ACCOUNTS §18: sshd shows no banner (banner {banner}), must be /etc/issue.net — "
            "add `Banner /etc/issue.net` to /etc/ssh/sshd_config.d/00-vos-hardening.conf "
            "(re-run the deploy, ssh step)"]


# ------------------------------------------------------------------ session policy (§18)

IDLE_TIMEOUT_MAX = 900  # CIS 5.4.3.2
PASSWORD_MIN_LENGTH = 14  # CIS 5.3.3.2.2
_TMOUT = re.compile(r"^\s*(?:export\s+|readonly\s+|typeset\s+-r\s+|declare\s+-r\s+)?"
                    r"TMOUT=(\d+)", re.MULTILINE)
_TMOUT_READONLY = re.compile(r"^\s*(?:readonly|typeset\s+-r|declare\s+-r)\s+TMOUT\b",
                             re.MULTILINE)


def idle_timeout_violations(profile_scripts: dict[str, str]) -> list[str]:
    """ACCOUNTS §18: a login shell reads a read-only TMOUT of at most 900 s (/etc/profile and
    /etc/profile.d/*.sh, as a login shell reads them).

    Example:
        >>> idle_timeout_violations({"/etc/profile.d/t.sh": "TMOUT=900\\nreadonly TMOUT\\n"})
        []
        >>> idle_timeout_violations({"/etc/profile": "TMOUT=3600\\n"})[0][:58]
        'ACCOUNTS §18: TMOUT is 3600 s in /etc/profile, must be at '
    """
    fix = ("re-run the deploy (accounts step), or `printf 'TMOUT=900\\nreadonly TMOUT\\n"
           "export TMOUT\\n' | sudo tee /etc/profile.d/vos-idle-timeout.sh`")
    values = [(path, int(m)) for path, text in sorted(profile_scripts.items())
              for m in _TMOUT.findall(text)]
    if not values:
        return [f"ACCOUNTS §18: no TMOUT in /etc/profile or /etc/profile.d: idle shells never "
                f"end — {fix}"]
    problems = [f"ACCOUNTS §18: TMOUT is {value} s in {path}, must be at most "
                f"{IDLE_TIMEOUT_MAX} (and not 0) — {fix}"
                for path, value in values if not 0 < value <= IDLE_TIMEOUT_MAX]
    if not any(_TMOUT_READONLY.search(text) for text in profile_scripts.values()):
        problems.append(f"ACCOUNTS §18: TMOUT is not read-only: a session can lift it — {fix}")
    return problems


def pam_module_violations(stacks: dict[str, str]) -> list[str]:
    """ACCOUNTS §18: pam_pwquality in common-password, pam_tmpdir in common-session (live,
    uncommented lines).

    Example:
        >>> pam_module_violations({"common-password": "password requisite pam_pwquality.so",
        ...                        "common-session": "# session optional pam_tmpdir.so"})
        ['ACCOUNTS §18: /etc/pam.d/common-session has no pam_tmpdir.so (a private $TMPDIR \
per session) — `sudo pam-auth-update --enable tmpdir`']
    """
    wanted = [("common-password", "pam_pwquality.so", "password quality",
               "`sudo pam-auth-update --enable pwquality`"),
              ("common-session", "pam_tmpdir.so", "a private $TMPDIR per session",
               "`sudo pam-auth-update --enable tmpdir`")]
    problems = []
    for stack, module, purpose, fix in wanted:
        live = [line for line in stacks.get(stack, "").splitlines()
                if not line.lstrip().startswith("#") and module in line]
        if not live:
            problems.append(f"ACCOUNTS §18: /etc/pam.d/{stack} has no {module} ({purpose}) "
                            f"— {fix}")
    return problems


def pwquality_settings(texts: list[str]) -> dict[str, str]:
    """pam_pwquality's effective `key = value` settings: pwquality.conf, then its conf.d
    files in order; the last value wins, comments and bare flags are left out.

    Example:
        >>> pwquality_settings(["# minlen = 9\\nminlen = 12\\n",
        ...                     "minlen = 14\\nenforce_for_root\\n"])
        {'minlen': '14'}
    """
    values: dict[str, str] = {}
    for text in texts:
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if not key.lstrip().startswith("#") and value.strip():
                values[key.strip()] = value.strip()
    return values


def pwquality_violations(texts: list[str]) -> list[str]:
    """ACCOUNTS §18: pam_pwquality's effective minlen (pwquality.conf, then its conf.d files
    in order; the last value wins) is at least 14.

    Example:
        >>> pwquality_violations(["# minlen = 9\\n", "minlen = 14\\n"])
        []
        >>> pwquality_violations(["minlen = 8\\n"])[0][:50]
        'ACCOUNTS §18: pam_pwquality minlen is 8, must be a'
    """
    value = pwquality_settings(texts).get("minlen", "")
    minlen = int(value) if value.isdigit() else None
    if minlen is None or minlen < PASSWORD_MIN_LENGTH:
        return [f"ACCOUNTS §18: pam_pwquality minlen is {minlen or 'unset (9)'}, must be at "
                f"least {PASSWORD_MIN_LENGTH} — re-run the deploy (accounts step), or `echo "
                f"'minlen = {PASSWORD_MIN_LENGTH}' | sudo tee "
                "/etc/security/pwquality.conf.d/50-vos.conf`"]
    return []


CRACKLIB_DICTIONARY = "/var/cache/cracklib/cracklib_dict"


def pwquality_dictionary(texts: list[str]) -> str | None:
    """The cracklib dictionary pam_pwquality checks new passwords against (its `dictpath`,
    else cracklib's default), or None when `dictcheck = 0` turns the check off.

    Example:
        >>> pwquality_dictionary(["minlen = 14\\n"])
        '/var/cache/cracklib/cracklib_dict'
        >>> pwquality_dictionary(["dictpath = /srv/words\\n", "dictcheck = 0\\n"]) is None
        True
    """
    values = pwquality_settings(texts)
    if values.get("dictcheck") == "0":
        return None
    return values.get("dictpath") or CRACKLIB_DICTIONARY


def pwquality_dictionary_violations(dictionary: str | None, present: bool) -> list[str]:
    """ACCOUNTS §18: the dictionary pam_pwquality needs exists; without it pam_pwquality
    refuses every new password ("error loading dictionary"), so nobody can set or change one.

    Example:
        >>> pwquality_dictionary_violations("/var/cache/cracklib/cracklib_dict", True)
        []
        >>> pwquality_dictionary_violations("/var/cache/cracklib/cracklib_dict", False)[0][:60]
        'ACCOUNTS §18: pam_pwquality has no dictionary (/var/cache/cr'
    """
    if dictionary is None or present:
        return []
    return [f"ACCOUNTS §18: pam_pwquality has no dictionary ({dictionary}.pwd): every password "
            "change is refused — `sudo apt-get install --reinstall cracklib-runtime` (or "
            "`sudo update-cracklib`)"]


# ------------------------------------------------------------------ files (§13, §19, §20)


@dataclass(frozen=True)
class Permission:
    """What a path may be: at most `mode`, owned by `user`, group one of `groups`."""

    path: str
    mode: int
    user: str
    groups: tuple[str, ...]


# CIS Ubuntu 24.04 7.1.x / 5.1.1 / 2.4.1.x, dev-sec os-03..os-05; stricter modes pass.
PERMISSION_BASELINE = (
    Permission("/etc/passwd", 0o644, "root", ("root",)),
    Permission("/etc/group", 0o644, "root", ("root",)),
    Permission("/etc/shadow", 0o640, "root", ("root", "shadow")),
    Permission("/etc/gshadow", 0o640, "root", ("root", "shadow")),
    Permission("/etc/ssh/sshd_config", 0o600, "root", ("root",)),
    Permission("/etc/crontab", 0o600, "root", ("root",)),
    Permission("/etc/cron.hourly", 0o700, "root", ("root",)),
    Permission("/etc/cron.daily", 0o700, "root", ("root",)),
    Permission("/etc/cron.weekly", 0o700, "root", ("root",)),
    Permission("/etc/cron.monthly", 0o700, "root", ("root",)),
    Permission("/etc/cron.d", 0o700, "root", ("root",)),
)


def permission_violations(rule: Permission, mode: int, user: str, group: str) -> list[str]:
    """FILES §19: `rule.path` no more open than `rule.mode`, owned as the rule says.

    Example:
        >>> shadow = PERMISSION_BASELINE[2]
        >>> permission_violations(shadow, 0o644, "root", "shadow")[0]
        'FILES §19: /etc/shadow is 0644 root:shadow, must be 0640 root:shadow or stricter — \
`sudo chmod 0640 /etc/shadow && sudo chown root:shadow /etc/shadow`'
        >>> permission_violations(shadow, 0o600, "root", "root")
        []
    """
    if mode & ~rule.mode == 0 and user == rule.user and group in rule.groups:
        return []
    owner = f"{rule.user}:{rule.groups[-1]}"
    return [f"FILES §19: {rule.path} is {mode:04o} {user}:{group}, must be {rule.mode:04o} "
            f"{owner} or stricter — `sudo chmod {rule.mode:04o} {rule.path} && sudo chown "
            f"{owner} {rule.path}`"]


STAT_FORMAT = "%a %U %G %n"  # `stat -c` format parse_stat reads: mode owner group path


def parse_stat(stat_output: str) -> dict[str, tuple[int, str, str]]:
    """`stat -c '%a %U %G %n' PATH...` output as {path: (mode, owner, group)}: one command
    for every baseline path, instead of four per path (under TCG, or over a slow mesh, each
    command is a round trip: the baseline check went from 48 of them to 1). A path that
    does not exist is simply absent (stat says so on stderr).

    Example:
        >>> parse_stat("640 root shadow /etc/shadow\\n700 root root /etc/cron.d\\n")
        {'/etc/shadow': (416, 'root', 'shadow'), '/etc/cron.d': (448, 'root', 'root')}
    """
    found = {}
    for line in stat_output.splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4:
            mode, user, group, path = fields
            found[path] = (int(mode, 8), user, group)
    return found


def world_writable_violations(find_output: str) -> list[str]:
    """FILES §19: no file under /etc is writable by everyone (`find /etc -xdev -type f
    -perm -0002` output, one path a line).

    Example:
        >>> world_writable_violations("/etc/evil.conf\\n")[0]
        'FILES §19: /etc/evil.conf is world-writable — `sudo chmod o-w /etc/evil.conf`'
    """
    return [f"FILES §19: {path} is world-writable — `sudo chmod o-w {path}`"
            for path in filter(None, (line.strip() for line in find_output.splitlines()))]


def env_file_violations(find_output: str) -> list[str]:
    """FILES §13: every env file under /etc/vos-stack is 0600 (or stricter), owned by root
    (`find … -printf '%m %u %g %p\\n'` output).

    Example:
        >>> env_file_violations("644 root root /etc/vos-stack/app.env")[0]
        'FILES §13: /etc/vos-stack/app.env is 0644 root:root, must be 0600 root:root (it holds \
secrets) — `sudo chmod 0600 /etc/vos-stack/app.env && sudo chown root:root \
/etc/vos-stack/app.env`'
        >>> env_file_violations("600 root root /etc/vos-stack/app.env")
        []
    """
    problems = []
    for line in find_output.splitlines():
        fields = line.split(None, 3)
        if len(fields) != 4:
            continue
        mode, user, group, path = int(fields[0], 8), fields[1], fields[2], fields[3]
        if mode & ~0o600 or user != "root":
            problems.append(f"FILES §13: {path} is {mode:04o} {user}:{group}, must be 0600 "
                            f"root:root (it holds secrets) — `sudo chmod 0600 {path} && sudo "
                            f"chown root:root {path}`")
    return problems


# Compilers and build tools (whole package names); gcc-14-base and libgcc-s1 are runtime
# libraries every system has, not compilers.
COMPILER_PACKAGES = re.compile(r"build-essential|gcc(-\d+)?|g\+\+(-\d+)?|clang(-\d+)?|tcc|make")


def compiler_violations(dpkg_output: str) -> list[str]:
    """FILES §20: no compiler or build tool installed (`dpkg-query -W -f
    '${Package} ${db:Status-Abbrev}\\n'` output: installed packages say `ii`).

    Example:
        >>> compiler_violations("gcc-14-base ii \\nmake ii \\ngcc rc ")
        ['FILES §20: make is installed (a build tool on a production host) — `sudo apt-get \
purge -y make`']
    """
    problems = []
    for line in dpkg_output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].startswith("i") and COMPILER_PACKAGES.fullmatch(
                fields[0].split(":")[0]):
            problems.append(f"FILES §20: {fields[0]} is installed (a build tool on a production "
                            f"host) — `sudo apt-get purge -y {fields[0]}`")
    return problems
