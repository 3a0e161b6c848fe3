"""Tool use in every wire format, through the real SDKs against the fakes.

For each provider kind (anthropic, openai, openrouter, ollama native, ollama's OpenAI-compatible
/v1), streaming and not: a scripted tool call comes back as `Completion.tool_calls` (id, name,
arguments); the next request carries it and its result as a `Turn` in that wire's shape and
the fake sees the result; secrets planted in results and arguments never reach the wire;
`max_input_tokens` grows with the turns and stays at or above what the fake counted.
"""

import json

import httpx
import pytest

from app.agents.prefix import (
    PromptParts,
    ToolCall,
    ToolResult,
    ToolSpec,
    Turn,
    anthropic_request,
)
from app.agents.providers import (
    INVALID_JSON_KEY,
    ProviderError,
    _ollama_completion,
    build_provider,
    parse_arguments,
)
from app.agents.sanitize import Sanitizer
from devtools.fakes import (
    FakeConversation,
    FakeProviderServer,
    FakeReply,
    demo_responder,
    start_fake_fleet,
)

# kind -> (fake server, model, the path the kind's requests arrive on)
KINDS = {
    "anthropic": ("anthropic", "claude-sonnet-4-6", "/v1/messages"),
    "openai": ("openai", "gpt-4.1", "/v1/chat/completions"),
    "openrouter": ("openrouter", "openai/gpt-4.1-mini", "/v1/chat/completions"),
    "ollama": ("ollama", "llama3.1:8b", "/api/chat"),
    "ollama-openai": ("ollama", "llama3.1:8b", "/v1/chat/completions"),
}
STREAMS = [False, True]

SEARCH = ToolSpec("search_knowledge", "Search the knowledge base",
                  {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]})
REPORT = ToolSpec("report", "Report the result",
                  {"type": "object", "properties": {"result": {"type": "string"}}})
PARTS = PromptParts(system="You are the Agent VOS ops team.", persona="You keep ports shut.",
                    tools=(SEARCH, REPORT), context="Runbook: only 443 is open.",
                    task="Check the door host.")
CALLS = (("search_knowledge", {"query": "door ports", "limit": 3}),
         ("report", {"result": "only 443", "tags": ["tls", {"depth": 2}]}))
# the entropy rule would redact this (real ids look like it): proves ids are never cleaned
OPAQUE_ID = "toolu_01Xk3R9vQ2mL7pW4tZ8yB1nC6dQ"


@pytest.fixture(scope="module")
def servers():
    started = {"anthropic": FakeProviderServer("anthropic"),
               "openai": FakeProviderServer("openai"),
               "openrouter": FakeProviderServer("openai", name="openrouter"),
               "ollama": FakeProviderServer("ollama")}
    for server in started.values():
        server.start()
    yield started
    for server in started.values():
        server.stop()


def setup(servers, kind: str, stream: bool = False, sanitizer: Sanitizer | None = None):
    """(server, provider, model) for a kind, the server forgotten everything."""
    name, model, _ = KINDS[kind]
    server = servers[name]
    server.reset()
    url = server.openai_base_url if kind == "ollama-openai" else server.base_url
    key = "" if kind.startswith("ollama") else "fake-key"
    provider = build_provider(kind, url, key, timeout=5, stream=stream, sanitizer=sanitizer)
    return server, provider, model


def with_turns(*turns: Turn, parts: PromptParts = PARTS) -> PromptParts:
    return PromptParts(parts.system, parts.persona, parts.tools, parts.context, parts.task,
                       turns)


