from __future__ import annotations

import pytest

from shared.netguard import LOOPBACK, is_ip_literal, parse_networks, refusal


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "fd00::1",
        "100.64.1.1",
        "240.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_internal_addresses_are_refused(address):
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert refusal(address) is None


def test_an_allow_list_opens_exactly_its_networks():
    allowed = parse_networks("10.1.0.0/16, 127.0.0.0/8")
    assert refusal("10.1.2.3", allowed) is None and refusal("127.0.0.1", allowed) is None
    assert refusal("10.2.0.1", allowed) is not None and refusal("::1", allowed) is not None
    assert refusal("::1", LOOPBACK) is None
    with pytest.raises(ValueError, match="not a CIDR"):
        parse_networks("10.0.0.0/33")


def test_ip_literals():
    assert is_ip_literal("127.0.0.1") and is_ip_literal("[::1]") and not is_ip_literal("example.com")


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
        "2002:c0a8:101::",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo whose client is 10.0.0.1 (stored inverted)
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "2600::5efe:a00:1",  # ISATAP interface id carrying 10.0.0.1
    ],
)
def test_ipv6_forms_embedding_an_internal_ipv4_are_refused(address):
    reason = refusal(address)
    assert reason is not None, address


def test_ipv6_embedding_a_public_ipv4_is_judged_by_that_address():
    assert refusal("2002:808:808::1") is None  # 6to4 of 8.8.8.8
    # Opening the embedded network opens its transition forms too, and nothing else.
    assert refusal("2002:a00:1::", parse_networks("10.0.0.0/8")) is None
    assert refusal("2002:a00:1::", parse_networks("192.168.0.0/16")) is not None
