"""`vos dev`'s parts: demo data shaped like the seed, and agents that work tasks through the
fake providers, so the whole Command Center runs on one laptop in one command.

- `demo_router(fleet, pool)`: the router over the fake Anthropic/OpenAI/OpenRouter/Ollama
  servers, with the ledger's Postgres accounting (every attempt is a real ledger row).
- `demo_workforce(fleet, pool)`: the workforce (`app.agents.workforce.Workforce`) over that
  router; its `handle` is the dispatch worker's handler (persona, chain, budget, ledger), and
  the worker then moves the task Active → Review.
- `seed_demo(pool, tenant_id, runner)`: an orchestrator with a marketing lead, a creative and
  a CTO agent, a dozen tasks across the four columns (moved through the real status
  machine), and a few agent calls. Does nothing when the tenant already has agents.

Example:
    fleet = start_fake_fleet()
    seed_demo(pool, tenant_id, demo_workforce(fleet, pool).handle)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from app.agents.fakes import FakeProviderServer
from app.agents.ledger import PostgresAccounting, seed_prices
from app.agents.providers import build_provider
from app.agents.router import Deployment, RetryPolicy, Router
from app.agents.workforce import Workforce
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import Status

# Long enough (> 1,024 tokens) that providers cache it: the demo's cost tracker then shows
# real cache reads from the fakes, as a production handbook would.
HANDBOOK_RULES = (
    "Work only the task you are given and say what you did in two sentences.",
    "Flag anything a human must review before it ships, and why.",
    "Never paste secrets, keys or customer data into a reply; name where they live instead.",
    "Prefer the smallest change that solves the task; say what you left out.",
    "When a task is unclear, ask one precise question rather than guess.",
    "Cite the document or passage a claim comes from.",
    "Keep the brand voice: plain words, short sentences, no hype.",
    "Estimate cost before expensive work and stop when the budget says so.",
)
SYSTEM_PROMPT = "You are an agent of the Agent VOS workforce. Operating handbook: " + " ".join(
    f"Rule {n}.{i}: {rule}" for n in range(1, 9) for i, rule in enumerate(HANDBOOK_RULES, 1))

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


def demo_workforce(fleet: dict[str, FakeProviderServer], pool: ConnectionPool) -> Workforce:
    """The workforce handler (`app.agents.workforce`) over the fake fleet.

    Example:
        Worker(pool, "dev/agents", demo_workforce(fleet, pool).handle).run_once(tenant_id)
    """
    return Workforce(pool, demo_router(fleet, pool), system_prompt=SYSTEM_PROMPT)


def orchestrated(pool: ConnectionPool, handle: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Wrap a workforce handler so an unassigned task goes to the orchestrator (the agent
    without a manager) first, through the dispatch engine's assign step, instead of failing.

    Example:
        handler = orchestrated(pool, demo_workforce(fleet, pool).handle)
    """
    def handler(task: dict) -> dict:
        if task.get("assignee_id") is None:
            with tenant_transaction(pool, task["tenant_id"], actor="vos-dev") as conn:
                root = conn.execute("SELECT id FROM agents WHERE manager_id IS NULL "
                                    "ORDER BY created_at LIMIT 1").fetchone()
                if root is not None:
                    task = repo.assign_task(conn, task["id"], root["id"])
        return handle(task)
    return handler


def run_dev_worker(pool: ConnectionPool, tenant_id: uuid.UUID, handler: Callable[[dict], Any],
                   stop: threading.Event, pause_seconds: float = 1.0) -> None:
    """At most one task per `pause_seconds`: a task that keeps failing (no budget left, say)
    is retried at that pace instead of in a tight loop."""
    from app.dispatch.worker import Worker

    worker = Worker(pool, "vos-dev/agents", handler)
    while not stop.is_set():
        try:
            worker.run_once(tenant_id)
        except Exception as exc:  # keep the dev server up; the next round retries
            print(f"vos dev worker: {type(exc).__name__}: {exc}")
        stop.wait(pause_seconds)


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
