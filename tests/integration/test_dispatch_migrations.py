"""`vos db migrate`: ordered, recorded, idempotent, one transaction, refuses a dirty state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.db import MigrationError, migrate
from app.db.migrate import MIGRATIONS_DIR

REPO = Path(__file__).resolve().parents[2]
quiet = {"log": lambda _msg: None}


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A private copy of the real migrations that a test may add to or tamper with."""
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_applies_in_order_records_checksums_and_is_idempotent(fresh_database, migrations):
    dsn = fresh_database()
    applied = migrate(dsn, directory=migrations, **quiet)
    assert applied == sorted(applied) and applied[0] == "0001_app_role_and_tenants"
    assert {"tenants", "agents", "tasks", "task_events", "callbacks"} <= tables(dsn)
    assert migrate(dsn, directory=migrations, **quiet) == []
    with psycopg.connect(dsn) as conn:
        recorded = conn.execute("SELECT name, length(checksum) FROM schema_migrations "
                                "ORDER BY version").fetchall()
    assert [name for name, _ in recorded] == applied
    assert {length for _, length in recorded} == {64}


def test_a_changed_migration_is_refused_and_nothing_runs(fresh_database, migrations):
    dsn = fresh_database()
    migrate(dsn, directory=migrations, **quiet)
    first = migrations / "0001_app_role_and_tenants.sql"
    first.write_text(first.read_text() + "\n-- edited after release\n")
    (migrations / "0098_later.sql").write_text("CREATE TABLE later (id int);")
    with pytest.raises(MigrationError, match="0001_app_role_and_tenants.sql changed after it "
                       "was applied.*new migration"):
        migrate(dsn, directory=migrations, **quiet)
    assert "later" not in tables(dsn)


def test_a_failed_migration_rolls_back_the_run_and_leaves_a_dirty_mark(fresh_database,
                                                                        migrations):
    dsn = fresh_database()
    (migrations / "0097_good.sql").write_text("CREATE TABLE good (id int);")
    (migrations / "0098_bad.sql").write_text("CREATE TABLE bad (id int); SELECT 1/0;")
    failed = "(?s)0098_bad failed: division by zero.*--clear-failed"
    with pytest.raises(MigrationError, match=failed):
        migrate(dsn, directory=migrations, **quiet)
    assert not {"tenants", "good", "bad"} & tables(dsn), "the whole run was rolled back"
    (migrations / "0098_bad.sql").write_text("CREATE TABLE bad (id int);")
    with pytest.raises(MigrationError, match="dirty state: migration 0098_bad failed"):
        migrate(dsn, directory=migrations, **quiet)
    applied = migrate(dsn, directory=migrations, clear_failed=True, **quiet)
    assert applied.index("0098_bad") == applied.index("0097_good") + 1


def test_a_recorded_migration_without_its_file_is_refused(fresh_database, migrations):
    dsn = fresh_database()
    (migrations / "0099_extra.sql").write_text("CREATE TABLE extra (id int);")
    migrate(dsn, directory=migrations, **quiet)
    (migrations / "0099_extra.sql").unlink()
    with pytest.raises(MigrationError, match="has migration 0099_extra but this code has no file"):
        migrate(dsn, directory=migrations, **quiet)


def test_a_tenant_table_without_forced_rls_is_refused(fresh_database, migrations):
    dsn = fresh_database()
    (migrations / "0099_leaky.sql").write_text(
        "CREATE TABLE notes (id int, tenant_id uuid REFERENCES tenants(id));\n"
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;\n"
        "CREATE POLICY p ON notes USING (tenant_id = current_setting('app.tenant_id')::uuid);"
    )
    with pytest.raises(MigrationError, match="notes: row-level security is enabled but not "
                       "FORCED.*nothing was applied"):
        migrate(dsn, directory=migrations, **quiet)
    assert "notes" not in tables(dsn) and "tasks" not in tables(dsn)


def test_badly_named_files_are_refused_before_connecting(migrations):
    (migrations / "12_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="named NNNN_lower_snake.sql"):
        migrate("postgresql://nobody@127.0.0.1:1/x", directory=migrations, **quiet)


def vos(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=60, env={**os.environ, **env},
    )


def test_cli_migrate_sets_a_scram_app_password_and_is_rerunnable(fresh_database, migrated_db):
    dsn = fresh_database()
    # vos_app is a cluster-wide role: keep the session's password, or other tests lose access
    password = migrated_db.app_password
    env = {"DATABASE_URL": dsn, "VOS_TEST_APP_PW": password}
    first = vos("db", "migrate", "--app-password-env", "VOS_TEST_APP_PW", env=env)
    assert first.returncode == 0, first.stderr
    assert "applying 0001_app_role_and_tenants" in first.stdout
    assert password not in first.stdout + first.stderr
    again = vos("db", "migrate", env=env)
    assert again.returncode == 0 and "already up to date" in again.stdout
    with psycopg.connect(dsn) as conn:
        (stored,) = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'vos_app'").fetchone()
    assert stored.startswith("SCRAM-SHA-256$")
    app = make_conninfo(dsn, user="vos_app", password=password)
    with psycopg.connect(app) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("vos_app",)


def test_cli_migrate_explains_what_is_missing(fresh_database):
    no_url = vos("db", "migrate", env={"DATABASE_URL": ""})
    assert no_url.returncode == 2 and "DATABASE_URL is not set" in no_url.stderr
    unreachable = vos("db", "migrate", env={"DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert unreachable.returncode == 1 and "cannot reach Postgres" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    missing_pw = vos("db", "migrate", "--app-password-env", "VOS_NOT_SET_ANYWHERE",
                     env={"DATABASE_URL": fresh_database()})
    assert missing_pw.returncode == 2 and "VOS_NOT_SET_ANYWHERE is empty or unset" in \
        missing_pw.stderr
