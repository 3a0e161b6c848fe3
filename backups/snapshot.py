"""Per-table row counts taken in the SAME snapshot pg_dump then dumps.

A REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`), counts every
table inside it, and stays open while `pg_dump --snapshot=ID` runs, so the manifest's counts
and the dump describe the same instant, whatever writes happen meanwhile.

The role that dumps must bypass row-level security (the database owner or a BYPASSRLS role):
otherwise both the counts and pg_dump would see only part of the rows.

Example:
    with exported_snapshot(dsn) as snap:
        print(snap.snapshot_id, snap.row_counts)   # '00000003-0000001B-1', {'public.tasks': 12}
        subprocess.run(["pg_dump", f"--snapshot={snap.snapshot_id}", ...])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

# Ordinary tables pg_dump writes data for: not system schemas, not owned by an extension.
TABLES_QUERY = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    row_counts: dict[str, int]
    server_version: str
    database: str


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    """{"schema.table": rows} for every table, in the connection's current snapshot."""
    counts = {}
    for schema, table in conn.execute(TABLES_QUERY).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))
        counts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return counts


@contextmanager
def exported_snapshot(dsn: str) -> Iterator[Snapshot]:
    """Open a REPEATABLE READ transaction, export its snapshot, count rows; keep it open
    for the duration of the `with` block (pg_dump must attach while it is open)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            # First statement of the transaction: it fixes the snapshot that gets exported.
            (snapshot_id,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
            counts = count_rows(conn)
            version = conn.execute("SHOW server_version").fetchone()[0]
            database = conn.execute("SELECT current_database()").fetchone()[0]
            yield Snapshot(snapshot_id, counts, version, database)
        finally:
            conn.execute("ROLLBACK")
