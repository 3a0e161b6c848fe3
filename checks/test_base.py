"""Base checks: the operator can still get in and administer the host.

Example:
    pytest checks/test_base.py --hosts=ssh://staging-mesh --ssh-config=.cache/staging/ssh_config
"""


def test_deploy_user_exists_with_a_login_shell(host, deploy_user):
    user = host.user(deploy_user)
    assert user.exists, f"deploy user {deploy_user!r} is missing: the operator is locked out"
    assert user.shell not in ("/usr/sbin/nologin", "/bin/false"), (
        f"deploy user {deploy_user!r} has no login shell ({user.shell})"
    )


def test_deploy_user_has_an_authorized_key(host, deploy_user):
    keys = host.file(f"{host.user(deploy_user).home}/.ssh/authorized_keys")
    assert keys.exists and keys.user == deploy_user, (
        f"{deploy_user} has no authorized_keys of its own: key login would fail"
    )
    assert keys.mode & 0o022 == 0, f"authorized_keys is group/world-writable ({oct(keys.mode)})"


def test_deploy_user_can_sudo_without_password(host):
    result = host.run("sudo -n true")
    assert result.rc == 0, f"`sudo -n true` failed for the deploy user: {result.stderr.strip()}"


def test_sshd_is_running_and_enabled(host):
    names = ("ssh", "sshd")
    running = [name for name in names if host.service(name).is_running]
    assert running, "sshd is not running (neither ssh.service nor sshd.service is active)"
    service = host.service(running[0])
    socket_activated = host.service("ssh.socket").is_enabled
    assert service.is_enabled or socket_activated, (
        "sshd runs now but will not start at boot (ssh.service/ssh.socket not enabled)"
    )
