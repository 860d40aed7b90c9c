"""IPAM rules as Quantum defines them: default gateway and pools, pool validation, address picking."""

from __future__ import annotations

import random

import pytest

from server_plugin import exceptions as exc
from server_plugin import ipam


def test_default_gateway_is_first_host() -> None:
    assert ipam.default_gateway("10.0.0.0/24") == "10.0.0.1"
    assert ipam.default_gateway("2001:db8::/64") == "2001:db8::1"


def test_default_pool_excludes_network_broadcast_and_gateway() -> None:
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.1") == [{"start": "10.0.0.2", "end": "10.0.0.254"}]


def test_gateway_in_the_middle_splits_the_pool() -> None:
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.100") == [
        {"start": "10.0.0.1", "end": "10.0.0.99"},
        {"start": "10.0.0.101", "end": "10.0.0.254"},
    ]


def test_no_gateway_gives_the_whole_range() -> None:
    assert ipam.default_pools("10.0.0.0/29", None) == [{"start": "10.0.0.1", "end": "10.0.0.6"}]


@pytest.mark.parametrize(
    ("pools", "gateway", "error"),
    [
        ([{"start": "10.0.0.9", "end": "10.0.0.2"}], "10.0.0.1", exc.InvalidAllocationPool),
        ([{"start": "fd00::2", "end": "fd00::9"}], "10.0.0.1", exc.InvalidAllocationPool),
        ([{"start": "10.0.0.0", "end": "10.0.0.9"}], "10.0.0.1", exc.OutOfBoundsAllocationPool),
        ([{"start": "10.0.0.2", "end": "10.0.0.255"}], "10.0.0.1", exc.OutOfBoundsAllocationPool),
        (
            [{"start": "10.0.0.2", "end": "10.0.0.20"}, {"start": "10.0.0.20", "end": "10.0.0.30"}],
            "10.0.0.1",
            exc.OverlappingAllocationPools,
        ),
        ([{"start": "10.0.0.2", "end": "10.0.0.20"}], "10.0.0.5", exc.GatewayConflictWithAllocationPools),
    ],
)
def test_invalid_pools_are_refused_with_quantum_errors(pools: list[dict[str, str]], gateway: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        ipam.validate_pools("10.0.0.0/24", 4, pools, gateway)


def test_valid_disjoint_pools_pass() -> None:
    ipam.validate_pools(
        "10.0.0.0/24", 4, [{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.20", "end": "10.0.0.30"}], "10.0.0.1"
    )


def test_ip_validity_for_subnet() -> None:
    assert ipam.ip_is_valid_for_subnet("10.0.0.0/24", "10.0.0.5")
    assert not ipam.ip_is_valid_for_subnet("10.0.0.0/24", "10.0.0.0")
    assert not ipam.ip_is_valid_for_subnet("10.0.0.0/24", "10.0.0.255")
    assert not ipam.ip_is_valid_for_subnet("10.0.0.0/24", "10.0.1.5")
    assert ipam.ip_is_valid_for_subnet("2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff")


def test_pick_free_ip_skips_used_and_reports_full() -> None:
    pools = [("10.0.0.2", "10.0.0.4")]
    assert ipam.pick_free_ip(pools, {"10.0.0.2", "10.0.0.3"}) == "10.0.0.4"
    assert ipam.pick_free_ip(pools, {"10.0.0.2", "10.0.0.3", "10.0.0.4"}) is None


def test_random_candidates_stay_inside_the_pools() -> None:
    pools = [("10.0.0.2", "10.0.0.3"), ("2001:db8::10", "2001:db8::10")][:1]
    rng = random.Random(7)
    assert set(ipam.random_candidates(pools, 50, rng)) == {"10.0.0.2", "10.0.0.3"}
    big = [("2001:db8::2", "2001:db8::ffff:ffff:ffff:fffe")]
    for candidate in ipam.random_candidates(big, 20, rng):
        assert ipam.in_pools(big, candidate)


def test_random_mac_keeps_the_base_prefix() -> None:
    rng = random.Random(1)
    macs = {ipam.random_mac("fa:16:3e:00:00:00", rng) for _ in range(100)}
    assert all(m.startswith("fa:16:3e:") and len(m) == 17 for m in macs)
    assert len(macs) == 100
    assert ipam.random_mac("fa:16:3e:aa:00:00", rng).startswith("fa:16:3e:aa:")
