"""Run pyinfra roles as data: recorded facts in, the commands they would issue out.

The way pyinfra tests its own operations: no connection, no host. A real pyinfra State and
Inventory, the host's `get_fact` answered from a recorded fact set (a strict lookup: a fact
the recording lacks fails the test, naming the fact), each operation's command generator
evaluated as the prepare phase would.

Example:
    plan = plan_role(ssh.harden, load_facts("ubuntu2404"), allow_users=["deploy"])
    assert any("sshd -t" in command for command in plan.commands)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

RECORDED = Path(__file__).parent / "recorded_facts"


class UnrecordedFact(KeyError):
    """A role asked for a fact the recording does not hold."""


def encode(value: Any) -> Any:
    """JSON-safe form of a fact value (datetimes tagged, tuples/sets as lists).

    Example:
        >>> encode({"mtime": datetime(2026, 1, 2)})
        {'mtime': {'__datetime__': '2026-01-02T00:00:00'}}
    """
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`.

    Example:
        >>> decode({"__datetime__": "2026-01-02T00:00:00"}).year
        2026
    """
    if isinstance(value, dict):
        if set(value) == {"__datetime__"}:
            return datetime.fromisoformat(value["__datetime__"])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def load_facts(name: str) -> dict[str, list[dict]]:
    """Recorded facts of one OS, e.g. `ubuntu2404` or `debian13`:
    {fact name: [{"kwargs": {...}, "value": ...}, ...]}.

    Example:
        load_facts("debian13")["server.LinuxDistribution"][0]["value"]["name"]  # 'Debian'
    """
    return decode(json.loads((RECORDED / f"{name}.json").read_text())["facts"])


def set_fact(facts: dict, name: str, value: Any, **kwargs) -> dict:
    """Return a copy of `facts` where fact `name` called with `kwargs` answers `value`.

    Example:
        converged = set_fact(facts, "files.File", False, path="/etc/x")
    """
    calls = [call for call in facts.get(name, []) if call["kwargs"] != kwargs]
    return {**facts, name: [*calls, {"kwargs": kwargs, "value": value}]}


def _lookup(facts: dict[str, list[dict]], name: str, kwargs: dict[str, Any]) -> Any:
    for call in facts.get(name, []):
        if call["kwargs"] == encode(kwargs):
            return call["value"]
    raise UnrecordedFact(f"fact {name} ({kwargs}) is not in the recording")


def fact_call_kwargs(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The identifying arguments of one fact call (global `_sudo` etc. dropped).

    Example:
        >>> fact_call_kwargs(("apt-get upgrade",), {"_sudo": True})
        {'arg0': 'apt-get upgrade'}
    """
    own = {key: value for key, value in kwargs.items() if not key.startswith("_")}
    own.update({f"arg{index}": value for index, value in enumerate(args)})
    return own


@dataclass
class Operation:
    """One planned operation: its name, commands (as text), uploads, and conditionality."""

    name: str
    commands: list[str]
    uploads: dict[str, str]
    conditional: bool


@dataclass
class Plan:
    """What a role would do on the recorded host."""

    operations: list[Operation] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        return [command for op in self.operations for command in op.commands]

    @property
    def uploads(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for op in self.operations:
            merged.update(op.uploads)
        return merged

    def named(self, fragment: str) -> Operation:
        matches = [op for op in self.operations if fragment in op.name]
        assert matches, f"no operation named like {fragment!r}: {[op.name for op in self]}"
        return matches[0]

    def __iter__(self):
        return iter(self.operations)


def _as_text(command: Any, uploads: dict[str, str]) -> str:
    if isinstance(command, StringCommand):
        return str(command.get_raw_value())
    if isinstance(command, FileUploadCommand):
        src = command.src
        content = src.getvalue() if hasattr(src, "getvalue") else Path(src).read_text()
        uploads[command.dest] = content
        return f"upload {command.dest}"
    if isinstance(command, FunctionCommand):
        return f"call {command.function.__name__}"
    return repr(command)


def plan_role(role, facts: dict[str, Any], *args, **kwargs) -> Plan:
    """Run `role(*args, **kwargs)` against the recorded `facts`; return its plan.

    Example:
        plan_role(sysctl.harden, load_facts("debian13")).commands
    """
    inventory = Inventory((["recorded"], {"_sudo": True}))
    state = State(inventory, Config())
    state.set_stage(StateStage.Prepare)
    host = inventory.get_host("recorded")

    def fake_get_fact(cls, *fact_args, **fact_kwargs):
        return _lookup(facts, cls.name, fact_call_kwargs(fact_args, fact_kwargs))

    host.get_fact = fake_get_fact  # type: ignore[method-assign]
    add_deploy(state, role, *args, host=host, **kwargs)

    plan = Plan()
    with ctx_state.use(state), ctx_host.use(host):
        _collect(state, host, plan)
    return plan


def _collect(state: State, host: Any, plan: Plan) -> None:
    for op_hash in state.get_op_order():
        if op_hash not in state.ops[host]:
            continue
        op_data = state.get_op_data_for_host(host, op_hash)
        uploads: dict[str, str] = {}
        commands = [_as_text(command, uploads) for command in op_data.command_generator()]
        name = ", ".join(state.get_op_meta(op_hash).names)
        plan.operations.append(
            Operation(name, commands, uploads, bool(op_data.global_arguments.get("_if")))
        )
