"""The app image, built for real on the local `debootstrap | docker import` base (no pulls,
no network inside the build), then shipped the registry-less way: save → remove → load.

Cost: ~4 min on this shared 2-core machine (wheelhouse + build), once per session.
"""

from __future__ import annotations

import subprocess

import pytest

from stack.engine import start_dockerd, stop_dockerd
from stack.images import build_image as build
from stack.images import ensure_local_base, image_exists, load_image, save_image

pytestmark = pytest.mark.integration

TAG = "itest"
RUN_HARDENED = ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]


@pytest.fixture(scope="module")
def app_image():
    try:
        started = start_dockerd()
    except RuntimeError as error:
        pytest.fail(str(error))
    reference = None
    try:
        reference = build(base_image=ensure_local_base(), tag=TAG)
        yield reference
    finally:
        if reference:
            subprocess.run(["docker", "rmi", "-f", reference], capture_output=True, timeout=120)
        stop_dockerd(started)


def run_in(image: str, script: str) -> str:
    result = subprocess.run([*RUN_HARDENED, image, "sh", "-c", script], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_runs_non_root_on_a_read_only_root(app_image):
    out = run_in(app_image, "id -u; id -g; touch /opt/x 2>/dev/null && echo WRITABLE || true")
    assert out.split()[:2] == ["10001", "10001"]
    assert "WRITABLE" not in out


def test_entry_points_start_and_write_no_bytecode(app_image):
    out = run_in(app_image, "vos api serve --help >/dev/null && vos door serve --help "
                            ">/dev/null && vos agents work --help >/dev/null && "
                            "vos db migrate --help >/dev/null && echo OK; "
                            "echo PYTHONDONTWRITEBYTECODE=$PYTHONDONTWRITEBYTECODE")
    assert "OK" in out and "PYTHONDONTWRITEBYTECODE=1" in out


def test_no_build_tools_and_no_pip(app_image):
    out = run_in(app_image, "for t in gcc cc make pip pip3; do command -v $t; done; "
                            "python3 -c 'import pip' 2>/dev/null && echo PIP || true")
    assert out.strip() == "", f"build tools in the final image: {out}"


@pytest.mark.parametrize("name", ["agent-vos.tar", "agent-vos.tar.zst"])
def test_save_remove_load_round_trip(app_image, tmp_path, name):
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", app_image],
                              capture_output=True, text=True, check=True).stdout.strip()
    archive = save_image(app_image, tmp_path / name)
    if name.endswith(".zst"):  # what the deploy ships: compressed, and docker load takes it
        assert archive.read_bytes()[:4] == bytes.fromhex("28b52ffd")  # zstd frame magic
    subprocess.run(["docker", "rmi", app_image], check=True, capture_output=True, timeout=120)
    assert not image_exists(app_image)
    assert load_image(archive) == app_image
    loaded = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", app_image],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == image_id
