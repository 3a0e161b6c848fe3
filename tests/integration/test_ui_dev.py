"""`vos dev` as a newcomer runs it: one command, embedded Postgres, demo data, a URL that signs
in; Ctrl-C stops everything. Run twice: the second run keeps the data and revokes the first
run's token. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.db.embedded import EmbeddedPostgres, free_port

VOS = Path(sys.executable).with_name("vos")
START_TIMEOUT = 120


class DevProcess:
    """`vos dev` in a subprocess; a thread collects its output lines."""

    def __init__(self, pg_dir: Path, port: int):
        env = {**os.environ, "VOS_EMBEDDED_PG_DIR": str(pg_dir)}
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen([str(VOS), "dev", "--port", str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def url(self, pattern: str = r"Command Center: (\S+)") -> str:
        """The printed Command Center URL, or another printed value (bounded wait)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError("vos dev did not print the Command Center URL:\n"
                             + "\n".join(self.lines))

    def stop(self) -> str:
        """Ctrl-C, as the operator would; returns the whole output."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        return "\n".join(self.lines)


def postgres_running_in(pg_dir: Path) -> bool:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return str(pg_dir) in listing


@pytest.fixture
def pg_dir():
    base = Path(tempfile.mkdtemp(prefix="vos-dev-test-"))
    base.chmod(0o711)  # the embedded server runs as `postgres` when we are root
    yield base / "pg"
    # if vos dev died without its Ctrl-C path, its Postgres must not outlive the test
    EmbeddedPostgres(base / "pg").destroy()
    shutil.rmtree(base, ignore_errors=True)


def test_vos_dev_serves_the_demo_and_stops_cleanly_twice(pg_dir):
    port = free_port()
    dev = DevProcess(pg_dir, port)
    try:
        url = dev.url()
        # no sign-in link (a link must never sign a browser in): the URL, the token apart
        assert url == f"http://127.0.0.1:{port}/ui/login"
        token = dev.url(r"Operator token \(paste it into the sign-in form\): (vost_\S+)")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            board = c.get("/ui/board")
            assert board.status_code == 200
            counts = dict(re.findall(r'data-testid="count-(\w+)">(\d+)<', board.text))
            # the dozen demo tasks, plus two delegation trees made through the fakes: the
            # Orchestrator's worked task delegates to its three reports, and the demo tree
            # (all children but one approved) leaves its parent Waiting in the Active column
            assert counts == {"Draft": "3", "Active": "5", "Review": "6", "Approved": "5"}
            assert board.text.count('data-testid="badge-waiting"') == 2
            org = c.get("/ui/org").text
            for agent in ("Orchestrator", "Marketing Lead", "Creative", "CTO"):
                assert f'data-agent="{agent}"' in org
            costs = c.get("/ui/costs").text
            calls = re.search(r'data-testid="calls-today">(\d+)<', costs)
            # 3 worked tasks (one is the first tree's parent: its delegation), 3 children
            # reporting, then the demo tree: its parent's delegation and 3 children
            assert calls and int(calls[1]) == 3 + 3 + 1 + 3, costs[:500]
    finally:
        output = dev.stop()
    assert dev.proc.returncode == 0, output
    assert "stopping the embedded Postgres" in output
    assert not postgres_running_in(pg_dir), "vos dev left its Postgres running"

    dev = DevProcess(pg_dir, port)
    try:
        dev.url()
        token2 = dev.url(r"Operator token \(paste it into the sign-in form\): (vost_\S+)")
        assert any("kept as it is" in line for line in dev.lines)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            old = c.get("/ui/board/fragment", headers={"Authorization": f"Bearer {token}"})
            new = c.get("/ui/board/fragment",
                        headers={"Authorization": f"Bearer {token2}"})
        assert old.status_code == 401, "the previous run's token should be revoked"
        assert new.status_code == 200
    finally:
        dev.stop()
    assert not postgres_running_in(pg_dir)


def test_vos_dev_refuses_a_non_loopback_address():
    result = subprocess.run([str(VOS), "dev", "--host", "0.0.0.0"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "loopback only" in result.stderr and "mesh" in result.stderr
