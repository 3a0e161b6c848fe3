"""The invariant catalogue (checks/catalogue.py) and what cites it stay in step.

- docs/INVARIANTS.md is the catalogue rendered (regenerate: python -m checks.catalogue);
- every "FAMILY §N" / "INVARIANTS.md §N" in the code names an entry, reported by that family;
- every check and planted-violation reference names a function that exists;
- entries with no planted violation yet are listed (printed, recorded), not failed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from checks.catalogue import CATALOGUE, ENTRIES, render_markdown

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "build", ".cache", "node_modules", "__pycache__"}
SUFFIXES = {".py", ".j2", ".md", ".sh", ".yml", ".yaml", ".toml", ".conf", ".html", ".txt"}
# In the toolkit's own directories every § is an invariant; elsewhere (the app's retrieval
# formats passages as "[Title §2]") only a citation with its FAMILY / INVARIANTS prefix is.
TOOLKIT_DIRS = {"checks", "stack", "roles", "templates", "deploys", "backups", "staging",
                "inventory"}
DOCUMENT = {"INVARIANTS", "INVARIANTS.md"}
PREFIXED = re.compile(r"\b([A-Z][A-Z0-9]+(?:\.md)?) §(\d+)(?:\s*[-–]\s*§?(\d+))?")
BARE = re.compile(r"§(\d+)(?:\s*[-–]\s*§?(\d+))?")


def project_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and (path.suffix in SUFFIXES or path.name == "Makefile"):
            found.append(path)
    return sorted(found)


def citations() -> list[tuple[str, str | None, int]]:
    """(where, family or None, number) for every invariant citation in the project."""
    found = []
    for path in project_files():
        relative = path.relative_to(REPO)
        if relative == Path("docs/INVARIANTS.md"):
            continue  # generated from the catalogue, compared whole below
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{relative}:{number}"
            for match in PREFIXED.finditer(line):
                first, last = int(match[2]), int(match[3] or match[2])
                found += [(where, match[1], n) for n in range(first, last + 1)]
            if relative.parts[0] in TOOLKIT_DIRS:
                for match in BARE.finditer(line):
                    first, last = int(match[1]), int(match[2] or match[1])
                    found += [(where, None, n) for n in range(first, last + 1)]
    return found


def test_docs_invariants_md_is_the_catalogue_rendered():
    assert (REPO / "docs" / "INVARIANTS.md").read_text() == render_markdown(), (
        "docs/INVARIANTS.md is stale: python -m checks.catalogue > docs/INVARIANTS.md")


def test_entries_are_numbered_once_in_order_and_say_what_why_and_fix():
    assert [entry.number for entry in ENTRIES] == list(range(1, len(ENTRIES) + 1))
    for entry in ENTRIES:
        assert entry.statement and entry.why and entry.fix and entry.title, entry.id
        assert entry.check, f"{entry.id} names no check"
        assert entry.planted is None or entry.planted, f"{entry.id}: use None, not ()"


def test_every_citation_in_the_code_names_an_entry_of_that_family():
    found = citations()
    assert len(found) > 50, "the citation scan found (almost) nothing: is the pattern right?"
    wrong = [f"{where}: {family or ''} §{n}".replace(": §", ": bare §")
             for where, family, n in found
             if n not in CATALOGUE
             or (family and family not in DOCUMENT and family not in CATALOGUE[n].cited_as)]
    assert not wrong, "citations of no catalogue entry (or the wrong family):\n" + \
        "\n".join(wrong)


def test_every_family_an_entry_lists_is_cited_somewhere():
    cited = {(family, n) for _, family, n in citations()}
    stale = [entry.cite(family) for entry in ENTRIES for family in entry.cited_as
             if (family, entry.number) not in cited]
    assert not stale, f"cited_as lists families no message uses: {stale}"


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_check_and_planted_reference_exists():
    missing = []
    for entry in ENTRIES:
        for kind, refs in (("check", entry.check), ("planted", entry.planted or ())):
            for ref in refs:
                file, _, function = ref.partition("::")
                path = REPO / file
                if kind == "planted" and not (file.startswith("tests/")
                                              and function.startswith("test_")):
                    missing.append(f"{entry.id} planted {ref}: not a test function")
                elif not path.is_file() or function not in functions_in(path):
                    missing.append(f"{entry.id} {kind} {ref}: no such function")
    assert not missing, "\n".join(missing)


def test_entries_without_a_planted_violation_are_listed(record_property):
    """Not a failure: the list of what no test plants yet (shown with -rP or -s)."""
    unplanted = [entry for entry in ENTRIES if entry.planted is None]
    for entry in unplanted:
        print(f"no planted violation yet: {entry.id} {entry.title} — {entry.gap or ''}")
    record_property("unplanted", ",".join(entry.id for entry in unplanted))
    assert all(entry.gap for entry in unplanted), "say under `gap` why nothing plants it"


@pytest.mark.parametrize("line, expected", [
    ("EXPOSURE §1: python3 listens", [("EXPOSURE", 1)]),
    ("INVARIANTS.md §6-7 and (§8)", [("INVARIANTS.md", 6), ("INVARIANTS.md", 7)]),
    ("[Runbook › Door §3]", []),
])
def test_the_citation_pattern(line, expected):
    found = [(m[1], n) for m in PREFIXED.finditer(line)
             for n in range(int(m[2]), int(m[3] or m[2]) + 1)]
    assert found == expected
