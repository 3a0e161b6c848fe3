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
    VOS_EMBEDDED_PG_DIR,
    VOS_DB_POOL_MAX_SIZE, VOS_DB_TIMEOUT_SECONDS: see the field docs below.

Example:
    >>> s = Settings(database_url="postgresql://vos_app@db/vos", door_secrets={"edge": "whsec_x"})
    >>> s.door_secrets["edge"]
    ['whsec_x']
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_PREFIX = "whsec_"
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as door_sources.source allows


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
    embedded_pg_dir: Path = Field(
        default=Path.home() / ".local/share/vos/postgres",
        description="where local use keeps its embedded Postgres (never used in production)",
    )
    db_pool_max_size: int = Field(default=10, ge=1, le=200)
    db_timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="how long a request waits for Postgres before 503"
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
