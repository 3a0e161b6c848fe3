"""Converge a tenant's database to its agents file, and say what changed.

`apply_agents_file(pool, tenant_id, spec)` runs in ONE tenant transaction:

- agents in the file but not in the database are created (managers first);
- agents whose role, persona, manager, chain (`model_preferences.chain`), budget, budget
  period, tools, orchestrator flag or run policy (`run_policy`: approval gates, step cap,
  per-task caps, as `AgentSpec.run_policy()` gives them) differ are updated (only the
  changed columns, and only those rows: an unchanged agent is not written at all, so
  `updated_at` and `xmin` stay);
- agents in the database but not in the file are retired (`retired_at`), never deleted:
  ledger rows, tasks and events keep pointing at them; a name that comes back un-retires;
- the built-in price list is seeded once (a tenant with no prices at all), and a
  deployment's `prices:` goes in as a new model_prices version only when it differs from
  the version in force (history is kept: old calls stay priced as they were).

`dry_run=True` does all of it and rolls back, so the diff is exactly what a real apply does.

Example:
    result = apply_agents_file(pool, tenant_id, load_agents_file("examples/agents.yaml"))
    print("\\n".join(result.lines))    # + agent CTO / ~ agent CTO: budget_usd 30 → 40 / …
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.agents.config import price_provider
from app.agents.ledger import seed_prices
from app.agents.spec import AgentsFile, AgentSpec
from app.db import APP_ROLE, tenant_transaction
from app.db.tenants import tenant_id_for

PRICE_VERSION = "agents-file"

# The columns the agents file owns, in diff order.
_AGENT_COLUMNS = ("id, name, role, persona, manager_id, model_preferences, budget_usd, "
                  "budget_period, tools, is_orchestrator, run_policy, retired_at")
# The JSON columns: written as Jsonb, compared as the dicts/lists psycopg reads back.
_JSON_COLUMNS = ("tools", "run_policy")




class TenantNotFound(LookupError):
    """No such tenant, or none this role may see."""


def resolve_tenant(dsn: str, tenant: str, *, create: bool = False) -> uuid.UUID:
    """The id of the tenant named by `tenant` (a slug or a UUID); with `create`, a missing
    slug is created (the owner role only: vos_app cannot insert tenants).

    Example:
        resolve_tenant("postgresql://owner@db/vos", "acme", create=True)
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        tenant_id = tenant_id_for(conn, tenant)  # ValueError: neither slug nor UUID
        if tenant_id is not None:
            # RLS shows a tenant its own row: set it, so an unknown UUID finds nothing
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant_id)])
            if conn.execute("SELECT 1 FROM tenants WHERE id = %s", [tenant_id]).fetchone():
                return tenant_id
            raise TenantNotFound(f"no tenant with id {tenant_id}")
        if not create:
            raise TenantNotFound(f"no tenant with slug {tenant!r}; create it with `vos tenant "
                                 "create` or pass --create-tenant (owner DATABASE_URL)")
        if conn.execute("SELECT current_user").fetchone()[0] == APP_ROLE:
            raise TenantNotFound(f"no tenant with slug {tenant!r}, and {APP_ROLE} cannot "
                                 "create one: use the owner DATABASE_URL with --create-tenant")
        return conn.execute("INSERT INTO tenants (slug, name) VALUES (%s, %s) RETURNING id",
                            [tenant, tenant]).fetchone()[0]


@dataclass
class ApplyResult:
    """What an apply did (or, dry-run, would do): one line per change, in order."""

    lines: list[str] = field(default_factory=list)
    changes: int = 0
    unchanged: int = 0
    warnings: list[str] = field(default_factory=list)

    def report(self) -> str:
        """The diff as printed by `vos agents apply`."""
        out = list(self.lines)
        if self.changes == 0:
            out.append(f"no changes ({self.unchanged} agent(s) unchanged)")
        elif self.unchanged:
            out.append(f"= {self.unchanged} unchanged")
        return "\n".join(out + [f"! {w}" for w in self.warnings])

    def _change(self, line: str) -> None:
        self.lines.append(line)
        self.changes += 1


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def apply_agents_file(pool: Any, tenant_id: uuid.UUID, spec: AgentsFile, *,
                      dry_run: bool = False, actor: str = "agents-apply") -> ApplyResult:
    """Converge the tenant's agents and prices to `spec` in one transaction (see module)."""
    result = ApplyResult()
    try:
        with tenant_transaction(pool, tenant_id, actor=actor) as conn:
            converge(conn, tenant_id, spec, result)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return result


