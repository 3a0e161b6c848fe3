"""What each Command Center view shows, read inside one tenant transaction per view.

Nothing here filters by tenant: `tenant_transaction` sets `app.tenant_id` and row-level
security does the rest. Task changes go through `app.dispatch.tasks` (and so through the
status machine of `app.dispatch.status`); cost figures come from the ledger's views and its
spend table, never from a second computation.

Example:
    board = load_board(pool, tenant_id)
    board.columns[0].name, board.columns[0].count      # ('Draft', 3)
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg_pool import ConnectionPool

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import TRANSITIONS, Status
from app.ui.feed import describe

# The four columns of the seed's board. A Rejected task waits for rework, and its only way
# on is back to Active, like a Draft's, so it is shown in the Draft column with a badge.
COLUMNS: tuple[tuple[str, tuple[Status, ...]], ...] = (
    ("Draft", (Status.DRAFT, Status.REJECTED)),
    # Failed waits for a Retry (back to Active), so it stays in sight in the Active column
    ("Active", (Status.ACTIVE, Status.FAILED)),
    ("Review", (Status.REVIEW,)),
    ("Approved", (Status.APPROVED,)),
)
CARDS_PER_COLUMN = 50

# Button labels for the steps of the status machine (which steps exist comes from TRANSITIONS).
STEP_LABELS = {
    (Status.DRAFT, Status.ACTIVE): "Start",
    (Status.ACTIVE, Status.REVIEW): "Send to review",
    (Status.REVIEW, Status.APPROVED): "Approve",
    (Status.REVIEW, Status.REJECTED): "Reject",
    (Status.REJECTED, Status.ACTIVE): "Restart",
    (Status.ACTIVE, Status.FAILED): "Give up",
    (Status.FAILED, Status.ACTIVE): "Retry",
}


@dataclass
class Column:
    name: str
    count: int
    cards: list[dict] = field(default_factory=list)


@dataclass
class Board:
    columns: list[Column]
    agents: list[dict]


def next_steps(status: str) -> list[tuple[str, str]]:
    """(target status, button label) for each step the status machine allows from `status`.

    Example:
        >>> next_steps("Review")
        [('Approved', 'Approve'), ('Rejected', 'Reject')]
    """
    current = Status(status)
    return [(str(t), STEP_LABELS.get((current, t), str(t)))
            for t in sorted(TRANSITIONS[current])]


def initials(name: str) -> str:
    """Up to two initials of an agent's name.

    Example:
        >>> initials("Marketing Lead"), initials("cto")
        ('ML', 'C')
    """
    return "".join(part[0] for part in name.split()[:2]).upper() or "?"


def load_board(pool: ConnectionPool, tenant_id: uuid.UUID,
               per_column: int = CARDS_PER_COLUMN) -> Board:
    """Counts per column and the most urgent, newest cards of each (bounded, for big boards)."""
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        counts = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status::text AS status, count(*) AS n FROM tasks GROUP BY status")}
        agents = repo.list_agents(conn, include_retired=True)  # names on old cards
        by_id = {a["id"]: a for a in agents}
        columns = []
        for name, statuses in COLUMNS:
            cards = []
            for status in statuses:
                cards += repo.list_tasks(conn, status=status, limit=per_column)
            cards.sort(key=lambda t: (t["priority"], -t["created_at"].timestamp()))
            for card in cards[:per_column]:
                agent = by_id.get(card["assignee_id"])
                card["agent_name"] = agent["name"] if agent else None
                card["agent_initials"] = initials(agent["name"]) if agent else ""
                card["steps"] = next_steps(card["status"])
            columns.append(Column(name, sum(counts.get(str(s), 0) for s in statuses),
                                  cards[:per_column]))
    return Board(columns, [a for a in agents if a["retired_at"] is None])


def _money(value: Any) -> Decimal:
    return Decimal(value or 0)


def load_org_chart(pool: ConnectionPool, tenant_id: uuid.UUID) -> list[dict]:
    """The agents as a forest (roots first: the orchestrator), each with its budget use.

    Budget used is `agent_spend.spent_usd`, the figure the ledger's budget gate settles every
    call into and checks before the next (app/agents/budgets.py); an agent that never called
    a model has no row and has spent nothing.
    """
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        agents = repo.list_agents(conn)
        spend = {r["agent_id"]: r for r in conn.execute(
            "SELECT agent_id, spent_usd, reserved_usd FROM agent_spend")}
    nodes = {}
    for agent in agents:
        used = spend.get(agent["id"], {})
        budget = _money(agent["budget_usd"])
        spent = _money(used.get("spent_usd"))
        nodes[agent["id"]] = {
            **agent,
            "initials": initials(agent["name"]),
            "models": model_preference(agent["model_preferences"]),
            "spent_usd": spent,
            "reserved_usd": _money(used.get("reserved_usd")),
            "budget_pct": float(spent / budget * 100) if budget else None,
            "reports": [],
        }
    roots = []
    for node in nodes.values():
        manager = nodes.get(node["manager_id"])
        (manager["reports"] if manager else roots).append(node)
    for node in nodes.values():
        node["reports"].sort(key=lambda n: n["name"])
    # the orchestrator (the agent with the most people under it) first
    roots.sort(key=lambda n: (-_size(n), n["name"]))
    return roots


def _size(node: dict) -> int:
    return 1 + sum(_size(child) for child in node["reports"])


def model_preference(prefs: dict | None) -> str:
    """A short text for an agent's model preferences.

    Example:
        >>> model_preference({"chain": ["sonnet", "gpt"]})
        'sonnet → gpt'
        >>> model_preference({})
        'default chain'
    """
    prefs = prefs or {}
    chain = prefs.get("chain") or ([prefs["model"]] if prefs.get("model") else [])
    return " → ".join(map(str, chain)) if chain else "default chain"


# The ledger's views (migration 0100), read as `app.agents.ledger.cost_summary` reads them, but
# each in its own tenant transaction on its own pooled connection, concurrently: each view
# aggregates the ledger, so the page costs the slowest view instead of the sum of all five.
COST_VIEWS: dict[str, tuple[str, bool]] = {
    "today": ("SELECT * FROM agent_cost_today", True),
    "this_week": ("SELECT * FROM agent_cost_this_week", True),
    "per_call": ("SELECT * FROM agent_cost_per_call", True),
    "by_model": ("SELECT * FROM agent_cost_by_model ORDER BY cost_usd DESC", False),
    "by_agent": ("SELECT * FROM agent_cost_by_agent ORDER BY cost_usd DESC", False),
}
# Grouping 100,000 attempts by call id needs ~50 MB of hash table; with the default 4 MB
# Postgres spills it to disk. Raised for these read-only statements only (SET LOCAL).
COST_WORK_MEM = "64MB"
_cost_readers = ThreadPoolExecutor(max_workers=len(COST_VIEWS), thread_name_prefix="vos-costs")


def _read_view(pool: ConnectionPool, tenant_id: uuid.UUID, query: str, one: bool) -> Any:
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        conn.execute("SELECT set_config('work_mem', %s, true)", [COST_WORK_MEM])
        cursor = conn.execute(query)
        return (cursor.fetchone() or {}) if one else cursor.fetchall()


def load_costs(pool: ConnectionPool, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The cost tracker's figures: the ledger's views plus cache hit rates derived from them.

    Same keys as `app.agents.ledger.cost_summary`. Cache hit rate = cache-read input tokens /
    all input tokens, today (agent_cost_today) and over the whole ledger (summing
    agent_cost_by_model's token columns).
    """
    futures = {key: _cost_readers.submit(_read_view, pool, tenant_id, query, one)
               for key, (query, one) in COST_VIEWS.items()}
    summary = {key: future.result() for key, future in futures.items()}
    summary["cache_hit_today"] = cache_hit_rate(summary["today"])
    totals = {k: sum(int(r[k] or 0) for r in summary["by_model"])
              for k in ("uncached_input_tokens", "cache_read_tokens", "cache_write_tokens")}
    summary["cache_hit_all"] = cache_hit_rate(totals)
    return summary


