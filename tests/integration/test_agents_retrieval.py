"""Surgical retrieval from Postgres full-text search: the right passages, under budget."""

import psycopg
import pytest

from app.agents.retrieval import add_document, format_passages, retrieve, split_passages
from app.agents.tokens import estimate_tokens
from app.db import tenant_transaction

FILLER = ("The platform team reviews this section every quarter and keeps the wording short. "
          "Changes go through the usual review and the operator signs them off. ")
RUNBOOK = "\n\n".join([
    FILLER * 3 + "The door service terminates TLS on port 443 and forwards webhooks.",
    FILLER * 3 + "WireGuard keys on the mesh rotate every ninety days; the rotation owner "
                 "is Priya and the interface is tailscale0.",
    FILLER * 3 + "Backups are encrypted with the age public key and shipped nightly at "
                 "02:30 UTC to the object store.",
    FILLER * 3 + "Fail2ban bans a source after five bad signatures within ten minutes.",
])
HANDBOOK = "\n\n".join([
    FILLER * 3 + "Expense reports are due on the fifth working day of the month.",
    FILLER * 3 + "The office coffee machine is descaled on Fridays.",
])


@pytest.fixture
def corpus(make_tenant, app_pool):
    tenant = make_tenant("docs")
    with tenant_transaction(app_pool, tenant.id) as conn:
        add_document(conn, tenant.id, "Runbook", RUNBOOK, source="wiki/runbook")
        add_document(conn, tenant.id, "Handbook", HANDBOOK)
    return tenant


def test_split_keeps_passages_under_the_cap():
    passages = split_passages(RUNBOOK, target_tokens=60, max_tokens=80)
    assert len(passages) >= 4
    assert all(estimate_tokens(p) <= 80 for p in passages)
    assert "".join(passages).replace("\n", "").replace(" ", "") == \
        RUNBOOK.replace("\n", "").replace(" ", "")


def test_the_passage_with_the_facts_comes_first(corpus, app_pool):
    with tenant_transaction(app_pool, corpus.id) as conn:
        picked = retrieve(conn, "Who owns the WireGuard key rotation on the mesh?",
                          token_budget=400)
    assert picked and "rotation owner is Priya" in picked[0].body
    assert picked[0].title == "Runbook"
    assert not any("coffee" in p.body for p in picked)


def test_passages_fit_the_token_budget_and_never_a_whole_document(corpus, app_pool):
    with tenant_transaction(app_pool, corpus.id) as conn:
        n_runbook = conn.execute(
            "SELECT count(*) AS n FROM passages p JOIN documents d ON d.id = p.document_id "
            "WHERE d.title = 'Runbook'").fetchone()["n"]
        # A query touching every runbook passage, with a budget for ~2 of them.
        picked = retrieve(conn, "door port 443 WireGuard rotation backups age fail2ban bans",
                          token_budget=200, min_relative_score=0)
    assert n_runbook == 4
    assert 1 <= len(picked) < n_runbook
    assert sum(p.tokens for p in picked) <= 200
    assert format_passages(picked).startswith("[Runbook §")


def test_a_query_with_no_known_words_returns_nothing(corpus, app_pool):
    with tenant_transaction(app_pool, corpus.id) as conn:
        assert retrieve(conn, "zebra xylophone", token_budget=500) == []
        assert retrieve(conn, "port 443", token_budget=0) == []


def test_passages_are_tenant_scoped(corpus, app_pool, make_tenant):
    other = make_tenant("nosy")
    with tenant_transaction(app_pool, other.id) as conn:
        assert retrieve(conn, "WireGuard rotation owner", token_budget=500) == []
        assert conn.execute("SELECT count(*) AS n FROM passages").fetchone()["n"] == 0


def test_a_passage_cannot_be_written_into_another_tenant(corpus, app_pool, make_tenant):
    other = make_tenant("intruder")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with tenant_transaction(app_pool, other.id) as conn:
            add_document(conn, corpus.id, "Planted", "text planted into another tenant")


def test_an_empty_document_is_refused_and_nothing_is_written(corpus, app_pool):
    with pytest.raises(ValueError, match="has no text"):
        with tenant_transaction(app_pool, corpus.id) as conn:
            add_document(conn, corpus.id, "Empty", "  \n\n ")
    with tenant_transaction(app_pool, corpus.id) as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 2
