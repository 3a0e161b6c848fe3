"""Sanitizer benchmark: recall, false positives and throughput, new vs the old pattern-only one.

- recall: share of the corpus secrets (tests/unit/secrets_corpus.py, 70+ fake secrets and
  PII of 40+ kinds, each in a realistic line) whose value is gone after redaction, with the
  corpus's PII names switched on;
- false positives, with no PII patterns (an address is not a secret): share of lines changed
  among the negative cases (DMARC records, UUIDs, git SHAs, versions, prose, tables, code),
  among the non-empty lines of README.md (prose), and among the lines of the app's own
  Python sources (code, which agents read and write; it holds a few example secrets in
  docstrings, so a handful of "changes" there are right);
- throughput: KB of README text redacted per second (bounded: at most 2 s or 200 rounds).

The baseline is a frozen copy of the pattern-only sanitizer this one replaced (issue #14), run
in the same process on the same inputs.

Run:
    .venv/bin/python benchmarks/sanitizer.py
    .venv/bin/python benchmarks/sanitizer.py --misses    # also list what each one missed
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.agents.sanitize import PII_PATTERNS, Sanitizer  # noqa: E402
from tests.unit.secrets_corpus import NEGATIVES, PII, SECRETS  # noqa: E402

# The pattern-only sanitizer as it was before issue #14 (secrets part), kept as the baseline.
LEGACY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
                    r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openrouter_key", r"\bsk-or-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("url_password", r"://[^\s:/@]+:(?P<secret>[^\s@/]+)@"),
    ("bearer_token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/\-]{16,}=*)"),
    ("password_assignment",
     r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|token)[\"']?"
     r"\s{0,3}[=:]\s{0,3}[\"']?(?!\[REDACTED)(?P<secret>[^\s\"',;]{6,})"),
)


class LegacySanitizer:
    """The old sanitizer: regexes applied one after the other, nothing else."""

    def __init__(self, pii: tuple[str, ...]):
        rules = list(LEGACY_PATTERNS) + [(name, PII_PATTERNS[name]) for name in pii]
        self._rules = [(kind, re.compile(p)) for kind, p in rules]

    def clean(self, text: str) -> str:
        for kind, pattern in self._rules:
            text = pattern.sub(_legacy_replacer(kind), text)
        return text


def _legacy_replacer(kind: str):
    def replace(match: re.Match) -> str:
        if "secret" not in match.re.groupindex:
            return f"[REDACTED:{kind}]"
        s, e = match.span("secret")
        whole = match.group(0)
        return whole[: s - match.start()] + f"[REDACTED:{kind}]" + whole[e - match.start():]

    return replace


def recall(sanitizer) -> tuple[float, list[str]]:
    missed = [f"{c.kind}: {c.line[:70]!r}" for c in SECRETS
              if c.secret in sanitizer.clean(c.line)]
    return 1 - len(missed) / len(SECRETS), missed


def false_positives(sanitizer, lines: list[str]) -> tuple[float, list[str]]:
    changed = [line for line in lines if sanitizer.clean(line) != line]
    return len(changed) / len(lines), changed


def throughput_kb_s(sanitizer, text: str, max_seconds: float = 2.0, max_rounds: int = 200
                    ) -> float:
    size, rounds, start = len(text.encode()), 0, time.perf_counter()
    while rounds < max_rounds and time.perf_counter() - start < max_seconds:
        sanitizer.clean(text)
        rounds += 1
    return size * rounds / 1024 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list misses and false positives")
    args = parser.parse_args()

    readme = (ROOT / "README.md").read_text()
    prose = [line for line in readme.splitlines() if line.strip()]
    code = [line for path in sorted((ROOT / "app").rglob("*.py"))
            if path.name != "sanitize.py"  # its docstrings are full of example secrets
            for line in path.read_text().splitlines() if line.strip()]
    contenders = {
        "legacy (patterns only)": (LegacySanitizer(PII), LegacySanitizer(())),
        "new (detect-secrets + ours + entropy)": (Sanitizer(pii=PII), Sanitizer(pii=())),
    }
    print(f"corpus: {len(SECRETS)} secrets/PII of {len({c.kind for c in SECRETS})} kinds; "
          f"{len(NEGATIVES)} negative cases; README {len(prose)} lines; "
          f"app code {len(code)} lines")
    header = (f"{'sanitizer':40} {'recall':>8} {'FP neg':>8} {'FP README':>10} "
              f"{'FP code':>8} {'KB/s':>8}")
    print(header)
    print("-" * len(header))
    for name, (with_pii, without_pii) in contenders.items():
        rec, missed = recall(with_pii)
        fp_neg, neg_changed = false_positives(without_pii, NEGATIVES)
        fp_readme, readme_changed = false_positives(without_pii, prose)
        fp_code, code_changed = false_positives(without_pii, code)
        speed = throughput_kb_s(with_pii, readme)
        print(f"{name:40} {rec:8.1%} {fp_neg:8.1%} {fp_readme:10.2%} {fp_code:8.2%} "
              f"{speed:8.0f}")
        if args.misses:
            for label, items in (("missed", missed), ("changed negative", neg_changed),
                                 ("changed README line", readme_changed),
                                 ("changed code line", code_changed)):
                for item in items:
                    print(f"    {label}: {item[:110]}")


if __name__ == "__main__":
    main()
