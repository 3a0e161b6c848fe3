"""Lynis, the third-party judge of the host's hardening, run inside the staging VM.

Debian 13's own package (pinned by version and SHA-256, fetched from the Debian mirror on the
machine running the tests) is unpacked into a root-only scratch directory on the VM and run
from there: nothing is installed on the host it judges, so the audit sees the converged host
and not itself. The figures come from Lynis's own report (`hardening_index`, `warning[]`,
`suggestion[]`) and its log (which test gave or withheld how many hardening points, and how
long each test took).

Lynis runs with its own default profile (every test: the index is the one anybody gets
with `lynis audit system` on this host). Under TCG that took ~30-40 min, half of it forking
coreutils' `date` for each of ~9,000 log lines and test timestamps (~100-150 ms per exec of a
dynamically linked binary there). A static `date` for exactly the formats Lynis asks for
(`lynis_date.c`, compiled here once, first in Lynis's PATH on the VM; every other call goes
to /usr/bin/date) takes most of that away without touching a line of Lynis. The staging tier
starts the audit in the background at the lowest priority right after the converge (`start`)
and reads the figures back (`collect`) before the first test that changes the host for good;
the read-only tests run meanwhile.

Example:
    vos staging lynis              # index, warnings, where the points went (~30-40 min)
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from staging.proc import StagingError, progress, wait_until
from staging.state import REPO_ROOT

# Debian 13 (trixie) ships 3.1.4; the pin makes a CI run judge with the same rules every time.
PACKAGE = "pool/main/l/lynis/lynis_3.1.4-1_all.deb"
PACKAGE_SHA256 = "0cc9791cdabefe427c6eaf5643d10714aa84fb27b6105ec7773391e6f513fb97"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The index the staging tier holds the converged VM to (README "Hardening as Lynis sees it").
INDEX_FLOOR = 90
# Warnings that stay, each with the reason an operator reads in the README.
EXPLAINED_WARNINGS: dict[str, str] = {
    "PKGS-7392": "vulnerable packages: the staging VM skips `apt upgrade` (apt_upgrade false, "
                 "minutes under TCG); production upgrades at every deploy and "
                 "unattended-upgrades installs security updates daily",
    "TIME-3185": "systemd-timesyncd never synchronised: the staging machine has no route to "
                 "an NTP server (no internet but the Debian mirror); a VPS syncs, and the base "
                 "role keeps timesyncd running and enabled",
}
# Root-only scratch on the VM; /var/tmp because /tmp may be noexec on a hardened host.
REMOTE_DIR = "/var/tmp/vos-lynis"
# The static `date` Lynis's timestamps get (see the module's docstring).
DATE_HELPER_SOURCE = Path(__file__).with_name("lynis_date.c")
# The staging tier's profile, read after Lynis's default.prf: it skips slow tests that award
# no points (the index is the same; see the file).
PROFILE = Path(__file__).with_name("lynis.prf")

_TEST_START = re.compile(r"^(\S+ \S+) Performing test ID (\S+) \((.*)\)$")
_POINTS = re.compile(r"Hardening: assigned (?:maximum|partial) number of hardening points"
                     r"(?: for this item)? \((\d+)(?: of (\d+))?\)")
_STAMP = "%Y-%m-%d %H:%M:%S"


@dataclass
class LynisTest:
    """One test Lynis performed: the points it gave out of the points it could give."""

    test_id: str
    description: str
    points: int = 0
    possible: int = 0
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.possible - self.points


@dataclass
class LynisAudit:
    """What one Lynis run found.

    Example:
        >>> audit = parse_report("hardening_index=91\\nwarning[]=PKGS-7392|Found vulnerable "
        ...                      "packages|-|-|\\nsuggestion[]=LOGG-2154|Enable logging to "
        ...                      "an external logging host|-|-|\\n")
        >>> audit.index, audit.warnings, audit.suggestions
        (91, [('PKGS-7392', 'Found vulnerable packages')], [('LOGG-2154', 'Enable logging to \
an external logging host')])
    """

    index: int
    warnings: list[tuple[str, str]] = field(default_factory=list)
    suggestions: list[tuple[str, str]] = field(default_factory=list)
    tests: dict[str, LynisTest] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def points(self) -> tuple[int, int]:
        """(points, possible) summed over the log: index = points * 100 // possible."""
        return (sum(t.points for t in self.tests.values()),
                sum(t.possible for t in self.tests.values()))

    def losses(self) -> list[LynisTest]:
        """Tests that withheld points, the largest loss first."""
        return sorted((t for t in self.tests.values() if t.lost),
                      key=lambda t: (-t.lost, t.test_id))

    def summary(self, limit: int = 40) -> str:
        """The figures an operator reads: index, warnings, the biggest point losses."""
        points, possible = self.points
        lines = [f"Lynis hardening index: {self.index} ({points}/{possible} points, "
                 f"{len(self.tests)} tests, {self.seconds / 60:.1f} min)"]
        lines += [f"  warning    {test}: {text}" for test, text in self.warnings]
        for test in self.losses()[:limit]:
            lines.append(f"  -{test.lost:<3} {test.test_id:<10} {test.points}/{test.possible} "
                         f"{test.description}")
        lines += [f"  suggestion {test}: {text}" for test, text in self.suggestions]
        return "\n".join(lines)


