"""The agents file's `embedding:` provider, end to end, against a real Postgres and the fakes:
passages and queries embedded by Ollama's `/api/embed`, a switch to an OpenAI-compatible
`/v1/embeddings` re-embedding every passage once, an outage degrading to lexical ranking,
a changed dimension refused, and `vos docs add --config` / `vos agents work --config` using
the file's provider."""

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from app.agents.embeddings import (
    EmbeddingDimensionError,
    EmbeddingUnavailable,
    ProviderEmbedder,
    build_retrieval_embedder,
    default_embedder,
)
from app.agents.providers import build_embedder
from app.agents.retrieval import add_document, embed_text, retrieve
from app.agents.spec import EmbeddingConfig
from app.db import tenant_transaction
from app.dispatch.tasks import create_agent, create_task
from cli import cli
from devtools.fakes import FakeProviderServer, start_fake_fleet

runner = CliRunner()
OPENAI_KEY = "sk-emb-test-00000000000000000000"

HANDBOOK = """# Harbour handbook

## Mooring

Lines are doubled when the forecast shows a gale. Fenders stay out until departure.

## Pilotage

Vessels over 80 metres take a pilot at the fairway buoy; the pilot boards from the east.

## Waste

Oily waste is landed at the reception barge, never at the fish quay.
"""

# 70 sections: more passages than one embedding request carries (64)
BERTHS = "# Berth register\n\n" + "\n\n".join(
    f"## Berth {n}\n\nBerth {n} takes hulls up to {20 + n} metres." for n in range(1, 71))


def _embed_requests(server, path):
    return [r.json() for r in server.received if r.path == path]


def _inputs(requests):
    return [text for body in requests for text in body["input"]]


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.events = []

    def emit(self, record):
        try:
            self.events.append(json.loads(record.getMessage()))
        except ValueError:
            pass


@pytest.fixture
def warnings_logged():
    """The `vos.retrieval` JSON events (a handler of its own: `jsonlog.configure`, run by
    other tests in the session, stops `vos.*` propagating to pytest's capture)."""
    handler = _Captured()
    logger = logging.getLogger("vos.retrieval")
    logger.addHandler(handler)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def ollama():
    server = FakeProviderServer("ollama").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_fake():
    server = FakeProviderServer("openai", api_key=OPENAI_KEY).start()
    try:
        yield server
    finally:
        server.stop()


def _ollama_embedder(server, model="nomic-embed-text"):
    return build_retrieval_embedder(
        EmbeddingConfig(provider="ollama", base_url=server.base_url, model=model), {})


def _models(conn):
    return {r["embedding_model"] for r in conn.execute("SELECT embedding_model FROM passages")}


def test_no_embedding_block_is_the_embedded_default():
    assert build_retrieval_embedder(None, {}) is default_embedder()


def test_a_missing_key_names_the_variable():
    config = EmbeddingConfig(provider="openai", base_url="https://api.openai.com/v1",
                             model="text-embedding-3-small", api_key_env="EMBED_KEY_UNSET")
    with pytest.raises(ValueError, match="set the environment variable EMBED_KEY_UNSET"):
        build_retrieval_embedder(config, {})


def test_provider_vectors_are_batched_unit_float32_rows(ollama):
    embedder = _ollama_embedder(ollama)
    vectors = embedder.embed([f"text number {i}" for i in range(130)])
    assert embedder.name == "ollama/nomic-embed-text"
    assert vectors.dtype == np.float32 and vectors.shape == (130, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert [len(b["input"]) for b in _embed_requests(ollama, "/api/embed")] == [64, 64, 2]
    assert embedder.embed([]).shape == (0, 16)


def test_ollama_then_a_switch_to_openai_re_embeds_every_passage_once(
        make_tenant, app_pool, ollama, openai_fake):
    tenant = make_tenant("embed-switch")
    first = _ollama_embedder(ollama)
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=first)
        add_document(conn, tenant.id, "Berth register", BERTHS, target_tokens=20,
                     embedder=first)
        passages = conn.execute("SELECT title, heading, body FROM passages").fetchall()
        stored = _inputs(_embed_requests(ollama, "/api/embed"))
        picked = retrieve(conn, "where does the pilot come aboard", 40, embedder=first)
        query = _embed_requests(ollama, "/api/embed")[-1]["input"]
        asked_ollama = len(_embed_requests(ollama, "/api/embed"))
        assert _models(conn) == {"ollama/nomic-embed-text"}
    expected = sorted(embed_text(p["title"], p["heading"], p["body"]) for p in passages)
    assert len(passages) > 64
    assert sorted(stored) == expected  # the fake received every passage (with its place)
    assert query == ["where does the pilot come aboard"]  # … and the query
    assert picked and "pilot boards" in picked[0].body

    # the tenant's file now names an OpenAI-compatible /v1/embeddings (key by env name)
    second = build_retrieval_embedder(
        EmbeddingConfig(provider="openai", base_url=openai_fake.base_url,
                        model="text-embedding-3-small", api_key_env="TEST_EMBED_KEY"),
        {"TEST_EMBED_KEY": OPENAI_KEY})
    with tenant_transaction(app_pool, tenant.id) as conn:
        picked = retrieve(conn, "oily waste reception", 40, embedder=second)
        switch = _embed_requests(openai_fake, "/v1/embeddings")
        again = retrieve(conn, "which berth takes hulls of 75 metres", 40, embedder=second)
        after = _embed_requests(openai_fake, "/v1/embeddings")
        assert _models(conn) == {"openai/text-embedding-3-small"}
        if conn.execute("SELECT pg_typeof(embedding)::text AS t FROM passages LIMIT 1"
                        ).fetchone()["t"] == "real[]":
            dims = {len(r["embedding"]) for r in conn.execute("SELECT embedding FROM passages")}
            assert dims == {16}
    reembedded = _inputs(switch[:-1])
    assert sorted(reembedded) == expected  # every passage once, no more
    assert [len(b["input"]) for b in switch[:-1]] == [64, len(expected) - 64]
    assert switch[-1]["input"] == ["oily waste reception"]
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}"
               for r in openai_fake.received)
    assert picked and "reception barge" in picked[0].body
    assert len(after) == len(switch) + 1  # the next query re-embeds nothing
    assert again and "Berth 55 takes hulls up to 75 metres" in again[0].body
    assert len(_embed_requests(ollama, "/api/embed")) == asked_ollama  # the old: not asked


