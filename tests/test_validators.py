"""Attribute validators: what Quantum accepts, canonicalises and refuses."""

from __future__ import annotations

import pytest

from server_plugin import validators as v


@pytest.mark.parametrize("value", ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/33", " 10.0.0.0/24", "x/24", "10.0.0.0/a", None, 5])
def test_bad_cidrs(value: object) -> None:
    with pytest.raises(v.ValidationError):
        v.cidr(value)


def test_cidr_is_canonical() -> None:
    assert v.cidr("2001:DB8::/64") == "2001:db8::/64"
    assert v.cidr("10.0.0.0/24") == "10.0.0.0/24"


@pytest.mark.parametrize("value", ["10.1", "0x0a000001", "10.0.0.256", "", " 10.0.0.1", "fe80::1%eth0", 1])
def test_bad_ips(value: object) -> None:
    with pytest.raises(v.ValidationError):
        v.ip_address(value)


@pytest.mark.parametrize("value", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "fa:16:3e:00:00", "zz:16:3e:00:00:01", "", 7])
def test_bad_macs(value: object) -> None:
    with pytest.raises(v.ValidationError):
        v.mac_address(value)


def test_mac_is_lowercase_colon_form() -> None:
    assert v.mac_address("FA-16-3E-AA-BB-CC") == "fa:16:3e:aa:bb:cc"


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("false", False), ("1", True), (0, False), ("True", True)])
def test_boolean_conversion(value: object, expected: bool) -> None:
    assert v.boolean(value) is expected


@pytest.mark.parametrize("value", ["yes", 2, None, [], "tru"])
def test_boolean_refuses_other_values(value: object) -> None:
    with pytest.raises(v.ValidationError):
        v.boolean(value)


def test_fixed_ips_refuses_duplicates_and_unknown_keys() -> None:
    with pytest.raises(v.ValidationError):
        v.fixed_ips([{"ip_address": "10.0.0.2"}, {"ip_address": "10.0.0.2"}])
    with pytest.raises(v.ValidationError):
        v.fixed_ips([{"port": "x"}])
    assert v.fixed_ips([{"subnet_id": "A" * 8 + "-" + "b" * 4 + "-" + "c" * 4 + "-" + "d" * 4 + "-" + "e" * 12}]) == [
        {"subnet_id": "a" * 8 + "-" + "b" * 4 + "-" + "c" * 4 + "-" + "d" * 4 + "-" + "e" * 12}
    ]


def test_string_length_limit() -> None:
    assert v.string()("x" * 255) == "x" * 255
    with pytest.raises(v.ValidationError):
        v.string()("x" * 256)