def parse_report(text: str) -> LynisAudit:
    """The index, warnings and suggestions from Lynis's report file (key=value lines)."""
    index = None
    warnings: list[tuple[str, str]] = []
    suggestions: list[tuple[str, str]] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index":
            index = int(value)
        elif key in ("warning[]", "suggestion[]"):
            test, _, rest = value.partition("|")
            (warnings if key == "warning[]" else suggestions).append(
                (test, rest.split("|", 1)[0]))
    if index is None:
        raise StagingError("the Lynis report has no hardening_index: the audit did not finish")
    return LynisAudit(index=index, warnings=warnings, suggestions=suggestions)


def parse_log(text: str) -> dict[str, LynisTest]:
    """Per test: the points given and possible, and its duration (to the next test's start).

    Example:
        >>> tests = parse_log(
        ...     "2026-12-02 05:44:56 Performing test ID DEB-0280 (libpam-tmpdir)\\n"
        ...     "2026-12-02 05:44:56 Hardening: assigned partial number of hardening points "
        ...     "(0 of 2). Currently having 0 points (out of 2)\\n"
        ...     "2026-12-02 05:44:59 Performing test ID DEB-0810 (apt-listbugs)\\n"
        ...     "2026-12-02 05:44:59 Hardening: assigned maximum number of hardening points "
        ...     "for this item (2). Currently having 2 points (out of 4)\\n")
        >>> [(t.test_id, t.points, t.possible, t.seconds) for t in tests.values()]
        [('DEB-0280', 0, 2, 3.0), ('DEB-0810', 2, 2, 0.0)]
    """
    tests: dict[str, LynisTest] = {}
    current: LynisTest | None = None
    started = last = None
    for line in text.splitlines():
        start = _TEST_START.match(line)
        stamp = _stamp(line)
        if stamp:
            last = stamp
        if start:
            if current is not None and started is not None and stamp is not None:
                current.seconds += (stamp - started).total_seconds()
            current = tests.setdefault(start.group(2), LynisTest(start.group(2),
                                                                 start.group(3)))
            started = stamp
            continue
        points = _POINTS.search(line)
        if points and current is not None:
            given = int(points.group(1))
            current.points += given
            current.possible += int(points.group(2) or given)
    if current is not None and started is not None and last is not None:
        current.seconds += (last - started).total_seconds()
    return tests


def _stamp(line: str) -> datetime | None:
    try:
        return datetime.strptime(line[:19], _STAMP)
    except ValueError:
        return None


