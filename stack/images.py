"""Build, save and load the app image on the operator's side; no registry needed.

    vos image base                      # local base: debootstrap | docker import (no pulls)
    vos image build --base vos-base:trixie
    vos image save agent-vos:3f2a1c0 -o /tmp/agent-vos.tar.zst   # then copy, `docker load`

The build never touches the network: the wheelhouse (the app and every dependency, binary
wheels for the base image's Python) is prepared with the operator's own pip first, then the
Dockerfile (images/Dockerfile) installs from it with `--no-index`.

Example:
    tag = build_image(base_image="vos-base:trixie")   # -> "agent-vos:3f2a1c0"
    save_image(tag, Path("/tmp/agent-vos.tar"))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "images" / "Dockerfile"
SLIM_ROOTFS = REPO_ROOT / "images" / "slim_rootfs.py"  # the final stage's tree
DEFAULT_REPOSITORY = "agent-vos"
LOCAL_BASE = "vos-base:trixie"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
MIRROR = "http://deb.debian.org/debian"
# Binary wheels only, for the base image's CPython; these tags cover every dependency.
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]


class ImageError(RuntimeError):
    """An image step failed; the message says which and what to do next."""


def _say(message: str) -> None:
    print(f"==> [image] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], step: str, timeout: float, **kwargs) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                **kwargs)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{step}: timed out after {timeout:.0f} s") from None
    if result.returncode != 0:
        raise ImageError(f"{step} failed (exit {result.returncode}):\n"
                         f"{(result.stderr or result.stdout)[-3000:]}")
    return result.stdout


def image_exists(reference: str) -> bool:
    """True when the local engine has the image."""
    result = subprocess.run(["docker", "image", "inspect", reference], capture_output=True,
                            timeout=60)
    return result.returncode == 0


def base_cache_dir() -> Path:
    """Where the debootstrapped base tree is kept (`$VOS_IMAGE_CACHE`/docker-base)."""
    root = Path(os.environ.get("VOS_IMAGE_CACHE", Path.home() / ".cache" / "vos" / "images"))
    return root / "docker-base"


@contextlib.contextmanager
def _exclusive(step: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold `step`'s lock (a file lock beside the base cache) for the block: a second
    caller (two deploys, or the image test beside the staging converge) waits, then finds
    what the first one made instead of building it again over the top of it.

    Example:
        with _exclusive("app-image", say):
            ...
    """
    directory = base_cache_dir().parent
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{step}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{step}: another build holds {lock.name}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_local_base(tag: str = LOCAL_BASE, suite: str = "trixie", mirror: str = MIRROR,
                      say: Callable[[str], None] = _say) -> str:
    """A local base image with python3, made with `debootstrap | docker import` (no pulls).

    The debootstrapped tree is cached, so re-importing after an engine reset takes seconds.
    Concurrent callers make it once (a file lock).
    """
    if image_exists(tag):
        return tag
    with _exclusive("base-image", say):
        return _make_local_base(tag, suite, mirror, say)


