"""WorkerPolicy: the backoff schedule (exponential, capped, jittered) and coherent settings."""

import random

import pytest
from pydantic import ValidationError

from app.dispatch.policy import WorkerPolicy


def test_backoff_doubles_from_the_base_and_stops_at_the_cap():
    policy = WorkerPolicy(backoff_base_seconds=30, backoff_max_seconds=3600, jitter=0)
    assert [policy.backoff(n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert policy.backoff(10_000) == 3600  # no overflow for absurd attempt numbers


def test_jitter_stays_within_its_band_and_actually_varies():
    policy = WorkerPolicy(backoff_base_seconds=10, backoff_max_seconds=100, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(1, 7):
        draws = [policy.backoff(attempt, rng) for _ in range(200)]
        ceiling = min(10 * 2 ** (attempt - 1), 100)
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        assert max(draws) - min(draws) > ceiling / 10, "jitter spreads retries out"
        assert policy.backoff_floor(attempt) == ceiling / 2


@pytest.mark.parametrize(("fields", "message"), [
    ({"backoff_base_seconds": 100, "backoff_max_seconds": 10}, "backoff_base_seconds"),
    ({"lease_seconds": 10, "heartbeat_seconds": 10}, "heartbeat_seconds"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attemps": 3}, "max_attemps"),
])
def test_incoherent_settings_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        WorkerPolicy(**fields)
