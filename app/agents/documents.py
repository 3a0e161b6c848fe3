"""Documents as code: read files, validate them, and keep a tenant's documents in step.

A document is keyed by (tenant, source). `source` is the path as the operator gave it, made
relative to the working directory when it lies under it and normalised (`./a//b.md` →
`a/b.md`), or any label an API caller sends. Its content's sha256 decides what happens:

    + added      a new source: a documents row and its passages
    ~ replaced   same source, new content: passages replaced, same document id
    = unchanged  same source, same content: nothing is written at all

Accepted: Markdown (.md, .markdown) and plain text (.txt, or no extension) are stored as
given; HTML (.html, .htm) becomes text through the stdlib `html.parser` (script and style
dropped, headings kept as lines of their own). Refused, with an error naming the source:
a missing or unreadable path, a binary file (NUL bytes or not UTF-8), a file over the size
limit (`MAX_DOCUMENT_BYTES`, 2 MiB by default; `vos docs add --max-bytes`), an unsupported
extension named on the command line, and a document with no text. Every input is checked
before anything is written, and one bad input refuses the whole run.

The text is stored as given; the sanitizer runs on what is sent to a provider (the router),
not here.

Example:
    docs = read_paths(["docs/runbook.md", "wiki/"])          # DocumentError if any is bad
    with tenant_transaction(pool, tenant_id, actor="cli:docs") as conn:
        for doc in docs:
            result = ingest(conn, tenant_id, doc)
            print(result.symbol, result.action, doc.source)  # "+ added docs/runbook.md"
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg

from app.agents.retrieval import Chunk, chunk_document, store_passages
from app.agents.tokens import estimate_tokens
from app.db.tenants import tenant_id_for

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MAX_SOURCE_CHARS = 1000
MAX_PASSAGE_CHARS = 4000  # passages.body allows 20000; a sentence with no end is cut here
EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", "": "text",
              ".html": "html", ".htm": "html"}
CONTENT_TYPES = {"markdown": "markdown", "text/markdown": "markdown", "text": "text",
                 "text/plain": "text", "html": "html", "text/html": "html"}


class DocumentError(ValueError):
    """One or more inputs refused; `problems` lists (source, reason). Nothing was written.

    Example:
        >>> str(DocumentError([("a.bin", "binary file (NUL bytes)")]))
        'a.bin: binary file (NUL bytes)'
    """

    def __init__(self, problems: list[tuple[str, str]], *, too_large: bool = False):
        self.problems = problems
        self.too_large = too_large
        super().__init__("; ".join(f"{src}: {why}" for src, why in problems))


@dataclass(frozen=True)
class Document:
    """A validated document, ready to ingest."""

    source: str
    title: str
    content_type: str
    text: str
    sha256: str
    size_bytes: int
    passages: list[Chunk] = field(repr=False)  # each with its section's heading path


@dataclass(frozen=True)
class IngestResult:
    action: str  # added | replaced | unchanged
    document_id: Any
    passages: int

    @property
    def symbol(self) -> str:
        return {"added": "+", "replaced": "~", "unchanged": "="}[self.action]


# -- reading and validating -------------------------------------------------------------------

class _HtmlText(HTMLParser):
    """HTML → text: script/style dropped, headings and blocks on lines of their own."""

    SKIP = {"script", "style", "noscript", "template", "head"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
    BLOCKS = {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
              "ul", "ol", "li", "table", "tr", "pre", "blockquote", "dl", "dt", "dd",
              "figure", "figcaption", "form", "hr", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.in_title = False
        self.title = ""
        self.first_heading = ""
        self.heading: list[str] | None = None
        self.pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self.in_title = True
        if tag == "pre":
            self.pre += 1
        if tag in self.SKIP and tag != "head":
            self.skipping += 1
        elif tag in self.HEADINGS:
            self.parts.append("\n\n")
            self.heading = []
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag in {"p", "div", "section", "article", "table",
                                                 "pre", "blockquote"} else "\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.SKIP and tag != "head":
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.HEADINGS:
            if self.heading is not None and not self.first_heading:
                self.first_heading = " ".join("".join(self.heading).split())
            self.heading = None
            self.parts.append("\n\n")
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
            return
        if self.skipping:
            return
        if not self.pre:  # a line break in the source is a space; blocks make the lines
            data = re.sub(r"\s+", " ", data)
        if self.heading is not None:
            self.heading.append(data)
        self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML document; title from <title>, else the first heading.

    Example:
        >>> html_to_text("<title>T</title><script>x()</script><h1>Hi</h1><p>a &amp; b</p>")
        ('Hi\\n\\na & b', 'T')
    """
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    title = " ".join(parser.title.split()) or parser.first_heading
    return parser.text(), title


def _markdown_title(text: str) -> str:
    for line in text.splitlines()[:200]:
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            return match.group(1)
    return ""


