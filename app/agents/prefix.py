"""Prompt assembly: the stable prefix first and byte-identical call after call.

A prompt has a stable part (system prompt, agent persona, tool definitions) and a volatile
part (retrieved passages, the task). The stable part is serialised deterministically (tools
sorted by name, schemas with sorted keys) and always placed first, so providers' prompt caches
hit: Anthropic through explicit `cache_control` breakpoints (only where the prefix reaches the
model's minimum cacheable length, since shorter breakpoints are ignored by the API), OpenAI and
OpenRouter through automatic prefix caching.

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


@dataclass(frozen=True)
class ToolSpec:
    """A tool the agent may call; `parameters` is a JSON schema."""

    name: str
    description: str
    parameters: dict = field(default_factory=dict)

    def schema_json(self) -> str:
        return json.dumps(self.parameters, sort_keys=True)


@dataclass(frozen=True)
class PromptParts:
    """Everything a call sends, split into the stable prefix and the volatile tail."""

    system: str
    persona: str
    tools: tuple[ToolSpec, ...] = ()
    context: str = ""
    task: str = ""

    def sanitized(self, sanitizer: Sanitizer) -> "PromptParts":
        """A copy with every string that leaves for a provider redacted: the texts and each
        tool's name, description and JSON schema (keys and values, at any depth).

        Raises `SanitizerError` when detection fails, so nothing is sent.

        Example:
            >>> t = ToolSpec("deploy", "d", {"default": "password=hunter2-x"})
            >>> PromptParts("s", "p", tools=(t,)).sanitized(Sanitizer()).tools[0].parameters
            {'default': 'password=[REDACTED:password_assignment]'}
        """
        tools = tuple(
            replace(t, name=_tool_name(sanitizer, t.name),
                    description=sanitizer.clean(t.description),
                    parameters=_clean_json(sanitizer, t.parameters))
            for t in self.tools
        )
        return PromptParts(
            system=sanitizer.clean(self.system),
            persona=sanitizer.clean(self.persona),
            tools=tools,
            context=sanitizer.clean(self.context),
            task=sanitizer.clean(self.task),
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

    def estimate_tokens(self) -> int:
        """Estimated prompt tokens of the whole call, plus a little framing overhead."""
        framing = 8
        return (self.stable_tokens() + estimate_tokens(self.context)
                + estimate_tokens(self.task) + framing)

    def max_input_tokens(self) -> int:
        """An upper bound of the prompt tokens this call can be billed for, for ANY input.

        The UTF-8 bytes of everything sent (system prompt, persona, context, task, each
        tool's name, description and JSON schema) plus a fixed allowance for what providers
        wrap around it: the `<context>`/`<task>` tags and chat-template role tokens
        (`FRAMING_TOKENS`), each tool's wrapper (`TOOL_FRAMING_TOKENS`) and, when tools are
        present, the provider's own tool-use preamble (`TOOLS_PREAMBLE_TOKENS`; Anthropic
        documents 313-346 tokens). It rests on one assumption, stated in app/agents/tokens.py:
        a tokenizer emits at most one token per byte (byte-level BPE). Budgets reserve
        against this; `estimate_tokens` stays the cheap figure for display.

        Example:
            >>> PromptParts("sys", "p", task="ab" * 45_000).max_input_tokens()
            90068
        """
        total = (max_tokens(self.system) + max_tokens(self.persona)
                 + max_tokens(self.context) + max_tokens(self.task) + FRAMING_TOKENS)
        if self.tools:
            total += TOOLS_PREAMBLE_TOKENS + sum(
                max_tokens(t.name) + max_tokens(t.description) + max_tokens(t.schema_json())
                + TOOL_FRAMING_TOKENS for t in self.tools)
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
    reaches the model's minimum cacheable length.
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
    request = {"system": system, "messages": [{"role": "user", "content": content}]}
    if tools:
        request["tools"] = tools
    return request


def openai_request(parts: PromptParts) -> dict:
    """Chat Completions kwargs: tools and the system message (prompt + persona) first."""
    request: dict = {"messages": openai_messages(parts)}
    if parts.tools:
        request["tools"] = [
            {"type": "function",
             "function": {"name": t.name, "description": t.description,
                          "parameters": json.loads(t.schema_json())}}
            for t in parts.sorted_tools()
        ]
    return request


def openai_messages(parts: PromptParts) -> list[dict]:
    """System prompt then persona in one system message; passages and task after."""
    return [
        {"role": "system", "content": f"{parts.system}\n\n{parts.persona}"},
        {"role": "user", "content": "\n\n".join(_user_text(parts))},
    ]
