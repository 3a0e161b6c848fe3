"""Operator tokens, sign-in sessions, CSRF and the sign-in rate limit of the Command Center.

One credential, two carriers (issue #14):
- **API clients** send the operator token itself: `Authorization: Bearer vost_…`.
- **Browsers** paste the token once into the sign-in form; the server then starts a
  *session*: a random id (32 bytes) in an HttpOnly, SameSite=Strict cookie, stored only as
  its SHA-256 in `operator_sessions` (migration 0304). Sign-out ends the session server-side;
  revoking the token ends all its sessions at their next request (the lookup joins
  `operator_tokens.revoked_at`); sessions also end after 12 h idle or 7 days.

A token reads `vost_<tenant uuid as 32 hex>_<secret>`, a session id `<tenant hex>.<secret>`.
To check either, the app opens a `tenant_transaction` for the tenant named in it and looks the
SHA-256 up: row-level security does the tenant check, so a forged tenant part finds no row.
The tenant always comes from the credential, never from a header.

Every form of a session carries a CSRF value derived from the session id (HMAC-SHA256 of a
fixed label, keyed with the id): it needs no storage, dies with the session, and a page of
another origin can neither read the cookie nor compute the value. Bearer requests carry no
ambient credential and need no CSRF value.

Example:
    >>> token = new_token("0b0c8f5e-7d3c-4f7e-9a51-1c2d3e4f5a6b")
    >>> parse_token(token).hex
    '0b0c8f5e7d3c4f7e9a511c2d3e4f5a6b'
    >>> sid = new_session_id("0b0c8f5e-7d3c-4f7e-9a51-1c2d3e4f5a6b")
    >>> parse_session_id(sid).hex
    '0b0c8f5e7d3c4f7e9a511c2d3e4f5a6b'
    >>> csrf_matches(sid, csrf_for(sid))
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from app.db import tenant_transaction

TOKEN_PREFIX = "vost_"
_TOKEN = re.compile(r"^vost_([0-9a-f]{32})_([A-Za-z0-9_-]{32,128})$")
_SESSION = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})$")
_CSRF_LABEL = b"vos-command-center-csrf-v2"
SESSION_IDLE_SECONDS = 12 * 3600
SESSION_MAX_SECONDS = 7 * 24 * 3600
_LAST_SEEN_GRANULARITY = 60  # stamp last_seen_at at most once a minute per session


class BadToken(ValueError):
    """A string that is not an operator token (wrong shape); says what one looks like."""


@dataclass(frozen=True)
class Operator:
    """Who is signed in: their tenant, token row and display names.

    `secret` is what authenticated this request (the session id for a browser, the token for
    a Bearer client); `via_session` says which. CSRF values are derived from the session id.
    """

    tenant_id: uuid.UUID
    token_id: uuid.UUID
    name: str
    tenant_name: str
    secret: str
    via_session: bool = False


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
        authenticate(pool, bearer_token_of(request))
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


# -- sessions ---------------------------------------------------------------------------------


def new_session_id(tenant_id: uuid.UUID | str) -> str:
    """A fresh session id: the tenant (for the RLS lookup) and 32 random bytes."""
    return f"{uuid.UUID(str(tenant_id)).hex}.{secrets.token_urlsafe(32)}"


def parse_session_id(session_id: str) -> uuid.UUID | None:
    """The tenant a session id names, or None when it is not shaped like one."""
    match = _SESSION.match(session_id)
    return uuid.UUID(hex=match.group(1)) if match else None


def _session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def start_session(pool: ConnectionPool, operator: Operator) -> str:
    """Start a browser session for a token-authenticated operator; returns the cookie value.

    Example:
        sid = start_session(pool, authenticate(pool, token))
    """
    session_id = new_session_id(operator.tenant_id)
    with tenant_transaction(pool, operator.tenant_id, actor="ui") as conn:
        conn.execute(
            """INSERT INTO operator_sessions (tenant_id, token_id, session_sha256, expires_at)
               VALUES (%s, %s, %s, now() + make_interval(secs => %s))""",
            [operator.tenant_id, operator.token_id, _session_digest(session_id),
             SESSION_MAX_SECONDS],
        )
    return session_id


def session_operator(pool: ConnectionPool, session_id: str | None) -> Operator | None:
    """The operator of a live session, or None (malformed, unknown, signed out, expired,
    idle too long, or its token revoked). Stamps `last_seen_at` (at most once a minute).

    Example:
        session_operator(pool, request.cookies.get("vos_session"))
    """
    tenant_id = parse_session_id(session_id) if session_id else None
    if tenant_id is None:
        return None
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        row = conn.execute(
            """SELECT s.id AS session_pk, s.last_seen_at < now() - make_interval(secs => %s)
                      AS stale, o.id, o.name, t.name AS tenant_name
                 FROM operator_sessions s
                 JOIN operator_tokens o ON o.id = s.token_id
                 JOIN tenants t ON t.id = s.tenant_id
                WHERE s.session_sha256 = %s AND s.ended_at IS NULL AND s.expires_at > now()
                  AND s.last_seen_at > now() - make_interval(secs => %s)
                  AND o.revoked_at IS NULL""",
            [_LAST_SEEN_GRANULARITY, _session_digest(session_id), SESSION_IDLE_SECONDS],
        ).fetchone()
        if row is not None and row["stale"]:
            conn.execute("UPDATE operator_sessions SET last_seen_at = now() WHERE id = %s",
                         [row["session_pk"]])
    if row is None:
        return None
    return Operator(tenant_id, row["id"], row["name"], row["tenant_name"], session_id,
                    via_session=True)


def end_session(pool: ConnectionPool, session_id: str) -> bool:
    """Sign-out: end the session server-side, so a captured cookie no longer works.

    Example:
        end_session(pool, request.cookies["vos_session"])   # True if it was live
    """
    tenant_id = parse_session_id(session_id)
    if tenant_id is None:
        return False
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        ended = conn.execute(
            "UPDATE operator_sessions SET ended_at = now() "
            "WHERE session_sha256 = %s AND ended_at IS NULL", [_session_digest(session_id)])
        return ended.rowcount == 1


# -- CSRF ---------------------------------------------------------------------------------------


def csrf_for(session_id: str) -> str:
    """The CSRF value for forms of this session."""
    return hmac.new(session_id.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, submitted: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF value with the session's."""
    return bool(submitted) and hmac.compare_digest(csrf_for(session_id), submitted)


