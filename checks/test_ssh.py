"""SSH invariants (INVARIANTS.md §6-8) on the effective config (`sshd -T`) and live sockets.

Run alone: pytest -p checks.plugin checks/test_ssh.py --hosts=ssh://HOST
"""

from checks import plugin
from checks.invariants import parse_ss, parse_sshd_t, sshd_listen_violations, sshd_violations

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip


def test_effective_sshd_config(host, expect):
    """§6-7: the values sshd actually uses, read with `sshd -T`, not grepped from files."""
    with host.sudo():
        out = host.run("mkdir -p /run/sshd && sshd -T")
    assert out.rc == 0, f"SSH §6: `sshd -T` failed: {out.stderr.strip()} — the config does " \
                        "not parse; fix it before any reload (`sudo sshd -t`)"
    problems = sshd_violations(parse_sshd_t(out.stdout), expect.allow_users)
    assert not problems, "\n".join(problems)


def test_sshd_listens_on_mesh_and_loopback_only(host, mesh_ip):
    """§8: after the cutover sshd is reachable on the mesh IP (and loopback) only."""
    with host.sudo():
        listeners = parse_ss(host.check_output("ss -Htlnp"))
    problems = sshd_listen_violations(listeners, mesh_ip)
    assert not problems, "\n".join(problems)
