"""The full converge, in runbook order. Each step is one call into roles/.

    pyinfra inventory/staging.py deploys/full.py      # the local staging VM
    pyinfra inventory/production.py deploys/full.py   # the VPS
    pyinfra inventory/staging.py deploys/full.py --dry  # what would change, changing nothing

Step 0 (preflight) happened already when the inventory was loaded: roles/settings.py
validated every host's data before pyinfra connected; it is re-read here, typed, so the
roles get values instead of dictionary lookups. Then the OS is checked, and the steps run:

  1 preflight  2 base  3 users, keys and accounts  4 kernel  5 firewall  6 fail2ban  7 mesh
  8 lockout-safe SSH cutover  9 docker  10 app stack  11 scheduled backups  12 gate

Steps 10 and 11 run when the inventory has a `stack` / `backups` block. The stack step
builds the app image on the operator's side (once per git revision), ships it, and
activates a release with a health check and automatic rollback (roles/stack.py); its
secrets come from the operator's environment (staging: exported by `vos staging up`).

Public SSH stays open until step 8 has proven SSH over the mesh from the operator's side;
afterwards the inventory reaches the host on its mesh address. A re-run changes nothing.
"""

from io import StringIO

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import files, server

from checks.gate import invariants_hold
from roles import (
    accounts,
    audit,
    backups,
    base,
    docker,
    fail2ban,
    firewall,
    integrity,
    kernel,
    mesh,
    ssh,
    stack,
    sysctl,
    users,
)
from roles import files as file_modes  # pyinfra's `files` operations are imported above
from roles.settings import settings_from_host_data

SUPPORTED = {"Ubuntu": 24, "Debian": 12}  # distribution -> lowest major version


STEPS = 12


def step(number: int, title: str) -> None:
    """Name each step in pyinfra's output (operations carry the step in their names too)."""
    logger.info(f"{host.print_prefix}--> step {number}/{STEPS}: {title}")


def preflight_os() -> dict:
    """Stop before any change on an OS the roles were not written for."""
    distribution = host.get_fact(LinuxDistribution) or {}
    name, major = distribution.get("name"), distribution.get("major") or 0
    if name not in SUPPORTED or major < SUPPORTED[name]:
        raise DeployError(
            f"preflight: {host.name} runs {name} {major}; supported are Ubuntu 24.04+ and "
            "Debian 12+ (staging uses Debian 13). Nothing was changed."
        )
    return distribution


settings = settings_from_host_data(host.name, host.data.dict())

# 1. Preflight: inventory validated (above), connected (facts load), OS supported.
step(1, "preflight")
preflight_os()

# Something small that proves the pipeline end to end.
files.put(
    name="Mark the host as managed by agent-vos",
    src=StringIO(
        "This host is managed by agent-vos (pyinfra deploys/full.py).\n"
        f"Door port: {settings.door_port}. Deploy user: {settings.deploy_user}.\n"
    ),
    dest="/etc/agent-vos-managed",
    user="root",
    group="root",
    mode="644",
    _sudo=True,
)

# 2. Base: packages, unattended security upgrades, time, journald, root locked.
step(2, "base")
# One apt transaction for the packages later roles configure (each role ensures its own).
base.packages(upgrade=settings.apt_upgrade,
              extra=[*accounts.SESSION_PACKAGES, *audit.ACCOUNTING_PACKAGES, *integrity.PACKAGES,
                     "usbguard"])
base.upkeep()
base.unattended_upgrades()
base.time_sync()
base.journald()
base.lock_root()

# 3. Users, keys and accounts; sshd accepts exactly those keys for exactly those users from
#    now on; login.defs, the banners (sshd shows /etc/issue.net), idle shells end, password
#    quality, no keys for root, no compilers on the host.
step(3, "users, keys and accounts")
users.deploy_user(settings.deploy_user, public_keys=settings.operator_public_keys)
accounts.login_defs(settings.login)
accounts.banners(settings.login)
accounts.session_policy(settings.login)
accounts.no_root_keys()
accounts.no_compilers(settings.login)
ssh.harden(allow_users=[settings.deploy_user])

# 4. Kernel: settings, module blacklist, core dumps off, /dev/shm nodev,nosuid,noexec, USB
#    devices by policy only.
step(4, "kernel")
sysctl.harden()
kernel.module_blacklist(modules=settings.kernel.module_blacklist)
kernel.core_dumps()
kernel.shared_memory()
kernel.usb_guard()

# 5. Firewall: public SSH stays allowed only until the cutover has happened once.
step(5, "firewall")
cutover_already_done = ssh.cutover_done()
firewall.ufw_baseline(mesh_interface=settings.mesh.interface, door_port=settings.door_port,
                      public_ssh=not cutover_already_done)

# 6. Fail2ban; the operator's own mesh address is never banned.
step(6, "fail2ban")
fail2ban.jails(door_port=settings.door_port, api_port=settings.api_port,
               ignore=[settings.operator_mesh_ip] if settings.operator_mesh_ip else [])

# 7. Mesh: the host joins the private network as tailscale0 (its IP is read back).
step(7, "mesh")
mesh.configure(settings.mesh)

mesh_ip = mesh.resolved_mesh_ip(settings)
ssh_key = str(settings.ssh_key) if settings.ssh_key else None
known_hosts = str(settings.ssh_known_hosts_file) if settings.ssh_known_hosts_file else None

if mesh_ip is None:
    # Tailscale assigns the address on first `tailscale up`: it is unknown while this run was
    # planned. Stop after the mesh step, non-zero, with the next action.
    server.shell(
        name="Mesh IP unknown when planning: run the deploy again to cut over and finish",
        commands=["echo 'The mesh came up during this run; its IP was unknown when the run "
                  "was planned. Run the same deploy again: it cuts SSH over to the mesh, "
                  "installs Docker and runs the gate.' >&2; exit 1"],
    )
else:
    # 8. Lockout-safe SSH cutover: prove SSH over the mesh, then listen there only.
    step(8, "lockout-safe SSH cutover")
    ssh.cutover(mesh_ip=mesh_ip, user=settings.deploy_user, key_file=ssh_key,
                known_hosts_file=known_hosts)

    # 9. Docker, bound to the mesh; AppArmor first (dockerd confines containers only when
    #    apparmor_parser exists as it starts), auditd after (its rules watch Docker's files,
    #    which exist only once Docker is installed).
    step(9, "docker")
    audit.apparmor()
    docker.engine(mesh_ip=mesh_ip)
    audit.auditd()
    audit.accounting()

    # 10. The app stack: image shipped, migrations, compose gated statically, health-gated
    #     release with automatic rollback, runtime binding grep.
    if settings.stack:
        step(10, "app stack")
        stack.deploy_stack(settings.stack, mesh_ip=mesh_ip, door_port=settings.door_port,
                           public_address=str(settings.public_address))

    # 11. Scheduled, encrypted Postgres backups (the managed database is the only state).
    if settings.backups:
        step(11, "scheduled backups")
        backups.scheduled(settings.backups)

    # File modes last: cron's files arrive with the backups step above. Then AIDE's baseline
    # (written in the background) records the host as this deploy left it.
    file_modes.permissions()
    integrity.aide()

    # 12. Gate: every check in checks/ (checks/test_stack.py too), from the operator's side,
    #     over the mesh.
    step(12, "gate")
    invariants_hold(
        name="Gate: every invariant in checks/ holds (run over the mesh)",
        mesh_ip=mesh_ip, door_port=settings.door_port, deploy_user=settings.deploy_user,
        ssh_key=ssh_key, known_hosts_file=known_hosts, mesh_interface=settings.mesh.interface,
    )
