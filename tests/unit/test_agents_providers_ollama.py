"""Ollama's native API (`/api/chat`, `/api/embed`) as provider kind `ollama`, against the fake.

The `ollama-openai` kind (Ollama's `/v1` through the openai SDK) is checked beside it: both
bill as provider "ollama" so they share its price rows.
"""

import json

import httpx
import pytest

from app.agents.prefix import PromptParts, ToolSpec
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import (
    OllamaEmbedder,
    OllamaProvider,
    OpenAIEmbedder,
    ProviderError,
    build_embedder,
    build_provider,
)
from app.agents.router import CallContext, Deployment, RecordingAccounting, RetryPolicy, Router
from app.agents.sanitize import Sanitizer
from devtools.fakes import EMBED_DIMENSIONS, FakeProviderServer, fake_embedding

PARTS = PromptParts(system="You are the Agent VOS.", persona="You keep ports shut.",
                    tools=(ToolSpec("lookup", "Look a host up", {"type": "object"}),),
                    context="Runbook: only 443 is open.", task="Check the door host.")


@pytest.fixture(scope="module")
def server():
    fake = FakeProviderServer("ollama", aliases={"llama3.1:8b": "llama3.1:8b-instruct-q4"},
                              context_windows={"tiny": 5}).start()
    yield fake
    fake.stop()


@pytest.fixture
def ollama(server):
    server.reset()
    return server


def test_native_chat_request_and_usage(ollama):
    provider = build_provider("ollama", ollama.base_url, "", timeout=5)
    assert isinstance(provider, OllamaProvider) and provider.provider == "ollama"
    completion = provider.complete(PARTS, "llama3.1:8b", 7)
    (request,) = ollama.received
    assert request.path == "/api/chat"
    body = request.json()
    assert body["stream"] is False and body["options"] == {"num_predict": 7}
    assert body["messages"][0] == {"role": "system",
                                   "content": "You are the Agent VOS.\n\nYou keep ports shut."}
    assert body["messages"][1]["role"] == "user" and "Check the door host." in \
        body["messages"][1]["content"]
    assert body["tools"][0]["function"]["name"] == "lookup"
    # prompt_eval_count → uncached input, eval_count → output (capped by num_predict)
    assert completion.usage.uncached_input > 10
    assert (completion.usage.cache_read, completion.usage.cache_write) == (0, 0)
    assert completion.usage.output == 7
    assert completion.model_served == "llama3.1:8b-instruct-q4"  # the model actually served
    assert completion.text.startswith("Acknowledged by llama3")  # cut to 7 tokens


def test_streaming_ndjson_gives_the_same_reply_and_usage(ollama):
    plain = build_provider("ollama", ollama.base_url, "").complete(PARTS, "llama3.1:8b", 64)
    streamed = build_provider("ollama", ollama.base_url, "", stream=True).complete(
        PARTS, "llama3.1:8b", 64)
    assert streamed.text == plain.text and streamed.usage == plain.usage
    assert ollama.received[-1].json()["stream"] is True


def test_prompt_is_sanitized_before_the_wire(ollama):
    secret = "sk-ant-api03-" + "A" * 40
    provider = OllamaProvider(ollama.base_url, sanitizer=Sanitizer(pii=("email",)))
    provider.complete(PromptParts("s", "Mail ops@example.com", task=f"key {secret}"),
                      "llama3.1:8b", 8)
    wire = ollama.received[-1].body
    assert secret.encode() not in wire and b"ops@example.com" not in wire
    assert b"REDACTED" in wire


@pytest.mark.parametrize(("spec", "kind", "retryable"), [
    ("500", "server", True),
    ("503", "server", True),
    ("429:3", "rate_limited", True),
    ("404", "bad_request", False),       # model not pulled: retrying cannot help
    ("400", "bad_request", False),
])
def test_errors_map_to_provider_error_kinds(ollama, spec, kind, retryable):
    ollama.script(spec)
    with pytest.raises(ProviderError) as info:
        build_provider("ollama", ollama.base_url, "").complete(PARTS, "llama3.1:8b", 8)
    assert (info.value.kind, info.value.retryable) == (kind, retryable)
    assert info.value.status == int(spec.split(":")[0])
    if spec == "404":
        assert "not found" in info.value.message
    if spec.startswith("429"):
        assert info.value.retry_after == 3.0


