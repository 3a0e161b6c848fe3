"""The tools an agent may call: the built-ins, the operator's HTTP tools, argument checks and
where a delegation goes.

- Built-ins (`BUILTIN_TOOLS`): `delegate` (hand work to a report: a child task),
  `search_knowledge` (the tenant's documents, through app/agents/retrieval.py) and `report`
  (the task's result). An agent lists them under `tools:` in the agents file without
  declaring them; their schemas are strict (no extra fields, required fields named).
- HTTP tools (`HttpToolConfig`, the `http:` block of a `kind: http` tool): the worker POSTs
  the call's JSON arguments to a URL on the mesh and hands the (capped, sanitized) answer
  back to the model. `call_http_tool` never raises for what the tool does: a timeout, a
  non-2xx answer or bad arguments is an `is_error` result the model can read and act on.
- `validate_arguments` checks a call's arguments against the tool's JSON schema. The
  `jsonschema` package is not a dependency of the app, so this is a small validator for the
  subset the tools use (`SUPPORTED_KEYWORDS`); `check_schema` refuses an HTTP tool whose
  schema needs more, at config time, so nothing is silently left unchecked.
- `resolve_delegate_target` finds the agent a `delegate` call names, among the caller's live
  descendants in the org chart.
- `agent_tool_specs` is one agent's tool list for its prompt, sorted by name (a stable,
  cacheable prefix).

Example:
    >>> validate_arguments(DELEGATE, {"to": "CTO", "title": "Rotate keys", "brief": "Today."})
    >>> validate_arguments(DELEGATE, {"to": "CTO", "title": "x", "brief": "y", "cc": "CFO"})
    "unexpected field 'cc' (allowed: to, title, brief, priority)"
    >>> [t.name for t in agent_tool_specs(["report", "delegate"], {})]
    ['delegate', 'report']
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.agents.envnames import check_env_name
from app.agents.prefix import ToolCall, ToolResult, ToolSpec
from app.agents.sanitize import Sanitizer, SanitizerError

if TYPE_CHECKING:
    import uuid

    import psycopg

DELEGATE = ToolSpec(
    "delegate",
    "Hand a piece of work to one of your reports (an agent under you in the org chart), by "
    "name or role. It becomes a child task of yours; you get the results when every child "
    "task is approved.",
    {
        "type": "object",
        "properties": {
            "to": {"type": "string", "minLength": 1, "maxLength": 200,
                   "description": "the report's name or role"},
            "title": {"type": "string", "minLength": 1, "maxLength": 200,
                      "description": "the child task's title"},
            "brief": {"type": "string", "minLength": 1, "maxLength": 4000,
                      "description": "what to do, the context needed and what done means"},
            "priority": {"type": "string", "enum": ["P0", "P1", "P2"], "default": "P1",
                         "description": "P0 urgent, P1 normal, P2 when there is time"},
        },
        "required": ["to", "title", "brief"],
        "additionalProperties": False,
    },
)

SEARCH_KNOWLEDGE = ToolSpec(
    "search_knowledge",
    "Search the organisation's documents; returns the most relevant passages with their "
    "sources.",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 1000,
                      "description": "what to look for, in plain words"},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)

REPORT = ToolSpec(
    "report",
    "Hand in the task's result. Call it once, when the work is done; a human reviews it.",
    {
        "type": "object",
        "properties": {
            "result": {"type": "string", "minLength": 1, "maxLength": 20000,
                       "description": "the result, complete and self-contained"},
        },
        "required": ["result"],
        "additionalProperties": False,
    },
)

BUILTIN_TOOLS: dict[str, ToolSpec] = {t.name: t for t in (DELEGATE, SEARCH_KNOWLEDGE, REPORT)}

# The keywords `validate_arguments` enforces, and those it reads past (documentation only).
SUPPORTED_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems"})
ANNOTATION_KEYWORDS = frozenset({"description", "title", "default", "examples", "$schema"})
_TYPES = ("object", "string", "integer", "number", "boolean", "array", "null")

# The mesh: Tailscale's CGNAT range and ULA prefix, loopback, and the RFC 1918 networks.
MESH_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "100.64.0.0/10", "fd7a:115c:a1e0::/48", "127.0.0.0/8", "::1/128",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
MESH_SUFFIX = ".ts.net"

MAX_RESPONSE_BYTES = 64 * 1024
# An error answer's body shown to the model: enough to say what went wrong.
MAX_ERROR_BODY_CHARS = 2000
# Headers the worker sets itself; an operator's header must not replace them.
_RESERVED_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding",
                               "connection", "accept-encoding"})
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def check_mesh_url(url: str) -> str:
    """`url` if an HTTP tool may call it: http(s), no credentials in it, and a host on the
    mesh (an IP in `MESH_NETWORKS` or a MagicDNS name ending in `.ts.net`); ValueError saying
    why not otherwise. A tool's answer goes back into a model's context, so tools live on
    the operator's own network, never on the open internet.

    Example:
        >>> check_mesh_url("http://100.101.102.103:8080/lookup")
        'http://100.101.102.103:8080/lookup'
        >>> check_mesh_url("https://example.com/hook")
        Traceback (most recent call last):
        ...
        ValueError: host 'example.com' is not on the mesh: an HTTP tool's URL must name a \
Tailscale address (100.64.0.0/10, fd7a:115c:a1e0::/48), a MagicDNS name ending in .ts.net, \
loopback (127.0.0.0/8, ::1) or a private network (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must start with http:// or https:// (got {parts.scheme or 'none'}:)")
    if "@" in parts.netloc:
        raise ValueError("credentials in the URL are refused: send them as a header named "
                         "under headers_env (the NAME of an environment variable)")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("the URL has no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in MESH_NETWORKS if net.version == address.version):
            return url
    elif host.endswith(MESH_SUFFIX) and len(host) > len(MESH_SUFFIX):
        return url
    raise ValueError(
        f"host {host!r} is not on the mesh: an HTTP tool's URL must name a Tailscale address "
        "(100.64.0.0/10, fd7a:115c:a1e0::/48), a MagicDNS name ending in .ts.net, loopback "
        "(127.0.0.0/8, ::1) or a private network (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")


def _env_name(value: str) -> str:
    """An environment variable NAME (app.agents.envnames.check_env_name: a pasted key is
    refused, and the message never repeats it)."""
    return check_env_name(value)


class HttpToolConfig(BaseModel):
    """Where a `kind: http` tool sends its calls: a POST of the call's JSON arguments.

    `headers_env` maps a header to the NAME of the environment variable holding its value
    (a token, say), looked up on the worker at call time: no secret sits in the file.

    Example:
        >>> HttpToolConfig(url="http://127.0.0.1:9000/t",
        ...                headers_env={"Authorization": "CRM_TOKEN"}).timeout_seconds
        10.0
    """

    # a key pasted under headers_env must not reach a log through pydantic's error text
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(max_length=2000, description="on the mesh; see check_mesh_url")
    method: Literal["POST"] = "POST"
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    # each value checked on its own, so a problem is reported at its header's line
    headers_env: dict[str, Annotated[str, AfterValidator(_env_name)]] = Field(
        default_factory=dict)

    _mesh = field_validator("url")(lambda v: check_mesh_url(v))

    @field_validator("headers_env")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if not _HEADER_NAME.match(header):
                raise ValueError(f"header {header[:70]!r}: a header name is letters, digits "
                                 "and -, at most 64 characters")
            if header.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {header}: set by the worker itself")
        return value


def check_schema(schema: Any, path: str = "parameters") -> list[str]:
    """Problems that keep `validate_arguments` from enforcing `schema` fully: a keyword
    outside `SUPPORTED_KEYWORDS` (and the annotations), an unknown type, a malformed value.
    An HTTP tool's schema must pass (its arguments are checked before every call).

    Example:
        >>> check_schema({"type": "object", "properties": {"q": {"type": "string",
        ...                                                     "pattern": "^a"}}})
        ["parameters.properties.q: keyword 'pattern' is not supported (supported: \
additionalProperties, const, enum, items, maxItems, maxLength, maximum, minItems, minLength, \
minimum, properties, required, type)"]
    """
    if not isinstance(schema, dict):
        return [f"{path}: a schema is a mapping"]
    out = []
    for key in schema:
        if key not in SUPPORTED_KEYWORDS and key not in ANNOTATION_KEYWORDS:
            out.append(f"{path}: keyword {key!r} is not supported (supported: "
                       f"{', '.join(sorted(SUPPORTED_KEYWORDS))})")
    types = schema.get("type")
    for t in (types if isinstance(types, list) else [types] if types is not None else []):
        if t not in _TYPES:
            out.append(f"{path}.type: {t!r} is not one of {', '.join(_TYPES)}")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        out.append(f"{path}.properties: a mapping of field name to schema")
    else:
        for name, sub in props.items():
            out.extend(check_schema(sub, f"{path}.properties.{name}"))
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        out.append(f"{path}.required: a list of field names")
    extra = schema.get("additionalProperties", True)
    if isinstance(extra, dict):
        out.extend(check_schema(extra, f"{path}.additionalProperties"))
    elif not isinstance(extra, bool):
        out.append(f"{path}.additionalProperties: true, false or a schema")
    if "items" in schema:
        out.extend(check_schema(schema["items"], f"{path}.items"))
    if "enum" in schema and not isinstance(schema["enum"], list):
        out.append(f"{path}.enum: a list of allowed values")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in schema and (type(schema[key]) is not int or schema[key] < 0):
            out.append(f"{path}.{key}: a whole number ≥ 0")
    for key in ("minimum", "maximum"):
        if key in schema and (isinstance(schema[key], bool)
                              or not isinstance(schema[key], int | float)):
            out.append(f"{path}.{key}: a number")
    return out


def validate_arguments(spec_or_schema: ToolSpec | dict, arguments: Any) -> str | None:
    """The first way `arguments` break the tool's JSON schema, as a message for the model
    (it names the field), or None when they fit. Keywords outside `SUPPORTED_KEYWORDS` are
    read past (annotations; an HTTP tool's schema is checked by `check_schema` up front).

    Example:
        >>> validate_arguments(REPORT, {"result": ""})
        'result: at least 1 character(s) (got 0)'
        >>> validate_arguments(REPORT, {"__invalid_json__": "{oops"})
        'the arguments are not valid JSON; send one JSON object'
    """
    schema = spec_or_schema.parameters if isinstance(spec_or_schema, ToolSpec) \
        else spec_or_schema
    if isinstance(arguments, dict) and "__invalid_json__" in arguments:
        # the providers' parser marks arguments the model sent as broken JSON this way
        return "the arguments are not valid JSON; send one JSON object"
    return _check(schema or {}, arguments, "")


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"object": dict, "string": str, "boolean": bool, "array": list,
                              "null": type(None)}.get(kind, object))