def _cap(chunks: list[Chunk]) -> list[Chunk]:
    """Cut any passage longer than MAX_PASSAGE_CHARS (a run-on 'sentence') at whitespace;
    the pieces keep their section's heading."""
    out: list[Chunk] = []
    for chunk in chunks:
        passage = chunk.body
        while len(passage) > MAX_PASSAGE_CHARS:
            cut = passage.rfind(" ", 0, MAX_PASSAGE_CHARS)
            cut = cut if cut > MAX_PASSAGE_CHARS // 2 else MAX_PASSAGE_CHARS
            out.append(Chunk(chunk.heading, passage[:cut].strip()))
            passage = passage[cut:].strip()
        if passage:
            out.append(Chunk(chunk.heading, passage))
    return out


def content_type_for(source: str) -> str | None:
    """The content type a source's extension implies, or None if unsupported.

    Example:
        >>> content_type_for("notes/Runbook.MD"), content_type_for("README"), \
content_type_for("a.pdf")
        ('markdown', 'text', None)
    """
    return EXTENSIONS.get(Path(source).suffix.lower())


def normalise_source(source: str, cwd: Path | None = None) -> str:
    """The key of a document: relative to `cwd` when under it, normalised, '/'-separated.

    Example:
        >>> normalise_source("./docs//a.md"), normalise_source("/srv/w/b.md", Path("/srv/w"))
        ('docs/a.md', 'b.md')
    """
    path = Path(source)
    if path.is_absolute():
        base = (cwd or Path.cwd()).resolve()
        try:
            path = Path(os.path.normpath(path)).relative_to(base)
        except ValueError:
            pass
    return Path(os.path.normpath(path)).as_posix()


