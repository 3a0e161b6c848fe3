"""The settings model: what it accepts, and the clear errors for what it refuses."""

import pytest
from pydantic import ValidationError

from app.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_door_secrets_accept_one_secret_or_a_rotation_list(monkeypatch):
    monkeypatch.setenv(
        "VOS_DOOR_SECRETS", f'{{"edge": "{SECRET}", "ci": ["{SECRET}", "{SECRET}"]}}'
    )
    s = Settings()
    assert list(s.door_keys()) == ["edge", "ci"]
    assert len(s.door_keys()["ci"]) == 2
    assert len(s.door_keys()["edge"][0]) == 24


def test_production_without_database_url_is_refused_with_a_fix(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("VOS_ENV", "production")
    with pytest.raises(ValidationError, match="DATABASE_URL is required when VOS_ENV=production"):
        Settings()


def test_local_use_without_database_url_is_allowed(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("VOS_ENV", raising=False)
    assert Settings().database_url is None


def test_database_url_is_read_and_never_shown(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://vos_app:hunter2@db/vos")
    s = Settings()
    assert s.database_url.get_secret_value().endswith("@db/vos")
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"edge": "not-base64!!"}', "not `whsec_` followed by base64"),
        ('{"edge": "whsec_c2hvcnQ="}', "shorter than 16 bytes"),
        ('{"edge": []}', "has no secret"),
        ('{"Edge Fn": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}', "must be lowercase letters"),
    ],
)
def test_bad_door_secrets_are_refused_without_echoing_them(monkeypatch, value, message):
    monkeypatch.setenv("VOS_DOOR_SECRETS", value)
    with pytest.raises(ValidationError, match=message) as err:
        Settings()
    assert "not-base64" not in str(err.value)


def test_root_keeps_the_embedded_postgres_where_the_postgres_user_can_reach_it(monkeypatch):
    """As root the server runs as `postgres`, which cannot traverse /root (0700): `vos dev`
    as root used to stop there; an ordinary user keeps it in their home."""
    from pathlib import Path

    from app.settings import Settings, default_embedded_pg_dir

    assert default_embedded_pg_dir(uid=0) == Path("/var/lib/vos/postgres")
    assert default_embedded_pg_dir(uid=1000, home=Path("/home/ada")) == Path(
        "/home/ada/.local/share/vos/postgres")
    monkeypatch.delenv("VOS_EMBEDDED_PG_DIR", raising=False)
    assert Settings().embedded_pg_dir == default_embedded_pg_dir()
    monkeypatch.setenv("VOS_EMBEDDED_PG_DIR", "/tmp/elsewhere")
    assert Settings().embedded_pg_dir == Path("/tmp/elsewhere")
