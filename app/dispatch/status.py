"""The task status machine.

    Draft → Active → Review → Approved          the work and its human gate
    Review → Rejected → Active                  a rejection sends the task back to work
    Active → Failed → Active                    out of attempts; moving it back is a retry
    Active → Waiting → Active                   (engine) delegated; every child settled
    Active → Paused → Active                    (engine pauses, with a reason; an operator
                                                resumes or decides the pending approval)
    Draft/Active/Waiting/Paused/Review/Rejected/Failed → Cancelled   (final)

The same table lives in SQL (`task_status_allowed()`, migrations 0002, 0301 and 0308) as a
backstop, so a direct UPDATE cannot skip a step either; this module gives the API a clear 409
first. Some steps are the engine's alone and never offered to an operator
(`check_transition(..., engine=True)` allows them): Active → Draft (the worker found no agent
to route to; the database insists on a reason in `last_error`), Active → Waiting and
Waiting → Active (the run delegated; its children are done), Active → Paused (a circuit breaker
or a tool call waiting for approval; the database insists on `paused_reason`).

Example:
    >>> check_transition(Status.DRAFT, Status.ACTIVE)
    >>> check_transition(Status.ACTIVE, Status.WAITING, engine=True)
    >>> try:
    ...     check_transition(Status.DRAFT, Status.APPROVED)
    ... except InvalidTransition as exc:
    ...     print(exc)
    a task cannot move from Draft to Approved; from Draft it can move to: Active, Cancelled
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
    WAITING = "Waiting"
    PAUSED = "Paused"
    CANCELLED = "Cancelled"


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"


# The steps an operator may take (the API's and the Command Center's moves).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DRAFT: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.ACTIVE: frozenset({Status.REVIEW, Status.FAILED, Status.CANCELLED}),
    Status.REVIEW: frozenset({Status.APPROVED, Status.REJECTED, Status.CANCELLED}),
    Status.REJECTED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.APPROVED: frozenset(),
    Status.FAILED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.WAITING: frozenset({Status.CANCELLED}),
    Status.PAUSED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.CANCELLED: frozenset(),
}

# Steps only the dispatch engine takes (with a reason), never offered to an operator.
ENGINE_TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset({
    (Status.ACTIVE, Status.DRAFT),
    (Status.ACTIVE, Status.WAITING),
    (Status.WAITING, Status.ACTIVE),
    (Status.ACTIVE, Status.PAUSED),
})

INITIAL = frozenset({Status.DRAFT, Status.ACTIVE})
FINAL = frozenset({Status.APPROVED, Status.CANCELLED})
# A child in one of these no longer holds its parent up (see tasks.wait_for_children).
SETTLED = FINAL


class InvalidTransition(ValueError):
    """A status change the machine does not allow."""


def all_steps() -> frozenset[tuple[Status, Status]]:
    """Every step the machine knows, the operator's and the engine's: the SQL twin's table.

    Example:
        >>> (Status.ACTIVE, Status.PAUSED) in all_steps()
        True
    """
    return frozenset((a, b) for a, targets in TRANSITIONS.items() for b in targets
                     ) | ENGINE_TRANSITIONS


def check_transition(current: Status | str, target: Status | str, *, engine: bool = False
                     ) -> None:
    """Raise InvalidTransition unless `current → target` is an allowed step (`engine`: the
    engine's own steps too)."""
    current, target = Status(current), Status(target)
    allowed = TRANSITIONS[current]
    if target in allowed or (engine and (current, target) in ENGINE_TRANSITIONS):
        return
    options = ", ".join(sorted(allowed)) or "nothing (it is final)"
    raise InvalidTransition(
        f"a task cannot move from {current} to {target}; from {current} it can move to: "
        f"{options}"
    )
