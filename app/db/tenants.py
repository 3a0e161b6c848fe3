"""Tenants by slug or id: the one lookup every `--tenant SLUG|UUID` option uses.

The tenants policy shows `vos_app` only the row of the tenant already set, so a slug cannot
be looked up with a SELECT; `tenant_id_for_slug()` (migration 0302, SECURITY DEFINER) answers
one slug with one id and lists nothing. The owner role resolves the same way.

Example:
    with psycopg.connect(dsn) as conn:
        tenant_id = tenant_id_for(conn, "acme")      # UUID('…') or None
"""

from __future__ import annotations

import re
import uuid

import psycopg

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # as tenants.slug's CHECK allows


def tenant_id_for(conn: psycopg.Connection, value: str) -> uuid.UUID | None:
    """The id of the tenant named by a slug or a UUID string; None if there is none.

    A UUID is returned as given: whether it exists is for the tenant transaction to find
    out (RLS shows a tenant its own row). Raises ValueError for a value that is neither.
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        pass
    if not SLUG.match(value):
        raise ValueError(f"{value[:70]!r} is neither a tenant slug (lowercase letters, digits "
                         "and dashes) nor a UUID")
    row = conn.execute("SELECT tenant_id_for_slug(%s)", [value]).fetchone()
    found = row["tenant_id_for_slug"] if isinstance(row, dict) else row[0]
    return uuid.UUID(str(found)) if found else None
