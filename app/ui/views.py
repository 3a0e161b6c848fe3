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

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg_pool import ConnectionPool

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import TRANSITIONS, Status
from app.ui.feed import describe

# The four columns of the seed's board. A Rejected task waits for rework, and its only way
# on is back to Active, like a Draft's, so it is shown in the Draft column with a badge.
# Statuses are strings here (not Status members) so the board also reads rows of statuses
# this module does not name.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Draft", ("Draft", "Rejected")),
    # Failed waits for a Retry (back to Active), Waiting for its sub-tasks and Paused for an
    # operator: all three are work in progress, so they stay in the Active column with a chip
    # (six columns would not fit a laptop screen next to the live feed)
    ("Active", ("Active", "Failed", "Waiting", "Paused")),
    ("Review", ("Review",)),
    ("Approved", ("Approved",)),
)
# Cancelled tasks are closed: not on the board (their page and the feed keep them).
CARDS_PER_COLUMN = 50
OPEN_STATUSES = frozenset({"Draft", "Active", "Waiting", "Paused", "Review", "Rejected",
                           "Failed"})
# Steps never offered as a one-click board button: cancelling needs the confirm form on the
# task page (it cascades to sub-tasks), Waiting/Paused are the engine's, and leaving Paused
# is Resume (its own form).
NOT_ON_BOARD = frozenset({"Cancelled", "Waiting", "Paused"})

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
    """(target status, button label) for each step the status machine allows from `status`
    that a board button may take (not Cancelled, Waiting or Paused: see NOT_ON_BOARD; none
    from Waiting or Paused, whose way on is the engine's or Resume).

    Example:
        >>> next_steps("Review")
        [('Approved', 'Approve'), ('Rejected', 'Reject')]
    """
    if status in NOT_ON_BOARD:
        return []
    current = Status(status)
    return [(str(t), STEP_LABELS.get((current, t), str(t)))
            for t in sorted(TRANSITIONS[current]) if str(t) not in NOT_ON_BOARD]


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
                if counts.get(status):  # a status with no rows needs no query
                    cards += repo.list_tasks(conn, status=status, limit=per_column)
            cards.sort(key=lambda t: (t["priority"], -t["created_at"].timestamp()))
            for card in cards[:per_column]:
                agent = by_id.get(card["assignee_id"])
                card["agent_name"] = agent["name"] if agent else None
                card["agent_initials"] = initials(agent["name"]) if agent else ""
                card["steps"] = next_steps(card["status"])
            columns.append(Column(name, sum(counts.get(s, 0) for s in statuses),
                                  cards[:per_column]))
        _add_tree_marks(conn, [c for column in columns for c in column.cards])
    return Board(columns, [a for a in agents if a["retired_at"] is None])


