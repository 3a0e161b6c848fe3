"""The external scanner: nmap standing inside the public namespace, like the internet.

It targets only the VM's public address inside a namespace this run created. A SYN scan
from there sees exactly what the VM's firewall lets through (unlike a QEMU `hostfwd` port on
127.0.0.1, which QEMU itself accepts, see STAGING.md).

Example:
    >>> scan("vos0-public", "203.0.113.10")
    [22]
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from staging.proc import StagingError, progress, run


def nmap_command(netns: str, address: str, ports: str) -> list[str]:
    """The nmap argv: SYN scan, no ping, no DNS, bounded retries, XML on stdout."""
    return [
        "ip", "netns", "exec", netns,
        "nmap", "-Pn", "-n", "-sS", "-p", ports,
        "--min-rate", "2000", "--max-retries", "2", "--host-timeout", "300s",
        "-oX", "-", address,
    ]


def parse_open_ports(xml_text: str) -> list[int]:
    """Open TCP port numbers from nmap's XML output, sorted.

    Example:
        >>> parse_open_ports('<nmaprun><host><ports><port protocol="tcp" portid="443">'
        ...                  '<state state="open"/></port></ports></host></nmaprun>')
        [443]
    """
    root = ElementTree.fromstring(xml_text)
    if root.find("host") is None:
        raise StagingError("nmap reported no host: the scan did not reach the target")
    found = []
    for port in root.iter("port"):
        state = port.find("state")
        if port.get("protocol") == "tcp" and state is not None and state.get("state") == "open":
            found.append(int(port.get("portid")))
    return sorted(found)


def scan(netns: str, address: str, ports: str = "1-65535") -> list[int]:
    """Open TCP ports on `address` as seen from inside `netns`."""
    progress(f"scan: nmap -sS -p {ports} {address} from namespace {netns}")
    result = run(nmap_command(netns, address, ports), timeout=420)
    return parse_open_ports(result.stdout)
