"""The namespace policy's pure checks (names, deny list, contents) and how the plumber applies them; no I/O."""

from __future__ import annotations

import pytest

from restproxy_agent.config import AgentConfig
from restproxy_agent.netns_policy import DEFAULT_DENY, NetnsRefused, check_contents, check_name, parse_deny
from restproxy_agent.plumber import VifPlumber


@pytest.mark.parametrize("name", ["qvm-0123456789a", "vm1", "a", "_x", "VM_1.b-2", "n" * 64])
def test_safe_names_pass(name: str) -> None:
    check_name(name, DEFAULT_DENY)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "/proc/1/ns/net", "-x", ".hidden", "n" * 65, "a b", "a\nb", "é", "x;rm", None, 5, ["x"]],
)
def test_unsafe_names_are_refused(name: object) -> None:
    with pytest.raises(NetnsRefused):
        check_name(name, ())


@pytest.mark.parametrize("name", ["qdhcp-1234", "qrouter-x", "snat-y", "fip-z"])
def test_neutron_agents_namespaces_are_denied_by_default(name: str) -> None:
    with pytest.raises(NetnsRefused, match="netns_deny"):
        check_name(name, DEFAULT_DENY)
    check_name(name, ())  # only by the deny list


def test_the_deny_list_parses_commas_and_spaces_and_is_the_configured_default() -> None:
    assert parse_deny("qdhcp-*, lab-*  ops") == ("qdhcp-*", "lab-*", "ops")
    assert parse_deny("") == ()
    assert parse_deny(AgentConfig(token="t").netns_deny) == DEFAULT_DENY


def test_an_existing_namespace_may_hold_only_lo_and_our_vif_ends() -> None:
    check_contents("vm1", ["lo", "tpi0123456789a", "tpiabcdefabcde"])
    with pytest.raises(NetnsRefused, match=r"not ours \(eth0, qr-1\)"):
        check_contents("vm1", ["lo", "qr-1", "eth0", "tpi0123456789a"])
    check_contents("vm1", ["lo", "tpi0123456789a"], ours={"tpi0123456789a"})  # the same VM's
    with pytest.raises(NetnsRefused, match=r"not this VM's VIFs \(tpiabcdefabcde\)"):
        check_contents("vm1", ["lo", "tpi0123456789a", "tpiabcdefabcde"], ours={"tpi0123456789a"})


class _Unused:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"nothing may be touched before the check ({name})")


def test_the_plumber_refuses_before_making_anything() -> None:
    plumber = VifPlumber(_Unused(), _Unused(), None, "veth", 1500, 10.0, netns_deny=("lab-*",))  # type: ignore[arg-type]
    port = {"id": "0123456789abcdef", "mac_address": "fa:16:3e:00:00:01", "network_id": "n"}
    assert plumber.netns_of(port) == "qvm-0123456789a"
    assert plumber.netns_of(dict(port, **{"binding:profile": {"vif_type": "tap"}})) is None
    for netns in ("lab-1", "../etc", 7):
        bad = dict(port, **{"binding:profile": {"netns": netns}})
        with pytest.raises(NetnsRefused):
            plumber.check(bad)
        coro = plumber.plug(bad, 0.0)
        with pytest.raises(NetnsRefused):
            coro.send(None)
    plumber.check(dict(port, **{"binding:profile": {"vif_type": "tap", "netns": "lab-1"}}))  # a tap has no namespace
