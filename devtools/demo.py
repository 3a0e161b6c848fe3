"""`vos dev`'s parts: the demo workforce built from the reference agents file
(`examples/agents.yaml`), and agents that work tasks through the fake providers, so the whole
Command Center runs on one laptop in one command.

- `demo_spec(fleet)`: the agents file with every deployment's base_url pointed at the local
  fake of its provider kind (the fakes accept one made-up key, given under every api_key_env).
- `demo_router(fleet, pool)`: the router the worker builds from that file
  (`app.agents.config.build_router`), with the ledger's Postgres accounting (every attempt is
  a real ledger row).
- `demo_workforce(fleet, pool)`: the workforce (`app.agents.workforce.Workforce`) over that
  router; its `handle` is the dispatch worker's handler (persona, chain, budget, ledger), and
  the worker then moves the task Active → Review.
- `seed_demo(pool, tenant_id, runner)`: applies the agents file to the tenant through
  `vos agents apply`'s code (an orchestrator with a marketing lead, a creative and a CTO), then,
  if the tenant has no tasks yet, a dozen tasks across the four columns (moved through the
  real status machine) and a few agent calls.

Example:
    fleet = start_fake_fleet()
    seed_demo(pool, tenant_id, demo_workforce(fleet, pool).handle)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from app.agents.apply import apply_agents_file
from app.agents.config import build_router
from app.agents.ledger import PostgresAccounting
from app.agents.router import Router
from app.agents.run import breakers_of
from app.agents.spec import AgentsFile, load_agents_file
from app.agents.workforce import Workforce
from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import Status
from devtools.fakes import FakeProviderServer, demo_responder

DEMO_AGENTS_FILE = Path(__file__).resolve().parents[1] / "examples" / "agents.yaml"

# The demo appends its operating handbook to the file's system prompt: long enough
# (> 1,024 tokens) that providers cache it, so the demo's cost tracker shows real cache reads
# from the fakes, as a production handbook would.
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
HANDBOOK = "Operating handbook: " + " ".join(
    f"Rule {n}.{i}: {rule}" for n in range(1, 9) for i, rule in enumerate(HANDBOOK_RULES, 1))

# Which fake serves which provider kind, and which of its URLs that kind wants.
_FAKE_FOR_KIND: dict[str, tuple[str, str]] = {
    "anthropic": ("anthropic", "base_url"),
    "openai": ("openai", "base_url"),
    "openrouter": ("openrouter", "base_url"),
    "ollama": ("ollama", "base_url"),
    "ollama-openai": ("ollama", "openai_base_url"),
}


def demo_spec(fleet: dict[str, FakeProviderServer],
              path: Path = DEMO_AGENTS_FILE) -> AgentsFile:
    """The agents file with each deployment (and the embedding) aimed at its local fake.

    Example:
        demo_spec(start_fake_fleet()).deployments[0].base_url   # http://127.0.0.1:…/
    """
    spec = load_agents_file(path)
    deployments = []
    for d in spec.deployments:
        fake, attr = _FAKE_FOR_KIND[d.provider]
        deployments.append(d.model_copy(update={"base_url": getattr(fleet[fake], attr)}))
    update: dict[str, Any] = {"deployments": deployments}
    if spec.embedding is not None:
        fake, attr = _FAKE_FOR_KIND[spec.embedding.provider]
        update["embedding"] = spec.embedding.model_copy(
            update={"base_url": getattr(fleet[fake], attr)})
    # model_copy skips validation: the URLs are the fakes' own, and the rest was validated
    return spec.model_copy(update=update)


def demo_router(fleet: dict[str, FakeProviderServer], pool: ConnectionPool,
                api_key: str = "fake-key") -> Router:
    """The router `vos agents work` would build from the demo file, over the fake fleet
    (`devtools.fakes.start_fake_fleet`), ledger in Postgres."""
    spec = demo_spec(fleet)
    environ = {d.api_key_env: api_key for d in spec.deployments if d.api_key_env}
    return build_router(spec, PostgresAccounting(pool), environ)


def demo_workforce(fleet: dict[str, FakeProviderServer], pool: ConnectionPool) -> Workforce:
    """The workforce handler (`app.agents.workforce`) over the fake fleet.

    Example:
        Worker(pool, "dev/agents", demo_workforce(fleet, pool).handle).run_once(tenant_id)
    """
    spec = demo_spec(fleet)
    for server in fleet.values():  # delegate, report and synthesise as a real model would
        server.respond_with(demo_responder)
    return Workforce(pool, demo_router(fleet, pool), f"{spec.system_prompt} {HANDBOOK}",
                     (), spec.retrieval_token_budget,
                     declared={t.name: t for t in spec.tools}, breakers=breakers_of(spec))


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


def orchestrated(pool: ConnectionPool, handle: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Wrap a workforce handler so an unassigned task goes to the orchestrator (the file's
    `orchestrator: true` agent, else the agent without a manager) first, through the
    dispatch engine's assign step, instead of failing.

    Example:
        handler = orchestrated(pool, demo_workforce(fleet, pool).handle)
    """
    def handler(task: dict) -> dict:
        if task.get("assignee_id") is None:
            with tenant_transaction(pool, task["tenant_id"], actor="vos-dev") as conn:
                root = conn.execute(
                    "SELECT id FROM agents WHERE retired_at IS NULL "
                    "AND (is_orchestrator OR manager_id IS NULL) "
                    "ORDER BY is_orchestrator DESC, created_at LIMIT 1").fetchone()
                if root is not None:
                    task = repo.assign_task(conn, task["id"], root["id"])
        return handle(task)
    return handler


