"""The tools helper: built-in schemas, argument validation, the mesh-URL rule, HTTP tool
config, and an agent's tool list (no network here: tests/integration/test_agents_tools_http.py
calls a real local server)."""

import pytest
from pydantic import ValidationError

from app.agents.config import ToolConfig
from app.agents.prefix import ToolCall, ToolSpec
from app.agents.sanitize import Sanitizer
from app.agents.tools import (
    BUILTIN_TOOLS,
    DELEGATE,
    REPORT,
    SEARCH_KNOWLEDGE,
    HttpToolConfig,
    agent_tool_specs,
    call_http_tool,
    check_mesh_url,
    check_schema,
    validate_arguments,
)

GOOD_DELEGATE = {"to": "CTO", "title": "Rotate the door secrets", "brief": "Before Friday."}


def test_the_builtins_are_strict_object_schemas():
    assert list(BUILTIN_TOOLS) == ["delegate", "search_knowledge", "report"]
    for spec in (DELEGATE, SEARCH_KNOWLEDGE, REPORT):
        schema = spec.parameters
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        assert check_schema(schema) == []  # fully enforced by validate_arguments
    assert DELEGATE.parameters["required"] == ["to", "title", "brief"]
    assert DELEGATE.parameters["properties"]["priority"]["enum"] == ["P0", "P1", "P2"]
    assert DELEGATE.parameters["properties"]["title"]["maxLength"] == 200
    assert DELEGATE.parameters["properties"]["brief"]["maxLength"] == 4000
    assert SEARCH_KNOWLEDGE.parameters["properties"]["query"]["maxLength"] == 1000
    assert REPORT.parameters["properties"]["result"]["maxLength"] == 20000


@pytest.mark.parametrize("arguments, problem", [
    (GOOD_DELEGATE, None),
    ({**GOOD_DELEGATE, "priority": "P0"}, None),
    ({"to": "CTO", "title": "x"}, "missing required field 'brief'"),
    ({**GOOD_DELEGATE, "cc": "CFO"}, "unexpected field 'cc' (allowed: to, title, brief, "
                                     "priority)"),
    ({**GOOD_DELEGATE, "title": "t" * 201}, "title: at most 200 characters (got 201)"),
    ({**GOOD_DELEGATE, "brief": ""}, "brief: at least 1 character(s) (got 0)"),
    ({**GOOD_DELEGATE, "priority": "urgent"}, "priority: must be one of P0, P1, P2"),
    ({**GOOD_DELEGATE, "to": 7}, "to: expected string, got integer"),
    (["CTO"], "arguments: expected object, got array"),
    ({"__invalid_json__": "{to: CTO"}, "the arguments are not valid JSON; send one JSON "
                                       "object"),
])
def test_delegate_arguments(arguments, problem):
    assert validate_arguments(DELEGATE, arguments) == problem


def test_validation_covers_the_whole_subset():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "maximum": 1},
            "dry": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                     "maxItems": 2},
            "mode": {"const": "fast"},
            "note": {"type": ["string", "null"]},
            "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["n"],
    }
    assert check_schema(schema) == []
    ok = {"n": 3.0, "ratio": 0.5, "dry": False, "tags": ["a"], "mode": "fast", "note": None,
          "meta": {"x": 1}, "free": "extra fields allowed: no additionalProperties: false"}
    assert validate_arguments(schema, ok) is None
    for bad, problem in [
        ({"n": 0}, "n: must be ≥ 1 (got 0)"),
        ({"n": 11}, "n: must be ≤ 10 (got 11)"),
        ({"n": 2.5}, "n: expected integer, got number"),
        ({"n": True}, "n: expected integer, got boolean"),  # a bool is not a number
        ({"n": 1, "ratio": "1"}, "ratio: expected number, got string"),
        ({"n": 1, "dry": "no"}, "dry: expected boolean, got string"),
        ({"n": 1, "tags": ["a", "b", "c"]}, "tags: at most 2 items (got 3)"),
        ({"n": 1, "tags": ["abcd"]}, "tags[0]: at most 3 characters (got 4)"),
        ({"n": 1, "mode": "slow"}, 'mode: must be "fast"'),
        ({"n": 1, "note": 3}, "note: expected string or null, got integer"),
        ({"n": 1, "meta": {"x": "y"}}, "meta.x: expected integer, got string"),
    ]:
        assert validate_arguments(schema, bad) == problem, bad


