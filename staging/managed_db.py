"""The staging stand-in for a managed Postgres, on the operator's side of the mesh.

The app's only state lives in Postgres, so in staging that Postgres must outlive every VM
(the burn-down drill destroys the VM and expects every row back). It is the embedded
Postgres of `app.db.embedded`, with its data dir in ``<state dir>/managed-db/`` (never in a
VM's overlay), listening on 127.0.0.1; a small TCP relay (this module, run as its own
process) publishes it on the operator's mesh address ``100.64.N.1:5432``, the address the
VM's containers use, exactly like a managed database reached over Tailscale.

Secrets are generated once and kept 0600 in ``<state dir>/secrets.env`` (never in the repo):
the `vos_owner` and `vos_app` passwords and the door's signing secret. :func:`deploy_env`
turns them into the environment variables the inventory's `stack` block names
(VOS_DATABASE_URL, VOS_OWNER_DATABASE_URL, VOS_APP_PASSWORD, VOS_DOOR_SECRETS), which the
lab exports to pyinfra.

`vos staging destroy` stops the relay (the mesh address goes with it) but leaves the
database running and its files in place; `vos staging up` finds it again.
`destroy_database()` is the explicit end (test sessions' own state dirs).

Example:
    db = ManagedDb(Path(".cache/staging"), mesh_address="100.64.1.1")
    env = db.ensure()            # starts what is not running; returns the deploy's env
    env["VOS_DATABASE_URL"]      # postgresql://vos_app:…@100.64.1.1:5432/vos
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from app.db.embedded import EmbeddedPostgres
from staging.proc import StagingError, progress
from staging.vm import tcp_open

DB_NAME = "vos"
OWNER_ROLE = "vos_owner"
MESH_PORT = 5432
DOOR_SOURCE = "staging"  # the door source whose secret the lab generates
SECRETS_FILE = "secrets.env"
RELAY_PID = "managed-db-relay.pid"


def read_secrets(path: Path) -> dict[str, str]:
    """KEY=value lines of a secrets file (missing file: empty dict)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def ensure_secrets(path: Path) -> dict[str, str]:
    """Generate the staging secrets once (0600); later calls return the same values.

    Example:
        >>> s = ensure_secrets(Path("/tmp/x/secrets.env")); s["VOS_DOOR_SECRET"][:6]
        'whsec_'
    """
    current = read_secrets(path)
    wanted = {
        "VOS_OWNER_PASSWORD": lambda: secrets.token_urlsafe(24),
        "VOS_APP_PASSWORD": lambda: secrets.token_urlsafe(24),
        "VOS_DOOR_SECRET": lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        # the key the lab's fake cloud providers accept (staging/providers.py)
        "VOS_STAGING_PROVIDER_KEY": lambda: "fake-" + secrets.token_urlsafe(18),
    }
    missing = {key: make() for key, make in wanted.items() if key not in current}
    if missing:
        current.update(missing)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{key}={value}\n" for key, value in current.items()))
    os.chmod(path, 0o600)
    return current


