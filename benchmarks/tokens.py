"""Token benchmark: naive bulk context vs caching + surgical retrieval, on a fixed workload.

Workload (seeded, identical every run): 12 documents of 30 sections each (~3K tokens per
document), every section stating one fact about one service; 3 agents with their own
persona behind a shared system prompt and tool set (~1.6K stable tokens); 48 tasks, each
needing two facts from two different documents.

- naive: each call carries the stable prompt and the *whole* documents holding the facts,
  with no cache breakpoints and the documents ahead of the instructions (the seed's bulk
  context), so no prefix cache can apply;
- optimised: the stable prefix first (Anthropic `cache_control`, OpenAI automatic caching),
  then the top passages from Postgres full-text search under a token budget, then the task.

Both modes run through the real `anthropic`/`openai` SDKs against the fake providers, which
count tokens and cache hits from what they receive. Printed per provider and mode: average
billable-equivalent input tokens per call (cache reads and writes weighted by their price
relative to uncached input), raw input tokens, cost per call, and recall (share of needed
facts that were in the context sent).

Run:
    .venv/bin/python benchmarks/tokens.py                 # starts a throwaway Postgres
    DATABASE_URL=postgresql://owner@host/db .venv/bin/python benchmarks/tokens.py
Options: --budget TOKENS (retrieval token budget per call, default 600).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.agents.ledger import seed_prices  # noqa: E402
from app.agents.prefix import PromptParts, ToolSpec  # noqa: E402
from app.agents.prices import (  # noqa: E402
    DEFAULT_PRICES,
    PriceBook,
    Usage,
    billable_equivalent_input,
    cost_usd,
    usage_from_anthropic,
    usage_from_openai,
)
from app.agents.providers import build_provider  # noqa: E402
from app.agents.retrieval import add_document, format_passages, retrieve  # noqa: E402
from app.agents.router import (  # noqa: E402
    CallContext,
    Deployment,
    RecordingAccounting,
    Router,
)
from app.db import migrate, open_pool, tenant_transaction  # noqa: E402
from app.db.embedded import EmbeddedPostgres  # noqa: E402
from devtools.fakes import start_fake_fleet  # noqa: E402

SEED = 20261124
SERVICES = [
    "kestrel", "orchid", "basalt", "juniper", "quasar", "marlin", "tundra", "saffron",
    "cobalt", "heron", "lantern", "mistral", "nimbus", "obsidian", "pioneer", "quartz",
    "raven", "sequoia", "topaz", "umber", "vortex", "willow", "yarrow", "zephyr",
    "acacia", "bramble", "cypress", "dahlia", "ember", "falcon", "garnet", "hazel",
    "indigo", "jasper", "kelvin", "lotus", "magnolia", "nectar", "onyx", "pebble",
    "quill", "rosewood", "sable", "thistle", "ultra", "verbena", "wren", "xenon",
    "yucca", "zinnia", "alder", "birch", "cedar", "dune", "elm", "fern", "glacier",
    "harbor", "iris", "jade", "koi", "lilac", "maple", "nova", "oak", "pine",
    "quince", "reed", "spruce", "tulip", "umbra", "violet",
]
ATTRIBUTES = {
    "port": lambda r: f"listens on port {r.randint(2000, 9999)}",
    "owner": lambda r: f"has owner {r.choice(['Priya', 'Tomas', 'Aiko', 'Femi', 'Lena'])} "
                       f"on the {r.choice(['platform', 'data', 'edge', 'billing'])} team",
    "backup window": lambda r: f"has its backup window at {r.randint(0, 23):02d}:{r.choice(['00', '30'])} UTC",  # noqa: E501
    "rotation": lambda r: f"rotates its credentials every {r.choice([30, 45, 60, 90])} days",
    "region": lambda r: f"runs in region {r.choice(['eu-west', 'eu-central', 'us-east'])}-"
                        f"{r.randint(1, 3)}",
}
FILLER = [
    "Changes to this service go through the normal review and need one approval.",
    "The dashboards for it live in the shared observability folder.",
    "Alerts page the on-call engineer during working hours and the operator at night.",
    "Configuration is rendered from templates and checked in before every deploy.",
    "Incidents are written up within two working days and linked from the tracker.",
    "Capacity is reviewed monthly against the request and error budgets.",
    "Logs are kept for thirty days and shipped to the central store over the mesh.",
    "Secrets are referenced by name only and resolved on the host at start-up.",
    "Dependencies are pinned and upgraded in a weekly maintenance window.",
    "The runbook entry lists the health check, the restart command and the rollback.",
]


@dataclass(frozen=True)
class Fact:
    service: str
    attribute: str
    sentence: str
    document: int


@dataclass(frozen=True)
class Task:
    text: str
    needs: tuple[Fact, Fact]


def build_workload(rng: random.Random) -> tuple[list[tuple[str, str]], list[Task]]:
    """12 documents x 30 sections (one fact each) and 48 two-fact tasks."""
    pairs = [(s, a) for s in SERVICES for a in ATTRIBUTES][:360]
    rng.shuffle(pairs)
    facts, documents = [], []
    for d in range(12):
        sections = []
        for service, attribute in pairs[d * 30:(d + 1) * 30]:
            sentence = f"The {service} service {ATTRIBUTES[attribute](rng)}."
            facts.append(Fact(service, attribute, sentence, d))
            other = rng.choice(SERVICES)
            filler = " ".join(rng.sample(FILLER, 6))
            sections.append(f"{service.title()} notes. {sentence} {filler} "
                            f"This entry was cross-checked against the {other} notes.")
        documents.append((f"Service handbook volume {d + 1}", "\n\n".join(sections)))
    tasks = []
    for _ in range(48):
        first, second = rng.sample(facts, 2)
        while second.document == first.document:
            second = rng.choice(facts)
        tasks.append(Task(
            f"Before tonight's rollout, confirm the {first.attribute} of the {first.service} "
            f"service and the {second.attribute} of the {second.service} service, then say "
            "whether either blocks the change.", (first, second)))
    return documents, tasks


def stable_prompt(rng: random.Random) -> tuple[str, tuple[ToolSpec, ...], list[str]]:
    """The shared system prompt, tools and three personas (fixed text)."""
    rules = [f"Rule {i + 1}: {rng.choice(FILLER)} Answer with the facts you were given and "
             "name the document they came from; say so plainly when a fact is missing."
             for i in range(40)]
    system = "You are an agent of the Agent VOS operations team.\n" + "\n".join(rules)
    tools = tuple(
        ToolSpec(name, f"{name.replace('_', ' ').capitalize()}. {rng.choice(FILLER)}",
                 {"type": "object", "properties": {
                     "service": {"type": "string", "description": "service name"},
                     "reason": {"type": "string", "description": "why, for the audit log"},
                     "dry_run": {"type": "boolean", "description": "only report"}},
                  "required": ["service", "reason"]})
        for name in ("open_change", "pause_rollout", "page_owner", "read_metrics"))
    personas = [f"You are {name}, the {role}. " + " ".join(rng.sample(FILLER, 8))
                for name, role in (("Ada", "release manager"), ("Bo", "security reviewer"),
                                   ("Cy", "site reliability engineer"))]
    return system, tools, personas


@contextmanager
def database():
    """(owner DSN, app pool): DATABASE_URL if set, else a throwaway embedded Postgres."""
    external = os.environ.get("DATABASE_URL")
    server = None
    if external:
        owner = external
    else:
        print("[tokens] starting a throwaway Postgres …", flush=True)
        base = Path(tempfile.mkdtemp(prefix="vos-bench-pg-"))
        base.chmod(0o711)
        server = EmbeddedPostgres(base / "cluster", fast_unsafe=True)
        owner = server.start()
    try:
        password = secrets.token_urlsafe(18)
        print("[tokens] migrating …", flush=True)
        migrate(owner, app_password=password, log=lambda _m: None)
        pool = open_pool(make_conninfo(owner, user="vos_app", password=password), max_size=2)
        pool.wait(timeout=30)
        try:
            yield owner, pool
        finally:
            pool.close()
    finally:
        if server is not None:
            server.destroy()


def naive_call(fleet, provider: str, model: str, parts: PromptParts) -> Usage:
    """The seed's way: documents first, instructions after, no cache breakpoints."""
    bulk = f"{parts.context}\n\n{parts.system}\n\n{parts.persona}\n\n{parts.task}"
    if provider == "anthropic":
        client = anthropic.Anthropic(base_url=fleet["anthropic"].base_url, api_key="fake-key",
                                     max_retries=0)
        tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                 for t in parts.tools]
        reply = client.messages.create(model=model, max_tokens=64, tools=tools,
                                       messages=[{"role": "user", "content": bulk}])
        return usage_from_anthropic(reply.usage)
    client = openai.OpenAI(base_url=fleet[provider].base_url, api_key="fake-key", max_retries=0)
    reply = client.chat.completions.create(model=model, max_tokens=64,
                                           messages=[{"role": "user", "content": bulk}])
    return usage_from_openai(reply.usage)


