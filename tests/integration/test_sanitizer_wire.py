"""The whole secrets corpus goes through the real Router and SDKs to all four providers' fakes,
and no secret value reaches any of their wires; a failing detector sends nothing at all.

The fakes (`devtools.fakes.start_fake_fleet`) are real HTTP servers on 127.0.0.1 that record every
request they receive (`fleet[name].received`), so the assertion is on the bytes the SDKs put
on the wire, not on what our code meant to send.
"""

import json

import pytest
from detect_secrets.plugins.base import BasePlugin

from app.agents.prefix import PromptParts, ToolSpec
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import CallContext, Deployment, RecordingAccounting, Router
from app.agents.sanitize import Redaction, Sanitizer, SanitizerError, default_plugins
from devtools.fakes import start_fake_fleet
from tests.unit.secrets_corpus import PII, SECRETS

PROVIDERS = ("anthropic", "openai", "openrouter", "ollama")
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1",
          "openrouter": "openai/gpt-4.1-mini", "ollama": "llama3.1:8b"}
CHUNK = 12  # corpus lines per call: every prompt field carries a few of them


@pytest.fixture
def fleet():
    servers = start_fake_fleet()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _router(fleet, name: str, sanitizer: Sanitizer) -> Router:
    """One deployment on the named fake; the Router and the provider share the sanitizer,
    as `app.agents.config` wires them."""
    provider = build_provider(name, fleet[name].base_url, "fake-key", sanitizer=sanitizer)
    deployment = Deployment(name, provider, MODELS[name], 1_000_000, 16)
    return Router([deployment], RecordingAccounting(PriceBook(DEFAULT_PRICES)),
                  sanitizer=sanitizer)


def _prompts() -> list[PromptParts]:
    """The corpus in chunks, spread over system prompt, persona, tool name/description/schema,
    retrieved context and task, so every field that leaves is exercised."""
    prompts = []
    for at in range(0, len(SECRETS), CHUNK):
        lines = [case.line for case in SECRETS[at:at + CHUNK]]
        parts = [lines[i::5] for i in range(5)]
        tool = ToolSpec("runbook_tool", "\n".join(parts[2]),
                        {"type": "object",
                         "properties": {"note": {"type": "string",
                                                 "examples": parts[2][:2]}}})
        prompts.append(PromptParts(
            system="You are the ops agent.\n" + "\n".join(parts[0]),
            persona="\n".join(parts[1]),
            tools=(tool,),
            context="\n".join(parts[3]),
            task="\n".join(parts[4]) + "\nDo the rotation.",
        ))
    return prompts


def _wire(server) -> bytes:
    return b"".join(r.body + repr(r.headers).encode() + r.path.encode()
                    for r in server.received)


@pytest.mark.parametrize("name", PROVIDERS)
def test_no_corpus_secret_reaches_the_wire(fleet, name):
    router = _router(fleet, name, Sanitizer(pii=PII))
    prompts = _prompts()
    for parts in prompts:
        router.complete(CallContext("t", "a"), parts, chain=[name])
    server = fleet[name]
    assert len(server.received) == len(prompts)
    wire = _wire(server)
    assert wire.count(b"REDACTED") >= len(SECRETS)  # the redacted text did go out
    leaked = [f"{case.kind}: {case.line[:40]}" for case in SECRETS
              if case.secret.encode() in wire or _json_escaped(case.secret) in wire]
    assert leaked == []


def _json_escaped(secret: str) -> bytes:
    """How a value looks inside a JSON body (a `/` or a newline may be escaped)."""
    return json.dumps(secret)[1:-1].encode()


@pytest.mark.parametrize("name", PROVIDERS)
def test_the_wire_check_can_fail(fleet, name):
    """With a sanitizer that finds nothing, the corpus IS on the wire: the check above bites."""
    router = _router(fleet, name, _NoDetection())
    router.complete(CallContext("t", "a"), _prompts()[0], chain=[name])
    wire = _wire(fleet[name])
    assert any(_json_escaped(c.secret) in wire for c in SECRETS[:CHUNK])


class _NoDetection(Sanitizer):
    """Finds nothing: breaks the invariant on purpose."""

    def redact(self, text):
        return Redaction(text, {})


class _BrokenPlugin(BasePlugin):
    """A detect-secrets plugin with a bug: it raises on any line."""

    secret_type = "broken"

    def analyze_string(self, string):
        raise RuntimeError("plugin bug")


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_failing_detector_sends_nothing(fleet, name):
    broken = Sanitizer(pii=PII, plugins=[*default_plugins(), _BrokenPlugin()])
    router = _router(fleet, name, broken)
    with pytest.raises(SanitizerError):
        router.complete(CallContext("t", "a"), _prompts()[0], chain=[name])
    assert fleet[name].received == []
