"""What `vos staging up` created, written to ``<state dir>/state.json``.

`inventory/staging.py`, `vos staging status|ssh|scan|destroy` and the test fixtures all read
this file; nothing else needs to know how the VM and its networks were made.

Addresses come from a *slot* (0-15) so that several state dirs (a developer's `make up` and a
test session) can run side by side without clashing:

    public network  203.0.113.<16*slot>/28  (.1 scanner in the netns, .2 operator, .10 the VM)
    public IPv6     2001:db8:<slot>::/64    (::1 scanner in the netns, ::10 the VM)
    mesh            100.64.<slot>.0/24      (.1 operator, wireguard-go; .2 the VM, tailscale0)

Example:
    >>> layout = SlotLayout(slot=0)
    >>> layout.vm_public, layout.vm_public6, layout.vm_mesh
    ('203.0.113.10', '2001:db8::10', '100.64.0.2')
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "state.json"
MAX_SLOTS = 16


def default_state_dir() -> Path:
    """``$VOS_STAGING_DIR`` or ``<repo>/.cache/staging`` (gitignored)."""
    configured = os.environ.get("VOS_STAGING_DIR")
    return Path(configured).resolve() if configured else REPO_ROOT / ".cache" / "staging"


def temporary_state_dir(purpose: str) -> Path:
    """A fresh state dir under /tmp for tests and benchmarks.

    Not pytest's tmp_path: pytest deletes old basetemp dirs whenever another session starts
    (it keeps three), which would pull the keys from under a VM still running in a long one.

    Example:
        >>> temporary_state_dir("bench").name.startswith("vos-staging-bench-")
        True
    """
    return Path(tempfile.mkdtemp(prefix=f"vos-staging-{purpose}-"))


class SlotLayout(BaseModel):
    """Names and addresses derived from a slot number; pure data, no side effects."""

    slot: int = Field(ge=0, lt=MAX_SLOTS)

    @property
    def prefix(self) -> str:
        return f"vos{self.slot}"

    @property
    def netns(self) -> str:
        return f"{self.prefix}-public"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def host_veth(self) -> str:
        return f"{self.prefix}-op"

    @property
    def ns_veth(self) -> str:
        return f"{self.prefix}-ns"

    @property
    def mesh_interface(self) -> str:
        return f"{self.prefix}-mesh"

    def tap(self, index: int) -> str:
        return f"{self.prefix}-t{index}"

    def _public(self, host: int) -> str:
        return f"203.0.113.{16 * self.slot + host}"

    @property
    def public_prefix_len(self) -> int:
        return 28

    @property
    def public_network(self) -> str:
        return f"{self._public(0)}/28"

    @property
    def scanner_public(self) -> str:
        return self._public(1)

    @property
    def operator_public(self) -> str:
        return self._public(2)

    @property
    def vm_public(self) -> str:
        return self._public(10)

    def _public6(self, host: str) -> str:
        # The slot in decimal digits reads like the IPv4 layout (slot 12: 2001:db8:12::10);
        # compressed as `ip` and nmap print it (slot 0: 2001:db8::10), so strings compare.
        return str(ipaddress.IPv6Address(f"2001:db8:{self.slot}::{host}"))

    @property
    def public6_prefix_len(self) -> int:
        return 64

    @property
    def public6_network(self) -> str:
        """The slot's documentation /64, e.g. ``'2001:db8:3::/64'`` for slot 3."""
        return f"{self._public6('0')}/{self.public6_prefix_len}"

    @property
    def scanner_public6(self) -> str:
        return self._public6("1")

    @property
    def vm_public6(self) -> str:
        return self._public6("10")

    def vm_public_address(self, family: int) -> str:
        """The VM's public address of one IP family (4 or 6).

        Example:
            >>> SlotLayout(slot=3).vm_public_address(6)
            '2001:db8:3::10'
        """
        addresses = {4: self.vm_public, 6: self.vm_public6}
        if family not in addresses:
            raise ValueError(f"IP family must be 4 or 6, not {family!r}")
        return addresses[family]

    @property
    def operator_mesh(self) -> str:
        return f"100.64.{self.slot}.1"

    @property
    def vm_mesh(self) -> str:
        return f"100.64.{self.slot}.2"

    @property
    def mesh_prefix_len(self) -> int:
        return 24

    @property
    def operator_mesh_port(self) -> int:
        return 51820 + self.slot

    @property
    def vm_mesh_port(self) -> int:
        return 41641  # Tailscale's default UDP port, for the look of it


class VmRecord(BaseModel):
    """One QEMU process: what it boots from and where its files are."""

    name: str
    pid: int
    tap: str
    overlay: str
    backing: str
    console_log: str
    monitor_socket: str


class StagingState(BaseModel):
    """Everything `staging up` created; `destroy` undoes exactly this list."""

    state_dir: str
    slot: int
    image_dir: str
    ssh_private_key: str
    ssh_public_key: str
    known_hosts: str
    ssh_config: str
    deploy_user: str = "deploy"
    door_port: int = 443
    mesh_operator_private_key: str
    mesh_operator_public_key: str
    mesh_vm_private_key: str
    mesh_vm_public_key: str
    mesh_pid: int | None = None
    vms: dict[str, VmRecord] = Field(default_factory=dict)
    active_vm: str | None = None
    deployed: bool = False

    @property
    def layout(self) -> SlotLayout:
        return SlotLayout(slot=self.slot)

    def save(self) -> None:
        """Write atomically so a reader never sees half a file."""
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        tmp.replace(path)


def load_state(state_dir: Path | None = None) -> StagingState | None:
    """The saved state, or None when nothing is up in that state dir."""
    path = (state_dir or default_state_dir()) / STATE_FILE
    if not path.exists():
        return None
    return StagingState.model_validate_json(path.read_text())
