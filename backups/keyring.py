"""The GPG keyrings, through python-gnupg: the host's holds the operator's PUBLIC key only.

Example:
    ring = Keyring("/var/lib/vos-backup/gnupg")
    fingerprint = ring.import_public_key(Path("operator.asc").read_text())
    ring.secret_fingerprints()   # [] on a healthy host
"""

from __future__ import annotations

import os
from pathlib import Path

import gnupg


class KeyringError(RuntimeError):
    """A key is missing, is of the wrong kind, or gpg refused it."""


class Keyring:
    """One GNUPGHOME (created 0700 when missing)."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.gpg = gnupg.GPG(gnupghome=str(self.home))

    @property
    def binary(self) -> str:
        """The gpg executable python-gnupg found (the streams call it directly)."""
        return self.gpg.gpgbinary

    def import_public_key(self, armored: str) -> str:
        """Import a public key and return its fingerprint; refuse secret key material.

        Example:
            ring.import_public_key(open("operator.pub.asc").read())  # -> "3F2A…"
        """
        if "PRIVATE KEY BLOCK" in armored:
            raise KeyringError("this is a SECRET key; give the host the operator's PUBLIC key "
                               "(gpg --export --armor FINGERPRINT)")
        result = self.gpg.import_keys(armored)
        if not result.fingerprints:
            raise KeyringError(f"gpg imported no key: {result.stderr.strip()[-300:]}")
        return result.fingerprints[0]

    def public_fingerprints(self) -> list[str]:
        return [key["fingerprint"] for key in self.gpg.list_keys()]

    def secret_fingerprints(self) -> list[str]:
        """Fingerprints of every secret key in this keyring (must be empty on the host)."""
        return [key["fingerprint"] for key in self.gpg.list_keys(secret=True)]

    def require_public_key(self, fingerprint: str) -> None:
        """Fail with the next step when the recipient's key is not in the keyring."""
        known = [f.upper() for f in self.public_fingerprints()]
        if fingerprint.upper().replace(" ", "") not in known:
            raise KeyringError(
                f"the operator's public key {fingerprint} is not in {self.home}; "
                "re-run the backups role (deploys/backups.py), which installs it")

    def encrypt_command(self, fingerprint: str) -> list[str]:
        """gpg argv that encrypts stdin to `fingerprint` on stdout (binary, no compression:
        pg_dump -Fc output is compressed already, a second pass only costs CPU)."""
        return [self.binary, "--homedir", str(self.home), "--batch", "--no-tty", "--quiet",
                "--trust-model", "always", "--compress-algo", "none",
                "--recipient", fingerprint, "--encrypt"]

    def decrypt_command(self) -> list[str]:
        """gpg argv that decrypts stdin to stdout with a secret key of this keyring."""
        return [self.binary, "--homedir", str(self.home), "--batch", "--no-tty", "--quiet",
                "--decrypt"]


def secret_keys_in(homes: list[Path]) -> dict[str, list[str]]:
    """Secret key fingerprints per GNUPGHOME that exists (a helper for `vos-backup keys`)."""
    found = {}
    for home in homes:
        if home.is_dir() and os.access(home, os.R_OK):
            secrets = Keyring(home).secret_fingerprints()
            if secrets:
                found[str(home)] = secrets
    return found
