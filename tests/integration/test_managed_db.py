"""staging/managed_db.py against a real embedded Postgres: the staging "managed database".

Proves what the stack on the VM relies on, without a VM: the relay publishes Postgres on
the (here: loopback) mesh address; the non-superuser owner role migrates over it exactly as
the stack's one-shot `vos db migrate` does; the app role then connects through it; the
secrets are 0600 and stable; and the data survives a server restart (the burn-down's basis).
"""

from __future__ import annotations

import stat

import psycopg
import pytest

from app.db import migrate
from app.db.embedded import free_port
from staging.managed_db import ManagedDb, read_secrets


@pytest.fixture
def managed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("managed")
    directory.chmod(0o711)
    for parent in directory.parents:  # the `postgres` user must traverse (root runs tests)
        if parent.stat().st_mode & 0o001 == 0 and str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o001)
    db = ManagedDb(directory, "127.0.0.1", mesh_port=free_port())
    try:
        yield db
    finally:
        db.destroy_database()


def test_owner_migrates_over_the_relay_then_the_app_connects(managed):
    env = managed.ensure()
    assert f"@127.0.0.1:{managed.mesh_port}/vos" in env["VOS_DATABASE_URL"]
    mode = stat.S_IMODE(managed.secrets_path.stat().st_mode)
    assert mode == 0o600, oct(mode)

    migrate(env["VOS_OWNER_DATABASE_URL"], app_password=env["VOS_APP_PASSWORD"],
            log=lambda _m: None)
    with psycopg.connect(env["VOS_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "vos_app"

    with psycopg.connect(managed.server.dsn("vos"), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (slug, name) VALUES ('survivor', 'S')")
    secrets_before = read_secrets(managed.secrets_path)

    managed.stop_relay()
    managed.server.stop()
    restarted = ManagedDb(managed.state_dir, "127.0.0.1", mesh_port=managed.mesh_port)
    assert restarted.ensure() == env  # same secrets, same URLs (the relay follows the port)
    assert read_secrets(managed.secrets_path) == secrets_before
    with psycopg.connect(env["VOS_OWNER_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM tenants WHERE slug = 'survivor'"
                            ).fetchone()[0] == 1


def test_relay_records_its_target_and_stops_by_pid(managed):
    """The relay points at the server's current port and stops by its recorded pid."""
    managed.ensure()
    pid, target = managed._relay_record()
    assert pid and target == int((managed.server.root / "port").read_text())
    managed.stop_relay()
    assert not managed.relay_running()
