"""The staging base image: Debian 13 (trixie) shaped like a fresh cloud VPS.

Built once with `debootstrap` into a directory tree, customised in place, then packed into a
raw ext4 disk with `mke2fs -d` (no loop mount, no root-only kernel features beyond chroot).
The result is cached under ``~/.cache/vos/images/<recipe-hash>/`` so every later boot (and
every CI run on the same machine) reuses it; each VM boots from its own qcow2 overlay.

What makes it "a fresh VPS" rather than a hardened host (so the hardening has real work):
a ``deploy`` user with passwordless sudo, root login by key allowed, password authentication
on, a root password set (as some providers e-mail one), X11 forwarding on (Debian default).

Per-boot data (the operator's public key, the public addresses) is not baked in: it rides on
the kernel command line (``vos.authorized_key=<base64>``, ``vos.public=<addr/len>``,
``vos.public6=<addr/len>``) and a small unit, ``vos-boot-config.service``, applies it before
sshd and networkd start. One image therefore serves every state dir and every slot.

Example:
    >>> image = ensure_base_image()          # builds on first call (~2-3 min), then cached
    >>> image.disk, image.kernel, image.initrd
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from staging.proc import progress, run

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
DISK_SIZE = "10G"
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "dbus",
    "openssh-server",
    "openssh-sftp-server",
    "sudo",
    "python3",
    "iproute2",
    "procps",
    "netbase",
    "ca-certificates",
    "wireguard-tools",
    # An Ubuntu 24.04 cloud image has these already (ubuntu-server's seeds); without them the
    # deploy's package steps (the backups role above all: perl under postgresql-client-common,
    # gnupg) would pay minutes of dpkg under TCG that a real VPS never pays.
    "perl",
    "gnupg",
    "rsync",
    "cron",
)
# Fixed MACs: each VM sits alone on its own public segment, so they never collide, and the
# image can match NICs by MAC without knowing which slot it will boot in.
EGRESS_MAC = "52:54:00:12:34:01"
PUBLIC_MAC = "52:54:00:12:34:02"
DEPLOY_USER = "deploy"
# Bump when the customisation below changes in a way the file contents do not capture.
RECIPE_VERSION = 1

BOOT_CONFIG_SCRIPT = r"""#!/bin/sh
# Applies per-boot settings passed by the operator on the kernel command line:
#   vos.authorized_key=<base64 of an OpenSSH public key line>  -> deploy and root keys
#   vos.public=<address/prefix>                                 -> the public NIC's IPv4
#   vos.public6=<address/prefix>                                -> the public NIC's IPv6
# Without vos.authorized_key nobody can log in by key: the boot wait fails and says so.
set -eu
addresses=""
for word in $(cat /proc/cmdline); do
  case "$word" in
    vos.authorized_key=*)
      key=$(printf '%s' "${word#vos.authorized_key=}" | base64 -d)
      for home in /root /home/DEPLOY_USER; do
        owner=$(stat -c %U "$home")
        install -d -m 0700 -o "$owner" -g "$owner" "$home/.ssh"
        if ! grep -qxF "$key" "$home/.ssh/authorized_keys" 2>/dev/null; then
          printf '%s\n' "$key" >> "$home/.ssh/authorized_keys"
        fi
        chown "$owner:$owner" "$home/.ssh/authorized_keys"
        chmod 0600 "$home/.ssh/authorized_keys"
      done
      ;;
    vos.public=*|vos.public6=*)
      addresses="${addresses}Address=${word#*=}
"
      ;;
  esac
done
# One file for both families: networkd applies one .network per link. Link-local fe80:: on,
# as on any VPS's public NIC (its neighbours speak NDP from there); router advertisements
# off: the addresses are static, and the hardening turns accept_ra off anyway.
if [ -n "$addresses" ]; then
  install -d /run/systemd/network
  cat > /run/systemd/network/20-public.network <<EOF
[Match]
MACAddress=PUBLIC_MAC

