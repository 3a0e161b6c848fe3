"""The app image, built for real on the local `debootstrap | docker import` base (no pulls,
no network inside the build) when this revision of app/ and images/ has none yet, then
shipped the registry-less way: save → remove → load.

Cost: ~4 min on this shared 2-core machine (wheelhouse + build), once per session.
"""

from __future__ import annotations

import subprocess

import pytest

from stack.engine import start_dockerd, stop_dockerd
from stack.images import (
    DEFAULT_REPOSITORY,
    ensure_app_image,
    ensure_local_base,
    image_exists,
    load_image,
    save_image,
    source_revision,
)

pytestmark = pytest.mark.integration

RUN_HARDENED = ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]


@pytest.fixture(scope="module")
def app_image():
    try:
        started = start_dockerd()
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        # The deploy's own image (tagged by the app's revision, built when missing) and kept:
        # the staging tier's converge then ships it without building it a second time.
        yield ensure_app_image(f"{DEFAULT_REPOSITORY}:{source_revision()}",
                               base_image=ensure_local_base())
    finally:
        stop_dockerd(started)


def run_in(image: str, code: str) -> str:
    """Run Python `code` in the image as the stack runs it (hardened, no network). The image
    has no shell: its interpreter is the only program besides the entry points."""
    result = subprocess.run([*RUN_HARDENED, image, "python3", "-c", code], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_runs_non_root_on_a_read_only_root(app_image):
    out = run_in(app_image, "import os\nprint(os.getuid(), os.getgid())\n"
                            "try:\n    open('/opt/x', 'w')\n    print('WRITABLE')\n"
                            "except OSError:\n    pass\n")
    assert out.split()[:2] == ["10001", "10001"]
    assert "WRITABLE" not in out


def test_entry_points_start_and_write_no_bytecode(app_image):
    out = run_in(app_image, """
import os, subprocess
for argv in (["api", "serve"], ["door", "serve"], ["agents", "work"], ["agents", "apply"],
             ["db", "migrate"], ["docs", "add"], ["operator", "create"]):
    subprocess.run(["vos-app", *argv, "--help"], check=True, capture_output=True)
print("OK", "PYTHONDONTWRITEBYTECODE=" + os.environ["PYTHONDONTWRITEBYTECODE"])
""")
    assert "OK" in out and "PYTHONDONTWRITEBYTECODE=1" in out


def test_no_shell_no_build_tools_no_pip(app_image):
    """FROM scratch plus the interpreter and the venv: nothing for an intruder to run."""
    out = run_in(app_image, """
import importlib.util, os
for tool in ("sh", "bash", "dash", "busybox", "gcc", "cc", "make", "apt-get", "dpkg", "curl",
             "wget", "pip", "pip3", "su", "mount"):
    for folder in ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/opt/vos/bin"):
        if os.path.exists(os.path.join(folder, tool)):
            print("FOUND", folder, tool)
if importlib.util.find_spec("pip"):
    print("FOUND pip module")
""")
    assert out.strip() == "", f"in the final image: {out}"
    shell = subprocess.run([*RUN_HARDENED, app_image, "sh", "-c", "echo shell"],
                           capture_output=True, text=True, timeout=120)
    assert shell.returncode != 0 and "shell" not in shell.stdout


def test_the_image_ships_the_app_alone(app_image):
    """The toolkit (pyinfra, testinfra, gnupg, the docker SDK, staging, roles, backups,
    checks, stack, devtools, the `vos` CLI) is not in the image; the app and its SQL are."""
    out = run_in(app_image, """
import importlib.util
absent = ["pyinfra", "testinfra", "gnupg", "docker", "paramiko", "staging", "roles", "backups",
          "checks", "stack", "devtools", "cli", "huggingface_hub"]
print("PRESENT", [name for name in absent if importlib.util.find_spec(name)])
import app.db, os
print("SQL", len([n for n in os.listdir(os.path.dirname(app.db.__file__) + "/migrations")
                  if n.endswith(".sql")]))
""")
    assert "PRESENT []" in out, out
    assert int(out.split("SQL", 1)[1].split()[0]) > 10, out
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", app_image],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"app image {app_image}: {int(size) / 1e6:.0f} MB")


@pytest.mark.parametrize("name", ["agent-vos.tar", "agent-vos.tar.zst"])
def test_save_remove_load_round_trip(app_image, tmp_path, name):
    # A copy's tag, not the revision's own: the staging converge may be shipping that one
    # from this engine right now (the tiers run side by side)
    copy = f"{DEFAULT_REPOSITORY}:round-trip-{name.replace('.', '-')}"
    subprocess.run(["docker", "tag", app_image, copy], check=True, capture_output=True)
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", copy],
                              capture_output=True, text=True, check=True).stdout.strip()
    archive = save_image(copy, tmp_path / name)
    if name.endswith(".zst"):  # what the deploy ships: compressed, and docker load takes it
        assert archive.read_bytes()[:4] == bytes.fromhex("28b52ffd")  # zstd frame magic
    subprocess.run(["docker", "rmi", copy], check=True, capture_output=True, timeout=120)
    assert not image_exists(copy)
    try:
        assert load_image(archive) == copy
        loaded = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", copy],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert loaded == image_id
    finally:
        subprocess.run(["docker", "rmi", copy], capture_output=True, timeout=120)
