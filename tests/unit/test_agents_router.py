"""The router against fake providers over loopback, through the real anthropic/openai SDKs.

Accounting here is the in-memory `RecordingAccounting` (the Postgres ledger has its own
integration tests); what is under test is retry, backoff, Retry-After, cooldown, fallback
order and the one-record-per-attempt rule.
"""

import time

import pytest

from app.agents.prefix import PromptParts
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import (
    AllDeploymentsFailed,
    CallContext,
    CallRejected,
    Cooldowns,
    Deployment,
    RecordingAccounting,
    RetryPolicy,
    Router,
)
from devtools.fakes import FakeProviderServer

PARTS = PromptParts(system="You are the Agent VOS ops team.", persona="You keep ports shut.",
                    task="Check that only port 443 is open on the door host.")


@pytest.fixture(scope="module")
def servers():
    started = {
        "anthropic": FakeProviderServer("anthropic", context_windows={"claude-haiku-4-5": 40}),
        "openai": FakeProviderServer("openai"),
        "openrouter": FakeProviderServer("openai", name="openrouter"),
        "ollama": FakeProviderServer("ollama"),
    }
    for server in started.values():
        server.start()
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def fakes(servers):
    for server in servers.values():
        server.reset()
    return servers


class SleepRecorder:
    """Really sleeps (the waits are short) and remembers each delay the router asked for."""

    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


def make_router(fakes, *, api_keys=None, policy=None, clock=None, chain=None):
    keys = {"anthropic": "fake-key", "openai": "fake-key", "openrouter": "fake-key",
            "ollama": ""} | (api_keys or {})

    def provider(name):
        return build_provider(name, fakes[name].base_url, keys[name], timeout=5)

    deployments = [
        Deployment("haiku-small", provider("anthropic"), "claude-haiku-4-5", 40, 16),
        Deployment("sonnet", provider("anthropic"), "claude-sonnet-4-6", 200_000, 16),
        Deployment("gpt", provider("openai"), "gpt-4.1", 1_000_000, 16),
        Deployment("openrouter", provider("openrouter"), "openai/gpt-4.1-mini", 1_000_000, 16),
        Deployment("ollama", provider("ollama"), "llama3.1:8b", 8192, 16),
    ]
    sleeper = SleepRecorder()
    accounting = RecordingAccounting(PriceBook(DEFAULT_PRICES))
    router = Router(deployments, accounting,
                    default_chain=chain or ["sonnet", "gpt", "openrouter", "ollama"],
                    policy=policy or RetryPolicy(max_attempts=3, base_delay=0.05,
                                                 cooldown_seconds=60),
                    cooldowns=Cooldowns(clock) if clock else None, sleep=sleeper)
    return router, accounting, sleeper


def outcomes(accounting):
    return [(r.deployment, r.outcome, r.next_action) for r in accounting.records]


def test_first_deployment_answers_with_one_attempt(fakes):
    router, accounting, _ = make_router(fakes)
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "sonnet"
    assert "claude-sonnet-4-6" in result.completion.text
    assert outcomes(accounting) == [("sonnet", "ok", None)]
    assert len(fakes["openai"].received) == 0


def test_retries_honour_retry_after_then_succeed(fakes):
    fakes["anthropic"].script("429:0.3", "500")
    router, accounting, sleeper = make_router(fakes)
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "sonnet"
    assert outcomes(accounting) == [("sonnet", "rate_limited", "retry"),
                                    ("sonnet", "server", "retry"), ("sonnet", "ok", None)]
    # First wait honours Retry-After (0.3 s > backoff 0.05 s), second is plain backoff.
    assert sleeper.delays == [0.3, 0.1]
    assert [a.attempt_no for a in result.attempts] == [1, 2, 3]
    assert len({a.context.call_id for a in result.attempts}) == 1


def test_exhausted_retries_fall_back_in_chain_order_and_cool_down(fakes):
    fakes["anthropic"].script("529", "529", "529")
    fakes["openai"].script("503", "503", "503")
    now = [1000.0]
    router, accounting, _ = make_router(fakes, clock=lambda: now[0])
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "openrouter"
    assert outcomes(accounting) == [
        ("sonnet", "overloaded", "retry"), ("sonnet", "overloaded", "retry"),
        ("sonnet", "overloaded", "cooldown"),
        ("gpt", "server", "retry"), ("gpt", "server", "retry"), ("gpt", "server", "cooldown"),
        ("openrouter", "ok", None),
    ]
    # While cooling down, the failed deployments are not even tried.
    before = len(fakes["anthropic"].received), len(fakes["openai"].received)
    second = router.complete(CallContext("t", "a"), PARTS)
    assert second.deployment.name == "openrouter"
    assert (len(fakes["anthropic"].received), len(fakes["openai"].received)) == before
    # After the cooldown the first choice is back.
    now[0] += 61
    assert router.complete(CallContext("t", "a"), PARTS).deployment.name == "sonnet"


