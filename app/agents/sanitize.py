"""Redact secrets and configured PII from any text before it goes to a provider.

Detection has four layers; every match found by any of them is redacted (overlapping matches
are merged, so a secret is never left half-hidden):

1. Our own key shapes, run over the whole text: provider key prefixes detect-secrets lacks
   (Anthropic, OpenAI, OpenRouter, Hugging Face, `whsec_` door secrets, Slack `xapp-` and
   webhook URLs, Tailscale, Vault, npm …) and multi-line PEM private-key blocks.
2. The plugins of `detect-secrets` (AWS, Azure storage, Slack, Stripe, SendGrid, Twilio,
   Mailchimp, JWT, GitHub/GitLab, basic-auth URLs, secret keywords, quoted high-entropy
   strings …). They are line-based, so each runs per line and the value it reports is mapped
   back to its span in the text.
3. Context rules: a secret-ish key followed by a value (`DB_PASSWORD=`, `PGPASSWORD=`, quoted
   passphrases with spaces, GCP `private_key_id`), `Authorization: Basic|Bearer …`, and URL
   passwords (also with an empty user: `redis://:pw@host`).
4. An entropy rule for unknown key shapes: a token of 20+ characters from the base64/url-safe
   alphabet, with letters and digits, whose Shannon entropy is high for its length.
   Deliberately NOT redacted by this rule (they are identifiers, not credentials, and the
   operations texts are full of them): UUIDs and every pure-hex token (git SHAs, sha256/md5
   digests, image ids). A hex secret is still caught when a key name announces it
   (`api_key=<hex>`, `"private_key_id": "<hex>"`).

PII comes after secrets, from operator-configured pattern names plus custom regexes.
Every match becomes `[REDACTED:<kind>]` so the model still sees that something was there.

Redaction is fail-closed: if any detector raises, `redact` raises `SanitizerError` (whose
message names the detector, never the text), and the router sends nothing.

Example:
    >>> Sanitizer().redact("use sk-ant-api03-abcdefghijklmnopqrstuv to call").text
    'use [REDACTED:anthropic_key] to call'
"""

import base64
import binascii
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import (
    CONFIG_DENYLIST_REGEX_TO_GROUP,
    QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    KeywordDetector,
)
from detect_secrets.plugins.keyword import (
    DENYLIST as KEYWORD_DENYLIST,
)
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

