"""Time one staging cycle: image build, boot-to-SSH, deploy, re-deploy, checks, scan, destroy.

Prints the figures and a few ratios; asserts nothing. Uses its own state dir, so it never
touches the developer's `.cache/staging`.

    .venv/bin/python benchmarks/staging_cycle.py                  # cached image, full deploy
    .venv/bin/python benchmarks/staging_cycle.py --deploy deploys/mesh.py   # quick cycle
    .venv/bin/python benchmarks/staging_cycle.py --rebuild-image  # image from scratch too
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from staging.image import ensure_base_image  # noqa: E402
from staging.lab import Lab  # noqa: E402


def timed(label: str, figures: dict[str, float], action):
    started = time.monotonic()
    result = action()
    figures[label] = time.monotonic() - started
    print(f"{label:28} {figures[label]:7.1f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", default="deploys/full.py",
                        help="deploy to time (default deploys/full.py; deploys/mesh.py is quick)")
    parser.add_argument("--rebuild-image", action="store_true",
                        help="build the image in a throwaway cache (measures debootstrap)")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vos-bench-") as scratch:
        if args.rebuild_image:
            os.environ["VOS_IMAGE_CACHE"] = str(Path(scratch) / "images")
        timed("image (build or cache hit)", figures, ensure_base_image)
        lab = Lab(Path(scratch) / "state")
        try:
            timed("up: networks + boot to SSH", figures, lab.up)
            deploy = timed("first deploy", figures, lambda: lab.run_pyinfra(REPO / args.deploy))
            print(f"  deploy exit code {deploy.returncode}")
            timed("idempotent re-deploy", figures,
                  lambda: lab.run_pyinfra(REPO / args.deploy))
            state = lab.state
            checks = timed("checks/test_base.py", figures, lambda: subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "checks/test_base.py",
                 "--hosts=ssh://staging-mesh", f"--ssh-config={state.ssh_config}"],
                cwd=REPO, capture_output=True, text=True, timeout=1800))
            print(f"  checks exit code {checks.returncode}")
            ports = timed("scan (all TCP ports)", figures, lab.scan)
            print(f"  open ports: {ports}")
        finally:
            timed("destroy", figures, lab.destroy)
    total = sum(figures.values())
    print(f"{'total':28} {total:7.1f} s")
    if figures.get("idempotent re-deploy") and figures.get("first deploy"):
        ratio = figures["first deploy"] / figures["idempotent re-deploy"]
        print(f"first deploy / re-deploy ratio: {ratio:.1f}x")
    print(f"boot share of the cycle: {figures['up: networks + boot to SSH'] / total:.0%}")


if __name__ == "__main__":
    main()