def test_an_outage_at_query_time_ranks_lexically_and_logs_it(
        make_tenant, app_pool, ollama, warnings_logged):
    tenant = make_tenant("embed-outage")
    embedder = _ollama_embedder(ollama)
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=embedder)
        healthy = retrieve(conn, "where does the pilot board", 40, embedder=embedder)
        ollama.script("503")  # the next embed request fails
        degraded = retrieve(conn, "where does the pilot board", 40, embedder=embedder)
        recovered = retrieve(conn, "where does the pilot board", 40, embedder=embedder)
    assert healthy and "pilot boards" in healthy[0].body
    assert degraded and "pilot boards" in degraded[0].body  # the lexical side still finds it
    assert recovered == healthy
    [event] = [e for e in warnings_logged if e["event"] == "embedding_unavailable"]
    assert event["model"] == "ollama/nomic-embed-text" and event["step"] == "query"
    assert event["fallback"] == "lexical"


def test_an_outage_while_re_embedding_ranks_lexically_and_re_embeds_later(
        make_tenant, app_pool, ollama, warnings_logged):
    tenant = make_tenant("embed-outage-switch")
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=_ollama_embedder(ollama))
    switched = _ollama_embedder(ollama, "mxbai-embed-large")
    ollama.script("503")
    with tenant_transaction(app_pool, tenant.id) as conn:
        degraded = retrieve(conn, "oily waste reception", 40, embedder=switched)
        models_during = _models(conn)
    with tenant_transaction(app_pool, tenant.id) as conn:
        recovered = retrieve(conn, "oily waste reception", 40, embedder=switched)
        models_after = _models(conn)
    assert degraded and "reception barge" in degraded[0].body
    assert models_during == {"ollama/nomic-embed-text"}  # nothing half-switched
    assert recovered and "reception barge" in recovered[0].body
    assert models_after == {"ollama/mxbai-embed-large"}
    steps = [e["step"] for e in warnings_logged if e["event"] == "embedding_unavailable"]
    assert steps == ["reembed"]  # the query is not embedded once vectors are known stale


def test_an_unreachable_provider_at_ingest_raises_and_a_stopped_one_at_query_degrades(
        make_tenant, app_pool, warnings_logged):
    tenant = make_tenant("embed-down")
    down = ProviderEmbedder(build_embedder("ollama", "http://127.0.0.1:9", "nomic-embed-text",
                                           timeout=2), "ollama")
    with tenant_transaction(app_pool, tenant.id) as conn:
        with pytest.raises(EmbeddingUnavailable, match="ollama/nomic-embed-text"):
            add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, embedder=down)
    server = FakeProviderServer("ollama").start()
    embedder = _ollama_embedder(server)
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=embedder)
    server.stop()  # connection refused from now on (for a new connection: a fresh client)
    with tenant_transaction(app_pool, tenant.id) as conn:
        picked = retrieve(conn, "fenders and mooring lines in a gale", 40,
                          embedder=_ollama_embedder(server))
    assert picked and "Fenders stay out" in picked[0].body
    assert any(e["event"] == "embedding_unavailable" for e in warnings_logged)


