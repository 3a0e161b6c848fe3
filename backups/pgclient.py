"""A PostgreSQL newer than this machine's, for the drill: a cached Debian trixie tree.

The drill restores with `pg_restore`, which refuses archives written by a newer `pg_dump`
("unsupported version (1.16) in file header"). The host (Debian 13) dumps with pg_dump 17; an
operator machine on Debian 12 has pg_restore 15 and no postgresql-client-17 package (not even
in bookworm-backports). Debian's own trixie build is the honest answer: debootstrap a minimal
trixie tree with `postgresql-client-N` and `postgresql-N` once, cache it under
``~/.cache/vos/pg-client/<major>-<recipe hash>/`` (the key changes when suite, mirror, packages
or the wrapper change), and expose a bin dir whose `pg_restore`, `pg_dump` and `psql` run the
tree's binaries.

The server is there because pg_restore N writes SQL for server N (pg_restore 17 sends
`SET transaction_timeout`, which a 15 server rejects): the drill's scratch database must live
on a server at least as new. :func:`scratch_server` runs the tree's own Postgres in the tree
(`chroot`, as the tree's `postgres` user, bound to 127.0.0.1 on a free port, fsync off) for
the length of one drill, and removes its cluster afterwards. That part needs root.

The wrappers start each binary through the tree's own dynamic loader with the tree's library
path, instead of `chroot`: no root needed at run time, and the program still sees this
machine's files, so a Unix-socket DSN (/tmp/…/.s.PGSQL.5432) and `--dbname` work unchanged.
Only the tree's libraries are loaded (glibc, libpq, OpenSSL of trixie), so nothing mixes.

Building needs root and debootstrap (scripts/bootstrap.sh installs it) and takes ~2 min.

Example:
    client = ensure_pg_client(17, log=print)      # builds once, then cached
    run_drill(target, "~/.gnupg", pg_bin_dir=str(client.bin_dir))
    # CLI: vos backup pg-client --major 17    -> prints the bin dir for --pg-bin-dir
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backups.pipeline import parse_major, tool_version

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
TOOLS = ("pg_restore", "pg_dump", "psql")
# trixie is merged-/usr: the loader and libraries live under usr/.
LOADER = "usr/lib64/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib")
BUILD_TIMEOUT_SECONDS = 1800
# Bump when the wrapper or the tree's layout changes in a way the recipe does not capture.
LAYOUT_VERSION = 2
SERVER_START_TIMEOUT_SECONDS = 60


class PgClientError(RuntimeError):
    """The client could not be built or run; the message says what to do next."""


@dataclass(frozen=True)
class PgClient:
    """A built client: `bin_dir` holds the wrappers; pass it as --pg-bin-dir."""

    directory: Path
    major: int

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"


def cache_root() -> Path:
    """``$VOS_PG_CLIENT_CACHE`` or ``~/.cache/vos/pg-client``."""
    configured = os.environ.get("VOS_PG_CLIENT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vos" / "pg-client"


def recipe(major: int) -> dict:
    """Everything that shapes the tree; its hash keys the cache.

    Example:
        >>> recipe(17)["packages"]
        ['postgresql-client-17', 'postgresql-17']
    """
    return {"suite": SUITE, "mirror": MIRROR, "variant": "minbase",
            "packages": [f"postgresql-client-{major}", f"postgresql-{major}"],
            "layout": LAYOUT_VERSION,
            "arch": os.uname().machine}


def recipe_hash(major: int) -> str:
    """Short stable hash of :func:`recipe`, e.g. ``'9c1e04a7b2d3'``."""
    text = json.dumps(recipe(major), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tool_major(executable: str | Path) -> int:
    """The PostgreSQL major version of a client program (0 when it cannot be run).

    Example:
        >>> tool_major("/nonexistent/pg_restore")
        0
    """
    return parse_major(tool_version(str(executable)))


def ensure_pg_client(major: int, cache: Path | None = None,
                     log: Callable[[str], None] = lambda _m: None) -> PgClient:
    """Return the cached client for `major`, building it first if missing (~2 min).

    Concurrent callers serialise on a lock file; the second finds the first one's tree.
    """
    cache = cache or cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{major}-{recipe_hash(major)}"
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "client.json").exists():
            log(f"pg-client: reusing the cached PostgreSQL {major} client in {target}")
        else:
            _build(target, major, log)
    client = PgClient(target, major)
    found = tool_major(client.bin_dir / "pg_restore")
    if found != major:
        raise PgClientError(f"{client.bin_dir}/pg_restore reports major {found or 'nothing'}, "
                            f"expected {major}: remove {target} and run "
                            f"`vos backup pg-client --major {major}` again")
    return client


def _build(target: Path, major: int, log: Callable[[str], None]) -> None:
    """debootstrap into a scratch dir, write the wrappers, rename into place."""
    if os.geteuid() != 0:
        raise PgClientError("building the PostgreSQL client tree needs root (debootstrap); "
                            "run `sudo vos backup pg-client` once, or install "
                            f"postgresql-client-{major} from your distribution")
    if shutil.which("debootstrap") is None:
        raise PgClientError("debootstrap is missing: run `bash scripts/bootstrap.sh` "
                            "(or apt-get install debootstrap)")
    scratch = target.with_name(f"{target.name}.build-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    root = scratch / "root"
    root.mkdir(parents=True)
    started = time.monotonic()
    try:
        log(f"pg-client: debootstrap {SUITE} with postgresql-client-{major} from {MIRROR} "
            "(step 1/3, ~1 min)")
        _run(["debootstrap", "--variant=minbase", f"--include=postgresql-client-{major}",
              SUITE, str(root), MIRROR], BUILD_TIMEOUT_SECONDS, "debootstrap")
        log(f"pg-client: apt-get install postgresql-{major} in the tree, without a default "
            "cluster (step 2/3, ~1 min)")
        conf = root / "etc/postgresql-common/createcluster.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("create_main_cluster = false\n")
        _run(["chroot", str(root), "sh", "-c",
              "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
              f"--no-install-recommends postgresql-{major} && apt-get clean"],
             BUILD_TIMEOUT_SECONDS, f"apt-get install postgresql-{major} in the tree")
        log("pg-client: trimming the tree, writing wrappers (step 3/3)")
        for junk in ("var/cache/apt/archives", "usr/share/doc", "usr/share/man",
                     "usr/share/locale", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        _write_wrappers(scratch, major, final=target)
        (scratch / "client.json").write_text(json.dumps({
            "major": major, "recipe": recipe(major), "recipe_hash": recipe_hash(major),
            "built_seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        log(f"pg-client: built {target} in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_wrappers(directory: Path, major: int, final: Path) -> None:
    """Wrappers in DIRECTORY/bin that name the tree by its FINAL absolute path (the scratch
    directory is renamed to FINAL once everything is in place)."""
    root = final / "root"
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    library_path = ":".join(str(root / d) for d in LIBRARY_DIRS)
    for tool in TOOLS:
        program = root / f"usr/lib/postgresql/{major}/bin/{tool}"
        if not (directory / "root" / program.relative_to(root)).exists():
            raise PgClientError(f"{program} is missing after debootstrap: the trixie package "
                                f"postgresql-client-{major} changed its layout")
        wrapper = bin_dir / tool
        wrapper.write_text(
            "#!/bin/sh\n"
            f"# {tool} {major} from the Debian {SUITE} tree beside this directory, through\n"
            "# the tree's own loader and libraries (see backups/pgclient.py).\n"
            f'exec "{root / LOADER}" --library-path "{library_path}" '
            f'--argv0 "{tool}" "{program}" "$@"\n')
        wrapper.chmod(0o755)


def _run(command: list[str], timeout: float, step: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PgClientError(f"{step} did not finish within {timeout:.0f} s; is "
                            f"{MIRROR} reachable?") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-1500:]
        raise PgClientError(f"{step} exited {result.returncode}: {detail} — check that "
                            f"{MIRROR} is reachable and has postgresql-client in {SUITE}")


def client_of_bin_dir(bin_dir: str | Path | None) -> PgClient | None:
    """The built tree a bin dir belongs to (as `vos backup pg-client` printed it), else None.

    Example:
        >>> client_of_bin_dir("/usr/lib/postgresql/15/bin") is None
        True
    """
    if not bin_dir:
        return None
    meta = Path(bin_dir).parent / "client.json"
    if not meta.exists():
        return None
    return PgClient(meta.parent, int(json.loads(meta.read_text())["major"]))


@contextmanager
def scratch_server(client: PgClient, log: Callable[[str], None] = lambda _m: None
                   ) -> Iterator[str]:
    """Run the tree's Postgres for the length of the block; yield its superuser DSN.

    Example:
        with scratch_server(ensure_pg_client(17)) as dsn:
            psycopg.connect(dsn).execute("SELECT version()")   # PostgreSQL 17
    """
    if os.geteuid() != 0:
        raise PgClientError("running the tree's Postgres for the scratch database needs root "
                            "(chroot); run the drill as root, or pass --scratch-dsn of a "
                            f"PostgreSQL {client.major} server")
    root = client.directory / "root"
    uid, gid = _tree_user(root, "postgres")
    inside = f"/var/lib/vos-drill/{secrets.token_hex(6)}"
    outside = root / inside.lstrip("/")
    password = secrets.token_urlsafe(24)
    port = _free_port()
    binaries = f"/usr/lib/postgresql/{client.major}/bin"
    as_postgres = ["chroot", f"--userspec={uid}:{gid}", str(root)]
    try:
        for sub in ("", "sock"):
            (outside / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(outside / sub, uid, gid)
        (outside / "pw").write_text(password + "\n")
        os.chown(outside / "pw", uid, gid)
        log(f"pg-client: starting PostgreSQL {client.major} from {root} on 127.0.0.1:{port} "
            "for the scratch database")
        _run([*as_postgres, f"{binaries}/initdb", "-D", f"{inside}/data", "-U", "postgres",
              f"--pwfile={inside}/pw", "--auth-local=peer", "--auth-host=scram-sha-256",
              "-E", "UTF8", "--locale=C", "--no-sync"], 180, "initdb (scratch cluster)")
        (outside / "pw").unlink()
        _run([*as_postgres, f"{binaries}/pg_ctl", "start", "-D", f"{inside}/data", "-l",
              f"{inside}/postgres.log", "-w", "-t", str(SERVER_START_TIMEOUT_SECONDS), "-o",
              f"-h 127.0.0.1 -p {port} -k {inside}/sock -c fsync=off "
              "-c synchronous_commit=off -c full_page_writes=off"],
             SERVER_START_TIMEOUT_SECONDS + 15, "pg_ctl start (scratch cluster)")
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres?connect_timeout=5"
    finally:
        if (outside / "data" / "postmaster.pid").exists():
            subprocess.run([*as_postgres, f"{binaries}/pg_ctl", "stop", "-D", f"{inside}/data",
                            "-m", "immediate", "-w", "-t", "30"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(outside, ignore_errors=True)


def _tree_user(root: Path, name: str) -> tuple[int, int]:
    """uid and gid of a user in the TREE's /etc/passwd (the host may number it otherwise)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise PgClientError(f"no `{name}` user in {root}/etc/passwd: the tree is incomplete; "
                        f"remove {root.parent} and build it again")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