def test_schemas_beyond_the_subset_are_named():
    assert check_schema({"type": "object", "properties": {"q": {"type": "strin"}},
                         "oneOf": []}) == [
        "parameters: keyword 'oneOf' is not supported (supported: additionalProperties, "
        "const, enum, items, maxItems, maxLength, maximum, minItems, minLength, minimum, "
        "properties, required, type)",
        "parameters.properties.q.type: 'strin' is not one of object, string, integer, number, "
        "boolean, array, null"]
    assert check_schema({"type": "object", "required": "q", "maxLength": -1}) == [
        "parameters.required: a list of field names", "parameters.maxLength: a whole number ≥ 0"]


@pytest.mark.parametrize("url", [
    "http://100.64.0.1/x", "http://100.127.255.254:8080/tool", "https://127.0.0.1:9000/",
    "http://127.1.2.3/", "http://[::1]:8000/", "http://[fd7a:115c:a1e0::53]/",
    "http://10.0.0.5/", "http://172.16.0.1/", "http://172.31.255.255/",
    "http://192.168.1.20/", "https://monitor.tail1234.ts.net/up", "http://box.ts.net./",
    "http://[::ffff:10.1.2.3]/",
])
def test_mesh_urls_are_accepted(url):
    assert check_mesh_url(url) == url