def recall_of(context: str, task: Task) -> float:
    return sum(f.sentence in context for f in task.needs) / len(task.needs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=600, help="retrieval token budget")
    args = parser.parse_args()
    rng = random.Random(SEED)
    documents, tasks = build_workload(rng)
    system, tools, personas = stable_prompt(rng)
    prices = PriceBook(DEFAULT_PRICES)
    targets = [("anthropic", "claude-sonnet-4-6"), ("openai", "gpt-4.1")]
    fleet = start_fake_fleet()
    try:
        with database() as (owner, pool):
            with psycopg.connect(owner, autocommit=True) as conn:
                tenant = conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, 'bench') "
                                      "RETURNING id", [f"bench-{secrets.token_hex(3)}"]
                                      ).fetchone()[0]
            print(f"[tokens] storing {len(documents)} documents as passages …", flush=True)
            with tenant_transaction(pool, tenant) as conn:
                seed_prices(conn, tenant)
                for title, text in documents:
                    add_document(conn, tenant, title, text)
                n_passages = conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"]
            print(f"[tokens] {n_passages} passages; {len(tasks)} tasks x 2 providers x 2 modes",
                  flush=True)
            results = {}
            for provider, model in targets:
                for server in fleet.values():
                    server.reset()
                results[(provider, "naive")] = run_naive(fleet, provider, model, documents,
                                                          tasks, system, tools, personas)
                results[(provider, "optimised")] = run_optimised(
                    fleet, pool, tenant, provider, model, tasks, system, tools, personas,
                    prices, args.budget)
            report(results, prices, targets)
    finally:
        for server in fleet.values():
            server.stop()


