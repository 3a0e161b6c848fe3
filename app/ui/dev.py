"""`vos dev`'s parts: demo data shaped like the seed, and agents that work tasks through the
fake providers, so the whole Command Center runs on one laptop in one command.

- `demo_router(fleet, pool)`: the router over the fake Anthropic/OpenAI/OpenRouter/Ollama
  servers, with the ledger's Postgres accounting (every attempt is a real ledger row).
- `AgentRunner`: a dispatch-worker handler. It sends the task to its assignee's model chain
  and returns the reply; the worker then moves the task Active → Review.
- `seed_demo(pool, tenant_id, runner)`: an orchestrator with a marketing lead, a creative and
  a CTO agent, a dozen tasks across the four columns (moved through the real status
  machine), and a few agent calls. Does nothing when the tenant already has agents.

Example:
    fleet = start_fake_fleet()
    runner = AgentRunner(pool, demo_router(fleet, pool))
    seed_demo(pool, tenant_id, runner)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from app.agents.fakes import FakeProviderServer
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.prefix import PromptParts
from app.agents.providers import build_provider
from app.agents.router import CallContext, Deployment, RetryPolicy, Router
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import Status

SYSTEM_PROMPT = (
    "You are an agent of the Agent VOS workforce. Work the task you are given, state what "
    "you did in two sentences, and flag anything a human must review before it ships. "
) * 4

# (name, role, manager, model chain, budget USD, persona)
DEMO_AGENTS: tuple[tuple[str, str, str | None, list[str], int, str], ...] = (
    ("Orchestrator", "Orchestrator", None, ["sonnet", "gpt"], 50,
     "You split goals into tasks and route them to the right lead."),
    ("Marketing Lead", "Lead · marketing", "Orchestrator", ["gpt", "openrouter"], 20,
     "You own launch messaging and the content calendar."),
    ("Creative", "Specialist · copy and visuals", "Marketing Lead", ["openrouter", "ollama"], 10,
     "You write copy and brief visuals in the brand voice."),
    ("CTO", "Lead · engineering", "Orchestrator", ["sonnet", "ollama"], 30,
     "You own the platform: hardening, deploys, the mesh and the database."),
)

# (title, priority, assignee, where it ends up). "work" = moved to Active and worked by an
# agent through the fake providers, which lands it in Review with a ledger row.
DEMO_TASKS: tuple[tuple[str, str, str, str], ...] = (
    ("Plan the Q3 launch", "P0", "Orchestrator", "Approved"),
    ("Write the launch blog post", "P1", "Creative", "work"),
    ("Draft three hero headlines", "P2", "Creative", "Draft"),
    ("Rotate the door's webhook secrets", "P0", "CTO", "Active"),
    ("Publish the content calendar", "P1", "Marketing Lead", "Approved"),
    ("Audit SSH settings on the VPS", "P0", "CTO", "work"),
    ("Brief the illustrator on the landing page", "P2", "Creative", "Active"),
    ("Weekly budget review", "P1", "Orchestrator", "work"),
    ("Set up the restore drill reminder", "P1", "CTO", "Draft"),
    ("Newsletter for existing customers", "P2", "Marketing Lead", "Draft"),
    ("Pick the launch date", "P0", "Marketing Lead", "Active"),
    ("Tighten the landing page copy", "P1", "Creative", "Approved"),
)

PATH_TO: dict[str, tuple[Status, ...]] = {
    "Draft": (),
    "Active": (Status.ACTIVE,),
    "Review": (Status.ACTIVE, Status.REVIEW),
    "Approved": (Status.ACTIVE, Status.REVIEW, Status.APPROVED),
}


def demo_router(fleet: dict[str, FakeProviderServer], pool: ConnectionPool,
                api_key: str = "fake-key") -> Router:
    """A router over the fake fleet (`app.agents.fakes.start_fake_fleet`), ledger in Postgres."""
    def provider(name: str):
        return build_provider(name, fleet[name].base_url, api_key)

    deployments = [
        Deployment("sonnet", provider("anthropic"), "claude-sonnet-4-6", 200_000, 200),
        Deployment("gpt", provider("openai"), "gpt-4.1", 1_000_000, 200),
        Deployment("openrouter", provider("openrouter"), "openai/gpt-4.1-mini", 1_000_000, 200),
        Deployment("ollama", provider("ollama"), "llama3.1:8b", 128_000, 200),
    ]
    return Router(deployments, PostgresAccounting(pool),
                  policy=RetryPolicy(max_attempts=2, base_delay=0.05))


class AgentRunner:
    """Works a task with its assignee's model chain (a `Worker` handler).

    Example:
        Worker(pool, "dev/agents", AgentRunner(pool, router)).run_once(tenant_id)
    """

    def __init__(self, pool: ConnectionPool, router: Router):
        self.pool = pool
        self.router = router

    def __call__(self, task: dict) -> dict:
        tenant_id = task["tenant_id"]
        agent = self._agent_for(tenant_id, task["assignee_id"])
        parts = PromptParts(system=SYSTEM_PROMPT, persona=agent["persona"],
                            task=f"{task['title']}\n\n{task['body']}".strip())
        chain = (agent["model_preferences"] or {}).get("chain")
        routed = self.router.complete(CallContext(tenant_id, agent["id"], task["id"]), parts,
                                      chain=chain)
        return {"agent": agent["name"], "deployment": routed.deployment.name,
                "summary": routed.completion.text[:300], "cost_usd": str(routed.cost_usd)}

    def _agent_for(self, tenant_id: uuid.UUID, assignee_id: uuid.UUID | None) -> dict:
        """The assignee, or the orchestrator (the agent without a manager) if none."""
        with tenant_transaction(self.pool, tenant_id, actor="agents") as conn:
            if assignee_id is not None:
                return repo.get_agent(conn, assignee_id)
            row = conn.execute(
                "SELECT id FROM agents WHERE manager_id IS NULL ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                raise LookupError("no agent to work this task; add agents first")
            return repo.get_agent(conn, row["id"])


def seed_demo(pool: ConnectionPool, tenant_id: uuid.UUID, work: Callable[[dict], Any],
              say: Callable[[str], None] = print) -> bool:
    """Fill an empty tenant with the demo workforce; False (and nothing written) if it has
    agents already.

    Order matters because a worker takes the most urgent Active task: the tasks that stay
    Active are claimed first by a long-lease "in progress" claim (shown as working), then the
    tasks to work are queued and drained by `work`, then the rest is placed.
    """
    from app.dispatch.worker import Worker, claim_next

    with tenant_transaction(pool, tenant_id, actor="vos-dev") as conn:
        if conn.execute("SELECT 1 FROM agents LIMIT 1").fetchone():
            return False
        say("demo data: price list, 4 agents, 12 tasks")
        seed_prices(conn, tenant_id)
        ids: dict[str, uuid.UUID] = {}
        for name, role, manager, chain, budget, persona in DEMO_AGENTS:
            ids[name] = repo.create_agent(
                conn, tenant_id, name=name, role=role, persona=persona,
                manager_id=ids.get(manager) if manager else None,
                model_preferences={"chain": chain}, budget_usd=budget)["id"]
    for phase in ("Active", "work", "rest"):
        with tenant_transaction(pool, tenant_id, actor="vos-dev") as conn:
            for title, priority, assignee, end in DEMO_TASKS:
                if (end if end in ("Active", "work") else "rest") != phase:
                    continue
                task = repo.create_task(conn, tenant_id, title=title, priority=priority,
                                        assignee_id=ids[assignee])
                for step in PATH_TO["Active" if end == "work" else end]:
                    repo.move_task(conn, task["id"], step)
        if phase == "Active":
            while claim_next(pool, tenant_id, "demo/in-progress", lease_seconds=7 * 86400):
                pass
        elif phase == "work":
            say("demo data: agents work 3 tasks through the fake providers (ledger rows)")
            worker = Worker(pool, "vos-dev/agents", work)
            for _ in range(10):  # bounded: 3 tasks, a failed attempt is retried
                if not worker.run_once(tenant_id):
                    break
    return True
