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

Replies with tool calls, in each wire's own shape (JSON and streaming), are scripted too:
`server.script_replies(FakeReply(tool_calls=(("report", {"result": "ok"}),)), …)` queues
replies consumed one per answered request (a scripted failure does not consume one);
`server.respond_with(fn)` installs `fn(conv: FakeConversation) -> FakeReply | None`, asked
when the queue is empty (None: the default text). `FakeConversation` is the request in one
normalised view whatever its wire (system text, tools offered, task, tool results so far);
`demo_responder` is the deterministic responder `vos dev`'s demo runs on. Tool definitions,
tool calls and tool results count as prompt tokens, and an Anthropic breakpoint on a turn
caches like any other.

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
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True)
class FakeReply:
    """What a fake answers: text and/or tool calls `(name, arguments)`, in the request's wire
    format (ids made up per wire: `toolu_…`, `call_…`; none on Ollama's native wire).

    A reply with neither text nor calls answers the default text. Arguments are a dict; a
    string is sent as the raw arguments string on the OpenAI wire (to test unparseable
    arguments; the other wires always carry an object, so there it is parsed, or sent as
    `{"__invalid_json__": string}`).

    Example:
        >>> FakeReply(tool_calls=[("report", {"result": "ok"})]).tool_calls
        (('report', {'result': 'ok'}),)
    """

    text: str = ""
    tool_calls: tuple[tuple[str, dict], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(
            (str(name), args if isinstance(args, str) else dict(args))
            for name, args in self.tool_calls))


@dataclass
class FakeConversation:
    """A chat request in one view whatever its wire (`anthropic`, `openai` or `ollama`).

    `system`: the system text (prompt and persona); `tools`: the names offered; `task`: the
    first user message's text; `tool_results`: (tool name, content) of every result so far,
    in order; `tool_calls`: (name, arguments) of every call the assistant made so far;
    `last_user`: the text of the last user message that has text.

    Example:
        >>> conv = FakeConversation.from_request("openai", {"model": "m", "messages": [
        ...     {"role": "user", "content": "go"},
        ...     {"role": "assistant", "content": None, "tool_calls": [{"id": "c1",
        ...      "type": "function", "function": {"name": "report", "arguments": "{}"}}]},
        ...     {"role": "tool", "tool_call_id": "c1", "content": "saved"}]})
        >>> conv.task, conv.tool_results
        ('go', [('report', 'saved')])
    """

    wire: str
    model: str
    system: str = ""
    tools: tuple[str, ...] = ()
    task: str = ""
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)
    last_user: str = ""

    @classmethod
    def from_request(cls, wire: str, request: dict) -> "FakeConversation":
        """Parse a request body: `anthropic` (Messages), `openai` (Chat Completions, also
        Ollama's /v1) or `ollama` (native /api/chat)."""
        if wire == "anthropic":
            return _anthropic_conversation(request)
        return _chat_conversation(wire, request)


Responder = Callable[[FakeConversation], "FakeReply | None"]