class _Resized:
    """The same model name answering with another dimension (the model behind it changed)."""

    name = "ollama/nomic-embed-text"

    def embed(self, texts):
        rows = np.ones((len(texts), 8), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_changed_dimension_under_the_same_name_is_a_clear_error(make_tenant, app_pool,
                                                                  ollama):
    tenant = make_tenant("embed-dim")
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=_ollama_embedder(ollama))
        with pytest.raises(EmbeddingDimensionError, match="returns 8-dimension vectors but "
                                                          "the tenant's passages .* have 16"):
            retrieve(conn, "where does the pilot board", 40, embedder=_Resized())
        with pytest.raises(EmbeddingDimensionError, match="model behind that name changed"):
            add_document(conn, tenant.id, "Ice notice", "## Ice\n\nThe slipway is gritted.",
                         embedder=_Resized())


def _agents_file(path, chat_url, embedding):
    path.write_text(json.dumps({
        "deployments": [
            {"name": "gpt", "provider": "openai", "base_url": chat_url,
             "model": "gpt-4.1", "context_window": 1000000, "api_key_env": "TEST_OAI_KEY",
             "max_output_tokens": 32}],
        "embedding": embedding}))
    return path


def test_docs_add_and_agents_work_embed_with_the_files_provider(
        app_pool, app_dsn, make_tenant, tmp_path):
    fleet = start_fake_fleet(api_key=OPENAI_KEY)
    ollama = fleet["ollama"]
    try:
        tenant = make_tenant("embed-cli")
        config = _agents_file(tmp_path / "agents.json", fleet["openai"].base_url, {
            "provider": "ollama", "base_url": ollama.base_url, "model": "nomic-embed-text"})
        doc = tmp_path / "handbook.md"
        doc.write_text(HANDBOOK)
        env = {"DATABASE_URL": app_dsn, "TEST_OAI_KEY": OPENAI_KEY}

        added = runner.invoke(cli, ["docs", "add", str(doc), "--tenant", str(tenant.id),
                                    "--config", str(config)], env=env)
        assert added.exit_code == 0, added.output
        assert "embedded by ollama/nomic-embed-text" in added.output
        embedded = _inputs(_embed_requests(ollama, "/api/embed"))
        with tenant_transaction(app_pool, tenant.id) as conn:
            assert _models(conn) == {"ollama/nomic-embed-text"}
            n = conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"]
            agent = create_agent(conn, tenant.id, name="ops", persona="You are Ops.",
                                 budget_usd="1")
            create_task(conn, tenant.id, title="Where does the pilot board a vessel?",
                        assignee_id=agent["id"], status="Active")
        assert len(embedded) == n and any("fairway buoy" in t for t in embedded)
        seeded = runner.invoke(cli, ["agents", "seed-prices", "--tenant", str(tenant.id)],
                               env=env)
        assert seeded.exit_code == 0, seeded.output

        ollama.received.clear()
        worked = runner.invoke(cli, ["agents", "work", "--tenant", str(tenant.id), "--config",
                                     str(config), "--drain", "--id", "cli/embed"], env=env)
        assert worked.exit_code == 0, worked.output
        assert "worked 1 task(s)" in worked.output
        queries = _inputs(_embed_requests(ollama, "/api/embed"))
        assert any("Where does the pilot board a vessel?" in q for q in queries)
        prompt = fleet["openai"].received[-1].body.decode()
        assert "the pilot boards from the east" in prompt  # the passage reached the model
    finally:
        for server in fleet.values():
            server.stop()


def test_docs_add_with_the_provider_down_writes_nothing(app_pool, app_dsn, make_tenant,
                                                        tmp_path):
    tenant = make_tenant("embed-cli-down")
    config = _agents_file(tmp_path / "agents.json", "http://127.0.0.1:9/v1", {
        "provider": "ollama", "base_url": "http://127.0.0.1:9", "model": "nomic-embed-text"})
    doc = tmp_path / "handbook.md"
    doc.write_text(HANDBOOK)
    result = runner.invoke(cli, ["docs", "add", str(doc), "--tenant", str(tenant.id),
                                 "--config", str(config)], env={"DATABASE_URL": app_dsn})
    assert result.exit_code == 1
    assert "embedding provider ollama/nomic-embed-text unavailable" in result.output
    assert "nothing was written" in result.output
    with tenant_transaction(app_pool, tenant.id) as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0


def test_a_missing_embedding_key_is_a_clear_error_for_work_and_docs(app_dsn, make_tenant,
                                                                    tmp_path):
    tenant = make_tenant("embed-nokey")
    config = _agents_file(tmp_path / "agents.json", "http://127.0.0.1:9/v1", {
        "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
        "model": "text-embedding-3-small", "api_key_env": "MISSING_EMBED_KEY"})
    env = {"DATABASE_URL": app_dsn, "TEST_OAI_KEY": OPENAI_KEY}
    worked = runner.invoke(cli, ["agents", "work", "--tenant", str(tenant.id), "--config",
                                 str(config), "--drain"], env=env)
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nText.")
    added = runner.invoke(cli, ["docs", "add", str(doc), "--tenant", str(tenant.id),
                                "--config", str(config)], env=env)
    for result in (worked, added):
        assert result.exit_code == 2, result.output
        assert "set the environment variable MISSING_EMBED_KEY" in result.output
