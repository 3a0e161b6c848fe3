"""The deploy gate: run every check in checks/ against a host and fail loudly when one breaks.

Used two ways:
* `vos check --target staging|production|HOST` (checks/cli.py) — alone, any time;
* the last step of deploys/full.py (`invariants_hold`, a pyinfra operation that runs the
  checks at execution time from the operator's side, over the mesh; green yields nothing,
  so a converged host shows no change; red fails the deploy with one line per broken
  invariant naming the offender and the fix).

Example:
    result = run_checks(Target(url="ssh://deploy@100.64.0.2", ssh_key="~/.ssh/id_ed25519"),
                        door_port=443, deploy_user="deploy")
    print(result.summary()); sys.exit(0 if result.ok else 1)
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import StringCommand, operation

CHECKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CHECKS_DIR.parent
GATE_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Target:
    """Where the checks connect: a testinfra URL plus optional OpenSSH settings.

    Example:
        Target(url="ssh://staging-mesh", ssh_config=".cache/staging/ssh_config")
    """

    url: str
    ssh_config: str | None = None
    ssh_key: str | None = None
    known_hosts_file: str | None = None


@dataclass
class GateResult:
    """Outcome of one check run."""

    ok: bool
    passed: int
    failures: list[dict] = field(default_factory=list)
    output: str = ""
    skipped: list[dict] = field(default_factory=list)  # {"test": nodeid, "reason": why}

    def summary(self) -> str:
        """Operator-facing text: one line per broken invariant (or the green line), and what
        was skipped and why (a skipped check judged nothing: "all passed" would overstate).

        Example:
            >>> GateResult(ok=True, passed=26).summary()
            'GATE: all 26 invariant checks passed'
            >>> print(GateResult(ok=True, passed=24, skipped=[
            ...     {"test": "checks/test_backups.py::test_a", "reason": "BACKUPS §15: no config"},
            ...     {"test": "checks/test_backups.py::test_b", "reason": "BACKUPS §15: no config"},
            ... ]).summary())
            GATE: 24 invariant checks passed, 2 skipped (not judged)
              skipped 2: BACKUPS §15: no config
        """
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        if self.ok:
            lines = [f"GATE: {self.passed} invariant checks passed{skipped} (not judged)"
                     if skipped else f"GATE: all {self.passed} invariant checks passed"]
        else:
            lines = [f"GATE FAILED: {len(self.failures)} check(s) broken, {self.passed} "
                     f"passed{skipped}"]
        reasons: dict[str, int] = {}
        for skip in self.skipped:
            reasons[skip["reason"]] = reasons.get(skip["reason"], 0) + 1
        lines += [f"  skipped {count}: {reason}" for reason, count in reasons.items()]
        if self.ok:
            return "\n".join(lines)
        for failure in self.failures:
            for line in failure["message"].splitlines():
                line = line.removeprefix("AssertionError: ").removeprefix("Failed: ")
                if line.strip() and not line.lstrip().startswith(("assert ", "+")):
                    lines.append(f"  - {line.strip()}")
            lines.append(f"    ({failure['test']})")
        if not self.failures:
            lines.append("  pytest itself failed; its output:")
            lines.append(self.output[-3000:])
        return "\n".join(lines)


def ssh_config_text(target: Target, control_dir: Path) -> str:
    """An ssh_config for the checks: connection sharing (one SSH handshake for all checks,
    not one per command) plus the target's key and pinned known_hosts. testinfra's pytest
    plugin drops `--ssh-extra-args`, so everything goes through `--ssh-config`.

    Example:
        >>> "StrictHostKeyChecking yes" in ssh_config_text(Target("ssh://h", known_hosts_file="/k"),
        ...                                                Path("/tmp"))
        True
    """
    lines = ["Host *", f"    ControlPath {control_dir}/cm-%C", "    ControlMaster auto",
             "    ControlPersist 30", "    BatchMode yes", "    ConnectTimeout 15"]
    if target.ssh_key:
        lines += [f"    IdentityFile {target.ssh_key}", "    IdentitiesOnly yes"]
    if target.known_hosts_file:
        lines += [f"    UserKnownHostsFile {target.known_hosts_file}",
                  "    StrictHostKeyChecking yes"]
    if target.ssh_config:
        lines.append(f"    Include {Path(target.ssh_config).resolve()}")
    return "\n".join(lines) + "\n"


def pytest_command(target: Target, door_port: int, deploy_user: str, report: Path,
                   ssh_config: Path, mesh_ip: str | None = None,
                   mesh_interface: str = "tailscale0",
                   families: list[str] | None = None) -> list[str]:
    """The pytest argv that runs checks/ (or only the named families) against `target`.

    Example:
        >>> "--door-port=443" in pytest_command(Target("ssh://h"), 443, "deploy", Path("r"),
        ...                                     Path("c"))
        True
    """
    command = [
        sys.executable, "-m", "pytest", *family_paths(families), "-p", "checks.plugin",
        "-p", "no:cacheprovider", "-o", "addopts=", "-q", "--no-header", "--tb=line",
        f"--hosts={target.url}", f"--door-port={door_port}", f"--deploy-user={deploy_user}",
        f"--mesh-interface={mesh_interface}", f"--vos-report={report}",
        f"--ssh-config={ssh_config}",
    ]
    if mesh_ip:
        command.append(f"--vos-mesh-ip={mesh_ip}")
    return command


def family_paths(families: list[str] | None) -> list[str]:
    """checks/ itself, or the modules of the named invariant families.

    Example:
        >>> family_paths(["ssh"])[0].endswith("checks/test_ssh.py")
        True
    """
    if not families:
        return [str(CHECKS_DIR)]
    paths = [CHECKS_DIR / f"test_{family}.py" for family in families]
    missing = [path.stem.removeprefix("test_") for path in paths if not path.exists()]
    if missing:
        known = sorted(p.stem.removeprefix("test_") for p in CHECKS_DIR.glob("test_*.py"))
        raise ValueError(f"no check family {missing}; known: {', '.join(known)}")
    return [str(path) for path in paths]


def _close_shared_connection(ssh_config: Path, url: str) -> None:
    """Stop the ControlMaster the checks left behind (no stray ssh processes)."""
    destination = url.removeprefix("ssh://")
    subprocess.run(["ssh", "-F", str(ssh_config), "-O", "exit", destination],
                   capture_output=True, timeout=15, check=False)


def run_checks(target: Target, door_port: int, deploy_user: str, mesh_ip: str | None = None,
               mesh_interface: str = "tailscale0", families: list[str] | None = None,
               timeout: int = GATE_TIMEOUT_SECONDS) -> GateResult:
    """Run the checks in a child pytest (its own process: testinfra and pyinfra both own
    their SSH state) and collect the failures from the plugin's JSON report.

    Example:
        run_checks(Target("ssh://staging-mesh", ssh_config="…/ssh_config"), 443, "deploy")
    """
    with tempfile.TemporaryDirectory(prefix="vos-gate-") as tmp:
        report = Path(tmp) / "report.json"
        ssh_config = Path(tmp) / "ssh_config"
        ssh_config.write_text(ssh_config_text(target, Path(tmp)))
        command = pytest_command(target, door_port, deploy_user, report, ssh_config, mesh_ip,
                                 mesh_interface, families)
        try:
            done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return GateResult(False, 0, [{"test": "checks", "message":
                              f"GATE: the checks did not finish within {timeout} s — is the "
                              f"host reachable at {target.url}?"}])
        finally:
            _close_shared_connection(ssh_config, target.url)
        output = done.stdout + done.stderr
        if not report.exists():
            return GateResult(False, 0, [], output)
        data = json.loads(report.read_text())
    failures = data["failures"]
    ok = done.returncode == 0 and not failures
    return GateResult(ok, data["passed"], failures, output, data.get("skipped", []))


@operation(is_idempotent=True)
def invariants_hold(mesh_ip: str, door_port: int, deploy_user: str,
                    ssh_key: str | None = None, known_hosts_file: str | None = None,
                    mesh_interface: str = "tailscale0"):
    """pyinfra operation: the deploy gate. Runs every check over the mesh at execution time.

    Green: yields nothing (not a change). Red: logs each broken invariant and yields one
    command that prints them on the host's stderr and exits 1, so pyinfra fails the host and
    the deploy exits non-zero. Under `--dry` nothing runs.

    Example:
        invariants_hold(name="Gate", mesh_ip="100.64.0.2", door_port=443, deploy_user="deploy")
    """
    if not state.is_executing:
        host.noop("the invariant checks run at execution time")
        return
    target = Target(url=f"ssh://{deploy_user}@{mesh_ip}", ssh_key=ssh_key,
                    known_hosts_file=known_hosts_file)
    logger.info(f"{host.print_prefix}GATE: running checks/ against {target.url}")
    result = run_checks(target, door_port, deploy_user, mesh_ip, mesh_interface)
    summary = result.summary()
    if result.ok:
        # said at info level: pyinfra shows a noop's text only with -v, and the operator
        # (and the staging tier) should read the green verdict at the end of every deploy
        logger.info(f"{host.print_prefix}{summary}")
        host.noop(summary)
        return
    for line in summary.splitlines():
        logger.error(f"{host.print_prefix}{line}")
    yield StringCommand("echo", shlex.quote(summary), ">&2;", "exit", "1")
