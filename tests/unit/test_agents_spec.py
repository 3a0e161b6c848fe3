"""The agents file model and loader: every mistake names its field and line, all at once."""

from pathlib import Path

import pytest

from app.agents.spec import AgentsFileError, load_agents_file, parse_agents_text
from app.dispatch.policy import WorkerPolicy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agents.yaml"

GOOD = """\
deployments:
  - name: local
    provider: ollama
    base_url: http://127.0.0.1:11434
    model: llama3.1:8b
    context_window: 8192
  - name: sonnet
    provider: anthropic
    base_url: https://api.anthropic.com
    model: claude-sonnet-4-6
    context_window: 200000
    api_key_env: ANTHROPIC_API_KEY
tools:
  - {name: search_docs, description: Search the documents.}
agents:
  - name: Orchestrator
    orchestrator: true
    budget_usd: 5
  - name: CTO
    manager: Orchestrator
    chain: [sonnet]
    tools: [search_docs]
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle` (computed, so the tests read)."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(AgentsFileError) as caught:
        parse_agents_text(text)
    return caught.value.problems


def test_the_reference_example_is_valid_and_complete():
    spec = load_agents_file(EXAMPLE)
    assert [a.name for a in spec.agents] == ["Orchestrator", "Marketing Lead", "Creative", "CTO"]
    assert [a.name for a in spec.agents if a.orchestrator] == ["Orchestrator"]
    assert {d.provider for d in spec.deployments} == {"anthropic", "openai", "openrouter",
                                                      "ollama"}
    ollama = next(d for d in spec.deployments if d.provider == "ollama")
    assert not str(ollama.base_url).rstrip("/").endswith("/v1")  # the native API
    assert spec.embedding is not None and spec.worker.max_attempts == 5


def test_a_valid_file_gets_defaults():
    spec = parse_agents_text(GOOD)
    orchestrator, cto = spec.agents
    assert spec.chain_of(orchestrator) == ["local", "sonnet"]  # default_chain = every one
    assert spec.chain_of(cto) == ["sonnet"]
    assert orchestrator.budget_period == "month" and cto.budget_usd == 0
    assert spec.worker == WorkerPolicy()


def test_json_is_accepted():
    spec = parse_agents_text('{"deployments": [{"name": "local", "provider": "ollama", '
                             '"base_url": "http://127.0.0.1:11434", "model": "m", '
                             '"context_window": 10}], "agents": [{"name": "A"}]}')
    assert spec.agents[0].name == "A"


def test_a_typoed_key_names_the_field_and_its_line():
    text = GOOD.replace("    budget_usd: 5", "    budget_uds: 5")
    assert problems(text) == [("agents[0].budget_uds", line_of(text, "budget_uds"),
                               "Extra inputs are not permitted")]


def test_a_negative_budget_names_the_field_and_its_line():
    text = GOOD.replace("budget_usd: 5", "budget_usd: -1")
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[0].budget_usd", line_of(text, "budget_usd: -1"))
    assert "greater than or equal to 0" in msg


def test_an_unknown_manager_is_reported_at_the_manager_line():
    text = GOOD.replace("manager: Orchestrator", "manager: Boss")
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[1].manager", line_of(text, "manager: Boss"))
    assert "'Boss' is not an agent in this file" in msg


def test_a_management_cycle_is_one_problem_naming_the_loop():
    text = GOOD.replace("    orchestrator: true\n", "    orchestrator: true\n    manager: CTO\n")
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[0].manager", line_of(text, "manager: CTO"))
    assert msg == "management cycle: Orchestrator → CTO → Orchestrator"


def test_two_orchestrators_are_refused_at_the_second():
    text = GOOD.replace("    manager: Orchestrator\n",
                        "    manager: Orchestrator\n    orchestrator: true\n")
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[1].orchestrator", line_of(text, "orchestrator: true", 2))
    assert "'Orchestrator' is already" in msg


def test_unknown_chain_and_tool_names_point_at_the_item():
    text = GOOD.replace("chain: [sonnet]", "chain: [sonnet, gpt5]").replace(
        "tools: [search_docs]", "tools: [shell]")
    found = problems(text)
    assert [(p, line) for p, line, _ in found] == [
        ("agents[1].chain[1]", line_of(text, "gpt5")),
        ("agents[1].tools[0]", line_of(text, "shell"))]
    assert "'gpt5' is not a deployment (declared: local, sonnet)" in found[0][2]


@pytest.mark.parametrize("value", ["sk-ant-api03-abcdefghijklmnop", "AKIAIOSFODNN7EXAMPLE",
                                   "a8f5f167f44f4964e6c998dee827110c"])
def test_a_key_where_a_variable_name_belongs_is_refused_without_echoing_it(value):
    text = GOOD.replace("api_key_env: ANTHROPIC_API_KEY", f"api_key_env: {value}")
    with pytest.raises(AgentsFileError) as caught:
        parse_agents_text(text)
    [(path, line, msg)] = caught.value.problems
    assert (path, line) == ("deployments[1].api_key_env", line_of(text, "api_key_env"))
    assert "looks like an API key" in msg
    assert value not in str(caught.value)


def test_a_cloud_deployment_needs_a_key_variable():
    [(path, line, msg)] = problems(GOOD.replace("    api_key_env: ANTHROPIC_API_KEY\n", ""))
    assert path == "deployments[1].api_key_env"
    assert line == line_of(GOOD, "name: sonnet")  # a missing field: the deployment's line
    assert "required for provider anthropic" in msg


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("budget_usd: 5", "budget_usd: -1").replace(
        "manager: Orchestrator", "manager: Boss").replace("context_window: 8192",
                                                          "context_window: 0")
    found = problems(text)
    # shape errors first (pydantic stops there), so the manager check waits for a valid shape
    assert [p for p, _, _ in found] == ["deployments[0].context_window", "agents[0].budget_usd"]
    text = GOOD.replace("manager: Orchestrator", "manager: Boss").replace(
        "chain: [sonnet]", "chain: [nope]")
    assert [p for p, _, _ in problems(text)] == ["agents[1].manager", "agents[1].chain[0]"]


def test_duplicate_names_and_duplicate_keys_are_errors():
    text = GOOD + "  - name: CTO\n"
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[2].name", line_of(text, "name: CTO", 2))
    assert "declared twice" in msg
    text = GOOD.replace("    budget_usd: 5\n", "    budget_usd: 5\n    budget_usd: 6\n")
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("agents[0].budget_usd", line_of(text, "budget_usd: 6"))
    assert "declared twice" in msg


def test_broken_yaml_and_wrong_shapes_are_one_clear_problem(tmp_path):
    [(path, line, msg)] = problems("deployments:\n  - name: [unclosed\n")
    assert path == "" and line == 3 and msg.startswith("not valid YAML")
    [(_, _, msg)] = problems("- just\n- a list\n")
    assert "must be a mapping" in msg
    with pytest.raises(AgentsFileError, match="cannot read"):
        load_agents_file(tmp_path / "missing.yaml")
    binary = tmp_path / "agents.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AgentsFileError, match="not UTF-8"):
        load_agents_file(binary)


def test_one_model_priced_two_ways_is_refused():
    text = GOOD.replace("    context_window: 8192\n", "    context_window: 8192\n"
                        "    prices: {input_per_mtok: 0, output_per_mtok: 0}\n")
    text = text.replace("tools:\n", "  - {name: local2, provider: ollama-openai, base_url: "
                        "'http://127.0.0.1:11434/v1', model: 'llama3.1:8b', context_window: 10,"
                        " prices: {input_per_mtok: 1, output_per_mtok: 1}}\ntools:\n")
    [(path, _, msg)] = problems(text)
    assert path == "deployments[2].prices" and "ollama/llama3.1:8b is priced differently" in msg


def test_the_example_uses_the_orchestration_fields():
    spec = load_agents_file(EXAMPLE)
    by_name = {a.name: a for a in spec.agents}
    assert by_name["Orchestrator"].tools == ["delegate", "report"]
    for name in ("Marketing Lead", "Creative", "CTO"):
        assert {"report", "search_knowledge"} <= set(by_name[name].tools)
    [http] = [t for t in spec.tools if t.kind == "http"]
    assert http.http is not None and http.http.headers_env
    assert by_name["CTO"].approval.tools == [http.name]
    assert by_name["Orchestrator"].task_budget_usd is not None
    assert by_name["Orchestrator"].task_token_cap is not None


def test_run_policy_and_breakers_defaults():
    spec = parse_agents_text(GOOD)
    assert spec.breakers.model_dump() == {"same_call_repeats": 3, "failure_streak": 3,
                                          "agent_failed_tasks": 3}
    assert spec.agents[0].run_policy() == {"approval": {"delegate": False, "tools": []},
                                           "max_steps": 8, "task_budget_usd": None,
                                           "task_token_cap": None}


def test_built_in_tools_need_no_declaration_and_the_policy_is_read():
    text = GOOD.replace("    tools: [search_docs]\n", """\
    tools: [search_docs, delegate, report, search_knowledge]
    approval: {delegate: true, tools: [search_docs]}
    max_steps: 12
    task_budget_usd: 0.50
    task_token_cap: 50000