def _add_tree_marks(conn, cards: list[dict]) -> None:
    """Each card's place in the task tree, in two reads for the whole board: `parent`
    ({id, title} or None) and `subtasks` ({total, approved} or None), plus `paused_reason`
    and `awaiting` (a tool call of it waits for approval: Resume would be refused).

    Read here rather than from the task rows so the board needs nothing of TASK_COLUMNS.
    """
    ids = [c["id"] for c in cards]
    if not ids:
        return
    marks = {r["id"]: r for r in conn.execute(
        """SELECT c.id, c.paused_reason, p.id AS parent_id, p.title AS parent_title,
                  EXISTS (SELECT 1 FROM tool_approvals a
                           WHERE a.task_id = c.id AND a.status = 'pending') AS awaiting
             FROM tasks c LEFT JOIN tasks p ON p.id = c.parent_id
            WHERE c.id = ANY(%s)""", [ids])}
    subtasks = {r["parent_id"]: r for r in conn.execute(
        """SELECT parent_id, count(*) AS total,
                  count(*) FILTER (WHERE status = 'Approved') AS approved
             FROM tasks WHERE parent_id = ANY(%s) GROUP BY parent_id""", [ids])}
    for card in cards:
        mark = marks.get(card["id"]) or {}
        card["paused_reason"] = mark.get("paused_reason")
        card["awaiting"] = bool(mark.get("awaiting"))
        card["parent"] = ({"id": mark["parent_id"], "title": mark["parent_title"]}
                          if mark.get("parent_id") else None)
        card["subtasks"] = subtasks.get(card["id"])


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
        paused = {r["id"]: r for r in conn.execute(
            "SELECT id, paused_at, paused_reason FROM agents WHERE paused_at IS NOT NULL")}
    nodes = {}
    for agent in agents:
        used = spend.get(agent["id"], {})
        budget = _money(agent["budget_usd"])
        spent = _money(used.get("spent_usd"))
        pause = paused.get(agent["id"]) or {}
        nodes[agent["id"]] = {
            **agent,
            # a breaker stopped it (failed M tasks in a row): the chart says why, Resume
            "paused_at": pause.get("paused_at"),
            "paused_reason": pause.get("paused_reason"),
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
        event["text"] = describe_event(event)
        event["actor"] = payload.get("actor") or payload.get("worker")
        event["comment"] = payload.get("comment") if event["kind"].startswith(
            ("review.", "approval.")) else None
    detail["children"] = detail.get("children") or []
    detail["open_children"] = sum(c["status"] in OPEN_STATUSES for c in detail["children"])
    detail["approved_children"] = sum(c["status"] == "Approved" for c in detail["children"])
    detail["approvals"] = [dict(a, arguments_text=pretty_json(a.get("arguments")))
                           for a in detail.get("approvals") or []]
    detail["pending_approvals"] = [a for a in detail["approvals"] if a["status"] == "pending"]
    detail["can_cancel"] = detail["status"] in OPEN_STATUSES
    # resuming with an approval pending is refused by the engine: the approval decides it
    detail["can_resume"] = detail["status"] == "Paused" and not detail["pending_approvals"]
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


# -- orchestration: the approvals inbox, the task tree, event texts --------------------------

def pretty_json(value: Any) -> str:
    """A tool call's arguments as indented JSON text (the template escapes it).

    Example:
        >>> print(pretty_json({"to": "CTO", "n": 2}))
        {
          "n": 2,
          "to": "CTO"
        }
    """
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def age(at: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in one short unit.

    Example:
        >>> t = datetime(2025, 1, 1, tzinfo=UTC)
        >>> age(t, t), age(t.replace(minute=5), t.replace(hour=1)), age(t, t.replace(day=3))
        ('just now', '55 min', '2 d')
    """
    if at is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - at).total_seconds()))
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return "just now"


def load_inbox(pool: ConnectionPool, tenant_id: uuid.UUID) -> dict[str, Any]:
    """What waits for an operator, oldest first in each of the four sections
    (`app.dispatch.tasks.inbox`), with the arguments as pretty JSON text, each item's age and
    `count` (the sum, as the navigation shows it).

    Example:
        inbox = load_inbox(pool, tenant_id)
        inbox["count"], [a["tool"] for a in inbox["approvals"]]
    """
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        inbox = dict(repo.inbox(conn))
    now = datetime.now(UTC)
    inbox["approvals"] = [dict(a, arguments_text=pretty_json(a.get("arguments")),
                               age=age(a.get("requested_at"), now))
                          for a in inbox.get("approvals") or []]
    inbox["reviews"] = [dict(t, age=age(t.get("updated_at"), now))
                        for t in inbox.get("reviews") or []]
    inbox["paused_tasks"] = [dict(t, age=age(t.get("paused_at") or t.get("updated_at"), now))
                             for t in inbox.get("paused_tasks") or []]
    inbox["paused_agents"] = [dict(a, age=age(a.get("paused_at"), now))
                              for a in inbox.get("paused_agents") or []]
    inbox["count"] = sum(len(inbox[k]) for k in INBOX_SECTIONS)
    return inbox


INBOX_SECTIONS = ("approvals", "reviews", "paused_tasks", "paused_agents")


def inbox_count(pool: ConnectionPool, tenant_id: uuid.UUID) -> int:
    """The navigation's Inbox badge: everything waiting for an operator of this tenant."""
    with tenant_transaction(pool, tenant_id, actor="ui") as conn:
        return int(repo.inbox_count(conn))


def describe_event(event: dict) -> str:
    """One line for a timeline event: the feed's wording (`app.ui.feed.describe`).

    Example:
        >>> describe_event({"kind": "task.paused", "payload": {"reason": "same call 3 times"}})
        'paused: same call 3 times'
    """
    return describe(event)