def _json_type(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _type_ok(kind, value):
            return kind
    return type(value).__name__


def _check(schema: dict, value: Any, path: str) -> str | None:
    where = f"{path}: " if path else ""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_type_ok(k, value) for k in kinds):
            return f"{where or 'arguments: '}expected {' or '.join(kinds)}, got {_json_type(value)}"
    if "const" in schema and value != schema["const"]:
        return f"{where}must be {json.dumps(schema['const'])}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}must be one of {', '.join(map(_show, schema['enum']))}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where}at least {schema['minLength']} character(s) (got {len(value)})"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where}at most {schema['maxLength']} characters (got {len(value)})"
    if _type_ok("number", value):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}must be ≥ {schema['minimum']} (got {value})"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where}must be ≤ {schema['maximum']} (got {value})"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{where}at least {schema['minItems']} item(s) (got {len(value)})"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where}at most {schema['maxItems']} items (got {len(value)})"
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problem = _check(schema["items"], item, f"{path}[{i}]")
                if problem:
                    return problem
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return f"{where}missing required field {name!r}"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub_path = f"{path}.{name}" if path else str(name)
            if name in props:
                problem = _check(props[name], item, sub_path)
            elif extra is False:
                return (f"{where}unexpected field {str(name)[:100]!r} (allowed: "
                        f"{', '.join(props) or 'none'})")
            elif isinstance(extra, dict):
                problem = _check(extra, item, sub_path)
            else:
                problem = None
            if problem:
                return problem
    return None


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class _Answer:
    """What the request thread got: a response (status, capped body) or an exception."""

    status: int = 0
    body: bytes = b""
    truncated: bool = False
    location: str = ""
    error: BaseException | None = None


