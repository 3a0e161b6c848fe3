"""The STATIC binding gate: judge the rendered compose file before anything starts.

INVARIANTS.md §2 (every published port binds the mesh IP or 127.0.0.1, except the door),
§12 (read-only root, no-new-privileges, all capabilities dropped, no volume holding state)
and the issue's rule that nothing but the door is public. Pure Python on the parsed YAML:
the deploy runs it on the operator's side, and fails before `docker compose up`.

Example:
    >>> doc = {"services": {"api": {"ports": ["8080:80"], "read_only": True,
    ...        "security_opt": ["no-new-privileges:true"], "cap_drop": ["ALL"]}}}
    >>> print(compose_violations(doc, mesh_ip="100.64.0.2", door_port=443)[0])  # doctest: +ELLIPSIS
    STATIC GATE: service 'api' publishes '8080:80' with no host IP...
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.binding import Publication, violation

TEMPLATE_HINT = "templates/stack/compose.yml.j2"


class StaticGateError(RuntimeError):
    """The rendered compose file breaks an invariant; nothing was started."""


@dataclass(frozen=True)
class PortBinding:
    """One published port: host IP ('' when the mapping names none), host and container ports.

    Example:
        >>> parse_port("100.64.0.2:8080:80/tcp").host_ip
        '100.64.0.2'
    """

    spec: str
    host_ip: str
    published: str
    target: str


def parse_port(spec: object) -> PortBinding:
    """Parse a compose port, short ("[IP:][HOST:]CONTAINER[/proto]") or long (a mapping).

    Example:
        >>> parse_port("[::]:443:8443").host_ip
        '::'
        >>> parse_port("8080:80").host_ip
        ''
        >>> parse_port({"target": 80, "published": 5000, "host_ip": "0.0.0.0"}).published
        '5000'
    """
    if isinstance(spec, dict):
        return PortBinding(spec=str(spec), host_ip=str(spec.get("host_ip") or ""),
                           published=str(spec.get("published") or ""),
                           target=str(spec.get("target") or ""))
    text = str(spec)
    body = text.split("/", 1)[0]
    if body.startswith("["):  # bracketed IPv6 host address
        address, _, rest = body[1:].partition("]")
        parts = rest.lstrip(":").split(":")
        return PortBinding(text, address, parts[0] if len(parts) > 1 else "", parts[-1])
    parts = body.split(":")
    if len(parts) == 1:
        return PortBinding(text, "", "", parts[0])
    if len(parts) == 2:
        return PortBinding(text, "", parts[0], parts[1])
    address = ":".join(parts[:-2])
    if address and set(address) == {":"}:  # unbracketed "::8080:80" splits into ":"
        address = "::"
    return PortBinding(text, address, parts[-2], parts[-1])


def _port_violations(name: str, service: dict, mesh_ip: str, door_port: int,
                     door_service: str) -> list[str]:
    """The shared binding judgement (stack/binding.py) on each of the service's ports."""
    problems = []
    is_door = name == door_service
    host_network = service.get("network_mode") == "host"
    ports = [parse_port(raw) for raw in service.get("ports") or []]
    publications = [Publication(name, port.host_ip, port.published, port.target, is_door)
                    for port in ports]
    if host_network:
        publications.append(Publication(name, "", "", "", is_door, host_network=True))
    for port, item in zip([*ports, None], publications, strict=False):
        reason = violation(item, mesh_ip, door_port)
        if reason is None:
            continue
        if item.host_network:
            problems.append(f"STATIC GATE: service '{name}' uses network_mode: host, which "
                            f"listens on every interface of the host — fix: remove it in "
                            f"{TEMPLATE_HINT} and publish ports bound to the mesh IP")
            continue
        fix = (f"fix: remove that mapping in {TEMPLATE_HINT}" if is_door else
               f"fix: bind it to the mesh, e.g. '{mesh_ip}:{port.published or port.target}"
               f":{port.target}' (or 127.0.0.1) in {TEMPLATE_HINT}")
        scope = "" if is_door else f"; only the door '{door_service}' may be public"
        problems.append(f"STATIC GATE: service '{name}' publishes '{port.spec}' {reason}"
                        f"{scope} — {fix}")
    return problems


def _volume_violations(name: str, service: dict) -> list[str]:
    problems = []
    for raw in service.get("volumes") or []:
        if isinstance(raw, dict):
            kind, source = raw.get("type", "volume"), raw.get("source", "")
            read_only = bool(raw.get("read_only"))
        else:
            parts = str(raw).split(":")
            source = parts[0] if len(parts) > 1 else ""
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        if kind == "tmpfs":
            continue
        if kind == "bind" and read_only:
            continue  # read-only configuration (agents.json, TLS files): holds no state
        problems.append(
            f"STATIC GATE: service '{name}' mounts '{raw}' ({kind}, writable): no volume or "
            "bind mount may hold state, Postgres is the only store (INVARIANTS.md §12) — fix: "
            f"drop it or mount it read-only (':ro') in {TEMPLATE_HINT}")
    return problems


def _hardening_violations(name: str, service: dict) -> list[str]:
    problems = []
    fix = f"in {TEMPLATE_HINT}"
    if service.get("read_only") is not True:
        problems.append(f"STATIC GATE: service '{name}' has a writable root filesystem — fix: "
                        f"`read_only: true` plus a tmpfs where it must write, {fix}")
    options = [str(option).replace("=", ":") for option in service.get("security_opt") or []]
    if not ({"no-new-privileges:true", "no-new-privileges"} & set(options)):
        problems.append(f"STATIC GATE: service '{name}' lacks no-new-privileges — fix: "
                        f"`security_opt: [\"no-new-privileges:true\"]` {fix}")
    if "ALL" not in [str(cap).upper() for cap in service.get("cap_drop") or []]:
        problems.append(f"STATIC GATE: service '{name}' keeps Linux capabilities — fix: "
                        f"`cap_drop: [ALL]` (and cap_add only what it names) {fix}")
    if service.get("privileged"):
        problems.append(f"STATIC GATE: service '{name}' is privileged — fix: remove "
                        f"`privileged: true` {fix}")
    return problems


def compose_violations(document: dict, mesh_ip: str, door_port: int,
                       door_service: str = "door") -> list[str]:
    """Every broken rule of the compose document, one operator-readable line each."""
    problems = []
    for name, service in (document.get("services") or {}).items():
        service = service or {}
        problems += _port_violations(name, service, mesh_ip, door_port, door_service)
        problems += _volume_violations(name, service)
        problems += _hardening_violations(name, service)
    if document.get("volumes"):
        names = ", ".join(sorted(document["volumes"]))
        problems.append(f"STATIC GATE: the compose file declares named volumes ({names}); no "
                        "volume may hold state (INVARIANTS.md §12) — fix: remove the top-level "
                        f"`volumes:` in {TEMPLATE_HINT}")
    return problems


def check_compose(document: dict, mesh_ip: str, door_port: int,
                  door_service: str = "door") -> None:
    """Raise StaticGateError naming every violation; return None when the file is clean.

    Example:
        check_compose(parse_compose(text), mesh_ip="100.64.0.2", door_port=443)
    """
    problems = compose_violations(document, mesh_ip, door_port, door_service)
    if problems:
        raise StaticGateError(
            "the rendered compose file fails the static binding gate; nothing was started:\n  "
            + "\n  ".join(problems))
