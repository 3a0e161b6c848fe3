"""`vos docs add|list|remove`: the documents retrieval searches (thin; work is in documents.py).

DATABASE_URL names the `vos_app` role (an embedded Postgres is started when it is unset, in
local use, like the other commands). `--tenant` takes a slug or a tenant UUID.

Example:
    vos docs add README.md docs/ --tenant acme
    + added     README.md  (12 passages, 9.1 KiB)
    = unchanged docs/runbook.md  (4 passages, 2.3 KiB)
    vos docs add docs/ --tenant acme --config agents.yaml   # the file's embedding provider
    vos docs list --tenant acme
    vos docs remove docs/runbook.md --tenant acme
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from app.agents.documents import MAX_DOCUMENT_BYTES

docs_app = typer.Typer(help="Documents that retrieval searches: add, list, remove.",
                       no_args_is_help=True)

TenantOpt = Annotated[str, typer.Option(help="tenant slug or UUID")]


@contextlib.contextmanager
def _tenant_tx(tenant: str, actor: str) -> Iterator[tuple[object, object]]:
    """(connection, tenant id) in one tenant transaction; exits 1 if the tenant is unknown or
    Postgres unreachable (the transaction rolls back on any error: nothing half-written)."""
    import psycopg

    from app.agents.documents import resolve_tenant
    from app.clihelpers import load_settings
    from app.db import open_pool, tenant_transaction
    from app.main import database

    settings = load_settings()  # exits 2 naming the bad setting
    with database(settings, say=lambda msg: typer.echo(msg, err=True)) as dsn:
        pool = open_pool(dsn, max_size=1, timeout=settings.db_timeout_seconds, name="vos-docs")
        try:
            with pool.connection() as conn:
                tenant_id = resolve_tenant(conn, tenant)
            if tenant_id is None:
                typer.echo(f"error: no tenant with slug {tenant!r} (`vos tenant create` makes "
                           "one and prints its id)", err=True)
                raise typer.Exit(1)
            with tenant_transaction(pool, tenant_id, actor=actor) as conn:
                # the policy shows a tenant its own row: none means no such tenant
                if conn.execute("SELECT 1 FROM tenants").fetchone() is None:
                    typer.echo(f"error: no tenant with id {tenant_id}; nothing was written",
                               err=True)
                    raise typer.Exit(1)
                yield conn, tenant_id
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: cannot reach Postgres ({first}); nothing was written", err=True)
            raise typer.Exit(1) from None
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: {first}; nothing was written (rolled back)", err=True)
            raise typer.Exit(1) from None
        finally:
            pool.close()


@docs_app.command("add")
def add(
    paths: Annotated[list[Path], typer.Argument(
        help="files or directories (recursed, sorted, dotfiles skipped)")],
    tenant: TenantOpt,
    max_bytes: Annotated[int, typer.Option(
        envvar="VOS_DOCS_MAX_BYTES", min=1,
        help="refuse files larger than this many bytes")] = MAX_DOCUMENT_BYTES,
    config: Annotated[str | None, typer.Option(
        help="the tenant's agents file: passages are embedded by its `embedding:` provider "
             "(the key named by api_key_env is read from the environment), as the worker "
             "will embed queries; default: the embedded model")] = None,
) -> None:
    """Add or update documents: Markdown, plain text (.txt or no extension) and HTML.

    Keyed by tenant and source path: an unchanged file changes nothing (= unchanged), a
    changed one has its passages replaced (~ replaced), a new one is added (+ added). Every
    file is checked first; one bad file (binary, unreadable, missing, over --max-bytes)
    refuses the whole run and nothing is written.

    With --config, the tenant's passages (these and any embedded by another model) end up
    embedded by the file's embedding provider, in the same transaction; the provider
    unreachable refuses the run and nothing is written.
    """
    from app.agents.documents import DocumentError, human_size, ingest, read_paths
    from app.agents.embeddings import EmbeddingDimensionError, EmbeddingUnavailable

    embedder = _configured_embedder(config) if config else None

    try:
        docs, skipped = read_paths(paths, max_bytes=max_bytes)
    except DocumentError as exc:
        for source, why in exc.problems:
            typer.echo(f"error: {source}: {why}", err=True)
        typer.echo(f"refused: {len(exc.problems)} problem(s); nothing was written", err=True)
        raise typer.Exit(2) from None
    for source, why in skipped:
        typer.echo(f"- skipped   {source}: {why}")
    if not docs:
        typer.echo("error: no documents found in the paths given; nothing was written", err=True)
        raise typer.Exit(2)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    try:
        with _tenant_tx(tenant, "cli:docs") as (conn, tenant_id):
            for doc in docs:
                result = ingest(conn, tenant_id, doc, embedder=embedder)
                counts[result.action] += 1
                typer.echo(f"{result.symbol} {result.action:<9} {doc.source}  "
                           f"({result.passages} passages, {human_size(doc.size_bytes)})")
            if embedder is not None:
                # passages left on another model (added before the embedding block) are
                # brought to the configured one here, before commit (retrieval would
                # otherwise do it at the first query, in a worker's task)
                from app.agents.retrieval import reembed

                reembed(conn, embedder)
    except (EmbeddingUnavailable, EmbeddingDimensionError) as exc:
        typer.echo(f"error: {exc}; nothing was written (rolled back)", err=True)
        raise typer.Exit(1) from None
    typer.echo(", ".join(f"{n} {action}" for action, n in counts.items()))
    if embedder is not None:
        typer.echo(f"embedded by {embedder.name}")


@docs_app.command("list")
def list_command(tenant: TenantOpt) -> None:
    """List the tenant's documents: id, title, source, size, passages, added, updated."""
    from app.agents.documents import human_size, list_documents

    with _tenant_tx(tenant, "cli:docs") as (conn, _tenant_id):
        rows = list_documents(conn)
    if not rows:
        typer.echo("no documents (add some with `vos docs add PATH --tenant …`)")
        return
    typer.echo(f"{'ID':<36}  {'TITLE':<30}  {'SOURCE':<36}  {'SIZE':>9}  {'PASSAGES':>8}  "
               f"{'ADDED':<16}  UPDATED")
    for d in rows:
        typer.echo(f"{d['id']!s:<36}  {_cut(d['title'], 30):<30}  "
                   f"{_cut(d['source'] or '-', 36):<36}  {human_size(d['size_bytes']):>9}  "
                   f"{d['passages']:>8}  {d['created_at']:%Y-%m-%d %H:%M}  "
                   f"{d['updated_at']:%Y-%m-%d %H:%M}")


