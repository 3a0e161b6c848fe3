"""Shared fixtures: a REAL Postgres for the integration tier.

Unless `TEST_DATABASE_URL` (a superuser, or a role with CREATEDB and CREATEROLE) is set, a
throwaway cluster is started from the distribution's binaries (`app.db.embedded`, the same code
that serves local use) in a temporary directory on 127.0.0.1 and a free port, and torn down
at the end of the session. As root, the server runs as the `postgres` system user.

Fixtures (all Postgres ones are lazy: unit tests never start a server):
    pg_server       session  superuser DSN of the server (database `postgres`)
    fresh_database  session  factory: `fresh_database()` -> owner DSN of a new, empty database
    migrated_db     session  `MigratedDb(owner_dsn, app_dsn, app_password)`: one database with
                             every migration applied and the `vos_app` password set. The role
                             is cluster-wide: a test that migrates another database must pass
                             no app_password, or this same one.
    owner_dsn       session  = migrated_db.owner_dsn (superuser: bypasses RLS, for set-up)
    app_dsn         session  = migrated_db.app_dsn (role vos_app: confined by RLS)
    app_pool        session  psycopg_pool.ConnectionPool as vos_app (dict rows, autocommit)
    make_tenant     function factory: `make_tenant("acme")` -> Tenant(id, slug, name); slugs are
                             made unique per call, so tests never collide

Example:
    def test_something(app_pool, make_tenant):
        acme = make_tenant("acme")
        with tenant_transaction(app_pool, acme.id) as conn:
            assert conn.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.db import migrate, open_pool
from app.db.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class MigratedDb:
    owner_dsn: str
    app_dsn: str
    app_password: str


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    slug: str
    name: str


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ carries the `integration` marker."""
    for item in items:
        if "/tests/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Superuser DSN of a real Postgres: TEST_DATABASE_URL or a throwaway embedded cluster."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    base = Path(tempfile.mkdtemp(prefix="vos-test-pg-"))
    base.chmod(0o711)  # the `postgres` user must traverse it
    server = EmbeddedPostgres(base / "cluster", fast_unsafe=True)
    try:
        yield server.start()
    finally:
        server.destroy()
        base.rmdir() if base.exists() else None


@pytest.fixture(scope="session")
def fresh_database(pg_server: str) -> Iterator[Callable[[], str]]:
    """Factory for new empty databases (dropped at session end); returns their owner DSN."""
    created: list[str] = []

    def create() -> str:
        name = f"vos_test_{secrets.token_hex(4)}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return make_conninfo(pg_server, dbname=name)

    yield create
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def migrated_db(fresh_database: Callable[[], str]) -> MigratedDb:
    """One database with all migrations (every helper's) applied, shared by the session."""
    owner = fresh_database()
    password = secrets.token_urlsafe(18)
    migrate(owner, app_password=password, log=lambda _msg: None)
    return MigratedDb(owner, make_conninfo(owner, user="vos_app", password=password), password)


@pytest.fixture(scope="session")
def owner_dsn(migrated_db: MigratedDb) -> str:
    return migrated_db.owner_dsn


@pytest.fixture(scope="session")
def app_dsn(migrated_db: MigratedDb) -> str:
    return migrated_db.app_dsn


@pytest.fixture(scope="session")
def app_pool(app_dsn: str) -> Iterator:
    pool = open_pool(app_dsn, max_size=8, name="vos-tests")
    pool.wait(timeout=30)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def make_tenant(owner_dsn: str) -> Callable[..., Tenant]:
    """Create tenants as the owner (the app role may not): `make_tenant("acme")`."""

    def create(slug: str = "t", name: str | None = None) -> Tenant:
        unique = f"{slug}-{secrets.token_hex(4)}"
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            (tenant_id,) = conn.execute(
                "INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
                [unique, name or unique],
            ).fetchone()
        return Tenant(tenant_id, unique, name or unique)

    return create
