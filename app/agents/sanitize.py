"""Redact secrets and configured PII from any text before it goes to a provider.

Secrets are matched by shape (provider key prefixes, PEM blocks, JWTs, passwords in URLs,
`password=`-style assignments), PII by operator-configured patterns. Every match becomes
`[REDACTED:<kind>]` so the model still sees that something was there.

Example:
    >>> Sanitizer().redact("use sk-ant-api03-abcdefghijklmnopqrstuv to call").text
    'use [REDACTED:anthropic_key] to call'
"""

import re
from dataclasses import dataclass, field

# Order matters: specific key shapes before the generic ones, so the kind names stay precise.
SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openrouter_key", r"\bsk-or-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("url_password", r"://[^\s:/@]+:(?P<secret>[^\s@/]+)@"),
    ("bearer_token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/\-]{16,}=*)"),
    (
        "password_assignment",
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)[\"']?"
        r"\s{0,3}[=:]\s{0,3}[\"']?(?!\[REDACTED)(?P<secret>[^\s\"',;]{6,})",
    ),
)

# PII shapes an operator can switch on by name; extra regexes come from settings.
PII_PATTERNS: dict[str, str] = {
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
    "phone": r"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
    "credit_card": r"\b(?:\d[ \-]?){13,19}\b",
}


@dataclass(frozen=True)
class Redaction:
    """The redacted text and how many matches of each kind were replaced.

    Example:
        >>> Redaction("x", {"jwt": 1}).total
        1
    """

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Sanitizer:
    """Applies the secret patterns plus the configured PII patterns, in that order.

    Example:
        >>> s = Sanitizer(pii=("email",))
        >>> s.redact("mail ops@example.com").text
        'mail [REDACTED:email]'
    """

    def __init__(self, pii: tuple[str, ...] = ("email",), extra: dict[str, str] | None = None):
        unknown = [name for name in pii if name not in PII_PATTERNS]
        if unknown:
            raise ValueError(
                f"unknown PII pattern(s) {unknown}; choose from {sorted(PII_PATTERNS)} "
                "or pass your own regex via `extra`"
            )
        rules = list(SECRET_PATTERNS) + [(name, PII_PATTERNS[name]) for name in pii]
        rules += list((extra or {}).items())
        self._rules = [(kind, re.compile(pattern)) for kind, pattern in rules]

    def redact(self, text: str) -> Redaction:
        """Return `text` with every secret/PII match replaced by `[REDACTED:<kind>]`."""
        counts: dict[str, int] = {}
        for kind, pattern in self._rules:
            text, n = pattern.subn(_replacer(kind), text)
            if n:
                counts[kind] = counts.get(kind, 0) + n
        return Redaction(text, counts)

    def clean(self, text: str) -> str:
        """Shorthand for `redact(text).text`.

        Example:
            >>> Sanitizer().clean("postgres://app:hunter22@db:5432/vos")
            'postgres://app:[REDACTED:url_password]@db:5432/vos'
        """
        return self.redact(text).text


def _replacer(kind: str):
    """Replace the `secret` group when the pattern has one (keeping its context), else all."""
    marker = f"[REDACTED:{kind}]"

    def replace(match: re.Match) -> str:
        if "secret" not in match.re.groupindex:
            return marker
        start, end = match.span("secret")
        whole_start = match.start()
        text = match.group(0)
        return text[: start - whole_start] + marker + text[end - whole_start :]

    return replace
