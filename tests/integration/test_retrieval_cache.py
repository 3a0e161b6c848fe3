"""The per-process corpus cache behind retrieval (app/agents/retrieval.py `_CorpusCache`):
it is keyed by tenant, model, corpus version and the transaction that wrote that version,
so it never serves passages another tenant owns, that a rolled-back transaction wrote, or
that were replaced, re-embedded or removed; the in-process scoring equals the reference
definition; a warm query is two statements."""

import random

import numpy as np
import pytest

from app.agents import retrieval
from app.agents.documents import ingest, prepare, remove_document
from app.agents.embeddings import default_embedder
from app.agents.retrieval import add_document, reembed, retrieve
from app.db import tenant_transaction
from tests.integration.test_retrieval_hybrid import HANDBOOK, HashEmbedder

ICE = "## Ice\n\nIn hard frost the slipway is gritted before the first sailing."
FOG = "## Fog\n\nIn thick fog the slipway lights stay on until the last sailing berths."


class _Rollback(Exception):
    pass


@pytest.fixture
def tenant(make_tenant):
    return make_tenant("cache")


def _titles(picked):
    return {p.title for p in picked}


def test_a_rolled_back_transaction_leaves_nothing_in_the_cache(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
    seen = []
    # a transaction that adds a page, is answered from it (so it is cached), and rolls back
    with pytest.raises(_Rollback), tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Ice notice", ICE)
        seen = retrieve(conn, "is the slipway gritted in frost", token_budget=200)
        raise _Rollback
    with tenant_transaction(app_pool, tenant.id) as conn:
        # the same version number again (4 -> 5), written by another transaction
        add_document(conn, tenant.id, "Fog notice", FOG)
        after = retrieve(conn, "is the slipway gritted in frost", token_budget=200)
    assert "Ice notice" in _titles(seen)
    assert "Ice notice" not in _titles(after)
    assert "Fog notice" in _titles(after)


def test_the_cache_never_crosses_tenants(make_tenant, app_pool):
    a, b = make_tenant("cache-a"), make_tenant("cache-b")
    # the same corpus version (one insert each) and the same model in both tenants
    with tenant_transaction(app_pool, a.id) as conn:
        add_document(conn, a.id, "Ice notice", ICE)
        mine = retrieve(conn, "slipway in frost before the first sailing", token_budget=200)
    with tenant_transaction(app_pool, b.id) as conn:
        add_document(conn, b.id, "Fog notice", FOG)
        theirs = retrieve(conn, "slipway in frost before the first sailing", token_budget=200)
        ids = {r["id"] for r in conn.execute("SELECT id FROM passages")}
    assert _titles(mine) == {"Ice notice"}
    assert _titles(theirs) == {"Fog notice"}
    assert {p.id for p in theirs} <= ids


def test_a_replaced_or_removed_document_is_seen_at_once(tenant, app_pool):
    query = "what happens to the slipway in frost"
    with tenant_transaction(app_pool, tenant.id) as conn:
        ingest(conn, tenant.id, prepare("notices/ice.md", ICE.encode(), title="Ice notice"))
        before = retrieve(conn, query, token_budget=200)
        ingest(conn, tenant.id, prepare("notices/ice.md", ICE.replace("gritted", "salted")
                                        .encode(), title="Ice notice"))
        replaced = retrieve(conn, query, token_budget=200)
    with tenant_transaction(app_pool, tenant.id) as conn:  # another transaction, same process
        again = retrieve(conn, query, token_budget=200)
        remove_document(conn, "notices/ice.md")
        removed = retrieve(conn, query, token_budget=200)
    assert any("gritted" in p.body for p in before)
    assert replaced and all("salted" in p.body for p in replaced)
    assert [p.body for p in again] == [p.body for p in replaced]
    assert removed == []


def test_re_embedding_reloads_the_vectors(tenant, app_pool):
    other = HashEmbedder()
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        retrieve(conn, "pilot", token_budget=40)
        first = retrieval._corpora.get(conn, default_embedder())
        assert reembed(conn, other) >= 3  # the stored vectors now belong to another model
        second = retrieval._corpora.get(conn, other)
        picked = retrieve(conn, "oily waste reception", token_budget=40)  # back to default
        third = retrieval._corpora.get(conn, default_embedder())
    assert first.matrix is None or first.matrix.shape[1] == 256
    assert second is not first and second.dim == 16
    assert third is not first and third.dim == first.dim
    assert picked and "reception barge" in picked[0].body


def test_in_process_scores_equal_the_reference_definition(tenant, app_pool):
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK + "\n\n" + ICE + "\n\n" + FOG,
                     target_tokens=20)
        corpus = retrieval._corpora.get(conn, default_embedder())
        vocabulary = sorted(corpus.postings)
        cands = np.array(sorted(corpus.tokens), dtype=np.int64)
        rng = random.Random(15)
        for _ in range(40):
            units = [rng.sample(vocabulary, rng.randint(1, 6)) for _ in range(3)]
            idf = {t: corpus.idf(t) for unit in units for t in unit}
            got = retrieval._lexical_scores(corpus, cands, units, idf)
            for n, terms in enumerate(units):
                for k, pid in enumerate(cands.tolist()):
                    positions = retrieval._positions(corpus.tsv[pid], set(idf))
                    assert got[n][k] == retrieval._lexical_score(terms, idf, positions)


class _Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn):
        self.conn, self.statements = conn, []

    def execute(self, query, *args, **kwargs):
        self.statements.append(" ".join(str(query).split())[:60])
        return self.conn.execute(query, *args, **kwargs)


def test_a_warm_query_is_two_statements_whatever_its_clauses(tenant, app_pool):
    query = "where does the pilot board, what is done in a gale, and where does oily waste go"
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Harbour handbook", HANDBOOK, target_tokens=20)
        retrieve(conn, query, token_budget=200)  # loads the corpus
        counting = _Counting(conn)
        picked = retrieve(counting, query, token_budget=200)
    assert len(retrieval.split_clauses(query)) >= 3
    assert picked
    assert len(counting.statements) == 2, counting.statements