def cache_hit_rate(row: dict) -> float | None:
    """Share of input tokens read from the provider's prompt cache; None without input.

    Example:
        >>> cache_hit_rate({"uncached_input_tokens": 100, "cache_read_tokens": 300,
        ...                 "cache_write_tokens": 0})
        0.75
    """
    read = int(row.get("cache_read_tokens") or 0)
    total = read + int(row.get("uncached_input_tokens") or 0) + int(
        row.get("cache_write_tokens") or 0)
    return read / total if total else None


def load_task_detail(pool: ConnectionPool, tenant_id: uuid.UUID, task_id: uuid.UUID
                     ) -> dict[str, Any]:
    """One task for its page: `app.dispatch.tasks.task_detail` plus what the page shows
    derived from it (each event's one-line text, attempt totals, the allowed review).

    Raises `repo.NotFound` for a task of another tenant as for one that does not exist.

    Example:
        detail = load_task_detail(pool, tenant_id, task_id)
        detail["reply"], detail["totals"]["cost_usd"]
    """
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        detail = repo.task_detail(conn, task_id)
    for event in detail["events"]:
        payload = event["payload"] or {}
        event["text"] = describe(event)
        event["actor"] = payload.get("actor") or payload.get("worker")
        event["comment"] = payload.get("comment") if event["kind"].startswith("review.") \
            else None
    attempts = detail["attempts"]
    detail["totals"] = {
        "cost_usd": sum((_money(a["cost_usd"]) for a in attempts), Decimal(0)),
        "tokens": sum(a["uncached_input_tokens"] + a["cache_read_tokens"]
                      + a["cache_write_tokens"] + a["output_tokens"] for a in attempts),
        "latency_ms": sum(a["latency_ms"] for a in attempts),
    }
    detail["can_review"] = detail["status"] == Status.REVIEW
    detail["can_retry"] = detail["status"] == "Failed"
    return detail
