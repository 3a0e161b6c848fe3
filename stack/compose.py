"""Render the app's compose file from templates/stack/compose.yml.j2 (jinja2, strict).

Pure functions, no host access: roles/stack.py renders on the operator's side, runs the
static gate (stack/gate.py) on the result, and only then puts the file on the host.

Example:
    >>> text = render_compose(ComposeContext(
    ...     image="agent-vos:abc1234",
    ...     mesh_ip="100.64.0.2", door_port=443))
    >>> "100.64.0.2:8080:8080" in text
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
import yaml

from roles.settings import StackSettings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
COMPOSE_TEMPLATE = "stack/compose.yml.j2"
STACK_DIR = "/etc/vos-stack"  # on the host: env files, rendered compose per release
TLS_DIR = f"{STACK_DIR}/tls"  # door.crt + door.key, owned by the containers' user, 0600
# Agents files by content (`<sha256[:16]>.yaml`): a release's compose names its own, so a
# changed file is a new release and a rollback brings the old agents back too.
AGENTS_DIR = f"{STACK_DIR}/agents"
AGENTS_IN_CONTAINER = "/run/vos/agents.yaml"
WORKER_HEARTBEAT = "/tmp/vos-worker.alive"  # on the worker's tmpfs; its age is the health
PROJECT = "vos"


def _default(field: str):
    """A knob's default, from the one place knobs live: the inventory model (StackSettings)."""
    return StackSettings.model_fields[field].default


@dataclass(frozen=True)
class ComposeContext:
    """Everything the compose template needs (names match the template's variables); the
    defaults are the inventory model's (roles/settings.py StackSettings), never re-written."""

    image: str
    mesh_ip: str
    door_port: int
    door_host_ip: str = str(_default("door_host_ip"))
    api_port: int = _default("api_port")
    project: str = PROJECT
    env_file: str = f"{STACK_DIR}/app.env"
    migrate_env_file: str = f"{STACK_DIR}/migrate.env"
    memory_api: str = _default("memory_api")
    memory_door: str = _default("memory_door")
    memory_worker: str = _default("memory_worker")
    worker_env_file: str = f"{STACK_DIR}/worker.env"
    agents_file: str | None = None  # on the host (AGENTS_DIR/<sha>.yaml): worker + apply
    agents_tenant: str = _default("agents_tenant")
    worker_replicas: int = _default("worker_replicas")
    tls_dir: str | None = None  # host dir with door.crt + door.key: the door serves HTTPS
    health_interval: int = _default("health_interval_seconds")
    health_start_interval: int = _default("health_start_interval_seconds")


def render_compose(context: ComposeContext, template_dir: Path = TEMPLATES,
                   template_name: str = COMPOSE_TEMPLATE) -> str:
    """The compose file as text. Undefined template variables are an error, not blanks.

    `template_dir` lets tests render a planted (mutated) copy of the template.
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    return environment.get_template(template_name).render(
        **asdict(context), agents_in_container=AGENTS_IN_CONTAINER,
        worker_heartbeat=WORKER_HEARTBEAT)


def parse_compose(text: str) -> dict:
    """The compose document as data (YAML anchors and merge keys resolved).

    Example:
        >>> parse_compose("services: {a: {image: x}}")["services"]["a"]["image"]
        'x'
    """
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ValueError("not a compose file: no `services:` mapping at the top level")
    return document
