"""Providers through the official SDKs, with the SDKs' own retries switched off.

`AnthropicProvider` uses `anthropic.Anthropic().messages`; `OpenAICompatibleProvider` uses
`openai.OpenAI().chat.completions` for OpenAI, OpenRouter (another base URL) and Ollama (its
OpenAI-compatible `/v1` endpoint); `OllamaProvider` speaks Ollama's native `/api/chat`. Every
provider sanitizes the prompt before building the request, so no code path can send an
unredacted secret. SDK errors become `ProviderError` with a kind the router understands and
the server's Retry-After, if any.

A reply's tool calls come back as `Completion.tool_calls` (`ToolCall`s with the provider's
call id, streaming or not) and why the model stopped as `Completion.stop_reason`,
normalised to "end", "tool_use" or "max_tokens" (any other reason passes through as sent).

Example:
    >>> p = OpenAICompatibleProvider("openai", "http://127.0.0.1:9/v1", "key")
    >>> p.provider
    'openai'
"""

import email.utils
import importlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from app.agents.prefix import (
    PromptParts,
    ToolCall,
    anthropic_request,
    ollama_request,
    openai_request,
)
from app.agents.prices import Usage, usage_from_anthropic, usage_from_openai
from app.agents.sanitize import Sanitizer

RETRYABLE_KINDS = frozenset({"rate_limited", "server", "overloaded", "connection"})
OPENAI_WIRE_PROVIDERS = ("openai", "openrouter", "ollama-openai")
PROVIDER_KINDS = ("anthropic", "ollama", *OPENAI_WIRE_PROVIDERS)
# The vendor a provider kind bills as: both Ollama wires serve the same local models, so they
# share the price rows (and the ledger's `provider` column) of "ollama".
VENDOR = {"ollama-openai": "ollama"}
# Each wire's stop reasons, normalised; a reason not listed passes through unchanged.
STOP_REASONS = {"end_turn": "end", "stop_sequence": "end", "stop": "end",
                "tool_use": "tool_use", "tool_calls": "tool_use", "function_call": "tool_use",
                "max_tokens": "max_tokens", "length": "max_tokens"}
INVALID_JSON_KEY = "__invalid_json__"


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
    """A successful call: reply text, the model that actually served it, normalised usage,
    the tool calls the model made (in order) and why it stopped (see `normalise_stop`)."""

    text: str
    model_served: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: str = ""


def normalise_stop(reason: str | None, has_tool_calls: bool) -> str:
    """"end", "tool_use" or "max_tokens" from any wire's stop reason; others unchanged.

    A reply with tool calls that says it simply stopped (Ollama always says "stop") is a
    tool-use stop: the caller must run the calls.

    Example:
        >>> normalise_stop("tool_calls", True), normalise_stop("stop", True)
        ('tool_use', 'tool_use')
        >>> normalise_stop("length", False), normalise_stop("refusal", False)
        ('max_tokens', 'refusal')
    """
    normal = STOP_REASONS.get(reason or "", reason or "")
    if has_tool_calls and normal in ("end", ""):
        return "tool_use"
    return normal or "end"


def parse_arguments(raw: Any) -> dict:
    """A tool call's arguments as a dict: an OpenAI JSON string parsed, a dict kept. What is
    not a JSON object comes back as `{"__invalid_json__": raw[:2000]}`, so the caller can
    answer the model with an error instead of crashing the run.

    Example:
        >>> parse_arguments('{"q": "ports"}'), parse_arguments("")
        ({'q': 'ports'}, {})
        >>> parse_arguments('{"q": ')
        {'__invalid_json__': '{"q": '}
    """
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}  # a call of a tool without parameters
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {INVALID_JSON_KEY: text[:2000]}


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


def _sdk(name: str):
    """The `anthropic` or `openai` SDK, imported on first use: each builds thousands of
    pydantic models at import (seconds; minutes under emulation), which processes that never
    call a provider (the door, migrations, `vos agents apply`) should not pay."""
    return importlib.import_module(name)


def _sdk_errors(kind: str) -> tuple[type, ...]:
    """The SDKs' exception classes named `kind`, of the SDKs loaded so far (an exception of
    an SDK can only come from a loaded one)."""
    return tuple(getattr(sys.modules[name], kind) for name in ("anthropic", "openai")
                 if name in sys.modules)