def prepare(source: str, data: bytes, content_type: str | None = None, title: str | None = None,
            *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """Validate raw bytes and turn them into a Document, or raise DocumentError.

    Example:
        >>> prepare("a.md", b"# Runbook\\n\\nPort 443.").title
        'Runbook'
    """
    source = source.strip()
    if not source:
        raise DocumentError([("source", "is empty; give the document a source name")])
    if len(source) > MAX_SOURCE_CHARS or "\x00" in source:
        raise DocumentError([(source[:80], f"source is over {MAX_SOURCE_CHARS} characters "
                                           "or has a NUL byte")])
    kind = CONTENT_TYPES.get((content_type or "").lower()) if content_type \
        else content_type_for(source) or "text"
    if kind is None:
        raise DocumentError([(source, f"content_type {content_type!r} is not one of "
                                      "markdown, text, html")])
    if len(data) > max_bytes:
        raise DocumentError([(source, f"{len(data)} bytes is over the size limit of "
                                      f"{max_bytes} bytes")], too_large=True)
    if b"\x00" in data:
        raise DocumentError([(source, "binary file (NUL bytes); only text is accepted")])
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError([(source, f"binary file (not UTF-8 at byte {exc.start})")]) from None
    raw = raw.removeprefix("\ufeff")
    derived = ""
    if kind == "html":
        text, derived = html_to_text(raw)
    else:
        text = raw
        derived = _markdown_title(raw) if kind == "markdown" else ""
    passages = _cap(chunk_document(text))
    if not passages:
        raise DocumentError([(source, "has no text")])
    name = (title or "").strip() or derived.strip() or Path(source).name or source
    return Document(source=source, title=name[:500], content_type=kind, text=text,
                    sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                    passages=passages)


def _expand(path: Path, shown: str, named: bool, problems: list, found: list,
            skipped: list) -> None:
    """Collect the files under `path` (sorted, dotfiles skipped)."""
    if path.is_dir():
        try:
            children = sorted(path.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            problems.append((shown, f"unreadable directory ({exc.strerror})"))
            return
        for child in children:
            if child.name.startswith("."):
                continue
            _expand(child, f"{shown.rstrip('/')}/{child.name}", False, problems, found,
                    skipped)
        return
    if not path.exists() and not path.is_symlink():
        problems.append((shown, "no such file or directory"))
        return
    if not path.is_file():
        (problems if named else skipped).append((shown, "not a regular file"))
        return
    if content_type_for(path.name) is None:
        reason = f"unsupported type {path.suffix!r} (use .md, .markdown, .txt, .html, .htm " \
                 "or no extension)"
        (problems if named else skipped).append((shown, reason))
        return
    found.append((path, shown))


def read_paths(paths: list[str | Path], *, max_bytes: int = MAX_DOCUMENT_BYTES,
               cwd: Path | None = None) -> tuple[list[Document], list[tuple[str, str]]]:
    """Read and validate every file named (directories recurse); ([docs], [skipped]).

    Files of an unsupported type found inside a directory are skipped (and reported);
    named explicitly, they are an error. Raises DocumentError listing every problem, so
    one run reports them all and writes nothing.

    Example:
        docs, skipped = read_paths(["README.md", "docs/"])
    """
    problems: list[tuple[str, str]] = []
    found: list[tuple[Path, str]] = []
    skipped: list[tuple[str, str]] = []
    for given in paths:
        shown = normalise_source(str(given), cwd)
        _expand(Path(given), shown, True, problems, found, skipped)
    docs: list[Document] = []
    seen: set[str] = set()
    too_large = False
    for path, source in found:
        if source in seen:
            continue  # the same file named twice (or via its directory) is read once
        seen.add(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise DocumentError([(source, f"{size} bytes is over the size limit of "
                                              f"{max_bytes} bytes")], too_large=True)
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
            docs.append(prepare(source, data, max_bytes=max_bytes))
        except OSError as exc:
            problems.append((source, f"unreadable ({exc.strerror or exc})"))
        except DocumentError as exc:
            problems.extend(exc.problems)
            too_large = too_large or exc.too_large
    if problems:
        raise DocumentError(problems, too_large=too_large)
    return docs, skipped


# -- the database -----------------------------------------------------------------------------

def resolve_tenant(conn: psycopg.Connection, value: str) -> uuid.UUID | None:
    """A tenant id from a UUID or a slug (`app.db.tenants.tenant_id_for`); None if unknown."""
    try:
        return tenant_id_for(conn, value)
    except ValueError:
        return None


def _insert_passages(conn: psycopg.Connection, tenant_id: Any, document_id: Any,
                     title: str, passages: list[Chunk], embedder: Any = None) -> None:
    # heading path + title + embedding (the tenant's embedder, else the embedded default)
    store_passages(conn, tenant_id, document_id, title, passages, embedder)


def ingest(conn: psycopg.Connection, tenant_id: Any, doc: Document, *,
           embedder: Any = None) -> IngestResult:
    """Add, replace or leave alone one document, inside the caller's tenant transaction;
    passages are embedded by `embedder` (default: the embedded default model).

    Example:
        with tenant_transaction(pool, tenant_id) as conn:
            ingest(conn, tenant_id, prepare("a.md", b"# A\\n\\nText")).action   # 'added'
    """
    row = conn.execute(
        "SELECT id, sha256, (SELECT count(*) FROM passages p WHERE p.document_id = d.id) AS n "
        "FROM documents d WHERE source = %s FOR UPDATE",
        [doc.source]).fetchone()
    tokens = estimate_tokens(doc.text)
    if row is None:
        new = conn.execute(
            "INSERT INTO documents (tenant_id, title, source, tokens, content_type, sha256, "
            "size_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [tenant_id, doc.title, doc.source, tokens, doc.content_type, doc.sha256,
             doc.size_bytes]).fetchone()
        _insert_passages(conn, tenant_id, new["id"], doc.title, doc.passages, embedder)
        return IngestResult("added", new["id"], len(doc.passages))
    if row["sha256"] == doc.sha256:
        return IngestResult("unchanged", row["id"], row["n"])
    conn.execute("DELETE FROM passages WHERE document_id = %s", [row["id"]])
    conn.execute(
        "UPDATE documents SET title = %s, tokens = %s, content_type = %s, sha256 = %s, "
        "size_bytes = %s, updated_at = now() WHERE id = %s",
        [doc.title, tokens, doc.content_type, doc.sha256, doc.size_bytes, row["id"]])
    _insert_passages(conn, tenant_id, row["id"], doc.title, doc.passages, embedder)
    return IngestResult("replaced", row["id"], len(doc.passages))


_LIST = """
SELECT d.id, d.title, d.source, d.content_type, d.size_bytes, d.tokens, d.sha256,
       d.created_at, d.updated_at,
       (SELECT count(*) FROM passages p WHERE p.document_id = d.id) AS passages
  FROM documents d
 ORDER BY d.source, d.created_at, d.id
 LIMIT %s
"""


def list_documents(conn: psycopg.Connection, limit: int = 1000) -> list[dict]:
    """The tenant's documents (RLS scopes them), by source.

    Example:
        [d["source"] for d in list_documents(conn)]   # ['docs/a.md', 'wiki/b.html']
    """
    return conn.execute(_LIST, [limit]).fetchall()


def find_document(conn: psycopg.Connection, ref: str) -> dict | None:
    """A document by id (UUID) or by source."""
    try:
        doc_id = uuid.UUID(str(ref))
    except ValueError:
        doc_id = None
    if doc_id is not None:
        row = conn.execute("SELECT id, title, source FROM documents WHERE id = %s",
                           [doc_id]).fetchone()
        if row:
            return row
    # exact first (API sources are labels stored as sent), then as a path the CLI would store
    for source in dict.fromkeys([ref, normalise_source(ref)] if ref.strip() else []):
        row = conn.execute("SELECT id, title, source FROM documents WHERE source = %s",
                           [source]).fetchone()
        if row:
            return row
    return None


def remove_document(conn: psycopg.Connection, ref: str) -> dict | None:
    """Delete a document (by id or source) and its passages; the removed row, or None.

    Example:
        remove_document(conn, "docs/a.md")   # {'id': …, 'title': 'A', 'source': 'docs/a.md'}
    """
    row = find_document(conn, ref)
    if row is None:
        return None
    conn.execute("DELETE FROM documents WHERE id = %s", [row["id"]])  # passages cascade
    return row


def human_size(size: int) -> str:
    """Example: human_size(2048) == '2.0 KiB'"""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