@pytest.mark.parametrize("stream", STREAMS, ids=["json", "stream"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_scripted_tool_call_comes_back_as_tool_calls(servers, kind, stream):
    server, provider, model = setup(servers, kind, stream)
    server.script_replies(FakeReply(text="Let me look.", tool_calls=CALLS))
    completion = provider.complete(PARTS, model, 256)
    assert server.received[-1].path == KINDS[kind][2]
    assert bool(server.received[-1].json().get("stream")) is stream
    assert [(c.name, c.arguments) for c in completion.tool_calls] == list(CALLS)
    assert completion.text == "Let me look."
    assert completion.stop_reason == "tool_use"
    ids = [c.id for c in completion.tool_calls]
    assert all(ids) and len(set(ids)) == 2
    prefix = {"anthropic": "toolu_", "ollama": "call_"}.get(kind, "call_")
    assert all(i.startswith(prefix) for i in ids)
    if kind == "ollama":  # Ollama gives no ids: generated from the call's position
        assert ids == ["call_0", "call_1"]
    assert completion.usage.output > 0
    # the queue is used up: the next answer is the default text again
    plain = provider.complete(PARTS, model, 256)
    assert plain.tool_calls == () and plain.stop_reason == "end"
    assert plain.text.startswith("Acknowledged by")


@pytest.mark.parametrize("stream", STREAMS, ids=["json", "stream"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_results_go_back_in_the_wire_format_and_the_fake_sees_them(servers, kind, stream):
    server, provider, model = setup(servers, kind, stream)
    server.script_replies(FakeReply(tool_calls=CALLS))
    first = provider.complete(PARTS, model, 256)
    results = (ToolResult(first.tool_calls[0].id, "search_knowledge", "Door: 443 only."),
               ToolResult(first.tool_calls[1].id, "report", "report refused", is_error=True))
    turn = Turn(first.tool_calls, first.text, results)
    second = provider.complete(with_turns(turn), model, 256)
    assert second.stop_reason == "end" and second.tool_calls == ()

    conv = server.conversations[-1]
    assert conv.tool_results == [("search_knowledge", "Door: 443 only."),
                                 ("report", "report refused")]
    assert conv.tool_calls == list(CALLS)
    assert "Check the door host." in conv.task and conv.last_user == conv.task
    assert set(conv.tools) == {"search_knowledge", "report"}
    assert "You keep ports shut." in conv.system

    body = server.received[-1].json()
    ids = [c.id for c in first.tool_calls]
    if kind == "anthropic":
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        uses = body["messages"][1]["content"]
        assert [(b["type"], b["id"], b["input"]) for b in uses] == [
            ("tool_use", ids[0], CALLS[0][1]), ("tool_use", ids[1], CALLS[1][1])]
        answers = body["messages"][2]["content"]
        assert [(b["tool_use_id"], b["is_error"]) for b in answers] == [
            (ids[0], False), (ids[1], True)]
    elif kind == "ollama":
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "tool"]
        assert [c["function"]["arguments"] for c in body["messages"][2]["tool_calls"]] == [
            CALLS[0][1], CALLS[1][1]]  # objects, not JSON strings
        assert [m["tool_name"] for m in body["messages"][3:]] == ["search_knowledge", "report"]
    else:
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "tool"]
        calls = body["messages"][2]["tool_calls"]
        assert [c["id"] for c in calls] == ids
        assert [json.loads(c["function"]["arguments"]) for c in calls] == [
            CALLS[0][1], CALLS[1][1]]
        assert [m["tool_call_id"] for m in body["messages"][3:]] == ids


@pytest.mark.parametrize("kind", list(KINDS))
def test_secrets_in_results_and_arguments_never_reach_the_wire(servers, kind):
    secret = "sk-ant-api03-" + "Q7vN2kLmP4rT7wXyB1cD3eF5gH6jK9" * 2
    github = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    call = ToolCall(OPAQUE_ID, "search_knowledge",
                    {"query": f"rotate {secret}", "nested": [{"token": f"token={github}"}],
                     f"key {secret}": 1})
    turn = Turn((call,), f"I will rotate {secret}.",
                (ToolResult(OPAQUE_ID, "search_knowledge", f"found: ANTHROPIC_KEY={secret}"),))
    server, provider, model = setup(servers, kind, sanitizer=Sanitizer())
    provider.complete(with_turns(turn), model, 64)
    wire = server.received[-1].body
    assert secret.encode() not in wire and github.encode() not in wire
    assert wire.count(b"REDACTED") >= 5  # text, argument value, nested value, key, result
    if kind != "ollama":  # the native wire carries no ids
        assert wire.count(OPAQUE_ID.encode()) == 2, "the call's and the result's id unchanged"
    conv = server.conversations[-1]
    assert "[REDACTED:" in conv.tool_results[0][1]
    assert "[REDACTED:" in conv.tool_calls[0][1]["nested"][0]["token"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_secret_check_can_fail(servers, kind):
    """With a sanitizer that finds nothing the planted secret IS on the wire."""
    secret = "sk-ant-api03-" + "Q7vN2kLmP4rT7wXyB1cD3eF5gH6jK9" * 2

    class Blind(Sanitizer):
        def clean(self, text):
            return text

    turn = Turn((ToolCall("c1", "search_knowledge", {"query": secret}),), "",
                (ToolResult("c1", "search_knowledge", secret),))
    server, provider, model = setup(servers, kind, sanitizer=Blind())
    provider.complete(with_turns(turn), model, 64)
    assert server.received[-1].body.count(secret.encode()) == 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_max_input_tokens_grows_with_turns_and_bounds_the_fake_count(servers, kind):
    server, provider, model = setup(servers, kind)
    # punctuation is one fake token per byte: the framing allowances have to carry the rest
    heavy = "{[(!?;)]}" * 300

    def turn(n: int) -> Turn:
        call = ToolCall(f"call_{n}", "search_knowledge",
                        {"query": heavy, "list": [1, [2, [3, {"k": "!!"}]]]})
        return Turn((call,), f"step {n}: {heavy}",
                    (ToolResult(f"call_{n}", "search_knowledge", heavy),))

    bounds, counted = [], []
    for parts in (PARTS, with_turns(turn(1)), with_turns(turn(1), turn(2))):
        usage = provider.complete(parts, model, 16).usage
        bounds.append(parts.max_input_tokens())
        counted.append(usage.total_input)
    assert bounds[0] < bounds[1] < bounds[2]
    assert counted[0] < counted[1] < counted[2], "the fake counts the turns"
    assert all(b >= c for b, c in zip(bounds, counted, strict=True)), (bounds, counted)
    # each turn adds at least its bytes: text, query argument and result, 2700 bytes each
    assert bounds[2] - bounds[1] > 3 * len(heavy)


def test_a_turn_less_prompt_keeps_its_bound():
    assert PromptParts("sys", "p", task="ab" * 45_000).max_input_tokens() == 90068


def test_the_anthropic_second_turn_reads_the_cached_prefix(servers):
    server, provider, model = setup(servers, "anthropic")
    system = " ".join(["alpha"] * 1500)
    parts = PromptParts(system, " ".join(["beta"] * 100), tools=(SEARCH,), task="go")
    server.script_replies(FakeReply(tool_calls=(("search_knowledge", {"query": "x"}),)))
    first = provider.complete(parts, model, 64)
    assert first.usage.cache_write > 1600 and first.usage.cache_read == 0
    prefix = first.usage.cache_write  # tools + system + persona

    call = first.tool_calls[0]
    one = Turn(first.tool_calls, "", (ToolResult(call.id, call.name, "nothing found"),))
    server.script_replies(FakeReply(tool_calls=(("search_knowledge", {"query": "y"}),)))
    second = provider.complete(PromptParts(*_stable(parts), turns=(one,)), model, 64)
    assert second.usage.cache_read == prefix, "the stable prefix is read, not written again"
    assert second.usage.cache_write > 0  # the conversation breakpoint caches turn 1

    call2 = second.tool_calls[0]
    two = Turn(second.tool_calls, "", (ToolResult(call2.id, call2.name, "still nothing"),))
    third = provider.complete(PromptParts(*_stable(parts), turns=(one, two)), model, 64)
    assert third.usage.cache_read == prefix + second.usage.cache_write, \
        "the third turn reads everything up to the end of the second request"
    body = server.received[-1].json()
    breakpoints = [b for m in body["messages"] for b in m["content"]
                   if isinstance(b, dict) and b.get("cache_control")]
    assert len(breakpoints) == 1 and breakpoints[0]["type"] == "tool_result"


def _stable(parts: PromptParts) -> tuple:
    return parts.system, parts.persona, parts.tools, parts.context, parts.task


def test_no_conversation_breakpoint_below_the_minimum():
    turn = Turn((ToolCall("t1", "report", {}),), "", (ToolResult("t1", "report", "ok"),))
    request = anthropic_request(PromptParts("s", "p", turns=(turn,)), "claude-sonnet-4-6")
    assert "cache_control" not in json.dumps(request)


def test_openai_caches_the_conversation_across_turns(servers):
    server, provider, model = setup(servers, "openai")
    parts = PromptParts(" ".join(["alpha"] * 1300), "persona", task="go")
    server.script_replies(FakeReply(tool_calls=(("search_knowledge", {"query": "x"}),)))
    first = provider.complete(parts, model, 16)
    call = first.tool_calls[0]
    turn = Turn(first.tool_calls, "", (ToolResult(call.id, call.name, "nothing"),))
    second = provider.complete(PromptParts(*_stable(parts), turns=(turn,)), model, 16)
    assert first.usage.cache_read == 0 and second.usage.cache_read >= 1280


@pytest.mark.parametrize("stream", STREAMS, ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["openai", "ollama-openai"])
def test_unparseable_openai_arguments_are_kept_for_the_caller(servers, kind, stream):
    server, provider, model = setup(servers, kind, stream)
    raw = '{"query": "door ports", '
    server.script_replies(FakeReply(tool_calls=(("search_knowledge", raw),)))
    (call,) = provider.complete(PARTS, model, 64).tool_calls
    assert call.arguments == {INVALID_JSON_KEY: raw}
    assert parse_arguments("x" * 5000) == {INVALID_JSON_KEY: "x" * 2000}
    assert parse_arguments("[1, 2]") == {INVALID_JSON_KEY: "[1, 2]"}  # not an object


def test_ollama_ids_are_kept_when_given_and_stop_reasons_normalised():
    data = {"done": True, "done_reason": "stop", "model": "m", "eval_count": 3}
    completion = _ollama_completion(data, "m", "", [
        {"id": "call_abc", "function": {"name": "report", "arguments": {"result": "x"}}},
        {"function": {"name": "report", "arguments": '{"result": "y"}'}}])
    assert [c.id for c in completion.tool_calls] == ["call_abc", "call_1"]
    assert completion.tool_calls[1].arguments == {"result": "y"}
    assert completion.stop_reason == "tool_use"  # Ollama says "stop" even with calls
    truncated = _ollama_completion(dict(data, done_reason="length"), "m", "half", [])
    assert truncated.stop_reason == "max_tokens"


def test_scripted_failures_do_not_consume_scripted_replies(servers):
    server, provider, model = setup(servers, "openai")
    server.script("500")
    server.script_replies(FakeReply(tool_calls=(("report", {"result": "r"}),)))
    with pytest.raises(ProviderError):
        provider.complete(PARTS, model, 64)
    assert provider.complete(PARTS, model, 64).tool_calls[0].name == "report"


def test_responder_answers_when_the_queue_is_empty_and_reset_removes_it(servers):
    server, provider, model = setup(servers, "anthropic")
    seen: list[FakeConversation] = []

    def responder(conv):
        seen.append(conv)
        return FakeReply(text=f"{len(conv.tool_results)} results so far")

    server.respond_with(responder)
    server.script_replies(FakeReply(text="scripted first"))
    assert provider.complete(PARTS, model, 64).text == "scripted first"
    assert provider.complete(PARTS, model, 64).text == "0 results so far"
    assert len(seen) == 1 and seen[0].model == model
    server.reset()
    assert provider.complete(PARTS, model, 64).text.startswith("Acknowledged by")


def test_a_responder_that_raises_is_a_server_error_naming_it(servers):
    server, provider, model = setup(servers, "openai")
    server.respond_with(lambda conv: next(iter([])))
    with pytest.raises(ProviderError) as info:
        provider.complete(PARTS, model, 64)
    assert info.value.kind == "server" and "StopIteration" in info.value.message


BOSS = PromptParts(
    system="You are the Agent VOS.",
    persona="You run the team.\n\nYour reports: Mara (marketing lead), Theo (CTO). "
            "Delegate to them by name or role.",
    tools=(ToolSpec("delegate", "Delegate work", {"type": "object"}), REPORT),
    task="Plan the spring launch\n\nPositioning and technical readiness.")


@pytest.mark.parametrize("kind", list(KINDS))
def test_demo_responder_delegates_then_synthesises_on_every_wire(servers, kind):
    server, provider, model = setup(servers, kind)
    server.respond_with(demo_responder)
    delegated = provider.complete(BOSS, model, 512)
    assert [c.name for c in delegated.tool_calls] == ["delegate", "delegate"]
    assert [c.arguments["to"] for c in delegated.tool_calls] == ["Mara", "Theo"]
    assert delegated.tool_calls[1].arguments["title"] == "CTO: Plan the spring launch"
    assert "Positioning" in delegated.tool_calls[0].arguments["brief"]

    results = tuple(ToolResult(c.id, c.name, f"Result of {c.arguments['to']} for "
                                             f"'x' (approved):\nall good from {n}")
                    for n, c in enumerate(delegated.tool_calls))
    synthesis = provider.complete(
        with_turns(Turn(delegated.tool_calls, "", results), parts=BOSS), model, 512)
    assert synthesis.tool_calls == ()
    assert synthesis.text.startswith("Synthesis for Plan the spring launch: 2 reports")
    assert "all good from 1" in synthesis.text


def test_demo_responder_reports_once_then_answers_text():
    worker = FakeConversation("anthropic", "m", system="You write copy.",
                              tools=("report",), task="<task>\nWrite the tagline\n</task>")
    reply = demo_responder(worker)
    assert reply.tool_calls == (("report", {"result": "Write the tagline: done. "
                                                      "Write the tagline"}),)
    worker.tool_results.append(("report", "reported"))
    assert demo_responder(worker) is None
    marker = FakeConversation("openai", "m", tools=("delegate",),
                              task="Results of your reports: A did it",
                              tool_results=[("delegate", "delegated to A")])
    assert demo_responder(marker).text.startswith("Synthesis for Results of your reports")


def test_fleet_installs_a_responder_on_every_fake():
    fleet = start_fake_fleet(responder=lambda conv: FakeReply(text=f"hi from {conv.wire}"))
    try:
        answer = httpx.post(f"{fleet['ollama'].base_url}/api/chat", timeout=5, json={
            "model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]})
        assert answer.json()["message"]["content"] == "hi from ollama"
        provider = build_provider("openrouter", fleet["openrouter"].base_url, "fake-key")
        assert provider.complete(PARTS, "m", 16).text == "hi from openai"
    finally:
        for server in fleet.values():
            server.stop()


def test_fake_conversation_reads_each_wire_the_same_way():
    anthropic_body = {"model": "m", "system": [{"type": "text", "text": "sys"},
                                               {"type": "text", "text": "persona"}],
                      "tools": [{"name": "report"}],
                      "messages": [
                          {"role": "user", "content": "first"},
                          {"role": "assistant", "content": [
                              {"type": "tool_use", "id": "t1", "name": "report",
                               "input": {"result": "r"}}]},
                          {"role": "user", "content": [
                              {"type": "tool_result", "tool_use_id": "t1",
                               "content": [{"type": "text", "text": "saved"}]},
                              {"type": "text", "text": "now finish"}]}]}
    ollama_body = {"model": "m", "tools": [{"type": "function",
                                            "function": {"name": "report"}}],
                   "messages": [
                       {"role": "system", "content": "sys\n\npersona"},
                       {"role": "user", "content": "first"},
                       {"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": "report",
                                                     "arguments": {"result": "r"}}}]},
                       {"role": "tool", "content": "saved", "tool_name": "report"},
                       {"role": "user", "content": "now finish"}]}
    for wire, body in (("anthropic", anthropic_body), ("ollama", ollama_body)):
        conv = FakeConversation.from_request(wire, body)
        assert (conv.system, conv.tools, conv.task, conv.last_user) == (
            "sys\n\npersona", ("report",), "first", "now finish"), wire
        assert conv.tool_results == [("report", "saved")]
        assert conv.tool_calls == [("report", {"result": "r"})]