def _make_local_base(tag: str, suite: str, mirror: str, say: Callable[[str], None]) -> str:
    if image_exists(tag):  # made while this caller waited for the lock
        return tag
    tree = base_cache_dir() / suite / "rootfs"
    if not (tree / "usr" / "bin" / "python3").exists():
        if os.geteuid() != 0:
            raise ImageError("building the local base runs debootstrap, which needs root")
        scratch = tree.with_name("rootfs.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        say(f"base: debootstrap {suite} (minbase + {', '.join(BASE_PACKAGES)}), ~3 min")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              suite, str(scratch), mirror], "debootstrap", timeout=1200)
        shutil.rmtree(scratch / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        scratch.rename(tree)
    say(f"base: docker import {tree} as {tag}")
    tar = subprocess.Popen(["tar", "-C", str(tree), "--numeric-owner", "-c", "."],
                           stdout=subprocess.PIPE)
    try:
        _run(["docker", "import", "--change", 'CMD ["/bin/bash"]', "-", tag],
             "docker import", timeout=600, stdin=tar.stdout)
    finally:
        tar.stdout.close()
        tar.wait(timeout=60)
    return tag


def base_python_version(base_image: str) -> str:
    """`3.13` for a trixie base, read by running the base's python3 (no network)."""
    out = _run(["docker", "run", "--rm", "--network", "none", base_image, "python3", "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])"],
               f"reading the Python version of {base_image}", timeout=120)
    return out.strip()


# What goes into the image: the app's distribution (app/, with its own pyproject.toml) and
# the build recipe. Commits touching only the toolkit, tests, docs or deploys reuse the image.
APP_PROJECT = REPO_ROOT / "app"
SHIPPED_PATHS = ["app", "images"]


def source_revision(repo: Path = REPO_ROOT) -> str:
    """The short sha of the last commit that changed shipped code, plus `-dirty-<hash>` when
    the work tree has uncommitted changes there, so an image tag always names its content
    and a commit that only touches tests or docs reuses the built (and shipped) image.

    Example:
        source_revision()  # -> "3f2a1c0" or "3f2a1c0-dirty-9b1e"
    """
    sha = _run(["git", "log", "-1", "--format=%h", "--abbrev=7", "--", *SHIPPED_PATHS],
               "git log", 30, cwd=repo).strip()
    if not sha:
        raise ImageError(f"no commit touches {SHIPPED_PATHS} in {repo}: is it a git checkout?")
    diff = _run(["git", "diff", "HEAD", "--", *SHIPPED_PATHS], "git diff", 60, cwd=repo)
    if not diff:
        return sha
    return f"{sha}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:4]}"


def prepare_wheelhouse(directory: Path, python_version: str, repo: Path = REPO_ROOT,
                       say: Callable[[str], None] = _say) -> None:
    """The app's wheel (app/pyproject.toml: the app alone, not the toolkit) plus binary
    wheels of every dependency for `python_version`."""
    directory.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    project = repo / APP_PROJECT.relative_to(REPO_ROOT)
    say(f"wheelhouse: the app's wheel (from {project})")
    with tempfile.TemporaryDirectory(prefix="vos-app-src-") as scratch:
        # built from a copy: setuptools leaves build/ in the project, which is the package
        source = Path(scratch) / "app"
        shutil.copytree(project, source, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", "*.pyc"))
        _run([*pip, "wheel", "-q", "--no-deps", "-w", str(directory), str(source)],
             "pip wheel (the app)", timeout=600)
    say(f"wheelhouse: dependencies for CPython {python_version}")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    _run([*pip, "download", "-q", "--dest", str(directory), "--only-binary=:all:",
          "--python-version", python_version, "--implementation", "cp", *platforms,
          *(str(wheel) for wheel in directory.glob("agent_vos_app-*.whl"))],
         "pip download (dependencies)", timeout=900)


def build_image(base_image: str, repository: str = "agent-vos", tag: str | None = None,
                say: Callable[[str], None] = _say) -> str:
    """Build the app image on this machine; returns its reference (repository:revision)."""
    if not image_exists(base_image):
        raise ImageError(f"base image {base_image} is not in the local engine: `docker pull "
                         f"{base_image}` where a registry is reachable, or `vos image base` "
                         "to make one with debootstrap")
    reference = f"{repository}:{tag or source_revision()}"
    version = base_python_version(base_image)
    with tempfile.TemporaryDirectory(prefix="vos-image-", dir="/var/tmp") as scratch:
        context = Path(scratch)
        prepare_wheelhouse(context / "wheels", version, say=say)
        shutil.copy(DOCKERFILE, context / "Dockerfile")
        shutil.copy(SLIM_ROOTFS, context / SLIM_ROOTFS.name)
        say(f"build: {reference} FROM {base_image} (no network)")
        _run(["docker", "build", "--network", "none", "--build-arg",
              f"BASE_IMAGE={base_image}", "-t", reference, str(context)],
             "docker build", timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return reference


def save_image(reference: str, path: Path) -> Path:
    """`docker save` to a tar file (what travels to the host instead of a registry pull).

    A `.zst` path is compressed with zstd on the way (`docker load` reads it as it is): the
    app image shrinks to ~30 %, and the copy to the host is the slow part of a deploy.

    Example:
        save_image("agent-vos:3f2a1c0", Path("/tmp/agent-vos.tar.zst"))
    """
    if path.suffix != ".zst":
        _run(["docker", "save", "-o", str(path), reference], f"docker save {reference}", 900)
        return path
    if shutil.which("zstd") is None:
        raise ImageError("zstd not found on this machine: install it (apt-get install zstd) "
                         "or save to a plain .tar")
    with path.open("wb") as sink:
        save = subprocess.Popen(["docker", "save", reference], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        squeeze = subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=save.stdout,
                                 stdout=sink, stderr=subprocess.PIPE, timeout=900)
        save.stdout.close()
        save_error = save.stderr.read().decode(errors="replace")
        save.wait(timeout=60)
    if save.returncode != 0 or squeeze.returncode != 0:
        path.unlink(missing_ok=True)
        raise ImageError(f"docker save {reference} | zstd failed (exit {save.returncode}/"
                         f"{squeeze.returncode}):\n"
                         f"{(save_error + squeeze.stderr.decode(errors='replace'))[-3000:]}")
    return path


def load_image(path: Path) -> str:
    """`docker load` of a saved tar (or `.tar.zst`); returns the loaded reference.

    A `.zst` archive is unpacked by the zstd tool on the way in: engines before Docker 23
    (Debian 12's 20.10) cannot read zstd themselves.
    """
    if path.suffix == ".zst":
        command = ["sh", "-c", 'zstd -q -dc -- "$1" | docker load', "load", str(path)]
    else:
        command = ["docker", "load", "-i", str(path)]
    out = _run(command, f"docker load {path}", 900)
    return out.strip().rpartition("Loaded image: ")[2] or out.strip()


def ensure_app_image(reference: str, base_image: str,
                     say: Callable[[str], None] = _say) -> str:
    """The app image `reference` in the local engine: kept when built before (the tag is the
    git revision, so a rebuild happens only when the shipped code changed), else built.

    A missing `vos-base:*` base is made first (`debootstrap | docker import`); any other
    missing base must be pulled by the operator.

    Example:
        ensure_app_image("agent-vos:3f2a1c0", base_image="vos-base:trixie")
    """
    if image_exists(reference):
        say(f"build: {reference} is already built (cached by git revision)")
        return reference
    if base_image.startswith("vos-base:") and not image_exists(base_image):
        ensure_local_base(tag=base_image, suite=base_image.partition(":")[2] or "trixie",
                          say=say)
    with _exclusive("app-image", say):
        if image_exists(reference):  # built while this caller waited for the lock
            say(f"build: {reference} was built meanwhile; reusing it")
            return reference
        repository, _, tag = reference.rpartition(":")
        started = time.monotonic()
        built = build_image(base_image=base_image, repository=repository, tag=tag, say=say)
        say(f"build: {built} built in {time.monotonic() - started:.0f} s")
        return built
