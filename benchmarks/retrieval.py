"""Retrieval benchmark: recall on a knowledge base we did not shape, tokens per call, latency.

Workload: benchmarks/workloads/ferries.py (24 wiki pages of 1.5K-1.8K tokens with headings,
tables, lists, code and near-duplicate pages; 63 tasks tagged paraphrase / synonym /
low-overlap / multi-fact / title-only before the first run). Documents go in through the
real ingest path (`documents.prepare` + `documents.ingest`: structure-aware passages,
embedded default model); tasks go through `retrieval.retrieve` and then through the real
`anthropic` / `openai` SDKs against the fakes (the stable prefix of benchmarks/tokens.py:
system prompt, tools, personas), priced like benchmarks/tokens.py.

Printed, at 0.5x, 1x and 2x the default budget (`retrieval_token_budget`, 1,000 tokens):
recall (share of needed facts in the context sent; a fact counts only from the page it
belongs to when the task names one) and all-needed (share of tasks with every fact), per
tag and overall; billable-equivalent input tokens and cost per call per provider; ingest
time; query latency p50/p95 on this workload and on a tenant of 10,000 passages, the
latter beside the retrieval of a baseline git revision (--baseline) timed in the same run,
query by query in turn, with the load average.

Run:
    .venv/bin/python benchmarks/retrieval.py               # starts a throwaway Postgres
    .venv/bin/python benchmarks/retrieval.py --skip-scale  # without the 10,000-passage tenant
Exit status 0 whatever the figures: this measures, it does not gate.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokens import SEED as TOKENS_SEED  # noqa: E402  (benchmarks/tokens.py)
from tokens import database, stable_prompt  # noqa: E402

from app.agents.config import WorkforceConfig  # noqa: E402
from app.agents.documents import ingest, prepare  # noqa: E402
from app.agents.embeddings import default_embedder  # noqa: E402
from app.agents.ledger import seed_prices  # noqa: E402
from app.agents.prefix import PromptParts  # noqa: E402
from app.agents.prices import (  # noqa: E402
    DEFAULT_PRICES,
    PriceBook,
    billable_equivalent_input,
    cost_usd,
)
from app.agents.providers import build_provider  # noqa: E402
from app.agents.retrieval import (  # noqa: E402
    chunk_document,
    format_passages,
    retrieve,
    store_passages,
)
from app.agents.router import CallContext, Deployment, RecordingAccounting, Router  # noqa: E402
from app.db import tenant_transaction  # noqa: E402
from benchmarks.workloads.ferries import build  # noqa: E402
from devtools.fakes import start_fake_fleet  # noqa: E402

DEFAULT_BUDGET = WorkforceConfig.model_fields["retrieval_token_budget"].default  # the app's
PROPOSED_BUDGET = 1000  # also measured: the budget this benchmark argues for
# The last revision whose retrieval fetched and scored every candidate row per query (the
# 10,000-passage latency is printed beside it).
BASELINE_REV = "f3a7ba4"
TARGETS = [("anthropic", "claude-sonnet-4-6"), ("openai", "gpt-4.1")]


def _norm(text: str) -> str:
    return " ".join(text.split())


def found(task: dict, passages) -> list[bool]:
    """Per needed fact: is it in a passage sent (from the named page, if the task names one)?"""
    pool = [_norm(p.body) for p in passages
            if "doc" not in task or p.title.startswith(task["doc"])]
    return [any(_norm(need) in body for body in pool) for need in task["needs"]]


def new_tenant(owner: str, slug: str):
    with psycopg.connect(owner, autocommit=True) as conn:
        return conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, 'bench') RETURNING id",
                            [f"{slug}-{secrets.token_hex(3)}"]).fetchone()[0]


def run_budget(pool, tenant, tasks, budget, fleet, prices, prompt, **sides) -> dict:
    system, tools, personas = prompt
    rows, latencies = [], []
    routers = {}
    for provider, model in TARGETS:
        deployment = Deployment(provider, build_provider(provider, fleet[provider].base_url,
                                                         "fake-key"), model, 1_000_000, 64)
        routers[provider] = Router([deployment], RecordingAccounting(prices))
    usages = defaultdict(list)
    for i, task in enumerate(tasks):
        with tenant_transaction(pool, tenant) as conn:
            started = time.perf_counter()
            picked = retrieve(conn, task["text"], token_budget=budget, **sides)
            latencies.append((time.perf_counter() - started) * 1000)
        hits = found(task, picked)
        rows.append((task, hits))
        context = format_passages(picked)
        parts = PromptParts(system, personas[i % 3], tools, context, task["text"])
        for provider, _model in TARGETS:
            result = routers[provider].complete(CallContext(tenant, f"agent-{i % 3}"), parts)
            usages[provider].append(result.attempts[-1].usage)
    return {"rows": rows, "latencies": latencies, "usages": usages}


def summarise(rows) -> dict[str, tuple[float, float, int]]:
    """tag -> (recall, all-needed, tasks); 'all' for every task."""
    groups = defaultdict(list)
    for task, hits in rows:
        for tag in ["all"] + task["tags"]:
            groups[tag].append(hits)
    return {tag: (sum(sum(h) for h in hs) / sum(len(h) for h in hs),
                  sum(all(h) for h in hs) / len(hs), len(hs)) for tag, hs in groups.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def scale_tenant(owner, pool, docs, target: int) -> tuple:
    """A second tenant holding ~`target` passages: the workload's pages, renamed, repeated."""
    tenant = new_tenant(owner, "bench-scale")
    embedder = default_embedder()
    chunked = [(title, chunk_document(text)) for title, text in docs]
    per_copy = sum(len(c) for _, c in chunked)
    copies = -(-target // per_copy)
    started = time.perf_counter()
    with tenant_transaction(pool, tenant) as conn:
        for copy in range(copies):
            for title, chunks in chunked:
                title_n = f"{title} (archive {copy})" if copy else title
                row = conn.execute(
                    "INSERT INTO documents (tenant_id, title, source, tokens) "
                    "VALUES (%s, %s, %s, 0) RETURNING id",
                    [tenant, title_n, f"archive/{copy}/{title}"]).fetchone()
                store_passages(conn, tenant, row["id"], title_n, chunks, embedder)
        n = conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"]
    seconds = time.perf_counter() - started
    analyse(owner)
    return tenant, n, seconds


def analyse(owner: str) -> None:
    """What autovacuum does after a bulk load: planner statistics and the visibility map,
    so the per-query corpus-version count is an index-only scan."""
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) passages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="the default budget; 0.5x, 1x and 2x of it are measured")
    parser.add_argument("--also", type=int, default=PROPOSED_BUDGET,
                        help="one more budget to measure (0: none)")
    parser.add_argument("--skip-scale", action="store_true",
                        help="skip the 10,000-passage latency tenant")
    parser.add_argument("--baseline", default=BASELINE_REV, metavar="REV",
                        help="git revision whose retrieval is timed beside this tree's at "
                             f"10,000 passages (default {BASELINE_REV}: before the "
                             "in-process ranking; '' for none)")
    parser.add_argument("--verbose", action="store_true", help="list every missed fact")
    parser.add_argument("--ablation", action="store_true",
                        help="also measure lexical-only and dense-only at the default budget")
    args = parser.parse_args()
    for name in ("httpx", "httpx2"):  # one INFO line per fake call otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    docs, tasks = build()
    prices = PriceBook(DEFAULT_PRICES)
    prompt = stable_prompt(random.Random(TOKENS_SEED))
    fleet = start_fake_fleet()
    try:
        with database() as (owner, pool):
            tenant = new_tenant(owner, "bench-retrieval")
            t0 = time.perf_counter()
            default_embedder()
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with tenant_transaction(pool, tenant) as conn:
                seed_prices(conn, tenant)
                for title, text in docs:
                    ingest(conn, tenant, prepare(f"wiki/{title}.md", text.encode(), title=title))
                n_passages = conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"]
                bodies = [(r["title"], _norm(r["body"])) for r in conn.execute(
                    "SELECT title, body FROM passages")]
            ingest_s = time.perf_counter() - t0
            analyse(owner)
            split = sum(1 for task in tasks for need in task["needs"]
                        if not any(_norm(need) in b for _, b in bodies))
            print(f"[retrieval] {len(docs)} documents -> {n_passages} passages; ingest "
                  f"{ingest_s:.2f}s (embedded model load {load_s:.2f}s); {len(tasks)} tasks; "
                  f"needed facts cut across passages: {split}", flush=True)
            results = {}
            budgets = sorted({args.budget // 2, args.budget, args.budget * 2}
                             | ({args.also} if args.also > 0 else set()))
            for budget in budgets:
                for server in fleet.values():
                    server.reset()
                results[budget] = run_budget(pool, tenant, tasks, budget, fleet, prices,
                                             prompt)
            report(results, args.budget, prices)
            if args.ablation:
                for name, sides in (("lexical only", {"dense": False}),
                                    ("dense only", {"lexical": False})):
                    rows = run_budget(pool, tenant, tasks, args.budget, fleet, prices, prompt,
                                      **sides)["rows"]
                    recall, complete, _ = summarise(rows)["all"]
                    print(f"[retrieval] {name:<13} at {args.budget}: recall {recall:.3f}, "
                          f"all-needed {complete:.3f}")
            if args.verbose:
                for task, hits in results[args.budget]["rows"]:
                    for need, hit in zip(task["needs"], hits, strict=True):
                        if not hit:
                            print(f"  MISS [{','.join(task['tags'])}] {task['text']!r}: "
                                  f"{need!r}")
            if not args.skip_scale:
                scale(owner, pool, docs, tasks, args.budget, args.baseline)
    finally:
        for server in fleet.values():
            server.stop()


def report(results, default_budget: int, prices: PriceBook) -> None:
    tags = ["all", "paraphrase", "synonym", "low-overlap", "multi-fact", "title-only"]
    print(f"\n{'budget':>8} {'tag':<12} {'tasks':>5} {'recall':>7} {'all-needed':>10}")
    for budget, result in results.items():
        summary = summarise(result["rows"])
        for tag in tags:
            recall, complete, n = summary[tag]
            print(f"{budget:>6}{'*' if budget == default_budget else ' '}  {tag:<12} "
                  f"{n:>5} {recall:>7.3f} {complete:>10.3f}")
    print(f"\n{'budget':>8} {'provider':<10} {'billable-eq in/call':>20} {'raw in/call':>12} "
          f"{'cost/call $':>12} {'query p50 ms':>13} {'p95 ms':>8}")
    for budget, result in results.items():
        lat = result["latencies"]
        for provider, model in TARGETS:
            price = prices.price_at(provider, model)
            usages = result["usages"][provider]
            n = len(usages)
            billable = sum(billable_equivalent_input(u, price) for u in usages) / n
            raw = sum(u.total_input for u in usages) / n
            cost = sum(cost_usd(u, price) for u in usages) / n
            print(f"{budget:>6}{'*' if budget == default_budget else ' '}  "
                  f"{provider:<10} {billable:>20.0f} {raw:>12.0f} {cost:>12.6f} "
                  f"{statistics.median(lat):>13.1f} {pct(lat, 0.95):>8.1f}")
    print("\n* = the default budget. Goal: recall >= 0.90, all-needed >= 0.85 at <= 2000 "
          "billable-equivalent input tokens per call (both wire formats).")


def baseline_module(rev: str):
    """app/agents/retrieval.py as it was at git revision `rev`, imported under another name
    (its own corpus cache), or None when git or the revision is not there."""
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:app/agents/retrieval.py"],
                                capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("baseline_retrieval")
    module.__file__ = f"{rev}:app/agents/retrieval.py"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our own file)
    return module


