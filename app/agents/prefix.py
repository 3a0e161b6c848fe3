"""Prompt assembly: the stable prefix first and byte-identical call after call.

A prompt has a stable part (system prompt, agent persona, tool definitions) and a volatile
part (retrieved passages, the task, then the turns of a tool-use conversation). The stable
part is serialised deterministically (tools sorted by name, schemas with sorted keys) and
always placed first, so providers' prompt caches hit: Anthropic through explicit
`cache_control` breakpoints (only where the prefix reaches the model's minimum cacheable
length, since shorter breakpoints are ignored by the API), OpenAI and OpenRouter through
automatic prefix caching.

A tool-use conversation is the first user message (passages and task) followed by `Turn`s:
each turn is one assistant message (its text and `ToolCall`s) and the `ToolResult`s of those
calls. Every wire format gets its own shape of them (see `anthropic_request`,
`openai_request`, `ollama_request`); a call's id travels unchanged from the reply that made
it to the result that answers it.

Example:
    >>> parts = PromptParts(system="You are VOS.", persona="You fix ports.", task="Open 443")
    >>> openai_messages(parts)[0]["role"]
    'system'
"""

import json
import re
from dataclasses import dataclass, field, replace

from app.agents.sanitize import Sanitizer
from app.agents.tokens import estimate_tokens, max_tokens

CACHE_CONTROL = {"type": "ephemeral"}

