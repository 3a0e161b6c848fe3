"""Operator tokens and CSRF for the Command Center.

A token reads `vost_<tenant uuid as 32 hex>_<secret>`. To check one, the UI opens a
`tenant_transaction` for the tenant named in the token and looks the token's SHA-256 up in
`operator_tokens`: row-level security does the tenant check, so a token with a forged tenant
part simply finds no row. Only the hash is stored (migration 0200).

The browser holds the token in an HttpOnly, SameSite=Strict cookie. Every form carries a CSRF
token derived from the session token (HMAC-SHA256 of a fixed label, keyed with the token), so
it survives restarts, needs no storage, and a page of another origin can neither read the
cookie nor compute the CSRF value. Requests that authenticate with `Authorization: Bearer`
carry no ambient credential and need no CSRF token.

Example:
    >>> token = new_token("0b0c8f5e-7d3c-4f7e-9a51-1c2d3e4f5a6b")
    >>> parse_token(token).hex
    '0b0c8f5e7d3c4f7e9a511c2d3e4f5a6b'
    >>> csrf_matches(token, csrf_for(token))
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from app.db import tenant_transaction

TOKEN_PREFIX = "vost_"
_TOKEN = re.compile(r"^vost_([0-9a-f]{32})_([A-Za-z0-9_-]{32,128})$")
_CSRF_LABEL = b"vos-command-center-csrf-v1"


class BadToken(ValueError):
    """A string that is not an operator token (wrong shape); says what one looks like."""


@dataclass(frozen=True)
class Operator:
    """Who is signed in: their tenant, token row and display names."""

    tenant_id: uuid.UUID
    token_id: uuid.UUID
    name: str
    tenant_name: str
    token: str


def new_token(tenant_id: uuid.UUID | str) -> str:
    """A fresh operator token for `tenant_id` (43 random URL-safe characters of secret)."""
    return f"{TOKEN_PREFIX}{uuid.UUID(str(tenant_id)).hex}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> uuid.UUID:
    """The tenant id a token names; raises BadToken when it is not shaped like one."""
    match = _TOKEN.match(token.strip())
    if match is None:
        raise BadToken("an operator token looks like vost_<32 hex>_<secret>; "
                       "`vos operator create` prints one")
    return uuid.UUID(hex=match.group(1))


def token_digest(token: str) -> bytes:
    """What `operator_tokens.token_sha256` stores for `token`."""
    return hashlib.sha256(token.strip().encode()).digest()


def authenticate(pool: ConnectionPool, token: str | None) -> Operator | None:
    """The operator `token` belongs to, or None (malformed, unknown, revoked).

    Example:
        authenticate(pool, request.cookies.get("vos_session"))
    """
    if not token:
        return None
    try:
        tenant_id = parse_token(token)
    except BadToken:
        return None
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        row = conn.execute(
            """SELECT o.id, o.name, t.name AS tenant_name
                 FROM operator_tokens o JOIN tenants t ON t.id = o.tenant_id
                WHERE o.token_sha256 = %s AND o.revoked_at IS NULL""",
            [token_digest(token)],
        ).fetchone()
    if row is None:
        return None
    return Operator(tenant_id, row["id"], row["name"], row["tenant_name"], token.strip())


def record_login(pool: ConnectionPool, operator: Operator) -> None:
    """Stamp the token's last use (at sign-in, not on every request)."""
    with tenant_transaction(pool, operator.tenant_id, actor="ui") as conn:
        conn.execute("UPDATE operator_tokens SET last_used_at = now() WHERE id = %s",
                     [operator.token_id])


def create_operator(conn: psycopg.Connection, tenant_id: uuid.UUID, name: str) -> str:
    """Insert an operator token row (owner connection) and return the token, shown once.

    Example:
        token = create_operator(conn, tenant_id, "ada")
    """
    token = new_token(tenant_id)
    conn.execute(
        "INSERT INTO operator_tokens (tenant_id, name, token_sha256) VALUES (%s, %s, %s)",
        [tenant_id, name, token_digest(token)],
    )
    return token


def csrf_for(session_token: str) -> str:
    """The CSRF value for forms of this session."""
    return hmac.new(session_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, submitted: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF value with the session's."""
    return bool(submitted) and hmac.compare_digest(csrf_for(session_token), submitted)
