"""The ONE inventory data model: every host's data is validated here before any connection.

`inventory/production.py` and `inventory/staging.py` build their hosts through
:func:`inventory_hosts`, so pyinfra never opens a connection with a missing address or a
port that is not a number; `deploys/full.py` re-reads the validated model from `host.data`
with :func:`settings_from_host_data` and hands typed values down to the roles.

Field names starting with ``ssh_`` are pyinfra's own SSH connector settings, kept verbatim so
pyinfra uses them directly. Secrets are never values here, only *names* of environment
variables (``authkey_env``) or paths of files on the operator's machine.

Example:
    >>> hosts = inventory_hosts([("vps", {
    ...     "ssh_hostname": "203.0.113.10", "ssh_user": "deploy",
    ...     "public_address": "203.0.113.10",
    ...     "operator_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop"],
    ...     "mesh": {"provider": "tailscale", "tailscale": {}},
    ... })])
    >>> hosts[0][1]["door_port"]
    443
"""

from __future__ import annotations

import ipaddress
import os
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

CGNAT = IPv4Network("100.64.0.0/10")  # Tailscale's (and our mesh's) address range
MESH_INTERFACE = "tailscale0"  # same name in staging and production: one UFW rule serves both
WIREGUARD_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Values below land in shell lines, file lines and command arguments on the host: each is
# checked for that use here, so nothing downstream has to quote or escape it.
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PUBLIC_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                    "sk-ecdsa-sha2-nistp256@openssh.com")
PUBLIC_KEY_LINE = re.compile(r"^(?P<type>\S+) (?P<blob>[A-Za-z0-9+/]+={0,3})"
                             r"(?: (?P<comment>[\x20-\x7e\u00a0-\uffff]*))?$")
Port = Annotated[StrictInt, Field(ge=1, le=65535)]  # StrictInt: `True` is not port 1


def public_key_line(value: str) -> str:
    """One OpenSSH public key, exactly one line: `TYPE BASE64 [comment]`.

    A newline (or any control character) would add a second authorized_keys or known_hosts
    line; options (`command=…`) would change what the key may do.

    Example:
        >>> public_key_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop")
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@laptop'
    """
    if "PRIVATE KEY" in value:
        raise ValueError("a private key was given where a public key belongs")
    match = PUBLIC_KEY_LINE.match(value)
    if match is None or any(ch in value for ch in "\r\n\x00"):
        raise ValueError(f"not one OpenSSH public key line (TYPE BASE64 [comment], no "
                         f"newline or options): {value[:40]!r}")
    if match["type"] not in PUBLIC_KEY_TYPES:
        raise ValueError(f"unknown key type {match['type'][:30]!r}; use one of "
                         f"{', '.join(PUBLIC_KEY_TYPES)}")
    return value


def host_name_or_address(value: str) -> str:
    """A DNS name or an IP address, nothing a shell or ssh could read as more (no spaces,
    newlines, leading '-' or quotes).

    Example:
        >>> host_name_or_address("backup.example.net")
        'backup.example.net'
    """
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not HOST_NAME.match(value):
        raise ValueError(f"{value[:60]!r} is neither an IP address nor a host name (letters, "
                         "digits, '-' and '.', not starting with '-')")
    return value


def variable_name(value: str) -> str:
    """The NAME of an environment variable (never its value)."""
    if not VARIABLE_NAME.match(value):
        raise ValueError(f"{value[:40]!r} is not an environment variable name "
                         "(letters, digits, _)")
    return value


class InventoryError(ValueError):
    """Inventory data failed validation; the message names the host and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _in_mesh_range(address: IPv4Address) -> IPv4Address:
    if address not in CGNAT:
        raise ValueError(f"{address} is not in the mesh range {CGNAT}")
    return address


class WireguardMesh(_Strict):
    """Provider `wireguard`: the staging stand-in for Tailscale (operator = the one peer)."""

    address: IPv4Address
    prefix_len: StrictInt = Field(24, ge=10, le=32)
    private_key_file: FilePath  # on the operator's machine; its content goes to the host
    listen_port: Port = 41641
    peer_public_key: str
    peer_address: IPv4Address
    peer_endpoint: str  # "host:port" the host sends its handshakes to

    _check_address = field_validator("address", "peer_address")(_in_mesh_range)

    @field_validator("peer_public_key")
    @classmethod
    def _wireguard_key(cls, value: str) -> str:
        if not WIREGUARD_KEY.match(value):
            raise ValueError("not a WireGuard public key (44 base64 characters)")
        return value

    @field_validator("peer_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must look like HOST:PORT, e.g. 203.0.113.2:51820")
        host_name_or_address(host.removeprefix("[").removesuffix("]"))
        return value

    def private_key(self) -> str:
        """The host's WireGuard private key, read from the operator-side file."""
        return self.private_key_file.read_text().strip()


