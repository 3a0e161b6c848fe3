"""One task worked to its end: the agent's multi-turn tool loop, its breakers and its pauses.

A run sends the task to the agent's model chain (through the router: budget reservation,
fallback, ledger row per attempt), executes the tool calls the model asks for, sends the
results back, and repeats until the model answers with text or calls `report`, up to the
agent's step cap. Every step is saved in `tasks.run_state`, so a run that stops (a provider
outage, a parked budget, a pause, delegated work) resumes where it was, never redoing a tool
call with side effects.

What a run can end in (the worker writes each outcome in the claim's transaction):
- a result (`report`, or a text reply): the task goes to Review;
- `delegate` calls: each creates a child task under the caller in the org chart; the task
  waits (Waiting) until every child is Approved, then resumes with the children's approved
  results in place of the delegate calls' results, and the agent writes the synthesis;
- a call that needs an operator's approval (the agent's `approval.delegate` or
  `approval.tools`): the task is Paused with a pending approval; the decision resumes it, the
  call executed (approved) or answered "denied" with the operator's comment;
- a circuit breaker: the same call with the same arguments `same_call_repeats` times, a
  streak of `failure_streak` failed tool calls, the task's cost or token cap, or the step cap:
  the task is Paused with the reason; an agent whose tasks end Failed or breaker-paused
  `agent_failed_tasks` times in a row is paused itself until an operator resumes it.

Budgets: each model call reserves its worst case against the agent's budget under the
agent's spend-row lock before anything is sent, so concurrent runs of one agent can never
spend past its budget; the task's own cost cap is checked after every call, so a run passes
its cap by at most one call.

Example:
    runner = AgentRunner(pool, router, system_prompt="You are an agent of the Agent VOS.")
    Worker(pool, "host/1", runner.handle, route_unassigned=True,
           on_settled=runner.on_settled).drain([tenant_id])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from app import jsonlog
from app.agents import tools as builtin
from app.agents.budgets import BudgetDenied
from app.agents.prefix import PromptParts, ToolCall, ToolResult, ToolSpec, Turn
from app.agents.retrieval import format_passages, retrieve
from app.agents.router import BudgetExceeded, CallContext, Router
from app.agents.sanitize import Sanitizer
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.worker import NotWorkable, TaskHeld, TaskParked

log = logging.getLogger("vos.run")

SUMMARY_CHARS = 500
MAX_SEARCHES = 3  # search_knowledge calls per task before the tool answers "limit reached"
SEARCH_TOKEN_BUDGET = 600
SETTLED = ("Approved", "Cancelled")  # a child in one of these no longer holds its parent


class TaskNotAssigned(NotWorkable, ValueError):
    """The task has no assignee, so there is no persona, chain or budget to work it with."""


@dataclass(frozen=True)
class Breakers:
    """When a run (or an agent) stops itself: see the module docstring."""

    same_call_repeats: int = 3
    failure_streak: int = 3
    agent_failed_tasks: int = 3


@dataclass(frozen=True)
class RunPolicy:
    """One agent's limits, from `agents.run_policy` (written by `vos agents apply`).

    Example:
        >>> RunPolicy.from_json({"max_steps": 4, "approval": {"delegate": True}}).max_steps
        4
    """

    max_steps: int = 8
    task_budget_usd: Decimal | None = None
    task_token_cap: int | None = None
    approve_delegate: bool = False
    approve_tools: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, data: Mapping | None) -> RunPolicy:
        data = data or {}
        approval = data.get("approval") or {}
        budget = data.get("task_budget_usd")
        return cls(max_steps=int(data.get("max_steps") or 8),
                   task_budget_usd=None if budget in (None, "") else Decimal(str(budget)),
                   task_token_cap=data.get("task_token_cap") or None,
                   approve_delegate=bool(approval.get("delegate", False)),
                   approve_tools=frozenset(approval.get("tools") or ()))

    def needs_approval(self, tool: str) -> bool:
        return (tool == "delegate" and self.approve_delegate) or tool in self.approve_tools


@dataclass
class RunState:
    """What a run has done so far; saved as JSON in `tasks.run_state` after every step."""

    turns: list[Turn] = field(default_factory=list)
    steps: int = 0
    cost_usd: Decimal = Decimal(0)
    tokens: int = 0
    attempts: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # call signature -> times asked
    error_streak: int = 0
    searches: int = 0
    children: list[str] = field(default_factory=list)  # delegated, not yet merged back
    pending: Turn | None = None  # an assistant turn whose calls are not all answered yet
    paused_for: str = ""  # "approval" | "breaker" | "" — what the current pause waits on
    blocked: str = ""  # the call id a same-call breaker stopped (answered "not executed")
    base: dict = field(default_factory=dict)  # steps/cost/tokens when last resumed (caps)
    passages: list[int] = field(default_factory=list)
    last: dict = field(default_factory=dict)  # the last call's deployment, model, tokens

    def to_json(self) -> dict:
        return {"v": 1, "turns": [_turn_json(t) for t in self.turns], "steps": self.steps,
                "cost_usd": str(self.cost_usd), "tokens": self.tokens,
                "attempts": self.attempts, "calls": self.calls,
                "error_streak": self.error_streak, "searches": self.searches,
                "children": self.children, "paused_for": self.paused_for,
                "blocked": self.blocked, "base": self.base,
                "pending": _turn_json(self.pending) if self.pending else None,
                "passages": self.passages, "last": self.last}

    @classmethod
    def from_json(cls, data: Mapping | None) -> RunState:
        if not data or data.get("v") != 1:
            return cls()
        return cls(turns=[_turn_from(t) for t in data.get("turns", [])],
                   steps=int(data.get("steps", 0)), cost_usd=Decimal(data.get("cost_usd", "0")),
                   tokens=int(data.get("tokens", 0)), attempts=int(data.get("attempts", 0)),
                   calls=dict(data.get("calls", {})),
                   error_streak=int(data.get("error_streak", 0)),
                   searches=int(data.get("searches", 0)),
                   children=list(data.get("children", [])),
                   pending=_turn_from(data["pending"]) if data.get("pending") else None,
                   paused_for=str(data.get("paused_for", "")),
                   blocked=str(data.get("blocked", "")), base=dict(data.get("base", {})),
                   passages=list(data.get("passages", [])), last=dict(data.get("last", {})))


def _turn_json(turn: Turn) -> dict:
    return {"text": turn.text,
            "calls": [asdict(c) for c in turn.tool_calls],
            "results": [asdict(r) for r in turn.results]}


def _turn_from(data: Mapping) -> Turn:
    return Turn(tool_calls=tuple(ToolCall(**c) for c in data.get("calls", [])),
                text=data.get("text", ""),
                results=tuple(ToolResult(**r) for r in data.get("results", [])))


def call_signature(call: ToolCall) -> str:
    """The same tool with the same arguments, whatever the call id or key order.

    Example:
        >>> call_signature(ToolCall("a", "search_knowledge", {"query": "x"}))
        'search_knowledge {"query": "x"}'
    """
    return f"{call.name} {json.dumps(call.arguments, sort_keys=True, default=str)}"


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Pause(Exception):  # noqa: N818 - control flow inside a run, never escapes it
    def __init__(self, reason: str, kind: str, approval: dict | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.approval = reason, kind, approval


@dataclass
class AgentRunner:
    """Works dispatched tasks with their agents: the worker's handler and settle hook.

    `tools` are shared tool definitions offered to every agent (part of the stable prefix);
    `declared` the agents file's tools by name (HTTP tools are executed from it), `environ`
    where HTTP tools' header values are looked up by name.
    """

    pool: Any
    router: Router
    system_prompt: str
    tools: tuple[ToolSpec, ...] = ()
    retrieval_token_budget: int = 1000
    declared: Mapping[str, Any] = field(default_factory=dict)
    breakers: Breakers = field(default_factory=Breakers)
    environ: Mapping[str, str] = field(default_factory=dict)
    sanitizer: Sanitizer | None = None
    http_caller: Callable[..., ToolResult] | None = None
    embedder: Any = None  # retrieval's embedder (the agents file's `embedding:`); None: default

    # -- the worker's two entry points -------------------------------------------------------

    def handle(self, task: dict) -> dict:
        """Work `task` (claimed by the worker) until a result, a hold or a failure."""
        if task.get("assignee_id") is None:
            raise TaskNotAssigned(f"task {task['id']} has no assignee; assign it to an agent")
        run = _Run(self, task)
        return run.work()

    def on_settled(self, conn: Any, task: dict, outcome: str) -> None:
        """The worker calls this in the transaction that writes a task's outcome:
        `complete` (to Review), `failed` (out of attempts), `breaker` (paused by a breaker).
        Keeps the agent's failure streak and pauses the agent at the limit."""
        agent_id = task.get("assignee_id")
        if outcome == "complete":
            conn.execute("UPDATE tasks SET run_state = NULL WHERE id = %s", [task["id"]])
        if agent_id is None or outcome not in ("complete", "failed", "breaker"):
            return
        if repo.note_task_outcome(conn, agent_id, outcome == "complete",
                                  self.breakers.agent_failed_tasks):
            jsonlog.emit(log, "agent_paused", level=logging.WARNING, agent=agent_id,
                         task=task["id"], failed_tasks=self.breakers.agent_failed_tasks)