@pytest.mark.parametrize("url, host", [
    ("https://example.com/hook", "example.com"), ("http://8.8.8.8/", "8.8.8.8"),
    ("http://100.128.0.1/", "100.128.0.1"), ("http://100.63.255.255/", "100.63.255.255"),
    ("http://172.32.0.1/", "172.32.0.1"), ("http://localhost:8000/", "localhost"),
    ("http://ts.net/", "ts.net"), ("http://evilts.net/", "evilts.net"),
    ("http://box.ts.net.evil.com/", "box.ts.net.evil.com"),
    ("http://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8"), ("http://[fd7a:115c:a1e1::1]/",
                                                      "fd7a:115c:a1e1::1"),
    ("http://2130706433/", "2130706433"),  # 127.0.0.1 as one integer: not an IP we accept
])
def test_urls_off_the_mesh_are_refused_naming_the_host_and_the_ranges(url, host):
    with pytest.raises(ValueError) as caught:
        check_mesh_url(url)
    message = str(caught.value)
    assert message.startswith(f"host {host!r} is not on the mesh")
    for allowed in ("100.64.0.0/10", "fd7a:115c:a1e0::/48", ".ts.net", "127.0.0.0/8", "::1",
                    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert allowed in message


@pytest.mark.parametrize("url, problem", [
    ("ftp://10.0.0.1/x", "must start with http:// or https://"),
    ("10.0.0.1/x", "must start with http:// or https://"),
    ("http://user:pw@10.0.0.1/", "credentials in the URL are refused"),
    ("http://10.0.0.1:99999/", "the port is not a number"),
    ("http:///path", "the URL has no host"),
])
def test_malformed_tool_urls_say_why(url, problem):
    with pytest.raises(ValueError, match=problem):
        check_mesh_url(url)


def test_http_tool_config_bounds():
    cfg = HttpToolConfig(url="http://100.64.0.9:8080/t")
    assert (cfg.method, cfg.timeout_seconds, cfg.headers_env) == ("POST", 10.0, {})
    assert HttpToolConfig(url="http://10.0.0.1/", timeout_seconds=60).timeout_seconds == 60
    for bad in ({"timeout_seconds": 61}, {"timeout_seconds": 0}, {"method": "GET"},
                {"verb": "POST"}):
        with pytest.raises(ValidationError):
            HttpToolConfig(url="http://10.0.0.1/", **bad)


def test_header_values_are_environment_variable_names_never_echoed():
    key = "sk-ant-api03-abcdefghijklmnopqrstuv"
    with pytest.raises(ValidationError) as caught:
        HttpToolConfig(url="http://10.0.0.1/", headers_env={"Authorization": key})
    assert "looks like an API key" in str(caught.value) and key not in str(caught.value)
    with pytest.raises(ValidationError, match="must be an environment variable name"):
        HttpToolConfig(url="http://10.0.0.1/", headers_env={"X-Token": "lower case"})
    with pytest.raises(ValidationError, match="set by the worker itself"):
        HttpToolConfig(url="http://10.0.0.1/", headers_env={"Content-Type": "CT"})
    with pytest.raises(ValidationError, match="a header name is letters"):
        HttpToolConfig(url="http://10.0.0.1/", headers_env={"Bad Header": "TOKEN"})


def test_tool_config_kinds():
    http = ToolConfig.model_validate({"name": "up", "description": "d", "kind": "http",
                                      "http": {"url": "http://100.64.0.7/up"}})
    assert http.http is not None and http.http.url == "http://100.64.0.7/up"
    declared = ToolConfig.model_validate(
        {"name": "docs", "description": "d",
         "parameters": {"type": "object", "anyOf": []}})  # only offered: not checked
    assert declared.kind == "declared" and declared.http is None
    for bad, problem in [
        ({"name": "report"}, "'report' is a built-in tool"),
        ({"kind": "http"}, "kind http needs an http: block"),
        ({"http": {"url": "http://10.0.0.1/"}}, "only a kind: http tool has an http: block"),
        ({"kind": "http", "http": {"url": "http://10.0.0.1/"},
          "parameters": {"type": "object", "properties": {"q": {"pattern": "x"}}}},
         "keyword 'pattern' is not supported"),
        ({"kind": "http", "http": {"url": "http://10.0.0.1/"},
          "parameters": {"type": "string"}}, "an HTTP tool takes a JSON object"),
        ({"kind": "http", "http": {"url": "https://example.com/"}}, "is not on the mesh"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            ToolConfig.model_validate({"name": "t", "description": "d", **bad})


def test_an_agents_tools_are_sorted_built_ins_and_declared():
    declared = {"check_uptime": ToolConfig(name="check_uptime", description="Up?",
                                           parameters={"type": "object"})}
    specs = agent_tool_specs(["report", "check_uptime", "delegate", "report"], declared)
    assert [s.name for s in specs] == ["check_uptime", "delegate", "report"]
    assert specs[1] is DELEGATE
    assert specs[0] == ToolSpec("check_uptime", "Up?", {"type": "object"})
    assert agent_tool_specs([], declared) == ()
    with pytest.raises(ValueError, match="'shell', which the worker's agents file does not "
                                         "declare"):
        agent_tool_specs(["shell"], declared)


def test_nothing_is_sent_for_bad_arguments_or_a_missing_header_variable():
    # port 9 on loopback: had anything been sent, the result would say it could not connect
    tool = HttpToolConfig(url="http://127.0.0.1:9/t", headers_env={"Authorization": "TOK"})
    spec = ToolSpec("t", "d", {"type": "object", "properties": {"q": {"type": "string"}},
                               "required": ["q"], "additionalProperties": False})
    bad = call_http_tool(tool, spec, {"q": 1}, Sanitizer(), {"TOK": "x"}, call_id="c1")
    assert bad.is_error and bad.content == "invalid arguments: q: expected string, got integer"
    assert (bad.call_id, bad.name) == ("c1", "t")
    unset = call_http_tool(tool, spec, {"q": "a"}, Sanitizer(), {})
    assert unset.is_error and unset.content == (
        "not called: header Authorization needs the environment variable TOK, which is not "
        "set on the worker")


def test_the_declared_tool_and_the_models_call_are_accepted_as_they_are():
    declared = ToolConfig.model_validate(
        {"name": "t", "description": "d", "kind": "http",
         "http": {"url": "http://127.0.0.1:9/t", "headers_env": {"Authorization": "TOK"}}})
    spec = ToolSpec("t", "d", {"type": "object", "properties": {"q": {"type": "string"}}})
    result = call_http_tool(declared, spec, ToolCall("toolu_9", "t", {"q": "a"}), Sanitizer(),
                            {})
    assert (result.call_id, result.is_error) == ("toolu_9", True)
    assert "needs the environment variable TOK" in result.content
    with pytest.raises(ValueError, match="not an HTTP tool"):
        call_http_tool(ToolConfig(name="t", description="d"), spec, {}, Sanitizer(), {})