def package(cache_dir: Path | None = None, mirror: str | None = None) -> Path:
    """The pinned Lynis .deb, downloaded once into ``.cache/lynis`` and checked by SHA-256.

    The mirror is ``$VOS_DEBIAN_MIRROR`` or deb.debian.org (the same one apt uses here)."""
    cache_dir = cache_dir or REPO_ROOT / ".cache" / "lynis"
    target = cache_dir / Path(PACKAGE).name
    if target.exists() and _sha256(target) == PACKAGE_SHA256:
        return target
    mirror = (mirror or os.environ.get("VOS_DEBIAN_MIRROR") or DEFAULT_MIRROR).rstrip("/")
    url = f"{mirror}/{PACKAGE}"
    progress(f"lynis: downloading {url}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            partial.write_bytes(response.read())
    except OSError as error:
        raise StagingError(f"could not download Lynis from {url}: {error}; set "
                           "VOS_DEBIAN_MIRROR to a Debian mirror this machine reaches") from error
    digest = _sha256(partial)
    if digest != PACKAGE_SHA256:
        partial.unlink()
        raise StagingError(f"{url} has SHA-256 {digest}, expected {PACKAGE_SHA256}: "
                           "refusing to run it as root on the VM")
    partial.rename(target)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def date_helper(cache_dir: Path | None = None) -> Path | None:
    """The static `date` for Lynis (`lynis_date.c`), compiled once into ``.cache/lynis`` and
    kept under its source's hash; None (and a word why) where this machine cannot link a
    static binary: Lynis then forks coreutils' date, the same audit ~10-15 min slower.

    Example:
        >>> helper = date_helper()
        >>> helper is None or subprocess.run([helper, "+%s"], capture_output=True,
        ...                                  text=True).stdout.strip().isdigit()
        True
    """
    cache_dir = cache_dir or REPO_ROOT / ".cache" / "lynis"
    source = DATE_HELPER_SOURCE.read_bytes()
    target = cache_dir / f"lynis-date-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        progress("lynis: no C compiler here; Lynis forks coreutils' date (~10-15 min slower)")
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    # its own partial name: two runs compiling at once must not hand each other half a file
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    built = subprocess.run([compiler, "-static", "-O2", "-o", str(partial),
                            str(DATE_HELPER_SOURCE)], capture_output=True, text=True,
                           timeout=120)
    answer = subprocess.run([str(partial), "+%s"], capture_output=True, text=True,
                            timeout=30) if built.returncode == 0 else None
    if answer is None or abs(int(answer.stdout.strip() or 0) - time.time()) > 60:
        partial.unlink(missing_ok=True)
        progress("lynis: could not build a static date helper "
                 f"({(built.stderr or 'wrong answer').strip()[-200:]}); Lynis forks "
                 "coreutils' date (~10-15 min slower)")
        return None
    partial.rename(target)
    return target


UNIT = "vos-lynis-audit"


def remote_script(profile: bool = True, fast_date: bool = True) -> str:
    """The shell the VM runs as root: unpack, lay Lynis out standalone, audit (with
    `PROFILE` added to Lynis's default profile, or with the default profile alone; with
    the static `date` uploaded as ``date`` first in its PATH, or coreutils' alone).

    Lynis refuses include files not owned by root or open to others; the layout is the one
    its own tarball has (lynis, include/, db/, plugins/ and default.prf in one directory).

    Example:
        >>> "--profile /var/tmp/vos-lynis/vos.prf" in remote_script()
        True
        >>> "PATH=/var/tmp/vos-lynis/run/bin:" in remote_script(fast_date=False)
        False
    """
    d = REMOTE_DIR
    extra = f" --profile {d}/vos.prf" if profile else ""
    helper = ["install -D -m 0700 date run/bin/date"] if fast_date else []
    path = f'PATH={d}/run/bin:"$PATH" ' if fast_date else ""
    return " && ".join([
        f"cd {d}",
        "dpkg-deb -x lynis.deb pkg",
        "mkdir -m 0700 run",
        *helper,
        "cp pkg/usr/sbin/lynis run/",
        "cp -r pkg/usr/share/lynis/include pkg/usr/share/lynis/db run/",
        "cp -r pkg/etc/lynis/plugins run/plugins",
        "cp pkg/etc/lynis/default.prf run/",
        "chown -R root:root run && chmod -R go-rwx run",
        f"cd run && {path}./lynis audit system --no-colors --quiet{extra} "
        f"--plugin-dir {d}/run/plugins "
        f"--logfile {d}/lynis.log --report-file {d}/report.dat > {d}/stdout.txt 2>&1",
    ])


def start(ssh_command: list[str], profile: bool = True) -> float:
    """Start Lynis on the host `ssh_command` reaches (a deploy user with sudo), in the
    background: a transient systemd unit at the lowest CPU and I/O priority, so whatever
    else runs on the host meanwhile goes first. Returns the start time (monotonic).

    The audit takes ~15-25 min under TCG (the Debian plugin walks every binary, and every
    log line still forks a subshell); `collect()` waits for it."""
    deb = package()
    ssh = list(ssh_command)
    which = f"default profile + {PROFILE.name}" if profile else "default profile alone"
    progress(f"lynis: starting Lynis {PACKAGE.rsplit('_', 2)[1]} ({which}) on the VM, "
             f"in the background as {UNIT}")
    _ssh(ssh, f"sudo systemctl stop {UNIT} 2>/dev/null; sudo systemctl reset-failed {UNIT} "
              f"2>/dev/null; sudo rm -rf {REMOTE_DIR} && sudo install -d -m 0700 {REMOTE_DIR} "
              f"&& sudo tee {REMOTE_DIR}/lynis.deb >/dev/null", deb.read_bytes())
    _ssh(ssh, f"sudo tee {REMOTE_DIR}/vos.prf >/dev/null", PROFILE.read_bytes())
    helper = date_helper()
    if helper is not None:
        _ssh(ssh, f"sudo tee {REMOTE_DIR}/date >/dev/null", helper.read_bytes())
    script = remote_script(profile, fast_date=helper is not None)
    _ssh(ssh, f"sudo systemd-run --unit {UNIT} --property Nice=19 --property "
              f"IOSchedulingClass=idle /bin/sh -c {shlex.quote(script)}")
    return time.monotonic()


def collect(ssh_command: list[str], started: float, timeout: float = 3600) -> LynisAudit:
    """Wait (bounded) for the audit `start()` began, then read its report and log back and
    remove every trace of it from the host."""
    ssh = list(ssh_command)

    def finished() -> bool:
        state = _ssh(ssh, f"systemctl is-active {UNIT}; true").decode().strip()
        return state not in ("active", "activating")

    if not wait_until(finished, timeout=max(0.0, started + timeout - time.monotonic()),
                      interval=15):
        _ssh(ssh, f"sudo systemctl stop {UNIT}; true")
        raise StagingError(f"Lynis did not finish within {timeout / 60:.0f} min; its log "
                           f"so far was in {REMOTE_DIR}/lynis.log on the VM")
    elapsed = time.monotonic() - started
    report = _ssh(ssh, f"sudo cat {REMOTE_DIR}/report.dat 2>/dev/null; true").decode(
        errors="replace")
    log = _ssh(ssh, f"sudo cat {REMOTE_DIR}/lynis.log 2>/dev/null; true").decode(
        errors="replace")
    output = _ssh(ssh, f"sudo tail -c 2000 {REMOTE_DIR}/stdout.txt 2>/dev/null; true").decode(
        errors="replace")
    _ssh(ssh, f"sudo rm -rf {REMOTE_DIR}; sudo systemctl reset-failed {UNIT} 2>/dev/null; true")
    try:
        result = parse_report(report)
    except StagingError as error:
        raise StagingError(f"{error} (unit {UNIT}); Lynis said:\n{output}") from None
    result.tests = parse_log(log)
    result.seconds = elapsed
    progress(f"lynis: hardening index {result.index} after {elapsed / 60:.1f} min")
    return result


def audit(ssh_command: list[str], profile: bool = True, timeout: float = 3600) -> LynisAudit:
    """Run Lynis on the host and wait for its figures (start, then collect)."""
    return collect(ssh_command, start(ssh_command, profile), timeout=timeout)


def awarding_tests(deb: Path) -> set[str]:
    """The tests whose code in the package `deb` can award hardening points (an `AddHP`
    between a test's `Register` and the next one's).

    Example:
        >>> "SSH-7408" in awarding_tests(package())   # doctest: +SKIP
        True
    """
    found: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["dpkg-deb", "-x", str(deb), scratch], check=True, timeout=60)
        root = Path(scratch)
        sources = [*(root / "usr/share/lynis/include").iterdir(),
                   *(root / "etc/lynis/plugins").iterdir()]
        for source in sources:
            # the id is quoted in some files (`Register --test-no "PKGS-7370"`)
            parts = re.split(r'Register --test-no\s+"?([A-Z0-9-]+)"?',
                             source.read_text(errors="replace"))
            found |= {parts[i] for i in range(1, len(parts), 2) if "AddHP" in parts[i + 1]}
    return found


def skipped_tests(profile: Path = PROFILE) -> list[str]:
    """The `skip-test=` entries of a profile.

    Example:
        >>> "NETW-2600" in skipped_tests()
        True
    """
    return re.findall(r"^skip-test=(\S+)", profile.read_text(), re.MULTILINE)


def _ssh(ssh: list[str], command: str, stdin: bytes | None = None,
         timeout: float = 300) -> bytes:
    try:
        result = subprocess.run([*ssh, command], input=stdin, capture_output=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StagingError(f"`{command[:80]}` on the VM did not finish within "
                           f"{timeout:.0f} s") from None
    if result.returncode != 0:
        raise StagingError(f"`{command[:80]}` on the VM exited {result.returncode}: "
                           f"{result.stderr.decode(errors='replace').strip()[-1500:]}")
    return result.stdout
