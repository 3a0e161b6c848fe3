"""Surgical retrieval: structure-aware passages, hybrid ranking, the best few under a budget.

Documents are split along their structure (`chunk_document`): every passage belongs to one
section and carries the section's heading path ("Fares › Concessions") and the document's
title; tables stay whole with their header row, or are split by rows that each repeat the
header; fenced code blocks stay whole; prose is cut at sentence ends so passages stay
bounded. Passages live in Postgres with a weighted `tsvector` (title A, headings B, body D)
under a GIN index and a dense embedding (pgvector where the server has it, else `real[]`;
see app/db/migrations/0306_retrieval.sql).

Ranking is hybrid. The lexical side weights a task's lexemes by their rarity (IDF) with a
bonus when they hit a title or heading; the dense side compares the task's embedding with
every passage's. Both run in process over the tenant's inverted index, token counts and
vectors (numpy; with pgvector the server ranks the vectors instead, one more statement),
cached per process and keyed by a corpus version (`_CorpusCache`), so a query is two round
trips: the version with the task's lexemes, then the text of the passages picked. A task
asking several things is also ranked clause by clause. The rankings take turns filling the
token budget (interleaving; reciprocal rank fusion, RRF, is the alternative
`fusion="rrf"`), so every sub-question and both retrievers are served before any gets a
second passage. Nothing ranked is dropped by a score cut-off while budget remains; a call
never receives a whole document.

Example:
    with tenant_transaction(pool, tenant_id) as conn:
        add_document(conn, tenant_id, "Runbook", runbook_text)
        picked = retrieve(conn, "rotate the WireGuard key on the mesh", token_budget=800)
        context = format_passages(picked)
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from app import jsonlog
from app.agents.embeddings import (
    Embedder,
    EmbeddingDimensionError,
    EmbeddingUnavailable,
    default_embedder,
)
from app.agents.tokens import estimate_tokens

log = logging.getLogger("vos.retrieval")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TABLE_ROW = re.compile(r"^\s*\|")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
HEADING_SEPARATOR = " › "
RRF_K = 60
TITLE_HEADING_BONUS = 0.5  # a term found in the title or a heading counts 1.5x


@dataclass(frozen=True)
class Chunk:
    """One passage as split: its section's heading path and its text."""

    heading: str
    body: str


@dataclass(frozen=True)
class Passage:
    """One retrieved passage with its document title, heading path and fused score."""

    id: int
    document_id: Any
    title: str
    ordinal: int
    body: str
    tokens: int
    score: float
    heading: str = ""


# -- splitting --------------------------------------------------------------------------------

def _blocks(lines: list[str]) -> list[tuple[str, str]]:
    """A section's lines → (kind, text) blocks: 'code', 'table', 'list' or 'prose'."""
    blocks: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            blocks.append(("code", "\n".join(lines[i:end + 1]).strip()))
            i = end + 1
            continue
        kind = "table" if _TABLE_ROW.match(line) else "list" if _LIST_ITEM.match(line) \
            else "prose"
        end = i + 1
        while end < len(lines) and lines[end].strip() and not _FENCE.match(lines[end]):
            if (kind == "table") != bool(_TABLE_ROW.match(lines[end])):
                break  # a table ends where its rows end, even without a blank line
            end += 1
        blocks.append((kind, "\n".join(lines[i:end]).strip()))
        i = end
    return blocks


def _split_block(kind: str, text: str, max_tokens: int) -> list[str]:
    """A block too long for one passage: tables by rows (header repeated), lists by items,
    prose by sentences; code stays whole (a cut function is worse than a long passage)."""
    if kind == "code" or estimate_tokens(text) <= max_tokens:
        return [text]
    if kind == "table":
        rows = text.split("\n")
        header_n = 2 if len(rows) > 1 and _TABLE_RULE.match(rows[1]) else 1
        header, body = rows[:header_n], rows[header_n:]
        parts: list[list[str]] = []
        for row in body:
            if parts and estimate_tokens("\n".join(header + parts[-1] + [row])) <= max_tokens:
                parts[-1].append(row)
            else:
                parts.append([row])
        return ["\n".join(header + part) for part in parts]
    units = text.split("\n") if kind == "list" else _SENTENCE_END.split(text)
    joiner = "\n" if kind == "list" else " "
    chunks: list[str] = []
    for unit in units:
        if chunks and estimate_tokens(chunks[-1]) + estimate_tokens(unit) <= max_tokens:
            chunks[-1] = f"{chunks[-1]}{joiner}{unit}"
        else:
            chunks.append(unit)
    return chunks


