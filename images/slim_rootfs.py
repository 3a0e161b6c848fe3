"""Assemble the app image's root filesystem: the app's venv, the Python that runs it, the
shared libraries they load, and nothing else (no shell, no package manager, no coreutils).

Runs inside the Dockerfile's build stage (the base image's python3, stdlib only); the final
stage is `FROM scratch` plus this tree. What it keeps and drops:
- the venv (/opt/vos) without pip, tests, type stubs, C sources and headers, and without the
  distributions in PRUNED_DISTRIBUTIONS: declared by a dependency, never imported at run
  time (the tokenizer's model-hub client: the embedded model loads from its wheel
  with downloads disabled). `--smoke` proves it: every entry point's help, the door's and
  the API's apps built, the embedded model loaded and used — inside the finished tree;
- the interpreter and its standard library, minus what no server imports (tests, IDLE,
  tkinter, ensurepip, pydoc data, the REPL's curses);
- every shared library `ldd` reports for the interpreter and every extension module, plus
  the loader; CA certificates, time zones, and /etc/passwd|group naming uid 10001.

Example (in the build stage):
    python3 /slim_rootfs.py /rootfs --venv /opt/vos
    chroot /rootfs /opt/vos/bin/python -c "import app.main"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

PRUNED_DISTRIBUTIONS = [
    "huggingface_hub", "hf_xet", "fsspec", "filelock", "tqdm",  # the model hub's client
]
STDLIB_DROPPED = ["test", "idlelib", "tkinter", "turtledemo", "ensurepip", "pydoc_data",
                  "lib2to3", "_pyrepl", "curses", "venv", "__phello__", "turtle.py", "dbm",
                  "EXTERNALLY-MANAGED",
                  # extension modules whose libraries (Berkeley DB, readline, ncurses) no
                  # server loads
                  "_dbm.*", "_gdbm.*", "readline.*", "_curses*.so", "_tkinter*"]
DROPPED_DIRECTORIES = {"tests", "__pycache__-unused"}
DROPPED_SUFFIXES = {".pyi", ".c", ".cpp", ".pyx", ".pxd", ".h", ".hpp"}
SYSTEM_FILES = ["/etc/ssl/certs/ca-certificates.crt", "/usr/share/zoneinfo",
                "/etc/ld.so.cache", "/etc/nsswitch.conf"]
APP_UID = 10001


def prune_venv(venv: Path) -> None:
    """Drop pip, pruned distributions, tests, stubs and sources from the venv in place."""
    site = next(venv.glob("lib/python3*/site-packages"))
    for name in ["pip", *PRUNED_DISTRIBUTIONS]:
        for path in [site / name, *site.glob(f"{name}-*.dist-info"),
                     *site.glob(f"{name.replace('_', '-')}-*.dist-info")]:
            _remove(path)
    for script in venv.glob("bin/pip*"):
        script.unlink()
    _drop_clutter(site)


def _drop_clutter(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and path.name in DROPPED_DIRECTORIES:
            _remove(path)
        elif path.is_file() and path.suffix in DROPPED_SUFFIXES:
            path.unlink()
    include = root / "numpy" / "_core" / "include"  # C headers for building extensions
    _remove(include)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def copy_into(rootfs: Path, source: str | Path) -> None:
    """Copy a file or directory to the same path under rootfs (symlinks kept as links, and
    the file a library's symlink names copied too)."""
    source = Path(source)
    target = rootfs / source.relative_to("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        link = os.readlink(source)
        target.symlink_to(link)
        copy_into(rootfs, (source.parent / link).resolve())
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def shared_libraries(binaries: list[Path]) -> set[str]:
    """Every library `ldd` resolves for these ELF files (the loader included)."""
    found: set[str] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            match = re.search(r"(/\S+)\s+\(0x", line)
            if match:
                found.add(match.group(1))
            elif "not found" in line:
                sys.exit(f"slim_rootfs: {binary} needs {line.split()[0]}, not found")
    return found


def copy_python(rootfs: Path) -> list[Path]:
    """The interpreter and its pruned standard library; returns the ELF files copied."""
    executable = Path(os.path.realpath(sys.executable))
    copy_into(rootfs, executable)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, rootfs / stdlib.relative_to("/"), symlinks=True,
                    ignore=shutil.ignore_patterns(*STDLIB_DROPPED, "site-packages",
                                                  "dist-packages"))
    (rootfs / stdlib.relative_to("/") / "site-packages").mkdir(exist_ok=True)
    return [executable, *stdlib.glob("lib-dynload/*.so")]


def sourceless(root: Path) -> None:
    """Replace every module's source with its compiled form beside it (`x.py` -> `x.pyc`,
    which the import system loads when no source exists), and drop `__pycache__`: one copy
    of each module instead of two. Tracebacks keep file and line, not the source text (it is
    in git at the image's revision)."""
    import py_compile

    for cache in sorted(root.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for source in root.rglob("*.py"):
        if source.is_symlink() or not source.is_file():
            continue
        py_compile.compile(str(source), cfile=str(source) + "c", doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        source.unlink()


def write_accounts(rootfs: Path) -> None:
    """/etc/passwd and /etc/group with root and the app's user (uid/gid 10001, no shell)."""
    etc = rootfs / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                f"vos-app:x:{APP_UID}:{APP_UID}:vos-app:/tmp:/usr/sbin/nologin\n")
    (etc / "group").write_text(f"root:x:0:\nvos-app:x:{APP_UID}:\n")


def assemble(rootfs: Path, venv: Path) -> None:
    """The whole tree: merged-/usr links, python, venv, libraries, system files, /tmp."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for name in ["bin", "sbin", "lib", "lib64"]:
        (rootfs / "usr" / name).mkdir(parents=True, exist_ok=True)
        (rootfs / name).symlink_to(f"usr/{name}")
    elfs = copy_python(rootfs)
    prune_venv(venv)
    copy_into(rootfs, venv)
    for link in venv.rglob("*"):  # bin/python -> /usr/bin/python3 -> python3.13: the chain
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            copy_into(rootfs, os.readlink(link))
    elfs += [path for path in venv.rglob("*.so*") if path.is_file()]
    for library in sorted(shared_libraries(elfs)):
        if not library.startswith(str(venv)):
            copy_into(rootfs, library)
    for path in ["/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", *SYSTEM_FILES]:
        if os.path.lexists(path):
            copy_into(rootfs, path)
    sourceless(rootfs / Path(sysconfig.get_paths()["stdlib"]).relative_to("/"))
    sourceless(rootfs / venv.relative_to("/"))
    write_accounts(rootfs)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)


SMOKE = """
import os, subprocess, sys
for argv in (["--help"], ["api", "serve", "--help"], ["door", "serve", "--help"],
             ["agents", "work", "--help"], ["agents", "apply", "--help"],
             ["db", "migrate", "--help"], ["tenant", "--help"], ["docs", "add", "--help"],
             ["operator", "create", "--help"]):
    done = subprocess.run([sys.prefix + "/bin/vos-app", *argv], capture_output=True, text=True)
    assert done.returncode == 0, (argv, done.stdout[-1500:], done.stderr[-1500:])
import anthropic, openai, psycopg, uvicorn, zoneinfo
from app.agents.embeddings import default_embedder
vectors = default_embedder().embed(["the ferry leaves at noon"])
assert len(vectors) == 1 and len(vectors[0]) > 0
zoneinfo.ZoneInfo("Europe/Berlin")
from app.agents.sanitize import Sanitizer
cleaned = Sanitizer().clean("key sk-ant-api03-" + "Q7x9Lm2Pz" * 10 + " DB_PASSWORD=s3cr3t-Value")
assert "Q7x9Lm2Pz" not in cleaned and "s3cr3t" not in cleaned, cleaned
os.environ["VOS_DOOR_SECRETS"] = '{"edge": "whsec_' + "a" * 32 + '"}'
os.environ["DATABASE_URL"] = "postgresql://vos_app:x@127.0.0.1:9/vos"
from app.door import worker
worker.create_app()
print("smoke: ok")
"""


def smoke(rootfs: Path, venv: Path) -> None:
    """Run the entry points inside the finished tree (chroot): a pruned module that something
    still imports fails the build here, not in production."""
    def enter() -> None:  # the build stage may have no chroot(8): the system call will do
        os.chroot(rootfs)
        os.chdir("/")

    result = subprocess.run([str(venv / "bin" / "python"), "-c", SMOKE], preexec_fn=enter,
                            capture_output=True, text=True,
                            env={"PATH": f"{venv}/bin:/usr/bin", "HOME": "/tmp",
                                 "LANG": "C.UTF-8"})
    if result.returncode != 0 or "smoke: ok" not in result.stdout:
        sys.exit(f"slim_rootfs: the smoke run in {rootfs} failed:\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    print(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rootfs", type=Path, help="directory to create (must not exist)")
    parser.add_argument("--venv", type=Path, default=Path("/opt/vos"), help="the app's venv")
    parser.add_argument("--smoke", action="store_true", help="run the entry points after")
    args = parser.parse_args()
    if args.rootfs.exists():
        sys.exit(f"slim_rootfs: {args.rootfs} exists; give a new directory")
    assemble(args.rootfs, args.venv)
    if args.smoke:
        smoke(args.rootfs, args.venv)


if __name__ == "__main__":
    main()