def _provider_error(exc: Exception) -> ProviderError:
    """Map either SDK's exception to a ProviderError (both SDKs share the shape)."""
    if isinstance(exc, _sdk_errors("APIStatusError")):
        message, code = _error_message(exc.body, str(exc))
        kind = _classify(exc.status_code, message, code)
        return ProviderError(kind, message, exc.status_code,
                             parse_retry_after(exc.response.headers))
    if isinstance(exc, _sdk_errors("APIConnectionError")):
        return ProviderError("connection", str(exc) or type(exc).__name__)
    raise exc


class AnthropicProvider:
    """Claude models through the Messages API, prefix cached with `cache_control`."""

    provider = "anthropic"

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 stream: bool = False, sanitizer: Sanitizer | None = None):
        self._sdk = _sdk("anthropic")
        self._client = self._sdk.Anthropic(base_url=base_url, api_key=api_key,
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
        except (self._sdk.APIStatusError, self._sdk.APIConnectionError) as exc:
            raise _provider_error(exc) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = tuple(ToolCall(block.id, block.name, parse_arguments(block.input))
                      for block in message.content if block.type == "tool_use")
        return Completion(text, message.model, usage_from_anthropic(message.usage), calls,
                          normalise_stop(message.stop_reason, bool(calls)))


class OpenAICompatibleProvider:
    """OpenAI, OpenRouter and Ollama's `/v1` (kind `ollama-openai`) through the `openai`
    SDK's Chat Completions. `provider` is the vendor the call bills as (`ollama` for
    `ollama-openai`)."""

    def __init__(self, provider: str, base_url: str, api_key: str, *, timeout: float = 30.0,
                 stream: bool = False, sanitizer: Sanitizer | None = None):
        if provider not in OPENAI_WIRE_PROVIDERS:
            raise ValueError(f"unknown OpenAI-wire provider {provider!r}; "
                             f"choose one of {OPENAI_WIRE_PROVIDERS}")
        self.kind = provider
        self.provider = VENDOR.get(provider, provider)
        # Ollama ignores the key, but the SDK insists on one.
        self._sdk = _sdk("openai")
        self._client = self._sdk.OpenAI(base_url=base_url, api_key=api_key or "ollama",
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
        except (self._sdk.APIStatusError, self._sdk.APIConnectionError) as exc:
            raise _provider_error(exc) from exc
        if response.usage is None:
            raise ProviderError("server", f"{self.provider} answered without usage; cannot price")
        if not response.choices:
            return Completion("", response.model, usage_from_openai(response.usage))
        choice = response.choices[0]
        calls = tuple(
            ToolCall(call.id or f"call_{n}", call.function.name,
                     parse_arguments(call.function.arguments))
            for n, call in enumerate(choice.message.tool_calls or [])
            if call.type == "function")
        return Completion(choice.message.content or "", response.model,
                          usage_from_openai(response.usage), calls,
                          normalise_stop(choice.finish_reason, bool(calls)))

    def _complete_streaming(self, request: dict, model: str, max_tokens: int) -> Completion:
        pieces, served, usage, finish = [], model, None, None
        calls: dict[int, dict] = {}  # index -> {id, name, arguments pieces}
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
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        # the first delta of a call carries its id and name; later ones (same
                        # index) only pieces of the arguments string
                        call = calls.setdefault(delta.index, {"id": "", "name": "", "args": []})
                        call["id"] = delta.id or call["id"]
                        if delta.function is not None:
                            call["name"] = delta.function.name or call["name"]
                            call["args"].append(delta.function.arguments or "")
        if usage is None:
            raise ProviderError("server", f"{self.provider} stream ended without usage")
        tool_calls = tuple(
            ToolCall(call["id"] or f"call_{index}", call["name"],
                     parse_arguments("".join(call["args"])))
            for index, call in sorted(calls.items()))
        return Completion("".join(pieces), served, usage_from_openai(usage), tool_calls,
                          normalise_stop(finish, bool(tool_calls)))


class OllamaProvider:
    """Ollama's native chat API: `POST {base_url}/api/chat`.

    The system prompt and persona travel as the first (system) message, the passages and the
    task as the user message (the same order as the OpenAI wire, so Ollama's KV cache reuses
    the stable prefix), tools in Ollama's function format, turns in Ollama's own shape
    (`app.agents.prefix.ollama_request`), `options.num_predict` caps the output. With
    `stream=True` the reply is read as NDJSON lines; tool calls may come in any of them.
    Ollama gives no call ids (older versions) or its own; a missing one becomes `call_<n>`,
    n counting the reply's calls from 0. Usage comes from
    `prompt_eval_count` / `eval_count`; Ollama omits `prompt_eval_count` when the whole
    prompt came from its cache, which counts as 0 uncached tokens (local models cost $0).

    Example:
        >>> OllamaProvider("http://127.0.0.1:11434").provider
        'ollama'
    """

    provider = "ollama"
    kind = "ollama"

    def __init__(self, base_url: str, api_key: str = "", *, timeout: float = 30.0,
                 stream: bool = False, sanitizer: Sanitizer | None = None):
        if urlsplit(base_url).path.rstrip("/").endswith("/v1"):
            raise ValueError(
                f"base_url {base_url!r} ends in /v1, the OpenAI-compatible endpoint: give the "
                "server root (e.g. http://host:11434) for provider ollama, or use provider "
                "ollama-openai for /v1")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}  # a proxy's key
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                    headers=headers)
        self._stream = stream
        self._sanitizer = sanitizer or Sanitizer()

    def complete(self, parts: PromptParts, model: str, max_tokens: int) -> Completion:
        request = ollama_request(parts.sanitized(self._sanitizer))
        body = {"model": model, "stream": self._stream,
                "options": {"num_predict": max_tokens}, **request}
        try:
            if self._stream:
                return self._complete_streaming(body, model)
            response = self._client.post("/api/chat", json=body)
            if response.status_code >= 400:
                raise _ollama_error(response.status_code, response.text, response.headers)
            data = _json_object(response.text)
        except httpx.TransportError as exc:
            raise ProviderError("connection", str(exc) or type(exc).__name__) from exc
        if "error" in data:
            raise _ollama_error(500, json.dumps(data), {})
        message = data.get("message") or {}
        return _ollama_completion(data, model, message.get("content") or "",
                                  message.get("tool_calls") or [])

    def _complete_streaming(self, body: dict, model: str) -> Completion:
        pieces, final, raw_calls = [], None, []
        with self._client.stream("POST", "/api/chat", json=body) as response:
            if response.status_code >= 400:
                raise _ollama_error(response.status_code, response.read().decode(errors="replace"),
                                    response.headers)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                chunk = _json_object(line)
                if "error" in chunk:  # a failure after the 200 header arrives as a line
                    raise _ollama_error(500, line, {})
                message = chunk.get("message") or {}
                pieces.append(message.get("content") or "")
                raw_calls += message.get("tool_calls") or []
                if chunk.get("done"):
                    final = chunk
        if final is None:
            raise ProviderError("server", "ollama stream ended without its final (done) line")
        return _ollama_completion(final, model, "".join(pieces), raw_calls)


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        raise ProviderError("server", f"ollama answered something that is not JSON: "
                                      f"{text[:200]!r}") from None
    if not isinstance(data, dict):
        raise ProviderError("server", f"ollama answered a JSON {type(data).__name__}, "
                                      "not an object")
    return data