def chunk_document(text: str, target_tokens: int = 120, max_tokens: int = 240) -> list[Chunk]:
    """Split a (Markdown or plain) text along its structure; see the module docstring.

    A passage never spans two sections, so each carries its own heading path; blocks of one
    section are merged up to `target_tokens`; a block over `max_tokens` is split (never a
    fenced code block).

    Example:
        >>> chunk_document("# Guide\\n\\nIntro.\\n\\n## Fares\\n\\n| a | b |\\n| 1 | 2 |", 5)
        [Chunk(heading='Guide', body='Intro.'), Chunk(heading='Guide › Fares', \
body='| a | b |\\n| 1 | 2 |')]
    """
    sections: list[tuple[str, list[str]]] = [("", [])]
    path: list[tuple[int, str]] = []
    in_fence = None
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if fence:
            in_fence = None if in_fence == fence.group(1) else (in_fence or fence.group(1))
        heading = None if in_fence or fence else _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            path = [(lvl, name) for lvl, name in path if lvl < level] + \
                [(level, heading.group(2).strip())]
            sections.append((HEADING_SEPARATOR.join(name for _, name in path), []))
        else:
            sections[-1][1].append(line)
    chunks: list[Chunk] = []
    for heading, lines in sections:
        merged: list[str] = []
        for kind, block in _blocks(lines):
            for piece in _split_block(kind, block, max_tokens):
                if merged and estimate_tokens(merged[-1]) + estimate_tokens(piece) \
                        <= target_tokens:
                    merged[-1] = f"{merged[-1]}\n\n{piece}"
                else:
                    merged.append(piece)
        chunks.extend(Chunk(heading[:2000], body) for body in merged)
    return chunks


def split_passages(text: str, target_tokens: int = 120, max_tokens: int = 240) -> list[str]:
    """The passage texts of `chunk_document` (headings live in `Chunk.heading`).

    Example:
        >>> split_passages("One.\\n\\nTwo.", target_tokens=10)
        ['One.\\n\\nTwo.']
    """
    return [c.body for c in chunk_document(text, target_tokens, max_tokens)]


# -- storing ----------------------------------------------------------------------------------

def embedding_kind(conn: psycopg.Connection) -> str:
    """'vector' when passages.embedding is a pgvector column, else 'array' (real[])."""
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute "
        "WHERE attrelid = 'passages'::regclass AND attname = 'embedding'").fetchone()
    kind = row["t"] if isinstance(row, dict) else row[0]
    return "vector" if kind.startswith("vector") else "array"


def _vector_param(kind: str, vector: np.ndarray) -> Any:
    if kind == "vector":
        return "[" + ",".join(f"{x:.6f}" for x in vector.tolist()) + "]"
    return [float(x) for x in vector.tolist()]


def _stored_dim(conn: psycopg.Connection, kind: str, model: str) -> int | None:
    """The dimension of the tenant's vectors made by `model` (None when there are none)."""
    size = "vector_dims(embedding)" if kind == "vector" else "array_length(embedding, 1)"
    row = conn.execute(f"SELECT {size} AS d FROM passages WHERE embedding_model = %s "
                       "AND embedding IS NOT NULL LIMIT 1", [model]).fetchone()
    return None if row is None else row["d"]


def _check_dim(model: str, dim: int, stored: int | None) -> None:
    """Vectors of one model name have one dimension: another means the model behind the
    name changed, and mixing them would make every comparison fail or lie."""
    if stored is not None and dim != stored:
        raise EmbeddingDimensionError(
            f"embedder {model} returns {dim}-dimension vectors but the tenant's passages "
            f"embedded by {model} have {stored}: the model behind that name changed. Name "
            "the new model distinctly (the agents file's embedding.model, e.g. with its tag) "
            "so the passages are re-embedded, or remove and re-add the documents")


def embed_text(title: str, heading: str, body: str) -> str:
    """What is embedded for a passage: its place in the document, then its text."""
    return "\n".join(part for part in (title, heading, body) if part)


