#!/usr/bin/env bash
# Installs everything the toolkit and its tests need on a fresh Debian/Ubuntu machine:
# system packages (QEMU, debootstrap, WireGuard, nmap, PostgreSQL, GnuPG) and the .venv.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  make qemu-system-x86 qemu-utils debootstrap debian-archive-keyring e2fsprogs
  wireguard-tools wireguard-go iproute2 iptables nmap openssh-client rsync openssh-server
  postgresql postgresql-contrib gnupg chromium docker.io curl zstd
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "==> [bootstrap] installing system packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: installing system packages needs root; run: sudo $0" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "==> [bootstrap] creating .venv"
  python3 -m venv .venv
fi
echo "==> [bootstrap] installing Python packages into .venv"
.venv/bin/pip install -q --upgrade pip
# Two distributions: the app (./app, what the image ships) and the toolkit (`vos`, this
# directory), which depends on it. One command, so pip takes agent-vos-app from ./app and
# never looks for that name on an index.
.venv/bin/pip install -q -e ./app -e '.[test]'
touch .venv/.bootstrapped
echo "==> [bootstrap] done"