""") + "breakers: {same_call_repeats: 2, failure_streak: 5, agent_failed_tasks: 100}\n"
    spec = parse_agents_text(text)
    assert spec.agents[1].run_policy() == {
        "approval": {"delegate": True, "tools": ["search_docs"]}, "max_steps": 12,
        "task_budget_usd": "0.5", "task_token_cap": 50000}
    assert spec.breakers.agent_failed_tasks == 100


@pytest.mark.parametrize("field, value, needle", [
    ("max_steps", "0", "greater than or equal to 1"),
    ("max_steps", "51", "less than or equal to 50"),
    ("task_budget_usd", "-1", "greater than or equal to 0"),
    ("task_token_cap", "999", "greater than or equal to 1000"),
    ("approval", "{delegate: maybe}", "valid boolean"),
])
def test_run_policy_bounds_name_the_field_and_its_line(field, value, needle):
    text = GOOD.replace("    chain: [sonnet]\n", f"    chain: [sonnet]\n    {field}: {value}\n")
    [(path, line, msg)] = problems(text)
    assert path.startswith(f"agents[1].{field}") and line == line_of(text, f"{field}: {value}")
    assert needle in msg


@pytest.mark.parametrize("key, value", [("same_call_repeats", 0), ("failure_streak", 101),
                                        ("agent_failed_tasks", -3)])
def test_breaker_bounds_name_the_field_and_its_line(key, value):
    text = GOOD + f"breakers:\n  {key}: {value}\n"
    [(path, line, msg)] = problems(text)
    assert (path, line) == (f"breakers.{key}", line_of(text, f"{key}: {value}"))
    assert "than or equal to" in msg
    [(path, _, _)] = problems(GOOD + "breakers: {same_calls: 3}\n")
    assert path == "breakers.same_calls"


def test_approval_names_only_the_agents_own_tools():
    text = GOOD.replace("    tools: [search_docs]\n", """\
    tools: [search_docs, report]
    approval:
      delegate: true
      tools: [report, shell, delegate]
