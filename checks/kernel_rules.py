"""Parsers and judgements behind checks/test_kernel.py and checks/test_audit.py (INVARIANTS.md
§21-25): plain functions over command output and file contents, unit-tested against real
samples (tests/unit/test_kernel_rules.py); every message names the invariant, what is wrong
and the command that fixes it.

Config files arrive as one dump, each file headed `==> PATH <==` (what :data:`DUMP` prints),
and are put in the order the reader (kmod, systemd) applies them.

Example:
    >>> loaded_violations(parse_lsmod("Module  Size  Used by\\ndccp  90112  0\\n"), ["dccp"])
    ['KERNEL §21: dccp is loaded — `sudo modprobe -r dccp` (the blacklist stops it loading again)']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

# A shell snippet printing each readable file of its arguments (globs allowed) with a header.
DUMP = ('for f in {paths}; do if [ -f "$f" ]; then printf "==> %s <==\\n" "$f"; cat "$f"; '
        'echo; fi; done')
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
                 "/usr/lib/modprobe.d", "/lib/modprobe.d")
COREDUMP_MAIN = ("/etc/systemd/coredump.conf", "/run/systemd/coredump.conf",
                 "/usr/local/lib/systemd/coredump.conf", "/usr/lib/systemd/coredump.conf")
COREDUMP_DIRS = ("/etc/systemd/coredump.conf.d", "/run/systemd/coredump.conf.d",
                 "/usr/local/lib/systemd/coredump.conf.d", "/usr/lib/systemd/coredump.conf.d")
LIMITS_MAIN = ("/etc/security/limits.conf",)
LIMITS_DIRS = ("/etc/security/limits.d",)
FALSE_COMMANDS = ("/bin/false", "/usr/bin/false")

BLACKLIST_FILE = "/etc/modprobe.d/vos-blacklist.conf"
DEPLOY_KERNEL = "re-run the deploy (kernel step)"
COREDUMP_FIX = (f"{DEPLOY_KERNEL}, which writes /etc/systemd/coredump.conf.d/vos.conf, and "
                "delete any drop-in read after it that sets the value")


def dump_command(main: tuple[str, ...], dirs: tuple[str, ...]) -> str:
    """The shell command that dumps a config and its drop-ins for :func:`parse_dump`.

    Example:
        >>> dump_command(("/etc/a.conf",), ("/etc/a.d",))[:35]
        'for f in /etc/a.conf /etc/a.d/*.con'
    """
    return DUMP.format(paths=" ".join([*main, *(f"{d}/*.conf" for d in dirs)]))


def parse_dump(text: str) -> dict[str, str]:
    """{path: content} from a dump of `==> PATH <==` headed files.

    Example:
        >>> parse_dump("==> /etc/a.conf <==\\nx=1\\n\\n==> /etc/b.conf <==\\ny=2\\n")
        {'/etc/a.conf': 'x=1\\n\\n', '/etc/b.conf': 'y=2\\n'}
    """
    files: dict[str, str] = {}
    current = None
    for line in text.splitlines(keepends=True):
        match = re.fullmatch(r"==> (.+) <==\n?", line)
        if match:
            current = match.group(1)
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files


def effective_order(files: dict[str, str], main: tuple[str, ...] = (),
                    dirs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The files a reader applies, in its order: the first existing main file, then the
    drop-ins sorted by name, where a name in an earlier directory (/etc) masks the same name
    in a later one (/usr/lib) — systemd's and kmod's rule.

    Example:
        >>> order = effective_order({"/usr/lib/m.d/a.conf": "lib", "/etc/m.d/a.conf": "etc",
        ...     "/usr/lib/m.d/0.conf": "zero"}, dirs=("/etc/m.d", "/usr/lib/m.d"))
        >>> [path for path, _ in order]
        ['/usr/lib/m.d/0.conf', '/etc/m.d/a.conf']
    """
    ordered = [(path, files[path]) for path in main if path in files][:1]
    chosen: dict[str, str] = {}
    for directory in dirs:
        for path in files:
            parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
            if parent == directory and name.endswith(".conf") and name not in chosen:
                chosen[name] = path
    return ordered + [(chosen[name], files[chosen[name]]) for name in sorted(chosen)]