def _ollama_completion(data: dict, model: str, text: str, raw_calls: list) -> Completion:
    if not data.get("done", False):
        raise ProviderError("server", "ollama answered an unfinished response (done=false)")
    usage = Usage(int(data.get("prompt_eval_count") or 0), 0, 0, int(data.get("eval_count") or 0))
    calls = tuple(_ollama_tool_call(n, raw) for n, raw in enumerate(raw_calls))
    return Completion(text, str(data.get("model") or model), usage, calls,
                      normalise_stop(data.get("done_reason"), bool(calls)))


def _ollama_tool_call(n: int, raw: Any) -> ToolCall:
    """One entry of Ollama's `message.tool_calls`: `{function: {name, arguments: {...}}}`,
    with an `id` in newer versions (kept), `call_<n>` otherwise."""
    if not isinstance(raw, dict):
        raise ProviderError("server", f"ollama answered a tool call that is not an object: "
                                      f"{str(raw)[:200]!r}")
    function = raw.get("function") or {}
    return ToolCall(str(raw.get("id") or f"call_{n}"), str(function.get("name") or ""),
                    parse_arguments(function.get("arguments")))


def _ollama_error(status: int, text: str, headers: Any) -> ProviderError:
    """Ollama errors are `{"error": "message"}`; a missing model is 404 (never retried)."""
    try:
        body = json.loads(text)
        message = str(body.get("error") or text) if isinstance(body, dict) else text
    except ValueError:
        message = text
    message = message[:500] or f"HTTP {status}"
    lowered = message.lower()
    if "context length" in lowered or "context window" in lowered:
        kind = "context_length"
    elif status == 404:
        kind = "bad_request"  # "model … not found, try pulling it first": retrying won't help
    else:
        kind = _classify(status, message, None)
    return ProviderError(kind, message, status, parse_retry_after(headers))


