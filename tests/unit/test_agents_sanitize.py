"""Secrets and PII are redacted, and a planted secret never reaches any provider's wire."""

import pytest

from app.agents.prefix import PromptParts, ToolSpec
from app.agents.prices import DEFAULT_PRICES, PriceBook
from app.agents.providers import build_provider
from app.agents.router import CallContext, Deployment, RecordingAccounting, Router
from app.agents.sanitize import Sanitizer
from devtools.fakes import start_fake_fleet

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


# --- The corpus: detect-secrets' plugins + our patterns + the entropy rule (issue #14) ---

from detect_secrets.plugins.base import BasePlugin  # noqa: E402

from app.agents.sanitize import SanitizerError, default_plugins, looks_random  # noqa: E402
from tests.unit.secrets_corpus import NEGATIVES, PII, SECRETS  # noqa: E402


def test_the_corpus_is_large_and_varied_enough():
    assert len(SECRETS) >= 60
    assert len({case.kind for case in SECRETS}) >= 30
    assert all(case.secret in case.line for case in SECRETS)


@pytest.mark.parametrize("case", SECRETS, ids=[f"{i}-{c.kind}" for i, c in enumerate(SECRETS)])
def test_every_corpus_secret_is_redacted(case):
    result = Sanitizer(pii=PII).redact(case.line)
    assert case.secret not in result.text, result.text
    assert "[REDACTED:" in result.text and result.total >= 1


@pytest.mark.parametrize("line", NEGATIVES, ids=[f"neg{i}" for i in range(len(NEGATIVES))])
def test_negative_cases_survive_unchanged(line):
    result = Sanitizer(pii=()).redact(line)
    assert result.text == line
    assert result.counts == {}


@pytest.mark.parametrize("text, secret, kind", [
    ("DB_PASSWORD=p4ssW0rd-Prod", "p4ssW0rd-Prod", "password_assignment"),
    ("PGPASSWORD=Zx81Spectrum psql -h db", "Zx81Spectrum", "password_assignment"),
    ("Authorization: Basic YWRtaW46czNjcjN0LXZhbHVl", "YWRtaW46czNjcjN0LXZhbHVl", "basic_auth"),
    ("REDIS_URL=redis://:N0tTheRealOne42@cache:6379", "N0tTheRealOne42", "url_password"),
    ('passphrase: "correct horse battery staple"', "correct horse battery staple",
     "password_assignment"),
    ("passphrase: correct horse battery staple", "horse battery staple",
     "password_assignment"),
    ('"private_key_id": "0123456789abcdef0123456789abcdef01234567"',
     "0123456789abcdef0123456789abcdef01234567", "gcp_private_key_id"),
])
def test_the_issue_14_leaks_are_closed(text, secret, kind):
    result = Sanitizer(pii=()).redact(text)
    assert secret not in result.text, result.text
    assert result.counts.get(kind) == 1, result.counts


def test_plugins_are_a_live_layer():
    """A Twilio API key has no pattern of ours and no entropy-rule shape (it is hex after a
    fixed prefix): only detect-secrets' plugin finds it."""
    line = "TWILIO_SID=SK" + "0123456789abcdef" * 2
    bare = Sanitizer(pii=(), plugins=[], entropy=False)
    assert bare.clean(line) == line
    assert Sanitizer(pii=()).redact(line).counts == {"twilio_key": 1}


def test_the_entropy_rule_spares_ids_and_digests():
    assert looks_random("Zq8vN2kLmP4rT7wXyB1cD3eF5gH6jK9a")
    for token in ("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",  # UUID
                  "9fceb02d0ae598e95dc970b74767f19372d61af8",  # git SHA
                  "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",  # sha256
                  "Base64HighEntropyStringDetector",  # a class name
                  "tests/integration/test_sanitizer_wire",  # a path
                  "AAAAC3NzaC1lZDI1NTE5AAAAIGk2"):  # an SSH public key blob
        assert not looks_random(token), token
    unknown = "Zq8vN2kLmP4rT7wXyB1cD3eF5gH6jK9a"
    assert Sanitizer(pii=()).clean(f"value {unknown} end") == "value [REDACTED:high_entropy] end"


def test_overlapping_findings_merge_into_one_redaction():
    """The keyword plugin and our passphrase rule both see parts of the value: the union is
    redacted, so no word of it survives."""
    result = Sanitizer(pii=()).redact('secret = "open sesame 42 now"')
    assert result.text == 'secret = "[REDACTED:password_assignment]"'
    assert result.total == 1


class _BrokenPlugin(BasePlugin):
    """A detect-secrets plugin with a bug: it raises on every line, quoting the line."""

    secret_type = "broken"

    def analyze_string(self, string):
        raise ValueError(f"cannot parse {string!r}")


def test_a_failing_detector_fails_closed_without_quoting_the_text():
    sanitizer = Sanitizer(plugins=[*default_plugins(), _BrokenPlugin()])
    secret = "sk-ant-api03-Zq8vN2kLmP4rT7wXyB1cD3eF5gH6jK9"
    with pytest.raises(SanitizerError, match="secret detection failed") as caught:
        sanitizer.redact(f"rotate {secret}")
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_tool_names_descriptions_and_schemas_are_sanitized():
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    tool = ToolSpec(f"call_{secret}", f"uses {secret}",
                    {"type": "object", "properties": {
                        "token": {"type": "string", "default": f"token={secret}"},
                        "hosts": {"type": "array", "examples": [[f"x {secret}"]]}}})
    clean = PromptParts("s", "p", tools=(tool,)).sanitized(Sanitizer()).tools[0]
    assert secret not in repr(clean)
    assert clean.name == "redacted_github_token"
    assert clean.parameters["properties"]["token"]["default"] == "token=[REDACTED:github_token]"


def test_bad_extra_pattern_names_the_pattern():
    with pytest.raises(ValueError, match="extra PII pattern 'badge'"):
        Sanitizer(extra={"badge": "EMP-("})


def test_unclosed_quote_and_legacy_npm_auth_are_redacted():
    s = Sanitizer(pii=())
    assert s.clean('password: "Unclosed-Secret 42') == 'password: "[REDACTED:password_assignment]'
    line = "//registry.example.org/:_authToken=6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
    assert "6f1c2d3e" not in s.clean(line)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "://:" * 20_000,  # detect-secrets' NpmDetector regex is quadratic on this
    "password=x " * 10_000,
    "secret: " * 10_000,
    "a" * 100_000,
    "0123456789abcdef" * 6_000,  # the 90 KB hex blob of the budget finding
], ids=["slashes", "pw-repeat", "secret-repeat", "letters", "hex"])
def test_pathological_lines_finish(text):
    """Long adversarial lines must not stall the worker (pytest-timeout bounds the run)."""
    result = Sanitizer().redact(text)
    assert len(result.text) <= len(text) + 64