# -- failed sign-ins ------------------------------------------------------------------------


class LoginLimiter:
    """Failed sign-ins per source address in a sliding window, in process memory.

    In-process on purpose: the API runs as one process, and the durable, cross-restart
    defence is the `vos-login` fail2ban jail reading the `login_failed` log lines. A restart
    forgets the counts (the jail does not).

    Example:
        >>> limiter = LoginLimiter(max_failures=2, window_seconds=60)
        >>> limiter.fail("10.0.0.1", now=0); limiter.fail("10.0.0.1", now=1)
        >>> limiter.retry_after("10.0.0.1", now=2)
        58
        >>> limiter.retry_after("10.0.0.1", now=61)
        0
    """

    def __init__(self, max_failures: int = 5, window_seconds: float = 60.0,
                 max_sources: int = 10000):
        self.max_failures, self.window, self.max_sources = max_failures, window_seconds, max_sources
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> deque[float]:
        times = self._failures.get(source, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, source: str, now: float | None = None) -> int:
        """Seconds until `source` may try again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(source, now)
            if len(times) < self.max_failures:
                return 0
            return max(1, int(times[-self.max_failures] + self.window - now + 0.999))

    def fail(self, source: str, now: float | None = None) -> None:
        """Count one failed sign-in from `source`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if source not in self._failures and len(self._failures) >= self.max_sources:
                # bounded memory under a spray of sources: forget the quietest ones
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]
                if len(self._failures) >= self.max_sources:
                    self._failures.pop(next(iter(self._failures)))
            times = self._recent(source, now)
            times.append(now)
            self._failures[source] = times