def store_passages(conn: psycopg.Connection, tenant_id: Any, document_id: Any, title: str,
                   chunks: list[Chunk], embedder: Embedder | None = None) -> int:
    """Insert a document's passages with heading, title and embedding; return the count.

    Example:
        store_passages(conn, tenant_id, doc_id, "Runbook", chunk_document(text))
    """
    embedder = embedder or default_embedder()
    vectors = embedder.embed([embed_text(title, c.heading, c.body) for c in chunks])
    kind = embedding_kind(conn)
    if chunks:
        _check_dim(embedder.name, vectors.shape[1], _stored_dim(conn, kind, embedder.name))
    cast = "::vector" if kind == "vector" else "::real[]"
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO passages (tenant_id, document_id, ordinal, heading, title, body, "
            f"tokens, embedding_model, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            f"%s{cast})",
            [(tenant_id, document_id, i, c.heading, title, c.body, estimate_tokens(c.body),
              embedder.name, _vector_param(kind, vectors[i])) for i, c in enumerate(chunks)])
    return len(chunks)


def add_document(conn: psycopg.Connection, tenant_id: Any, title: str, text: str,
                 source: str = "", target_tokens: int = 120,
                 embedder: Embedder | None = None) -> Any:
    """Store a document and its passages; return the document id."""
    chunks = chunk_document(text, target_tokens=target_tokens)
    if not chunks:
        raise ValueError(f"document {title!r} has no text; nothing stored")
    row = conn.execute(
        "INSERT INTO documents (tenant_id, title, source, tokens) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        [tenant_id, title, source, estimate_tokens(text)],
    ).fetchone()
    store_passages(conn, tenant_id, row["id"], title, chunks, embedder)
    return row["id"]


def reembed(conn: psycopg.Connection, embedder: Embedder, batch: int = 512,
            limit: int = 100_000) -> int:
    """Re-embed the tenant's passages made by another model (or none); return how many.

    Example:
        reembed(conn, default_embedder())   # 0 when every passage is current
    """
    kind = embedding_kind(conn)
    cast = "::vector" if kind == "vector" else "::real[]"
    done = 0
    while done < limit:
        rows = conn.execute(
            "SELECT id, title, heading, body FROM passages WHERE embedding_model IS DISTINCT "
            "FROM %s ORDER BY id LIMIT %s", [embedder.name, batch]).fetchall()
        if not rows:
            break
        vectors = embedder.embed([embed_text(r["title"], r["heading"], r["body"])
                                  for r in rows])
        if not done:
            _check_dim(embedder.name, vectors.shape[1], _stored_dim(conn, kind, embedder.name))
        with conn.cursor() as cur:
            cur.executemany(
                f"UPDATE passages SET embedding = %s{cast}, embedding_model = %s WHERE id = %s",
                [(_vector_param(kind, vectors[i]), embedder.name, r["id"])
                 for i, r in enumerate(rows)])
        done += len(rows)
    return done


# -- ranking ----------------------------------------------------------------------------------

# The corpus version of the caller's tenant (RLS: its one `passage_versions` row) and the
# transaction that wrote it (`xmin`): a version number alone could repeat after a rollback
# (transaction A bumps 4 -> 5 and caches its uncommitted passages, rolls back; B bumps 4 -> 5
# too), the writer's id does not.
_VERSION_COLUMNS = """
       current_setting('app.tenant_id', true) AS tenant,
       coalesce(v.version, 0) AS version, coalesce(v.xmin::text, '') AS writer"""
_VERSION = f"""
SELECT {_VERSION_COLUMNS}
  FROM (SELECT 1) AS one LEFT JOIN passage_versions v ON true
"""
# Round trip 1 of a query: the version above and every unit's lexemes (Postgres's English
# stemmer, so they match the stored tsvectors exactly).
_HEAD = f"""
SELECT {_VERSION_COLUMNS},
       (SELECT json_agg(tsvector_to_array(to_tsvector('english', c)) ORDER BY n)
          FROM unnest(%s::text[]) WITH ORDINALITY AS q (c, n)) AS terms
  FROM (SELECT 1) AS one LEFT JOIN passage_versions v ON true
"""
_STALE = "SELECT EXISTS (SELECT 1 FROM passages WHERE embedding_model IS DISTINCT FROM %s) AS s"
# A dense candidate under this share of the best cosine is noise, not a match: on a small
# corpus every passage is "nearest" to something, and filling the budget with them would
# send whole documents. Lexical matches are never cut.
DENSE_RELATIVE_FLOOR = 0.5
COMMON_TERM_SHARE = 0.1  # a word in more than this share of passages does not find them

