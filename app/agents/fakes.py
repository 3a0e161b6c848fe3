"""Local HTTP servers that speak the provider wire formats, for tests and demos.

One `FakeProviderServer` per provider, bound to 127.0.0.1. It speaks:

- `anthropic`: `POST /v1/messages` (JSON or SSE streaming), `x-api-key` auth;
- `openai` (also OpenRouter): `POST /v1/chat/completions` (JSON or SSE chunks with
  `stream_options.include_usage`), bearer auth;
- `ollama`: native `POST /api/chat` (JSON, or NDJSON lines when `stream` is true or
  omitted, as Ollama does) and `POST /api/embed`, plus the OpenAI-compatible
  `POST /v1/chat/completions` and `POST /v1/embeddings`. Native errors are `{"error": "…"}`;
  `script("404")` answers "model not found".

Embeddings are deterministic: hashed word counts in `EMBED_DIMENSIONS` dimensions, L2
normalised, so texts sharing words get similar vectors.

Prompt caching is computed, never made up: the server tokenizes what it receives and
remembers prefixes. Anthropic-style: a prefix is cached when a block carries `cache_control`
and the prefix is at least the model's minimum cacheable length; a later request reads the
longest remembered prefix ending on one of its block boundaries. OpenAI-style: every prompt
of 1024+ tokens is remembered at 1024 + 128·k token boundaries, and a later request reads the
longest remembered boundary it shares. Entries expire after `cache_ttl_seconds` (5 min,
refreshed on use). Usage fields follow each provider's convention.

Failures are scripted per server (`server.script("429:2", "529", "context")`) and consumed
one per request; a prompt longer than the model's context window fails on its own.

Example:
    >>> server = FakeProviderServer("openai").start()
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WIRES = ("anthropic", "openai", "ollama")
_TOKEN = re.compile(r"\w+|[^\w\s]")
OPENAI_CACHE_MIN = 1024
OPENAI_CACHE_STEP = 128
DEFAULT_CONTEXT_WINDOW = 200_000
MAX_RECEIVED = 10_000
EMBED_DIMENSIONS = 16


def fake_tokenize(text: str) -> list[str]:
    """The fake provider's tokenizer: word pieces and punctuation marks."""
    return _TOKEN.findall(text)


def anthropic_min_cacheable(model: str) -> int:
    """Anthropic's documented minimum cacheable prompt length for `model` (tokens)."""
    return 2048 if "haiku" in model else 1024