class _ResponderError(Exception):
    """A responder raised: the fake answers 500 with this message."""


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
        self.conversations: list[FakeConversation] = []  # every chat request, parsed
        self._script: list[ScriptedFailure] = []
        self._replies: list[FakeReply] = []
        self._responder: Responder | None = None
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

    def script_replies(self, *replies: FakeReply) -> None:
        """Queue replies; each answered chat request consumes one, first in first out."""
        with self._lock:
            self._replies.extend(replies)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer with `responder(conversation)` when no scripted reply is queued (None from
        it, or `respond_with(None)`, means the default text)."""
        with self._lock:
            self._responder = responder

    def reset(self) -> None:
        """Forget received requests, queued failures and replies, the responder and the
        prompt cache."""
        with self._lock:
            self.received.clear()
            self.conversations.clear()
            self._script.clear()
            self._replies.clear()
            self._responder = None
        with self._cache.lock:
            self._cache.prefixes.clear()

    def _next_failure(self) -> ScriptedFailure | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def _conversation(self, wire: str, request: dict) -> FakeConversation:
        conv = FakeConversation.from_request(wire, request)
        with self._lock:
            self.conversations.append(conv)
            del self.conversations[:-MAX_RECEIVED]
        return conv

    def _next_reply(self, conv: FakeConversation, default_text: str) -> FakeReply:
        """The scripted reply, else the responder's, else the default text. A responder
        that raises makes the request fail with a 500 naming the error."""
        with self._lock:
            scripted = self._replies.pop(0) if self._replies else None
            responder = self._responder
        reply = scripted
        if reply is None and responder is not None:
            try:
                reply = responder(conv)
            except Exception as exc:  # a test's responder bug: say so on the wire
                raise _ResponderError(f"fake responder raised {type(exc).__name__}: "
                                      f"{exc}") from exc
        if reply is None or not (reply.text or reply.tool_calls):
            return FakeReply(text=default_text)
        return reply

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
        try:
            route(handler, request)
        except _ResponderError as exc:
            self._send_error(handler, ScriptedFailure(500, "server"), str(exc))

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
        conv = self._conversation("anthropic", request)
        blocks = _anthropic_blocks(request)
        token_counts = [len(fake_tokenize(b.text)) for b in blocks]
        total = sum(token_counts)
        window = self._context_window(model)
        if total > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"prompt is too long: {total} tokens > {window} maximum")
            return
        reply = self._next_reply(conv, _reply_text(model, total))
        read, write = self._anthropic_cache(model, blocks, token_counts)
        output = min(_output_tokens(reply), int(request.get("max_tokens", 1024)))
        usage = {"input_tokens": total - read - write, "output_tokens": output,
                 "cache_creation_input_tokens": write, "cache_read_input_tokens": read}
        served = self.aliases.get(model, model)
        calls = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name,
                  "input": _as_object(args)} for name, args in reply.tool_calls]
        stop = "tool_use" if calls else "end_turn"
        if request.get("stream"):
            _send_sse(handler, _anthropic_events(served, reply.text, calls, usage, stop))
            return
        text = [{"type": "text", "text": reply.text}] if reply.text else []
        _send_json(handler, 200, {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": served, "content": text + calls,
            "stop_reason": stop, "stop_sequence": None, "usage": usage,
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
        conv = self._conversation("openai", request)
        tokens = _openai_tokens(request)
        window = self._context_window(model)
        if len(tokens) > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"This model's maximum context length is {window} tokens. However, "
                             f"your messages resulted in {len(tokens)} tokens.")
            return
        reply = self._next_reply(conv, _reply_text(model, len(tokens)))
        cached = self._openai_cache(model, tokens) if self.wire == "openai" else 0
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or 4096
        output = min(_output_tokens(reply), int(limit))
        usage: dict[str, Any] = {"prompt_tokens": len(tokens), "completion_tokens": output,
                                 "total_tokens": len(tokens) + output}
        if self.wire == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        served = self.aliases.get(model, model)
        calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                  "function": {"name": name, "arguments": args if isinstance(args, str)
                               else json.dumps(args)}}
                 for name, args in reply.tool_calls]
        finish = "tool_calls" if calls else "stop"
        if request.get("stream"):
            include_usage = (request.get("stream_options") or {}).get("include_usage", False)
            _send_sse(handler, _openai_chunks(served, reply.text, calls, finish,
                                              usage if include_usage else None),
                      done_marker=True)
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = calls
        _send_json(handler, 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": served,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": message}],
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
        conv = self._conversation("ollama", request)
        tokens = _openai_tokens(request)
        window = self._context_window(model)
        if len(tokens) > window:
            self._send_error(handler, ScriptedFailure(400, "context"),
                             f"the input length ({len(tokens)} tokens) exceeds the context "
                             f"length ({window})")
            return
        reply = self._next_reply(conv, _reply_text(model, len(tokens)))
        text = reply.text
        limit = int((request.get("options") or {}).get("num_predict") or 4096)
        words = fake_tokenize(text)
        if limit < len(words):
            text = " ".join(words[:limit])
        served = self.aliases.get(model, model)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # Ollama's native tool calls: arguments as an object, no call id (older versions),
        # and done_reason "stop" even when the model called tools.
        calls = [{"function": {"name": name, "arguments": _as_object(args)}}
                 for name, args in reply.tool_calls]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        final = {"model": served, "created_at": created, "message": message, "done": True,
                 "done_reason": "stop", "prompt_eval_count": len(tokens),
                 "eval_count": min(_output_tokens(FakeReply(text, reply.tool_calls)), limit)}
        if request.get("stream", True):  # Ollama streams unless told not to
            lines = [{"model": served, "created_at": created, "done": False,
                      "message": {"role": "assistant", "content": piece}}
                     for piece in (_chunks(text) if text or not calls else [])]
            if calls:  # Ollama sends the calls in a line of their own, before the last
                lines.append({"model": served, "created_at": created, "done": False,
                              "message": {"role": "assistant", "content": "",
                                          "tool_calls": calls}})
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
    return [(_block_text(block), bool(block.get("cache_control"))) for block in content or []]


def _block_text(block: dict) -> str:
    """What a content block puts in the prompt: a text's text, a tool call's id, name and
    arguments, a tool result's call id and content. Never its `cache_control`, so a block
    hashes the same whether or not it carries the breakpoint this time."""
    kind = block.get("type", "text")
    if kind == "text":
        return block.get("text") or ""
    if kind == "tool_use":
        return " ".join([str(block.get("id") or ""), str(block.get("name") or ""),
                         _arguments_text(block.get("input"))])
    if kind == "tool_result":
        return " ".join([str(block.get("tool_use_id") or ""),
                         _result_text(block.get("content"))])
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"},
                      sort_keys=True)


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as text: OpenAI's JSON string as sent, an object serialised."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, sort_keys=True,
                      ensure_ascii=False)


def _result_text(content: Any) -> str:
    """A tool result's content: a string, or (Anthropic) a list of text blocks."""
    if isinstance(content, str):
        return content
    return "\n".join(_block_text(b) for b in content or [] if isinstance(b, dict))