class _Run:
    """One claim's worth of work on one task (state loaded, loop run, state saved)."""

    def __init__(self, runner: AgentRunner, task: dict):
        self.r, self.task = runner, task
        self.tenant_id, self.agent_id = task["tenant_id"], task["assignee_id"]
        self.actor = f"agent:{self.agent_id}"

    # -- set-up ------------------------------------------------------------------------------

    def _load(self) -> None:
        with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
            agent = conn.execute(
                """SELECT name, role, persona, model_preferences, tools, run_policy
                     FROM agents WHERE id = %s""", [self.agent_id]).fetchone()
            row = conn.execute("SELECT run_state FROM tasks WHERE id = %s",
                               [self.task["id"]]).fetchone()
            self.state = RunState.from_json(row and row["run_state"])
            self.reports = conn.execute(
                """WITH RECURSIVE below AS (
                       SELECT id, name, role, 1 AS depth FROM agents
                        WHERE manager_id = %s AND retired_at IS NULL
                       UNION ALL
                       SELECT a.id, a.name, a.role, b.depth + 1 FROM agents a
                         JOIN below b ON a.manager_id = b.id
                        WHERE a.retired_at IS NULL AND b.depth < 10)
                   SELECT name, role FROM below ORDER BY depth, name""",
                [self.agent_id]).fetchall()
            self.feedback = self._feedback(conn)
            if self.state.children:
                self.child_results = {str(c["id"]): c for c in
                                      repo.child_results(conn, self.task["id"])}
            # deterministic for the same documents, so a resumed run sees the same context
            self.passages = retrieve(conn, self.question, self.r.retrieval_token_budget,
                                     embedder=self.r.embedder)
        self.agent = agent
        self.policy = RunPolicy.from_json(agent["run_policy"])
        names = list(agent["tools"] or [])
        specs = {t.name: t for t in self.r.tools}
        specs.update({t.name: t for t in builtin.agent_tool_specs(names, self.r.declared)})
        self.tool_specs = tuple(sorted(specs.values(), key=lambda t: t.name))
        self.chain = (agent["model_preferences"] or {}).get("chain")

    @property
    def question(self) -> str:
        return f"{self.task['title']}\n\n{self.task.get('body') or ''}".strip()

    def _feedback(self, conn: Any) -> str:
        """The reviewer's comment when the latest review rejected the latest result."""
        events = conn.execute(
            """SELECT kind, payload FROM task_events
                WHERE task_id = %s AND kind IN ('work.result', 'review.rejected',
                                                'review.approved')
                ORDER BY id DESC LIMIT 2""", [self.task["id"]]).fetchall()
        if len(events) < 2 or events[0]["kind"] != "review.rejected" \
                or events[1]["kind"] != "work.result":
            return ""
        comment = (events[0]["payload"] or {}).get("comment") or ""
        previous = (events[1]["payload"] or {}).get("reply") or ""
        return (f"A reviewer rejected your previous answer. Their comment:\n{comment}\n\n"
                f"Your previous answer:\n{previous}\n\nWrite a new answer that addresses "
                "the comment.")

    def _persona(self) -> str:
        persona = self.agent["persona"] or f"You are {self.agent['name']}."
        if self.reports and any(t.name == "delegate" for t in self.tool_specs):
            listed = ", ".join(f"{r['name']} ({r['role']})" if r["role"] else r["name"]
                               for r in self.reports)
            persona += f"\n\nYour reports: {listed}. Delegate to them by name or role."
        return persona

    def _task_text(self) -> str:
        text = self.question
        if self.feedback:
            text += f"\n\n{self.feedback}"
        return text

    # -- the loop ----------------------------------------------------------------------------

    def work(self) -> dict:
        self._load()
        state = self.state
        if not state.turns and state.pending is None:
            state.passages = [p.id for p in self.passages]
        if state.paused_for == "breaker":  # an operator resumed it: a new allowance
            state.error_streak = 0
            state.base = {"steps": state.steps, "cost_usd": str(state.cost_usd),
                          "tokens": state.tokens}
        state.paused_for = ""
        if state.children:
            self._merge_children()
        try:
            if state.pending is not None:
                self._finish_pending()
            while True:
                reported = self._reported() if state.turns else None
                if reported is not None:
                    return self._result(reported)
                self._check_caps()
                completion = self._call()
                if not completion.tool_calls:
                    return self._result(completion.text)
                state.pending = Turn(tool_calls=self._unique_ids(completion.tool_calls),
                                     text=completion.text)
                self._save()
                self._finish_pending()
                if state.children:
                    self._save()
                    raise TaskHeld("delegated: waiting for the children", self._wait)
        except _Pause as pause:
            self.state.paused_for = pause.kind
            self._save()
            # bind now: `pause` is unbound once the except block ends
            raise TaskHeld(pause.reason, lambda conn, p=pause: self._hold_paused(conn, p),
                           outcome="breaker" if pause.kind == "breaker" else "held") from None

    def _unique_ids(self, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
        """Call ids unique in the run: approvals and breakers key on them, and Ollama's
        native wire has none (the provider numbers them call_0, call_1, … per reply)."""
        seen = {c.id for t in self.state.turns for c in t.tool_calls}
        out = []
        for i, call in enumerate(calls):
            if not call.id or call.id in seen:
                call = replace(call, id=f"call_{self.state.steps}_{i}")
            seen.add(call.id)
            out.append(call)
        return tuple(out)

    def _reported(self) -> str | None:
        """The `report` result of the last turn, if the model reported (and it was valid)."""
        last = self.state.turns[-1]
        for call, result in zip(last.tool_calls, last.results, strict=False):
            if call.name == "report" and not result.is_error:
                return str(call.arguments.get("result", ""))
        return None

    def _check_caps(self) -> None:
        state, policy = self.state, self.policy
        steps = state.steps - int(state.base.get("steps", 0))
        cost = state.cost_usd - Decimal(state.base.get("cost_usd", "0"))
        tokens = state.tokens - int(state.base.get("tokens", 0))
        if steps >= policy.max_steps:
            raise _Pause(f"circuit breaker: step cap reached ({policy.max_steps} model calls "
                         "without a result); raise max_steps or resume to continue", "breaker")
        if policy.task_budget_usd is not None and cost >= policy.task_budget_usd:
            raise _Pause(f"circuit breaker: task cost cap ${policy.task_budget_usd} reached "
                         f"(${cost} spent)", "breaker")
        if policy.task_token_cap is not None and tokens >= policy.task_token_cap:
            raise _Pause(f"circuit breaker: task token cap {policy.task_token_cap} reached "
                         f"({tokens} tokens)", "breaker")

    def _call(self):
        state = self.state
        parts = PromptParts(self.r.system_prompt, self._persona(), self.tool_specs,
                            format_passages(self.passages), self._task_text(),
                            tuple(state.turns))
        try:
            routed = self.r.router.complete(
                CallContext(self.tenant_id, self.agent_id, self.task["id"]), parts,
                chain=self.chain)
        except BudgetDenied as exc:
            self._save()
            denial = exc.denial
            raise TaskParked(f"BudgetExceeded: {exc}", denial.agent_id, denial.estimated_usd,
                             denial.budget_usd) from exc
        except BudgetExceeded as exc:
            self._save()
            raise TaskParked(f"BudgetExceeded: {exc}", self.agent_id) from exc
        except Exception:
            self._save()  # what the run did so far survives the retry
            raise
        usage = routed.attempts[-1].usage
        state.steps += 1
        state.attempts += len(routed.attempts)
        state.cost_usd += routed.cost_usd
        state.tokens += sum(a.usage.total_input + a.usage.output for a in routed.attempts)
        state.last = {"deployment": routed.deployment.name,
                      "model_served": routed.completion.model_served,
                      "tokens": {"uncached_input": usage.uncached_input,
                                 "cache_read": usage.cache_read,
                                 "cache_write": usage.cache_write, "output": usage.output}}
        return routed.completion

    def _finish_pending(self) -> None:
        """Answer every call of the pending assistant turn, in order; then it is a turn."""
        state = self.state
        turn = state.pending
        results = list(turn.results)
        for call in turn.tool_calls[len(results):]:
            results.append(self._answer(call))
            state.pending = Turn(turn.tool_calls, turn.text, tuple(results))
            if call.name == "report" and not results[-1].is_error:
                break
        calls = turn.tool_calls[:len(results)]
        state.turns.append(Turn(calls, turn.text, tuple(results)))
        state.pending = None
        self._save()

    def _answer(self, call: ToolCall) -> ToolResult:
        """Run one tool call (or decide it cannot run now: approval, breaker)."""
        state = self.state
        if call.id and call.id == state.blocked:  # resumed past a same-call breaker
            state.blocked = ""
            state.calls.pop(call_signature(call), None)
            return self._note(call, ToolResult(
                call.id, call.name, "not executed: the same call was asked too many times, "
                "a circuit breaker paused the task and an operator resumed it. Do something "
                "different.", True))
        names = {t.name for t in self.tool_specs}
        if call.name not in names:
            return self._failed_or_done(call, ToolResult(
                call.id, call.name, f"unknown tool {call.name!r}; available: "
                f"{', '.join(sorted(names)) or 'none'}", True))
        signature = call_signature(call)
        if self.policy.needs_approval(call.name):
            decision = self._decision(call)
            if decision is None:
                raise _Pause(f"waiting for approval: {call.name}({_short(call.arguments)})",
                             "approval", {"tool": call.name, "arguments": call.arguments,
                                          "call_id": call.id})
            if decision["status"] != "approved":
                comment = decision.get("comment") or "no comment"
                return self._note(call, ToolResult(
                    call.id, call.name, f"denied by the operator: {comment}", True))
        else:
            count = state.calls.get(signature, 0) + 1
            if count >= self.r.breakers.same_call_repeats:
                state.blocked = call.id
                raise _Pause(f"circuit breaker: {call.name}({_short(call.arguments)}) asked "
                             f"{count} times with the same arguments", "breaker")
            state.calls[signature] = count
        return self._failed_or_done(call, self._execute(call))

    def _failed_or_done(self, call: ToolCall, result: ToolResult) -> ToolResult:
        """Record an executed (or unknown) call's result; a streak of failures pauses."""
        state = self.state
        state.error_streak = state.error_streak + 1 if result.is_error else 0
        self._note(call, result)
        if state.error_streak >= self.r.breakers.failure_streak:
            state.pending = Turn(state.pending.tool_calls, state.pending.text,
                                 state.pending.results + (result,))
            raise _Pause(f"circuit breaker: {state.error_streak} tool calls failed in a row "
                         f"(last: {call.name}: {_short(result.content)})", "breaker")
        return result

    def _decision(self, call: ToolCall) -> dict | None:
        with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
            return conn.execute(
                """SELECT status, comment FROM tool_approvals
                    WHERE task_id = %s AND call_id = %s AND status <> 'pending'
                    ORDER BY requested_at DESC LIMIT 1""",
                [self.task["id"], call.id]).fetchone()

    def _execute(self, call: ToolCall) -> ToolResult:
        spec = next(t for t in self.tool_specs if t.name == call.name)
        problem = builtin.validate_arguments(spec.parameters, call.arguments)
        if problem:
            return ToolResult(call.id, call.name, f"bad arguments: {problem}", True)
        if call.name == "report":
            return ToolResult(call.id, call.name, "reported")
        if call.name == "delegate":
            return self._delegate(call)
        if call.name == "search_knowledge":
            return self._search(call)
        declared = self.r.declared.get(call.name)
        http = getattr(declared, "http", None)
        if http is None:
            return ToolResult(call.id, call.name, f"tool {call.name!r} has no executor on "
                              "this worker (declare it with kind: http)", True)
        caller = self.r.http_caller or builtin.call_http_tool
        return caller(declared, spec, call, self.r.sanitizer or self.r.router.sanitizer,
                      self.r.environ)

    def _delegate(self, call: ToolCall) -> ToolResult:
        args = call.arguments
        try:  # a refusal rolls the whole transaction back: nothing half-created
            with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
                target = builtin.resolve_delegate_target(conn, self.agent_id, args["to"])
                parent = repo.get_task(conn, self.task["id"])
                child = repo.create_child_task(
                    conn, parent, title=args["title"], body=args.get("brief", ""),
                    priority=args.get("priority", "P1"), assignee_id=target["id"])
        except ValueError as exc:
            return ToolResult(call.id, call.name, str(exc), True)
        self.state.children.append(str(child["id"]))
        return ToolResult(call.id, call.name,
                          f"delegated to {target['name']} as task {child['id']}: "
                          "its approved result will replace this message")

    def _search(self, call: ToolCall) -> ToolResult:
        state = self.state
        if state.searches >= MAX_SEARCHES:
            return ToolResult(call.id, call.name, f"search limit reached ({MAX_SEARCHES} per "
                              "task); answer with what you have", True)
        state.searches += 1
        with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
            found = retrieve(conn, str(call.arguments["query"]), SEARCH_TOKEN_BUDGET,
                             embedder=self.r.embedder)
        state.passages += [p.id for p in found if p.id not in state.passages]
        return ToolResult(call.id, call.name, format_passages(found) or "nothing found")

    def _note(self, call: ToolCall, result: ToolResult) -> ToolResult:
        """A `tool.called` event on the task (arguments and output shortened)."""
        with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
            repo.add_event(conn, self.tenant_id, self.task["id"], "tool.called", {
                "tool": call.name, "call_id": call.id,
                "arguments": _short(call.arguments, SUMMARY_CHARS),
                "ok": not result.is_error, "output": _short(result.content, SUMMARY_CHARS)})
        return result

    # -- children ----------------------------------------------------------------------------

    def _wait(self, conn: Any) -> None:
        task = repo.wait_for_children(conn, self.task["id"])
        if task["status"] == "Active":  # every child settled already: next claim merges
            conn.execute("UPDATE tasks SET claimed_by = NULL, lease_until = NULL "
                         "WHERE id = %s", [self.task["id"]])

    def _merge_children(self) -> None:
        """The parent resumed: each delegate call's result becomes its child's result."""
        results = self.child_results
        if any(c not in results or results[c]["status"] not in SETTLED
               for c in self.state.children):
            return  # not all done (a resume by hand): keep waiting for the rest
        merged = []
        for turn in self.state.turns:
            new = []
            for call, result in zip(turn.tool_calls, turn.results, strict=False):
                child_id = _child_of(result) if call.name == "delegate" else None
                if child_id in results:
                    child = results[child_id]
                    result = ToolResult(result.call_id, result.name, (
                        f"Result of {child['assignee_name']} for {child['title']!r} "
                        f"(approved):\n{child['reply'] or ''}"
                        if child["status"] == "Approved" else
                        f"{child['assignee_name']}'s task {child['title']!r} was cancelled by "
                        "an operator: no result"), child["status"] != "Approved")
                new.append(result)
            merged.append(Turn(turn.tool_calls, turn.text, tuple(new)))
        self.state.turns = merged
        self.state.children = []
        self._save()

    # -- outcomes ----------------------------------------------------------------------------

    def _hold_paused(self, conn: Any, pause: _Pause) -> None:
        if pause.approval:
            task = repo.get_task(conn, self.task["id"])
            repo.request_approval(conn, task, agent_id=self.agent_id, **pause.approval)
        else:
            repo.pause_task(conn, self.task["id"], pause.reason)

    def _result(self, reply: str) -> dict:
        state = self.state
        return {"reply": reply, **state.last, "attempts": state.attempts,
                "cost_usd": str(state.cost_usd), "passages": state.passages,
                "steps": state.steps,
                "tool_calls": sum(len(t.tool_calls) for t in state.turns)}

    def _save(self) -> None:
        """Write the run state, only while the claim is still ours."""
        started = time.monotonic()
        with tenant_transaction(self.r.pool, self.tenant_id, actor=self.actor) as conn:
            conn.execute("UPDATE tasks SET run_state = %s WHERE id = %s AND status = 'Active'",
                         [json.dumps(self.state.to_json()), self.task["id"]])
        log.debug("run state saved in %.1f ms", (time.monotonic() - started) * 1000)


def _child_of(result: ToolResult) -> str | None:
    """The child task id in a delegate call's result ("… as task <uuid>: …")."""
    marker = " as task "
    if result.is_error or marker not in result.content:
        return None
    return result.content.split(marker, 1)[1].split(":", 1)[0].strip()


def breakers_of(config: Any) -> Breakers:
    """The agents file's `breakers:` block as Breakers (defaults when absent).

    Example:
        >>> breakers_of(object()).same_call_repeats
        3
    """
    block = getattr(config, "breakers", None)
    if block is None:
        return Breakers()
    data = block.model_dump() if hasattr(block, "model_dump") else dict(block)
    return Breakers(**{k: int(v) for k, v in data.items() if k in Breakers.__annotations__})
