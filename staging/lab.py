"""One staging environment: image + public network + mesh + VM, driven from a state dir.

This is what `vos staging …` and the test fixtures call. Everything it creates is recorded
in ``<state dir>/state.json`` before it is used, so `destroy` can always undo it, also after
a crash half-way through `up`.

Example:
    >>> lab = Lab(Path(".cache/staging"))
    >>> lab.up()                       # boots (or reuses) the VM, prints its addresses
    >>> lab.ssh("uname -r").stdout
    >>> lab.scan()                     # [22] before hardening, [443] after
    >>> lab.scan_replies("udp", family=6)   # {}: no UDP port answers on the IPv6 address
    >>> lab.destroy()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from staging import lynis, mesh, networks, scanner
from staging.image import DEPLOY_USER, BaseImage, ensure_base_image
from staging.managed_db import SECRETS_FILE, ManagedDb
from staging.proc import StagingError, progress, run, wait_until
from staging.state import (
    REPO_ROOT,
    STATE_FILE,
    SlotLayout,
    StagingState,
    VmRecord,
    default_state_dir,
    load_state,
)
from staging.vm import (
    boot_vm,
    kill_vm,
    tcp_open,
    wait_for_exit,
    wait_for_ssh,
    wait_for_startup,
)

PRIMARY = "primary"
INVENTORY = REPO_ROOT / "inventory" / "staging.py"
MESH_FRESH_SECONDS = 180  # WireGuard rekeys every 2 min; a handshake this recent means "up"


def ensure_ssh_key(state_dir: Path) -> tuple[Path, str]:
    """The operator key: ``$VOS_STAGING_SSH_KEY`` if set, else an ed25519 key per state dir."""
    configured = os.environ.get("VOS_STAGING_SSH_KEY")
    private = Path(configured) if configured else state_dir / "id_ed25519"
    if not private.exists():
        if configured:
            raise StagingError(f"VOS_STAGING_SSH_KEY={configured} does not exist")
        progress(f"ssh: generating the operator key {private}")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vos-staging-operator",
             "-f", str(private)])
    public = Path(f"{private}.pub")
    if not public.exists():
        raise StagingError(f"{public} is missing; the operator key needs its .pub beside it")
    return private, public.read_text().strip()


# Longest ControlPath ssh accepts is a unix socket path (108 bytes with the NUL); %C is 40.
_CONTROL_PATH_MAX = 100


def _connection_sharing(state_dir: Path) -> str:
    """ssh_config lines sharing ONE connection for every command to the mesh alias.

    Under TCG a new SSH connection costs ~2 s (key exchange and a forked, PAM-ed sshd on
    an emulated CPU), a command on a shared one ~0.2 s, and the tiers run hundreds. Only the
    mesh alias: the public one is what reachability tests probe (SSH must stop answering
    there), and a shared connection would outlive the door it came through. Empty (no
    sharing) when the state dir's path is too long for a socket.

    Example:
        >>> "ControlMaster auto" in _connection_sharing(Path("/tmp/lab"))
        True
    """
    path = f"{state_dir}/cm-%C"
    if len(path) - 2 + 40 > _CONTROL_PATH_MAX:
        return ""
    return (f"Host staging-mesh\n    ControlMaster auto\n    ControlPath {path}\n"
            "    ControlPersist 60\n")


class Lab:
    """The staging environment kept in one state dir (default ``.cache/staging``)."""

    def __init__(self, state_dir: Path | None = None):
        self.state_dir = (state_dir or default_state_dir()).resolve()

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> StagingState:
        state = load_state(self.state_dir)
        if state is None:
            raise StagingError(
                f"no staging environment in {self.state_dir}; run `vos staging up` first"
            )
        return state

    def exists(self) -> bool:
        return (self.state_dir / STATE_FILE).exists()

    # ----------------------------------------------------------------- up
    def up(
        self, boot_timeout: float | None = None, authorized_key: bool | None = True
    ) -> StagingState:
        """Boot the staging VM and its networks, or reuse them when they already run.

        Idempotent: a running VM is kept; a stopped one (host reboot, crash) is destroyed and
        recreated, since its networks are gone too.
        """
        if self.exists():
            state = self.state
            if self.running_vm() and self._networks_present(state):
                progress(f"up: reusing the running VM in {self.state_dir}")
                self.managed_db().ensure()
                return state
            progress("up: previous environment is incomplete; destroying it first")
            self.destroy()
        state = self._create(boot_timeout, authorized_key)
        self.managed_db().ensure()
        return state

    # ----------------------------------------------------------------- managed Postgres
    def managed_db(self) -> ManagedDb:
        """The staging "managed Postgres": outside every VM, on the operator's mesh address.

        Its data and the generated secrets live in the state dir and survive `destroy`
        (the burn-down drill needs them); see staging/managed_db.py.
        """
        self.state_dir.chmod(self.state_dir.stat().st_mode | 0o001)  # postgres traverses it
        return ManagedDb(self.state_dir, self.state.layout.operator_mesh)

    def drop_managed_db(self) -> None:
        """Stop the managed Postgres and delete its data and the secrets (explicit only)."""
        ManagedDb(self.state_dir, "").destroy_database()
        (self.state_dir / SECRETS_FILE).unlink(missing_ok=True)
        progress(f"destroy: managed Postgres and secrets in {self.state_dir} deleted")

    def deploy_env(self) -> dict[str, str]:
        """Environment for a deploy: this lab's state dir plus the stack's secrets/URLs."""
        return {**os.environ, "VOS_STAGING_DIR": str(self.state_dir),
                **self.managed_db().ensure()}

    def _networks_present(self, state: StagingState) -> bool:
        return state.layout.netns in networks.existing_netns()

    def _create(self, boot_timeout: float | None, authorized_key: bool | None) -> StagingState:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        image = ensure_base_image()
        private_key, _ = ensure_ssh_key(self.state_dir)
        layout = networks.claim_slot()
        op_key, op_pub = mesh.generate_keypair(self.state_dir, "mesh-operator")
        vm_key, vm_pub = mesh.generate_keypair(self.state_dir, "mesh-vm")
        state = StagingState(
            state_dir=str(self.state_dir),
            slot=layout.slot,
            image_dir=str(image.directory),
            ssh_private_key=str(private_key),
            ssh_public_key=f"{private_key}.pub",
            known_hosts=str(self.state_dir / "known_hosts"),
            ssh_config=str(self.state_dir / "ssh_config"),
            deploy_user=DEPLOY_USER,
            mesh_operator_private_key=str(op_key),
            mesh_operator_public_key=op_pub,
            mesh_vm_private_key=str(vm_key),
            mesh_vm_public_key=vm_pub,
        )
        state.save()  # from here on, destroy knows the slot
        try:
            networks.create_public_network(layout)
            state.mesh_pid = mesh.start_operator_side(
                layout, op_key, vm_pub, self.state_dir / "wireguard-go.log"
            )
            state.save()
            self._write_ssh_files(state, image)
            self.boot(PRIMARY, backing=image.disk, timeout=boot_timeout,
                      authorized_key=authorized_key)
        except BaseException:
            progress("up: failed; cleaning up what was created (the console log is kept)")
            self.destroy(keep_logs=True)
            raise
        progress(f"up: ready in {time.monotonic() - started:.0f} s")
        return self.state

    def _write_ssh_files(self, state: StagingState, image: BaseImage) -> None:
        """Pinned known_hosts (the image's host keys) and an ssh_config with two aliases."""
        layout = state.layout
        lines = [
            f"{address} {key}"
            for address in (layout.vm_public, layout.vm_mesh)
            for key in image.host_keys
        ]
        Path(state.known_hosts).write_text("\n".join(lines) + "\n")
        Path(state.ssh_config).write_text(
            f"""# Written by `vos staging up`; use: ssh -F {state.ssh_config} staging-mesh
Host staging-public
    HostName {layout.vm_public}
Host staging-mesh
    HostName {layout.vm_mesh}
{_connection_sharing(self.state_dir)}Host staging-*
    User {state.deploy_user}
    IdentityFile {state.ssh_private_key}
    IdentitiesOnly yes
    UserKnownHostsFile {state.known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 15
    LogLevel ERROR
"""
        )

    # ----------------------------------------------------------------- VMs
    def boot(
        self,
        name: str,
        backing: Path,
        timeout: float | None = None,
        authorized_key: str | None | bool = True,
        new_overlay: bool = True,
        retry_on_panic: bool = True,
    ) -> VmRecord:
        """Boot VM `name` on an overlay of `backing`, make it active and wait for SSH.

        `authorized_key=None` boots without the operator key (to prove the failure mode).
        A guest kernel panic during boot (seen once under TCG: an oops in kmem_cache_free 18 s
        in, on a disk that booted fine before and after) gets one more boot, said loudly with
        the panicked console kept; a second panic fails.
        """
        try:
            return self._boot_once(name, backing, timeout, authorized_key, new_overlay)
        except StagingError:
            record = self.state.vms.get(name)
            panic = guest_panic(Path(record.console_log)) if record else None
            if not (retry_on_panic and panic):
                raise
            kept = Path(record.console_log).with_suffix(".panic.log")
            shutil.copyfile(record.console_log, kept)
            progress(f"vm: {name}'s guest kernel panicked during boot ({panic}); console kept "
                     f"in {kept.name}; booting it once more")
            self.remove_vm(name, keep_overlay=not new_overlay)
            return self.boot(name, backing, timeout, authorized_key, new_overlay,
                             retry_on_panic=False)

    def _boot_once(self, name: str, backing: Path, timeout: float | None,
                   authorized_key: str | None | bool, new_overlay: bool) -> VmRecord:
        self.close_shared_connections()  # whatever it reached, it is not this boot
        state = self.state
        layout = state.layout
        image = Path(state.image_dir)
        key = Path(state.ssh_public_key).read_text().strip() if authorized_key is True else (
            authorized_key or None
        )
        if name in state.vms:
            self.remove_vm(name, keep_overlay=not new_overlay)
            state = self.state
        tap = networks.create_tap(layout, self._free_tap_index(state))
        record = VmRecord(
            name=name, pid=0, tap=tap, overlay="", backing=str(backing), console_log="",
            monitor_socket="",
        )
        state.vms[name] = record  # recorded before QEMU starts: destroy removes the tap
        state.save()
        record = boot_vm(
            name=name, layout=layout, tap=tap, directory=self.state_dir, backing=backing,
            kernel=image / "vmlinuz", initrd=image / "initrd.img", authorized_key=key,
            new_overlay=new_overlay,
        )
        state.vms[name] = record
        state.active_vm = name
        state.save()
        networks.move_tap_to_public(layout, tap)
        waited = wait_for_ssh(record, self._ssh_target, **({"timeout": timeout} if timeout else {}))
        progress(f"vm: {name} answers SSH after {waited:.0f} s")
        started = time.monotonic()
        system_state = wait_for_startup(self.ssh_command(), name)
        progress(f"vm: {name} finished starting ({system_state}) "
                 f"{time.monotonic() - started:.0f} s later")
        return record

    def _free_tap_index(self, state: StagingState) -> int:
        used = {vm.tap for vm in state.vms.values() if vm.pid}
        index = 0
        while state.layout.tap(index) in used:
            index += 1
        return index

    def shutdown(self, name: str, timeout: float = 120) -> None:
        """Clean power-off over SSH (disk consistent), then wait for QEMU to exit."""
        state = self.state
        record = state.vms[name]
        progress(f"vm: shutting down {name} cleanly")
        self.ssh("sudo systemctl poweroff", check=False, timeout=30)
        if not wait_for_exit(record.pid, timeout):
            raise StagingError(f"{name} did not power off within {timeout:.0f} s")
        self._forget_vm(state, name, keep_overlay=True)

    def remove_vm(self, name: str, keep_overlay: bool = False) -> None:
        """Power-cut a VM and delete its tap and (unless kept) its overlay."""
        state = self.state
        record = state.vms.get(name)
        if record is None:
            return
        if record.pid:
            kill_vm(record)
        self._forget_vm(state, name, keep_overlay=keep_overlay)

    def _forget_vm(self, state: StagingState, name: str, keep_overlay: bool) -> None:
        self.close_shared_connections()
        record = state.vms.pop(name)
        networks.delete_tap(state.layout, record.tap)
        for path in (record.monitor_socket, f"{self.state_dir}/{name}.pid"):
            if path:
                Path(path).unlink(missing_ok=True)
        if not keep_overlay and record.overlay:
            Path(record.overlay).unlink(missing_ok=True)
        if state.active_vm == name:
            state.active_vm = None
        state.save()

    def running_vm(self) -> str | None:
        """The active VM's name while its QEMU lives; None when none runs (or no lab)."""
        if not self.exists():
            return None
        state = self.state
        record = state.vms.get(state.active_vm or "")
        return record.name if record and mesh.pid_alive(record.pid) else None

    def activate(self, name: str, backing: Path, timeout: float | None = None) -> VmRecord:
        """Make VM `name` the running one: keep it if it runs, else power-cut whichever VM
        runs now and boot `name` from a NEW overlay on `backing`.

        One VM per slot at a time: every VM of a slot shares its addresses and mesh keys.
        (Pausing instead would break the mesh: a resumed guest's clock lags, and WireGuard
        rejects its handshakes as replays.)
        """
        state = self.state
        if self.running_vm() == name:
            return state.vms[name]
        for other in list(state.vms):
            self.remove_vm(other)
        return self.boot(name, backing=backing, timeout=timeout)

    def snapshot(self, name: str, snapshot_name: str) -> Path:
        """Shut VM `name` down cleanly and keep its disk as a read-only backing file."""
        record = self.state.vms[name]
        self.shutdown(name)
        snapshot = self.state_dir / f"{snapshot_name}.qcow2"
        Path(record.overlay).rename(snapshot)
        snapshot.chmod(0o444)
        progress(f"vm: {name}'s disk frozen as {snapshot.name}")
        return snapshot

    # ----------------------------------------------------------------- access
    def close_shared_connections(self) -> None:
        """Stop the mesh alias's shared SSH connection (ControlMaster), if one runs: a VM
        that stops or reboots leaves it hanging on a dead TCP connection, and the next
        command through it would wait for the keep-alives to give up (~45 s) and fail."""
        config = self.state_dir / "ssh_config"
        if config.exists():
            subprocess.run(["ssh", "-F", str(config), "-O", "exit", "staging-mesh"],
                           capture_output=True, timeout=15, check=False)

    def mesh_up(self) -> bool:
        """True when the mesh has a recent handshake and the VM's sshd answers on it."""
        state = self.state
        handshake = mesh.latest_handshake(state.layout)
        if not handshake or time.time() - handshake > MESH_FRESH_SECONDS:
            return False
        # Tries for two seconds: right after `systemctl reload ssh` sshd re-executes
        # and refuses new connections for a moment; one refusal must not send the next
        # command to the public address (closed after the cutover: a 255 there)
        return wait_until(lambda: tcp_open(state.layout.vm_mesh, 22, timeout=3), timeout=2)

    def _ssh_target(self) -> tuple[list[str], str]:
        """(ssh argv, address) re-evaluated on every wait: the mesh may come up meanwhile."""
        address = self.address()
        return self.ssh_command(address=address), address

    def address(self) -> str:
        """The address to reach the VM at: the mesh once it is up, else the public one."""
        layout = self.state.layout
        return layout.vm_mesh if self.mesh_up() else layout.vm_public

    def ssh_command(self, address: str | None = None) -> list[str]:
        """`ssh` argv (pinned host keys, operator key) for the active VM."""
        state = self.state
        alias = "staging-mesh" if (address or self.address()) == state.layout.vm_mesh else (
            "staging-public"
        )
        return ["ssh", "-F", state.ssh_config, alias]

    def ssh(
        self, command: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` as the deploy user on the active VM (use `sudo` inside for root)."""
        result = subprocess.run(
            [*self.ssh_command(), command], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise StagingError(
                f"`{command}` on the staging VM exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
            )
        return result

    def scan(self, ports: str = "1-65535", family: int = 4) -> list[int]:
        """Open TCP ports on the VM's public address (IPv4, or IPv6 with `family=6`), seen
        from inside the public netns."""
        layout = self.state.layout
        return scanner.scan(layout.netns, layout.vm_public_address(family), ports=ports)

    def scan_replies(
        self, protocol: str = "udp", family: int = 4, ports: str = "1-65535"
    ) -> dict[int, str]:
        """Ports on the VM's public address that replied to a `protocol` scan from the public
        netns, with their state; {} on the hardened host for UDP (see staging/scanner.py).

        Example:
            >>> lab.scan_replies("udp", family=6)
            {}
        """
        layout = self.state.layout
        return scanner.scan_replies(layout.netns, layout.vm_public_address(family),
                                    protocol=protocol, ports=ports)

    def lynis(self, profile: bool = True) -> lynis.LynisAudit:
        """Lynis's audit of the active VM, run as root there (see staging.lynis); `profile`
        False: Lynis's default profile alone."""
        return lynis.audit(self.ssh_command(), profile=profile)

    def run_pyinfra(
        self,
        deploy: str | Path,
        extra: list[str] | None = None,
        timeout: float = 2400,
        live: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`pyinfra -y inventory/staging.py <deploy>` against this state dir (no `-y` with
        `--dry`: pyinfra then lists the changes it would make and stops).

        Output goes live to ``<state dir>/pyinfra.out`` (follow it with `tail -f`), is kept
        in ``pyinfra.log`` across runs, and is returned in the CompletedProcess as well.
        `live=True` (the CLI) lets pyinfra write to the terminal instead; nothing is captured.
        """
        pyinfra = Path(sys.executable).with_name("pyinfra")
        extra = list(extra or [])
        # `-y` makes pyinfra skip change detection, which is all a `--dry` run reports.
        confirm = [] if "--dry" in extra else ["-y"]
        command = [str(pyinfra), *confirm, str(INVENTORY), str(deploy), *extra]
        log = self.state_dir / "pyinfra.log"
        progress(f"deploy: {' '.join(command)} (live output: {log.with_suffix('.out')})")
        env = self.deploy_env()
        started = time.monotonic()
        if live:
            try:
                returncode = subprocess.run(command, env=env, cwd=REPO_ROOT,
                                            timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                raise StagingError(f"pyinfra did not finish within {timeout:.0f} s") from None
            progress(f"deploy: exit {returncode} after {time.monotonic() - started:.0f} s")
            return subprocess.CompletedProcess(command, returncode, "", "")
        out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise StagingError(
                    f"pyinfra did not finish within {timeout:.0f} s; see {out_path}"
                ) from None
        result = subprocess.CompletedProcess(
            command, returncode, out_path.read_text(), err_path.read_text()
        )
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}\n")
        progress(f"deploy: exit {returncode} after {time.monotonic() - started:.0f} s")
        return result

    def status(self) -> dict:
        """A summary for `vos staging status` (JSON-friendly)."""
        if not self.exists():
            return {"state_dir": str(self.state_dir), "up": False}
        state = self.state
        layout = state.layout
        record = state.vms.get(state.active_vm or "")
        running = self.running_vm() is not None
        return {
            "state_dir": str(self.state_dir),
            "up": running,
            "slot": state.slot,
            "public_address": layout.vm_public,
            "public_address6": layout.vm_public6,
            "mesh_address": layout.vm_mesh,
            "operator_mesh_address": layout.operator_mesh,
            "mesh_up": running and self.mesh_up(),
            "active_vm": state.active_vm,
            "vms": {name: {"pid": vm.pid, "backing": vm.backing}
                    for name, vm in state.vms.items()},
            "deployed": state.deployed,
            "ssh_config": state.ssh_config,
            "console_log": record.console_log if record else None,
        }

    # ----------------------------------------------------------------- destroy
    def destroy(self, keep_logs: bool = False) -> None:
        """Stop every process and delete every netns, interface, socket and overlay made here.

        Safe to call twice and after a half-finished `up`.
        """
        state = load_state(self.state_dir)
        if state is None:
            progress(f"destroy: nothing to destroy in {self.state_dir}")
            return
        layout = state.layout
        for name in list(state.vms):
            record = state.vms[name]
            if record.pid:
                kill_vm(record)
            networks.delete_tap(layout, record.tap)
            if record.overlay:
                Path(record.overlay).unlink(missing_ok=True)
        ManagedDb(self.state_dir, layout.operator_mesh).stop_relay()  # the DB itself stays
        mesh.stop_operator_side(layout, state.mesh_pid)
        networks.destroy_public_network(layout)
        for pattern in ("*.qcow2", "*.monitor.sock", "*.pid", "mesh-*.wgkey", "*.tmp"):
            for path in self.state_dir.glob(pattern):
                path.unlink(missing_ok=True)
        if not keep_logs:
            for pattern in ("*.console.log", "wireguard-go.log"):
                for path in self.state_dir.glob(pattern):
                    path.unlink(missing_ok=True)
        for name in ("known_hosts", "ssh_config", STATE_FILE):
            (self.state_dir / name).unlink(missing_ok=True)
        progress(f"destroy: slot {layout.slot} removed")

    def leftovers(self, layout: SlotLayout, pids: list[int]) -> list[str]:
        """What destroy should have removed but did not (empty list when clean)."""
        found = [f"process {pid}" for pid in pids if mesh.pid_alive(pid)]
        if layout.netns in networks.existing_netns():
            found.append(f"netns {layout.netns}")
        found += [f"interface {name}" for name in networks.slot_interfaces(layout)]
        if mesh.socket_path(layout).exists():
            found.append(f"socket {mesh.socket_path(layout)}")
        found += [f"overlay {p}" for p in self.state_dir.glob("*.qcow2")]
        return found


def guest_panic(console_log: Path) -> str | None:
    """The guest kernel's panic line in a serial console log, or None.

    Example:
        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "c.log"
        >>> _ = log.write_text("[ 18.73] Kernel panic - not syncing: Fatal exception\\n")
        >>> guest_panic(log)
        'Kernel panic - not syncing: Fatal exception'
    """
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "Kernel panic - not syncing" in line:
            return line[line.index("Kernel panic"):].strip()
    return None


def remove_state_dir(state_dir: Path) -> None:
    """Delete a state dir entirely (the test fixtures' own temporary ones)."""
    shutil.rmtree(state_dir, ignore_errors=True)