def call_http_tool(tool: HttpToolConfig | Any, spec: ToolSpec,
                   arguments: dict | ToolCall, sanitizer: Sanitizer,
                   environ: Mapping[str, str], *, call_id: str = "") -> ToolResult:
    """Call an HTTP tool: POST `arguments` as JSON to `tool.url`, and return what goes back
    to the model. `tool` may be the declared `ToolConfig` (its `http:` block is used) and
    `arguments` the model's `ToolCall` (its arguments; its id answers as `call_id`).
    Never raises for the tool's behaviour; each of these is an `is_error` result saying what
    happened:

    - arguments that break `spec`'s schema (nothing is sent);
    - a header whose environment variable is not set (nothing is sent);
    - no answer within `tool.timeout_seconds`: "timed out after Ns" (the whole call, body
      included, is bounded by that time: the request runs in a thread the caller stops
      waiting for);
    - a 3xx (redirects are not followed: a mesh tool must not send the worker elsewhere)
      or any other non-2xx answer.

    The body read is capped at `MAX_RESPONSE_BYTES` (streamed: a huge answer is never held in
    memory); a JSON body comes back re-serialised compactly; everything returned is redacted
    by `sanitizer` first (if detection fails, the output is withheld).

    Example:
        result = call_http_tool(cfg.http, spec, {"host": "db-1"}, Sanitizer(), os.environ,
                                call_id="toolu_01")
        result.is_error, result.content     # False, '{"status":"up"}'
    """
    if isinstance(arguments, ToolCall):
        call_id, arguments = call_id or arguments.id, arguments.arguments
    if not isinstance(tool, HttpToolConfig):
        if getattr(tool, "http", None) is None:
            raise ValueError(f"tool {spec.name!r} is not an HTTP tool (no http: block)")
        tool = tool.http

    def result(content: str, is_error: bool = False, limit: int | None = None) -> ToolResult:
        try:
            # redact, then cut: a secret cut in half might no longer look like one
            content = sanitizer.clean(content)[:limit].rstrip()
        except SanitizerError:
            content, is_error = ("the tool's output could not be checked for secrets, so it "
                                 "is withheld"), True
        return ToolResult(call_id, spec.name, content, is_error)

    problem = validate_arguments(spec, arguments)
    if problem:
        return result(f"invalid arguments: {problem}", True)
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               # no compression: the cap must bound what is decoded, not what is sent
               "Accept-Encoding": "identity"}
    for header, env in tool.headers_env.items():
        value = environ.get(env)
        if not value:
            return result(f"not called: header {header} needs the environment variable "
                          f"{env}, which is not set on the worker", True)
        headers[header] = value
    body = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode()

    answer = _post_within(tool, headers, body)
    timeout = f"{tool.timeout_seconds:g}s"
    if answer is None or isinstance(answer.error, httpx.TimeoutException):
        return result(f"timed out after {timeout}", True)
    if answer.error is not None:
        if isinstance(answer.error, httpx.ConnectError):
            return result(f"could not connect to {urlsplit(tool.url).netloc}: "
                          f"{answer.error}", True)
        return result(f"the request failed: {type(answer.error).__name__}: "
                      f"{str(answer.error)[:300]}", True)
    text = answer.body.decode("utf-8", errors="replace")
    if 300 <= answer.status < 400:
        return result(f"HTTP {answer.status}: redirects are not followed (Location: "
                      f"{answer.location[:300] or 'none'})", True)
    if not 200 <= answer.status < 300:
        return result(f"HTTP {answer.status}: {text}", True, limit=MAX_ERROR_BODY_CHARS)
    if answer.truncated:
        return result(f"{text}\n[truncated: the answer is longer than {MAX_RESPONSE_BYTES} "
                      "bytes]")
    if not text.strip():
        return result(f"(empty answer, HTTP {answer.status})")
    try:
        text = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        pass  # not JSON: the text as it came
    return result(text)


