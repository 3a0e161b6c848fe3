"""The task status machine: Draft → Active → Review → Approved, Review → Rejected → Active,
and Active → Failed → Active (a task out of attempts; moving it back is a retry).

The same table lives in SQL (`task_status_allowed()`, migrations 0002 and 0301) as a
backstop, so a direct UPDATE cannot skip a step either; this module gives the API a clear 409
first. One step is the engine's alone: Active → Draft, when the worker finds no agent to route
an unassigned task to (the database insists on a reason in `last_error`); an operator cannot
take it (`check_transition(..., engine=True)` allows it).

Example:
    >>> check_transition(Status.DRAFT, Status.ACTIVE)
    >>> check_transition(Status.FAILED, Status.ACTIVE)
    >>> try:
    ...     check_transition(Status.DRAFT, Status.APPROVED)
    ... except InvalidTransition as exc:
    ...     print(exc)
    a task cannot move from Draft to Approved; from Draft it can move to: Active
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    DRAFT = "Draft"
    ACTIVE = "Active"
    REVIEW = "Review"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    FAILED = "Failed"


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DRAFT: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.REVIEW, Status.FAILED}),
    Status.REVIEW: frozenset({Status.APPROVED, Status.REJECTED}),
    Status.REJECTED: frozenset({Status.ACTIVE}),
    Status.APPROVED: frozenset(),
    Status.FAILED: frozenset({Status.ACTIVE}),
}

# Steps only the dispatch engine takes (with a reason), never offered to an operator.
ENGINE_TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset({(Status.ACTIVE, Status.DRAFT)})

INITIAL = frozenset({Status.DRAFT, Status.ACTIVE})


class InvalidTransition(ValueError):
    """A status change the machine does not allow."""


def check_transition(current: Status | str, target: Status | str, *, engine: bool = False
                     ) -> None:
    """Raise InvalidTransition unless `current → target` is an allowed step (`engine`: the
    worker's own steps too)."""
    current, target = Status(current), Status(target)
    allowed = TRANSITIONS[current]
    if target in allowed or (engine and (current, target) in ENGINE_TRANSITIONS):
        return
    options = ", ".join(sorted(allowed)) or "nothing (it is final)"
    raise InvalidTransition(
        f"a task cannot move from {current} to {target}; from {current} it can move to: "
        f"{options}"
    )