def build_provider(provider: str, base_url: str, api_key: str, *, timeout: float = 30.0,
                   stream: bool = False, sanitizer: Sanitizer | None = None) -> Provider:
    """Construct the right provider for a provider kind (see PROVIDER_KINDS).

    Example:
        >>> build_provider("ollama", "http://127.0.0.1:11434", "").provider
        'ollama'
        >>> build_provider("ollama-openai", "http://127.0.0.1:11434/v1", "").kind
        'ollama-openai'
    """
    if provider == "anthropic":
        return AnthropicProvider(base_url, api_key, timeout=timeout, stream=stream,
                                 sanitizer=sanitizer)
    if provider == "ollama":
        return OllamaProvider(base_url, api_key, timeout=timeout, stream=stream,
                              sanitizer=sanitizer)
    return OpenAICompatibleProvider(provider, base_url, api_key, timeout=timeout,
                                    stream=stream, sanitizer=sanitizer)


# -- embeddings ---------------------------------------------------------------------------

class Embedder(Protocol):
    model: str

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order; raise ProviderError on failure."""


class OllamaEmbedder:
    """`POST {base_url}/api/embed` with `{"model", "input": [...]}` → `embeddings`.

    Example:
        >>> OllamaEmbedder("http://127.0.0.1:11434", "nomic-embed-text").model
        'nomic-embed-text'
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", *, timeout: float = 30.0,
                 sanitizer: Sanitizer | None = None):
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                    headers=headers)
        self.model = model
        self._sanitizer = sanitizer or Sanitizer()

    def embed(self, texts: list[str]) -> list[list[float]]:
        clean = [self._sanitizer.clean(t) for t in texts]
        try:
            response = self._client.post("/api/embed", json={"model": self.model,
                                                             "input": clean})
        except httpx.TransportError as exc:
            raise ProviderError("connection", str(exc) or type(exc).__name__) from exc
        if response.status_code >= 400:
            raise _ollama_error(response.status_code, response.text, response.headers)
        vectors = _json_object(response.text).get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise ProviderError("server", f"ollama returned {len(vectors or [])} embeddings "
                                          f"for {len(texts)} inputs")
        return [[float(x) for x in v] for v in vectors]


class OpenAIEmbedder:
    """An OpenAI-compatible `/v1/embeddings` through the `openai` SDK (OpenAI, Ollama's /v1,
    any compatible server)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", *, timeout: float = 30.0,
                 sanitizer: Sanitizer | None = None):
        self._sdk = _sdk("openai")
        self._client = self._sdk.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                        max_retries=0, timeout=timeout)
        self.model = model
        self._sanitizer = sanitizer or Sanitizer()

    def embed(self, texts: list[str]) -> list[list[float]]:
        clean = [self._sanitizer.clean(t) for t in texts]
        try:
            response = self._client.embeddings.create(model=self.model, input=clean)
        except (self._sdk.APIStatusError, self._sdk.APIConnectionError) as exc:
            raise _provider_error(exc) from exc
        return [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]


def build_embedder(provider: str, base_url: str, model: str, api_key: str = "", *,
                   timeout: float = 30.0, sanitizer: Sanitizer | None = None) -> Embedder:
    """`ollama` → native /api/embed; any OpenAI-wire kind → /v1/embeddings.

    Example:
        >>> type(build_embedder("ollama", "http://127.0.0.1:11434", "nomic-embed-text")).__name__
        'OllamaEmbedder'
    """
    if provider == "ollama":
        return OllamaEmbedder(base_url, model, api_key, timeout=timeout, sanitizer=sanitizer)
    if provider in OPENAI_WIRE_PROVIDERS or provider == "openai-compatible":
        return OpenAIEmbedder(base_url, model, api_key, timeout=timeout, sanitizer=sanitizer)
    raise ValueError(f"embedding provider {provider!r} is not one of: ollama, "
                     f"{', '.join(OPENAI_WIRE_PROVIDERS)}, openai-compatible")


def monotonic_ms(start: float) -> int:
    """Milliseconds since `start` (a time.monotonic() value)."""
    return int((time.monotonic() - start) * 1000)
