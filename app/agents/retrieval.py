"""Surgical retrieval: documents split into passages, the best few under a token budget.

Passages live in Postgres with a generated `tsvector` and a GIN index. A task's lexemes are
weighted by their rarity among the tenant's passages (inverse document frequency, counted
through the same index); the GIN index finds candidate passages holding any of them. The
candidates are re-ranked per clause of the task (a task often asks two things) with a bonus
when matched terms stand close together, and the clauses take turns filling the call's token
budget. Passages scoring far below the best are left out rather than used as filler. A call
never receives a whole document.

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


_TERM_IDF = """
WITH terms AS (
  SELECT DISTINCT lexeme FROM unnest(%(terms)s::text[]) AS lexeme
), corpus AS (
  SELECT count(*)::float AS n FROM passages
)
SELECT t.lexeme, ln(1 + (c.n - df.n + 0.5) / (df.n + 0.5)) AS idf
  FROM terms t CROSS JOIN corpus c
  CROSS JOIN LATERAL (SELECT count(*)::float AS n FROM passages p
                       WHERE p.tsv @@ quote_literal(t.lexeme)::tsquery) df
 WHERE df.n > 0
"""

_CANDIDATES = """
WITH weighted AS (
  SELECT quote_literal(w.lexeme)::tsquery AS query, w.idf
    FROM unnest(%(terms)s::text[], %(idfs)s::float[]) AS w (lexeme, idf)
)
SELECT p.id, p.document_id, d.title, p.ordinal, p.body, p.tokens, p.tsv::text AS tsv,
       sum(w.idf) AS score
  FROM passages p
  JOIN weighted w ON p.tsv @@ w.query
  JOIN documents d ON d.id = p.document_id
 GROUP BY p.id, d.title
 ORDER BY score DESC, p.id
 LIMIT %(limit)s
"""

_CLAUSE_SPLIT = re.compile(r"[,;:?!.]\s|\band\b|\bthen\b|\n", re.IGNORECASE)
_TSV_ENTRY = re.compile(r"'((?:[^']|'')*)':([0-9A-D,]+)")
PROXIMITY_WINDOW = 6


def split_clauses(query: str) -> list[str]:
    """Sub-questions of a task: a task asking two things gets passages for both.

    Example:
        >>> split_clauses("confirm the port of kestrel and the owner of orchid")
        ['confirm the port of kestrel', 'the owner of orchid']
    """
    return [c.strip() for c in _CLAUSE_SPLIT.split(query) if c.strip()]


def _positions(tsv: str) -> dict[str, list[int]]:
    """Lexeme -> word positions, from a tsvector's text form."""
    return {m.group(1).replace("''", "'"): [int(re.sub(r"\D", "", x))
                                            for x in m.group(2).split(",")]
            for m in _TSV_ENTRY.finditer(tsv)}


def _clause_score(terms: list[str], idf: dict[str, float],
                  positions: dict[str, list[int]]) -> float:
    """Sum of matched terms' IDF, plus a bonus for each pair of matched terms that stand
    within a few words of each other (the fact, not a passing mention)."""
    matched = [t for t in terms if t in positions and t in idf]
    score = sum(idf[t] for t in matched)
    for i, a in enumerate(matched):
        for b in matched[i + 1:]:
            gap = min(abs(x - y) for x in positions[a] for y in positions[b])
            if gap <= PROXIMITY_WINDOW:
                score += min(idf[a], idf[b])
    return score


def retrieve(conn: psycopg.Connection, query: str, token_budget: int, *,
             max_passages: int = 12, min_relative_score: float = 0.5,
             candidates: int = 80) -> list[Passage]:
    """The best passages for `query` whose tokens fit `token_budget`, best first.

    The query is split into clauses; each clause ranks the candidates by IDF-weighted term
    matches with a proximity bonus, and the clauses take turns picking their next best
    passage, so every sub-question is served before any gets a second passage. A clause
    made only of common words (its rarest term under half as rare as the query's rarest)
    does not pick; nor do passages scoring under `min_relative_score` x the clause's best.
    """
    if token_budget <= 0:
        return []
    clauses = split_clauses(query) or [query]
    clause_terms = [row["terms"] for row in conn.execute(
        "SELECT tsvector_to_array(to_tsvector('english', c)) AS terms "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS q (c, n) ORDER BY n", [clauses])]
    all_terms = sorted({t for terms in clause_terms for t in terms})
    idf = {r["lexeme"]: r["idf"] for r in conn.execute(_TERM_IDF, {"terms": all_terms})}
    if not idf:
        return []
    rows = conn.execute(_CANDIDATES, {"terms": list(idf), "idfs": list(idf.values()),
                                      "limit": candidates}).fetchall()
    rarest = max(idf.values())
    rankings = []
    for terms in clause_terms:
        if max((idf.get(t, 0.0) for t in terms), default=0.0) < rarest / 2:
            continue
        scored = sorted(((_clause_score(terms, idf, _positions(r["tsv"])), r) for r in rows),
                        key=lambda pair: (-pair[0], pair[1]["id"]))
        if scored and scored[0][0] > 0:
            floor = scored[0][0] * min_relative_score
            rankings.append([(score, r) for score, r in scored if score >= floor])
    return _pack(rankings, token_budget, max_passages)


def _pack(rankings: list[list[tuple[float, dict]]], token_budget: int,
          max_passages: int) -> list[Passage]:
    """Clauses take turns adding their next best passage that still fits the budget."""
    picked: dict[int, Passage] = {}
    used = 0
    cursors = [0] * len(rankings)
    progress = True
    while progress and len(picked) < max_passages:
        progress = False
        for i, ranking in enumerate(rankings):
            while cursors[i] < len(ranking):
                score, row = ranking[cursors[i]]
                cursors[i] += 1
                if row["id"] in picked or used + row["tokens"] > token_budget:
                    continue
                picked[row["id"]] = Passage(row["id"], row["document_id"], row["title"],
                                            row["ordinal"], row["body"], row["tokens"], score)
                used += row["tokens"]
                progress = True
                break
            if len(picked) >= max_passages:
                break
    return list(picked.values())


def format_passages(passages: list[Passage]) -> str:
    """Render passages for the prompt, each labelled with its source.

    Example:
        >>> format_passages([Passage(1, "d", "Runbook", 3, "Port 443 only.", 4, 1.0)])
        '[Runbook §3]\\nPort 443 only.'
    """
    return "\n\n".join(f"[{p.title} §{p.ordinal}]\n{p.body}" for p in passages)
