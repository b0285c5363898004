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


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # RFC 6052, RFC 8215
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 §2.5.5.1, deprecated
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # RFC 5214: interface identifier 0000:5efe or 0200:5efe, then the IPv4


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries by a transition mechanism, which a host or relay on the way
    may turn back into IPv4 traffic: IPv4-mapped, IPv4-compatible, 6to4, Teredo (server and client), NAT64 and
    ISATAP."""
    found: list[ipaddress.IPv4Address] = []
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE and value > 1:  # not :: or ::1, which are themselves refused
        found.append(low32)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in _NAT64):
        found.append(low32)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(low32)
    return found


def refusal(address: str | Address, allowed: Iterable[Network] = ()) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    allowed = tuple(allowed)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        else:
            inners = list(embedded_ipv4(ip))
            for inner in inners:
                reason = refusal(inner, allowed)
                if reason:
                    return f"{ip} embeds {inner}, which is refused: {reason}"
            if inners:
                # Judged by what it embeds, whatever the Python version's own table says of the prefix (3.11.2
                # calls all of 2002::/16 private, later releases do not).
                return None
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