def scale(owner, pool, docs, tasks, budget: int, baseline_rev: str = "") -> None:
    print("\n[retrieval] building a 10,000-passage tenant …", flush=True)
    tenant, n, seconds = scale_tenant(owner, pool, docs, 10_000)
    print(f"[retrieval] {n} passages stored and embedded in {seconds:.1f}s", flush=True)
    impls = {"this tree": retrieve}
    baseline = baseline_module(baseline_rev) if baseline_rev else None
    if baseline is not None:
        impls[f"baseline {baseline_rev}"] = baseline.retrieve
    elif baseline_rev:
        print(f"[retrieval] baseline {baseline_rev}: not available (no git or no such revision)")
    latencies = {name: [] for name in impls}
    cold, picks, same, loads = {}, {}, 0, [os.getloadavg()[0]]
    for name, fn in impls.items():  # the first query loads the tenant's corpus into memory
        with tenant_transaction(pool, tenant) as conn:
            started = time.perf_counter()
            fn(conn, tasks[0]["text"], token_budget=budget)
            cold[name] = (time.perf_counter() - started) * 1000
    for _round in range(3):
        for task in tasks:
            for name, fn in impls.items():  # alternating: both see the same machine load
                with tenant_transaction(pool, tenant) as conn:
                    started = time.perf_counter()
                    picked = fn(conn, task["text"], token_budget=budget)
                    latencies[name].append((time.perf_counter() - started) * 1000)
                picks[name] = [p.id for p in picked]
            same += len(set(map(tuple, picks.values()))) == 1
        loads.append(os.getloadavg()[0])
    print(f"[retrieval] query latency at {n} passages in one tenant, {len(tasks) * 3} queries "
          f"each at budget {budget}; load average {min(loads):.2f}-{max(loads):.2f} "
          f"({os.cpu_count()} CPUs)")
    print(f"  {'implementation':<22} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'cold ms':>8}")
    for name, lat in latencies.items():
        print(f"  {name:<22} {statistics.median(lat):>7.1f} {pct(lat, 0.95):>7.1f} "
              f"{max(lat):>7.1f} {cold[name]:>8.0f}")
    if len(impls) > 1:
        print(f"  same passages picked by both for {same} of {len(tasks) * 3} queries")
    print("  Goal: p95 < 50 ms at 10,000 passages per tenant.")


if __name__ == "__main__":
    main()