class TailscaleMesh(_Strict):
    """Provider `tailscale` (production): `tailscale up --authkey` from an env var."""

    authkey_env: str = "TAILSCALE_AUTHKEY"
    hostname: str | None = None  # one DNS label: it lands in `tailscale up --hostname=`
    expected_address: IPv4Address | None = None
    # the operator's own tailnet address: fail2ban never bans it (a typo'd password on the
    # operator's side must not lock the operator out of the API)
    operator_address: IPv4Address | None = None

    _check_operator_address = field_validator("operator_address")(_in_mesh_range)

    _check_authkey_env = field_validator("authkey_env")(variable_name)

    @field_validator("hostname")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not DNS_LABEL.match(value):
            raise ValueError(f"{value[:60]!r} is not a host name label (letters, digits and "
                             "'-', at most 63, not starting or ending with '-')")
        return value

    def authkey(self) -> str:
        """The auth key from the operator's environment; clear error when it is missing."""
        value = os.environ.get(self.authkey_env, "").strip()
        if not value:
            raise InventoryError(
                f"mesh.tailscale.authkey_env: environment variable {self.authkey_env} is "
                "empty; create an auth key in the Tailscale admin console and export it"
            )
        return value


class MeshSettings(_Strict):
    """The private network the operator, the host and Postgres share."""

    provider: Literal["wireguard", "tailscale"]
    interface: Literal["tailscale0"] = MESH_INTERFACE
    wireguard: WireguardMesh | None = None
    tailscale: TailscaleMesh | None = None

    @model_validator(mode="after")
    def _provider_block_present(self) -> MeshSettings:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider is {self.provider!r} but the `{self.provider}` block "
                             "is missing")
        return self

    @property
    def expected_address(self) -> IPv4Address | None:
        """The host's mesh IP when the inventory knows it in advance."""
        if self.wireguard:
            return self.wireguard.address
        return self.tailscale.expected_address if self.tailscale else None

    @property
    def operator_address(self) -> IPv4Address | None:
        """The operator's mesh address (never banned), when the inventory names it."""
        if self.wireguard:
            return self.wireguard.peer_address
        return self.tailscale.operator_address if self.tailscale else None


CRON_FIELD = re.compile(r"^[0-9*/,-]+$")


