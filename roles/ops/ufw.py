"""UFW as a pyinfra fact and idempotent operations (pyinfra 3.x ships none).

The fact reads `ufw status verbose` (is the firewall active, its policies), `ufw show added`
(the user rules in the exact syntax the `ufw` command accepts, also while UFW is inactive)
and `/etc/default/ufw` (policies and IPv6, readable before the first `ufw enable`). The
operations compare the wanted state with that fact and yield a command only on a difference,
so a converged host produces no change.

Example (inside a `@deploy` function):
    ufw.policy(direction="incoming", policy="deny")
    ufw.rule(rule="allow in on tailscale0", comment="mesh")
    ufw.enabled()
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host
from pyinfra.api import FactBase, OperationValueError, operation

POLICY_TO_IPTABLES = {"allow": "ACCEPT", "deny": "DROP", "reject": "REJECT"}
DIRECTION_TO_KEY = {
    "incoming": "DEFAULT_INPUT_POLICY",
    "outgoing": "DEFAULT_OUTPUT_POLICY",
    "routed": "DEFAULT_FORWARD_POLICY",
}
_ADDED = "##VOS-UFW-ADDED##"
_DEFAULTS = "##VOS-UFW-DEFAULTS##"


def normalise_rule(rule: str) -> str:
    """Return a rule without `ufw ` prefix, comment and repeated blanks.

    Example:
        >>> normalise_rule("ufw allow 443/tcp comment 'door'")
        'allow 443/tcp'
    """
    words = shlex.split(rule)
    if words and words[0] == "ufw":
        words = words[1:]
    if "comment" in words:
        words = words[: words.index("comment")]
    return " ".join(words)


def parse_ufw_state(lines: list[str]) -> dict:
    """Parse the fact's three sections into a dict.

    Example:
        >>> parse_ufw_state(["Status: inactive", _ADDED, "ufw allow 443/tcp",
        ...                  _DEFAULTS, 'DEFAULT_INPUT_POLICY="DROP"', "IPV6=yes"])["rules"]
        ['allow 443/tcp']
    """
    state: dict = {"active": False, "rules": [], "defaults": {}, "ipv6": None, "status": {}}
    section = "status"
    for raw in lines:
        line = raw.strip()
        if line in (_ADDED, _DEFAULTS):
            section = line
            continue
        if not line:
            continue
        if section == "status":
            _parse_status_line(line, state)
        elif section == _ADDED and line.startswith("ufw "):
            state["rules"].append(normalise_rule(line))
        elif section == _DEFAULTS and "=" in line:
            key, _, value = line.partition("=")
            value = value.strip().strip('"')
            if key == "IPV6":
                state["ipv6"] = value == "yes"
            else:
                state["defaults"][key] = value
    return state


def _parse_status_line(line: str, state: dict) -> None:
    if line.startswith("Status:"):
        state["active"] = line.split(":", 1)[1].strip() == "active"
    elif line.startswith("Default:"):
        # "Default: deny (incoming), allow (outgoing), deny (routed)"
        for policy, direction in re.findall(r"(\w+) \((\w+)\)", line):
            state["status"][direction] = policy
    elif line.startswith("Logging:"):
        state["status"]["logging"] = line.split(":", 1)[1].strip()


class UfwState(FactBase):
    """UFW's state: `active`, user `rules` (normalised), file `defaults`, `ipv6`.

    Example value:
        {"active": True, "rules": ["allow in on tailscale0", "allow 443/tcp"],
         "defaults": {"DEFAULT_INPUT_POLICY": "DROP", ...}, "ipv6": True,
         "status": {"incoming": "deny", "outgoing": "allow", "routed": "deny"}}
    """

    default = dict

    def requires_command(self) -> str:
        return "ufw"

    def command(self) -> str:
        return (
            "ufw status verbose; "
            f"echo '{_ADDED}'; ufw show added; "
            f"echo '{_DEFAULTS}'; grep -E '^(DEFAULT_[A-Z]+_POLICY|IPV6)=' /etc/default/ufw"
        )

    def process(self, output: list[str]) -> dict:
        return parse_ufw_state(output)


@operation()
def policy(direction: str, policy: str):
    """Set UFW's default policy for `incoming`, `outgoing` or `routed` traffic.

    Example:
        ufw.policy(direction="incoming", policy="deny")
    """
    if direction not in DIRECTION_TO_KEY or policy not in POLICY_TO_IPTABLES:
        raise OperationValueError(f"ufw.policy: bad direction/policy {direction!r}/{policy!r}")
    current = host.get_fact(UfwState) or {}
    have = (current.get("defaults") or {}).get(DIRECTION_TO_KEY[direction])
    if have == POLICY_TO_IPTABLES[policy]:
        host.noop(f"ufw default {direction} is already {policy}")
        return
    yield f"ufw default {policy} {direction}"


@operation()
def ipv6(enabled: bool = True):
    """Make UFW manage IPv6 too (`IPV6=yes` in /etc/default/ufw); reloads if active.

    Example:
        ufw.ipv6(enabled=True)
    """
    current = host.get_fact(UfwState) or {}
    if current.get("ipv6") is enabled:
        host.noop(f"ufw IPV6 is already {'yes' if enabled else 'no'}")
        return
    value = "yes" if enabled else "no"
    yield f"sed -i -E 's/^IPV6=.*/IPV6={value}/' /etc/default/ufw"
    if current.get("active"):
        yield "ufw reload"


@operation()
def rule(rule: str, present: bool = True, comment: str | None = None):
    """Ensure one UFW rule, written as after `ufw`, is present (or absent).

    Rules compare in `ufw show added` syntax: `allow 443/tcp`, `allow in on tailscale0`,
    `deny 5432`. One rule covers IPv4 and IPv6 when `IPV6=yes`.

    Example:
        ufw.rule(rule="allow 443/tcp", comment="the door")
        ufw.rule(rule="allow 22/tcp", present=False)
    """
    wanted = normalise_rule(rule)
    if not wanted.split() or wanted.split()[0] not in ("allow", "deny", "reject", "limit"):
        raise OperationValueError(f"ufw.rule: {rule!r} is not an allow/deny/reject/limit rule")
    rules = (host.get_fact(UfwState) or {}).get("rules", [])
    if present and wanted not in rules:
        suffix = f" comment {shlex.quote(comment)}" if comment else ""
        yield f"ufw {wanted}{suffix}"
    elif not present and wanted in rules:
        yield f"ufw delete {wanted}"
    else:
        host.noop(f"ufw rule '{wanted}' is already {'present' if present else 'absent'}")


@operation()
def enabled():
    """Enable UFW (non-interactively) if it is not active; the rules must be in place first.

    Example:
        ufw.enabled()
    """
    if (host.get_fact(UfwState) or {}).get("active"):
        host.noop("ufw is already active")
        return
    yield "ufw --force enable"


@operation()
def reload_if_active():
    """Reload UFW so edited `before/after.rules` take effect; no-op while inactive.

    Meant to run with `_if=<template op>.did_change`, so a converged host reloads nothing.

    Example:
        ufw.reload_if_active(_if=after_rules.did_change)
    """
    if (host.get_fact(UfwState) or {}).get("active"):
        yield "ufw reload"