# Allowances (tokens) for what providers add around our text; see max_input_tokens.
FRAMING_TOKENS = 64
TOOL_FRAMING_TOKENS = 32
TOOLS_PREAMBLE_TOKENS = 1024
TURN_FRAMING_TOKENS = 16       # the assistant message's role tokens (and the results' message)
CALL_FRAMING_TOKENS = 64       # one tool call's wrapper (tool_use block / function call tags)
ARGUMENT_ENTRY_TOKENS = 8      # per key/value pair or list item of a call's arguments
RESULT_FRAMING_TOKENS = 32     # one tool result's wrapper (tool_result block / tool message)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the agent may call; `parameters` is a JSON schema."""

    name: str
    description: str
    parameters: dict = field(default_factory=dict)

    def schema_json(self) -> str:
        return json.dumps(self.parameters, sort_keys=True)


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made: the provider's call id, the tool's name, its arguments.

    Example:
        >>> ToolCall("toolu_01", "report", {"result": "done"}).arguments_json()
        '{"result": "done"}'
    """

    id: str
    name: str
    arguments: dict = field(default_factory=dict)

    def arguments_json(self) -> str:
        """The arguments as the OpenAI wire carries them (and as the token bound counts
        them): sorted keys, so the same call serialises to the same bytes every turn."""
        return json.dumps(self.arguments, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class ToolResult:
    """The answer to one tool call; `call_id` is the `ToolCall.id` it answers."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Turn:
    """One assistant message (its text and tool calls) followed by the results of those calls.

    Example:
        >>> call = ToolCall("call_1", "search_knowledge", {"query": "door ports"})
        >>> turn = Turn((call,), results=(ToolResult("call_1", "search_knowledge", "443"),))
        >>> turn.results[0].call_id == turn.tool_calls[0].id
        True
    """

    tool_calls: tuple[ToolCall, ...] = ()
    text: str = ""
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class PromptParts:
    """Everything a call sends, split into the stable prefix and the volatile tail."""

    system: str
    persona: str
    tools: tuple[ToolSpec, ...] = ()
    context: str = ""
    task: str = ""
    turns: tuple[Turn, ...] = ()

    def sanitized(self, sanitizer: Sanitizer) -> "PromptParts":
        """A copy with every string that leaves for a provider redacted: the texts, each
        tool's name, description and JSON schema (keys and values, at any depth), and the
        turns: the assistant's texts, each call's name and arguments (every string at any
        depth, keys too) and each result's name and content.

        Call ids are kept as they are: the provider made them, and the result must name the
        very id its call carried (a redacted id would orphan the result).
        Raises `SanitizerError` when detection fails, so nothing is sent.

        Example:
            >>> t = ToolSpec("deploy", "d", {"default": "password=hunter2-x"})
            >>> PromptParts("s", "p", tools=(t,)).sanitized(Sanitizer()).tools[0].parameters
            {'default': 'password=[REDACTED:password_assignment]'}
            >>> r = ToolResult("call_1", "lookup", "password=hunter2-x")
            >>> clean = PromptParts("s", "p", turns=(Turn(results=(r,)),)).sanitized(Sanitizer())
            >>> clean.turns[0].results[0].content
            'password=[REDACTED:password_assignment]'
        """
        tools = tuple(
            replace(t, name=_tool_name(sanitizer, t.name),
                    description=sanitizer.clean(t.description),
                    parameters=_clean_json(sanitizer, t.parameters))
            for t in self.tools
        )
        turns = tuple(
            Turn(
                tool_calls=tuple(
                    ToolCall(c.id, _tool_name(sanitizer, c.name),
                             _clean_json(sanitizer, c.arguments))
                    for c in turn.tool_calls),
                text=sanitizer.clean(turn.text),
                results=tuple(
                    ToolResult(r.call_id, _tool_name(sanitizer, r.name),
                               sanitizer.clean(r.content), r.is_error)
                    for r in turn.results),
            )
            for turn in self.turns
        )
        return PromptParts(
            system=sanitizer.clean(self.system),
            persona=sanitizer.clean(self.persona),
            tools=tools,
            context=sanitizer.clean(self.context),
            task=sanitizer.clean(self.task),
            turns=turns,
        )

    def sorted_tools(self) -> list[ToolSpec]:
        return sorted(self.tools, key=lambda t: t.name)

    def tools_tokens(self) -> int:
        return sum(
            estimate_tokens(f"{t.name} {t.description} {t.schema_json()}") for t in self.tools
        )

    def stable_tokens(self) -> int:
        """Estimated tokens of tools + system prompt + persona."""
        return self.tools_tokens() + estimate_tokens(self.system) + estimate_tokens(self.persona)

    def turns_tokens(self) -> int:
        """Estimated tokens of the turns: texts, calls (name, arguments) and results."""
        return sum(
            estimate_tokens(turn.text)
            + sum(estimate_tokens(f"{c.name} {c.arguments_json()}") for c in turn.tool_calls)
            + sum(estimate_tokens(r.content) for r in turn.results)
            for turn in self.turns)

    def estimate_tokens(self) -> int:
        """Estimated prompt tokens of the whole call, plus a little framing overhead."""
        framing = 8 + 8 * len(self.turns)
        return (self.stable_tokens() + estimate_tokens(self.context)
                + estimate_tokens(self.task) + self.turns_tokens() + framing)

    def max_input_tokens(self) -> int:
        """An upper bound of the prompt tokens this call can be billed for, for ANY input.

        The UTF-8 bytes of everything sent (system prompt, persona, context, task, each
        tool's name, description and JSON schema, and of each turn: the assistant's text,
        each call's id, name and JSON-serialised arguments, each result's call id, name and
        content) plus a fixed allowance for what providers wrap around it: the
        `<context>`/`<task>` tags and chat-template role tokens (`FRAMING_TOKENS`), each
        tool's wrapper (`TOOL_FRAMING_TOKENS`), when tools are present the provider's own
        tool-use preamble (`TOOLS_PREAMBLE_TOKENS`; Anthropic documents 313-346 tokens), and
        per turn its messages' role tokens (`TURN_FRAMING_TOKENS`), each call's wrapper
        (`CALL_FRAMING_TOKENS`, plus `ARGUMENT_ENTRY_TOKENS` per key/value pair or list item
        of its arguments, since a provider may render each parameter in its own tags rather
        than as JSON) and each result's wrapper (`RESULT_FRAMING_TOKENS`). It rests on one
        assumption, stated in app/agents/tokens.py: a tokenizer emits at most one token per
        byte (byte-level BPE). Budgets reserve against this; `estimate_tokens` stays the
        cheap figure for display.

        Example:
            >>> PromptParts("sys", "p", task="ab" * 45_000).max_input_tokens()
            90068
            >>> call = ToolCall("c1", "report", {"result": "ok"})
            >>> turn = Turn((call,), results=(ToolResult("c1", "report", "saved"),))
            >>> bare = PromptParts("sys", "p").max_input_tokens()
            >>> PromptParts("sys", "p", turns=(turn,)).max_input_tokens() - bare  # 16+96+45
            157
        """
        total = (max_tokens(self.system) + max_tokens(self.persona)
                 + max_tokens(self.context) + max_tokens(self.task) + FRAMING_TOKENS)
        if self.tools:
            total += TOOLS_PREAMBLE_TOKENS + sum(
                max_tokens(t.name) + max_tokens(t.description) + max_tokens(t.schema_json())
                + TOOL_FRAMING_TOKENS for t in self.tools)
        for turn in self.turns:
            total += TURN_FRAMING_TOKENS + max_tokens(turn.text)
            total += sum(
                max_tokens(c.id) + max_tokens(c.name) + max_tokens(c.arguments_json())
                + CALL_FRAMING_TOKENS + ARGUMENT_ENTRY_TOKENS * _json_entries(c.arguments)
                for c in turn.tool_calls)
            total += sum(
                max_tokens(r.call_id) + max_tokens(r.name) + max_tokens(r.content)
                + RESULT_FRAMING_TOKENS for r in turn.results)
        return total