def _chat_message_texts(message: dict) -> list[str]:
    """The texts of one Chat Completions / Ollama message: its content, each tool call's
    id, name and arguments, and a tool message's call id or tool name."""
    texts = [text for text, _ in _content_texts(message.get("content"))]
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        texts.append(" ".join([str(call.get("id") or ""), str(function.get("name") or ""),
                               _arguments_text(function.get("arguments"))]))
    texts += [str(message[key]) for key in ("tool_call_id", "tool_name") if message.get(key)]
    return texts


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
        for text in _chat_message_texts(message):
            tokens += fake_tokenize(text)
    return tokens


# -- one view of a conversation, whatever its wire --------------------------------------------
def _system_text(system: Any) -> str:
    return "\n\n".join(text for text, _ in _content_texts(system or []))


def _anthropic_conversation(request: dict) -> FakeConversation:
    conv = FakeConversation("anthropic", str(request.get("model", "")),
                            system=_system_text(request.get("system")),
                            tools=tuple(t.get("name", "") for t in request.get("tools") or []))
    names: dict[str, str] = {}  # call id -> tool name (a tool_result names only the id)
    first = True
    for message in request.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) \
            else content or []
        if message.get("role") == "assistant":
            for block in blocks:
                if block.get("type") == "tool_use":
                    names[str(block.get("id"))] = block.get("name", "")
                    conv.tool_calls.append((block.get("name", ""), block.get("input") or {}))
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                conv.tool_results.append((names.get(str(block.get("tool_use_id")), ""),
                                          _result_text(block.get("content"))))
        texts = [b.get("text") or "" for b in blocks if b.get("type", "text") == "text"]
        _note_user_text(conv, "\n\n".join(texts), first)
        first = first and not texts
    return conv