[Network]
${addresses}LinkLocalAddressing=ipv6
IPv6AcceptRA=no
EOF
fi
"""

BOOT_CONFIG_UNIT = """[Unit]
Description=Apply the operator's per-boot settings (SSH key, public address) from the cmdline
DefaultDependencies=no
After=local-fs.target
Before=systemd-networkd.service ssh.service
ConditionPathExists=/proc/cmdline

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vos-boot-config
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
"""

EGRESS_NETWORK = f"""[Match]
MACAddress={EGRESS_MAC}

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
"""

APT_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# Ubuntu builds systemd-resolved without LLMNR/mDNS; Debian answers LLMNR on 0.0.0.0:5355.
# The staging host mimics the Ubuntu VPS, so they are off here as well.
# Ubuntu's minimal cloud images ship dpkg excludes like these (`unminimize` undoes them);
# under TCG every documentation file and man-db trigger of a package install costs time the
# deploy's steps do not need. unsafe-io: dpkg skips its per-file fsyncs (the disk is a
# throwaway overlay); it changes nothing the checks judge.
DPKG_SPEED = """# vos staging: what Ubuntu's minimal cloud images exclude, and no per-file fsync
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
force-unsafe-io
"""

RESOLVED_CONF = """[Resolve]
LLMNR=no
MulticastDNS=no
"""

# A fresh cloud image: password logins on, root by key. The hardening turns all of it off.
CLOUD_SSHD = """# As shipped by many cloud images; the hardening role replaces this.
PasswordAuthentication yes
PermitRootLogin prohibit-password
"""


@dataclass(frozen=True)
class BaseImage:
    """A built, cached base image: a raw ext4 disk plus the kernel and initrd to boot it."""

    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    host_keys: tuple[str, ...]  # "ssh-ed25519 AAAA…" lines, pinned in known_hosts


def cache_root() -> Path:
    """Where images are cached: ``$VOS_IMAGE_CACHE`` or ``~/.cache/vos/images``."""
    configured = os.environ.get("VOS_IMAGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vos" / "images"


def recipe_text() -> str:
    """Everything that shapes the image, as one string; its hash keys the cache."""
    return json.dumps(
        {
            "version": RECIPE_VERSION,
            "suite": SUITE,
            "mirror": MIRROR,
            "size": DISK_SIZE,
            "packages": PACKAGES,
            "deploy_user": DEPLOY_USER,
            "files": [
                BOOT_CONFIG_SCRIPT,
                BOOT_CONFIG_UNIT,
                EGRESS_NETWORK,
                APT_SOURCES,
                CLOUD_SSHD,
                RESOLVED_CONF,
                DPKG_SPEED,
            ],
        },
        sort_keys=True,
    )


def recipe_hash() -> str:
    """Short hash of :func:`recipe_text`, e.g. ``'3f9a0c1d2e4b'``."""
    return hashlib.sha256(recipe_text().encode()).hexdigest()[:12]


def ensure_base_image(cache: Path | None = None) -> BaseImage:
    """Return the cached image for the current recipe, building it first if missing.

    Concurrent callers (two test sessions) serialise on a lock file; the second one finds the
    image the first one built.
    """
    cache = cache or cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / recipe_hash()
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "image.json").exists():
            _build(target)
        else:
            progress(f"image: reusing cached base image {target}")
    return _load(target)


def _load(target: Path) -> BaseImage:
    meta = json.loads((target / "image.json").read_text())
    return BaseImage(
        directory=target,
        disk=target / "base.raw",
        kernel=target / "vmlinuz",
        initrd=target / "initrd.img",
        host_keys=tuple(meta["host_keys"]),
    )


def _build(target: Path) -> None:
    """debootstrap → customise → mke2fs -d, in a scratch dir renamed into place at the end."""
    scratch = target.with_name(f"{target.name}.build-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    rootfs = scratch / "rootfs"
    rootfs.mkdir(parents=True)
    started = time.monotonic()
    try:
        progress(f"image: debootstrap {SUITE} from {MIRROR} (takes ~2-3 min)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            timeout=1200,
        )
        progress("image: customising the tree (user, sshd, networkd, fresh host keys)")
        _customise(rootfs)
        host_keys = tuple(
            p.read_text().split()[0] + " " + p.read_text().split()[1]
            for p in sorted((rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))
        )
        kernel = sorted((rootfs / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((rootfs / "boot").glob("initrd.img-*"))[-1]
        shutil.copy2(kernel, scratch / "vmlinuz")
        shutil.copy2(initrd, scratch / "initrd.img")
        progress(f"image: packing the tree into a {DISK_SIZE} ext4 disk (mke2fs -d)")
        disk = scratch / "base.raw"
        run(
            ["mke2fs", "-q", "-t", "ext4", "-L", "vos-root", "-d", str(rootfs), str(disk),
             DISK_SIZE],
            timeout=600,
        )
        disk.chmod(0o444)  # overlays read it; nothing may write it
        shutil.rmtree(rootfs)
        (scratch / "image.json").write_text(
            json.dumps(
                {
                    "recipe_hash": target.name,
                    "recipe": json.loads(recipe_text()),
                    "host_keys": host_keys,
                    "built_seconds": round(time.monotonic() - started, 1),
                },
                indent=2,
            )
        )
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        progress(f"image: built {target} in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write(rootfs: Path, relative: str, content: str, mode: int = 0o644) -> None:
    path = rootfs / relative.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def _chroot(rootfs: Path, *command: str, stdin: str | None = None) -> None:
    run(["chroot", str(rootfs), *command], input=stdin, timeout=120)


def boot_config_script() -> str:
    """The boot script as the image carries it: the deploy user and the public NIC's MAC
    filled in.

    Example:
        >>> "MACAddress=52:54:00:12:34:02" in boot_config_script()
        True
    """
    return BOOT_CONFIG_SCRIPT.replace("DEPLOY_USER", DEPLOY_USER).replace(
        "PUBLIC_MAC", PUBLIC_MAC
    )


def _customise(rootfs: Path) -> None:
    """Make the debootstrapped tree boot as a cloud VPS would."""
    _write(rootfs, "/etc/hostname", "vos-staging\n")
    _write(rootfs, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 vos-staging\n")
    _write(rootfs, "/etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    _write(rootfs, "/etc/machine-id", "")  # generated on first boot of each overlay
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    _write(rootfs, "/etc/apt/sources.list.d/debian.sources", APT_SOURCES)
    _write(rootfs, "/etc/systemd/network/10-egress.network", EGRESS_NETWORK)
    _write(rootfs, "/usr/local/sbin/vos-boot-config", boot_config_script(), 0o755)
    _write(rootfs, "/etc/systemd/system/vos-boot-config.service", BOOT_CONFIG_UNIT)
    _write(rootfs, "/etc/ssh/sshd_config.d/50-cloud-init.conf", CLOUD_SSHD)
    _write(rootfs, "/etc/systemd/resolved.conf.d/50-like-ubuntu.conf", RESOLVED_CONF)
    _write(rootfs, "/etc/dpkg/dpkg.cfg.d/50-vos-staging", DPKG_SPEED)
    _chroot(rootfs, "systemctl", "enable", "systemd-networkd", "systemd-resolved",
            "ssh", "vos-boot-config")
    _chroot(rootfs, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo",
            DEPLOY_USER)
    _write(rootfs, f"/etc/sudoers.d/90-{DEPLOY_USER}",
           f"{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    # A random root password nobody knows, as a provider would set: the hardening locks it.
    _chroot(rootfs, "chpasswd", stdin=f"root:{secrets.token_urlsafe(24)}\n")
    for old in (rootfs / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    _chroot(rootfs, "ssh-keygen", "-A")
    (rootfs / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
