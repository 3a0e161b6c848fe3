"""The task status machine: Draft → Active → Review → Approved, and Review → Rejected → Active.

The same table lives in SQL (`task_status_allowed()` in migration 0002) as a backstop, so a
direct UPDATE cannot skip a step either; this module gives the API a clear 409 first.

Example:
    >>> check_transition(Status.DRAFT, Status.ACTIVE)
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


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DRAFT: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.REVIEW}),
    Status.REVIEW: frozenset({Status.APPROVED, Status.REJECTED}),
    Status.REJECTED: frozenset({Status.ACTIVE}),
    Status.APPROVED: frozenset(),
}

INITIAL = frozenset({Status.DRAFT, Status.ACTIVE})


class InvalidTransition(ValueError):
    """A status change the machine does not allow."""


def check_transition(current: Status | str, target: Status | str) -> None:
    """Raise InvalidTransition unless `current → target` is an allowed step."""
    current, target = Status(current), Status(target)
    allowed = TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (it is final)"
        raise InvalidTransition(
            f"a task cannot move from {current} to {target}; from {current} it can move to: "
            f"{options}"
        )