class BackupSettings(_Strict):
    """Scheduled, GPG-encrypted Postgres backups (roles/backups.py, backups/).

    The database URL is a secret: only the NAME of the operator-side environment variable
    that holds it is here. The public key file is on the operator's machine; only its
    content (a PUBLIC key, never a secret one) goes to the host.
    """

    schedule: str = "17 3 * * *"  # cron's five fields, host time (UTC on our hosts)
    keep_daily: int = Field(7, ge=1, le=366)
    keep_weekly: int = Field(4, ge=0, le=520)
    target_host: str = Field(min_length=1)
    target_user: str = "vos-backup"
    target_path: str = "/srv/vos-backups"
    target_port: Port = 22
    target_host_key: str | None = None  # "ssh-ed25519 AAAA…" of the target, pinned
    public_key_file: FilePath
    database_url_env: str = "VOS_BACKUP_DATABASE_URL"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(CRON_FIELD.match(field) for field in fields):
            raise ValueError("must be five cron fields, e.g. '17 3 * * *' (03:17 daily)")
        return value

    _check_target_host = field_validator("target_host")(host_name_or_address)
    _check_database_url_env = field_validator("database_url_env")(variable_name)

    @field_validator("target_host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        return None if value is None else public_key_line(value.strip())

    @field_validator("target_user")
    @classmethod
    def _target_user(cls, value: str) -> str:
        if not USER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Linux user name")
        return value

    @field_validator("target_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value):
            raise ValueError("must be an absolute path of letters, digits and ._/- only")
        return value

    @field_validator("public_key_file")
    @classmethod
    def _public_only(cls, value: Path) -> Path:
        text = value.read_text(errors="replace")
        if "PRIVATE KEY BLOCK" in text:
            raise ValueError("this file holds a SECRET key; export the PUBLIC one "
                             "(gpg --export --armor FINGERPRINT > operator.pub.asc)")
        if "PUBLIC KEY BLOCK" not in text:
            raise ValueError("not an armored OpenPGP public key (gpg --export --armor …)")
        return value

    def database_url(self) -> str:
        """The managed Postgres URL from the operator's environment; clear error if unset."""
        value = os.environ.get(self.database_url_env, "").strip()
        if not value:
            raise InventoryError(
                f"backups.database_url_env: environment variable {self.database_url_env} is "
                "empty; export the URL of a role that owns the database (it must bypass "
                "row-level security to dump every row)")
        return value

    @property
    def target_spec(self) -> str:
        """rsync's destination, e.g. vos-backup@203.0.113.7:/srv/vos-backups."""
        return f"{self.target_user}@{self.target_host}:{self.target_path}"


IMAGE_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")
MEMORY = re.compile(r"^[1-9][0-9]*[kmg]$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class StackSettings(_Strict):
    """The app stack (roles/stack.py, stack/): image, how it travels, and the compose knobs.

    Secrets are never values here: `env` maps a variable name inside the containers to the
    NAME of the operator-side environment variable that holds its value; the deploy writes
    them to a 0600 root:root env file on the host.

    Example:
        >>> StackSettings().ship
        'save-load'
    """

    base_image: str = "python:3.13-slim"  # a local `debootstrap | docker import` in staging
    image_repository: str = "agent-vos"
    ship: Literal["save-load", "registry"] = "save-load"  # registry: the host pulls
    registry_image: str | None = None  # e.g. ghcr.io/acme/agent-vos (ship = registry)
    api_port: Port = 8080  # on the mesh IP
    door_host_ip: ipaddress.IPv4Address = ipaddress.IPv4Address("0.0.0.0")
    memory_api: str = "512m"
    memory_door: str = "256m"
    memory_worker: str = "512m"
    # The tenant's agents file (YAML, app/agents/spec.py; examples/agents.yaml shows every
    # field). Set: it is shipped, `vos agents apply`-ed to `agents_tenant` on every deploy
    # (part of the release) and `worker_replicas` workers work that tenant's tasks with it.
    # Unset: no worker service.
    agents_file: FilePath | None = None
    agents_tenant: str = Field("main", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")  # tenant slug
    worker_replicas: int = Field(1, ge=1, le=16)
    # Provider keys for the worker only (inside name -> NAME of the operator's variable),
    # written to worker.env (0600); the API and the door never see them.
    worker_env: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=lambda: {
        "DATABASE_URL": "VOS_DATABASE_URL", "VOS_DOOR_SECRETS": "VOS_DOOR_SECRETS"})
    migrate_env: dict[str, str] = Field(default_factory=lambda: {
        "DATABASE_URL": "VOS_OWNER_DATABASE_URL", "VOS_APP_PASSWORD": "VOS_APP_PASSWORD"})
    tls: Literal["self-signed", "operator", "acme"] = "self-signed"
    tls_cert_file: FilePath | None = None  # tls = operator
    tls_key_file: FilePath | None = None
    # An alternative compose template on the operator's machine (tests plant broken ones to
    # prove the static gate); default: templates/stack/compose.yml.j2.
    compose_template: FilePath | None = None
    health_timeout_seconds: int = Field(180, ge=10, le=1800)
    # Docker's health probes. Each one is a `docker exec` of Python in the container: ~50 ms
    # of a VPS core, but seconds of an emulated one (measured on the staging VM: three
    # services probing every 10-15 s kept its CPUs busy). While a container starts it is
    # probed every `health_start_interval_seconds` (Docker Engine 25+), so a release turns
    # healthy as soon as it is; once healthy, every `health_interval_seconds`, and three
    # misses in a row mark it unhealthy (restart policy and the deploy's health wait see it).
    health_interval_seconds: int = Field(60, ge=5, le=3600)
    health_start_interval_seconds: int = Field(5, ge=1, le=60)
    keep_releases: int = Field(5, ge=2, le=50)

    @field_validator("base_image", "image_repository", "registry_image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REFERENCE.match(value):
            raise ValueError(f"{value!r} is not an image reference (e.g. python:3.13-slim)")
        return value

    @field_validator("memory_api", "memory_door", "memory_worker")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY.match(value):
            raise ValueError(f"{value!r} is not a memory size like 256m or 1g")
        return value

    @field_validator("env", "migrate_env", "worker_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for inside, outside in value.items():
            if not ENV_NAME.match(inside) or not ENV_NAME.match(outside):
                raise ValueError(f"{inside}={outside}: both sides must be variable NAMES "
                                 "(A-Z, 0-9, _); values come from the operator's environment")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackSettings:
        if self.ship == "registry" and not self.registry_image:
            raise ValueError("ship is 'registry' but registry_image is not set")
        if self.tls == "operator" and not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("tls is 'operator': set tls_cert_file and tls_key_file")
        if self.tls == "acme":
            raise ValueError("tls 'acme' (TLS-ALPN-01 on the door port) is not implemented "
                             "yet: use 'operator' with a certificate you obtained, or "
                             "'self-signed'")
        return self


# What a login banner must not say (CIS 1.7: no OS name or version, no getty escapes that print
# them); checks/accounts_rules.py judges the host by the same words.
BANNER_FORBIDDEN = re.compile(r"\\[mrsv]|debian|ubuntu|gnu/linux|linux", re.IGNORECASE)
DEFAULT_BANNER = ("Authorised access only. This is a private system; activity on it is "
                  "monitored and logged. Unauthorised use is prohibited and may be subject to "
                  "criminal prosecution.")


class LoginSettings(_Strict):
    """Login policy, banners and what may not stay on the host (roles/accounts.py).

    Bounds are the baseline's (CIS Ubuntu 24.04 L2, dev-sec linux-baseline, Lynis AUTH-9230/
    9286/9328): a value the gate would fail (checks/test_accounts.py) cannot be configured.
    PASS_* apply to passwords set from now on; no account here has one (keys only, §11).

    Example:
        >>> LoginSettings().umask, LoginSettings().pass_max_days
        ('027', 365)
    """

    umask: Literal["027", "077"] = "027"  # login.defs UMASK (pam_umask reads it)
    pass_max_days: int = Field(365, ge=1, le=365)  # PASS_MAX_DAYS
    pass_min_days: int = Field(1, ge=1, le=365)  # PASS_MIN_DAYS
    pass_warn_age: int = Field(7, ge=7, le=365)  # PASS_WARN_AGE
    encrypt_method: Literal["YESCRYPT", "SHA512"] = "YESCRYPT"  # Debian 13's default
    # SHA_CRYPT_*: used only when encrypt_method is SHA512; set anyway (Lynis AUTH-9230).
    sha_crypt_min_rounds: int = Field(5000, ge=5000, le=10_000_000)
    sha_crypt_max_rounds: int = Field(100_000, ge=5000, le=10_000_000)
    login_retries: int = Field(3, ge=1, le=3)  # LOGIN_RETRIES
    # Interactive shells end after this many idle seconds (TMOUT, read-only; CIS 5.4.3.2,
    # Lynis SHLL-6220). pyinfra's and cron's shells are not interactive: never cut.
    idle_timeout_seconds: int = Field(900, ge=60, le=900)
    # pam_pwquality for any password set from now on (CIS 5.3.3.2; Lynis AUTH-9262).
    password_min_length: int = Field(14, ge=14, le=128)
    password_min_classes: int = Field(4, ge=1, le=4)
    # /etc/issue and /etc/issue.net (and sshd's Banner); /etc/motd is left empty.
    banner: str = Field(DEFAULT_BANNER, min_length=20, max_length=1000)
    # Packages purged if installed (Python regexes, whole-name match): compilers and build
    # tools an intruder would use to build exploits on the host. Docker needs none of them.
    compiler_packages: list[str] = Field(default_factory=lambda: [
        "build-essential", r"gcc(-\d+)?", r"g\+\+(-\d+)?", r"clang(-\d+)?", "tcc", "make"])

    @field_validator("banner")
    @classmethod
    def _banner(cls, value: str) -> str:
        if BANNER_FORBIDDEN.search(value):
            raise ValueError("the banner must not name the OS or use getty escapes "
                             "(\\m \\r \\s \\v): CIS 1.7")
        if any(ord(ch) < 32 and ch != "\n" for ch in value):
            raise ValueError("the banner may hold printable text and newlines only")
        return value

    @field_validator("compiler_packages")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _rounds(self) -> LoginSettings:
        if self.sha_crypt_max_rounds < self.sha_crypt_min_rounds:
            raise ValueError("sha_crypt_max_rounds is below sha_crypt_min_rounds")
        return self


# Modules Docker and the mesh load: never blacklisted (a typo in the knob must not cost the
# engine its bridges/NAT or the host its WireGuard tunnel).
KERNEL_MODULES_NEEDED = re.compile(
    r"^(overlay|br_netfilter|bridge|veth|vxlan|wireguard|ip_tables|ip6_tables|x_tables|"
    r"iptable_\w+|ip6table_\w+|nf_\w+|nft_\w+|xt_\w+|ipt_\w+|ip6t_\w+|llc|stp|tun|"
    r"udp_tunnel|ip6_udp_tunnel|ext4|tmpfs|autofs4)$")
KERNEL_MODULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,55}$")
DEFAULT_MODULE_BLACKLIST = (
    # rare network protocols (CIS 3.2.x, NETW-3200)
    "dccp", "sctp", "rds", "tipc",
    # unused filesystems (CIS 1.1.1.x, STRG-1846 for usb-storage)
    "cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "udf",
    # removable media and radios a VPS never has (USB-1000)
    "usb-storage", "firewire-core", "firewire-ohci", "bluetooth", "btusb",
)


class KernelSettings(_Strict):
    """Kernel-level controls (roles/kernel.py, INVARIANTS.md §21-23).

    `module_blacklist`: modules that may never load (`install M /bin/false` + `blacklist M`
    in /etc/modprobe.d/vos-blacklist.conf). What Docker and the mesh need (overlay,
    br_netfilter, veth, nf_*/xt_*/iptables, wireguard) is refused here.

    Example:
        >>> "sctp" in KernelSettings().module_blacklist
        True
        >>> try:
        ...     KernelSettings(module_blacklist=["nf_conntrack"])
        ... except ValidationError as error:
        ...     print(error.errors()[0]["msg"])
        Value error, nf_conntrack is needed by Docker or the mesh; it cannot be blacklisted
    """

    module_blacklist: list[str] = Field(default_factory=lambda: list(DEFAULT_MODULE_BLACKLIST))

    @field_validator("module_blacklist")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if not KERNEL_MODULE_NAME.match(name):
                raise ValueError(f"{name[:60]!r} is not a kernel module name")
            if KERNEL_MODULES_NEEDED.match(name.replace("-", "_")):
                raise ValueError(f"{name} is needed by Docker or the mesh; it cannot be "
                                 "blacklisted")
        return value


class HostSettings(_Strict):
    """One host's inventory data. Extend by adding fields; never rename existing ones."""

    # pyinfra's SSH connector (names are pyinfra's)
    ssh_hostname: str = Field(min_length=1)
    ssh_user: str
    ssh_port: Port = 22
    ssh_key: FilePath | None = None
    ssh_known_hosts_file: FilePath | None = None
    ssh_strict_host_key_checking: Literal["yes", "no", "accept-new", "off"] | None = None

    # the host itself
    public_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    deploy_user: str = "deploy"
    operator_public_keys: list[Annotated[str, AfterValidator(public_key_line)]] = Field(
        min_length=1)
    door_port: Port = 443
    apt_upgrade: bool = True
    mesh: MeshSettings
    backups: BackupSettings | None = None
    stack: StackSettings | None = None
    kernel: KernelSettings = KernelSettings()
    login: LoginSettings = LoginSettings()  # roles/accounts.py

    # ---- derived values: every deploy, role and `vos check` reads these, none re-derives them

    @property
    def mesh_ip(self) -> str | None:
        """The host's mesh IP if the inventory knows it (else the deploy reads it on the host
        after the mesh step: roles.mesh.resolved_mesh_ip)."""
        address = self.mesh.expected_address
        return str(address) if address else None

    @property
    def operator_mesh_ip(self) -> str | None:
        """The operator's mesh address (fail2ban's ignore list), if known."""
        address = self.mesh.operator_address
        return str(address) if address else None

    @property
    def api_port(self) -> int:
        """The private API's port on the mesh IP (the stack's, or its default)."""
        return self.stack.api_port if self.stack else StackSettings.model_fields["api_port"].default

    @field_validator("ssh_user", "deploy_user")
    @classmethod
    def _user_name(cls, value: str) -> str:
        if not USER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Linux user name")
        return value

    @field_validator("ssh_hostname")
    @classmethod
    def _ssh_hostname(cls, value: str) -> str:
        # an address, a DNS name or an ssh_config alias; never an option ('-o…') or two words
        if value.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._:\[\]%-]+", value):
            raise ValueError(f"{value[:60]!r} is not a host name, address or ssh alias")
        return value

    @model_validator(mode="after")
    def _ports_do_not_collide(self) -> HostSettings:
        if self.door_port == self.ssh_port:
            raise ValueError(f"door_port and ssh_port are both {self.door_port}: the door "
                             "would take sshd's port (or the reverse); give the door its own")
        if self.stack is not None and self.stack.api_port == self.door_port:
            raise ValueError(f"stack.api_port and door_port are both {self.door_port}: the "
                             "API (mesh) and the door (all interfaces) cannot share a port")
        return self


def _describe(error: ValidationError, host_name: str) -> str:
    lines = [f"inventory host {host_name!r} is invalid (nothing was connected to):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(host data)"
        lines.append(f"  - {field}: {item['msg']}")
    return "\n".join(lines)


def validate_host(host_name: str, data: dict[str, Any]) -> HostSettings:
    """Validate one host's data; InventoryError names the host and each bad field.

    Keys starting with ``_`` are pyinfra global arguments (``_sudo``) and pass through.
    """
    own = {key: value for key, value in data.items() if not key.startswith("_")}
    try:
        return HostSettings.model_validate(own)
    except ValidationError as error:
        raise InventoryError(_describe(error, host_name)) from None


# Where pyinfra stages uploads on the host before `sudo mv`. Left unset, pyinfra asks the
# host for $TMPDIR *through sudo*; once pam_tmpdir is on (roles/accounts.py, §18) that is
# root's private /tmp/user/0, which the deploy user's SFTP cannot write: every upload of a
# second deploy failed with "Permission denied". /tmp is what pyinfra used before pam_tmpdir.
UPLOAD_STAGING_DIR = "/tmp"


def pin_upload_staging_dir() -> None:
    """Set pyinfra's TEMP_DIR for this run (a no-op outside a pyinfra run).

    Called while the inventory loads, before pyinfra locks its config for the deploy files,
    so it holds for every operation and every connector upload of the run.

    Example:
        >>> pin_upload_staging_dir()  # outside pyinfra: nothing to pin
    """
    from pyinfra.context import ctx_config

    if ctx_config.isset():
        ctx_config.get().TEMP_DIR = UPLOAD_STAGING_DIR


def inventory_hosts(hosts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict]]:
    """Validate every host, then return them in pyinfra's inventory shape.

    Paths become strings (pyinfra expects plain data); ``_sudo`` defaults to True because
    the deploy user connects and every role changes system files. Uploads are staged in
    :data:`UPLOAD_STAGING_DIR` (see :func:`pin_upload_staging_dir`).
    """
    pin_upload_staging_dir()
    validated = []
    for name, data in hosts:
        settings = validate_host(name, data)
        plain = settings.model_dump(mode="json", exclude_none=True)
        extras = {key: value for key, value in data.items() if key.startswith("_")}
        validated.append((name, {"_sudo": True, **extras, **plain}))
    return validated


def settings_from_host_data(host_name: str, data: dict[str, Any]) -> HostSettings:
    """Re-read the typed settings inside a deploy, from ``host.data.dict()``.

    Example (deploys/full.py):
        settings = settings_from_host_data(host.name, host.data.dict())
    """
    known = set(HostSettings.model_fields)
    return validate_host(host_name, {k: v for k, v in data.items() if k in known})


def hosts_of_inventory(path: str | Path) -> list[tuple[str, HostSettings]]:
    """Every host of an inventory file, validated (InventoryError names host and field).

    Example:
        hosts_of_inventory("inventory/production.py")[0][1].mesh_ip  # -> "100.64.0.2"
    """
    import runpy

    found = [value for value in runpy.run_path(str(path)).values()
             if isinstance(value, list) and value and isinstance(value[0], tuple)]
    return [(name, settings_from_host_data(name, data)) for group in found
            for name, data in group]


def ensure_path(value: str | Path) -> Path:
    """Small helper for inventories: expand ``~`` in key paths."""
    return Path(value).expanduser()
