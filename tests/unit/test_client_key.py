"""Per-client limits key an IPv6 client by its /64 (what one subscriber is given), an IPv4 client by its address."""

from __future__ import annotations

import pytest

from webapp.api.clients import client_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the IPv4 client
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),  # not an address (a unix socket's peer): as it is
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key