def _lines(content: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in content.splitlines()
            if line.split("#", 1)[0].strip()]


def normalise_module(name: str) -> str:
    """kmod treats '-' and '_' alike; /proc/modules and lsmod print '_'.

    Example:
        >>> normalise_module("usb-storage")
        'usb_storage'
    """
    return name.strip().replace("-", "_")


# ------------------------------------------------------------------- §21 module blacklist


def parse_lsmod(output: str) -> set[str]:
    """Loaded module names from `lsmod` (or /proc/modules), normalised.

    Example:
        >>> sorted(parse_lsmod("Module  Size  Used by\\nusb_storage  81920  0\\n"))
        ['usb_storage']
    """
    names = set()
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] != "Module":
            names.add(normalise_module(fields[0]))
    return names


def loaded_violations(loaded: set[str], blacklist: list[str]) -> list[str]:
    """One line per blacklisted module that is loaded now."""
    return [f"KERNEL §21: {module} is loaded — `sudo modprobe -r {module}` (the blacklist "
            "stops it loading again)"
            for module in blacklist if normalise_module(module) in loaded]


def modprobe_violations(ordered: list[tuple[str, str]], blacklist: list[str]) -> list[str]:
    """Each blacklisted module needs `install M /bin/false` and `blacklist M`, and no file
    may give it another install command (a later `install M /bin/true` would load nothing
    either, but an `install M modprobe --ignore-install M` would load it).

    Example:
        >>> modprobe_violations([("/etc/modprobe.d/x.conf", "install dccp /bin/true\\n")],
        ...                     ["dccp"])[0][:68]
        'KERNEL §21: dccp has `install dccp /bin/true` in /etc/modprobe.d/x.c'
    """
    installs: dict[str, list[tuple[str, str]]] = {}
    blacklisted: set[str] = set()
    for path, content in ordered:
        for line in _lines(content):
            words = line.split()
            if len(words) >= 3 and words[0] == "install":
                installs.setdefault(normalise_module(words[1]), []).append(
                    (path, " ".join(words[2:])))
            elif len(words) == 2 and words[0] == "blacklist":
                blacklisted.add(normalise_module(words[1]))
    problems = []
    for module in blacklist:
        key = normalise_module(module)
        found = installs.get(key, [])
        wrong = [(path, command) for path, command in found if command not in FALSE_COMMANDS]
        for path, command in wrong:
            problems.append(f"KERNEL §21: {module} has `install {module} {command}` in {path}, "
                            f"so it can load — delete that line (`sudo sed -i "
                            f"'/^install {module} /d' {path}`), {DEPLOY_KERNEL}")
        if not found:
            problems.append(f"KERNEL §21: no `install {module} /bin/false` in modprobe.d, so "
                            f"`modprobe {module}` loads it — {DEPLOY_KERNEL}, which writes "
                            f"{BLACKLIST_FILE}")
        if key not in blacklisted:
            problems.append(f"KERNEL §21: no `blacklist {module}` in modprobe.d — "
                            f"{DEPLOY_KERNEL}, which writes {BLACKLIST_FILE}")
    return problems


# ------------------------------------------------------------------------ §22 core dumps


def limits_violations(ordered: list[tuple[str, str]]) -> list[str]:
    """pam_limits: `*` must end with a hard core limit of 0, and so must every user, group
    or range given a hard core limit anywhere (a specific domain wins over `*`). Files are
    read in order (limits.conf, then limits.d by name) and, for one domain, a later line
    overrides an earlier one, as pam_limits does.

    Example:
        >>> limits_violations([("/etc/security/limits.d/vos-coredump.conf", "* hard core 0\\n")])
        []
        >>> conf = [("/etc/security/limits.conf", "@adm hard core unlimited\\n"),
        ...         ("/etc/security/limits.d/vos-coredump.conf", "* hard core 0\\n")]
        >>> limits_violations(conf)[0][:64]
        'KERNEL §22: `@adm hard core unlimited` in /etc/security/limits.c'
        >>> limits_violations([("/etc/security/limits.d/10-coredump-debian.conf",
        ...     "root hard core infinity\\n"), ("/etc/security/limits.d/vos-coredump.conf",
        ...     "* hard core 0\\nroot hard core 0\\n")])
        []
    """
    last: dict[str, tuple[str, str, str]] = {}  # domain -> (value, line, path)
    for path, content in ordered:
        for line in _lines(content):
            words = line.split()
            if len(words) != 4 or words[2] != "core" or words[1] not in ("hard", "-"):
                continue
            last[words[0]] = (words[3], line, path)
    problems = [f"KERNEL §22: `{line}` in {path} allows core dumps — delete that line from "
                f"{path}, or give {domain} `hard core 0` in a file read after it"
                for domain, (value, line, path) in last.items() if value != "0"]
    if "*" not in last:
        problems.append("KERNEL §22: no `* hard core 0` in /etc/security/limits.conf or "
                        f"limits.d, so processes may dump core — {DEPLOY_KERNEL}, which writes "
                        "/etc/security/limits.d/vos-coredump.conf")
    return problems


