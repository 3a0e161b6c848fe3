"""The fake providers compute cache reads from what they saw, and speak each wire format."""

import json
import time

import anthropic
import openai
import pytest

from app.agents.prefix import PromptParts, anthropic_request
from app.agents.providers import ProviderError, build_provider
from devtools.fakes import FakeProviderServer, ScriptedFailure


@pytest.fixture(scope="module")
def anthropic_fake():
    server = FakeProviderServer("anthropic").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_fake():
    server = FakeProviderServer("openai", aliases={"gpt-4.1": "gpt-4.1-2025-04-14"}).start()
    yield server
    server.stop()


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


def anthropic_call(server, system_tokens: int, persona: str = "beta", model="claude-sonnet-4-6"):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="fake-key", max_retries=0)
    parts = PromptParts(words("alpha", system_tokens), words(persona, 100), task="go")
    return client.messages.create(model=model, max_tokens=8, **anthropic_request(parts, model))


def test_anthropic_cache_write_then_read_from_the_breakpoint(anthropic_fake):
    anthropic_fake.reset()
    first = anthropic_call(anthropic_fake, 1500).usage
    second = anthropic_call(anthropic_fake, 1500).usage
    # prefix = 1500 system + 100 persona tokens; the tail is "user" + "<task> go </task>".
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (1600, 0)
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, 1600)
    assert first.input_tokens == second.input_tokens == 1 + 8


def test_anthropic_changed_persona_misses_the_cache(anthropic_fake):
    anthropic_fake.reset()
    anthropic_call(anthropic_fake, 1500, persona="beta")
    other = anthropic_call(anthropic_fake, 1500, persona="gamma").usage
    assert other.cache_read_input_tokens == 0
    assert other.cache_creation_input_tokens == 1600


def test_anthropic_below_minimum_cacheable_length_is_not_cached(anthropic_fake):
    anthropic_fake.reset()
    # 1000 + 100 tokens clears Sonnet's 1024 minimum but not Haiku's 2048.
    parts = PromptParts(words("alpha", 1000), words("beta", 100), task="go")
    request = anthropic_request(parts, "claude-haiku-4-5")
    assert "cache_control" not in request["system"][1]  # the builder knows the minimum
    request["system"][1]["cache_control"] = {"type": "ephemeral"}  # force it anyway
    client = anthropic.Anthropic(base_url=anthropic_fake.base_url, api_key="fake-key",
                                 max_retries=0)
    usage = client.messages.create(model="claude-haiku-4-5", max_tokens=8, **request).usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    assert usage.input_tokens == 1100 + 9


def test_openai_caches_in_1024_plus_128_steps(openai_fake):
    openai_fake.reset()
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key="fake-key", max_retries=0)

    def call(system_tokens, task):
        messages = [{"role": "system", "content": words("alpha", system_tokens)},
                    {"role": "user", "content": task}]
        return client.chat.completions.create(model="gpt-4.1", messages=messages, max_tokens=8)

    first = call(1300, "one")
    second = call(1300, "two")
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # shared prefix = "system" + 1300 alpha + "user" = 1302 tokens -> largest step 1280.
    assert second.usage.prompt_tokens == 1303
    assert second.usage.prompt_tokens_details.cached_tokens == 1280
    assert second.model == "gpt-4.1-2025-04-14"  # model served differs from model requested
    short = call(900, "three")
    assert short.usage.prompt_tokens_details.cached_tokens == 0  # under 1024: never cached


def test_streaming_reports_the_same_usage_as_plain_calls(openai_fake, anthropic_fake):
    parts = PromptParts(words("alpha", 1200), "persona", task="stream please")
    for server, name, model in ((openai_fake, "openai", "gpt-4.1"),
                                (anthropic_fake, "anthropic", "claude-sonnet-4-6")):
        server.reset()
        plain = build_provider(name, server.base_url, "fake-key").complete(parts, model, 64)
        streamed = build_provider(name, server.base_url, "fake-key",
                                  stream=True).complete(parts, model, 64)
        assert streamed.text == plain.text
        assert streamed.usage.total_input == plain.usage.total_input
        assert streamed.usage.output == plain.usage.output
        assert json.loads(server.received[-1].body)["stream"] is True


def test_scripted_failures_carry_status_and_retry_after(anthropic_fake):
    anthropic_fake.reset()
    anthropic_fake.script("429:7", "529", "context")
    provider = build_provider("anthropic", anthropic_fake.base_url, "fake-key")
    kinds = []
    for _ in range(3):
        with pytest.raises(ProviderError) as info:
            provider.complete(PromptParts("s", "p", task="t"), "claude-sonnet-4-6", 8)
        kinds.append((info.value.kind, info.value.status, info.value.retry_after))
    assert kinds == [("rate_limited", 429, 7.0), ("overloaded", 529, None),
                     ("context_length", 400, None)]
    provider.complete(PromptParts("s", "p", task="t"), "claude-sonnet-4-6", 8)  # script used up


def test_a_prompt_over_the_context_window_fails_for_real():
    server = FakeProviderServer("openai", context_windows={"small": 10}).start()
    try:
        provider = build_provider("openai", server.base_url, "fake-key")
        with pytest.raises(ProviderError) as info:
            provider.complete(PromptParts("s", "p", task=words("x", 20)), "small", 8)
        assert info.value.kind == "context_length"
        assert "maximum context length is 10 tokens" in info.value.message
    finally:
        server.stop()


def test_unknown_failure_spec_is_refused():
    with pytest.raises(ValueError, match="unknown failure spec"):
        ScriptedFailure.parse("418")


def test_ollama_native_chat_endpoint():
    server = FakeProviderServer("ollama").start()
    try:
        import httpx

        reply = httpx.post(f"http://127.0.0.1:{server.port}/api/chat", timeout=5, json={
            "model": "llama3.1:8b", "stream": False,
            "messages": [{"role": "user", "content": "hello there"}]}).json()
        assert reply["done"] is True
        assert reply["prompt_eval_count"] == 3  # "user" + "hello" + "there"
        assert reply["eval_count"] > 0
    finally:
        server.stop()


def test_cache_entries_expire_after_their_ttl():
    server = FakeProviderServer("anthropic", cache_ttl_seconds=0.5).start()
    try:
        anthropic_call(server, 1500)
        assert anthropic_call(server, 1500).usage.cache_read_input_tokens == 1600
        time.sleep(0.7)
        expired = anthropic_call(server, 1500).usage
        assert (expired.cache_read_input_tokens, expired.cache_creation_input_tokens) == (0, 1600)
    finally:
        server.stop()