def _chat_conversation(wire: str, request: dict) -> FakeConversation:
    conv = FakeConversation(
        wire, str(request.get("model", "")),
        tools=tuple((t.get("function") or {}).get("name", "") for t in request.get("tools")
                    or []))
    names: dict[str, str] = {}
    systems, first = [], True
    for message in request.get("messages") or []:
        role = message.get("role")
        text = "\n\n".join(t for t, _ in _content_texts(message.get("content")))
        if role in ("system", "developer"):
            systems.append(text)
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names[str(call.get("id"))] = function.get("name", "")
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments or "{}")
                    except ValueError:
                        arguments = {"__invalid_json__": arguments}
                conv.tool_calls.append((function.get("name", ""), arguments or {}))
        elif role == "tool":  # Ollama names the tool; OpenAI names the call it answers
            name = message.get("tool_name") or names.get(str(message.get("tool_call_id")), "")
            conv.tool_results.append((name, text))
        elif role == "user":
            _note_user_text(conv, text, first)
            first = first and not text
    conv.system = "\n\n".join(systems)
    return conv


def _note_user_text(conv: FakeConversation, text: str, first: bool) -> None:
    if not text:
        return
    if first:
        conv.task = text
    conv.last_user = text


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


def _output_tokens(reply: FakeReply) -> int:
    """Output tokens of a reply: its text and each call's name and JSON arguments."""
    return len(fake_tokenize(reply.text)) + sum(
        len(fake_tokenize(f"{name} {_arguments_text(args)}")) for name, args in reply.tool_calls)


def _as_object(arguments: dict | str) -> dict:
    """Scripted arguments as the object Anthropic's and Ollama's wires always carry."""
    if not isinstance(arguments, str):
        return arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"__invalid_json__": arguments}


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


def _anthropic_events(model: str, reply: str, calls: list[dict], usage: dict, stop: str
                      ) -> Iterator[tuple[str, dict]]:
    """A Messages stream: a text block (if any text), then one tool_use block per call whose
    input arrives as `input_json_delta` pieces, as the API streams them."""
    start_usage = dict(usage, output_tokens=1)
    yield "message_start", {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}
    index = 0
    if reply or not calls:
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "text", "text": ""}}
        for piece in _chunks(reply):
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    for call in calls:
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": dict(call, input={})}
        for piece in ["", *_chunks(json.dumps(call["input"]))]:  # the API starts with ""
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


def _openai_chunks(model: str, reply: str, calls: list[dict], finish: str,
                   usage: dict | None) -> Iterator[tuple[None, dict]]:
    """Chat Completions chunks: text deltas, then per call a delta with its index, id and
    name, then deltas with pieces of its arguments string (same index)."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish, "logprobs": None}]}

    yield None, chunk({"role": "assistant", "content": "" if reply or not calls else None},
                      None)
    for piece in _chunks(reply) if reply else []:
        yield None, chunk({"content": piece}, None)
    for index, call in enumerate(calls):
        function = call["function"]
        yield None, chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                           "function": {"name": function["name"],
                                                        "arguments": ""}}]}, None)
        for piece in _chunks(function["arguments"]):
            yield None, chunk({"tool_calls": [{"index": index,
                                               "function": {"arguments": piece}}]}, None)
    yield None, chunk({}, finish)
    if usage is not None:
        yield None, {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [], "usage": usage}


def start_fake_fleet(api_key: str = "fake-key", base_port: int = 0,
                     context_windows: dict[str, int] | None = None,
                     responder: Responder | None = None
                     ) -> dict[str, FakeProviderServer]:
    """Start one fake per provider: anthropic, openai, openrouter (OpenAI wire), ollama.

    `base_port` 0 picks free ports; otherwise ports base_port … base_port+3. `responder`
    (e.g. `demo_responder`) answers every fake's chat requests (see `respond_with`).

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
                                         context_windows=context_windows)
        fleet[name].respond_with(responder)
        fleet[name].start()
    return fleet


