"""Small process helpers shared by the staging modules: bounded commands, progress lines.

Example:
    >>> run(["ip", "netns", "list"]).stdout
    ''
"""

from __future__ import annotations

import subprocess
import sys
import time


class StagingError(RuntimeError):
    """A staging step failed; the message says what happened and what to do next."""


def progress(message: str) -> None:
    """Print one progress line naming the step, on stderr so `--json` output stays clean."""
    print(f"==> [staging] {message}", file=sys.stderr, flush=True)


def run(
    command: list[str],
    *,
    timeout: float = 60,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on failure raise StagingError with its stderr.

    Example:
        >>> run(["true"]).returncode
        0
    """
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise StagingError(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise StagingError(f"`{' '.join(command)}` exited {result.returncode}: {detail}")
    return result


def wait_until(predicate, *, timeout: float, interval: float = 1.0) -> bool:
    """Poll `predicate()` until it is truthy or `timeout` seconds pass; return the outcome.

    Example:
        >>> wait_until(lambda: True, timeout=1)
        True
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
