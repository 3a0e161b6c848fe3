"""Time the hardening cycle on a staging VM: deploy, idempotent re-run, the gate, one family.

Prints figures and ratios; asserts nothing. Uses an existing lab (`vos staging up`):

    VOS_STAGING_DIR=/tmp/lab .venv/bin/python benchmarks/hardening_cycle.py [--skip-deploy]

The first deploy on a pristine VM is the converge; run again for the idempotent figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from checks.gate import Target, run_checks  # noqa: E402
from staging.state import default_state_dir, load_state  # noqa: E402


def timed(label: str, action) -> float:
    print(f"==> [bench] {label} …", flush=True)
    started = time.monotonic()
    outcome = action()
    elapsed = time.monotonic() - started
    print(f"    {label}: {elapsed:.1f} s ({outcome})", flush=True)
    return elapsed


def deploy() -> str:
    done = subprocess.run([str(REPO / ".venv/bin/pyinfra"), "-y", "inventory/staging.py",
                           "deploys/full.py"], cwd=REPO, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=3600, check=False)
    total = [line for line in done.stdout.splitlines() if "Grand total" in line]
    return f"exit {done.returncode}; {total[-1].split()[2:] if total else 'no results'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-deploy", action="store_true", help="only time the gate")
    args = parser.parse_args()
    state = load_state(default_state_dir())
    if state is None:
        sys.exit(f"no staging VM in {default_state_dir()}: run `vos staging up` first")
    target = Target(url="ssh://staging-mesh", ssh_config=state.ssh_config)
    figures = {}
    if not args.skip_deploy:
        figures["deploy"] = timed("deploys/full.py", deploy)
        figures["re-run"] = timed("deploys/full.py again (idempotent)", deploy)
    figures["gate"] = timed("gate, every family", lambda: run_checks(
        target, state.door_port, state.deploy_user, state.layout.vm_mesh).summary()[:60])
    figures["one family"] = timed("gate, family ssh", lambda: run_checks(
        target, state.door_port, state.deploy_user, state.layout.vm_mesh,
        families=["ssh"]).summary()[:60])
    print("\nfigures (s):", {key: round(value, 1) for key, value in figures.items()})
    if "deploy" in figures:
        print(f"re-run / deploy: {figures['re-run'] / figures['deploy']:.2f}")
        print(f"gate / re-run:   {figures['gate'] / figures['re-run']:.2f}")
    print(f"one family / gate: {figures['one family'] / figures['gate']:.2f}")


if __name__ == "__main__":
    main()
