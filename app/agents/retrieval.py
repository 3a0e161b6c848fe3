"""Surgical retrieval: documents split into passages, the best few under a token budget.

Passages live in Postgres with a generated `tsvector` and a GIN index. A task's text becomes
an OR-query of its lexemes; each lexeme is weighted by its rarity among the tenant's passages
(inverse document frequency, counted through the same index), and a passage scores the sum
of the weights of the lexemes it contains. The top passages are packed greedily under the
call's token budget; passages scoring far below the best are left out rather than used as
filler. A call never receives a whole document.

Example:
    with tenant_transaction(pool, tenant_id) as conn:
        add_document(conn, tenant_id, "Runbook", runbook_text)
        picked = retrieve(conn, "rotate the WireGuard key on the mesh", token_budget=800)
        context = format_passages(picked)
"""

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from app.agents.tokens import estimate_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    """One retrieved passage with its document title and score."""

    id: int
    document_id: Any
    title: str
    ordinal: int
    body: str
    tokens: int
    score: float


def split_passages(text: str, target_tokens: int = 120, max_tokens: int = 240) -> list[str]:
    """Split on blank lines, merge short paragraphs up to `target_tokens`, cut long ones at
    sentence ends so no passage exceeds `max_tokens` (unless one sentence does).

    Example:
        >>> split_passages("One.\\n\\nTwo.", target_tokens=10)
        ['One.\\n\\nTwo.']
    """
    pieces: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        if estimate_tokens(paragraph) <= max_tokens:
            pieces.append(paragraph)
            continue
        pieces.extend(_split_sentences(paragraph, max_tokens))
    passages: list[str] = []
    for piece in pieces:
        if passages and estimate_tokens(passages[-1]) + estimate_tokens(piece) <= target_tokens:
            passages[-1] = f"{passages[-1]}\n\n{piece}"
        else:
            passages.append(piece)
    return passages


def _split_sentences(paragraph: str, max_tokens: int) -> list[str]:
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if chunks and estimate_tokens(chunks[-1]) + estimate_tokens(sentence) <= max_tokens:
            chunks[-1] = f"{chunks[-1]} {sentence}"
        else:
            chunks.append(sentence)
    return chunks


def add_document(conn: psycopg.Connection, tenant_id: Any, title: str, text: str,
                 source: str = "", target_tokens: int = 120) -> Any:
    """Store a document and its passages; return the document id."""
    passages = split_passages(text, target_tokens=target_tokens)
    if not passages:
        raise ValueError(f"document {title!r} has no text; nothing stored")
    row = conn.execute(
        "INSERT INTO documents (tenant_id, title, source, tokens) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        [tenant_id, title, source, estimate_tokens(text)],
    ).fetchone()
    document_id = row["id"]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO passages (tenant_id, document_id, ordinal, body, tokens) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(tenant_id, document_id, i, body, estimate_tokens(body))
             for i, body in enumerate(passages)],
        )
    return document_id


_SCORED_PASSAGES = """
WITH terms AS (
  SELECT DISTINCT lexeme, quote_literal(lexeme)::tsquery AS query
    FROM unnest(tsvector_to_array(to_tsvector('english', %(query)s))) AS lexeme
), corpus AS (
  SELECT count(*)::float AS n FROM passages
), weighted AS (
  SELECT t.query,
         ln(1 + (c.n - df.n + 0.5) / (df.n + 0.5)) AS idf
    FROM terms t CROSS JOIN corpus c
    CROSS JOIN LATERAL (SELECT count(*)::float AS n FROM passages p WHERE p.tsv @@ t.query) df
   WHERE df.n > 0
)
SELECT p.id, p.document_id, d.title, p.ordinal, p.body, p.tokens, sum(w.idf) AS score
  FROM passages p
  JOIN weighted w ON p.tsv @@ w.query
  JOIN documents d ON d.id = p.document_id
 GROUP BY p.id, d.title
 ORDER BY score DESC, p.id
 LIMIT %(limit)s
"""


def retrieve(conn: psycopg.Connection, query: str, token_budget: int, *,
             max_passages: int = 12, min_relative_score: float = 0.3) -> list[Passage]:
    """The best passages for `query` whose tokens fit `token_budget`, best first.

    Passages scoring below `min_relative_score` × the best score are not included.
    """
    if token_budget <= 0:
        return []
    rows = conn.execute(_SCORED_PASSAGES, {"query": query, "limit": max_passages * 4}).fetchall()
    if not rows:
        return []
    floor = rows[0]["score"] * min_relative_score
    picked: list[Passage] = []
    used = 0
    for row in rows:
        if row["score"] < floor or len(picked) >= max_passages:
            break
        if used + row["tokens"] > token_budget:
            continue
        picked.append(Passage(row["id"], row["document_id"], row["title"], row["ordinal"],
                              row["body"], row["tokens"], float(row["score"])))
        used += row["tokens"]
    return picked


def format_passages(passages: list[Passage]) -> str:
    """Render passages for the prompt, each labelled with its source.

    Example:
        >>> format_passages([Passage(1, "d", "Runbook", 3, "Port 443 only.", 4, 1.0)])
        '[Runbook §3]\\nPort 443 only.'
    """
    return "\n\n".join(f"[{p.title} §{p.ordinal}]\n{p.body}" for p in passages)
