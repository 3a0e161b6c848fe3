"""`vos fake-providers` and `vos agents …`: the workforce's commands (thin; work is in app/agents).

Example:
    vos fake-providers --base-port 18000 --script anthropic=429:2,529
    vos agents sanitize < runbook.md
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

agents_app = typer.Typer(help="The agent workforce: work tasks, sanitizer, price table.",
                         no_args_is_help=True)


def fake_providers(
    base_port: Annotated[int, typer.Option(
        help="first port (anthropic; openai, openrouter and ollama follow); 0 = free ports",
        min=0, max=65530)] = 0,
    api_key: Annotated[str, typer.Option(help="the key the fakes accept (not a real key)")] =
        "fake-key",
    script: Annotated[list[str] | None, typer.Option(
        help="queue failures: NAME=SPEC[,SPEC…], SPEC is 429[:secs], 500, 503, 529, 401, "
             "400 or context; repeatable")] = None,
    duration: Annotated[float, typer.Option(
        help="stop after this many seconds (0 = until Ctrl-C)", min=0)] = 0,
) -> None:
    """Serve fake Anthropic, OpenAI, OpenRouter and Ollama APIs on 127.0.0.1.

    They speak each wire format (JSON and streaming), report usage with cache fields computed
    from the prefixes they have seen, and fail on demand. Point the SDKs' base_url at them.
    """
    from app.agents.fakes import start_fake_fleet

    fleet = start_fake_fleet(api_key=api_key, base_port=base_port)
    try:
        for entry in script or []:
            name, _, specs = entry.partition("=")
            if name not in fleet or not specs:
                raise typer.BadParameter(
                    f"--script {entry!r}: use NAME=SPEC[,SPEC…] with NAME one of {sorted(fleet)}")
            fleet[name].script(*specs.split(","))
        for name, server in fleet.items():
            typer.echo(f"{name:<11} {server.wire:<10} base_url={server.base_url}")
        typer.echo(f"api key: {api_key!r}. Ctrl-C stops." if not duration
                   else f"api key: {api_key!r}. Stopping after {duration:g}s.")
        deadline = time.monotonic() + duration if duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for server in fleet.values():
            server.stop()
        typer.echo("fake providers stopped")


@agents_app.command("sanitize")
def sanitize(
    pii: Annotated[list[str] | None, typer.Option(
        help="PII patterns to redact as well (email, phone, iban, credit_card)")] = None,
) -> None:
    """Redact secrets (and PII) from stdin exactly as before a provider call; print to stdout.

    A count per kind goes to stderr, so you can check a document before ingesting it.
    """
    from app.agents.sanitize import Sanitizer

    try:
        sanitizer = Sanitizer(pii=tuple(pii) if pii is not None else ("email",))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    result = sanitizer.redact(sys.stdin.read())
    sys.stdout.write(result.text)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items())) or "nothing"
    typer.echo(f"redacted: {summary}", err=True)


@agents_app.command("work")
def work(
    tenant: Annotated[list[str], typer.Option(help="tenant UUID to serve (repeatable)")],
    config: Annotated[str, typer.Option(
        help="workforce config: a JSON file path (deployments, default_chain, retry, pii, "
             "system_prompt, tools); API keys are named by env var, never written in it")],
    worker_id: Annotated[str | None, typer.Option(
        "--id", help="this worker's name in claims and events (default: host/pid)")] = None,
    drain: Annotated[bool, typer.Option(help="stop when every queue is empty")] = False,
    idle_seconds: Annotated[float, typer.Option(help="poll interval when idle", min=0.05)] = 1.0,
) -> None:
    """Work Active tasks with their assigned agents (DATABASE_URL as vos_app).

    Each task goes to its assignee's model chain with the top passages for it; every attempt
    is priced into the ledger and reserved against the agent's budget first.
    """
    import os
    import socket
    import uuid
    from pathlib import Path

    from pydantic import ValidationError

    from app.agents.config import WorkforceConfig, build_router, tool_specs
    from app.agents.ledger import PostgresAccounting
    from app.agents.workforce import Workforce
    from app.db import assert_app_role_is_confined, open_pool
    from app.dispatch.worker import Worker
    from app.main import database

    try:
        tenant_ids = [uuid.UUID(t) for t in tenant]
        cfg = WorkforceConfig.model_validate_json(Path(config).read_text())
    except (ValueError, OSError, ValidationError) as exc:
        typer.echo(f"error: {exc}\n(--tenant takes UUIDs; --config a readable JSON file)",
                   err=True)
        raise typer.Exit(2) from None
    settings = _load_settings()
    name = worker_id or f"{socket.gethostname()}/{os.getpid()}"
    with database(settings) as dsn:
        pool = open_pool(dsn, max_size=4, timeout=settings.db_timeout_seconds,
                         name="vos-agents")
        try:
            assert_app_role_is_confined(pool)
            router = build_router(cfg, PostgresAccounting(pool), dict(os.environ))
            workforce = Workforce(pool, router, cfg.system_prompt, tool_specs(cfg),
                                  cfg.retrieval_token_budget)
            worker = Worker(pool, name, workforce.handle)
            if not drain:
                worker.serve(tenant_ids, idle_seconds=idle_seconds)
                return
            worked = worker.drain(tenant_ids)
            typer.echo(f"worked {worked} task(s)")
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            pool.close()


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
    settings = _load_settings()
    with database(settings) as dsn:
        pool = open_pool(dsn, max_size=1, timeout=settings.db_timeout_seconds, name="vos-prices")
        try:
            with tenant_transaction(pool, tenant_id, actor="cli") as conn:
                added = seed_prices(conn, tenant_id)
        finally:
            pool.close()
    typer.echo(f"added {added} price version(s) for tenant {tenant_id}")


def _load_settings():
    """The app's settings, or exit 2 naming what is wrong (the same rule as every `vos` app
    command; imported late because app.cli imports this module)."""
    from app.cli import _settings

    return _settings()


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
    """Attach `vos fake-providers` and `vos agents …` to the top-level CLI."""
    cli.command("fake-providers")(fake_providers)
    cli.add_typer(agents_app, name="agents")
