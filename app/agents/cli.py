"""`vos agents …`: the workforce's commands (thin; work is in app/agents).

Example:
    vos agents apply examples/agents.yaml --tenant acme --dry-run
    vos agents sanitize < runbook.md
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from app import jsonlog
from app.clihelpers import load_settings

agents_app = typer.Typer(help="The agent workforce: agents as code (apply, list, show), work "
                              "tasks, sanitizer, price table.",
                         no_args_is_help=True)


@agents_app.command("sanitize")
def sanitize(
    pii: Annotated[list[str] | None, typer.Option(
        help="PII patterns to redact as well (email, phone, iban, credit_card)")] = None,
) -> None:
    """Redact secrets (and PII) from stdin exactly as before a provider call; print to stdout.

    A count per kind goes to stderr, so you can check a document before ingesting it.
    """
    from app.agents.sanitize import Sanitizer, SanitizerError

    try:
        sanitizer = Sanitizer(pii=tuple(pii) if pii is not None else ("email",))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = sanitizer.redact(sys.stdin.read())
    except SanitizerError as exc:  # fail closed: print nothing of the input
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    sys.stdout.write(result.text)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items())) or "nothing"
    typer.echo(f"redacted: {summary}", err=True)


@agents_app.command("work")
def work(
    tenant: Annotated[list[str], typer.Option(
        help="tenant to serve, slug or UUID (repeatable)")],
    config: Annotated[str, typer.Option(
        help="the agents file (YAML or JSON, see examples/agents.yaml): its deployments, "
             "default_chain, retry, pii, system_prompt, tools, embedding provider and worker "
             "policy; API keys are named by env var, never written in it")],
    worker_id: Annotated[str | None, typer.Option(
        "--id", help="this worker's name in claims and events (default: host/pid)")] = None,
    drain: Annotated[bool, typer.Option(help="stop when every queue is empty")] = False,
    idle_seconds: Annotated[float | None, typer.Option(
        help="poll interval when idle (default: the file's worker.idle_seconds)",
        min=0.05)] = None,
    heartbeat_file: Annotated[str | None, typer.Option(
        help="a file touched on every loop and while a call runs (a container's health check "
             "reads its age; default: the file's worker.heartbeat_file)")] = None,
) -> None:
    """Work Active tasks with their assigned agents (DATABASE_URL as vos_app).

    Each task goes to its assignee's model chain with the top passages for it; every attempt
    is priced into the ledger and reserved against the agent's budget first.
    """
    import os
    import socket

    from app.agents.config import build_router
    from app.agents.embeddings import build_retrieval_embedder
    from app.agents.ledger import PostgresAccounting
    from app.agents.run import breakers_of
    from app.agents.sanitize import Sanitizer
    from app.agents.spec import AgentsFileError, load_agents_file
    from app.agents.workforce import Workforce
    from app.main import database, serve_worker

    try:
        cfg = load_agents_file(config)
    except AgentsFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:  # the file's `embedding:` provider (None: the embedded default); key by env name
        embedder = None if cfg.embedding is None else build_retrieval_embedder(
            cfg.embedding, os.environ, sanitizer=Sanitizer(pii=tuple(cfg.pii)))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    policy = cfg.worker
    if heartbeat_file is not None:
        policy = policy.model_copy(update={"heartbeat_file": heartbeat_file})
    idle = idle_seconds if idle_seconds is not None else policy.idle_seconds
    settings = load_settings()
    name = worker_id or f"{socket.gethostname()}/{os.getpid()}"
    jsonlog.configure()  # claims, failures, reaps: one JSON line each (journald in the stack)
    from pathlib import Path

    def beat() -> None:
        """Starting is progress too: the health check reads the heartbeat file's age, and
        on an emulated CPU the imports below alone take minutes."""
        if policy.heartbeat_file:
            Path(policy.heartbeat_file).touch()

    beat()
    with database(settings) as dsn:
        # a worker starts with its stack, maybe before Postgres answers: wait (bounded)
        tenant_ids = [until_database_answers(lambda t=t: _tenant_or_exit(dsn, t))
                      for t in tenant]
        beat()

        def workforce_on(pool):
            router = build_router(cfg, PostgresAccounting(pool), dict(os.environ))
            beat()
            workforce = Workforce(
                # each agent is offered only the tools its `tools:` lists (least privilege)
                pool, router, cfg.system_prompt, (), cfg.retrieval_token_budget,
                declared={t.name: t for t in cfg.tools}, breakers=breakers_of(cfg),
                environ=dict(os.environ), embedder=embedder)
            return workforce.handle, workforce.on_settled

        try:
            # unassigned work (the door's) goes to the orchestrator; the file paces failures.
            # Not a request path: a pooled connection may take longer than the API's bound.
            # An unconfined role exits 1 with "error: …" (serve_worker, as `vos worker run`).
            worked = serve_worker(
                settings, dsn, tenant_ids, workforce_on, name, drain=drain, idle_seconds=idle,
                policy=policy, route_unassigned=True, pool_name="vos-agents", pool_size=4,
                pool_timeout=max(settings.db_timeout_seconds, 10),
                retry=until_database_answers, beat=beat)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if drain:
            typer.echo(f"worked {worked} task(s)")


@agents_app.command("apply")
def apply(
    file: Annotated[str, typer.Argument(help="the agents file (YAML or JSON)")],
    tenant: Annotated[str, typer.Option(help="tenant slug (or UUID)")],
    dry_run: Annotated[bool, typer.Option(
        help="print the diff and write nothing (the same transaction, rolled back)")] = False,
    create_tenant: Annotated[bool, typer.Option(
        help="create the tenant if it does not exist (owner DATABASE_URL; for deploys)")] =
        False,
) -> None:
    """Converge the tenant's agents and prices to FILE, printing the diff (DATABASE_URL).

    Creates agents, updates what changed, retires (never deletes) agents no longer in the
    file; adds a price version only when a deployment's `prices:` differ from the one in
    force. Idempotent: a second apply prints "no changes" and writes nothing. A bad file
    exits 2 with every problem (field and line) and writes nothing.
    """
    from app.agents.apply import apply_agents_file
    from app.agents.spec import AgentsFileError, load_agents_file
    from app.db import open_pool

    try:
        spec = load_agents_file(file)
    except AgentsFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = load_settings()
    dsn = _dsn_or_exit(settings)
    tenant_id = _tenant_or_exit(dsn, tenant, create=create_tenant and not dry_run)
    pool = open_pool(dsn, max_size=1, timeout=settings.db_timeout_seconds, name="vos-apply")
    try:
        result = apply_agents_file(pool, tenant_id, spec, dry_run=dry_run)
    except Exception as exc:  # a database refusal: say it, nothing was written
        typer.echo(f"error: apply failed, nothing written: {type(exc).__name__}: {exc}",
                   err=True)
        raise typer.Exit(1) from None
    finally:
        pool.close()
    typer.echo(("dry run, nothing written:\n" if dry_run else "") + result.report())


@agents_app.command("list")
def list_command(
    tenant: Annotated[str, typer.Option(help="tenant slug (or UUID)")],
    retired: Annotated[bool, typer.Option(help="include retired agents")] = True,
) -> None:
    """The tenant's agents: name, role, manager, chain, budget/period, spent, retired."""
    rows = _agents_or_exit(tenant)
    typer.echo(f"{'name':<20} {'role':<24} {'manager':<16} {'chain':<24} {'budget':>16} "
               f"{'spent':>10}  retired")
    for r in rows:
        if r["retired_at"] is not None and not retired:
            continue
        chain = ",".join((r["model_preferences"] or {}).get("chain") or []) or "(default)"
        typer.echo(f"{r['name'][:20]:<20} {r['role'][:24]:<24} {(r['manager'] or '-')[:16]:<16} "
                   f"{chain[:24]:<24} {_money(r['budget_usd']) + '/' + r['budget_period']:>16} "
                   f"{_money(r['spent_usd']):>10}  "
                   f"{r['retired_at'].date().isoformat() if r['retired_at'] else '-'}")


