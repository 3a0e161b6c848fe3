"""How a dispatch worker paces itself and gives up: one typed policy, defaults in one place.

Read from the agents file's `worker:` block (`app.agents.spec.AgentsFile.worker`) or built
in code. Every knob has its default here.

The bound this policy puts on a task that always fails: at most `max_attempts` attempts,
ever (then the task is Failed and waits for an operator's retry), spread over at least
`sum(backoff_floor(n) for n in 1..max_attempts-1)` seconds. Each attempt writes three
task_events (claimed, work.failed, released; the last one also status_changed).

Example:
    >>> WorkerPolicy().max_attempts
    5
    >>> p = WorkerPolicy(backoff_base_seconds=30, backoff_max_seconds=100, jitter=0)
    >>> [p.backoff(n) for n in (1, 2, 3, 4)]
    [30.0, 60.0, 100.0, 100.0]
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WorkerPolicy(BaseModel):
    """Attempts, backoff, lease, heartbeat and housekeeping of a dispatch worker."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(5, ge=1, le=100, description="failed attempts before Failed")
    backoff_base_seconds: float = Field(30, gt=0, le=86400,
                                        description="delay after the first failure")
    backoff_max_seconds: float = Field(3600, gt=0, le=7 * 86400,
                                       description="cap on the delay between attempts")
    jitter: float = Field(0.5, ge=0, le=1,
                          description="the delay is drawn from [d × (1 - jitter), d], so "
                                      "workers that failed together do not retry together")
    lease_seconds: float = Field(300, ge=1, le=86400,
                                 description="a claim's lease; renewed while the work runs")
    heartbeat_seconds: float = Field(30, gt=0, le=3600,
                                     description="how often the lease is renewed")
    idle_seconds: float = Field(1.0, ge=0.05, le=300,
                                description="poll interval when no task is workable")
    heartbeat_file: str | None = Field(
        None, description="a file the worker touches every loop (the container's health "
                          "check reads its age); None: no file")
    reap_seconds: float = Field(60, ge=1, le=86400,
                                description="how often the loop reaps stale reservations and "
                                            "counts stale claims")
    stale_reservation_seconds: float = Field(
        900, ge=60, le=7 * 86400,
        description="an open budget reservation older than this was left by a dead caller "
                    "and is settled at its estimate (longer than any model call)")
    reap_limit: int = Field(500, ge=1, le=100000,
                            description="at most this many reservations settled per reap")
    db_retry_max_seconds: float = Field(30, ge=0.1, le=600,
                                        description="longest pause between retries while "
                                                    "Postgres is unreachable")

    @model_validator(mode="after")
    def _coherent(self) -> WorkerPolicy:
        if self.backoff_base_seconds > self.backoff_max_seconds:
            raise ValueError(f"backoff_base_seconds ({self.backoff_base_seconds}) must not "
                             f"exceed backoff_max_seconds ({self.backoff_max_seconds})")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter "
                             f"than lease_seconds ({self.lease_seconds}), or a lease expires "
                             "before it is renewed")
        return self

    def backoff_ceiling(self, attempt: int) -> float:
        """The delay before retrying after failed attempt number `attempt` (1-based), before
        jitter: base × 2^(attempt-1), capped at backoff_max_seconds."""
        exponent = min(attempt - 1, 60)  # 2**60 × anything > any cap: no float overflow
        return min(self.backoff_base_seconds * 2.0 ** exponent, self.backoff_max_seconds)

    def backoff_floor(self, attempt: int) -> float:
        """The shortest delay jitter can draw after failed attempt `attempt`."""
        return self.backoff_ceiling(attempt) * (1 - self.jitter)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay (seconds) after failed attempt `attempt`, jitter drawn from `rng`."""
        ceiling = self.backoff_ceiling(attempt)
        draw = (rng or random).random()
        return ceiling * (1 - self.jitter * draw)