def _post_within(tool: HttpToolConfig, headers: dict[str, str], body: bytes) -> _Answer | None:
    """POST in a daemon thread and wait at most the tool's timeout (plus a little, so the
    client's own timeout usually reports first); None if the thread is still going.

    httpx's timeout applies per network operation, so a server trickling its body could
    keep one call going for far longer; the thread stops reading at the deadline (checked
    per chunk) and each read is itself bounded, so it ends soon after.
    """
    answer = _Answer()
    stop = threading.Event()

    def run() -> None:
        try:
            with httpx.Client(timeout=tool.timeout_seconds, follow_redirects=False,
                              trust_env=False) as client:  # no proxy from the environment
                with client.stream("POST", tool.url, content=body, headers=headers) as resp:
                    answer.status = resp.status_code
                    answer.location = resp.headers.get("location", "")
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        if stop.is_set():
                            return
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            answer.truncated = True
                            break
                    answer.body = b"".join(chunks)[:MAX_RESPONSE_BYTES]
        except BaseException as exc:  # noqa: BLE001 - reported to the caller as a result
            answer.error = exc

    thread = threading.Thread(target=run, name="http-tool", daemon=True)
    thread.start()
    thread.join(tool.timeout_seconds + 0.25)
    if thread.is_alive():
        stop.set()
        return None
    return answer


