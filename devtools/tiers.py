"""`make test`: every test tier, the staging VM's beside the others.

The staging tier spends most of its time waiting on a VM that QEMU emulates (TCG): boots,
deploys, gate runs. The unit and integration tiers need a CPU, not the VM. So the staging
tier starts first, in the background, its output going to a log; the other tiers run in
the foreground meanwhile (live output); then the staging log is streamed from its start
until that tier ends. One exit status: non-zero when either tier failed.

Both tiers build or use the app image on one Docker engine: it is started here when none
answers (and stopped at the end), so neither tier's own session stops it under the other.
The image build and the base image are serialised by a file lock (stack/images.py), so
the image test and the staging converge never build the same tag twice.

Example:
    python -m devtools.tiers                  # what `make test` runs after ruff
    python -m devtools.tiers --log-dir /tmp/t # the staging log goes there instead
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stack.engine import start_dockerd, stop_dockerd

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest"]
STAGING = ["tests", "-m", "staging", "--durations=25", "-p", "no:cacheprovider"]
OTHERS = ["tests", "-m", "not staging", "--durations=25"]


def say(message: str) -> None:
    print(f"==> [tiers] {message}", flush=True)


def follow(path: Path, process: subprocess.Popen, poll: float = 2.0) -> None:
    """Copy `path` to stdout from its start, then as it grows, until `process` ends."""
    with path.open("rb") as log:
        while True:
            chunk = log.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if process.poll() is not None:
                rest = log.read()
                sys.stdout.buffer.write(rest)
                sys.stdout.flush()
                return
            time.sleep(poll)


def stop(process: subprocess.Popen, grace: float = 900) -> None:
    """Interrupt a tier still running (SIGINT: pytest runs its teardown, which destroys the
    staging VM), then wait for it, bounded; kill it only past the grace period."""
    if process.poll() is not None:
        return
    say("interrupting the staging tier (its teardown destroys the VM)")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def engine() -> subprocess.Popen | None:
    """A Docker engine for both tiers; None when one answered already or none can start
    (the tiers then say what they need themselves)."""
    try:
        return start_dockerd()
    except (RuntimeError, OSError) as error:
        say(f"no Docker engine started here ({error}); the tiers will try their own")
        return None


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.tiers",
        description="Run every test tier: the staging VM's in the background, the unit and "
                    "integration tiers beside it, then stream the staging log.")
    parser.add_argument("--log-dir", type=Path, default=REPO_ROOT / ".cache" / "tiers",
                        help="where the staging tier's log goes (default: .cache/tiers)")
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.log_dir / "staging.log"

    started_engine = engine()
    started = time.monotonic()
    with log_path.open("wb") as log:
        # its own session: a Ctrl-C at the terminal reaches it through stop() only, once
        staging = subprocess.Popen([*PYTEST, *STAGING], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=REPO_ROOT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    say(f"staging tier started in the background (pid {staging.pid}); its log: {log_path}")
    try:
        others = subprocess.call([*PYTEST, *OTHERS], cwd=REPO_ROOT)
        others_took = time.monotonic() - started
        say(f"unit and integration tiers: exit {others} after {minutes(others_took)}; "
            f"the staging tier's log follows (from its start)")
        follow(log_path, staging)
        staging_status = staging.wait()
    finally:
        stop(staging)
        stop_dockerd(started_engine)
    say(f"unit and integration tiers: exit {others} ({minutes(others_took)}); staging tier: "
        f"exit {staging_status} ({minutes(time.monotonic() - started)} in all)")
    return 0 if others == 0 and staging_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