def run_dev_worker(pool: ConnectionPool, tenant_id: uuid.UUID, handler: Callable[[dict], Any],
                   stop: threading.Event, pause_seconds: float = 1.0,
                   on_settled: Callable | None = None) -> None:
    """At most one task per `pause_seconds`: a task that keeps failing (no budget left, say)
    is retried at that pace instead of in a tight loop."""
    from app.dispatch.worker import Worker

    worker = Worker(pool, "vos-dev/agents", handler, on_settled=on_settled)
    while not stop.is_set():
        try:
            worker.run_once(tenant_id)
        except Exception as exc:  # keep the dev server up; the next round retries
            print(f"vos dev worker: {type(exc).__name__}: {exc}")
        stop.wait(pause_seconds)


DEMO_TREE = ("Plan the spring campaign",
             "Positioning, the launch assets and the technical readiness, in one plan.")


def seed_demo(pool: ConnectionPool, tenant_id: uuid.UUID, work: Callable[[dict], Any],
              say: Callable[[str], None] = print, agents_file: Path = DEMO_AGENTS_FILE,
              on_settled: Callable | None = None) -> bool:
    """Apply the demo agents file (every run: it is idempotent), then fill a tenant that has
    no tasks yet with the demo tasks; False (and no task written) if it has tasks already.

    Order matters because a worker takes the most urgent Active task: the tasks that stay
    Active are claimed first by a long-lease "in progress" claim (shown as working), then the
    tasks to work are queued and drained by `work`, then the rest is placed. Last, a
    delegation tree: the Orchestrator's task is worked through the fakes (it delegates to its
    reports), every child but one is approved, so the parent waits in the board with one
    result in the inbox.
    """
    from app.dispatch.worker import Worker, claim_next

    say(f"demo agents: applying {agents_file.name}")
    result = apply_agents_file(pool, tenant_id, load_agents_file(agents_file), actor="vos-dev")
    for line in result.report().splitlines():
        say(f"  {line}")
    with tenant_transaction(pool, tenant_id, actor="vos-dev") as conn:
        if conn.execute("SELECT 1 FROM tasks LIMIT 1").fetchone():
            return False
        ids = {r["name"]: r["id"] for r in conn.execute(
            "SELECT id, name FROM agents WHERE retired_at IS NULL").fetchall()}
    say(f"demo data: {len(DEMO_TASKS)} tasks")
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
            worker = Worker(pool, "vos-dev/agents", work, on_settled=on_settled)
            for _ in range(10):  # bounded: 3 tasks, a failed attempt is retried
                if not worker.run_once(tenant_id):
                    break
    seed_tree(pool, tenant_id, work, ids["Orchestrator"], say, on_settled)
    return True


def seed_tree(pool: ConnectionPool, tenant_id: uuid.UUID, work: Callable[[dict], Any],
              orchestrator_id: uuid.UUID, say: Callable[[str], None] = print,
              on_settled: Callable | None = None) -> list[dict]:
    """The Orchestrator's task delegated through the fakes, children worked, all but the
    last approved; returns the children (oldest first)."""
    from app.dispatch.worker import Worker

    say(f"demo data: a delegation tree ({DEMO_TREE[0]!r} through the fakes' tool calls)")
    with tenant_transaction(pool, tenant_id, actor="vos-dev") as conn:
        parent = repo.create_task(conn, tenant_id, title=DEMO_TREE[0], body=DEMO_TREE[1],
                                  priority="P0", assignee_id=orchestrator_id,
                                  status=Status.ACTIVE)
    worker = Worker(pool, "vos-dev/agents", work, on_settled=on_settled)
    for _ in range(12):  # bounded: the parent, then each child once
        if not worker.run_once(tenant_id):
            break
    with tenant_transaction(pool, tenant_id, actor="vos-dev") as conn:
        children = repo.children_of(conn, parent["id"])
        for child in children[:-1]:
            if child["status"] == Status.REVIEW:
                repo.review_task(conn, child["id"], True, "Good, ship it.")
    return children
