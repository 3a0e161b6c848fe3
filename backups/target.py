"""The off-host backup target, reached with rsync: a local directory or `user@host:/path`.

On the host the target is another machine (rsync over SSH with the backup user's own key
and a pinned known_hosts file). A plain absolute path is also a target: tests use one, and
an operator may use a mounted disk.

Example:
    target = Target("backup@203.0.113.7:/srv/vos-backups", ssh_key="/var/lib/vos-backup/id_ed25519")
    target.names()                   # files in the target directory
    target.push([dump, manifest])    # both land, or the run fails
    target.delete(["vos-backup-20261101T031700Z.dump.gpg"])
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

RSYNC_TIMEOUT_SECONDS = 3600


class TargetError(RuntimeError):
    """rsync failed; the message carries rsync's own words and what to check."""


@dataclass(frozen=True)
class Target:
    spec: str  # "/abs/dir" or "user@host:/abs/dir"
    ssh_key: str | None = None
    known_hosts_file: str | None = None
    ssh_port: int = 22

    @property
    def remote(self) -> bool:
        return ":" in self.spec and not self.spec.startswith("/")

    @property
    def url(self) -> str:
        """The directory spec with exactly one trailing slash (rsync: "contents of")."""
        return self.spec.rstrip("/") + "/"

    def _ssh_args(self) -> list[str]:
        if not self.remote:
            return []
        ssh = ["ssh", "-p", str(self.ssh_port), "-o", "BatchMode=yes",
               "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=30"]
        if self.ssh_key:
            ssh += ["-i", self.ssh_key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file:
            ssh += ["-o", f"UserKnownHostsFile={self.known_hosts_file}",
                    "-o", "StrictHostKeyChecking=yes"]
        else:  # no pinned key: trust on first use, refuse a changed key afterwards
            ssh += ["-o", "StrictHostKeyChecking=accept-new"]
        return ["-e", shlex.join(ssh)]

    def _rsync(self, *args: str, timeout: float = RSYNC_TIMEOUT_SECONDS) -> str:
        cmd = ["rsync", *self._ssh_args(), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetError(f"rsync to {self.spec} took longer than {timeout:.0f} s; check "
                              "the network path to the backup target") from None
        if proc.returncode != 0:
            raise TargetError(
                f"rsync {args[0]} … {self.spec} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-500:]} — check that the target is reachable and "
                "that the host's backup key is authorised there")
        return proc.stdout

    def names(self) -> list[str]:
        """File names in the target directory (an absent local directory lists as empty)."""
        if not self.remote and not Path(self.spec).is_dir():
            return []
        out = self._rsync("--list-only", "--no-recursive", "--dirs", self.url, timeout=120)
        names = []
        for line in out.splitlines():
            fields = line.split(maxsplit=4)
            if len(fields) == 5 and line.startswith("-"):
                names.append(fields[4])
        return names

    def push(self, files: list[Path]) -> None:
        """Copy files into the target; each lands under its own name only when complete
        (rsync writes a temporary name and renames; --delay-updates renames them together
        at the end). Files end up 0600 in a 0700 directory."""
        self._rsync("--times", "--delay-updates", "--chmod=D0700,F0600", "--mkpath",
                    *[str(f) for f in files], self.url)

    def fetch(self, names: list[str], into: Path) -> list[Path]:
        """Copy the named files from the target into a local directory."""
        sources = [self.url + name for name in names]
        if self.remote:
            host, _, path = self.spec.partition(":")
            sources = [f"{host}:{path.rstrip('/')}/{name}" for name in names]
        self._rsync("--times", "--chmod=F0600", *sources, str(into) + "/")
        return [into / name for name in names]

    def delete(self, names: list[str]) -> None:
        """Delete exactly these files in the target (rsync alone: an empty source with
        --delete, where every file NOT named is excluded and thus protected)."""
        if not names:
            return
        with tempfile.TemporaryDirectory(prefix="vos-backup-empty-") as empty:
            rules = [f"--include=/{name}" for name in names]
            self._rsync("--recursive", "--delete", *rules, "--exclude=*",
                        empty + "/", self.url, timeout=600)