@agents_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="the agent's name")],
    tenant: Annotated[str, typer.Option(help="tenant slug (or UUID)")],
) -> None:
    """One agent in full: persona, chain, tools, run policy (approvals, step cap, per-task
    caps), budget, spend, orchestrator, retired."""
    rows = [r for r in _agents_or_exit(tenant) if r["name"] == name]
    if not rows:
        typer.echo(f"error: no agent named {name!r} in tenant {tenant}", err=True)
        raise typer.Exit(1)
    r = rows[0]
    chain = (r["model_preferences"] or {}).get("chain")
    approval, max_steps, caps = _run_policy_lines(r.get("run_policy") or {})
    for label, value in (
        ("name", r["name"]), ("id", r["id"]), ("role", r["role"] or "-"),
        ("manager", r["manager"] or "-"),
        ("orchestrator", "yes" if r["is_orchestrator"] else "no"),
        ("chain", ", ".join(chain) if chain else "(the worker's default_chain)"),
        ("tools", ", ".join(r["tools"]) or "-"),
        ("approval", approval), ("max steps", max_steps), ("task caps", caps),
        ("budget", f"{_money(r['budget_usd'])} USD per {r['budget_period']}"),
        ("spent", f"{_money(r['spent_usd'])} USD (reserved {_money(r['reserved_usd'])})"),
        ("retired", r["retired_at"].isoformat() if r["retired_at"] else "no"),
        ("updated", r["updated_at"].isoformat()),
    ):
        typer.echo(f"{label + ':':<14}{value}")
    typer.echo("persona:")
    for line in (r["persona"] or "-").splitlines():
        typer.echo(f"  {line}")


def _run_policy_lines(policy: dict) -> tuple[str, str, str]:
    """(approval, max steps, task caps) as `show` prints them, from agents.run_policy (empty
    for an agent not applied since migration 0308: the file's defaults apply)."""
    if not policy:
        return "-", "8 (the default: apply the agents file to store its run policy)", "-"
    gates = policy.get("approval") or {}
    approval = ", ".join((["before delegating"] if gates.get("delegate") else [])
                         + [f"before calling {t}" for t in gates.get("tools") or []]) or "-"
    caps = [f"{_money(policy['task_budget_usd'])} USD"] \
        if policy.get("task_budget_usd") is not None else []
    if policy.get("task_token_cap") is not None:
        caps.append(f"{policy['task_token_cap']} tokens")
    per_task = " and ".join(caps) + " per task" if caps else "-"
    return approval, str(policy.get("max_steps", 8)), per_task


