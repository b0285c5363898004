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
