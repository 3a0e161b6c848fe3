"""The RUNTIME binding gate (checks/test_stack.py) against a real Docker engine.

Containers come from the local base (`debootstrap | docker import`, nothing is pulled). A
container published `-p 0.0.0.0:18080:80` must make the check fail, naming the container and
the fix; the door (compose service label `door`) on the door port and a mesh/loopback binding
must pass. The check runs exactly as the deploy gate runs it: pytest + testinfra, here with
the `local://` backend, the engine on this machine being "the host".

Cost: ~20 s with the base image cached (first run: debootstrap ~3 min + import ~30 s).
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from stack.images import REPO_ROOT

pytestmark = pytest.mark.integration

MESH_IP = "100.64.0.2"  # the check's idea of the mesh IP; nothing here binds it
DOOR_PORT = 18443
HARDENED = ["--read-only", "--security-opt", "no-new-privileges:true", "--cap-drop", "ALL"]


@pytest.fixture
def containers(base_image):
    """Start containers by (name suffix, docker run args); all removed afterwards."""
    names: list[str] = []
    prefix = f"vos-rt-{uuid.uuid4().hex[:6]}"

    def run(suffix: str, *args: str) -> str:
        name = f"{prefix}-{suffix}"
        subprocess.run(["docker", "run", "-d", "--name", name, *args, base_image,
                        "sleep", "600"], check=True, capture_output=True, timeout=120)
        names.append(name)
        return name

    yield run
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=120)


def run_check(*tests: str) -> subprocess.CompletedProcess[str]:
    """pytest checks/test_stack.py against this machine's engine, as the gate would."""
    selected = [f"checks/test_stack.py::{name}" for name in tests] or ["checks/test_stack.py"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "checks.plugin",
         *selected, "--hosts=local://", f"--vos-mesh-ip={MESH_IP}", f"--door-port={DOOR_PORT}"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_private_bindings_and_the_door_pass(containers):
    containers("api", *HARDENED, "-p", "127.0.0.1:18081:80",
               "--label", "io.agent-vos.image=test")
    containers("door", *HARDENED, "-p", f"0.0.0.0:{DOOR_PORT}:8443",
               "--label", "com.docker.compose.service=door",
               "--label", "com.docker.compose.project=vos",
               "--label", "io.agent-vos.image=test")
    result = run_check()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout


def test_all_interfaces_binding_fails_naming_container_and_fix(containers):
    name = containers("leak", "-p", "0.0.0.0:18080:80")
    result = run_check("test_no_container_binds_all_interfaces_except_the_door",
                       "test_docker_ps_shows_no_all_interface_binding")
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"container '{name}' publishes 80/tcp on all interfaces (0.0.0.0:18080)" \
        in result.stdout
    assert f"sudo docker rm -f {name}" in result.stdout
    assert f"{name}: 0.0.0.0:18080->80/tcp" in result.stdout  # the `docker ps` grep too
    assert "2 failed" in result.stdout


def test_door_label_does_not_excuse_another_public_port(containers):
    name = containers("fakedoor", *HARDENED, "-p", "0.0.0.0:18082:80",
                      "--label", "com.docker.compose.service=door",
                      "--label", "com.docker.compose.project=vos")
    result = run_check("test_no_container_binds_all_interfaces_except_the_door")
    assert result.returncode == 1
    assert (f"container '{name}' publishes 80/tcp on port 18082, but the door may publish only "
            f"the door port {DOOR_PORT}") in result.stdout


def test_a_door_of_another_project_is_no_door(containers):
    """Only the stack's project's `door` is excused: a look-alike label elsewhere is not."""
    name = containers("otherdoor", *HARDENED, "-p", f"0.0.0.0:{DOOR_PORT + 1}:8443",
                      "--label", "com.docker.compose.service=door",
                      "--label", "com.docker.compose.project=other")
    result = run_check("test_no_container_binds_all_interfaces_except_the_door")
    assert result.returncode == 1
    assert f"container '{name}' publishes 8443/tcp on all interfaces" in result.stdout


def test_unhardened_stack_container_fails(containers):
    name = containers("soft", "-p", "127.0.0.1:18083:80", "--label", "io.agent-vos.image=t")
    result = run_check("test_stack_containers_are_hardened")
    assert result.returncode == 1
    for reason in ("writable root filesystem", "lacks no-new-privileges", "keeps capabilities"):
        assert f"container '{name}' " in result.stdout and reason in result.stdout


def activate_binding_grep() -> str:
    """The host-side binding grep of vos-stack-activate, rendered from its template."""
    import jinja2

    text = jinja2.Template((REPO_ROOT / "templates/stack/vos-stack-activate.sh.j2").read_text(),
                           undefined=jinja2.StrictUndefined).render(
        root="/etc/vos-stack", project="vostest", door_port=DOOR_PORT, health_timeout=10,
        mesh_ip=MESH_IP, binding_judge=REPO_ROOT / "stack" / "binding.py")
    start = text.index('say "release $id: runtime binding gate"')
    end = text.index("ln -sfn")
    return (f"id=test; project=vostest; door_port={DOOR_PORT}; mesh_ip={MESH_IP}\n"
            f"binding_judge={REPO_ROOT / 'stack' / 'binding.py'}\n" + "say() { :; }\n"
            + 'fail() { echo "FAIL: $*"; exit 1; }\n' + text[start:end] + "\necho PASS\n")


def test_activate_gate_excuses_only_the_door_port_of_the_door(containers):
    """The activation script calls the shared judgement (no awk copy of the rule): the door's
    door port passes; its other port, and a bind on a specific non-mesh address, fail."""
    containers("api", *HARDENED, "-p", "127.0.0.1:18084:80")
    containers("pubip", *HARDENED, "-p", "127.0.0.2:18086:80")  # loopback: allowed
    subprocess.run(["docker", "run", "-d", "--name", "vostest-door-1", "-p",
                    f"0.0.0.0:{DOOR_PORT}:8443", "-p", "0.0.0.0:18085:80",
                    "--label", "com.docker.compose.service=door",
                    "--label", "com.docker.compose.project=vostest", "vos-base:trixie",
                    "sleep", "600"], check=True, capture_output=True, timeout=120)
    try:
        result = subprocess.run(["sh", "-c", activate_binding_grep()], capture_output=True,
                                text=True, timeout=60)
    finally:
        subprocess.run(["docker", "rm", "-f", "vostest-door-1"], capture_output=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"container 'vostest-door-1' publishes 80/tcp on port 18085, but the door may "
            f"publish only the door port {DOOR_PORT}") in result.stdout
    assert f"{DOOR_PORT}/tcp" not in result.stdout and "18084" not in result.stdout
    assert "18086" not in result.stdout
