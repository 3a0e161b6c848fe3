"""The agents file: a tenant's workforce as code (agents, deployments, embedding, worker policy).

One YAML file per tenant (JSON is accepted: YAML is a superset) declares the provider
deployments and the agents that use them; `vos agents apply FILE --tenant SLUG` converges the
database to it (`app.agents.apply`) and `vos agents work --config FILE` runs the worker from
the same file. `examples/agents.yaml` is the documented reference (every field, once).

`AgentsFile` extends the worker-facing `WorkforceConfig` with `agents`, `embedding`,
`worker` and `breakers` (when a run stops itself); each agent also carries its run policy
(`approval`, `max_steps`, `task_budget_usd`, `task_token_cap`: `AgentSpec.run_policy()`,
stored by apply in `agents.run_policy`) and may list the built-in tools (delegate,
search_knowledge, report: app/agents/tools.py) without declaring them. Every model forbids
unknown keys, so a typo is an error rather than a silent default. `load_agents_file(path)`
reports every problem at once, each naming the field path and its line in the file:

    agents[2].budget_usd (line 31): Input should be greater than or equal to 0

Example:
    >>> f = parse_agents_text('''
    ... deployments:
    ...   - {name: local, provider: ollama, base_url: "http://127.0.0.1:11434",
    ...      model: "llama3.1:8b", context_window: 8192}
    ... agents:
    ...   - {name: Orchestrator, orchestrator: true, budget_usd: 5}
    ...   - {name: CTO, manager: Orchestrator}
    ... ''')
    >>> [a.name for a in f.agents], f.chain_of(f.agents[1]), f.agents[1].budget_period
    (['Orchestrator', 'CTO'], ['local'], 'month')
    >>> parse_agents_text('deployments: []\\nagnets: []')
    Traceback (most recent call last):
    ...
    app.agents.spec.AgentsFileError: <text>: 2 problem(s)
      deployments (line 1): List should have at least 1 item after validation, not 0
      agnets (line 2): Extra inputs are not permitted
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.agents.config import KEYLESS_PROVIDERS, WorkforceConfig, check_env_name, price_provider
from app.agents.sanitize import PII_PATTERNS
from app.agents.tools import BUILTIN_TOOLS
from app.dispatch.policy import WorkerPolicy

# A file this big is not an agents file (and parsing it would only waste memory).
MAX_FILE_BYTES = 1_000_000
_DEFER = "defer_cross_checks"

Path_ = tuple[str | int, ...]


class AgentsFileError(ValueError):
    """Everything wrong with an agents file, each problem as (field path, line, message)."""

    def __init__(self, source: str, problems: list[tuple[str, int | None, str]]):
        self.source = source
        self.problems = problems
        lines = [f"  {path or '(file)'}{f' (line {line})' if line else ''}: {msg}"
                 for path, line, msg in problems]
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(lines))


class ApprovalPolicy(BaseModel):
    """What an agent may not do before an operator says yes: each delegation, and each call
    of the tools listed (the run pauses until the operator decides)."""

    model_config = ConfigDict(extra="forbid")

    delegate: bool = False
    tools: list[str] = Field(default_factory=list, description="tools the agent has")


class AgentSpec(BaseModel):
    """One agent of the org chart."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$",
                      description="unique in the file; the agent's identity across applies")
    role: str = Field("", max_length=200)
    manager: str | None = Field(None, description="another agent's name in this file")
    persona: str = Field("", max_length=20_000)
    orchestrator: bool = Field(False, description="unassigned work goes to this agent")
    chain: list[str] | None = Field(None, min_length=1,
                                    description="deployment names; default: default_chain")
    budget_usd: Decimal = Field(Decimal(0), ge=0, le=Decimal("99999999"), decimal_places=4)
    budget_period: Literal["total", "day", "week", "month"] = "month"
    tools: list[str] = Field(default_factory=list,
                             description="built-in tool names and names of declared tools")
    approval: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy())
    max_steps: int = Field(8, ge=1, le=50, description="model calls per task run, at most")
    task_budget_usd: Decimal | None = Field(None, ge=0, le=Decimal("99999999"),
                                            decimal_places=4,
                                            description="one task's spend cap (USD)")
    task_token_cap: int | None = Field(None, ge=1000, le=1_000_000_000,
                                       description="one task's token cap (input + output)")

    def run_policy(self) -> dict:
        """How a run of this agent is bounded and gated, as `agents.run_policy` stores it
        (JSON: the budget as a string, so no float ever rounds it).

        Example:
            >>> AgentSpec(name="A", task_budget_usd=Decimal("0.50")).run_policy()
            {'approval': {'delegate': False, 'tools': []}, 'max_steps': 8, \
'task_budget_usd': '0.5', 'task_token_cap': None}
        """
        budget = self.task_budget_usd
        return {
            "approval": {"delegate": self.approval.delegate, "tools": list(self.approval.tools)},
            "max_steps": self.max_steps,
            # normalize: 0.50 and 0.5 are one budget (a re-apply must see no change)
            "task_budget_usd": None if budget is None else f"{budget.normalize():f}",
            "task_token_cap": self.task_token_cap,
        }