# -- the demo's responder -------------------------------------------------------------------
_REPORTS = re.compile(r"Your reports:[ \t]*(?P<list>[^\n]*)")
_REPORT_ITEM = re.compile(r"\s*(?P<name>[^,()]+?)\s*(?:\((?P<role>[^()]*)\))?\s*(?:,|$)")
_TASK = re.compile(r"<task>\n?(?P<task>.*?)\n?</task>", re.S)
SYNTHESIS_MARKER = "Results of your reports"


def demo_reports(system: str) -> list[tuple[str, str]]:
    """(name, role) of each report the run loop lists in the persona ("Your reports: A
    (role), B (role). Delegate to them by name or role.").

    Example:
        >>> demo_reports("You lead.\\n\\nYour reports: Mara (marketing lead), Theo (CTO). "
        ...              "Delegate to them by name or role.")
        [('Mara', 'marketing lead'), ('Theo', 'CTO')]
    """
    found = _REPORTS.search(system)
    if not found:
        return []
    listed = re.sub(r"\.\s+Delegate\b.*$", "", found["list"]).strip().rstrip(".")
    return [(m["name"], m["role"] or "") for m in _REPORT_ITEM.finditer(listed) if m["name"]]


def demo_responder(conv: FakeConversation) -> FakeReply | None:
    """The demo's deterministic model, the same on every wire:

    - `delegate` offered, no tool result yet and reports listed in the persona: delegate to
      each report once, with a title and a short brief from the task;
    - delegate results back and the task says "Results of your reports" (or the results are
      the children's results, "Result of …", as the run loop merges them): a text synthesis;
    - `report` offered and not reported yet: report a short summary of the task;
    - otherwise None (the fake's default text).

    Example:
        >>> conv = FakeConversation("openai", "m", system="Your reports: Theo (CTO)",
        ...                         tools=("delegate", "report"),
        ...                         task="<task>\\nCheck TLS\\n</task>")
        >>> name, arguments = demo_responder(conv).tool_calls[0]
        >>> name, arguments["to"], arguments["title"]
        ('delegate', 'Theo', 'CTO: Check TLS')
    """
    task = _task_body(conv.task)
    title = (task.splitlines() or [""])[0].strip()[:150] or "the task"
    reports = demo_reports(conv.system)
    delegated = [content for name, content in conv.tool_results if name == "delegate"]
    if "delegate" in conv.tools and not conv.tool_results and reports:
        return FakeReply(tool_calls=tuple(
            ("delegate", {"to": name, "title": f"{role or name}: {title}"[:200],
                          "brief": (f"{_squash(task)[:300]}. Your part as {role or name}: "
                                    "what your role owns, in a short report.")[:4000],
                          "priority": "P1"})
            for name, role in reports))
    if delegated and (SYNTHESIS_MARKER in conv.task
                      or any(c.startswith("Result of ") for c in delegated)):
        parts = "; ".join(_squash(c)[:160] for c in delegated)
        return FakeReply(text=f"Synthesis for {title}: {len(delegated)} reports combined. "
                              f"{parts}")
    reported = any(name == "report" for name, _ in conv.tool_results)
    if "report" in conv.tools and not reported:
        return FakeReply(tool_calls=(("report", {
            "result": f"{title}: done. {_squash(task)[:200]}"}),))
    return None


def _task_body(text: str) -> str:
    found = _TASK.search(text)
    return (found["task"] if found else text).strip()


def _squash(text: str) -> str:
    return " ".join(text.split()).rstrip(".")