""")
    assert problems(text) == [
        ("agents[1].approval.delegate", line_of(text, "delegate: true"),
         "the agent cannot delegate: add delegate to its tools"),
        ("agents[1].approval.tools[1]", line_of(text, "tools: [report, shell"),
         "'shell' is not one of the agent's tools (search_docs, report)"),
        ("agents[1].approval.tools[2]", line_of(text, "tools: [report, shell"),
         "write approval.delegate: true for delegations")]


def test_an_agent_lists_a_tool_once():
    text = GOOD.replace("tools: [search_docs]", "tools: [report, search_docs, report]")
    assert problems(text) == [("agents[1].tools[2]", line_of(text, "tools: [report"),
                               "'report' is listed twice")]


HTTP_TOOL = """\
  - name: check_uptime
    description: Is the host up?
    parameters: {type: object, properties: {host: {type: string}}, required: [host]}
    kind: http
    http:
      url: http://100.100.1.2:8080/up
      timeout_seconds: 5
      headers_env: {Authorization: UPTIME_TOKEN}
"""


def test_an_http_tool_is_declared_with_its_http_block():
    spec = parse_agents_text(GOOD.replace("tools:\n", "tools:\n" + HTTP_TOOL).replace(
        "tools: [search_docs]", "tools: [search_docs, check_uptime]"))
    tool = spec.tools[0]
    assert tool.kind == "http" and spec.tools[1].kind == "declared"
    assert tool.http.model_dump() == {"url": "http://100.100.1.2:8080/up", "method": "POST",
                                      "timeout_seconds": 5.0,
                                      "headers_env": {"Authorization": "UPTIME_TOKEN"}}


@pytest.mark.parametrize("old, new, path, needle", [
    ("url: http://100.100.1.2:8080/up", "url: https://hooks.example.com/up",
     "tools[0].http.url", "host 'hooks.example.com' is not on the mesh"),
    ("timeout_seconds: 5", "timeout_seconds: 120", "tools[0].http.timeout_seconds",
     "less than or equal to 60"),
    ("{Authorization: UPTIME_TOKEN}", "{Authorization: sk-ant-api03-abcdefghijklmnopqrstu}",
     "tools[0].http.headers_env.Authorization", "looks like an API key"),
    ("kind: http", "kind: ftp", "tools[0].kind", "'declared' or 'http'"),
    ("{type: string}}", "{type: string, pattern: '^[a-z]+$'}}", "tools[0].parameters",
     "keyword 'pattern' is not supported"),
    ("name: check_uptime", "name: delegate", "tools[0].name", "'delegate' is a built-in"),
])
def test_http_tool_problems_name_the_field_and_its_line(old, new, path, needle):
    text = GOOD.replace("tools:\n", "tools:\n" + HTTP_TOOL.replace(old, new), 1)
    found = problems(text)
    assert [(p, line) for p, line, _ in found] == [(path, line_of(text, new))]
    assert needle in found[0][2]
    assert "sk-ant-api03" not in str(found)  # a pasted key is never repeated


def test_kind_http_without_its_block_is_reported_at_the_tool():
    text = GOOD.replace("tools:\n", "tools:\n  - {name: up, description: d, kind: http}\n", 1)
    [(path, line, msg)] = problems(text)
    assert (path, line) == ("tools[0].http", line_of(text, "name: up"))
    assert "kind http needs an http: block" in msg