class BreakerPolicy(BaseModel):
    """When a run stops itself: the circuit breakers (all counts, each 1..100)."""

    model_config = ConfigDict(extra="forbid")

    same_call_repeats: int = Field(3, ge=1, le=100, description=(
        "the same tool call with the same arguments this many times in one run pauses it"))
    failure_streak: int = Field(3, ge=1, le=100, description=(
        "this many failed tool calls in a row in one run pause it"))
    agent_failed_tasks: int = Field(3, ge=1, le=100, description=(
        "an agent whose tasks fail (or trip a breaker) this many times in a row is paused "
        "until an operator resumes it"))


class EmbeddingConfig(BaseModel):
    """Where passages and queries are embedded: Ollama's native `/api/embed` or any
    OpenAI-compatible `/v1/embeddings`."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["ollama", "openai"]
    base_url: HttpUrl
    model: str = Field(min_length=1, max_length=200)
    api_key_env: str | None = None

    _key_name = field_validator("api_key_env")(lambda v: check_env_name(v))


class AgentsFile(WorkforceConfig):
    """The whole agents file: `WorkforceConfig` (what the worker needs to call models) plus
    the agents, the embedding provider and the worker policy."""

    model_config = ConfigDict(extra="forbid")

    agents: list[AgentSpec] = Field(default_factory=list)
    embedding: EmbeddingConfig | None = None
    worker: WorkerPolicy = Field(default_factory=WorkerPolicy)
    breakers: BreakerPolicy = Field(default_factory=BreakerPolicy)

    # Same name as WorkforceConfig's validator, so it replaces it: the checks below cover it
    # and give each problem its own field path (hence its own line).
    @model_validator(mode="after")
    def _chain_names_exist(self, info: ValidationInfo) -> AgentsFile:
        if not self.default_chain:
            self.default_chain = [d.name for d in self.deployments]
        if info.context and info.context.get(_DEFER):
            return self
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{_format_path(p)}: {m}" for p, m in problems))
        return self

    def chain_of(self, agent: AgentSpec) -> list[str]:
        """The agent's model chain: its own, else the file's default_chain."""
        return list(agent.chain or self.default_chain)

    def problems(self) -> list[tuple[Path_, str]]:
        """Cross-field problems (references, uniqueness, cycles) as (field path, message)."""
        out: list[tuple[Path_, str]] = []
        deployments = [d.name for d in self.deployments]
        _duplicates(out, deployments, "deployments", "deployment")
        for i, d in enumerate(self.deployments):
            if d.api_key_env is None and d.provider not in KEYLESS_PROVIDERS:
                out.append((("deployments", i, "api_key_env"),
                            f"required for provider {d.provider}: the NAME of the environment "
                            "variable holding its key"))
        priced: dict[tuple[str, str], tuple[int, Any]] = {}
        for i, d in enumerate(self.deployments):
            if d.prices is None:
                continue
            key = (price_provider(d.provider), d.model)
            if key in priced and priced[key][1] != d.prices.resolved():
                out.append((("deployments", i, "prices"),
                            f"{key[0]}/{key[1]} is priced differently by deployment "
                            f"{self.deployments[priced[key][0]].name!r}; one model, one price"))
            priced.setdefault(key, (i, d.prices.resolved()))
        for j, name in enumerate(self.default_chain):
            if name not in deployments:
                out.append((("default_chain", j), f"{name!r} is not a deployment "
                            f"(declared: {', '.join(deployments)})"))
        for j, name in enumerate(self.pii):
            if name not in PII_PATTERNS:
                out.append((("pii", j), f"unknown pattern {name!r}; choose from "
                            f"{', '.join(sorted(PII_PATTERNS))}"))
        tools = [t.name for t in self.tools]
        _duplicates(out, tools, "tools", "tool")
        names = [a.name for a in self.agents]
        _duplicates(out, names, "agents", "agent")
        orchestrators = [i for i, a in enumerate(self.agents) if a.orchestrator]
        for i in orchestrators[1:]:
            out.append((("agents", i, "orchestrator"),
                        f"only one agent may be the orchestrator; "
                        f"{self.agents[orchestrators[0]].name!r} is already"))
        for i, agent in enumerate(self.agents):
            here = ("agents", i)
            if agent.manager is not None and agent.manager not in names:
                out.append((here + ("manager",), f"{agent.manager!r} is not an agent in this "
                            "file (a manager must be declared here too)"))
            for j, name in enumerate(agent.chain or []):
                if name not in deployments:
                    out.append((here + ("chain", j), f"{name!r} is not a deployment "
                                f"(declared: {', '.join(deployments)})"))
            for j, name in enumerate(agent.tools):
                if name in agent.tools[:j]:
                    out.append((here + ("tools", j), f"{name!r} is listed twice"))
                elif name not in tools and name not in BUILTIN_TOOLS:
                    out.append((here + ("tools", j), f"{name!r} is not a declared tool "
                                f"(declared: {', '.join(tools) or 'none'}; built in: "
                                f"{', '.join(BUILTIN_TOOLS)})"))
            if agent.approval.delegate and "delegate" not in agent.tools:
                out.append((here + ("approval", "delegate"), "the agent cannot delegate: "
                            "add delegate to its tools"))
            for j, name in enumerate(agent.approval.tools):
                if name == "delegate":
                    out.append((here + ("approval", "tools", j), "write approval.delegate: "
                                "true for delegations"))
                elif name not in agent.tools:
                    out.append((here + ("approval", "tools", j), f"{name!r} is not one of "
                                f"the agent's tools ({', '.join(agent.tools) or 'none'})"))
        out.extend(self._cycles())
        return out

    def _cycles(self) -> list[tuple[Path_, str]]:
        """One problem per management cycle, at the manager field of its first agent."""
        manager = {a.name: a.manager for a in self.agents}
        index = {a.name: i for i, a in enumerate(self.agents)}
        reported: set[str] = set()
        out = []
        for agent in self.agents:
            seen: list[str] = []
            name: str | None = agent.name
            while name is not None and name in manager and name not in seen:
                seen.append(name)
                name = manager[name]
            if name is None or name not in seen or name in reported:
                continue
            loop = seen[seen.index(name):]
            reported.update(loop)
            first = min(loop, key=index.__getitem__)
            out.append((("agents", index[first], "manager"),
                        "management cycle: " + " → ".join(loop[loop.index(first):]
                                                          + loop[:loop.index(first)] + [first])))
        return out

    def topological_agents(self) -> list[AgentSpec]:
        """Agents with every manager before its reports (the file must be valid)."""
        by_name = {a.name: a for a in self.agents}
        done: dict[str, AgentSpec] = {}

        def visit(agent: AgentSpec) -> None:
            if agent.name in done:
                return
            if agent.manager:
                visit(by_name[agent.manager])
            done[agent.name] = agent

        for agent in self.agents:
            visit(agent)
        return list(done.values())


def _duplicates(out: list, names: list[str], field: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            out.append(((field, i, "name"), f"{what} name {name!r} is declared twice"))
        seen.add(name)


def load_agents_file(path: str | Path) -> AgentsFile:
    """Read and validate an agents file (YAML or JSON); `AgentsFileError` lists every problem
    with its field path and line. An unreadable, huge or non-UTF-8 file is one problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AgentsFileError(str(path), [("", None, f"{size} bytes: an agents file is at "
                                               f"most {MAX_FILE_BYTES} bytes")])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentsFileError(str(path), [("", None, f"cannot read: {exc.strerror or exc}")]
                              ) from None
    except UnicodeDecodeError:
        raise AgentsFileError(str(path), [("", None, "not UTF-8 text")]) from None
    return parse_agents_text(text, str(path))


