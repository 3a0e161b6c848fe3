"""Docker daemon invariants (INVARIANTS.md §3 and the docker role's promises).

Run alone: pytest -p checks.plugin checks/test_docker.py --hosts=ssh://HOST
"""

import json

import pytest

from checks import plugin

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

FIX = "fix /etc/docker/daemon.json (or re-run the deploy) and `sudo systemctl restart docker`"


@pytest.fixture(scope="module")
def daemon(host):
    with host.sudo():
        config = host.file("/etc/docker/daemon.json")
        if not config.exists:
            pytest.fail(f"DOCKER §3: /etc/docker/daemon.json is missing — {FIX}")
        return json.loads(config.content_string)


def test_default_bind_is_mesh_or_loopback(daemon, mesh_ip):
    """§3: a port mapping without a host IP lands on the mesh IP or loopback, never 0.0.0.0."""
    ip = daemon.get("ip", "0.0.0.0 (unset)")
    assert ip in (mesh_ip, "127.0.0.1"), (
        f"DOCKER §3: daemon.json \"ip\" is {ip}, so `-p 8080:80` binds every interface — set "
        f"it to the mesh IP {mesh_ip}; {FIX}")


@pytest.mark.parametrize("key, wanted", [
    ("live-restore", True), ("no-new-privileges", True), ("userland-proxy", False),
])
def test_daemon_flags(daemon, key, wanted):
    """live-restore, no-new-privileges on, userland proxy off."""
    assert daemon.get(key) is wanted, f"DOCKER: daemon.json {key} is {daemon.get(key)}, " \
                                      f"must be {str(wanted).lower()} — {FIX}"


def test_log_rotation(daemon):
    """Container logs rotate (a full disk is an outage)."""
    opts = daemon.get("log-opts") or {}
    assert opts.get("max-size") and opts.get("max-file"), (
        f"DOCKER: daemon.json has no log rotation (log-opts {opts}) — {FIX}")


def test_daemon_runs_with_that_config(host):
    """dockerd is running and has loaded live-restore (a config it rejected would not be)."""
    with host.sudo():
        service = host.service("docker")
        assert service.is_running, "DOCKER: dockerd is not running — `sudo systemctl start " \
                                   "docker`; `journalctl -u docker` says why"
        live = host.check_output("docker info --format '{{.LiveRestoreEnabled}}'")
    assert live.strip() == "true", f"DOCKER: dockerd reports live-restore {live} — {FIX}"
