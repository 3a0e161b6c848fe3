"""Secrets and PII are redacted, and a planted secret never reaches any provider's wire."""

import pytest

from app.agents.fakes import start_fake_fleet
from app.agents.prefix import PromptParts, ToolSpec
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import CallContext, Deployment, RecordingAccounting, Router
from app.agents.sanitize import Sanitizer

PLANTED = {
    "anthropic_key": "sk-ant-api03-Zq8vN2kLmP4rT7wXyB1cD3eF5gH6jK9",
    "openai_key": "sk-proj-4fGh7JkL9mNpQrStUvWxYz0123456789ab",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "url_password": "Hunter2-on-the-wire",
    "password_assignment": "CorrectHorse42!",
    "email": "maria.lopez@example.org",
}
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
       "-----END OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize("text, kind", [
    (f"key {PLANTED['anthropic_key']} here", "anthropic_key"),
    (f"OPENAI_API_KEY={PLANTED['openai_key']}", "openai_key"),
    (f"aws {PLANTED['aws_access_key']}", "aws_access_key"),
    (f"token {PLANTED['github_token']}", "github_token"),
    (f"postgres://vos:{PLANTED['url_password']}@db:5432/vos", "url_password"),
    (f"password: {PLANTED['password_assignment']}", "password_assignment"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "bearer_token"),
    (PEM, "private_key"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
     "jwt"),
    (f"mail {PLANTED['email']}", "email"),
])
def test_each_secret_shape_is_redacted(text, kind):
    result = Sanitizer().redact(text)
    assert f"[REDACTED:{kind}]" in result.text, result.text
    assert result.counts.get(kind) == 1


def test_ordinary_operations_text_is_left_alone():
    text = "Open port 443 on 100.64.0.1, version 1.2.3, ticket VOS-42, 2026-11-24 16:40 UTC."
    assert Sanitizer().redact(text).text == text


def test_configured_pii_and_custom_patterns():
    sanitizer = Sanitizer(pii=("email", "phone"), extra={"employee_id": r"\bEMP-\d{6}\b"})
    out = sanitizer.clean("call +49 170 1234567, badge EMP-004211")
    assert out == "call [REDACTED:phone], badge [REDACTED:employee_id]"


def test_unknown_pii_pattern_name_is_refused():
    with pytest.raises(ValueError, match="unknown PII pattern"):
        Sanitizer(pii=("email", "shoe_size"))


def test_planted_secrets_never_reach_the_wire():
    """Plant secrets in the task, the retrieved passages, the persona and a tool description;
    send through every provider; search every byte each fake server received."""
    fleet = start_fake_fleet()
    try:
        sanitizer = Sanitizer(pii=("email",))
        deployments = [
            Deployment("sonnet", build_provider("anthropic", fleet["anthropic"].base_url,
                                                "fake-key"), "claude-sonnet-4-6", 200_000, 16),
            Deployment("gpt", build_provider("openai", fleet["openai"].base_url, "fake-key",
                                             stream=True), "gpt-4.1", 1_000_000, 16),
            Deployment("or", build_provider("openrouter", fleet["openrouter"].base_url,
                                            "fake-key"), "openai/gpt-4.1-mini", 1_000_000, 16),
            Deployment("ollama", build_provider("ollama", fleet["ollama"].base_url, ""),
                       "llama3.1:8b", 8192, 16),
        ]
        router = Router(deployments, RecordingAccounting(PriceBook(DEFAULT_PRICES)),
                        sanitizer=sanitizer)
        parts = PromptParts(
            system="You are the ops agent.",
            persona=f"Escalate to {PLANTED['email']}.",
            tools=(ToolSpec("deploy", f"Deploys with token {PLANTED['github_token']}",
                            {"type": "object"}),),
            context=f"Runbook: export AWS_KEY={PLANTED['aws_access_key']}\n{PEM}\n"
                    f"DB is postgres://vos:{PLANTED['url_password']}@10.0.0.5/vos",
            task=f"Rotate {PLANTED['anthropic_key']} and {PLANTED['openai_key']}; the old "
                 f"password={PLANTED['password_assignment']}.",
        )
        for name in ("sonnet", "gpt", "or", "ollama"):
            router.complete(CallContext("t", "a"), parts, chain=[name])
        wire = b"".join(r.body + repr(r.headers).encode()
                        for server in fleet.values() for r in server.received)
        assert len([r for s in fleet.values() for r in s.received]) == 4
        assert b"REDACTED" in wire  # the requests did carry the (redacted) text
        for kind, secret in PLANTED.items():
            assert secret.encode() not in wire, f"{kind} reached a provider"
        assert b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" not in wire
    finally:
        for server in fleet.values():
            server.stop()


class _NoRedaction(Sanitizer):
    """A sanitizer that redacts nothing: breaks the invariant on purpose."""

    def clean(self, text: str) -> str:
        return text


def test_wire_capture_would_catch_a_leak():
    """Without redaction the planted secret is on the wire: the check above can fail."""
    fleet = start_fake_fleet()
    try:
        provider = build_provider("openai", fleet["openai"].base_url, "fake-key",
                                  sanitizer=_NoRedaction())
        provider.complete(PromptParts("sys", "persona", task=f"use {PLANTED['openai_key']}"),
                          "gpt-4.1", 16)
        assert PLANTED["openai_key"].encode() in fleet["openai"].received[0].body
    finally:
        for server in fleet.values():
            server.stop()