def test_long_retry_after_cools_down_instead_of_waiting(fakes):
    fakes["anthropic"].script("429:120")
    router, accounting, sleeper = make_router(fakes)
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "gpt"
    assert outcomes(accounting)[0] == ("sonnet", "rate_limited", "cooldown")
    assert sleeper.delays == []
    assert router.cooldowns.active("sonnet")


def test_401_is_never_retried(fakes):
    router, accounting, sleeper = make_router(fakes, api_keys={"anthropic": "wrong-key"})
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "gpt"
    assert len(fakes["anthropic"].received) == 1
    assert outcomes(accounting) == [("sonnet", "auth", "cooldown"), ("gpt", "ok", None)]
    assert accounting.records[0].http_status == 401
    assert sleeper.delays == []


def test_400_stops_without_retry_or_fallback(fakes):
    fakes["anthropic"].script("400")
    router, accounting, _ = make_router(fakes)
    with pytest.raises(CallRejected, match="rejected the request"):
        router.complete(CallContext("t", "a"), PARTS)
    assert outcomes(accounting) == [("sonnet", "bad_request", "stop")]
    assert len(fakes["openai"].received) == 0


def test_context_length_falls_back_to_a_larger_context_model(fakes):
    # haiku-small has a 40-token window: the prompt (~50 tokens) overflows it for real.
    router, accounting, _ = make_router(fakes, chain=["haiku-small", "ollama", "gpt"])
    long_parts = PromptParts(system=PARTS.system, persona=PARTS.persona,
                             task=PARTS.task + " Then report the result to the operator.")
    result = router.complete(CallContext("t", "a"), long_parts)
    assert outcomes(accounting)[0] == ("haiku-small", "context_length", "larger_context")
    assert result.deployment.name == "ollama"
    assert len(fakes["anthropic"].received) == 1


def test_context_fallback_skips_deployments_that_are_not_larger(fakes):
    fakes["openai"].script("context")
    router, accounting, _ = make_router(fakes, chain=["gpt", "ollama", "openrouter"])
    # ollama (8K) and openrouter (1M) are not larger than gpt (1M): nothing left to try.
    with pytest.raises(AllDeploymentsFailed, match="gpt#1 context_length"):
        router.complete(CallContext("t", "a"), PARTS)
    assert outcomes(accounting) == [("gpt", "context_length", "larger_context")]
    assert len(fakes["ollama"].received) == len(fakes["openrouter"].received) == 0


def test_everything_failing_raises_with_every_attempt(fakes):
    for name in ("anthropic", "openai", "openrouter"):
        fakes[name].script("500", "500", "500")
    router, accounting, _ = make_router(
        fakes, chain=["sonnet", "gpt", "openrouter"],
        policy=RetryPolicy(max_attempts=3, base_delay=0.01))
    with pytest.raises(AllDeploymentsFailed, match="no deployment answered") as info:
        router.complete(CallContext("t", "a"), PARTS)
    assert len(info.value.attempts) == 9
    assert len(accounting.records) == 9
    assert all(r.outcome == "server" for r in accounting.records)


def test_unknown_deployment_in_chain_is_a_clear_error(fakes):
    router, _, _ = make_router(fakes)
    with pytest.raises(ValueError, match="unknown deployment.*model_preferences"):
        router.complete(CallContext("t", "a"), PARTS, chain=["sonnet", "gpt-5-typo"])


def test_connection_refused_is_retried_then_falls_back(fakes):
    dead = FakeProviderServer("anthropic")
    dead_url = dead.base_url
    dead.stop()  # the port is closed now: connection refused
    router, accounting, _ = make_router(fakes)
    router.deployments["sonnet"] = Deployment(
        "sonnet", build_provider("anthropic", dead_url, "fake-key", timeout=2),
        "claude-sonnet-4-6", 200_000, 16)
    result = router.complete(CallContext("t", "a"), PARTS)
    assert result.deployment.name == "gpt"
    assert [o[1] for o in outcomes(accounting)] == ["connection"] * 3 + ["ok"]


def test_a_model_without_a_price_is_never_called(fakes):
    router, _, _ = make_router(fakes)
    router.accounting = RecordingAccounting(PriceBook([]))
    with pytest.raises(LookupError, match="no price for anthropic/claude-sonnet-4-6"):
        router.complete(CallContext("t", "a"), PARTS)
    assert fakes["anthropic"].received == []
