"""Which network addresses HTTP targets may reach: the SSRF guard, as pure functions.

A scheduler calls URLs that tenants give it, from inside your network. Without this, a tenant could make it
call the cloud metadata service (169.254.169.254), the database, or anything else only reachable from inside.
Checked when a schedule is stored (on the addresses its host resolves to then) and again by the worker on the
addresses it actually connects to, so a DNS answer that changes later (rebinding) is caught too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.1.0.0/16, fd00::/8"`` -> networks; raises ValueError naming a bad entry."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a CIDR network") from exc
    return tuple(networks)


def refusal(address: str | Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),  # includes 169.254.169.254, the cloud metadata service
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("shared address space", ip in ipaddress.ip_network("100.64.0.0/10")),
    ):
        if hit:
            return f"{ip} is a {reason} address"
    return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
