"""The static binding gate on the compose file rendered from the real template.

Mutation tests copy templates/stack/compose.yml.j2, plant one violation in the copy, render
it the way the deploy does, and expect the gate to fail naming the service and the fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stack.compose import COMPOSE_TEMPLATE, TEMPLATES, ComposeContext, parse_compose, render_compose
from stack.gate import StaticGateError, check_compose, compose_violations, parse_port

MESH_IP = "100.64.0.2"
DOOR_PORT = 443
CONTEXT = ComposeContext(image="agent-vos:abc1234", mesh_ip=MESH_IP, door_port=DOOR_PORT,
                         agents_file="/etc/vos-stack/agents/0123456789abcdef.yaml",
                         agents_tenant="acme", worker_replicas=2)


def rendered(template_dir: Path = TEMPLATES) -> dict:
    return parse_compose(render_compose(CONTEXT, template_dir=template_dir))


def planted(tmp_path: Path, old: str, new: str) -> dict:
    """Render a copy of the real template with `old` replaced by `new` (must occur once)."""
    source = (TEMPLATES / COMPOSE_TEMPLATE).read_text()
    assert source.count(old) == 1, f"the template changed: {old!r} no longer occurs once"
    copy = tmp_path / COMPOSE_TEMPLATE
    copy.parent.mkdir(parents=True)
    shutil.copy(TEMPLATES / COMPOSE_TEMPLATE, copy)
    copy.write_text(source.replace(old, new))
    return rendered(tmp_path)


def gate_message(document: dict) -> str:
    with pytest.raises(StaticGateError) as failure:
        check_compose(document, mesh_ip=MESH_IP, door_port=DOOR_PORT)
    return str(failure.value)


def test_the_real_template_passes_and_binds_as_promised():
    document = rendered()
    check_compose(document, mesh_ip=MESH_IP, door_port=DOOR_PORT)
    services = document["services"]
    assert services["api"]["ports"] == [f"{MESH_IP}:8080:8080"]
    assert services["door"]["ports"] == [f"0.0.0.0:{DOOR_PORT}:8443"]
    assert "ports" not in services["worker"]
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["mem_limit"], name
        if name not in ("migrate", "agents"):  # one-shots (profile migrate)
            assert service["healthcheck"]["test"][0] == "CMD", name
            assert service["restart"] == "unless-stopped", name
    assert "volumes" not in document


def test_without_an_agents_file_there_is_no_worker_and_no_apply():
    context = ComposeContext(image="i:r", mesh_ip=MESH_IP, door_port=443)
    services = parse_compose(render_compose(context))["services"]
    assert "worker" not in services and "agents" not in services


def test_the_worker_serves_the_tenant_with_its_agents_file_read_only():
    services = rendered()["services"]
    worker, apply = services["worker"], services["agents"]
    assert worker["deploy"] == {"replicas": 2}
    assert worker["command"][:5] == ["vos-app", "agents", "work", "--tenant", "acme"]
    mount = "/etc/vos-stack/agents/0123456789abcdef.yaml:/run/vos/agents.yaml:ro"
    assert worker["volumes"] == [mount] and apply["volumes"] == [mount]
    # provider keys reach the worker alone: the API and the door never read worker.env
    assert worker["env_file"][-1] == "/etc/vos-stack/worker.env"
    assert all("/etc/vos-stack/worker.env" not in services[name]["env_file"]
               for name in ("api", "door", "migrate", "agents"))
    assert apply["profiles"] == ["migrate"] and apply["restart"] == "no"
    assert apply["command"][-3:] == ["--tenant", "acme", "--create-tenant"]


def test_health_probes_are_quick_while_starting_and_sparse_once_healthy():
    """Every long-running service is probed at the model's intervals (each probe is a Python
    exec in the container), quickly while it starts, sparsely once healthy."""
    services = rendered()["services"]
    for name in ("api", "door", "worker"):
        health = services[name]["healthcheck"]
        assert health["interval"] == "60s" and health["start_interval"] == "5s", (name, health)
        assert health["start_period"].endswith("s") and int(health["start_period"][:-1]) >= 120
    faster = ComposeContext(image="i:r", mesh_ip=MESH_IP, door_port=443, health_interval=15,
                            health_start_interval=2)
    api = parse_compose(render_compose(faster))["services"]["api"]["healthcheck"]
    assert (api["interval"], api["start_interval"]) == ("15s", "2s")


def test_port_without_host_ip_fails_naming_service_and_fix(tmp_path):
    document = planted(tmp_path, '"{{ mesh_ip }}:{{ api_port }}:8080"', '"8080:80"')
    message = gate_message(document)
    assert "service 'api' publishes '8080:80' with no host IP" in message
    assert f"'{MESH_IP}:8080:80'" in message and "nothing was started" in message


def test_all_interfaces_port_fails(tmp_path):
    document = planted(tmp_path, '"{{ mesh_ip }}:{{ api_port }}:8080"',
                       '"0.0.0.0:5000:5000"')
    message = gate_message(document)
    assert "service 'api' publishes '0.0.0.0:5000:5000' on all interfaces" in message
    assert "only the door 'door' may be public" in message


def test_extra_public_service_fails(tmp_path):
    extra = ('\n  debug:\n    <<: *hardening\n    command: [sleep, infinity]\n'
             '    ports: ["0.0.0.0:9000:9000"]\n\n  migrate:')
    document = planted(tmp_path, "\n  migrate:", extra)
    message = gate_message(document)
    assert "service 'debug' publishes '0.0.0.0:9000:9000' on all interfaces" in message
    assert "service 'door'" not in message


@pytest.mark.parametrize("spec, reason", [
    ("[::]:5000:5000", "on all interfaces"),
    ("::8080:80", "on all interfaces"),
    ("80", "with no host IP"),
    ("203.0.113.10:5000:5000", "neither the mesh IP"),
    ({"target": 80, "published": 5000, "host_ip": "0.0.0.0"}, "on all interfaces"),
    ({"target": 80, "published": 5000}, "with no host IP"),
])
def test_every_public_spelling_fails(spec, reason):
    document = rendered()
    document["services"]["api"]["ports"] = [spec]
    assert reason in gate_message(document)


@pytest.mark.parametrize("spec", [f"{MESH_IP}:8080:8080", "127.0.0.1:8080:8080/tcp"])
def test_private_bindings_pass(spec):
    document = rendered()
    document["services"]["api"]["ports"] = [spec]
    assert compose_violations(document, MESH_IP, DOOR_PORT) == []


def test_door_may_publish_only_the_door_port():
    document = rendered()
    document["services"]["door"]["ports"].append("0.0.0.0:80:8080")
    assert "the door may publish only the door port 443" in gate_message(document)


@pytest.mark.parametrize("key, value, reason", [
    ("read_only", False, "writable root filesystem"),
    ("security_opt", [], "lacks no-new-privileges"),
    ("cap_drop", ["NET_RAW"], "keeps Linux capabilities"),
    ("privileged", True, "is privileged"),
    ("network_mode", "host", "network_mode: host"),
    ("volumes", ["appdata:/var/lib/app"], "no volume or bind mount may hold state"),
    ("volumes", ["/srv/data:/data"], "no volume or bind mount may hold state"),
])
def test_hardening_violations_fail(key, value, reason):
    document = rendered()
    document["services"]["worker"][key] = value
    message = gate_message(document)
    assert "service 'worker'" in message and reason in message


def test_top_level_named_volume_fails():
    document = rendered()
    document["volumes"] = {"pgdata": {}}
    assert "declares named volumes (pgdata)" in gate_message(document)


def test_read_only_config_bind_is_allowed():
    document = rendered()
    assert document["services"]["worker"]["volumes"][0].endswith(":ro")
    assert compose_violations(document, MESH_IP, DOOR_PORT) == []


def test_parse_port_shapes():
    assert parse_port("[::1]:8080:80/udp").host_ip == "::1"
    assert parse_port("100.64.0.2:8080:80") == parse_port("100.64.0.2:8080:80")
    assert parse_port("8080:80").published == "8080"


def test_template_variables_must_all_be_given(tmp_path):
    copy = tmp_path / COMPOSE_TEMPLATE
    copy.parent.mkdir(parents=True)
    copy.write_text("services: {api: {image: {{ missing_value }}}}\n")
    with pytest.raises(Exception, match="missing_value"):
        render_compose(CONTEXT, template_dir=tmp_path)