def parse_agents_text(text: str, source: str = "<text>") -> AgentsFile:
    """Validate agents-file text; see `load_agents_file`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise AgentsFileError(source, [("", line, f"not valid YAML: "
                                        f"{getattr(exc, 'problem', None) or exc}")]) from None
    lines: dict[Path_, int] = {}
    problems: list[tuple[str, int | None, str]] = []
    if node is not None:
        _index_lines(node, (), lines, problems)
    if not isinstance(data, dict):
        problems.append(("", 1, "the file must be a mapping (deployments:, agents:, …)"))
        raise AgentsFileError(source, problems)
    try:
        model = AgentsFile.model_validate(data, context={_DEFER: True})
    except ValidationError as exc:
        for err in exc.errors():
            loc = _data_path(err["loc"], data)
            # err["msg"] only: err["input"] may be a key pasted where a name belongs
            problems.append((_format_path(loc), _line(loc, lines), err["msg"]))
        raise AgentsFileError(source, problems) from None
    for loc, msg in model.problems():
        problems.append((_format_path(loc), _line(loc, lines), msg))
    if problems:
        raise AgentsFileError(source, problems)
    return model


def _index_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int],
                 problems: list[tuple[str, int | None, str]]) -> None:
    """Map every field path to its 1-based line; flag duplicate keys (YAML keeps the last
    one silently, which would hide a mistake)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append((_format_path(path + (key,)), key_node.start_mark.line + 1,
                                 "declared twice in the same mapping"))
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, problems)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, path + (i,), lines, problems)


def _data_path(loc: tuple, data: Any) -> Path_:
    """Pydantic's error location minus its internal tags (union members, validators): keep
    the items that walk the data, and a last field name (a missing or extra key)."""
    out: list[str | int] = []
    cursor: Any = data
    for item in loc:
        if isinstance(cursor, dict) and item in cursor:
            cursor = cursor[item]
            out.append(item)
        elif isinstance(cursor, list) and isinstance(item, int) and item < len(cursor):
            cursor = cursor[item]
            out.append(item)
        elif isinstance(cursor, dict) and isinstance(item, str) and item.isidentifier():
            out.append(item)  # a missing required field
            break
    return tuple(out)


def _line(path: Path_, lines: dict[Path_, int]) -> int | None:
    """The line of `path`, or of its nearest ancestor in the file (a missing field)."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _format_path(path: Path_) -> str:
    """('agents', 2, 'budget_usd') -> 'agents[2].budget_usd'."""
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out