_DESCENDANTS = """
WITH RECURSIVE below(id) AS (
    SELECT id FROM agents WHERE manager_id = %(caller)s
    UNION  -- not UNION ALL: a manager cycle written past the file's checks still ends
    SELECT a.id FROM agents a JOIN below b ON a.manager_id = b.id
)
SELECT a.* FROM agents a JOIN below b ON b.id = a.id
 WHERE a.retired_at IS NULL AND a.id <> %(caller)s
"""

# Names listed in a "no such report" message, at most.
_LISTED = 30


def resolve_delegate_target(conn: psycopg.Connection, caller_agent_id: uuid.UUID,
                            to: str) -> dict:
    """The agent row a `delegate` call's `to` names: among the caller's live (not retired)
    descendants in the org chart (the manager_id chain, any depth), the one whose name is
    `to`, else the first by name whose role is `to` (both case-insensitive). ValueError
    listing who may be named otherwise. Run it in the caller's tenant transaction: RLS
    keeps the search in that tenant (and the manager foreign key keeps a chain in one).

    Example:
        with tenant_transaction(pool, tenant_id) as conn:
            resolve_delegate_target(conn, orchestrator_id, "lead · engineering")["name"]
            # 'CTO'
    """
    rows = sorted(conn.execute(_DESCENDANTS, {"caller": caller_agent_id}).fetchall(),
                  key=lambda r: (r["name"].casefold(), r["name"]))
    key = to.strip().casefold()
    for field in ("name", "role"):
        for row in rows:
            if key and (row[field] or "").casefold() == key:
                return row
    if not rows:
        raise ValueError("you have no reports to delegate to: do the work yourself and "
                         "report it")
    allowed = [f"{r['name']} ({r['role']})" if r["role"] else r["name"] for r in rows]
    more = f", … and {len(allowed) - _LISTED} more" if len(allowed) > _LISTED else ""
    raise ValueError(f"no report of yours is named or has the role {to[:200]!r}; delegate to "
                     f"one of: {', '.join(allowed[:_LISTED])}{more}")


def agent_tool_specs(agent_tools: list[str],
                     declared: Mapping[str, Any]) -> tuple[ToolSpec, ...]:
    """One agent's tools for its prompt: the built-ins it lists and its declared tools,
    sorted by name (the tool list is part of the cached prefix, so it must not depend on
    the order in the file). A name neither built in nor declared is a ValueError: the
    database (from `vos agents apply`) and the worker's file disagree.

    Example:
        >>> [t.name for t in agent_tool_specs(["search_knowledge", "delegate"], {})]
        ['delegate', 'search_knowledge']
    """
    specs: dict[str, ToolSpec] = {}
    for name in agent_tools:
        if name in BUILTIN_TOOLS:
            specs[name] = BUILTIN_TOOLS[name]
        elif name in declared:
            tool = declared[name]
            specs[name] = ToolSpec(tool.name, tool.description, tool.parameters)
        else:
            raise ValueError(
                f"the agent lists tool {name!r}, which the worker's agents file does not "
                f"declare (declared: {', '.join(sorted(declared)) or 'none'}; built in: "
                f"{', '.join(BUILTIN_TOOLS)}): apply the same file the worker reads")
    return tuple(specs[name] for name in sorted(specs))