# Round trip 2 of a query: the passages picked (at most max_passages), nothing else.
_ROWS = """
SELECT id, document_id, title, heading, ordinal, body, tokens
  FROM passages WHERE id = ANY(%s)
"""
_LOAD = """
SELECT id, tokens, tsv::text AS tsv, tsvector_to_array(tsv) AS lexemes,
       tsvector_to_array(ts_filter(tsv, '{a,b}')) AS marked
  FROM passages ORDER BY id
"""

_CLAUSE_SPLIT = re.compile(r"[,;:?!.]\s|\band\b|\bthen\b|\balso\b|\bplus\b|\n", re.IGNORECASE)
PROXIMITY_WINDOW = 6


def split_clauses(query: str) -> list[str]:
    """Sub-questions of a task: a task asking two things gets passages for both.

    Example:
        >>> split_clauses("confirm the port of kestrel and the owner of orchid")
        ['confirm the port of kestrel', 'the owner of orchid']
    """
    return [c.strip() for c in _CLAUSE_SPLIT.split(query) if c.strip()]


def _positions(tsv: str, terms: set[str]) -> dict[str, list[tuple[int, bool]]]:
    """Lexeme -> (word position, in title or heading) for the `terms` asked about, from a
    tsvector's text form (`'lexeme':1A,7 …`); other lexemes are not parsed (speed)."""
    out: dict[str, list[tuple[int, bool]]] = {}
    for term in terms:
        key = "'" + term.replace("\\", "\\\\").replace("'", "''") + "':"
        at = tsv.find(key)
        while at > 0 and tsv[at - 1] != " ":  # inside another lexeme: look further on
            at = tsv.find(key, at + 1)
        if at < 0:
            continue
        start = at + len(key)
        end = tsv.find(" ", start)
        raw = tsv[start:end if end >= 0 else len(tsv)]
        out[term] = [(int(x.rstrip("ABCD")), x[-1] in "AB") for x in raw.split(",")]
    return out


def _near(a: list[tuple[int, bool]], b: list[tuple[int, bool]]) -> bool:
    return min(abs(x - y) for x, _ in a for y, _ in b) <= PROXIMITY_WINDOW


def _lexical_score(terms: list[str], idf: dict[str, float],
                   positions: dict[str, list[tuple[int, bool]]]) -> float:
    """Sum of matched terms' IDF (title/heading hits weigh more), plus a bonus for each pair
    of matched body terms within a few words of each other (the fact, not a mention).

    The definition; `_lexical_scores` computes the same for many passages at once."""
    matched = [t for t in terms if t in positions and t in idf]
    score = sum(idf[t] * (1 + TITLE_HEADING_BONUS * any(h for _, h in positions[t]))
                for t in matched)
    for i, a in enumerate(matched):
        for b in matched[i + 1:]:
            if _near(positions[a], positions[b]):
                score += min(idf[a], idf[b])
    return score


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each id scores sum(1 / (k + rank)) over the rankings that
    hold it (rank from 1); best first, ties by id.

    Example:
        >>> [i for i, _ in rrf([[1, 2, 3], [2, 3]])]
        [2, 3, 1]
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def _member(sorted_ids: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    """Which of `ids` occur in `sorted_ids` (ascending), as a bool array."""
    if sorted_ids is None or not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(sorted_ids, ids)
    at[at == len(sorted_ids)] = 0
    return sorted_ids[at] == ids


@dataclass(frozen=True)
class _Corpus:
    n: int
    postings: dict[str, np.ndarray]  # lexeme -> ids of the passages holding it, ascending
    ids: np.ndarray | None      # the real[] fallback: passage ids, and their unit vectors
    matrix: np.ndarray | None
    dim: int | None = None      # of the vectors stored by the model (None: there are none)
    # lexeme -> ids of the passages holding it in their title or heading (A, B), ascending
    marked: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)  # passage id -> its tokens
    tsv: dict[int, str] = field(default_factory=dict)     # passage id -> tsvector text

    def df(self, term: str) -> int:
        found = self.postings.get(term)
        return 0 if found is None else len(found)

    def idf(self, term: str) -> float:
        df = self.df(term)
        return float(np.log(1 + (self.n - df + 0.5) / (df + 0.5))) if df else 0.0


