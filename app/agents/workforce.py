"""An agent working a dispatched task: the handler the dispatch worker runs.

For a claimed task it loads the assignee's persona and model preferences, retrieves the top
passages for the task under the token budget, assembles the prompt behind the stable cached
prefix, and routes it through the agent's chain. Budget, ledger and sanitizing happen inside
the router and its accounting. A failure (every provider down, say) raises, so the worker
counts the attempt and backs off (app/dispatch/worker.py); a budget denial raises TaskParked,
so the task waits, parked, for the budget to change or its period to roll over instead of
being retried; a task without an agent raises NotWorkable (back to Draft). Run the worker
with `route_unassigned=True` so unassigned tasks reach the orchestrator first.

Example:
    workforce = Workforce(pool, router, system_prompt=SYSTEM, tools=TOOLS)
    Worker(pool, worker_id="host-a/1", handler=workforce.handle,
           route_unassigned=True).run_once(tenant_id)
"""

from dataclasses import dataclass
from typing import Any

from app.agents.budgets import BudgetDenied
from app.agents.prefix import PromptParts, ToolSpec
from app.agents.retrieval import format_passages, retrieve
from app.agents.router import BudgetExceeded, CallContext, Router
from app.db import tenant_transaction
from app.dispatch.worker import NotWorkable, TaskParked


class TaskNotAssigned(NotWorkable, ValueError):
    """The task has no assignee, so there is no persona, chain or budget to work it with."""


@dataclass
class Workforce:
    """Turns a dispatched task into one routed, budgeted, ledgered model call."""

    pool: Any
    router: Router
    system_prompt: str
    tools: tuple[ToolSpec, ...] = ()
    retrieval_token_budget: int = 1000

    def handle(self, task: dict) -> dict:
        """Dispatch worker handler: returns the result recorded on the task."""
        if task.get("assignee_id") is None:
            raise TaskNotAssigned(f"task {task['id']} has no assignee; assign it to an agent")
        tenant_id, agent_id = task["tenant_id"], task["assignee_id"]
        question = f"{task['title']}\n\n{task.get('body') or ''}".strip()
        with tenant_transaction(self.pool, tenant_id, actor="agents") as conn:
            agent = conn.execute(
                "SELECT name, persona, model_preferences FROM agents WHERE id = %s",
                [agent_id]).fetchone()
            passages = retrieve(conn, question, self.retrieval_token_budget)
        parts = PromptParts(self.system_prompt, agent["persona"] or f"You are {agent['name']}.",
                            self.tools, format_passages(passages), question)
        chain = (agent["model_preferences"] or {}).get("chain")
        try:
            result = self.router.complete(CallContext(tenant_id, agent_id, task["id"]), parts,
                                          chain=chain)
        except BudgetDenied as exc:
            denial = exc.denial
            raise TaskParked(f"BudgetExceeded: {exc}", denial.agent_id, denial.estimated_usd,
                             denial.budget_usd) from exc
        except BudgetExceeded as exc:  # an accounting without figures: park on the assignee
            raise TaskParked(f"BudgetExceeded: {exc}", agent_id) from exc
        served = result.attempts[-1]
        return {
            "reply": result.completion.text,
            "deployment": result.deployment.name,
            "model_served": result.completion.model_served,
            "attempts": len(result.attempts),
            "cost_usd": str(result.cost_usd),
            "passages": [p.id for p in passages],
            "tokens": {"uncached_input": served.usage.uncached_input,
                       "cache_read": served.usage.cache_read,
                       "cache_write": served.usage.cache_write, "output": served.usage.output},
        }
