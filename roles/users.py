"""Users role: the deploy user(s), their keys, passwordless sudo, no password set.

Example (inside deploys/full.py):
    users.deploy_user("deploy", public_keys=["ssh-ed25519 AAAA… operator"])
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Users
from pyinfra.operations import files, server


def sudoers_line(user: str) -> str:
    """The sudoers drop-in for one deploy user (key-only login, so sudo needs no password).

    Example:
        >>> sudoers_line("deploy")
        'deploy ALL=(ALL:ALL) NOPASSWD: ALL\\n'
    """
    return f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"


@deploy("Users and keys")
def deploy_user(user: str, public_keys: list[str]):
    """Ensure the deploy user, its authorized keys (exactly these), sudo, no password.

    Bad input stops before anything is written: an empty key list would lock the operator out.

    Example:
        deploy_user("deploy", public_keys=[Path("~/.ssh/id_ed25519.pub").read_text()])
    """
    keys = [key.strip() for key in public_keys if key and key.strip()]
    if not keys:
        raise ValueError(
            f"users.deploy_user: no public key for {user!r}; refusing to deploy a user nobody "
            "can log in as. Set the inventory's ssh public key(s) and run again."
        )
    server.user(
        name=f"Deploy user {user} with its keys",
        user=user,
        shell="/bin/bash",
        groups=["sudo"],
        append=True,
        create_home=True,
        public_keys=keys,
        delete_keys=True,
        _sudo=True,
    )
    files.put(
        name=f"Passwordless sudo for {user}",
        src=StringIO(sudoers_line(user)),
        dest=f"/etc/sudoers.d/90-vos-{user}",
        user="root",
        group="root",
        mode=440,
        _sudo=True,
    )
    _no_password(user)


def _no_password(user: str) -> None:
    """Lock any password the image set for the user: keys are the only way in (§11)."""
    entry = (host.get_fact(Users, _sudo=True) or {}).get(user, {})
    password = entry.get("password") or ""
    if password in ("", "*", "!", "!*") or password.startswith("!"):
        host.noop(f"{user} has no usable password")
        return
    server.shell(name=f"Lock {user}'s password", commands=[f"passwd -l {user}"], _sudo=True)
