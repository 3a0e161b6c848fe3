"""The migration runner behind `vos db migrate`.

Migrations are plain SQL files `app/db/migrations/NNNN_name.sql`, applied in numeric order and
recorded in `schema_migrations` (version, name, sha256 checksum, applied_at). Ranges: app core
0001–0099, workforce 0100–0199, Command Center 0200–0299; any file in the folder is picked up.

Guarantees:
- idempotent: applied versions are skipped; a second run applies nothing;
- one transaction for the whole run, under an advisory lock, so two migrators never
  interleave and a failure leaves the database exactly as it was;
- refuses a dirty state with a message that says what to do: a recorded migration whose file
  changed (checksum) or disappeared, or a recorded failure from an earlier run.

Example:
    applied = migrate("postgresql://owner@db/vos", app_password="…")
    # ['0001_app_role_and_tenants', …]  ([] when already up to date)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
APP_ROLE = "vos_app"
_LOCK_KEY = 0x766F735F6D6967  # "vos_mig": one migrator at a time
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS schema_migration_failures (
  version   integer NOT NULL,
  name      text NOT NULL,
  error     text NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """The database is in a state `vos db migrate` refuses to touch, or a migration failed."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: `0003_callbacks.sql` -> version 3, name `0003_callbacks`."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory`, in version order; rejects odd names and duplicates.

    Example:
        >>> [m.version for m in discover()][:1]
        [1]
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: migration files are named NNNN_lower_snake.sql; rename it"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name} and {found[version].name}.sql share version {version}; "
                "renumber one of them"
            )
        found[version] = Migration(version, path.stem, path.read_text())
    return [found[v] for v in sorted(found)]


def _check_clean(conn: psycopg.Connection, migrations: list[Migration]) -> set[int]:
    """Return the applied versions, or raise MigrationError if the state is dirty."""
    failure = conn.execute(
        "SELECT name, error, failed_at FROM schema_migration_failures ORDER BY failed_at DESC"
    ).fetchone()
    if failure:
        name, error, failed_at = failure
        raise MigrationError(
            f"dirty state: migration {name} failed at {failed_at:%Y-%m-%d %H:%M:%S%z} "
            f"({error.splitlines()[0] if error else 'no message'}). Its transaction was "
            "rolled back, so the schema is unchanged. Fix the migration, then run "
            "`vos db migrate --clear-failed`."
        )
    by_version = {m.version: m for m in migrations}
    applied = {}
    for version, name, checksum in conn.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    ):
        applied[version] = name
        current = by_version.get(version)
        if current is None:
            raise MigrationError(
                f"dirty state: the database has migration {name} but this code has no file "
                "for it; deploy the code that matches the database (never delete an "
                "applied migration)"
            )
        if current.checksum != checksum:
            raise MigrationError(
                f"dirty state: {name}.sql changed after it was applied (checksum "
                f"{checksum[:12]} recorded, {current.checksum[:12]} now). Restore the "
                "original file and put the change in a new migration."
            )
    return set(applied)


def _record_failure(owner_dsn: str, migration: Migration, error: str) -> None:
    """Record a failed migration in its own transaction (the run itself was rolled back)."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(_BOOKKEEPING)
        conn.execute(
            "INSERT INTO schema_migration_failures (version, name, error) VALUES (%s, %s, %s)",
            [migration.version, migration.name, error[:4000]],
        )


_RLS_AUDIT = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies,
       coalesce(obj_description(c.oid, 'pg_class'), '') AS comment
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
   AND (c.relname = 'tenants' OR EXISTS (
        SELECT 1 FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
 ORDER BY c.relname
"""


def rls_gaps(conn: psycopg.Connection) -> list[str]:
    """Tenant tables (those with a `tenant_id` column) that RLS does not fully guard.

    A table may opt out with a comment starting `rls-exempt:` and the reason, e.g.
    `COMMENT ON TABLE door_sources IS 'rls-exempt: routing only, read before the tenant is
    known'`.

    Example:
        rls_gaps(conn)   # [] when every tenant table has RLS enabled, forced, with a policy
    """
    gaps = []
    for name, enabled, forced, policies, comment in conn.execute(_RLS_AUDIT).fetchall():
        if comment.startswith("rls-exempt:"):
            continue
        if not enabled:
            gaps.append(f"{name}: row-level security is not enabled")
        elif not forced:
            gaps.append(f"{name}: row-level security is enabled but not FORCED")
        if not policies:
            gaps.append(f"{name}: has no row-level security policy (it would show no rows)")
    return gaps


def set_app_password(conn: psycopg.Connection, password: str) -> None:
    """Set the `vos_app` login password, hashed with SCRAM on this side of the wire.

    The server (and its statement log) only ever sees the SCRAM verifier, not the password.
    """
    verifier = conn.pgconn.encrypt_password(
        password.encode(), APP_ROLE.encode(), b"scram-sha-256"
    ).decode()
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(verifier))
    )


def migrate(
    owner_dsn: str,
    *,
    app_password: str | None = None,
    clear_failed: bool = False,
    directory: Path = MIGRATIONS_DIR,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Apply every pending migration in one transaction; return the names applied.

    `owner_dsn` must name the role that owns the schema (it creates `vos_app` if missing).
    `app_password`, when given, (re)sets the `vos_app` password in the same transaction.
    `clear_failed` forgets recorded failures after the operator fixed the migration.
    """
    migrations = discover(directory)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            return _migrate_locked(
                conn, owner_dsn, migrations, app_password, clear_failed, log
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def _migrate_locked(
    conn: psycopg.Connection,
    owner_dsn: str,
    migrations: list[Migration],
    app_password: str | None,
    clear_failed: bool,
    log: Callable[[str], None],
) -> list[str]:
    conn.execute(_BOOKKEEPING)
    if clear_failed:
        cleared = conn.execute("DELETE FROM schema_migration_failures").rowcount
        log(f"[db migrate] cleared {cleared} recorded failure(s)")
    applied = _check_clean(conn, migrations)
    pending = [m for m in migrations if m.version not in applied]
    done: list[str] = []
    current: Migration | None = None
    try:
        with conn.transaction():
            for current in pending:
                log(f"[db migrate] applying {current.name}")
                conn.execute(current.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    [current.version, current.name, current.checksum],
                )
                done.append(current.name)
            current = None
            gaps = rls_gaps(conn)
            if gaps:
                raise MigrationError(
                    "refusing to commit: tenant tables without full row-level security: "
                    + "; ".join(gaps) + ". Add `ENABLE` + `FORCE ROW LEVEL SECURITY` and a "
                    "tenant_isolation policy in the migration (nothing was applied)."
                )
            if app_password is not None:
                set_app_password(conn, app_password)
                log(f"[db migrate] set the {APP_ROLE} password")
    except psycopg.Error as exc:
        if current is None:
            raise
        _record_failure(owner_dsn, current, str(exc))
        raise MigrationError(
            f"migration {current.name} failed: {str(exc).strip()}\nNothing was applied "
            f"(the run was rolled back). Fix {current.name}.sql, then run "
            "`vos db migrate --clear-failed`."
        ) from exc
    log(
        f"[db migrate] applied {len(done)} migration(s)" if done
        else "[db migrate] already up to date"
    )
    return done
