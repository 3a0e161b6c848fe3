"""The router: per-agent fallback chain, retries with backoff, cooldowns, ledger per attempt.

For each deployment in the agent's chain (skipping ones cooling down, and after a
context-length error every one whose window is not larger than the failed one):

- reserve the worst-case cost against the agent's budget (hard stop when it does not fit),
  from a bound of the input tokens that holds for any input (`max_input_tokens`);
- call the provider; settle the reservation with the attempt's outcome and actual cost;
- on 429 / 5xx / 529 / connection errors retry with exponential backoff, never sooner than
  the server's Retry-After; after the last retry (or a Retry-After longer than we wait) put
  the deployment in cooldown and fall back to the next;
- on 401/403 cool the deployment down and fall back (a bad key will not heal by retrying);
- on a context-length error fall back to a larger-context deployment;
- on another 400 stop: the request itself is wrong and would fail everywhere.

Example:
    >>> policy = RetryPolicy(base_delay=0.5, max_delay=4)
    >>> [policy.backoff(n) for n in (1, 2, 3, 4)]
    [0.5, 1.0, 2.0, 4.0]
"""

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from app.agents.prefix import PromptParts
from app.agents.prices import PriceBook, Usage, cost_usd
from app.agents.providers import Completion, Provider, ProviderError, monotonic_ms
from app.agents.sanitize import Sanitizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    """One model at one provider, addressable by `name` in an agent's chain."""

    name: str
    provider: Provider
    model: str
    context_window: int
    max_output_tokens: int = 1024

    @property
    def provider_name(self) -> str:
        return self.provider.provider


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to push one deployment before falling back."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    cooldown_seconds: float = 60.0
    jitter: float = 0.0

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based), capped, with jitter."""
        delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return delay + random.uniform(0, self.jitter * delay) if self.jitter else delay


class Cooldowns:
    """Deployments that failed recently, and until when (thread-safe, in-process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def trip(self, name: str, seconds: float) -> None:
        with self._lock:
            self._until[name] = max(self._until.get(name, 0.0), self._clock() + seconds)

    def active(self, name: str) -> bool:
        with self._lock:
            return self._until.get(name, 0.0) > self._clock()

    def clear(self, name: str) -> None:
        with self._lock:
            self._until.pop(name, None)


@dataclass(frozen=True)
class CallContext:
    """Who is calling: tenant, agent and task, plus one id shared by all attempts."""

    tenant_id: Any
    agent_id: Any
    task_id: Any = None
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class AttemptRecord:
    """One ledger row: an attempt against one deployment, failed or not."""

    context: CallContext
    attempt_no: int
    deployment: str
    provider: str
    model_requested: str
    model_served: str | None
    usage: Usage
    latency_ms: int
    outcome: str
    next_action: str | None = None
    http_status: int | None = None
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    cost_usd: Decimal = Decimal(0)


class BudgetExceeded(Exception):
    """The agent's budget cannot cover this call's worst-case cost; nothing was sent."""


class CallRejected(Exception):
    """The provider rejected the request itself (HTTP 400); retrying elsewhere won't help."""


class AllDeploymentsFailed(Exception):
    """Every deployment in the chain failed or was skipped; `attempts` says how."""

    def __init__(self, message: str, attempts: list[AttemptRecord]):
        super().__init__(message)
        self.attempts = attempts


class Accounting(Protocol):
    """Reserves budget before an attempt and writes the attempt's ledger row after it."""

    def reserve(self, ctx: CallContext, deployment: Deployment, input_tokens: int,
                max_output_tokens: int) -> Any:
        """Return a reservation handle or raise BudgetExceeded.

        `input_tokens` is an upper bound (`PromptParts.max_input_tokens`), not an estimate.
        """

    def settle(self, reservation: Any, record: AttemptRecord) -> Decimal:
        """Price the attempt, write its ledger row, release the reservation; return cost."""


class RecordingAccounting:
    """Accounting without a database: prices from a PriceBook, rows kept in memory.

    For unit tests and offline demos; production uses `ledger.PostgresAccounting`.
    """

    def __init__(self, prices: PriceBook):
        self.prices = prices
        self.records: list[AttemptRecord] = []
        self._lock = threading.Lock()

    def reserve(self, ctx: CallContext, deployment: Deployment, input_tokens: int,
                max_output_tokens: int) -> Deployment:
        self.prices.price_at(deployment.provider_name, deployment.model)
        return deployment

    def settle(self, reservation: Deployment, record: AttemptRecord) -> Decimal:
        price = self.prices.price_at(record.provider, record.model_requested, record.started_at)
        record.cost_usd = cost_usd(record.usage, price)
        with self._lock:
            self.records.append(record)
        return record.cost_usd


@dataclass
class RoutedCompletion:
    """The answer plus every attempt it took, in order."""

    completion: Completion
    deployment: Deployment
    attempts: list[AttemptRecord]

    @property
    def cost_usd(self) -> Decimal:
        return sum((a.cost_usd for a in self.attempts), Decimal(0))


NO_USAGE = Usage(0, 0, 0, 0)


class Router:
    """Routes a prompt through an agent's chain of deployments."""

    def __init__(self, deployments: list[Deployment], accounting: Accounting, *,
                 default_chain: list[str] | None = None, policy: RetryPolicy | None = None,
                 cooldowns: Cooldowns | None = None, sanitizer: Sanitizer | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.deployments = {d.name: d for d in deployments}
        self.default_chain = default_chain or [d.name for d in deployments]
        self.accounting = accounting
        self.policy = policy or RetryPolicy()
        self.cooldowns = cooldowns or Cooldowns()
        self.sanitizer = sanitizer or Sanitizer()
        self.sleep = sleep
        self.resolve_chain(self.default_chain)

    def resolve_chain(self, names: list[str] | None) -> list[Deployment]:
        """Deployments for a chain of names; unknown names are a configuration error.

        Example: an agent's `model_preferences` of `{"chain": ["sonnet", "gpt-4.1"]}`.
        """
        names = names or self.default_chain
        unknown = [n for n in names if n not in self.deployments]
        if unknown:
            raise ValueError(f"unknown deployment(s) {unknown} in chain; configured: "
                             f"{sorted(self.deployments)}. Fix the agent's model_preferences.")
        return [self.deployments[n] for n in names]

    def complete(self, ctx: CallContext, parts: PromptParts,
                 chain: list[str] | None = None) -> RoutedCompletion:
        """Answer `parts` through the chain; raise BudgetExceeded, CallRejected or
        AllDeploymentsFailed when it cannot."""
        parts = parts.sanitized(self.sanitizer)
        # The reservation must hold for ANY input, so it uses the byte bound, not the
        # word-piece estimate (a hex blob is one word piece but thousands of tokens).
        input_tokens = parts.max_input_tokens()
        attempts: list[AttemptRecord] = []
        larger_than = 0
        for deployment in self.resolve_chain(chain):
            if deployment.context_window <= larger_than:
                log.info("skip %s: context window %d not larger than %d", deployment.name,
                         deployment.context_window, larger_than)
                continue
            if self.cooldowns.active(deployment.name):
                log.info("skip %s: cooling down", deployment.name)
                continue
            result = self._try_deployment(ctx, deployment, parts, input_tokens, attempts)
            if isinstance(result, Completion):
                return RoutedCompletion(result, deployment, attempts)
            if result == "larger_context":
                larger_than = deployment.context_window
        summary = "; ".join(f"{a.deployment}#{a.attempt_no} {a.outcome}" for a in attempts)
        raise AllDeploymentsFailed(
            f"no deployment answered (attempts: {summary or 'none, all skipped'}); check "
            "provider status and keys, or add a fallback to the agent's chain", attempts)

    def _try_deployment(self, ctx: CallContext, deployment: Deployment, parts: PromptParts,
                        input_tokens: int, attempts: list[AttemptRecord]
                        ) -> Completion | str:
        """Attempts against one deployment: a Completion, or why we moved on."""
        for attempt_no in range(1, self.policy.max_attempts + 1):
            reservation = self.accounting.reserve(ctx, deployment, input_tokens,
                                                  deployment.max_output_tokens)
            started_at, start = datetime.now(UTC), time.monotonic()
            try:
                completion = deployment.provider.complete(parts, deployment.model,
                                                          deployment.max_output_tokens)
            except ProviderError as err:
                action, wait = self._decide(err, attempt_no)
                record = AttemptRecord(
                    ctx, len(attempts) + 1, deployment.name, deployment.provider_name,
                    deployment.model, None, NO_USAGE, monotonic_ms(start), err.kind, action,
                    err.status, err.message[:500], started_at)
                self.accounting.settle(reservation, record)
                attempts.append(record)
                log.warning("%s attempt %d: %s -> %s", deployment.name, attempt_no, err, action)
                if action == "retry":
                    self.sleep(wait)
                    continue
                if action == "stop":
                    raise CallRejected(
                        f"{deployment.name} rejected the request: {err.message}. Fix the "
                        "prompt or tool definitions; retrying elsewhere would fail the same way"
                    ) from err
                if action == "cooldown":
                    self.cooldowns.trip(deployment.name, wait)
                return action
            record = AttemptRecord(
                ctx, len(attempts) + 1, deployment.name, deployment.provider_name,
                deployment.model, completion.model_served, completion.usage,
                monotonic_ms(start), "ok", None, 200, None, started_at)
            self.accounting.settle(reservation, record)
            attempts.append(record)
            self.cooldowns.clear(deployment.name)
            return completion
        return "cooldown"  # unreachable: the last attempt always returns an action

    def _decide(self, err: ProviderError, attempt_no: int) -> tuple[str, float]:
        """(next action, seconds): retry after a wait, cooldown for a time, or fall back."""
        policy = self.policy
        if err.kind == "context_length":
            return "larger_context", 0.0
        if err.kind == "auth":
            return "cooldown", policy.cooldown_seconds
        if not err.retryable:
            return "stop", 0.0
        retry_after = err.retry_after or 0.0
        if retry_after > policy.max_retry_after:
            return "cooldown", retry_after
        if attempt_no >= policy.max_attempts:
            return "cooldown", max(policy.cooldown_seconds, retry_after)
        return "retry", max(policy.backoff(attempt_no), retry_after)