def converge(conn: psycopg.Connection, tenant_id: uuid.UUID, spec: AgentsFile,
             result: ApplyResult) -> None:
    """The apply's body on an open tenant transaction (the caller commits or rolls back)."""
    _prices(conn, tenant_id, spec, result)
    # Lock the tenant's agents: two concurrent applies serialise instead of interleaving.
    # Every query names the tenant too, not only RLS: the owner role (deploys,
    # --create-tenant) may bypass row-level security and would see every tenant's agents.
    rows = {r["name"]: r for r in conn.execute(
        f"SELECT {_AGENT_COLUMNS} FROM agents WHERE tenant_id = %s ORDER BY name FOR UPDATE",
        [tenant_id]).fetchall()}
    wanted = {a.name for a in spec.agents}
    names_by_id = {r["id"]: r["name"] for r in rows.values()}

    # 1. Retire what left the file, and drop orchestrator flags that move elsewhere, before
    #    anything sets one: at most one live orchestrator per tenant (a unique index).
    for name, row in rows.items():
        if name not in wanted and row["retired_at"] is None:
            conn.execute("UPDATE agents SET retired_at = now(), is_orchestrator = false, "
                         "updated_at = now() WHERE id = %s", [row["id"]])
            result._change(f"- agent {name} (retired)")
    losing = [rows[a.name]["id"] for a in spec.agents
              if a.name in rows and rows[a.name]["is_orchestrator"] and not a.orchestrator]
    if losing:
        conn.execute("UPDATE agents SET is_orchestrator = false WHERE id = ANY(%s)", [losing])

    # 2. Create and update, managers before their reports (the manager FK needs its row).
    ids = {name: row["id"] for name, row in rows.items()}
    for agent in spec.topological_agents():
        desired = _desired(spec, agent, ids)
        row = rows.get(agent.name)
        if row is None:
            ids[agent.name] = conn.execute(
                """INSERT INTO agents (tenant_id, name, role, persona, manager_id,
                       model_preferences, budget_usd, budget_period, tools, is_orchestrator,
                       run_policy)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                [tenant_id, agent.name, desired["role"], desired["persona"],
                 desired["manager_id"], Jsonb({"chain": desired["chain"]}),
                 desired["budget_usd"], desired["budget_period"], Jsonb(desired["tools"]),
                 desired["is_orchestrator"], Jsonb(desired["run_policy"])]).fetchone()["id"]
            names_by_id[ids[agent.name]] = agent.name
            result._change(f"+ agent {agent.name}")
            continue
        changed = _changed_columns(row, desired)
        if not changed and row["retired_at"] is None:
            result.unchanged += 1
            continue
        _update(conn, row, desired, changed)
        described = ", ".join(_describe(col, row, desired, names_by_id) for col in changed)
        if row["retired_at"] is not None:
            result._change(f"+ agent {agent.name} (un-retired)"
                           + (f": {described}" if described else ""))
        else:
            result._change(f"~ agent {agent.name}: {described}")


def _desired(spec: AgentsFile, agent: AgentSpec, ids: dict[str, uuid.UUID]) -> dict:
    return {
        "role": agent.role,
        "persona": agent.persona,
        "manager_id": ids[agent.manager] if agent.manager else None,
        "chain": spec.chain_of(agent),
        "budget_usd": agent.budget_usd,
        "budget_period": agent.budget_period,
        "tools": list(agent.tools),
        "is_orchestrator": agent.orchestrator,
        "run_policy": agent.run_policy(),
    }


def _current(row: dict, column: str) -> Any:
    if column == "chain":
        return (row["model_preferences"] or {}).get("chain")
    return row[column]


def _changed_columns(row: dict, desired: dict) -> list[str]:
    # Decimal('30') == Decimal('30.0000'): numeric scale does not count as a change
    return [col for col, value in desired.items() if _current(row, col) != value]


def _update(conn: psycopg.Connection, row: dict, desired: dict, changed: list[str]) -> None:
    sets, params = ["updated_at = now()", "retired_at = NULL"], []
    for col in changed:
        if col == "chain":
            sets.append("model_preferences = model_preferences || %s")
            params.append(Jsonb({"chain": desired["chain"]}))
        elif col in _JSON_COLUMNS:
            sets.append(f"{col} = %s")
            params.append(Jsonb(desired[col]))
        else:
            sets.append(f"{col} = %s")
            params.append(desired[col])
    conn.execute(f"UPDATE agents SET {', '.join(sets)} WHERE id = %s", [*params, row["id"]])


def _describe(column: str, row: dict, desired: dict, names: dict[uuid.UUID, str]) -> str:
    before, after = _current(row, column), desired[column]
    if column == "persona":
        return "persona changed"
    if column == "manager_id":
        return f"manager {names.get(before, '(none)') if before else '(none)'} → " \
               f"{names.get(after, '(none)') if after else '(none)'}"
    if column in ("chain", "tools"):
        return f"{column} [{', '.join(before or [])}] → [{', '.join(after)}]"
    if column == "budget_usd":
        return f"budget_usd {_money(before)} → {_money(after)}"
    if column == "run_policy":
        return _describe_policy(before or {}, after)
    if column == "role":
        return f"role {before!r} → {after!r}"
    return f"{column} {before} → {after}"


def _describe_policy(before: dict, after: dict) -> str:
    """'run policy (max_steps 8 → 12; approval.tools [] → [deploy])': the keys that differ.
    A row that never had one (written before migration 0308) says 'run policy set (…)'."""
    def flat(policy: dict) -> dict:
        out = {k: v for k, v in policy.items() if k != "approval"}
        for key, value in (policy.get("approval") or {}).items():
            out[f"approval.{key}"] = value
        return dict(sorted(out.items()))

    def show(value: Any) -> str:
        if isinstance(value, list):
            return f"[{', '.join(map(str, value))}]"
        if isinstance(value, bool):
            return str(value).lower()
        return "(none)" if value is None else str(value)

    old, new = flat(before), flat(after)
    if not old:
        return f"run policy set ({', '.join(f'{k} {show(v)}' for k, v in new.items())})"
    changes = [f"{key} {show(old[key]) if key in old else '(unset)'} → {show(value)}"
               for key, value in new.items() if old.get(key, ...) != value]
    return f"run policy ({'; '.join(changes)})"


def _money(value: Decimal | None) -> str:
    return "(none)" if value is None else f"{Decimal(value).normalize():f}"


def _prices(conn: psycopg.Connection, tenant_id: uuid.UUID, spec: AgentsFile,
            result: ApplyResult) -> None:
    """Seed the built-in list once; add each override that differs from the price in force."""
    if conn.execute("SELECT 1 FROM model_prices WHERE tenant_id = %s LIMIT 1",
                    [tenant_id]).fetchone() is None:
        added = seed_prices(conn, tenant_id)
        result._change(f"+ prices: {added} built-in list price(s) (the tenant had none)")
    done: set[tuple[str, str]] = set()
    for d in spec.deployments:
        provider = price_provider(d.provider)
        key = (provider, d.model)
        if key in done:
            continue
        done.add(key)
        current = conn.execute(
            """SELECT input_per_mtok, output_per_mtok, cache_read_per_mtok,
                      cache_write_per_mtok FROM model_prices
                WHERE tenant_id = %s AND provider = %s AND model = %s
                  AND effective_from <= now()
                ORDER BY effective_from DESC LIMIT 1""",
            [tenant_id, provider, d.model]).fetchone()
        if d.prices is None:
            if current is None:
                result.warnings.append(
                    f"deployment {d.name}: no price for {provider}/{d.model}; calls to it are "
                    "refused until it has one (give the deployment `prices:`)")
            continue
        new = d.prices.resolved()
        old = None if current is None else (
            current["input_per_mtok"], current["output_per_mtok"],
            current["cache_read_per_mtok"], current["cache_write_per_mtok"])
        if old == new:
            continue
        conn.execute(
            """INSERT INTO model_prices (tenant_id, provider, model, effective_from, version,
                   input_per_mtok, output_per_mtok, cache_read_per_mtok, cache_write_per_mtok)
               VALUES (%s, %s, %s, now(), %s, %s, %s, %s, %s)""",
            [tenant_id, provider, d.model, PRICE_VERSION, *new])
        result._change(f"{'+' if old is None else '~'} price {provider}/{d.model}: "
                       f"{_price_text(old)} → {_price_text(new)} (in/out/cache read/cache "
                       "write USD per Mtok)")


def _price_text(prices: tuple | None) -> str:
    return "(none)" if prices is None else "/".join(_money(p) for p in prices)
