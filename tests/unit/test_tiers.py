"""devtools.tiers: the staging log is streamed whole, however the writer's pace goes."""

from __future__ import annotations

import subprocess
import sys

from devtools import tiers


def test_follow_copies_the_whole_log_until_the_writer_ends(tmp_path, capfdbinary):
    log = tmp_path / "staging.log"
    log.write_bytes(b"")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        f"with open({str(log)!r}, 'ab', buffering=0) as f:\n"
        "    for i in range(30):\n"
        "        f.write(b'line %d\\n' % i)\n"
        "        time.sleep(0.01)\n")])
    tiers.follow(log, writer, poll=0.05)
    out = capfdbinary.readouterr().out
    assert out == b"".join(b"line %d\n" % i for i in range(30))


def test_stop_interrupts_a_running_tier_and_waits(tmp_path):
    marker = tmp_path / "teardown-ran"
    child = subprocess.Popen([sys.executable, "-c", (
        "import time\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        f"    open({str(marker)!r}, 'w').write('yes')\n")], stdout=subprocess.PIPE,
        start_new_session=True)
    assert child.stdout.readline() == b"ready\n"
    tiers.stop(child, grace=20)
    assert child.returncode is not None
    assert marker.read_text() == "yes"  # SIGINT, so pytest's teardown (VM destroy) runs


def test_help_names_what_it_runs():
    out = subprocess.run([sys.executable, "-m", "devtools.tiers", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "staging" in out and "--log-dir" in out
