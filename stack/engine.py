"""The operator-side Docker engine: reach it, or start one where no init system does.

Images are built on the operator's machine (stack/images.py). On a workstation dockerd is a
service already; on a bare build box without systemd (CI here) :func:`start_dockerd` starts
one bound to loopback, userland proxy off (the same choices the docker role makes on the host).

Example:
    started = start_dockerd()        # None when an engine already answers
    ...
    stop_dockerd(started)
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SOCKET = Path("/var/run/docker.sock")


def engine_answers(timeout: float = 10) -> bool:
    """True when `docker version` reaches a daemon."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def start_dockerd(log_path: Path = Path("/var/tmp/vos-dockerd.log"),
                  timeout: float = 90) -> subprocess.Popen | None:
    """Start dockerd unless one answers; wait (bounded) until it does. None: already running.

    Raises RuntimeError naming the log when it does not come up in `timeout` seconds.
    """
    if engine_answers():
        return None
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed: `apt-get install docker.io` "
                           "(scripts/bootstrap.sh installs it)")
    log = log_path.open("ab")
    process = subprocess.Popen(
        ["dockerd", "--ip=127.0.0.1", "--userland-proxy=false", "--log-level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if SOCKET.exists() and engine_answers(timeout=5):
            return process
        time.sleep(1)
    stop_dockerd(process)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s; its log "
                       f"({log_path}) ends with:\n{tail}")


def stop_dockerd(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """Stop a dockerd that :func:`start_dockerd` started (never one it found running)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def operator_engine() -> Iterator[None]:
    """An engine for the duration of the block: the running one, or one started (and
    stopped again) here.

    Example:
        with operator_engine():
            ensure_app_image("agent-vos:3f2a1c0", "vos-base:trixie")
    """
    started = start_dockerd()
    try:
        yield
    finally:
        stop_dockerd(started)
