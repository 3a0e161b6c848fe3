"""The Agent VOS app's settings: one pydantic-settings model, read once at start-up.

Every process reads the same model; nothing deeper in `app/` touches `os.environ`.

Environment variables:
    DATABASE_URL        Postgres DSN. For `vos db migrate` it names the *owner* role; for
                        `vos api serve` / `vos door serve` it names the `vos_app` role (the
                        app refuses to start as a role that owns tables or bypasses RLS).
                        Required when VOS_ENV=production. Absent in local use: an embedded
                        Postgres is started in VOS_EMBEDDED_PG_DIR (and the CLI says so).
    VOS_ENV             `local` (default) or `production`.
    VOS_DOOR_SECRETS    JSON object: source name -> `whsec_…` secret, or a list of secrets
                        while a key is being rotated. Example:
                        `{"github": "whsec_…", "edge": ["whsec_new…", "whsec_old…"]}`
    VOS_DOOR_MAX_BODY_BYTES, VOS_DOOR_TOLERANCE_SECONDS, VOS_DOOR_TRUSTED_PROXIES,
    VOS_DOOR_HEADER_TIMEOUT_SECONDS, VOS_DOOR_BODY_TIMEOUT_SECONDS,
    VOS_DOOR_IDLE_TIMEOUT_SECONDS, VOS_DOOR_MAX_CONNECTIONS, VOS_DOOR_MAX_JSON_DEPTH,
    VOS_EMBEDDED_PG_DIR, VOS_API_ALLOWED_HOSTS,
    VOS_DB_POOL_MAX_SIZE, VOS_DB_TIMEOUT_SECONDS, VOS_DB_STATEMENT_TIMEOUT_SECONDS,
    VOS_DB_QUERY_TIMEOUT_SECONDS, VOS_DB_TCP_TIMEOUT_SECONDS: see the field docs below.

Example:
    >>> s = Settings(database_url="postgresql://vos_app@db/vos", door_secrets={"edge": "whsec_x"})
    >>> s.door_secrets["edge"]
    ['whsec_x']
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_PREFIX = "whsec_"
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as door_sources.source allows
# a DNS name, an IPv4 address or an (unbracketed) IPv6 address: what a Host header names
API_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.?)*|[0-9A-Fa-f:.]+)$")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def decode_whsec(secret: str) -> bytes:
    """Return the HMAC key inside a Standard Webhooks secret (`whsec_` + base64).

    Example:
        >>> decode_whsec("whsec_" + base64.b64encode(b"k" * 24).decode())[:3]
        b'kkk'
    """
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            "door secret is not `whsec_` followed by base64; copy it again from the sender"
        ) from exc
    if len(key) < 16:
        raise ValueError("door secret is shorter than 16 bytes; generate a new one (24+ bytes)")
    return key


def default_embedded_pg_dir(uid: int | None = None, home: Path | None = None) -> Path:
    """Where local use keeps its embedded Postgres when VOS_EMBEDDED_PG_DIR is unset.

    As root the server runs as the `postgres` system user, which cannot traverse /root
    (0700 on Debian and Ubuntu), so root's cluster lives under /var/lib/vos instead; an
    ordinary user keeps it in their home.

    Example:
        >>> default_embedded_pg_dir(uid=0)
        PosixPath('/var/lib/vos/postgres')
        >>> default_embedded_pg_dir(uid=1000, home=Path("/home/ada"))
        PosixPath('/home/ada/.local/share/vos/postgres')
    """
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return Path("/var/lib/vos/postgres")
    return (home or Path.home()) / ".local/share/vos/postgres"


class Settings(BaseSettings):
    """Everything the app reads from its environment, validated before anything connects."""

    model_config = SettingsConfigDict(env_prefix="VOS_", extra="ignore", hide_input_in_errors=True)

    env: Literal["local", "production"] = "local"
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    door_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description="source name -> one or more whsec_ secrets (several during rotation)",
    )
    door_max_body_bytes: int = Field(default=64 * 1024, ge=256, le=10 * 1024 * 1024)
    door_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    door_trusted_proxies: str = Field(
        default="",
        description="comma-separated proxy addresses whose X-Forwarded-For the door believes "
        "(empty: none; the door then logs the TCP peer as the source for fail2ban)",
    )
    door_header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="a request's line and headers must arrive within this many seconds of the "
        "connection (or of its first byte on a kept-alive one), else 408 + slow_client",
    )
    door_body_timeout_seconds: float = Field(
        default=20.0, gt=0, le=600,
        description="a request's body must arrive within this many seconds after its headers",
    )
    door_idle_timeout_seconds: int = Field(
        default=5, ge=1, le=300, description="an idle keep-alive connection is closed after this",
    )
    door_max_connections: int = Field(
        default=100, ge=1, le=10000,
        description="open connections beyond this get 503 busy (slow ones count until closed)",
    )
    door_workers: int = Field(
        default=1, ge=1, le=64,
        description="door processes (uvicorn workers, e.g. one per core); VOS_DB_POOL_MAX_SIZE "
        "is split between them, and each applies the connection cap to its own connections",
    )
    door_max_json_depth: int = Field(
        default=32, ge=2, le=256, description="deeper nested callback JSON is refused (too_deep)",
    )
    api_allowed_hosts: str = Field(
        default="",
        description="comma-separated extra Host names the private API answers to, besides its "
        "bind address (unless 0.0.0.0), 127.0.0.1 and localhost; in the compose stack (which "
        "binds 0.0.0.0 in the container) set the mesh IP here. Any other Host gets 400",
    )
    embedded_pg_dir: Path = Field(
        default_factory=lambda: default_embedded_pg_dir(),
        description="where local use keeps its embedded Postgres (never used in production)",
    )
    db_pool_max_size: int = Field(default=10, ge=1, le=200)
    db_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60,
        description="how long a request waits for a pooled connection before 503 (new "
        "connections are opened in the background, with a separate 10 s connect timeout)",
    )
    db_statement_timeout_seconds: float = Field(
        default=2.0, gt=0, le=600,
        description="server-side statement_timeout: a healthy but slow Postgres cancels the "
        "statement itself (useless when the server is frozen: see db_query_timeout_seconds)",
    )
    db_query_timeout_seconds: float = Field(
        default=2.5, gt=0, le=600,
        description="client-side bound on one round trip to Postgres: a frozen or blackholed "
        "server answers nothing, so the app closes the connection and answers 503. Keep it "
        "above db_statement_timeout_seconds; a request fails within about db_timeout_seconds "
        "+ this at worst (the defaults: 4.5 s)",
    )
    db_tcp_timeout_seconds: float = Field(
        default=10.0, ge=2, le=600,
        description="TCP keepalives and tcp_user_timeout: the kernel drops a connection whose "
        "peer stopped acknowledging (a network blackhole) within about this long",
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        """`DATABASE_URL=` (empty, as env files often leave it) means unset."""
        return None if value == "" else value

    @field_validator("door_secrets", mode="before")
    @classmethod
    def _one_or_many_secrets(cls, value: object) -> object:
        """Accept `{"src": "whsec_…"}` as well as `{"src": ["whsec_…", …]}`."""
        if isinstance(value, dict):
            return {k: ([v] if isinstance(v, str | SecretStr) else v) for k, v in value.items()}
        return value

    @field_validator("door_secrets")
    @classmethod
    def _secrets_are_whsec(cls, value: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for source, secrets in value.items():
            if not SOURCE_NAME.match(source):
                raise ValueError(
                    f"door source name {source!r} must be lowercase letters, digits, - and _ "
                    "(at most 63, starting with a letter or digit)"
                )
            if not secrets:
                raise ValueError(f"door source {source!r} has no secret")
            for secret in secrets:
                try:
                    decode_whsec(secret.get_secret_value())
                except ValueError as exc:
                    raise ValueError(f"door source {source!r}: {exc}") from None
        return value

    @field_validator("api_allowed_hosts")
    @classmethod
    def _hosts_are_names_or_addresses(cls, value: str) -> str:
        for host in (h.strip() for h in value.split(",")):
            if host and (not API_HOST.match(host) or (":" in host and not _is_ip(host))):
                raise ValueError(
                    f"api_allowed_hosts: {host[:60]!r} is not a host name or IP address "
                    "(no ports, schemes, paths or wildcards; e.g. 100.64.0.1,vos.example.ts.net)")
        return value

    def api_hosts(self) -> list[str]:
        """The configured extra API Host names.

        Example:
            >>> Settings(api_allowed_hosts=" 100.64.0.1, vos.example.ts.net").api_hosts()
            ['100.64.0.1', 'vos.example.ts.net']
        """
        return [h.strip() for h in self.api_allowed_hosts.split(",") if h.strip()]

    @model_validator(mode="after")
    def _client_bound_above_server_bound(self) -> Settings:
        """The server should cancel a slow statement before the client gives up on it."""
        if self.db_query_timeout_seconds <= self.db_statement_timeout_seconds:
            raise ValueError(
                f"db_query_timeout_seconds ({self.db_query_timeout_seconds:g}) must be greater "
                f"than db_statement_timeout_seconds ({self.db_statement_timeout_seconds:g}), "
                "or a merely slow statement would cost a connection instead of a clean cancel"
            )
        return self

    def db_pool_options(self) -> dict[str, float | int]:
        """The `open_pool` bounds these settings describe (see app.db.open_pool).

        Example:
            >>> Settings().db_pool_options()["query_timeout"]
            2.5
        """
        return {
            "timeout": self.db_timeout_seconds,
            "statement_timeout_ms": int(self.db_statement_timeout_seconds * 1000),
            "query_timeout": self.db_query_timeout_seconds,
            "check_timeout": min(1.0, self.db_query_timeout_seconds),
            "tcp_timeout": self.db_tcp_timeout_seconds,
        }

    @model_validator(mode="after")
    def _production_needs_database_url(self) -> Settings:
        if self.env == "production" and self.database_url is None:
            raise ValueError(
                "DATABASE_URL is required when VOS_ENV=production "
                "(the embedded Postgres is for local use only); set it in the env file"
            )
        return self

    def door_keys(self) -> dict[str, list[bytes]]:
        """Decoded HMAC keys per source, newest first as configured.

        Example:
            >>> Settings(door_secrets={}).door_keys()
            {}
        """
        return {
            source: [decode_whsec(s.get_secret_value()) for s in secrets]
            for source, secrets in self.door_secrets.items()
        }
