"""roles/stack.py as data (recorded Debian 13 facts): what the deploy would do on the host.

The static gate runs on the operator's side before any operation: a planted violation in the
compose template fails the deploy with an empty plan, i.e. nothing is started.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra.api.exceptions import DeployError
from roles_harness import load_facts, plan_role, set_fact

from roles import stack
from roles.settings import StackSettings
from stack.compose import COMPOSE_TEMPLATE, TEMPLATES, render_compose

IMAGE = "agent-vos:abc1234"
SECRETS = {"VOS_DATABASE_URL": "postgresql://vos_app:pw@100.64.0.1/vos",
           "VOS_DOOR_SECRETS": '{"edge": "whsec_x"}', "VOS_OWNER_DATABASE_URL": "postgresql://o",
           "VOS_APP_PASSWORD": "pw"}


def facts(current_digest: str = "", key_exists: bool = False) -> dict:
    recorded = load_facts("debian13")
    recorded = set_fact(recorded, stack.DockerImagePresent.name, True, reference=IMAGE)
    recorded = set_fact(recorded, stack.CurrentStack.name, current_digest)
    recorded = set_fact(recorded, "files.Directory", None, path="/etc/vos-stack")
    recorded = set_fact(recorded, "files.Directory", {"mode": 755}, path="/usr/local/sbin")
    recorded = set_fact(recorded, stack.FileExists.name, key_exists,
                        path="/etc/vos-stack/tls/door.key")
    for tool in ("useradd", "groupadd", "usermod", "groupmod"):
        recorded = set_fact(recorded, "server.Which", f"/usr/sbin/{tool}", command=tool)
    recorded = set_fact(recorded, "files.Directory", None, path="/nonexistent")
    recorded = set_fact(recorded, "files.Directory", None, path="/usr/local/lib/vos-stack")
    recorded = set_fact(recorded, "files.Directory", None, path="/etc/vos-stack/tls")
    for path in ("/etc/vos-stack/app.env", "/etc/vos-stack/migrate.env",
                 "/etc/vos-stack/worker.env", stack.ACTIVATE, stack.BINDING_JUDGE,
                 "/etc/vos-stack/tls/door.crt", "/etc/vos-stack/tls/door.key"):
        recorded = set_fact(recorded, "files.File", None, path=path)
        recorded = set_fact(recorded, "files.Directory", None, path=path)
    return recorded


def plan(monkeypatch, current_digest: str = "", key_exists: bool = False):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return plan_role(stack.deploy_stack, facts(current_digest, key_exists), StackSettings(),
                     mesh_ip="100.64.0.2", door_port=443, public_address="203.0.113.10",
                     image=IMAGE)


def test_self_signed_door_certificate_is_made_once_on_the_host(monkeypatch):
    first = "\n".join(plan(monkeypatch).commands)
    assert "openssl req -x509" in first and "subjectAltName=IP:203.0.113.10" in first
    again = "\n".join(plan(monkeypatch, key_exists=True).commands)
    assert "openssl req" not in again


def test_first_deploy_writes_private_env_files_records_and_activates(monkeypatch):
    result = plan(monkeypatch)
    commands = "\n".join(result.commands)
    assert "vos-stack-activate abc1234-" in commands
    env = [text for dest, text in result.uploads.items() if dest.endswith("app.env")]
    assert env and "DATABASE_URL=postgresql://vos_app:pw@100.64.0.1/vos" in env[0]
    assert "chmod 600 /etc/vos-stack/app.env" in commands
    # the activation script's binding gate is the shared judgement, shipped beside it
    assert result.uploads[stack.BINDING_JUDGE] == (
        Path(stack.binding.__file__).read_text())


def current_digest(monkeypatch) -> str:
    """The digest `CurrentStack` reads on a host converged with SECRETS."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = StackSettings()
    return stack.stack_digest(stack.gated_compose(settings, IMAGE, "100.64.0.2", 443),
                              stack.env_file_text(settings.env),
                              stack.env_file_text(settings.migrate_env),
                              stack.env_file_text(settings.worker_env))


def test_unchanged_redeploy_makes_no_release(monkeypatch):
    result = plan(monkeypatch, current_digest(monkeypatch))
    assert not any("vos-stack-activate abc1234" in command for command in result.commands)
    assert not any("release.json" in command for command in result.commands)


def test_a_rotated_secret_alone_makes_a_new_release(monkeypatch):
    converged = current_digest(monkeypatch)
    monkeypatch.setitem(SECRETS, "VOS_DOOR_SECRETS", '{"edge": "whsec_rotated"}')
    result = plan(monkeypatch, converged)
    assert any("vos-stack-activate abc1234-" in command for command in result.commands)


def test_the_fact_hashes_the_files_as_stack_digest_does(tmp_path):
    """`CurrentStack`'s shell pipeline on real files gives `stack_digest` of their texts."""
    texts = {"current/compose.yml": "services: {}\n", "app.env": "A=1\n",
             "migrate.env": "B=2\n", "worker.env": "C=3\n"}
    for name, text in texts.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    command = stack.CurrentStack().command().replace(stack.STACK_DIR, str(tmp_path))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == stack.stack_digest(*texts.values())
    (tmp_path / "current/compose.yml").unlink()
    empty = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert empty.stdout.strip() == ""


def test_planted_public_port_fails_before_any_operation(monkeypatch, tmp_path):
    copy = tmp_path / COMPOSE_TEMPLATE
    copy.parent.mkdir(parents=True)
    shutil.copy(TEMPLATES / COMPOSE_TEMPLATE, copy)
    copy.write_text(copy.read_text().replace('"{{ mesh_ip }}:{{ api_port }}:8080"', '"8080:80"'))
    monkeypatch.setattr(stack, "render_compose",
                        functools.partial(render_compose, template_dir=tmp_path))
    with pytest.raises(DeployError, match="service 'api' publishes '8080:80' with no host IP"):
        plan(monkeypatch)