def _tool_name(sanitizer: Sanitizer, name: str) -> str:
    """A tool name with a secret in it becomes a neutral one: providers accept only
    `[A-Za-z0-9_-]` in tool names, so a `[REDACTED:…]` marker would be refused."""
    cleaned = sanitizer.clean(name)
    if cleaned == name:
        return name
    return "redacted_" + "_".join(re.findall(r"REDACTED:(\w+)", cleaned))[:50]


def _clean_json(sanitizer: Sanitizer, value):
    """Redact every string in a JSON value (dict keys too), keeping its structure."""
    if isinstance(value, str):
        return sanitizer.clean(value)
    if isinstance(value, dict):
        return {sanitizer.clean(k) if isinstance(k, str) else k: _clean_json(sanitizer, v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(sanitizer, v) for v in value]
    return value


def _json_entries(value) -> int:
    """How many key/value pairs and list items a JSON value holds, at any depth.

    Example:
        >>> _json_entries({"a": 1, "b": [1, {"c": 2}]})
        5
    """
    if isinstance(value, dict):
        return sum(1 + _json_entries(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(1 + _json_entries(v) for v in value)
    return 0


def anthropic_min_cacheable_tokens(model: str) -> int:
    """Anthropic's per-model minimum cacheable prefix (Haiku models need more).

    Example:
        >>> anthropic_min_cacheable_tokens("claude-haiku-4-5")
        2048
    """
    return 2048 if "haiku" in model else 1024


def _user_text(parts: PromptParts) -> list[str]:
    texts = []
    if parts.context:
        texts.append(f"<context>\n{parts.context}\n</context>")
    texts.append(f"<task>\n{parts.task}\n</task>")
    return texts


def anthropic_request(parts: PromptParts, model: str) -> dict:
    """Messages API kwargs: tools, system and persona first, with cache breakpoints.

    Breakpoint 1 ends the tool list (shared by every agent); breakpoint 2 ends the persona
    (shared by every call of one agent). A breakpoint is set only when the prefix up to it
    reaches the model's minimum cacheable length. The turns follow the first user message:
    an assistant message [text?, tool_use{id, name, input}…], then a user message
    [tool_result{tool_use_id, content, is_error}…]. With turns, breakpoint 3 ends the
    conversation (its last block), so the next turn of the same run reads everything up to
    here from the cache, not only the stable prefix (Anthropic's incremental caching of a
    multi-turn conversation; the earlier turn's entry is found by the API's look-back).

    Example:
        >>> call = ToolCall("toolu_1", "report", {"result": "ok"})
        >>> turn = Turn((call,), results=(ToolResult("toolu_1", "report", "saved"),))
        >>> messages = anthropic_request(PromptParts("s", "p", turns=(turn,)), "m")["messages"]
        >>> [m["role"] for m in messages], messages[2]["content"][0]["tool_use_id"]
        (['user', 'assistant', 'user'], 'toolu_1')
    """
    minimum = anthropic_min_cacheable_tokens(model)
    tools = [
        {"name": t.name, "description": t.description,
         "input_schema": json.loads(t.schema_json())}
        for t in parts.sorted_tools()
    ]
    tools_tokens = parts.tools_tokens()
    if tools and tools_tokens >= minimum:
        tools[-1]["cache_control"] = CACHE_CONTROL
    persona_block: dict = {"type": "text", "text": parts.persona}
    if parts.stable_tokens() >= minimum:
        persona_block["cache_control"] = CACHE_CONTROL
    system = [{"type": "text", "text": parts.system}, persona_block]
    content = [{"type": "text", "text": text} for text in _user_text(parts)]
    messages = [{"role": "user", "content": content}, *_anthropic_turns(parts.turns)]
    if parts.turns and parts.estimate_tokens() >= minimum:
        messages[-1]["content"][-1]["cache_control"] = CACHE_CONTROL
    request = {"system": system, "messages": messages}
    if tools:
        request["tools"] = tools
    return request


def _anthropic_turns(turns: tuple[Turn, ...]) -> list[dict]:
    messages: list[dict] = []
    for turn in turns:
        content: list[dict] = [{"type": "text", "text": turn.text}] if turn.text else []
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                    for c in turn.tool_calls]
        if content:  # the API refuses an assistant message without content
            messages.append({"role": "assistant", "content": content})
        if turn.results:
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content,
                 "is_error": r.is_error} for r in turn.results]})
    return messages


