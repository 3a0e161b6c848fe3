"""Stack role: ship the app image, write the env files, render + gate compose, activate.

Order (the issue's deploy step): ship the image (save → copy → load, or pull) → env files
(0600 root:root, values from the operator's environment) → render compose → STATIC binding
gate on the operator's side (a violation raises before any operation: nothing starts) →
record the release → `vos-stack-activate`: migrations one-shot → `docker compose up -d` →
bounded health wait (last log lines on timeout) → runtime binding grep → mark current; on
any failure it restarts the previous release and fails. The full runtime gate
(checks/test_stack.py) runs again in the deploy's gate step.

A re-run with the same image, the same rendered file and the same env files makes no new
release and restarts nothing; a changed env file alone (a rotated secret) makes a new
release, and compose recreates the containers whose environment changed.

Example (deploys/stack.py):
    stack.deploy_stack(settings.stack, mesh_ip="100.64.0.2", door_port=443,
                       image="agent-vos:3f2a1c0")
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles._paths import template
from roles.settings import InventoryError, StackSettings
from stack import binding
from stack.compose import (
    AGENTS_DIR,
    PROJECT,
    STACK_DIR,
    TLS_DIR,
    ComposeContext,
    parse_compose,
    render_compose,
)
from stack.engine import operator_engine
from stack.gate import StaticGateError, check_compose
from stack.images import ensure_app_image, save_image, source_revision
from stack.releases import Release, new_release_id, prune_command, record_command

ACTIVATE = "/usr/local/sbin/vos-stack-activate"
BINDING_JUDGE = "/usr/local/lib/vos-stack/binding.py"  # stack/binding.py, run by ACTIVATE
CONTAINER_UID = "10001"  # images/Dockerfile's USER
CONTAINER_USER = "vos-app"  # its name on the host


def _progress(message: str) -> None:
    """Long operator-side steps print progress naming the step (pyinfra's log)."""
    logger.info(f"{host.print_prefix}    [stack] {message}")


class DockerImagePresent(FactBase):
    """True when the host's engine already has the image."""

    def command(self, reference: str) -> str:
        return f"docker image inspect {reference} >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return output[-1:] == ["yes"]


ENV_FILES = ("app.env", "migrate.env", "worker.env")


class CurrentStack(FactBase):
    """sha256 over the current release's compose.yml and the env files as they are on the
    host now ('' when there is no release yet): see `stack_digest`."""

    def command(self) -> str:
        env_files = " ".join(f"{STACK_DIR}/{name}" for name in ENV_FILES)
        return (f"test -e {STACK_DIR}/current/compose.yml && "
                f"cat {STACK_DIR}/current/compose.yml {env_files} 2>/dev/null "
                f"| sha256sum | cut -d' ' -f1 || true")

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""


def stack_digest(compose_text: str, *env_texts: str) -> str:
    """What the running stack is made of: the compose file plus the env files' contents.

    A rotated secret (an env file alone changed) must restart the containers, so it counts
    as a change like a new compose file; the host already holds these values (0600), and
    the digest never leaves the operator's process. `CurrentStack` computes the same over
    the files on the host.

    Example:
        >>> stack_digest("services: {}", "A=1") == stack_digest("services: {}", "A=2")
        False
    """
    return hashlib.sha256("".join((compose_text, *env_texts)).encode()).hexdigest()


def env_file_text(mapping: dict[str, str], environ: dict[str, str] | None = None) -> str:
    """KEY=value lines for compose's env_file, values from the operator's environment.

    Example:
        >>> env_file_text({"DATABASE_URL": "X_URL"}, {"X_URL": "postgresql://h/db"})
        'DATABASE_URL=postgresql://h/db\\n'
    """
    environ = os.environ if environ is None else environ
    missing = sorted({outside for outside in mapping.values() if not environ.get(outside)})
    if missing:
        raise InventoryError(f"stack: environment variable(s) {', '.join(missing)} are empty "
                             "on the operator's machine; export them (secrets never live in "
                             "the repo). Nothing was changed.")
    for inside, outside in mapping.items():
        if "\n" in environ[outside]:
            raise InventoryError(f"stack: {outside} (for {inside}) contains a newline")
    return "".join(f"{inside}={environ[outside]}\n" for inside, outside in mapping.items())


def agents_file_on_host(settings: StackSettings) -> str | None:
    """Where the inventory's agents file lands on the host: named by its content, so the
    compose file of a release names its own agents (a change is a new release; a rollback
    restores the old agents too). Validated on the operator's side first: a bad file stops
    the deploy before any change, naming the field and line.

    Example:
        >>> agents_file_on_host(StackSettings()) is None
        True
    """
    if settings.agents_file is None:
        return None
    from app.agents.spec import AgentsFileError, load_agents_file

    try:
        load_agents_file(Path(settings.agents_file))
    except AgentsFileError as error:
        raise InventoryError(f"stack.agents_file: {error}\nNothing was changed.") from None
    digest = hashlib.sha256(Path(settings.agents_file).read_bytes()).hexdigest()[:16]
    return f"{AGENTS_DIR}/{digest}.yaml"


def gated_compose(settings: StackSettings, image: str, mesh_ip: str, door_port: int) -> str:
    """Render the compose file and run the static gate; DeployError before any change.

    `settings.compose_template` (an operator-side file) replaces templates/stack/compose.yml.j2
    when set: the staging tier plants broken templates that way and sees this gate stop them.
    """
    override = settings.compose_template
    where = ({"template_dir": Path(override).parent, "template_name": Path(override).name}
             if override else {})
    text = render_compose(ComposeContext(
        image=image, mesh_ip=mesh_ip, door_port=door_port,
        door_host_ip=str(settings.door_host_ip), api_port=settings.api_port,
        memory_api=settings.memory_api, memory_door=settings.memory_door,
        memory_worker=settings.memory_worker, agents_file=agents_file_on_host(settings),
        agents_tenant=settings.agents_tenant, worker_replicas=settings.worker_replicas,
        tls_dir=TLS_DIR, health_interval=settings.health_interval_seconds,
        health_start_interval=settings.health_start_interval_seconds), **where)
    try:
        check_compose(parse_compose(text), mesh_ip=mesh_ip, door_port=door_port)
    except StaticGateError as error:
        raise DeployError(f"stack on {host.name}: {error}") from None
    return text


class FileExists(FactBase):
    """True when a path exists on the host (read as root: /etc/vos-stack is 0700)."""

    def command(self, path: str) -> str:
        return f"test -e {path} && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return output[-1:] == ["yes"]


def self_signed_command(common_name: str, days: int = 825) -> str:
    """openssl on the host: an EC P-256 key and a self-signed certificate for the door.

    The key is made on the host and never leaves it. Example:
        >>> "subjectAltName=IP:203.0.113.10" in self_signed_command("203.0.113.10")
        True
    """
    san = f"IP:{common_name}" if common_name.replace(".", "").isdigit() else f"DNS:{common_name}"
    return (f"umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
            f"-nodes -days {days} -subj /CN={common_name} -addext subjectAltName={san} "
            f"-keyout {TLS_DIR}/door.key -out {TLS_DIR}/door.crt 2>&1")


def door_tls(settings: StackSettings, public_address: str) -> None:
    """The door's certificate + key in /etc/vos-stack/tls, 0600, owned by the containers'
    user (it reads them through a read-only mount): self-signed, or the operator's files."""
    # A named system account for the containers' numeric uid, so file ownership compares
    # by name and a re-run changes nothing (an unnamed uid reads back as UNKNOWN).
    server.group(name=f"Group {CONTAINER_USER} ({CONTAINER_UID}) owns the door's TLS files",
                 group=CONTAINER_USER, gid=int(CONTAINER_UID), system=True, _sudo=True)
    server.user(name=f"System user {CONTAINER_USER} ({CONTAINER_UID}, no login, no home)",
                user=CONTAINER_USER, uid=int(CONTAINER_UID), group=CONTAINER_USER,
                shell="/usr/sbin/nologin", home="/nonexistent", create_home=False, system=True,
                _sudo=True)
    uid = CONTAINER_USER
    files.directory(name="Door TLS dir /etc/vos-stack/tls", path=TLS_DIR, user=uid,
                    group=uid, mode="500", _sudo=True)
    if settings.tls == "operator":
        for name, source in (("door.crt", settings.tls_cert_file),
                             ("door.key", settings.tls_key_file)):
            files.put(name=f"Door TLS {name} (the operator's, 0600)", src=str(source),
                      dest=f"{TLS_DIR}/{name}", user=uid, group=uid, mode="600", _sudo=True)
        return
    if not host.get_fact(FileExists, path=f"{TLS_DIR}/door.key", _sudo=True):
        server.shell(name=f"Door TLS: self-signed certificate for {public_address} (on the host)",
                     commands=[self_signed_command(public_address)], _sudo=True)
    for name in ("door.crt", "door.key"):
        files.file(name=f"Door TLS {name}: 0600, the containers' user", path=f"{TLS_DIR}/{name}",
                   user=uid, group=uid, mode="600", _sudo=True)


@deploy("App stack")
def deploy_stack(settings: StackSettings, mesh_ip: str, door_port: int,
                 public_address: str, image: str | None = None):
    """Ship, gate and activate the stack (see module doc)."""
    image = image or f"{settings.image_repository}:{source_revision()}"
    compose_text = gated_compose(settings, image, mesh_ip, door_port)  # before any operation
    env_texts = (env_file_text(settings.env), env_file_text(settings.migrate_env),
                 env_file_text(settings.worker_env))

    files.directory(name="Stack dir /etc/vos-stack (root only)", path=STACK_DIR,
                    user="root", group="root", mode="700", _sudo=True)
    for name, text in zip(ENV_FILES, env_texts, strict=True):
        files.put(name=f"Env file {name} (0600 root:root, from the operator's environment)",
                  src=StringIO(text), dest=f"{STACK_DIR}/{name}", user="root", group="root",
                  mode="600", _sudo=True)
    files.put(name="Binding judgement (stack/binding.py: the rule the gate and checks use)",
              src=str(Path(binding.__file__)), dest=BINDING_JUDGE, user="root", group="root",
              mode="644", create_remote_dir=True, _sudo=True)
    files.template(name="vos-stack-activate (migrate, up, health, binding gate, rollback)",
                   src=template("stack/vos-stack-activate.sh.j2"), dest=ACTIVATE,
                   user="root", group="root", mode="755", root=STACK_DIR, project=PROJECT,
                   door_port=door_port, health_timeout=settings.health_timeout_seconds,
                   mesh_ip=mesh_ip, binding_judge=BINDING_JUDGE, _sudo=True)
    door_tls(settings, public_address)
    _agents_file(settings)
    _ship(settings, image)

    digest = stack_digest(compose_text, *env_texts)
    if host.get_fact(CurrentStack, _sudo=True) == digest:
        return  # same image, compose file and env files: nothing to start or restart
    revision = image.rpartition(":")[2]
    now = datetime.now(UTC)
    release = Release(new_release_id(revision, now), image, revision,
                      now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    server.shell(name=f"Release {release.id}: record compose.yml + release.json",
                 commands=[record_command(release, compose_text)], _sudo=True)
    server.shell(name=f"Release {release.id}: activate (rolls back on failure)",
                 commands=[f"{ACTIVATE} {release.id}"], _sudo=True)
    server.shell(name=f"Keep the newest {settings.keep_releases} releases",
                 commands=[prune_command(settings.keep_releases)], _sudo=True)


def _agents_file(settings: StackSettings) -> None:
    """The agents file, by content, readable by the containers' user through a read-only
    mount (it names keys by variable, never holds them)."""
    destination = agents_file_on_host(settings)
    if destination is None:
        return
    files.directory(name=f"Agents files {AGENTS_DIR}", path=AGENTS_DIR, user="root",
                    group="root", mode="755", _sudo=True)
    files.put(name=f"Agents file {Path(str(settings.agents_file)).name} -> {destination}",
              src=str(settings.agents_file), dest=destination, user="root", group="root",
              mode="644", _sudo=True)


def _ship(settings: StackSettings, image: str) -> None:
    if settings.ship == "registry":
        server.shell(name=f"Pull {settings.registry_image}", _sudo=True,
                     commands=[f"docker pull {settings.registry_image}"])
        return
    if host.get_fact(DockerImagePresent, reference=image, _sudo=True):
        return
    scratch = tempfile.mkdtemp(prefix="vos-ship-", dir="/var/tmp")
    atexit.register(shutil.rmtree, scratch, True)  # after pyinfra has copied it
    archive = Path(scratch) / "image.tar.zst"
    # Operator side, now (while planning): build once per git revision, then save; the host
    # has no registry to pull from.
    with operator_engine():
        ensure_app_image(image, settings.base_image, say=_progress)
        _progress(f"save: docker save {image} for the copy to {host.name}")
        save_image(image, archive)
    remote = f"/var/tmp/{image.replace(':', '_').replace('/', '_')}.tar.zst"
    files.put(name=f"Copy image {image} (docker save | zstd)", src=str(archive), dest=remote,
              mode="600", _sudo=True)
    server.shell(name=f"docker load {image}", _sudo=True,
                 commands=[f"docker load -i {remote} && rm -f {remote}"])