def test_context_length_and_connection_errors(ollama):
    with pytest.raises(ProviderError) as info:
        build_provider("ollama", ollama.base_url, "").complete(PARTS, "tiny", 8)
    assert info.value.kind == "context_length" and "exceeds the context length" in str(
        info.value)
    dead = FakeProviderServer("ollama")
    url = dead.base_url
    dead.stop()  # nothing listens there now: connection refused
    with pytest.raises(ProviderError) as info:
        build_provider("ollama", url, "", timeout=2).complete(PARTS, "llama3.1:8b", 8)
    assert info.value.kind == "connection" and info.value.retryable


def test_a_v1_base_url_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="ollama-openai"):
        build_provider("ollama", "http://127.0.0.1:11434/v1", "")


def test_500s_are_retried_then_the_router_falls_back(ollama):
    """The desktop Ollama fails twice (retried), then the chain falls back to a second one."""
    backup = FakeProviderServer("ollama", name="backup").start()
    try:
        ollama.script("500", "500")
        accounting = RecordingAccounting(PriceBook(DEFAULT_PRICES))
        router = Router([
            Deployment("desktop", build_provider("ollama", ollama.base_url, "", timeout=5),
                       "llama3.1:8b", 8192, 16),
            Deployment("backup", build_provider("ollama", backup.base_url, "", timeout=5),
                       "qwen2.5:14b", 8192, 16),
        ], accounting, policy=RetryPolicy(max_attempts=2, base_delay=0.01),
            sleep=lambda _s: None)
        result = router.complete(CallContext("t", "a"), PARTS)
        assert result.deployment.name == "backup"
        assert [(r.deployment, r.outcome) for r in accounting.records] == [
            ("desktop", "server"), ("desktop", "server"), ("backup", "ok")]
        ok = accounting.records[-1]
        assert ok.provider == "ollama" and ok.usage.output > 0 and ok.cost_usd == 0
    finally:
        backup.stop()


def test_ollama_openai_kind_uses_v1_and_bills_as_ollama(ollama):
    provider = build_provider("ollama-openai", ollama.openai_base_url, "")
    assert (provider.kind, provider.provider) == ("ollama-openai", "ollama")
    completion = provider.complete(PARTS, "llama3.1:8b", 16)
    assert ollama.received[-1].path == "/v1/chat/completions"
    assert completion.usage.uncached_input > 0
    assert PriceBook(DEFAULT_PRICES).price_at(provider.provider, "llama3.1:8b").input_per_mtok == 0


def test_native_embed_is_deterministic(ollama):
    embedder = build_embedder("ollama", ollama.base_url, "nomic-embed-text")
    assert isinstance(embedder, OllamaEmbedder)
    vectors = embedder.embed(["open port 443", "open port 443", "quarterly marketing plan"])
    request = ollama.received[-1]
    assert request.path == "/api/embed"
    assert request.json() == {"model": "nomic-embed-text",
                              "input": ["open port 443", "open port 443",
                                        "quarterly marketing plan"]}
    assert len(vectors) == 3 and all(len(v) == EMBED_DIMENSIONS for v in vectors)
    assert vectors[0] == vectors[1] == fake_embedding("open port 443")
    assert vectors[0] != vectors[2]
    ollama.script("404")
    with pytest.raises(ProviderError, match="not found"):
        embedder.embed(["x"])


def test_openai_compatible_embed(ollama):
    embedder = build_embedder("ollama-openai", ollama.openai_base_url, "nomic-embed-text")
    assert isinstance(embedder, OpenAIEmbedder)
    vectors = embedder.embed(["alpha beta", "gamma"])
    assert ollama.received[-1].path == "/v1/embeddings"
    assert vectors == [fake_embedding("alpha beta"), fake_embedding("gamma")]
    with pytest.raises(ValueError, match="embedding provider 'anthropic'"):
        build_embedder("anthropic", "http://127.0.0.1:1", "m")


def test_fake_streams_ndjson_when_stream_is_omitted(ollama):
    """Like Ollama itself: no `stream` field means NDJSON lines, the last one `done`."""
    answer = httpx.post(f"{ollama.base_url}/api/chat", timeout=5, json={
        "model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]})
    lines = [json.loads(line) for line in answer.text.splitlines() if line]
    assert len(lines) >= 2 and lines[-1]["done"] is True and not lines[0]["done"]
    assert lines[-1]["eval_count"] > 0