def run_naive(fleet, provider, model, documents, tasks, system, tools, personas):
    print(f"[tokens] naive     {provider} …", flush=True)
    rows = []
    for i, task in enumerate(tasks):
        docs = sorted({f.document for f in task.needs})
        context = "\n\n".join(documents[d][1] for d in docs)
        parts = PromptParts(system, personas[i % 3], tools, context, task.text)
        rows.append((naive_call(fleet, provider, model, parts), recall_of(context, task)))
    return rows


def run_optimised(fleet, pool, tenant, provider, model, tasks, system, tools, personas, prices,
                  budget):
    print(f"[tokens] optimised {provider} …", flush=True)
    deployment = Deployment(provider, build_provider(provider, fleet[provider].base_url,
                                                     "fake-key"), model, 1_000_000, 64)
    router = Router([deployment], RecordingAccounting(prices))
    rows = []
    started = time.monotonic()
    for i, task in enumerate(tasks):
        with tenant_transaction(pool, tenant) as conn:
            context = format_passages(retrieve(conn, task.text, token_budget=budget))
        parts = PromptParts(system, personas[i % 3], tools, context, task.text)
        result = router.complete(CallContext(tenant, f"agent-{i % 3}"), parts)
        rows.append((result.attempts[-1].usage, recall_of(context, task)))
    print(f"[tokens]   {len(tasks)} calls in {time.monotonic() - started:.1f}s", flush=True)
    return rows


def report(results, prices: PriceBook, targets) -> None:
    print()
    print(f"{'provider':<10} {'mode':<10} {'calls':>5} {'billable-eq in/call':>20} "
          f"{'raw in/call':>12} {'cache read %':>12} {'cost/call $':>12} {'recall':>7}")
    for provider, model in targets:
        price = prices.price_at(provider, model)
        figures = {}
        for mode in ("naive", "optimised"):
            rows = results[(provider, mode)]
            n = len(rows)
            billable = sum(billable_equivalent_input(u, price) for u, _ in rows) / n
            raw = sum(u.total_input for u, _ in rows) / n
            read_share = sum(u.cache_read for u, _ in rows) / max(1, sum(u.total_input
                                                                         for u, _ in rows))
            cost = sum(cost_usd(u, price) for u, _ in rows) / n
            recall = sum(r for _, r in rows) / n
            figures[mode] = (billable, cost)
            print(f"{provider:<10} {mode:<10} {n:>5} {billable:>20.0f} {raw:>12.0f} "
                  f"{read_share:>11.0%} {cost:>12.6f} {recall:>7.3f}")
        ratio = figures["naive"][0] / figures["optimised"][0]
        cost_ratio = figures["naive"][1] / figures["optimised"][1]
        print(f"{provider:<10} {'ratio':<10} {'':>5} {ratio:>19.1f}x {'':>12} {'':>12} "
              f"{cost_ratio:>11.1f}x")
    print("\nGoal: optimised <= 2000 billable-equivalent input tokens per call at recall >= "
          "0.95. Tokens are the fake's word-piece counts (see devtools/fakes.py).")


if __name__ == "__main__":
    main()