def coredump_values(ordered: list[tuple[str, str]]) -> dict[str, str]:
    """The [Coredump] values systemd-coredump uses (the last assignment wins).

    Example:
        >>> coredump_values([("/etc/systemd/coredump.conf", "[Coredump]\\nStorage=external\\n"),
        ...     ("/etc/systemd/coredump.conf.d/vos.conf", "[Coredump]\\nStorage=none\\n")])
        {'Storage': 'none'}
    """
    values: dict[str, str] = {}
    for _, content in ordered:
        section = None
        for line in content.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Coredump" and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def coredump_violations(values: dict[str, str], where: str) -> list[str]:
    """Storage=none and ProcessSizeMax=0 (systemd's defaults are external and 1G).

    Example:
        >>> coredump_violations({"Storage": "none", "ProcessSizeMax": "0"}, "x")
        []
    """
    problems = []
    storage = values.get("Storage", "external (default)")
    if storage != "none":
        problems.append(f"KERNEL §22: systemd-coredump Storage is {storage}, must be none "
                        f"(effective from {where}) — {COREDUMP_FIX}")
    size = values.get("ProcessSizeMax", "1G (default)")
    if not re.fullmatch(r"0[A-Za-z]*", size):
        problems.append(f"KERNEL §22: systemd-coredump ProcessSizeMax is {size}, must be 0 "
                        f"(effective from {where}) — {COREDUMP_FIX}")
    return problems


# -------------------------------------------------------------------------- §23 mounts


def mount_options(proc_mounts: str, mount_point: str) -> list[str] | None:
    """The options of the mount visible at `mount_point` (/proc/mounts; with mounts stacked
    on one point, the last one is the visible one), None when it is not a mount point.

    Example:
        >>> mount_options("tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\\n"
        ...               "tmpfs /dev/shm tmpfs rw,nosuid,nodev,noexec 0 0\\n", "/dev/shm")
        ['rw', 'nosuid', 'nodev', 'noexec']
    """
    found = None
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            if target == mount_point:
                found = fields[3].split(",")
    return found


def mount_violations(mount_point: str, options: list[str] | None,
                     required: tuple[str, ...]) -> list[str]:
    """The required options the live mount lacks, as one message; nothing when the point
    is not its own mount (the caller decides whether that is allowed).

    Example:
        >>> mount_violations("/tmp", ["rw", "nosuid", "nodev"], ("nodev", "nosuid"))
        []
    """
    if options is None:
        return []
    lacking = [option for option in required if option not in options]
    if not lacking:
        return []
    fix = (f"`sudo mount -o remount,{','.join(required)} {mount_point}` and keep it in "
           "/etc/fstab")
    if mount_point == "/dev/shm":
        fix += " (re-running the deploy, kernel step, does both)"
    return [f"KERNEL §23: {mount_point} is mounted without {','.join(lacking)} "
            f"(live options {','.join(options)}) — {fix}"]


# ---------------------------------------------------------------------------- §24 audit


@dataclass
class AuditRules:
    """What `auditctl -l` shows: watched paths and the syscalls of syscall rules."""

    watches: set[str] = field(default_factory=set)
    syscalls: set[str] = field(default_factory=set)


