"""An embedded Postgres from the distribution's own binaries, for local use and tests.

Used in two places, by the same code:
- local use: `DATABASE_URL` is absent and `VOS_ENV=local`, so the CLI starts one in
  `VOS_EMBEDDED_PG_DIR` (kept between runs) and says so;
- tests: `tests/conftest.py` starts one in a temporary directory and tears it down.

It binds 127.0.0.1 only, on a free port, with SCRAM passwords on TCP. Postgres refuses to run
as root, so when we are root the server runs as the `postgres` system user (runuser) and the
directory is handed to that user.

Layout under `root`: `data/` (the cluster), `sock/` (unix socket dir), `postgres.log`,
`superuser.password` (0600) and `port`.

Example:
    pg = EmbeddedPostgres(Path("/tmp/vos-pg"), fast_unsafe=True)
    dsn = pg.start()          # postgresql://postgres:…@127.0.0.1:PORT/postgres
    ...
    pg.stop()
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

PG_LIB = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres could not be found, initialised or started."""


def find_pg_bin(lib: Path = PG_LIB) -> Path:
    """Return the newest `/usr/lib/postgresql/<major>/bin` that has `postgres` and `initdb`.

    Example:
        >>> find_pg_bin().name
        'bin'
    """
    candidates = [
        p for p in lib.glob("*/bin") if (p / "postgres").exists() and (p / "initdb").exists()
    ]
    if not candidates:
        raise EmbeddedPostgresError(
            f"no Postgres server binaries under {lib}; install them with "
            "`apt-get install postgresql` (scripts/bootstrap.sh does) or set DATABASE_URL"
        )
    return max(candidates, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """One Postgres cluster in a directory; `start()` returns the superuser DSN."""

    def __init__(
        self, root: Path, *, port: int | None = None, fast_unsafe: bool = False
    ) -> None:
        """`fast_unsafe` turns fsync off: for throwaway test clusters only."""
        self.root = Path(root)
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.password_file = self.root / "superuser.password"
        self.port_file = self.root / "port"
        self.port = port
        self.fast_unsafe = fast_unsafe
        self.bin = find_pg_bin()
        self._as_server_user = os.geteuid() == 0

    # -- helpers ---------------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a Postgres binary (as the `postgres` user when we are root)."""
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self._as_server_user:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{argv[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
                f"\nsee {self.log} for the server's own log"
            )
        return proc

    def _hand_to_server_user(self, path: Path) -> None:
        if self._as_server_user:
            pw = pwd.getpwnam(SERVER_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        if self._as_server_user:
            # The server user must traverse every parent (mkdtemp makes 0700 dirs).
            for parent in self.root.resolve().parents:
                if not parent.stat().st_mode & 0o001:
                    raise EmbeddedPostgresError(
                        f"{parent} is not traversable by the `{SERVER_USER}` user, so the "
                        f"embedded Postgres cannot use {self.root}; run `chmod o+x {parent}` "
                        "or choose another VOS_EMBEDDED_PG_DIR"
                    )
        for d in (self.data, self.sock):
            d.mkdir(mode=0o700, exist_ok=True)
            self._hand_to_server_user(d)

    def _initdb(self, password: str) -> None:
        pwfile = self.root / ".initdb-pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._hand_to_server_user(pwfile)
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--locale=C", *(["--no-sync"] if self.fast_unsafe else []),
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _password(self) -> str:
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)
        return password

    def _running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        try:
            self._run("pg_ctl", "status", "-D", str(self.data), timeout=15)
        except EmbeddedPostgresError:
            return False
        return True

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser DSN for `dbname` (the server must have been started)."""
        return (
            f"postgresql://postgres:{self._password()}@127.0.0.1:{self.port}/{dbname}"
            "?connect_timeout=5"
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> str:
        """Initialise the cluster if needed, start it, wait until it accepts connections.

        Returns the superuser DSN. Reuses a server already running from this directory.
        """
        self._prepare_dirs()
        password = self._password()
        if not (self.data / "PG_VERSION").exists():
            self._initdb(password)
        if self._running() and self.port_file.exists():
            self.port = int(self.port_file.read_text())
            return self.dsn()
        self.port = self.port or free_port()
        self.port_file.write_text(str(self.port))
        if not self.log.exists():
            self.log.touch()
        self._hand_to_server_user(self.log)
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.sock} -c max_connections=200"
        if self.fast_unsafe:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-o", opts,
            "-w", "-t", str(int(timeout)), timeout=timeout + 10,
        )
        return self.dsn()

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (fast shutdown); a no-op when it is not running."""
        if self._running():
            self._run(
                "pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w",
                "-t", str(int(timeout)), timeout=timeout + 10,
            )

    def destroy(self) -> None:
        """Stop the server and delete its directory (tests' temporary clusters)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
