"""Hybrid retrieval in a real Postgres: weighted titles and headings, vectors (pgvector or
the real[] fallback), the per-process vector cache, and re-embedding after a model change."""

import numpy as np
import pytest

from app.agents.embeddings import default_embedder, normalise
from app.agents.retrieval import (
    add_document,
    embedding_kind,
    reembed,
    retrieve,
    search_knowledge,
)
from app.db import tenant_transaction

CLIENT_PAGE = """# Support contract

## Response times

Priority one tickets are answered within {hours} hours, day or night.

## Escalation

Unresolved tickets go to the account manager after two working days.
"""

HANDBOOK = """# Harbour handbook

## Mooring

Lines are doubled when the forecast shows a gale. Fenders stay out until departure.

## Pilotage

Vessels over 80 metres take a pilot at the fairway buoy; the pilot boards from the east.

## Waste

Oily waste is landed at the reception barge, never at the fish quay.
"""


class HashEmbedder:
    """A second, deliberately different embedding model (a fixed random projection of
    character trigrams): enough to prove that vectors follow the configured model."""

    name = "test/trigram-16"

    def embed(self, texts):
        rows = []
        for text in texts:
            row = np.zeros(16, dtype=np.float32)
            for i in range(max(0, len(text) - 2)):
                row[hash(text[i:i + 3]) % 16] += 1
            rows.append(row)
        return normalise(np.array(rows).reshape(len(texts), 16))


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("hybrid")


def test_the_document_title_is_searchable_among_near_identical_pages(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        for client, hours in (("Abernethy Salmon", 4), ("Brodie Haulage", 8),
                              ("Corrie Distillers", 12)):
            add_document(conn, tenant.id, f"{client}: support contract",
                         CLIENT_PAGE.format(hours=hours))
        picked = retrieve(conn, "How fast must we answer a priority one ticket for Brodie?",
                          token_budget=60)
    assert picked, "nothing retrieved"
    assert picked[0].title == "Brodie Haulage: support contract"
    assert "within 8 hours" in picked[0].body


def test_passages_store_heading_path_and_title_and_headings_weigh_in(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        rows = conn.execute("SELECT heading, title, body FROM passages ORDER BY ordinal"
                            ).fetchall()
        # the word "pilotage" is only in a heading: the section is still found, first
        picked = retrieve(conn, "pilotage rules", token_budget=40)
    pilot = next(r for r in rows if "fairway buoy" in r["body"])
    assert pilot["heading"] == "Harbour handbook › Pilotage"
    assert {r["title"] for r in rows} == {"Harbour handbook"}
    assert not any(r["body"].rstrip().endswith(("## Waste", "Waste")) for r in rows)
    assert picked and "fairway buoy" in picked[0].body
    assert picked[0].heading == "Harbour handbook › Pilotage"


def test_vectors_use_pgvector_when_the_server_has_it_else_a_real_array(tenant, app_pool,
                                                                        owner_dsn):
    import psycopg

    with psycopg.connect(owner_dsn) as owner:
        available = owner.execute("SELECT EXISTS (SELECT 1 FROM pg_available_extensions "
                                  "WHERE name = 'vector')").fetchone()[0]
        installed = owner.execute("SELECT EXISTS (SELECT 1 FROM pg_extension "
                                  "WHERE extname = 'vector')").fetchone()[0]
        column = owner.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'passages'::regclass AND attname = 'embedding'").fetchone()[0]
    assert installed == available or not installed
    assert column == ("vector" if installed else "real[]")
    with tenant_transaction(app_pool, tenant.id) as conn:
        assert embedding_kind(conn) == ("vector" if installed else "array")
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        stored = conn.execute("SELECT embedding_model, embedding FROM passages").fetchall()
        picked = retrieve(conn, "where does the pilot come aboard", token_budget=40)
    assert {r["embedding_model"] for r in stored} == {default_embedder().name}
    if not installed:  # the fallback path: one unit-length 256-float array per passage
        assert all(len(r["embedding"]) == 256 for r in stored)
        assert all(abs(np.linalg.norm(r["embedding"]) - 1) < 1e-4 for r in stored)
    assert picked and "pilot boards" in picked[0].body


def test_a_new_document_is_seen_at_once_despite_the_vector_cache(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        retrieve(conn, "pilot", token_budget=40)  # fills the per-process cache
        add_document(conn, tenant.id, "Ice notice",
                     "## Ice\n\nIn hard frost the slipway is gritted before the first sailing.")
        picked = retrieve(conn, "is the slipway gritted in frost", token_budget=40)
        conn.execute("DELETE FROM documents WHERE title = 'Ice notice'")
        after = retrieve(conn, "is the slipway gritted in frost", token_budget=200)
    assert picked and picked[0].title == "Ice notice"
    assert all(p.title != "Ice notice" for p in after)


def test_passages_from_another_model_are_re_embedded_on_use(tenant, app_pool):
    other = HashEmbedder()
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20,
                     embedder=other)
        before = {r["embedding_model"] for r in conn.execute(
            "SELECT embedding_model FROM passages")}
        picked = retrieve(conn, "oily waste reception", token_budget=40)
        after = {r["embedding_model"] for r in conn.execute(
            "SELECT embedding_model FROM passages")}
        assert reembed(conn, default_embedder()) == 0  # nothing left to do
        switched = reembed(conn, other)
    assert before == {"test/trigram-16"}
    assert after == {default_embedder().name}
    assert picked and "reception barge" in picked[0].body
    assert switched >= 3


def test_search_knowledge_returns_passages_under_its_budget(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        found = search_knowledge(conn, "fenders and mooring lines in a gale", budget=30)
    assert found and sum(p.tokens for p in found) <= 30
    assert "Fenders stay out" in found[0].body