def parse_auditctl(output: str) -> AuditRules:
    """`auditctl -l`: `-w PATH …` watches, and `-a … -F path=|dir=PATH` / `-S a,b` rules.

    Example:
        >>> rules = parse_auditctl("-w /etc/passwd -p wa -k identity\\n"
        ...     "-a always,exit -F arch=b64 -S init_module,delete_module -F key=modules\\n")
        >>> sorted(rules.watches), sorted(rules.syscalls)
        (['/etc/passwd'], ['delete_module', 'init_module'])
    """
    rules = AuditRules()
    for line in output.splitlines():
        words = line.split()
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "-w":
                rules.watches.add(value.rstrip("/") or "/")
            elif flag == "-S":
                rules.syscalls.update(name for name in value.split(",") if name)
            elif flag == "-F" and value.startswith(("path=", "dir=")):
                rules.watches.add(value.partition("=")[2].rstrip("/") or "/")
    return rules


def audit_violations(rules: AuditRules, watches: list[str],
                     syscalls: dict[str, tuple[str, ...]]) -> list[str]:
    """Missing watches (one message naming them all) and missing syscall groups (each
    group needs at least one of its syscalls audited).

    Example:
        >>> audit_violations(parse_auditctl("No rules"), ["/etc/shadow"], {})[0][:56]
        'AUDIT §24: auditctl -l has no watch on /etc/shadow — the'
    """
    fix = ("the rules are not loaded: `sudo augenrules --load` (or re-run the deploy: audit "
           "step, which writes /etc/audit/rules.d/vos.rules)")
    problems = []
    missing = [path for path in watches if path.rstrip("/") not in rules.watches]
    if missing:
        problems.append(f"AUDIT §24: auditctl -l has no watch on {', '.join(missing)} — {fix}")
    for group, names in syscalls.items():
        if not rules.syscalls.intersection(names):
            problems.append(f"AUDIT §24: auditctl -l audits no {group} syscall "
                            f"({', '.join(names)}) — {fix}")
    return problems


# ------------------------------------------------------------------------- §25 AppArmor


def apparmor_enabled(aa_enabled: str, parameter: str) -> bool:
    """`aa-enabled` prints "Yes"; /sys/module/apparmor/parameters/enabled holds "Y".

    Example:
        >>> apparmor_enabled("", "Y\\n"), apparmor_enabled("No - disabled at boot.", "N")
        (True, False)
    """
    return aa_enabled.strip().lower().startswith("yes") or parameter.strip().upper() == "Y"


def unconfined_containers(containers: list[dict]) -> list[str]:
    """One line per running container without an AppArmor profile (`docker inspect`).

    Example:
        >>> unconfined_containers([{"Name": "/vos-api-1", "AppArmorProfile": "docker-default"},
        ...     {"Name": "/x", "AppArmorProfile": "unconfined"}])[0][:62]
        "AUDIT §25: container 'x' runs unconfined (AppArmorProfile 'unc"
    """
    problems = []
    for container in containers:
        name = str(container.get("Name", "?")).lstrip("/")
        profile = container.get("AppArmorProfile") or ""
        if profile == "unconfined":
            problems.append(f"AUDIT §25: container '{name}' runs unconfined (AppArmorProfile "
                            f"'unconfined': `--security-opt apparmor=unconfined` or "
                            f"--privileged) — drop that option and recreate it, or "
                            f"`sudo docker rm -f {name}`")
        elif not profile:
            problems.append(f"AUDIT §25: container '{name}' has no AppArmor profile (dockerd "
                            f"started before AppArmor was usable) — `sudo systemctl restart "
                            f"docker && sudo docker restart {name}`, or re-run the deploy "
                            f"(audit step)")
    return problems


# ------------------------------------------------------------- integrity, accounting (§26)

AIDE_FIX = "re-run the deploy (integrity step)"


