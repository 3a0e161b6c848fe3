"""Record the facts deploys/full.py reads, from a real host, for the roles-as-data tests.

Run as a pyinfra deploy in dry mode against a fresh (not yet deployed) host:

    VOS_RECORD_FACTS=tests/unit/recorded_facts/debian13.json \\
        pyinfra --dry -y inventory/staging.py tests/unit/recorded_facts/record.py

It wraps the host's fact lookup, runs deploys/full.py's planning (nothing executes under
--dry), and writes every fact call with its answer as JSON. Secrets never pass through facts.
"""

import json
import os
import runpy
import sys
from pathlib import Path

from pyinfra import host

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "unit"))

from roles_harness import encode, fact_call_kwargs  # noqa: E402

recorded: dict[str, list[dict]] = {}
real_get_fact = host.get_fact


def redact(name: str, value):
    """Password hashes never enter the repository: keep only whether one is set/locked."""
    if name == "server.Users" and isinstance(value, dict):
        for entry in value.values():
            password = entry.get("password") or ""
            if password and not password.startswith(("!", "*")):
                entry["password"] = "$y$REDACTED-HASH"
    return value


def recording_get_fact(cls, *args, **kwargs):
    value = real_get_fact(cls, *args, **kwargs)
    call = {"kwargs": encode(fact_call_kwargs(args, kwargs)),
            "value": encode(redact(cls.name, value))}
    calls = recorded.setdefault(cls.name, [])
    if call not in calls:
        calls.append(call)
    return value


host.get_fact = recording_get_fact
try:
    runpy.run_path(str(REPO / "deploys" / "full.py"), run_name="__main__")
finally:
    host.get_fact = real_get_fact
    target = Path(os.environ.get("VOS_RECORD_FACTS", "recorded_facts.json"))
    target.write_text(json.dumps({"host": host.name, "facts": recorded}, indent=1,
                                 sort_keys=True) + "\n")
    print(f"recorded {sum(map(len, recorded.values()))} fact calls into {target}")