def _function_tools(parts: PromptParts) -> list[dict]:
    """Tools in the function format OpenAI and Ollama share."""
    return [
        {"type": "function",
         "function": {"name": t.name, "description": t.description,
                      "parameters": json.loads(t.schema_json())}}
        for t in parts.sorted_tools()
    ]


def openai_request(parts: PromptParts) -> dict:
    """Chat Completions kwargs: tools and the system message (prompt + persona) first."""
    request: dict = {"messages": openai_messages(parts)}
    if parts.tools:
        request["tools"] = _function_tools(parts)
    return request


def openai_messages(parts: PromptParts) -> list[dict]:
    """System prompt then persona in one system message; passages and task after; then the
    turns: an assistant message {content, tool_calls: [{id, type: function, function: {name,
    arguments: JSON string}}]} and one {role: tool, tool_call_id, content} per result.

    The tool message has no error flag on this wire; a failed call's content says what went
    wrong (the tools write it so).

    Example:
        >>> call = ToolCall("call_1", "report", {"result": "ok"})
        >>> turn = Turn((call,), results=(ToolResult("call_1", "report", "saved"),))
        >>> messages = openai_messages(PromptParts("s", "p", turns=(turn,)))
        >>> messages[2]["tool_calls"][0]["function"]["arguments"], messages[3]["tool_call_id"]
        ('{"result": "ok"}', 'call_1')
    """
    messages: list[dict] = [
        {"role": "system", "content": f"{parts.system}\n\n{parts.persona}"},
        {"role": "user", "content": "\n\n".join(_user_text(parts))},
    ]
    for turn in parts.turns:
        if turn.text or turn.tool_calls:
            assistant: dict = {"role": "assistant", "content": turn.text or None}
            if turn.tool_calls:  # OpenAI refuses an empty tool_calls list
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments_json()}}
                    for c in turn.tool_calls]
            messages.append(assistant)
        messages += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content}
                     for r in turn.results]
    return messages


def ollama_request(parts: PromptParts) -> dict:
    """Ollama's native `/api/chat` fields: the same system and user messages and function
    tools as the OpenAI wire, but turns in Ollama's own shape: an assistant message
    {content, tool_calls: [{function: {name, arguments: object}}]} and {role: tool,
    content, tool_name} per result (Ollama pairs a result with its call by tool name and
    order; it has no call ids on this wire).

    Example:
        >>> call = ToolCall("call_0", "report", {"result": "ok"})
        >>> turn = Turn((call,), results=(ToolResult("call_0", "report", "saved"),))
        >>> messages = ollama_request(PromptParts("s", "p", turns=(turn,)))["messages"]
        >>> messages[2]["tool_calls"][0]["function"]["arguments"], messages[3]["tool_name"]
        ({'result': 'ok'}, 'report')
    """
    messages: list[dict] = openai_messages(replace(parts, turns=()))
    for turn in parts.turns:
        if turn.text or turn.tool_calls:
            assistant: dict = {"role": "assistant", "content": turn.text}
            if turn.tool_calls:
                assistant["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": c.arguments}}
                    for c in turn.tool_calls]
            messages.append(assistant)
        messages += [{"role": "tool", "content": r.content, "tool_name": r.name}
                     for r in turn.results]
    request: dict = {"messages": messages}
    if parts.tools:
        request["tools"] = _function_tools(parts)
    return request