def _lexical_scores(corpus: _Corpus, cands: np.ndarray, unit_terms: list[list[str]],
                    idf: dict[str, float]) -> list[np.ndarray]:
    """`_lexical_score` of every candidate (ascending ids) for each unit, from the cached
    postings: the IDF sums as array operations, and the proximity bonus only for the
    candidates holding two or more of a unit's terms (their positions parsed once)."""
    asked = list(idf)
    present = {t: _member(corpus.postings.get(t), cands) for t in asked}
    weight = {t: idf[t] * np.where(_member(corpus.marked.get(t), cands),
                                   1 + TITLE_HEADING_BONUS, 1.0) for t in asked}
    positions: dict[int, dict[str, list[tuple[int, bool]]]] = {}
    out = []
    for terms in unit_terms:
        terms = [t for t in terms if t in idf]
        score = np.zeros(len(cands), dtype=np.float64)
        hits = np.zeros(len(cands), dtype=np.int64)
        for t in terms:  # in the unit's order, like `_lexical_score`'s sum
            score += np.where(present[t], weight[t], 0.0)
            hits += present[t]
        for k in np.flatnonzero(hits >= 2).tolist():
            pid = int(cands[k])
            found = positions.get(pid)
            if found is None:
                found = positions[pid] = _positions(corpus.tsv.get(pid, ""), set(asked))
            matched = [t for t in terms if present[t][k] and t in found]
            bonus = float(score[k])
            for i, a in enumerate(matched):
                for b in matched[i + 1:]:
                    if _near(found[a], found[b]):
                        bonus += min(idf[a], idf[b])
            score[k] = bonus
        out.append(score)
    return out


class _CorpusCache:
    """Per process, per corpus version (tenant, model, `passage_versions.version` and the
    transaction that wrote it; a trigger bumps the version on every change to the tenant's
    passages): the tenant's inverted index (lexeme -> passage ids, and which of them hold
    it in a title or heading), each passage's token count and tsvector text (for the
    proximity bonus), and, on the real[] fallback, its vectors as one numpy matrix. A stale
    entry is never used; a query reads one row; a corpus change costs one reload.

    Why not the GIN index per query: under row-level security the planner will not use a
    non-leakproof operator such as `@@` as an index condition ahead of the tenant policy,
    so every lookup became a scan of the tenant's passages (~100 ms at 10,000)."""

    def __init__(self, max_entries: int = 16):
        self._lock = threading.Lock()
        self._entries: dict[tuple, _Corpus] = {}
        self._max = max_entries

    def get(self, conn: psycopg.Connection, embedder: Embedder, *,
            reembed_stale: bool = True, head: dict | None = None) -> _Corpus:
        """The tenant's corpus for `embedder`, its stale passages re-embedded first (which
        may raise `EmbeddingUnavailable`). With `reembed_stale=False` stale passages are
        left as they are and the corpus is built but not cached (the lexical fallback).
        `head`: the version row when the caller has already read it (`_HEAD`)."""
        row = head or conn.execute(_VERSION).fetchone()
        key = (row["tenant"], embedder.name, row["version"], row["writer"])
        with self._lock:
            if key in self._entries:
                return self._entries[key]
        # A new version or model: passages embedded by another model (or none) are brought
        # up to date first (which bumps the version: read it again).
        if conn.execute(_STALE, [embedder.name]).fetchone()["s"]:
            if not reembed_stale:
                return self._load(conn, embedder)
            reembed(conn, embedder)
            row = conn.execute(_VERSION).fetchone()
            key = (row["tenant"], embedder.name, row["version"], row["writer"])
        corpus = self._load(conn, embedder)
        with self._lock:
            for stale in [k for k in self._entries if k[:2] == key[:2]]:
                del self._entries[stale]
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = corpus
        return corpus

    @staticmethod
    def _load(conn: psycopg.Connection, embedder: Embedder) -> _Corpus:
        lists: dict[str, list[int]] = {}
        marked: dict[str, list[int]] = {}
        tokens: dict[int, int] = {}
        tsv: dict[int, str] = {}
        for r in conn.execute(_LOAD):  # ascending ids: every posting list comes out sorted
            i = r["id"]
            tokens[i], tsv[i] = r["tokens"], r["tsv"]
            for lexeme in r["lexemes"]:
                lists.setdefault(lexeme, []).append(i)
            for lexeme in r["marked"]:
                marked.setdefault(lexeme, []).append(i)
        postings = {k: np.array(v, dtype=np.int64) for k, v in lists.items()}
        ids = matrix = None
        kind = embedding_kind(conn)
        if kind == "array":
            rows = conn.execute("SELECT id, embedding FROM passages WHERE embedding_model = %s "
                                "ORDER BY id", [embedder.name]).fetchall()
            ids = np.array([r["id"] for r in rows], dtype=np.int64)
            matrix = np.array([r["embedding"] for r in rows], dtype=np.float32) if rows \
                else np.zeros((0, 1), dtype=np.float32)
            dim = matrix.shape[1] if rows else None
        else:
            dim = _stored_dim(conn, kind, embedder.name)
        return _Corpus(len(tokens), postings, ids, matrix, dim,
                       {k: np.array(v, dtype=np.int64) for k, v in marked.items()},
                       tokens, tsv)