def aide_violations(config: str | None, database_bytes: int, baseline_unit: str,
                    timer_enabled: str, timer_active: str) -> list[str]:
    """INTEGRITY §26: AIDE configured with SHA-256/512, a baseline database (or one being
    written by vos-aide-baseline.service right now), and its daily check on.

    Example:
        >>> aide_violations("Checksums = sha512\\n", 4096, "inactive", "enabled", "active")
        []
        >>> aide_violations("Checksums = H\\n", 0, "failed", "disabled", "inactive")[1][:64]
        'INTEGRITY §26: no AIDE baseline (/var/lib/aide/aide.db is missin'
    """
    if config is None:
        return [f"INTEGRITY §26: AIDE is not installed (no /etc/aide/aide.conf) — {AIDE_FIX}"]
    problems = []
    checksums = [value.strip() for key, _, value in
                 (line.partition("=") for line in config.splitlines()
                  if not line.lstrip().startswith("#"))
                 if key.strip() == "Checksums"]
    have = checksums[-1] if checksums else "unset"
    if not re.search(r"\bsha(256|512)\b", have):
        problems.append(f"INTEGRITY §26: AIDE's Checksums is {have}, must name sha512 (or "
                        f"sha256) — {AIDE_FIX}")
    if database_bytes <= 0 and baseline_unit not in ("activating", "active"):
        problems.append("INTEGRITY §26: no AIDE baseline (/var/lib/aide/aide.db is missing "
                        f"or empty; vos-aide-baseline.service is {baseline_unit}) — `sudo "
                        "systemctl start vos-aide-baseline` (see `journalctl -u "
                        "vos-aide-baseline` if it failed)")
    if timer_enabled != "enabled" or timer_active != "active":
        problems.append(f"INTEGRITY §26: vos-aide-check.timer is {timer_enabled} and "
                        f"{timer_active}, so nobody compares the files with the baseline — "
                        "`sudo systemctl enable --now vos-aide-check.timer`")
    return problems


def accounting_violations(service_active: str, pacct_bytes: int | None) -> list[str]:
    """INTEGRITY §26: process accounting on (the `acct` service active and its file present).

    Example:
        >>> accounting_violations("active", 128)
        []
        >>> accounting_violations("inactive", None)[0][:60]
        'INTEGRITY §26: process accounting is off (acct.service inact'
    """
    if service_active == "active" and pacct_bytes is not None:
        return []
    where = "no /var/log/account/pacct" if pacct_bytes is None else "its file exists"
    return [f"INTEGRITY §26: process accounting is off (acct.service {service_active}, {where})"
            " — `sudo systemctl enable --now acct`, or re-run the deploy (audit step)"]


# ------------------------------------------------------------------ USB devices (§21)

USBGUARD_WANTED = {"ImplicitPolicyTarget": ("block", "reject"),
                   "InsertedDevicePolicy": ("apply-policy", "block", "reject"),
                   "PresentDevicePolicy": ("apply-policy", "block", "reject")}


def usbguard_violations(conf: str | None, active: str, enabled: str,
                        usb_bus: bool = True) -> list[str]:
    """KERNEL §21: USBGuard enabled, blocking what its rules do not allow (devices not in the
    rules, and anything plugged in later), and running wherever there is a USB bus (without
    one, systemd skips it: nothing can be plugged in).

    Example:
        >>> good = ("ImplicitPolicyTarget=block\\nInsertedDevicePolicy=apply-policy\\n"
        ...         "PresentDevicePolicy=apply-policy\\n")
        >>> usbguard_violations(good, "active", "enabled"), usbguard_violations(
        ...     good, "inactive", "enabled", usb_bus=False)
        ([], [])
        >>> usbguard_violations("ImplicitPolicyTarget=allow\\n", "active", "enabled")[0][:62]
        'KERNEL §21: usbguard ImplicitPolicyTarget is allow, must be bl'
    """
    fix = "re-run the deploy (kernel step)"
    if conf is None:
        return [f"KERNEL §21: USBGuard is not installed (no /etc/usbguard/usbguard-daemon.conf)"
                f" — {fix}"]
    values = {}
    for line in conf.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    problems = [f"KERNEL §21: usbguard {key} is {values.get(key, 'unset')}, must be "
                f"{' or '.join(allowed)} — {fix}"
                for key, allowed in USBGUARD_WANTED.items() if values.get(key) not in allowed]
    if enabled != "enabled":
        problems.append(f"KERNEL §21: usbguard.service is {enabled}, so it will not guard "
                        "after a reboot — `sudo systemctl enable usbguard`")
    if usb_bus and active != "active":
        problems.append(f"KERNEL §21: usbguard is {active} on a host with a USB bus, so any "
                        "USB device is accepted — `sudo systemctl enable --now usbguard`")
    return problems
