"""Providers through the official SDKs, with the SDKs' own retries switched off.

`AnthropicProvider` uses `anthropic.Anthropic().messages`; `OpenAICompatibleProvider` uses
`openai.OpenAI().chat.completions` for OpenAI, OpenRouter (another base URL) and Ollama (its
OpenAI-compatible `/v1` endpoint). Every provider sanitizes the prompt before building the
request, so no code path can send an unredacted secret. SDK errors become `ProviderError`
with a kind the router understands and the server's Retry-After, if any.

Example:
    >>> p = OpenAICompatibleProvider("openai", "http://127.0.0.1:9/v1", "key")
    >>> p.provider
    'openai'
"""

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anthropic
import openai

from app.agents.prefix import PromptParts, anthropic_request, openai_request
from app.agents.prices import Usage, usage_from_anthropic, usage_from_openai
from app.agents.sanitize import Sanitizer

RETRYABLE_KINDS = frozenset({"rate_limited", "server", "overloaded", "connection"})
OPENAI_WIRE_PROVIDERS = ("openai", "openrouter", "ollama")


class ProviderError(Exception):
    """A failed provider call, classified for the router.

    `kind` is one of: rate_limited, server, overloaded, connection (retryable);
    context_length (fall back to a larger model); auth, bad_request (never retried).
    """

    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{kind} (HTTP {status}): {message}" if status else f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class Completion:
    """A successful call: reply text, the model that actually served it, normalised usage."""

    text: str
    model_served: str
    usage: Usage


class Provider(Protocol):
    provider: str

    def complete(self, parts: PromptParts, model: str, max_tokens: int) -> Completion:
        """Send `parts` to `model`; raise ProviderError on failure."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or HTTP date).

    Example:
        >>> parse_retry_after({"retry-after": "2"})
        2.0
    """
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _classify(status: int, message: str, code: str | None) -> str:
    lowered = message.lower()
    if code == "context_length_exceeded" or "prompt is too long" in lowered \
            or "maximum context length" in lowered or status == 413:
        return "context_length"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status == 529 or "overloaded" in lowered:
        return "overloaded"
    if status >= 500 or status in (408, 409):
        return "server"
    return "bad_request"


def _error_message(body: Any, fallback: str) -> tuple[str, str | None]:
    """(message, code) from an Anthropic or OpenAI error body."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message") or fallback), (str(code) if code else None)
    return fallback, None


def _provider_error(exc: Exception) -> ProviderError:
    """Map either SDK's exception to a ProviderError (both SDKs share the shape)."""
    if isinstance(exc, anthropic.APIStatusError | openai.APIStatusError):
        message, code = _error_message(exc.body, str(exc))
        kind = _classify(exc.status_code, message, code)
        return ProviderError(kind, message, exc.status_code,
                             parse_retry_after(exc.response.headers))
    if isinstance(exc, anthropic.APIConnectionError | openai.APIConnectionError):
        return ProviderError("connection", str(exc) or type(exc).__name__)
    raise exc


class AnthropicProvider:
    """Claude models through the Messages API, prefix cached with `cache_control`."""

    provider = "anthropic"

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 stream: bool = False, sanitizer: Sanitizer | None = None):
        self._client = anthropic.Anthropic(base_url=base_url, api_key=api_key,
                                           max_retries=0, timeout=timeout)
        self._stream = stream
        self._sanitizer = sanitizer or Sanitizer()

    def complete(self, parts: PromptParts, model: str, max_tokens: int) -> Completion:
        request = anthropic_request(parts.sanitized(self._sanitizer), model)
        try:
            if self._stream:
                with self._client.messages.stream(model=model, max_tokens=max_tokens,
                                                  **request) as stream:
                    message = stream.get_final_message()
            else:
                message = self._client.messages.create(model=model, max_tokens=max_tokens,
                                                       **request)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise _provider_error(exc) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.model, usage_from_anthropic(message.usage))


class OpenAICompatibleProvider:
    """OpenAI, OpenRouter and Ollama through the `openai` SDK's Chat Completions."""

    def __init__(self, provider: str, base_url: str, api_key: str, *, timeout: float = 30.0,
                 stream: bool = False, sanitizer: Sanitizer | None = None):
        if provider not in OPENAI_WIRE_PROVIDERS:
            raise ValueError(f"unknown OpenAI-wire provider {provider!r}; "
                             f"choose one of {OPENAI_WIRE_PROVIDERS}")
        self.provider = provider
        # Ollama ignores the key, but the SDK insists on one.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "ollama",
                                     max_retries=0, timeout=timeout)
        self._stream = stream
        self._sanitizer = sanitizer or Sanitizer()

    def complete(self, parts: PromptParts, model: str, max_tokens: int) -> Completion:
        request = openai_request(parts.sanitized(self._sanitizer))
        try:
            if self._stream:
                return self._complete_streaming(request, model, max_tokens)
            response = self._client.chat.completions.create(model=model, max_tokens=max_tokens,
                                                            **request)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise _provider_error(exc) from exc
        if response.usage is None:
            raise ProviderError("server", f"{self.provider} answered without usage; cannot price")
        text = response.choices[0].message.content or "" if response.choices else ""
        return Completion(text, response.model, usage_from_openai(response.usage))

    def _complete_streaming(self, request: dict, model: str, max_tokens: int) -> Completion:
        pieces, served, usage = [], model, None
        stream = self._client.chat.completions.create(
            model=model, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True}, **request)
        with stream:
            for chunk in stream:
                served = chunk.model or served
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
        if usage is None:
            raise ProviderError("server", f"{self.provider} stream ended without usage")
        return Completion("".join(pieces), served, usage_from_openai(usage))


def build_provider(provider: str, base_url: str, api_key: str, *, timeout: float = 30.0,
                   stream: bool = False, sanitizer: Sanitizer | None = None) -> Provider:
    """Construct the right SDK-backed provider for a provider name.

    Example:
        >>> build_provider("ollama", "http://127.0.0.1:11434/v1", "").provider
        'ollama'
    """
    if provider == "anthropic":
        return AnthropicProvider(base_url, api_key, timeout=timeout, stream=stream,
                                 sanitizer=sanitizer)
    return OpenAICompatibleProvider(provider, base_url, api_key, timeout=timeout,
                                    stream=stream, sanitizer=sanitizer)


def monotonic_ms(start: float) -> int:
    """Milliseconds since `start` (a time.monotonic() value)."""
    return int((time.monotonic() - start) * 1000)
