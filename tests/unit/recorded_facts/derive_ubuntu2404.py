"""Derive the Ubuntu 24.04 fact set from the recorded Debian 13 one (Ubuntu cannot boot here).

Only the facts that differ between a fresh Debian 13 VM and a fresh Ubuntu 24.04 cloud VPS
are changed, each to the value a stock `ubuntu-24.04-server-cloudimg-amd64` reports
(/etc/os-release; `systemctl is-enabled ssh.socket` = enabled; dpkg versions of noble's
release pocket, where fail2ban is 1.0.2-3, the build that crashes on Python 3.12).

    python tests/unit/recorded_facts/derive_ubuntu2404.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent

UBUNTU_RELEASE = {
    "name": "Ubuntu", "major": 24, "minor": 4,
    "release_meta": {
        "CODENAME": "noble", "ID": "ubuntu", "ID_LIKE": "debian", "NAME": "Ubuntu",
        "PRETTY_NAME": "Ubuntu 24.04.1 LTS", "VERSION": "24.04.1 LTS (Noble Numbat)",
        "VERSION_CODENAME": "noble", "VERSION_ID": "24.04", "UBUNTU_CODENAME": "noble",
        "HOME_URL": "https://www.ubuntu.com/",
    },
}
UBUNTU_PACKAGES = {
    "openssh-server": ["1:9.6p1-3ubuntu13.5"], "openssh-client": ["1:9.6p1-3ubuntu13.5"],
    "python3": ["3.12.3-0ubuntu2"], "systemd": ["255.4-1ubuntu8.4"], "sudo": ["1.9.15p5-3ubuntu5"],
    "ufw": ["0.36.2-6"], "unattended-upgrades": ["2.9.1+nmu4ubuntu1"],
}


def main() -> None:
    data = json.loads((HERE / "debian13.json").read_text())
    facts = data["facts"]
    facts["server.LinuxDistribution"] = [{"kwargs": {}, "value": UBUNTU_RELEASE}]
    packages = facts["deb.DebPackages"][0]["value"]
    for name in [name for name in packages if "deb13" in packages[name][0]]:
        del packages[name]  # Debian-only builds have no place on Ubuntu
    packages.update(UBUNTU_PACKAGES)
    facts["systemd.SystemdEnabled"] = [
        {"kwargs": {"services": ["ssh.socket"]}, "value": {"ssh.socket": True}},
    ]
    data["host"] = "ubuntu-24.04 (derived from the debian13 recording, see derive_ubuntu2404.py)"
    (HERE / "ubuntu2404.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