class ManagedDb:
    """The lab's managed Postgres: cluster + database + roles + mesh relay."""

    def __init__(self, state_dir: Path, mesh_address: str, mesh_port: int = MESH_PORT):
        self.state_dir = Path(state_dir)
        self.mesh_address = mesh_address
        self.mesh_port = mesh_port
        self.server = EmbeddedPostgres(self.state_dir / "managed-db")
        self.secrets_path = self.state_dir / SECRETS_FILE
        self.relay_pid_path = self.state_dir / RELAY_PID

    # ------------------------------------------------------------------ database
    def start(self) -> str:
        """Start (or find) the cluster; create role and database once; superuser DSN."""
        progress(f"managed db: Postgres in {self.server.root}")
        superuser = self.server.start()
        self._create_owner(superuser, ensure_secrets(self.secrets_path)["VOS_OWNER_PASSWORD"])
        return superuser

    def _create_owner(self, superuser: str, password: str) -> None:
        """`vos_owner` owns the `vos` database; migrations run as it over the mesh.

        It is a SUPERUSER because migration 0001 (`ALTER ROLE vos_app NOSUPERUSER …`) needs
        one on Postgres 15+; a managed service's admin role must be able to do the same.
        The `postgres` superuser's own password never leaves this machine."""
        with psycopg.connect(superuser, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  [OWNER_ROLE]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(OWNER_ROLE), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                [DB_NAME]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE)))

    def owner_dsn(self, local: bool = True) -> str:
        """The owner's DSN: on 127.0.0.1 (tests, the operator) or on the mesh (the VM)."""
        password = ensure_secrets(self.secrets_path)["VOS_OWNER_PASSWORD"]
        host, port = ("127.0.0.1", self._port()) if local else (self.mesh_address, self.mesh_port)
        return f"postgresql://{OWNER_ROLE}:{password}@{host}:{port}/{DB_NAME}?connect_timeout=5"

    def _port(self) -> int:
        return int((self.server.root / "port").read_text())

    # ------------------------------------------------------------------ relay
    def relay_running(self) -> bool:
        """True when the recorded relay lives, listens, and points at the current port."""
        pid, target = self._relay_record()
        return (pid is not None and _alive(pid) and target == self._port()
                and tcp_open(self.mesh_address, self.mesh_port))

    def _relay_pid(self) -> int | None:
        return self._relay_record()[0]

    def _relay_record(self) -> tuple[int | None, int | None]:
        """(pid, target port) written by start_relay."""
        try:
            pid, target = self.relay_pid_path.read_text().split()
            return int(pid), int(target)
        except (FileNotFoundError, ValueError):
            return None, None

    def start_relay(self, timeout: float = 15) -> int:
        """Start the mesh relay process (mesh:5432 -> 127.0.0.1:<pg port>); returns its pid."""
        self.stop_relay()
        log = open(self.state_dir / "managed-db-relay.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "staging.managed_db", self.mesh_address, str(self.mesh_port),
             str(self._port())],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent)
        log.close()
        self.relay_pid_path.write_text(f"{process.pid} {self._port()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if tcp_open(self.mesh_address, self.mesh_port):
                progress(f"managed db: reachable on the mesh at "
                         f"{self.mesh_address}:{self.mesh_port}")
                return process.pid
            time.sleep(0.2)
        self.stop_relay()
        raise StagingError(f"the managed-db relay did not listen on {self.mesh_address}:"
                           f"{self.mesh_port}; see {self.state_dir / 'managed-db-relay.log'}")

    def stop_relay(self) -> None:
        """Stop the relay (by its recorded pid only); a no-op when none runs."""
        pid = self._relay_pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
        self.relay_pid_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ whole
    def ensure(self) -> dict[str, str]:
        """Database up, relay on the mesh; the deploy's environment (see deploy_env)."""
        self.start()
        if not self.relay_running():
            self.start_relay()
        return self.deploy_env()

    def deploy_env(self) -> dict[str, str]:
        """What inventory/staging.py's `stack` block names, from the 0600 secrets file."""
        values = ensure_secrets(self.secrets_path)
        app = (f"postgresql://vos_app:{values['VOS_APP_PASSWORD']}@{self.mesh_address}:"
               f"{self.mesh_port}/{DB_NAME}?connect_timeout=5")
        return {
            "VOS_DATABASE_URL": app,
            "VOS_OWNER_DATABASE_URL": self.owner_dsn(local=False),
            "VOS_APP_PASSWORD": values["VOS_APP_PASSWORD"],
            "VOS_DOOR_SECRETS": json.dumps({DOOR_SOURCE: values["VOS_DOOR_SECRET"]}),
            "VOS_STAGING_PROVIDER_KEY": values["VOS_STAGING_PROVIDER_KEY"],
        }

    def destroy_database(self) -> None:
        """Stop relay and server and delete the data (the end of a throwaway lab)."""
        self.stop_relay()
        self.server.destroy()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- the relay process
def pump_until_eof(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until EOF, then half-close the other side."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (sink, source):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listen_address: str, listen_port: int, target_port: int) -> None:
    """Accept on the mesh address; relay each connection to Postgres on 127.0.0.1."""
    listener = socket.create_server((listen_address, listen_port), reuse_port=False)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump_until_eof, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
