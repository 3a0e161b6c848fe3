"""Structure-aware passages, clause splitting, RRF fusion and the offline embedded model."""

import socket

import numpy as np
import pytest

from app.agents.embeddings import WordLlamaEmbedder, normalise
from app.agents.retrieval import (
    chunk_document,
    format_passages,
    rrf,
    search_knowledge,
    split_clauses,
    split_passages,
)
from app.agents.tokens import estimate_tokens

PROSE = ("The harbour crane is inspected by the insurer's engineer once a year. " * 6).strip()

GUIDE = f"""# Harbour guide

{PROSE}

## Cranes

### Mobile crane

The mobile crane lifts at most 12 tonnes at a radius of ten metres.

{PROSE}

## Tariff

| Item | Price |
|---|---|
| Berth per metre per day | £2.10 |
| Water per cubic metre | £3.40 |

## Script

```python
# reset the tide gauge
def reset(gauge):

    gauge.zero()
    return gauge.read()
```
"""


def _chunk_with(text, needle, **kw):
    chunks = chunk_document(text, **kw)
    found = [c for c in chunks if needle in c.body]
    assert found, f"{needle!r} is in no passage"
    return found[0], chunks


def test_a_section_carries_its_heading_path_not_the_next_heading():
    chunk, chunks = _chunk_with(GUIDE, "12 tonnes", target_tokens=40, max_tokens=80)
    assert chunk.heading == "Harbour guide › Cranes › Mobile crane"
    # no passage ends with the heading of the section that follows it
    assert not any(c.body.rstrip().endswith(("## Tariff", "Tariff")) for c in chunks)
    first, _ = _chunk_with(GUIDE, "insurer's engineer", target_tokens=40, max_tokens=80)
    assert first.heading == "Harbour guide"


def test_a_table_is_kept_whole_with_its_header():
    chunk, _ = _chunk_with(GUIDE, "£3.40", target_tokens=40, max_tokens=80)
    assert chunk.heading == "Harbour guide › Tariff"
    assert chunk.body.startswith("| Item | Price |\n|---|---|")
    assert "£2.10" in chunk.body


def test_a_long_table_is_split_by_rows_each_repeating_the_header():
    rows = "\n".join(f"| Berth {i} | {i * 7} metres | dredged in 20{i:02d} |" for i in range(60))
    text = f"## Berths\n\n| Berth | Length | Dredged |\n|---|---|---|\n{rows}\n"
    chunks = chunk_document(text, target_tokens=60, max_tokens=120)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.body.startswith("| Berth | Length | Dredged |\n|---|---|---|\n| Berth ")
        assert estimate_tokens(chunk.body) <= 120
    kept = [line for c in chunks for line in c.body.split("\n")[2:]]
    assert kept == rows.split("\n")  # every row once, in order


def test_a_code_block_stays_whole_even_over_the_cap_and_hash_lines_are_not_headings():
    chunk, chunks = _chunk_with(GUIDE, "def reset", target_tokens=10, max_tokens=20)
    assert "return gauge.read()\n```" in chunk.body
    assert chunk.body.startswith("```python\n# reset the tide gauge")
    assert chunk.heading == "Harbour guide › Script"
    assert not any("reset the tide gauge" in c.heading for c in chunks)


def test_prose_passages_stay_bounded():
    text = "## Long\n\n" + " ".join(f"Sentence number {i} is about berth {i}." for i in range(400))
    chunks = chunk_document(text, target_tokens=100, max_tokens=150)
    assert len(chunks) > 5
    assert all(estimate_tokens(c.body) <= 150 for c in chunks)


def test_split_passages_keeps_its_contract():
    assert split_passages("One.\n\nTwo.", target_tokens=10) == ["One.\n\nTwo."]
    assert split_passages("   \n\n ") == []


def test_format_labels_title_and_heading():
    from app.agents.retrieval import Passage
    text = format_passages([Passage(1, "d", "Guide", 2, "Body.", 2, 0.1, "Cranes › Mobile")])
    assert text == "[Guide › Cranes › Mobile §2]\nBody."


def test_clauses_of_a_multi_part_task():
    assert split_clauses("Which berth, and what does water cost?") == \
        ["Which berth", "what does water cost?"]


def test_rrf_rewards_agreement_over_a_single_first_place():
    fused = rrf([["a", "b", "c"], ["b", "c", "a"]])
    assert [item for item, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    # an item in only one ranking still appears, after those both rankings hold
    assert [i for i, _ in rrf([["x", "y"], ["y"]])] == ["y", "x"]


@pytest.mark.parametrize("query,budget,field", [
    ("", 100, "query"), ("   ", 100, "query"), ("x" * 2001, 100, "query"),
    ("berth", 0, "budget"), ("berth", 20_001, "budget"), ("berth", True, "budget"),
])
def test_search_knowledge_refuses_bad_input_naming_the_field(query, budget, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        search_knowledge(None, query, budget)


def test_normalise_leaves_zero_rows_zero():
    out = normalise(np.array([[0.0, 0.0], [0.0, 2.0]]))
    assert out.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_the_embedded_model_loads_and_embeds_with_the_network_cut(monkeypatch):
    def refuse(*_a, **_k):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = WordLlamaEmbedder()  # a fresh load, not the process-wide one
    vectors = embedder.embed(["the ferry sailing was cancelled because of strong wind",
                              "wind limits for cancelling a ferry crossing",
                              "invoice for printer toner cartridges"])
    assert vectors.shape == (3, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related > unrelated
    assert embedder.name == "wordllama/l2_supercat-256"
    assert embedder.embed([]).shape == (0, 256)


def _row(i, tokens=10):
    return {"id": i, "document_id": "d", "title": "T", "ordinal": i, "body": f"passage {i}",
            "tokens": tokens, "heading": ""}


def test_rankings_take_turns_and_no_ranked_passage_is_cut_while_budget_remains():
    from app.agents.retrieval import _pack

    lexical = [(1.0, _row(1)), (0.9, _row(2)), (0.8, _row(3))]
    dense = [(1.0, _row(7)), (0.9, _row(1)), (0.8, _row(8, tokens=100))]
    picked = _pack([lexical, dense], token_budget=50, max_passages=10)
    # turns: lexical 1, dense 7, lexical 2, dense (1 taken; 8 too big) -> nothing, lexical 3
    assert [p.id for p in picked] == [1, 7, 2, 3]
    assert sum(p.tokens for p in picked) <= 50
    assert [p.id for p in _pack([lexical, dense], token_budget=25, max_passages=10)] == [1, 7]