@docs_app.command("remove")
def remove(
    ref: Annotated[str, typer.Argument(help="the document's source (as listed) or its id")],
    tenant: TenantOpt,
) -> None:
    """Remove a document and its passages (retrieval stops finding them at once)."""
    from app.agents.documents import remove_document

    with _tenant_tx(tenant, "cli:docs") as (conn, _tenant_id):
        row = remove_document(conn, ref)
    if row is None:
        typer.echo(f"error: no document with source or id {ref!r} (see `vos docs list`)",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"- removed   {row['source'] or row['title']} ({row['id']})")


def _configured_embedder(config: str):
    """The embedder of the agents file at `config` (its `embedding:` block, else the
    embedded default); exits 2 on a bad file or a missing key, naming the problem."""
    import os

    from app.agents.embeddings import build_retrieval_embedder
    from app.agents.sanitize import Sanitizer
    from app.agents.spec import load_agents_file

    try:
        cfg = load_agents_file(config)
        # the worker's sanitizer (the file's `pii:`): what leaves for the provider matches
        return build_retrieval_embedder(cfg.embedding, os.environ,
                                        sanitizer=Sanitizer(pii=tuple(cfg.pii)))
    except ValueError as exc:  # AgentsFileError is one too
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def register(cli: typer.Typer) -> None:
    """Attach `vos docs …` to the top-level CLI."""
    cli.add_typer(docs_app, name="docs")