# Layer 1: key shapes, specific before generic so kind names stay precise. A pattern with a
# `secret` group redacts only that group (the context, e.g. the URL's host, stays readable).
KEY_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openrouter_key", r"\bsk-or-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("gitlab_token", r"\bgl(?:pat|dt|ft|rt|cbt|soat)-[A-Za-z0-9_\-]{20,}"),
    ("slack_token", r"\bxox[abposre]-[A-Za-z0-9\-]{10,}"),
    ("slack_app_token", r"\bxapp-[A-Za-z0-9\-]{10,}"),
    ("slack_webhook", r"https?://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)"
                      r"/[A-Za-z0-9_/\-]+"),
    ("discord_webhook", r"https?://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/"
                        r"\d+/[A-Za-z0-9_\-]+"),
    ("webhook_secret", r"\bwhsec_[A-Za-z0-9+/=_\-]{16,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{30,}"),
    ("npm_token", r"(?i)_auth(?:Token)?\s*=\s*[\"']?(?P<secret>[^\s\"']{8,})"),
    ("pypi_token", r"\bpypi-[A-Za-z0-9_\-]{50,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("google_oauth_secret", r"\bGOCSPX-[A-Za-z0-9_\-]{20,}"),
    ("stripe_key", r"\b(?:sk|rk|whsec)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("sendgrid_key", r"\bSG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"),
    ("tailscale_key", r"\btskey-[A-Za-z0-9]+-[A-Za-z0-9]{6,}(?:-[A-Za-z0-9]+)*"),
    ("vault_token", r"\bhv[sbr]\.[A-Za-z0-9_\-]{20,}"),
    ("digitalocean_token", r"\bdo[por]_v1_[a-f0-9]{64}\b"),
    ("shopify_token", r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"),
    ("databricks_token", r"\bdapi[a-f0-9]{32}(?:-\d)?\b"),
    ("age_secret_key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{50,}"),
    ("aws_secret_key", r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[=:]\s*[\"']?"
                       r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
)

# Words that make the value after them a secret. No \b before them on purpose:
# `DB_PASSWORD=`, `PGPASSWORD=` and `REDIS_AUTH_TOKEN=` must all count.
_SECRET_KEY = (
    r"(?:password|passwd|passphrase|pwd|secret|api[_\-]?key|apikey|access[_\-]?key|"
    r"auth[_\-]?key|private[_\-]?key|client[_\-]?secret|access[_\-]?token|auth[_\-]?token|"
    r"refresh[_\-]?token|token|credentials?|x-api-key|(?:(?<=_)|\b)pass)"
)
# A value that is a reference, not a secret: `${VAR}`, `$VAR`, `<placeholder>`, `{{ x }}`.
_NOT_A_VALUE = r"(?!\$|<|\{\{|\[REDACTED|%\()"

# Layer 3: context rules.
CONTEXT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("gcp_private_key_id",
     r"(?i)[\"']?private_key_id[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9]{16,})"),
    ("basic_auth", r"(?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
    ("bearer_token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/\-]{16,}=*)"),
    ("url_password", r"://[^\s:/@]*:(?P<secret>[^\s@/]+)@"),
    # A quoted value may hold spaces: `passphrase: "correct horse battery staple"`.
    ("password_assignment",
     rf"(?i){_SECRET_KEY}[\"']?\s{{0,3}}(?:=|:=|:|=>)\s{{0,3}}"
     rf"(?P<q>[\"'])(?P<secret>{_NOT_A_VALUE}[^\"'\n]{{3,}}?)(?P=q)"),
    ("password_assignment",
     rf"(?i){_SECRET_KEY}[\"']?\s{{0,3}}(?:=|:=|:|=>)\s{{0,3}}"
     rf"(?P<secret>{_NOT_A_VALUE}[^\s\"',;`()]{{6,}}+)(?![(\[])"),
    # `passphrase: correct horse battery staple` as a config line: the whole rest of the line
    # (up to a ` #` comment; quotes, even an unclosed one, excluded) is the value, not just
    # its first word.
    ("password_assignment",
     r"(?im)^[ \t]*(?:export[ \t]+|-[ \t]+)?[\w.\-]*(?:password|passphrase|passwd|secret)"
     r"[\w\-]*[ \t]*[:=][ \t]*+[\"']?+(?P<secret>(?![\"'$<{])[^\n#]*[^\s#\"'])"),
)

# Kept for callers that list the patterns: every regex rule we run ourselves, in order.
SECRET_PATTERNS: tuple[tuple[str, str], ...] = KEY_PATTERNS + CONTEXT_PATTERNS

# PII shapes an operator can switch on by name; extra regexes come from settings.
PII_PATTERNS: dict[str, str] = {
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
    "phone": r"(?<![\w+])\+?\d{1,3}[ .\-]?\(?\d{2,4}\)?[ .\-]?\d{3,4}[ .\-]?\d{3,4}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
    "credit_card": r"\b(?:\d[ \-]?){13,19}\b",
}

# detect-secrets plugin -> our kind name. Left out on purpose: `IPPublicDetector` (public IP
# addresses are the daily bread of an operations agent, not credentials) and `NpmDetector`
# (its `//.+/:_authToken=` takes quadratic time on a long line full of `//`, e.g. 17 s for
# 80 KB; our two `npm_token` patterns cover it).
PLUGIN_KINDS: dict[type, str] = {
    ArtifactoryDetector: "artifactory_token",
    AWSKeyDetector: "aws_secret_key",  # access key ids are re-labelled in _plugin_kind
    AzureStorageKeyDetector: "azure_storage_key",
    BasicAuthDetector: "url_password",
    CloudantDetector: "cloudant_key",
    DiscordBotTokenDetector: "discord_token",
    GitHubTokenDetector: "github_token",
    GitLabTokenDetector: "gitlab_token",
    IbmCloudIamDetector: "ibm_cloud_key",
    IbmCosHmacDetector: "ibm_cos_key",
    JwtTokenDetector: "jwt",
    MailchimpDetector: "mailchimp_key",
    OpenAIDetector: "openai_key",
    PrivateKeyDetector: "private_key",
    PypiTokenDetector: "pypi_token",
    SendGridDetector: "sendgrid_key",
    SlackDetector: "slack_token",
    SoftlayerDetector: "softlayer_key",
    SquareOAuthDetector: "square_secret",
    StripeDetector: "stripe_key",
    TelegramBotTokenDetector: "telegram_token",
    TwilioKeyDetector: "twilio_key",
    KeywordDetector: "secret_assignment",
    Base64HighEntropyString: "high_entropy",
}

# Rank of each layer when overlapping matches merge: the lowest rank names the redaction.
_RANK_KEY, _RANK_PLUGIN, _RANK_CONTEXT, _RANK_GENERIC, _RANK_PII, _RANK_EXTRA = range(6)
_GENERIC_PLUGINS = (KeywordDetector, Base64HighEntropyString)

_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{20,}={0,2}(?![A-Za-z0-9+/_\-=])")
_HEX_OR_UUID = re.compile(r"[0-9a-fA-F\-]+")
_AWS_KEY_ID = re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}")


class SanitizerError(RuntimeError):
    """Detection failed; the text must not be sent anywhere (fail-closed).

    Example:
        >>> str(SanitizerError("detector KeywordDetector failed (ValueError)"))
        'detector KeywordDetector failed (ValueError)'
    """


def default_plugins() -> list[BasePlugin]:
    """One instance of every detect-secrets plugin we use (see `PLUGIN_KINDS`).

    Example:
        >>> len(default_plugins()) == len(PLUGIN_KINDS)
        True
    """
    return [cls() for cls in PLUGIN_KINDS]


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


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    rank: int
    kind: str


class Sanitizer:
    """Finds secrets (our patterns, detect-secrets' plugins, the entropy rule) and the
    configured PII, and replaces each with `[REDACTED:<kind>]`.

    `plugins` replaces the detect-secrets plugin set (default: `default_plugins()`);
    `entropy=False` switches the entropy rule off.

    Example:
        >>> s = Sanitizer(pii=("email",))
        >>> s.redact("mail ops@example.com").text
        'mail [REDACTED:email]'
        >>> s.clean("DB_PASSWORD=s3cr3t-Value")
        'DB_PASSWORD=[REDACTED:password_assignment]'
    """

    def __init__(self, pii: tuple[str, ...] = ("email",), extra: dict[str, str] | None = None,
                 *, plugins: Sequence[BasePlugin] | None = None, entropy: bool = True,
                 entropy_min_length: int = 20):
        unknown = [name for name in pii if name not in PII_PATTERNS]
        if unknown:
            raise ValueError(
                f"unknown PII pattern(s) {unknown}; choose from {sorted(PII_PATTERNS)} "
                "or pass your own regex via `extra`"
            )
        # A key prefix counts after `_` too (`call_ghp_…`, `TOKEN_sk-…`), where \b would not.
        rules = [(kind, re.sub(r"^\\b", r"(?<![A-Za-z0-9])", p), _RANK_KEY)
                 for kind, p in KEY_PATTERNS]
        rules += [(kind, p, _RANK_CONTEXT) for kind, p in CONTEXT_PATTERNS]
        rules += [(name, PII_PATTERNS[name], _RANK_PII) for name in pii]
        for name, pattern in (extra or {}).items():
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"extra PII pattern {name!r} is not a valid regex: {err}") from None
            rules.append((name, pattern, _RANK_EXTRA))
        self._rules = [(kind, re.compile(pattern), rank) for kind, pattern, rank in rules]
        self._validators: dict[str, Callable[[str], bool]] = {"basic_auth": _is_basic_credential}
        self._plugins = list(default_plugins() if plugins is None else plugins)
        self._entropy = entropy
        self._entropy_min_length = entropy_min_length

    def redact(self, text: str) -> Redaction:
        """Return `text` with every secret/PII match replaced by `[REDACTED:<kind>]`.

        Raises `SanitizerError` when any detector fails: the caller must then send nothing.
        """
        try:
            spans = list(self._regex_spans(text))
            spans += self._plugin_spans(text)
            if self._entropy:
                spans += self._entropy_spans(text)
        except SanitizerError:
            raise
        except Exception as err:  # noqa: BLE001 - any detector bug must stop the send
            # `from None` and no str(err): the detector's message may quote the secret.
            raise SanitizerError(
                f"secret detection failed ({type(err).__name__}); refusing to send the text"
            ) from None
        return _apply(text, spans)

    def clean(self, text: str) -> str:
        """Shorthand for `redact(text).text`.

        Example:
            >>> Sanitizer().clean("postgres://app:hunter22@db:5432/vos")
            'postgres://app:[REDACTED:url_password]@db:5432/vos'
        """
        return self.redact(text).text

    def _regex_spans(self, text: str) -> Iterable[_Span]:
        for kind, pattern, rank in self._rules:
            has_secret = "secret" in pattern.groupindex
            check = self._validators.get(kind)
            for match in pattern.finditer(text):
                start, end = match.span("secret") if has_secret else match.span()
                if start == end or (check and not check(text[start:end])):
                    continue
                if rank == _RANK_CONTEXT and (is_reference(text[start:end])
                                              or looks_like_prose(text[start:end])):
                    continue
                yield _Span(start, end, rank, kind)

    def _plugin_spans(self, text: str) -> list[_Span]:
        # Only plugins whose patterns occur somewhere in the text run line by line: the
        # multi-line prefilter finds a superset of what the per-line scan finds.
        active = [(plugin, _prefilter(plugin)) for plugin in self._plugins]
        active = [(plugin, check) for plugin, check in active
                  if check is None or any(r.search(text) for r in check)]
        spans: list[_Span] = []
        offset = 0
        for line in text.splitlines(keepends=True):
            if line.strip():
                for plugin, check in active:
                    if check is not None and not any(r.search(line) for r in check):
                        continue
                    rank = _RANK_GENERIC if isinstance(plugin, _GENERIC_PLUGINS) else (
                        _RANK_PLUGIN)
                    for start, end in _plugin_spans_in_line(plugin, line):
                        kind = _plugin_kind(plugin, line[start:end])
                        spans.append(_Span(offset + start, offset + end, rank, kind))
            offset += len(line)
        return spans

    def _entropy_spans(self, text: str) -> list[_Span]:
        spans = []
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            if len(token) >= self._entropy_min_length and looks_random(token):
                spans.append(_Span(match.start(), match.end(), _RANK_GENERIC, "high_entropy"))
        return spans


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`.

    Example:
        >>> shannon_entropy("aaaa"), shannon_entropy("abcd")
        (0.0, 2.0)
    """
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return abs(sum(c / n * math.log2(c / n) for c in counts.values()))


def looks_random(token: str) -> bool:
    """The entropy rule: is `token` (20+ chars, base64/url-safe alphabet) an unknown key?

    Hex-only tokens (git SHAs, digests), UUIDs and SSH public-key blobs never count; a token
    needs letters AND digits (identifiers and words have no digits, numbers have no
    letters), mixed case or length 32+, and an entropy close to what random characters of
    that length would give.

    Example:
        >>> looks_random("tR7xQ2mZp9LkV4sWn8YbC3dF6hJ")
        True
        >>> looks_random("da39a3ee5e6b4b0d3255bfef95601890afd80709")
        False
        >>> looks_random("test_each_secret_shape_is_redacted")
        False
    """
    core = token.rstrip("=")
    if _HEX_OR_UUID.fullmatch(core) or core.startswith("AAAA"):
        return False  # digests and ids; `AAAA…` is an SSH public key blob, public by design
    digits = sum(ch.isdigit() for ch in core)
    upper = sum(ch.isupper() for ch in core)
    lower = sum(ch.islower() for ch in core)
    if digits < 2 or upper + lower < 6:
        return False
    if not (upper and lower) and len(core) < 32:
        return False
    # Paths and dotted names: several word-like segments are not a key.
    segments = [s for s in re.split(r"[/_\-]", core) if s]
    if len(segments) >= 3 and all(s.isalpha() or s.isdigit() for s in segments):
        return False
    # Random text of length n over a 64-char alphabet has entropy close to min(log2 n, 6);
    # words and identifiers fall well below it.
    expected = min(math.log2(len(core)), 6.0)
    return shannon_entropy(core) >= expected - 0.75


_KEYWORD_PREFILTER = (re.compile("|".join(KEYWORD_DENYLIST), re.IGNORECASE),)


@functools.cache
def _prefilter_for(plugin_type: type, patterns: tuple) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p.pattern, p.flags | re.MULTILINE) for p in patterns)


def _prefilter(plugin: BasePlugin) -> tuple[re.Pattern, ...] | None:
    """Cheap regexes that must match a text (or line) for `plugin` to find anything in it;
    None for plugins we know nothing about (they always run)."""
    if isinstance(plugin, KeywordDetector):
        return _KEYWORD_PREFILTER
    if isinstance(plugin, Base64HighEntropyString):
        return _prefilter_for(type(plugin), (plugin.regex,))
    if isinstance(plugin, RegexBasedDetector) and type(plugin) in PLUGIN_KINDS:
        return _prefilter_for(type(plugin), tuple(plugin.denylist))
    return None


def _plugin_spans_in_line(plugin: BasePlugin, line: str) -> Iterable[tuple[int, int]]:
    """Where a detect-secrets plugin sees a secret in one line.

    For regex plugins we run their own `denylist` with `finditer` to get positions: their
    `analyze_string` uses `findall`, which for some (GitHub's `(ghp|…)_…`) yields only the
    prefix group. A group after the match's start is the secret (a URL's password, a quoted
    AWS secret), unless it is a documentation placeholder; otherwise the whole match is.
    """
    if isinstance(plugin, RegexBasedDetector) and not isinstance(plugin, _GENERIC_PLUGINS):
        for regex in plugin.denylist:
            for match in regex.finditer(line):
                groups = [i for i, g in enumerate(match.groups(), 1)
                          if g and match.start(i) > match.start()]
                if not groups:
                    yield match.span()
                for i in groups:
                    if not _PLACEHOLDER.fullmatch(match.group(i)):
                        yield match.span(i)
        return
    for value in _plugin_values(plugin, line):
        yield from _locate(line, value)


def _plugin_values(plugin: BasePlugin, line: str) -> Iterable[str]:
    """The secret values a value-reporting detect-secrets plugin finds in one line."""
    if isinstance(plugin, KeywordDetector):
        # Free text is config-like (`key: value`) or code-like (`key = "value"`): try both.
        for table in (CONFIG_DENYLIST_REGEX_TO_GROUP, QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP):
            for value in plugin.analyze_string(line, denylist_regex_to_group=table):
                value = re.split(r"\s#", value, maxsplit=1)[0].strip()  # drop a comment
                if is_reference(value) or (" " in value and not _CONFIG_LINE.match(line)):
                    continue  # a variable, a type, a call, or prose after "secret:"
                yield value
        return
    if isinstance(plugin, Base64HighEntropyString):
        # The plugin leaves the entropy limit to its caller; apply it like detect-secrets does.
        for value in plugin.analyze_string(line):
            if (plugin.calculate_shannon_entropy(value) > plugin.entropy_limit
                    and not _HEX_OR_UUID.fullmatch(value)):
                yield value
        return
    yield from plugin.analyze_string(line)


_PLACEHOLDER = re.compile(r"[…*xX.]+|.*…")
_CONFIG_LINE = re.compile(r"\s*(?:export\s+|-\s+)?[\w.\-\"']+\s*[:=]")
_REFERENCE = re.compile(
    r"(?-i:[A-Z][A-Z0-9_]{2,}(?:\\n)?)"  # an environment variable's NAME: `api_key_env: OPENAI_KEY`
    r"|[…*xX.]+|.*…"  # a documentation placeholder: `postgres://app:…@db`, `tskey-auth-…`
    r"|(?:\$|<|\{|%\(|\[REDACTED).*"  # a template or shell reference: `${DB_PASSWORD}`
    r"|(?:None|null|nil|True|False|true|false|str|bytes|int|SecretStr)\b.*"  # code, types
    r"|[A-Za-z_][\w.]*\s*[(\[|].*"  # a call, a subscript or a type union: `os.environ.get(`
    r"|(?:self|cls)\..*"  # an attribute: `self._password`
    r"|[A-Za-z_]+(?:\.[A-Za-z_]+)+"  # a dotted name: `operator.secret`
    r"|(?-i:[A-Z][a-z]+(?:[A-Z][a-z]+)+)"  # a type: `FilePath`
    # a variable named like a secret: `api_key=api_key or "ollama"`
    r"|[A-Za-z_]*(?:pass|pwd|secret|key|token|auth)[A-Za-z_]*(?:[\s,)}\]].*)?",
    re.IGNORECASE,
)


def looks_like_prose(value: str) -> bool:
    """Is a quoted value after a secret-ish key a sentence (a UI message, a help text) rather
    than a passphrase? Six words or more, or four with sentence punctuation.

    Example:
        >>> looks_like_prose("That token is not valid (mistyped, revoked). Ask again")
        True
        >>> looks_like_prose("correct horse battery staple")
        False
    """
    words = value.split()
    return len(words) >= 6 or (len(words) >= 4 and bool(re.search(r"[.,;:!?] |[()]", value)))


def is_reference(value: str) -> bool:
    """Is the value after a secret-ish key a reference to a secret rather than the secret?

    Example:
        >>> [is_reference(v) for v in ("${DB_PASSWORD}", "os.environ.get(name)", "hunter22")]
        [True, True, False]
    """
    return bool(_REFERENCE.fullmatch(value.strip()))


def _plugin_kind(plugin: BasePlugin, value: str) -> str:
    if isinstance(plugin, AWSKeyDetector) and _AWS_KEY_ID.search(value):
        return "aws_access_key"
    return PLUGIN_KINDS.get(type(plugin), "secret")


def _locate(line: str, value: str) -> list[tuple[int, int]]:
    """Every span of `value` in `line` (plugins report values, not positions)."""
    value = value.strip().strip("\"'`")
    if len(value) < 4 or value.startswith("[REDACTED"):
        return []
    spans, at = [], line.find(value)
    while at != -1:
        spans.append((at, at + len(value)))
        at = line.find(value, at + len(value))
    return spans


def _is_basic_credential(value: str) -> bool:
    """`Basic <x>` is a credential when <x> decodes to `user:password` (not the word
    'authentication' after 'Basic')."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _apply(text: str, spans: list[_Span]) -> Redaction:
    """Merge overlapping spans (the lowest rank names the merged one) and replace them."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, s.rank, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            best = last if last.rank <= span.rank else span
            merged[-1] = _Span(last.start, max(last.end, span.end), best.rank, best.kind)
        else:
            merged.append(span)
    counts: dict[str, int] = {}
    out, at = [], 0
    for span in merged:
        out += [text[at:span.start], f"[REDACTED:{span.kind}]"]
        at = span.end
        counts[span.kind] = counts.get(span.kind, 0) + 1
    out.append(text[at:])
    return Redaction("".join(out), counts)