_corpora = _CorpusCache()


def _cosines(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(passages, queries) dot products = cosines (rows are unit vectors), without BLAS.

    `matrix @ queries.T` goes to OpenBLAS, whose worker threads spin on a loaded 2-core
    host: measured at 10,000 x 256 with 4 queries, median 0.8 ms but p95 16-20 ms (and
    8.5 ms median at load 4), vs 1.7 ms median / 6.5 ms p95 for numpy's own vecdot loop.
    The sums differ from BLAS's in the last bits (~3e-6) only."""
    vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0
    if vecdot is None:
        return np.einsum("ij,kj->ik", matrix, queries)
    return vecdot(matrix[:, None, :], queries[None, :, :])


def _dense_rankings(conn: psycopg.Connection, corpus: _Corpus, queries: np.ndarray, model: str,
                    limit: int) -> list[list[int]]:
    """For each query vector, passage ids by cosine similarity, best first, down to
    DENSE_RELATIVE_FLOOR x the best."""
    if corpus.matrix is None:  # pgvector: the server ranks, every query in one statement
        rows = conn.execute(
            "SELECT q.n, p.id, p.distance FROM unnest(%s::text[]) WITH ORDINALITY AS q (v, n) "
            "CROSS JOIN LATERAL (SELECT id, embedding <=> q.v::vector AS distance "
            "FROM passages WHERE embedding_model = %s ORDER BY distance, id LIMIT %s) AS p "
            "ORDER BY q.n, p.distance, p.id",
            [[_vector_param("vector", q) for q in queries], model, limit]).fetchall()
        out = []
        for n in range(1, len(queries) + 1):
            sims = [(r["id"], 1 - r["distance"]) for r in rows if r["n"] == n]
            best = sims[0][1] if sims else 0.0
            out.append([i for i, sim in sims if sim >= best * DENSE_RELATIVE_FLOOR])
        return out
    ids, matrix = corpus.ids, corpus.matrix
    if not len(ids):
        return [[] for _ in queries]
    sims = _cosines(matrix, queries)  # (passages, queries)
    out = []
    for j in range(sims.shape[1]):
        column = sims[:, j]
        top = np.argpartition(-column, min(limit, len(column) - 1))[:limit]
        top = top[np.lexsort((ids[top], -column[top]))]
        floor = float(column[top[0]]) * DENSE_RELATIVE_FLOOR
        out.append([int(ids[i]) for i in top if column[i] >= floor])
    return out


def retrieve(conn: psycopg.Connection, query: str, token_budget: int, *,
             max_passages: int = 16, min_relative_score: float = 0.0,
             candidates: int = 100, embedder: Embedder | None = None,
             lexical: bool = True, dense: bool = True,
             fusion: str = "interleave") -> list[Passage]:
    """The best passages for `query` whose tokens fit `token_budget`, in pick order.

    The whole query and each of its clauses get a lexical and a dense ranking. With
    `fusion="interleave"` (the default) every ranking of every unit takes its own turn
    picking its next best passage that still fits, so the lexical side's exact hits (titles,
    names, codes) and the dense side's paraphrase hits both reach the context; with
    `fusion="rrf"` each unit's two rankings are first fused by reciprocal rank fusion (one
    turn per unit), and `min_relative_score` (default 0: off) may drop passages under that
    share of the unit's best fused score. Measured on benchmarks/retrieval.py, interleaving
    recalled more (0.868 vs 0.816 at 600 tokens). Passages embedded by another model are
    re-embedded first. A query sharing no word with the tenant's passages gets nothing.
    `lexical` / `dense` switch one side off (to measure what each contributes).

    Two round trips when the tenant's corpus is cached (`_CorpusCache`): the corpus version
    with every unit's lexemes, then the picked passages' text; the ranking in between runs
    in process over the cached index and vectors.

    When the embedder is unavailable (`EmbeddingUnavailable`: a configured provider is down,
    rate-limited or refuses the key), re-embedding or embedding the query, the query is
    ranked lexically only and `embedding_unavailable` is logged (a warning): a provider
    outage degrades recall for its duration but never fails a task, and the stale
    passages are re-embedded by the first query after it. A vector dimension that differs
    from the stored vectors of the same model name raises `EmbeddingDimensionError`.

    Example:
        picked = retrieve(conn, "who decides to cancel a sailing", token_budget=1000)
    """
    if fusion not in ("interleave", "rrf"):
        raise ValueError(f"fusion: {fusion!r} is not one of interleave, rrf")
    if token_budget <= 0 or not query.strip():
        return []
    embedder = embedder or default_embedder()
    clauses = split_clauses(query)
    units = [query] + (clauses if len(clauses) > 1 else [])
    head = conn.execute(_HEAD, [units]).fetchone()
    unit_terms = head["terms"]
    vectors_ok = True
    try:
        corpus = _corpora.get(conn, embedder, head=head)  # re-embeds another model's first
    except EmbeddingUnavailable as exc:
        _unavailable(embedder, exc, "reembed")
        corpus = _corpora.get(conn, embedder, reembed_stale=False)
        vectors_ok = False
    keep = [i for i, terms in enumerate(unit_terms) if i == 0 or terms]
    units, unit_terms = [units[i] for i in keep], [unit_terms[i] for i in keep]
    all_terms = sorted({t for terms in unit_terms for t in terms})
    idf = {t: corpus.idf(t) for t in all_terms if corpus.df(t)}
    if not idf:
        # Not one word of the query occurs in the tenant's passages: nearest vectors would
        # be noise, not knowledge, so nothing is sent.
        return []
    # Candidates come from the words that can find something specific; a word in more than
    # COMMON_TERM_SHARE of the passages would flood the pool (it still counts in scoring).
    finders = sorted(idf, key=lambda t: (corpus.df(t), t))
    finders = [t for t in finders if corpus.df(t) <= COMMON_TERM_SHARE * corpus.n] \
        or finders[:2]
    # Each candidate's pool score: the IDF of the finders it holds, summed in finder order
    # (np.bincount adds in input order, so the sums are those of a Python loop).
    found = np.concatenate([corpus.postings[t] for t in finders])
    found_ids, slot = np.unique(found, return_inverse=True)
    pool = np.bincount(slot, weights=np.concatenate(
        [np.full(len(corpus.postings[t]), idf[t]) for t in finders]))
    lexical_pool = found_ids[np.lexsort((found_ids, -pool))[:candidates]].tolist()
    dense_ids: list[list[int]] = [[] for _ in units]
    if vectors_ok:
        try:
            queries = embedder.embed(units)
        except EmbeddingUnavailable as exc:
            _unavailable(embedder, exc, "query")
        else:
            _check_dim(embedder.name, queries.shape[1], corpus.dim)
            dense_ids = _dense_rankings(conn, corpus, queries, embedder.name, candidates)
    wanted = set(lexical_pool) | {i for ranking in dense_ids for i in ranking}
    wanted &= corpus.tokens.keys()  # (pgvector ranks in SQL: a passage added since the load)
    if not wanted:
        return []
    cands = np.array(sorted(wanted), dtype=np.int64)
    scores = _lexical_scores(corpus, cands, unit_terms, idf)
    per_unit = []
    for n, terms in enumerate(unit_terms):
        if n and not any(t in idf for t in terms):
            # Like a whole query, a clause sharing no word with the corpus ("Contact: …")
            # has nothing to find: its nearest vectors would be noise.
            per_unit.append(([], []))
            continue
        score = scores[n]
        order = np.lexsort((cands, -score))
        lexical_ranking = cands[order[score[order] > 0][:candidates]].tolist()
        per_unit.append((([lexical_ranking] if lexical else []),
                         ([[i for i in dense_ids[n] if i in wanted]] if dense else [])))
    # Turn order: the whole query first, then its clauses from the most specific (rarest
    # word) down, so a clause of common words ("before tonight's rollout") still picks, but
    # after the clauses that name something. Interleaving: every lexical ranking in that
    # order, then every dense one.
    order = [0] + sorted(range(1, len(units)), key=lambda n: (
        -max((idf.get(t, 0.0) for t in unit_terms[n]), default=0.0), n))
    rankings: list[list[tuple[float, int]]] = []
    if fusion == "interleave":
        sides = [side for n in order[:1] for part in per_unit[n] for side in part] + \
            [side for n in order[1:] for side in per_unit[n][0]] + \
            [side for n in order[1:] for side in per_unit[n][1]]
        for side in sides:
            rankings.append([(1.0 / (RRF_K + r), i) for r, i in enumerate(side, start=1)])
    else:
        for n in order:
            fused = rrf(per_unit[n][0] + per_unit[n][1])
            if fused and min_relative_score > 0:
                fused = [(i, s) for i, s in fused if s >= fused[0][1] * min_relative_score]
            rankings.append([(s, i) for i, s in fused])
    picked = _pick(rankings, corpus.tokens, token_budget, max_passages)
    if not picked:
        return []
    rows = {r["id"]: r for r in conn.execute(_ROWS, [[i for _, i in picked]])}
    # A passage deleted by a transaction that committed since the version was read is gone.
    return [_passage(rows[i], score) for score, i in picked if i in rows]


def _unavailable(embedder: Embedder, exc: EmbeddingUnavailable, step: str) -> None:
    jsonlog.emit(log, "embedding_unavailable", level=logging.WARNING, model=embedder.name,
                 step=step, kind=getattr(exc, "kind", ""), error=str(exc)[:300],
                 fallback="lexical")


def _pick(rankings: list[list[tuple[float, int]]], tokens: dict[int, int], token_budget: int,
          max_passages: int) -> list[tuple[float, int]]:
    """Rankings take turns adding their next best passage that still fits the budget;
    (score, id) in pick order."""
    picked: dict[int, float] = {}
    used = 0
    cursors = [0] * len(rankings)
    progress = True
    while progress and len(picked) < max_passages:
        progress = False
        for i, ranking in enumerate(rankings):
            while cursors[i] < len(ranking):
                score, pid = ranking[cursors[i]]
                cursors[i] += 1
                if pid in picked or used + tokens[pid] > token_budget:
                    continue
                picked[pid] = score
                used += tokens[pid]
                progress = True
                break
            if len(picked) >= max_passages:
                break
    return [(score, pid) for pid, score in picked.items()]


def _passage(row: dict, score: float) -> Passage:
    return Passage(row["id"], row["document_id"], row["title"], row["ordinal"], row["body"],
                   row["tokens"], score, row["heading"])


def _pack(rankings: list[list[tuple[float, dict]]], token_budget: int,
          max_passages: int) -> list[Passage]:
    """`_pick` over rankings of whole rows (score, row dict): the picked rows as passages."""
    rows = {row["id"]: row for ranking in rankings for _, row in ranking}
    ids = [[(score, row["id"]) for score, row in ranking] for ranking in rankings]
    tokens = {i: row["tokens"] for i, row in rows.items()}
    return [_passage(rows[i], score) for score, i in _pick(ids, tokens, token_budget,
                                                            max_passages)]


def search_knowledge(conn: psycopg.Connection, query: str, budget: int = 600, *,
                     embedder: Embedder | None = None) -> list[Passage]:
    """What a `search_knowledge(query)` tool call returns (the tool loop is issue #16):
    the hybrid retrieval above under `budget` tokens; a bad query or budget is refused.

    Example:
        [p.title for p in search_knowledge(conn, "ferry cancellation wind limit", 400)]
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query: must be a non-empty string")
    if len(query) > 2000:
        raise ValueError("query: must be at most 2000 characters")
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= 20_000:
        raise ValueError("budget: must be an integer between 1 and 20000 tokens")
    return retrieve(conn, query, budget, embedder=embedder)


def format_passages(passages: list[Passage]) -> str:
    """Render passages for the prompt, each labelled with its source and section.

    Example:
        >>> format_passages([Passage(1, "d", "Runbook", 3, "Port 443 only.", 4, 1.0, "Door")])
        '[Runbook › Door §3]\\nPort 443 only.'
    """
    return "\n\n".join(
        f"[{HEADING_SEPARATOR.join(x for x in (p.title, p.heading) if x)} §{p.ordinal}]\n"
        f"{p.body}" for p in passages)
