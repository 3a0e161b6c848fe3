"""The external scanner: nmap standing inside the public namespace, like the internet.

It targets only the VM's public addresses inside a namespace this run created. A scan from
there sees exactly what the VM's firewall lets through (unlike a QEMU `hostfwd` port on
127.0.0.1, which QEMU itself accepts, see STAGING.md). Two protocols, either IP family:

* **TCP** (``nmap -sS``, ``-6`` for IPv6): a port is *open* (SYN-ACK), *closed* (RST: the
  firewall let the SYN in, nothing listens) or *filtered* (no answer: dropped).
* **UDP** (``nmap -sU``): behind a default-drop firewall every port is *open|filtered*,
  since silence is all a drop gives back, and silence is also what a service that ignores
  stray datagrams gives back. What a UDP scan can prove is the opposite case: a port that
  *replied* — with data (*open*) or with an ICMP port-unreachable (*closed*) — got its
  datagram past the firewall. The judgement is therefore :func:`scan_replies`: the ports
  that replied, which on the hardened host must be none. The mesh's WireGuard port (UDP
  41641 on the VM) is no exception: UFW has no rule for it (the VM dials the operator, and
  the operator's answers come back as that flow's replies), and WireGuard never answers a
  datagram it cannot authenticate, so it stays silent even where it is reachable.

Every scan is bounded: ``--host-timeout`` (a scan that hits it raises: an unfinished scan
proves nothing), ``--max-retries`` and ``--min-rate`` (nmap sends two probes a port to a
host that answers nothing, so 65535 ports take 131070 probes: ~66 s at TCP's 2000/s, ~26 s
at UDP's 5000/s, measured between two namespaces).

Example:
    >>> scan("vos0-public", "203.0.113.10")
    [22]
    >>> scan_replies("vos0-public", "2001:db8::10", "udp")
    {}
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ElementTree

from staging.proc import StagingError, progress, run

# Probes a second, at the least. TCP keeps the rate its scans were always run at; UDP goes
# faster because a full UDP scan of a drop-all host costs nothing but its probes (no reply
# is awaited, no ICMP rate limit slows it), and a port that does answer is retried like any.
MIN_RATE = {"tcp": 2000, "udp": 5000}
SCAN_TYPE = {"tcp": "-sS", "udp": "-sU"}
HOST_TIMEOUT_SECONDS = 300
# States in which a port answered: its probe got past the firewall.
REPLY_STATES = ("open", "closed")


def nmap_command(netns: str, address: str, ports: str, protocol: str = "tcp") -> list[str]:
    """The nmap argv: SYN or UDP scan, IPv4 or IPv6 by the address, no ping, no DNS, bounded
    retries and time, XML on stdout.

    Example:
        >>> nmap_command("vos0-public", "2001:db8::10", "1-65535", "udp")[4:9]
        ['nmap', '-6', '-Pn', '-n', '-sU']
    """
    if protocol not in SCAN_TYPE:
        raise ValueError(f"protocol must be tcp or udp, not {protocol!r}")
    family = ["-6"] if ipaddress.ip_address(address).version == 6 else []
    return [
        "ip", "netns", "exec", netns,
        "nmap", *family, "-Pn", "-n", SCAN_TYPE[protocol], "-p", ports,
        "--min-rate", str(MIN_RATE[protocol]), "--max-retries", "2",
        "--host-timeout", f"{HOST_TIMEOUT_SECONDS}s",
        "-oX", "-", address,
    ]


def _scanned_host(xml_text: str) -> ElementTree.Element:
    """The one ``<host>`` of a finished scan; raises when nmap reached none or gave up."""
    host = ElementTree.fromstring(xml_text).find("host")
    if host is None:
        raise StagingError("nmap reported no host: the scan did not reach the target")
    if host.get("timedout") == "true":
        raise StagingError(
            f"nmap gave up on the host after {HOST_TIMEOUT_SECONDS} s (--host-timeout): "
            "the scan is unfinished and proves nothing; is the machine overloaded?")
    return host


def _port_range(ports: str) -> list[int]:
    """nmap's compact port list as numbers.

    Example:
        >>> _port_range("1-3,7")
        [1, 2, 3, 7]
    """
    numbers = []
    for part in ports.split(","):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers


def _collapsed_replies(host: ElementTree.Element, protocol: str) -> dict[int, str]:
    """Ports in a reply state that nmap folded into ``<extraports>`` (more than 25 alike),
    named by the ``ports`` of its ``<extrareasons>`` (nmap 7.80 and later)."""
    found: dict[int, str] = {}
    for extra in host.iter("extraports"):
        state = extra.get("state")
        if state not in REPLY_STATES:
            continue
        for reasons in extra.iter("extrareasons"):
            if reasons.get("proto", protocol) != protocol:
                continue
            if not reasons.get("ports"):
                raise StagingError(
                    f"nmap folded {extra.get('count')} {state} ports without naming them; "
                    "nmap 7.80 or later names them in its XML")
            found.update(dict.fromkeys(_port_range(reasons.get("ports")), state))
    return found


def parse_replies(xml_text: str, protocol: str) -> dict[int, str]:
    """Ports of `protocol` that replied (state open or closed), with their state, sorted.

    Example:
        >>> parse_replies('<nmaprun><host><ports><port protocol="udp" portid="9999">'
        ...               '<state state="open"/></port><port protocol="udp" portid="53">'
        ...               '<state state="open|filtered"/></port></ports></host></nmaprun>',
        ...               "udp")
        {9999: 'open'}
    """
    host = _scanned_host(xml_text)
    found = _collapsed_replies(host, protocol)
    for port in host.iter("port"):
        state = port.find("state")
        if port.get("protocol") == protocol and state is not None \
                and state.get("state") in REPLY_STATES:
            found[int(port.get("portid"))] = state.get("state")
    return dict(sorted(found.items()))


def parse_open_ports(xml_text: str) -> list[int]:
    """Open TCP port numbers from nmap's XML output, sorted.

    Example:
        >>> parse_open_ports('<nmaprun><host><ports><port protocol="tcp" portid="443">'
        ...                  '<state state="open"/></port></ports></host></nmaprun>')
        [443]
    """
    return [port for port, state in parse_replies(xml_text, "tcp").items() if state == "open"]


def _nmap(netns: str, address: str, ports: str, protocol: str) -> str:
    """Run one bounded scan from inside `netns`; its XML."""
    command = nmap_command(netns, address, ports, protocol)
    progress(f"scan: nmap {' '.join(command[5:-3])} {address} from namespace {netns}")
    return run(command, timeout=HOST_TIMEOUT_SECONDS + 120).stdout


def scan(netns: str, address: str, ports: str = "1-65535") -> list[int]:
    """Open TCP ports on `address` (IPv4 or IPv6) as seen from inside `netns`."""
    return parse_open_ports(_nmap(netns, address, ports, "tcp"))


def scan_replies(
    netns: str, address: str, protocol: str = "udp", ports: str = "1-65535"
) -> dict[int, str]:
    """Ports on `address` that replied to a `protocol` scan from inside `netns`, with their
    state ("open" or "closed"); every other port stayed silent (filtered, open|filtered).

    Example:
        scan_replies("vos0-public", "203.0.113.10", "udp")   # {} on the hardened host
    """
    return parse_replies(_nmap(netns, address, ports, protocol), protocol)