@dataclass
class ReceivedRequest:
    """One request exactly as it arrived on the wire (for sanitizer and ordering tests)."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class ScriptedFailure:
    """A failure the server returns instead of answering: status, error kind, Retry-After."""

    status: int
    kind: str
    retry_after: float | None = None

    @classmethod
    def parse(cls, spec: str) -> "ScriptedFailure":
        """Parse `429[:secs]`, `500`, `503`, `529`, `401`, `400`, `404`, `context`.

        Example:
            >>> ScriptedFailure.parse("429:2")
            ScriptedFailure(status=429, kind='rate_limit', retry_after=2.0)
        """
        head, _, arg = spec.partition(":")
        kinds = {"429": (429, "rate_limit"), "500": (500, "server"), "503": (503, "server"),
                 "529": (529, "overloaded"), "401": (401, "auth"), "400": (400, "bad_request"),
                 "404": (404, "not_found"), "context": (400, "context")}
        if head not in kinds:
            raise ValueError(f"unknown failure spec {spec!r}; use one of {sorted(kinds)}")
        status, kind = kinds[head]
        return cls(status, kind, float(arg) if arg else None)


@dataclass
class _Block:
    text: str
    cache_breakpoint: bool = False


@dataclass
class _PromptCache:
    """Remembered prefix hashes per model, guarded by a lock (the server is threaded)."""

    prefixes: dict[str, dict[str, float]] = field(default_factory=dict)  # hash -> expiry
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeProviderServer:
    """A threaded HTTP server speaking one provider's wire format on 127.0.0.1."""

    def __init__(
        self,
        wire: str,
        *,
        api_key: str = "fake-key",
        context_windows: dict[str, int] | None = None,
        aliases: dict[str, str] | None = None,
        port: int = 0,
        name: str | None = None,
        cache_ttl_seconds: float = 300.0,
        host: str = "127.0.0.1",
    ):
        if wire not in WIRES:
            raise ValueError(f"unknown wire format {wire!r}; choose one of {WIRES}")
        self.wire = wire
        self.name = name or wire
        self.api_key = api_key
        self.context_windows = dict(context_windows or {})
        self.aliases = dict(aliases or {})
        self.cache_ttl_seconds = cache_ttl_seconds  # both providers' default: 5 minutes
        self.received: list[ReceivedRequest] = []
        self._script: list[ScriptedFailure] = []
        self._lock = threading.Lock()
        self._cache = _PromptCache()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """What to hand the provider: Anthropic's client adds `/v1`, OpenAI's expects it, and
        Ollama's native kind (`ollama`) wants the server root (see `openai_base_url`)."""
        root = f"http://{self._httpd.server_address[0]}:{self.port}"
        return root if self.wire in ("anthropic", "ollama") else root + "/v1"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible `/v1` base (for kind `ollama-openai` on an Ollama fake)."""
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> "FakeProviderServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() would wait forever on a never-started server
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    # -- test controls --------------------------------------------------------------------
    def script(self, *specs: str) -> None:
        """Queue failures; each incoming request consumes one before being answered."""
        failures = [ScriptedFailure.parse(s) for s in specs]
        with self._lock:
            self._script.extend(failures)

    def reset(self) -> None:
        """Forget received requests, queued failures and the prompt cache."""
        with self._lock:
            self.received.clear()
            self._script.clear()
        with self._cache.lock:
            self._cache.prefixes.clear()

    def _next_failure(self) -> ScriptedFailure | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    # -- request handling -----------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Silence per-request logging; tests read `server.received` instead."""

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.received.append(
                        ReceivedRequest(self.path, {k.lower(): v for k, v in self.headers.items()},
                                        body)
                    )
                    del server.received[:-MAX_RECEIVED]  # a long demo must not grow forever
                try:
                    server._dispatch(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") in ("", "/healthz"):
                    _send_json(self, 200, {"ok": True, "wire": server.wire})
                else:
                    _send_json(self, 404, {"error": f"no route {self.path}"})

        return Handler

    def _dispatch(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        routes = {
            ("anthropic", "/v1/messages"): self._anthropic,
            ("openai", "/v1/chat/completions"): self._openai,
            ("ollama", "/v1/chat/completions"): self._openai,
            ("ollama", "/api/chat"): self._ollama_native,
            ("ollama", "/api/embed"): self._ollama_embed,
            ("ollama", "/v1/embeddings"): self._openai_embeddings,
            ("openai", "/v1/embeddings"): self._openai_embeddings,
        }
        route = routes.get((self.wire, handler.path.split("?")[0]))
        if route is None:
            _send_json(handler, 404, {"error": f"{self.wire} fake has no route {handler.path}"})
            return
        if not self._authorised(handler):
            self._send_error(handler, ScriptedFailure(401, "auth"))
            return
        try:
            request = json.loads(body)
        except json.JSONDecodeError as exc:
            self._send_error(handler, ScriptedFailure(400, "bad_request"), f"invalid JSON: {exc}")
            return
        failure = self._next_failure()
        if failure is not None:
            self._send_error(handler, failure)
            return
        route(handler, request)

    def _authorised(self, handler: BaseHTTPRequestHandler) -> bool:
        if self.wire == "ollama":
            return True
        if self.wire == "anthropic" and handler.headers.get("x-api-key"):
            return handler.headers.get("x-api-key") == self.api_key
        # Newer Anthropic SDKs send the key as a bearer token, like OpenAI's.
        return handler.headers.get("authorization") == f"Bearer {self.api_key}"

    def _context_window(self, model: str) -> int:
        return self.context_windows.get(model, DEFAULT_CONTEXT_WINDOW)

    # -- Anthropic Messages ---------------------------------------------------------------
    def _anthropic(self, handler: BaseHTTPRequestHandler, request: dict) -> None:
        model = request["model"]
        blocks = _anthropic_blocks(request)
        token_counts = [len(fake_tokenize(b.text)) for b in blocks]
        total = sum(token_counts)
        window = self._context_window(model)
        if total > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"prompt is too long: {total} tokens > {window} maximum")
            return
        read, write = self._anthropic_cache(model, blocks, token_counts)
        reply = _reply_text(model, total)
        output = min(len(fake_tokenize(reply)), int(request.get("max_tokens", 1024)))
        usage = {"input_tokens": total - read - write, "output_tokens": output,
                 "cache_creation_input_tokens": write, "cache_read_input_tokens": read}
        served = self.aliases.get(model, model)
        if request.get("stream"):
            _send_sse(handler, _anthropic_events(served, reply, usage))
            return
        _send_json(handler, 200, {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": served, "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
        })

    def _anthropic_cache(self, model: str, blocks: list[_Block], counts: list[int]
                         ) -> tuple[int, int]:
        """Return (cache_read, cache_write) for this request and remember new breakpoints."""
        boundaries = list(_prefix_hashes([b.text for b in blocks], counts))
        breakpoints = [(pos, h) for (pos, h), b in zip(boundaries, blocks, strict=True)
                       if b.cache_breakpoint]
        if not breakpoints:
            return 0, 0
        last_breakpoint = breakpoints[-1][0]
        minimum = anthropic_min_cacheable(model)
        now = time.monotonic()
        with self._cache.lock:
            seen = self._cache.prefixes.setdefault(model, {})
            hits = [(pos, h) for pos, h in boundaries
                    if pos <= last_breakpoint and seen.get(h, 0.0) > now]
            read, read_hash = max(hits, default=(0, None))
            if read_hash:
                seen[read_hash] = now + self.cache_ttl_seconds  # a hit refreshes the entry
            new = [(pos, h) for pos, h in breakpoints if pos > read and pos >= minimum]
            seen.update((h, now + self.cache_ttl_seconds) for _, h in new)
        write = (max(pos for pos, _ in new) - read) if new else 0
        return read, write

    # -- OpenAI Chat Completions (also OpenRouter, Ollama's compatible endpoint) ----------
    def _openai(self, handler: BaseHTTPRequestHandler, request: dict) -> None:
        model = request["model"]
        tokens = _openai_tokens(request)
        window = self._context_window(model)
        if len(tokens) > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"This model's maximum context length is {window} tokens. However, "
                             f"your messages resulted in {len(tokens)} tokens.")
            return
        cached = self._openai_cache(model, tokens) if self.wire == "openai" else 0
        reply = _reply_text(model, len(tokens))
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or 4096
        output = min(len(fake_tokenize(reply)), int(limit))
        usage: dict[str, Any] = {"prompt_tokens": len(tokens), "completion_tokens": output,
                                 "total_tokens": len(tokens) + output}
        if self.wire == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        served = self.aliases.get(model, model)
        if request.get("stream"):
            include_usage = (request.get("stream_options") or {}).get("include_usage", False)
            _send_sse(handler, _openai_chunks(served, reply, usage if include_usage else None),
                      done_marker=True)
            return
        _send_json(handler, 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": served,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": reply}}],
            "usage": usage,
        })

    def _openai_cache(self, model: str, tokens: list[str]) -> int:
        """Longest remembered 1024+128k boundary; remember this prompt's boundaries."""
        grid = range(OPENAI_CACHE_MIN, len(tokens) + 1, OPENAI_CACHE_STEP)
        hashes = dict(_grid_hashes(tokens, set(grid)))
        now = time.monotonic()
        with self._cache.lock:
            seen = self._cache.prefixes.setdefault(model, {})
            cached = max((pos for pos, h in hashes.items() if seen.get(h, 0.0) > now),
                         default=0)
            seen.update((h, now + self.cache_ttl_seconds) for h in hashes.values())
        return cached

    # -- Ollama native /api/chat ----------------------------------------------------------
    def _ollama_native(self, handler: BaseHTTPRequestHandler, request: dict) -> None:
        model = request["model"]
        tokens = _openai_tokens(request)
        window = self._context_window(model)
        if len(tokens) > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"the input length ({len(tokens)} tokens) exceeds the context "
                             f"length ({window})")
            return
        reply = _reply_text(model, len(tokens))
        limit = int((request.get("options") or {}).get("num_predict") or 4096)
        words = fake_tokenize(reply)
        if limit < len(words):
            reply = " ".join(words[:limit])
        served = self.aliases.get(model, model)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        final = {"model": served, "created_at": created,
                 "message": {"role": "assistant", "content": reply}, "done": True,
                 "done_reason": "stop", "prompt_eval_count": len(tokens),
                 "eval_count": min(len(words), limit)}
        if request.get("stream", True):  # Ollama streams unless told not to
            lines = [{"model": served, "created_at": created, "done": False,
                      "message": {"role": "assistant", "content": piece}}
                     for piece in _chunks(reply)]
            _send_ndjson(handler, [*lines, dict(final, message={"role": "assistant",
                                                                 "content": ""})])
            return
        _send_json(handler, 200, final)

    def _ollama_embed(self, handler: BaseHTTPRequestHandler, request: dict) -> None:
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self._send_error(handler, ScriptedFailure(400, "bad_request"),
                             "input must be a string or a list of strings")
            return
        _send_json(handler, 200, {"model": request.get("model"),
                                  "embeddings": [fake_embedding(t) for t in texts],
                                  "prompt_eval_count": sum(len(fake_tokenize(t))
                                                           for t in texts)})

    def _openai_embeddings(self, handler: BaseHTTPRequestHandler, request: dict) -> None:
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        tokens = sum(len(fake_tokenize(t)) for t in texts)
        _send_json(handler, 200, {
            "object": "list", "model": request.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": fake_embedding(t)}
                     for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # -- errors ---------------------------------------------------------------------------
    def _send_error(self, handler: BaseHTTPRequestHandler, failure: ScriptedFailure,
                    message: str | None = None) -> None:
        headers = {}
        if failure.retry_after is not None:
            headers["retry-after"] = f"{failure.retry_after:g}"
        message = message or {
            "rate_limit": "rate limit exceeded, slow down",
            "server": "internal server error",
            "overloaded": "Overloaded",
            "auth": "invalid api key",
            "bad_request": "invalid request",
            "context": "prompt is too long: 999999 tokens > 200000 maximum",
            "not_found": "model not found, try pulling it first",
        }[failure.kind]
        if handler.path.startswith("/api/"):  # Ollama's native error shape
            _send_json(handler, failure.status, {"error": message}, headers)
            return
        if self.wire == "anthropic":
            kind = {"rate_limit": "rate_limit_error", "server": "api_error",
                    "overloaded": "overloaded_error", "auth": "authentication_error",
                    "bad_request": "invalid_request_error", "not_found": "not_found_error",
                    "context": "invalid_request_error"}[failure.kind]
            body = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            code = {"rate_limit": "rate_limit_exceeded", "server": "server_error",
                    "overloaded": "server_overloaded", "auth": "invalid_api_key",
                    "bad_request": "invalid_request", "context": "context_length_exceeded",
                    "not_found": "model_not_found"}[failure.kind]
            if failure.kind == "context" and "maximum context length" not in message:
                message = f"This model's maximum context length is exceeded. {message}"
            body = {"error": {"message": message, "type": "invalid_request_error"
                              if failure.status == 400 else code, "param": None, "code": code}}
        _send_json(handler, failure.status, body, headers)


# -- tokenization of each wire format --------------------------------------------------------
def _content_texts(content: Any) -> list[tuple[str, bool]]:
    """(text, has cache_control) for a message/system content: a string or a list of blocks."""
    if isinstance(content, str):
        return [(content, False)]
    out = []
    for block in content or []:
        text = block.get("text") if block.get("type", "text") == "text" else json.dumps(block)
        out.append((text or "", bool(block.get("cache_control"))))
    return out


def _anthropic_blocks(request: dict) -> list[_Block]:
    """The prompt as Anthropic orders it for caching: tools, then system, then messages."""
    blocks = []
    for tool in request.get("tools") or []:
        text = " ".join([tool.get("name", ""), tool.get("description", ""),
                         json.dumps(tool.get("input_schema", {}), sort_keys=True)])
        blocks.append(_Block(text, bool(tool.get("cache_control"))))
    blocks += [_Block(t, c) for t, c in _content_texts(request.get("system") or [])]
    for message in request.get("messages") or []:
        blocks.append(_Block(message.get("role", "")))
        blocks += [_Block(t, c) for t, c in _content_texts(message.get("content"))]
    return blocks


def _openai_tokens(request: dict) -> list[str]:
    """The prompt's tokens as an OpenAI-style server sees them: tools first, then messages."""
    tokens: list[str] = []
    for tool in request.get("tools") or []:
        fn = tool.get("function", {})
        tokens += fake_tokenize(" ".join([fn.get("name", ""), fn.get("description", ""),
                                          json.dumps(fn.get("parameters", {}), sort_keys=True)]))
    for message in request.get("messages") or []:
        tokens.append(message.get("role", ""))
        for text, _ in _content_texts(message.get("content")):
            tokens += fake_tokenize(text)
    return tokens


def _prefix_hashes(texts: list[str], counts: list[int]) -> Iterator[tuple[int, str]]:
    """(end position, hash of everything up to it) for each block boundary."""
    digest = hashlib.sha256()
    position = 0
    for text, count in zip(texts, counts, strict=True):
        digest.update(b"\x00" + text.encode())
        position += count
        yield position, digest.copy().hexdigest()


def _grid_hashes(tokens: list[str], grid: set[int]) -> Iterator[tuple[int, str]]:
    """(position, hash of tokens[:position]) for each position in `grid`."""
    digest = hashlib.sha256()
    for index, token in enumerate(tokens, start=1):
        digest.update(b"\x00" + token.encode())
        if index in grid:
            yield index, digest.copy().hexdigest()


def fake_embedding(text: str) -> list[float]:
    """The fakes' embedding: hashed word counts, L2 normalised (deterministic).

    Example:
        >>> fake_embedding("a b") == fake_embedding("a b") and len(fake_embedding("x"))
        16
    """
    vector = [0.0] * EMBED_DIMENSIONS
    for token in fake_tokenize(text.lower()):
        vector[hashlib.sha256(token.encode()).digest()[0] % EMBED_DIMENSIONS] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


def _reply_text(model: str, prompt_tokens: int) -> str:
    return f"Acknowledged by {model}: read {prompt_tokens} prompt tokens, task handled."


# -- HTTP helpers ---------------------------------------------------------------------------
def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict,
               headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def _send_sse(handler: BaseHTTPRequestHandler, events: Iterator[tuple[str | None, dict]],
              done_marker: bool = False) -> None:
    """Stream server-sent events and close the connection (no chunked encoding needed)."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("cache-control", "no-cache")
    handler.send_header("connection", "close")
    handler.end_headers()
    handler.close_connection = True
    for event, data in events:
        prefix = f"event: {event}\n" if event else ""
        handler.wfile.write(f"{prefix}data: {json.dumps(data)}\n\n".encode())
        handler.wfile.flush()
    if done_marker:
        handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()


def _send_ndjson(handler: BaseHTTPRequestHandler, lines: list[dict]) -> None:
    """Ollama's streaming: one JSON object per line, connection closed at the end."""
    handler.send_response(200)
    handler.send_header("content-type", "application/x-ndjson")
    handler.send_header("connection", "close")
    handler.end_headers()
    handler.close_connection = True
    for line in lines:
        handler.wfile.write(json.dumps(line).encode() + b"\n")
        handler.wfile.flush()


def _chunks(text: str, size: int = 12) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _anthropic_events(model: str, reply: str, usage: dict) -> Iterator[tuple[str, dict]]:
    start_usage = dict(usage, output_tokens=1)
    yield "message_start", {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    for piece in _chunks(reply):
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": piece}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


def _openai_chunks(model: str, reply: str, usage: dict | None
                   ) -> Iterator[tuple[None, dict]]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish, "logprobs": None}]}

    yield None, chunk({"role": "assistant", "content": ""}, None)
    for piece in _chunks(reply):
        yield None, chunk({"content": piece}, None)
    yield None, chunk({}, "stop")
    if usage is not None:
        yield None, {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [], "usage": usage}


def start_fake_fleet(api_key: str = "fake-key", base_port: int = 0,
                     context_windows: dict[str, int] | None = None
                     ) -> dict[str, FakeProviderServer]:
    """Start one fake per provider: anthropic, openai, openrouter (OpenAI wire), ollama.

    `base_port` 0 picks free ports; otherwise ports base_port … base_port+3.

    Example:
        >>> fleet = start_fake_fleet()
        >>> sorted(fleet)
        ['anthropic', 'ollama', 'openai', 'openrouter']
        >>> for server in fleet.values(): server.stop()
    """
    wires = {"anthropic": "anthropic", "openai": "openai", "openrouter": "openai",
             "ollama": "ollama"}
    fleet = {}
    for offset, (name, wire) in enumerate(wires.items()):
        port = base_port + offset if base_port else 0
        fleet[name] = FakeProviderServer(wire, api_key=api_key, port=port, name=name,
                                         context_windows=context_windows).start()
    return fleet