def _money(value) -> str:
    from decimal import Decimal

    return f"{Decimal(value or 0).normalize():f}"


def _agents_or_exit(tenant: str) -> list[dict]:
    from app.db import open_pool, tenant_transaction

    settings = load_settings()
    dsn = _dsn_or_exit(settings)
    tenant_id = _tenant_or_exit(dsn, tenant)
    pool = open_pool(dsn, max_size=1, timeout=settings.db_timeout_seconds, name="vos-agents")
    try:
        with tenant_transaction(pool, tenant_id) as conn:
            return conn.execute(
                """SELECT a.*, m.name AS manager, coalesce(s.spent_usd, 0) AS spent_usd,
                          coalesce(s.reserved_usd, 0) AS reserved_usd
                     FROM agents a LEFT JOIN agents m ON m.id = a.manager_id
                     LEFT JOIN agent_spend s ON s.agent_id = a.id
                    WHERE a.tenant_id = %s  -- also when the owner role bypasses RLS
                    ORDER BY a.retired_at IS NOT NULL, a.name""", [tenant_id]).fetchall()
    finally:
        pool.close()


def _dsn_or_exit(settings) -> str:
    """DATABASE_URL: these commands change or read one tenant's real data, so they never
    start the embedded server implicitly."""
    if settings.database_url is None:
        typer.echo("error: set DATABASE_URL (as vos_app, or the owner role for "
                   "--create-tenant)", err=True)
        raise typer.Exit(2)
    return settings.database_url.get_secret_value()


def until_database_answers(step, limit_seconds: float = 300.0):
    """`step()`, retried while Postgres does not answer (OperationalError), with growing
    pauses (1 s … 15 s) for at most `limit_seconds`; each wait is one JSON line.

    Example:
        tenant_id = until_database_answers(lambda: _tenant_or_exit(dsn, "acme"))
    """
    import logging

    import psycopg

    deadline, pause = time.monotonic() + limit_seconds, 1.0
    while True:
        try:
            return step()
        except psycopg.OperationalError as exc:
            if time.monotonic() + pause > deadline:
                raise
            jsonlog.emit(logging.getLogger("vos.worker"), "db_unavailable_at_start",
                         level=logging.WARNING, error=type(exc).__name__,
                         retry_in_seconds=pause)
            time.sleep(pause)
            pause = min(pause * 2, 15.0)


def _tenant_or_exit(dsn: str, tenant: str, *, create: bool = False):
    """The tenant's UUID from a slug or UUID, or exit 2 saying what to do."""
    from app.agents.apply import TenantNotFound, resolve_tenant

    try:
        return resolve_tenant(dsn, tenant, create=create)
    except (TenantNotFound, ValueError) as exc:
        typer.echo(f"error: --tenant: {exc}", err=True)
        raise typer.Exit(2) from None


@agents_app.command("seed-prices")
def seed_prices_command(
    tenant: Annotated[str, typer.Option(help="tenant UUID whose price table to fill")],
) -> None:
    """Add the built-in list prices to a tenant's versioned price table (DATABASE_URL).

    Existing versions are kept; later prices go in as new rows with a later effective_from.
    """
    import uuid

    from app.agents.ledger import seed_prices
    from app.db import open_pool, tenant_transaction
    from app.main import database

    try:
        tenant_id = uuid.UUID(tenant)
    except ValueError:
        typer.echo("error: --tenant takes a tenant UUID (`vos tenant create` prints it)", err=True)
        raise typer.Exit(2) from None
    settings = load_settings()
    with database(settings) as dsn:
        pool = open_pool(dsn, max_size=1, timeout=settings.db_timeout_seconds, name="vos-prices")
        try:
            with tenant_transaction(pool, tenant_id, actor="cli") as conn:
                added = seed_prices(conn, tenant_id)
        finally:
            pool.close()
    typer.echo(f"added {added} price version(s) for tenant {tenant_id}")


@agents_app.command("prices")
def prices() -> None:
    """Print the built-in list prices (USD per million tokens) that `seed_prices` installs."""
    from app.agents.prices import DEFAULT_PRICES

    typer.echo(f"{'provider':<11} {'model':<30} {'input':>8} {'output':>8} {'c.read':>8} "
               f"{'c.write':>8}  version")
    for p in DEFAULT_PRICES:
        typer.echo(f"{p.provider:<11} {p.model:<30} {p.input_per_mtok:>8} {p.output_per_mtok:>8} "
                   f"{p.cache_read_per_mtok:>8} {p.cache_write_per_mtok:>8}  {p.version}")


def register(cli: typer.Typer) -> None:
    """Attach `vos agents …` to the top-level CLI."""
    cli.add_typer(agents_app, name="agents")
