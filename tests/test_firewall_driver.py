"""The agent's OpenFlow firewall driver against a real ovs-vswitchd (private sandbox): the member flows a zone's
ports share are there while any of its ports uses them, and only then."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from restproxy_agent.firewall.driver import STREAMING, OpenFlowFirewall
from restproxy_testing.ovs_sandbox import OvsSandbox
from tests.ovs_sandbox import ovs_sandbox as ovs_sandbox  # noqa: F401  (the module-scoped fixture)

BR = "br-fwd"
ZONE = 5
GROUPS: dict[str, Any] = {
    "g": {"id": "g", "members": ["10.5.0.1", "10.5.0.2"],
          "rules": [{"id": "r", "direction": "ingress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
                     "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": "g"}]},
}  # fmt: skip


def port(n: int) -> dict[str, Any]:
    return {"id": f"p{n}", "mac_address": f"fa:16:3e:00:00:{n:02x}", "fixed_ips": [{"ip_address": f"10.5.{n // 250}.{n % 250}"}],
            "port_security_enabled": True, "security_groups": ["g"], "device_owner": "compute:nova",
            "allowed_address_pairs": []}  # fmt: skip


@pytest_twisted.async_yield_fixture
async def firewall(ovs_sandbox: OvsSandbox) -> AsyncIterator[OpenFlowFirewall]:  # noqa: F811
    ovs_sandbox.vsctl("--may-exist", "add-br", BR, "--", "set", "Bridge", BR, "datapath_type=netdev", "protocols=OpenFlow13",
                      "fail_mode=secure")  # fmt: skip
    fw = OpenFlowFirewall(reactor, f"{ovs_sandbox.run_dir}/{BR}.mgmt")
    await fw.start()
    try:
        yield fw
    finally:
        fw.stop()
        ovs_sandbox.vsctl("del-br", BR)


async def member_sources(fw: OpenFlowFirewall) -> list[str]:
    """The member addresses the switch matches for ``ZONE`` (clause 1 of its conjunctions)."""
    stats = await fw.client.flow_stats()
    return sorted(s.match["ipv4_src"] for s in stats if s.match.get("reg6") == ZONE and "ipv4_src" in s.match)


@pytest_twisted.ensureDeferred
async def test_a_zones_member_flows_stay_while_any_port_uses_them(firewall: OpenFlowFirewall) -> None:
    fw = firewall
    await fw.apply_port(port(1), 40001, ZONE, GROUPS)
    await fw.flushed(f"zone:{ZONE}")
    assert await member_sources(fw) == ["10.5.0.1", "10.5.0.2"]
    sent = await fw.apply_port(port(2), 40002, ZONE, GROUPS)  # the zone serves g already: only the port's own flows
    assert sent == fw.flow_count("p2")
    await fw.remove_port("p1")
    await fw.flushed(f"zone:{ZONE}")
    assert await member_sources(fw) == ["10.5.0.1", "10.5.0.2"]  # p2 still uses them
    groups = {"g": {**GROUPS["g"], "members": ["10.5.0.2", "10.5.0.9"]}}
    await fw.members_changed("g", groups)
    assert await member_sources(fw) == ["10.5.0.2", "10.5.0.9"]
    await fw.remove_port("p2")
    await fw.flushed(f"zone:{ZONE}")
    assert await member_sources(fw) == []  # the last user gone: so are they
    assert fw.zone_specs == {}
    await fw.apply_port(port(3), 40003, ZONE, groups)  # and a new user brings them back
    await fw.flushed(f"zone:{ZONE}")
    assert await member_sources(fw) == ["10.5.0.2", "10.5.0.9"]


@pytest_twisted.ensureDeferred
async def test_a_large_batch_in_flight_says_new_ports_should_wait(firewall: OpenFlowFirewall) -> None:
    """``streaming`` (new OVS ports had better wait: they slow ovs-vswitchd's batch down) only while one is in flight."""
    fw = firewall
    await fw.apply_port(port(1), 40001, ZONE, GROUPS)
    assert not fw.streaming()
    one = fw.apply_port(port(2), 40002, ZONE, GROUPS)
    await deferLater(reactor, 0, lambda: None)  # (flushed in the next reactor turn)
    assert not fw.streaming()  # one port's flows: no
    await one
    burst = [fw.apply_port(port(n), 40000 + n, ZONE, GROUPS) for n in range(3, 200)]
    assert sum(fw.flow_count(f"p{n}") for n in range(3, 200)) >= STREAMING
    seen = False
    for _ in range(5):  # (flushed in one of the next reactor turns, once the previous batch has finished)
        await deferLater(reactor, 0, lambda: None)
        seen = seen or fw.streaming()
    assert seen  # 197 ports' flows in one batch: yes
    await gatherResults(burst)
    await deferLater(reactor, 0, lambda: None)  # (the batch's end is noted after its callers are told)
    assert not fw.streaming()


@pytest_twisted.ensureDeferred
async def test_nd_and_dhcp_requests_pass_only_from_the_ports_own_mac(firewall: OpenFlowFirewall, ovs_sandbox: OvsSandbox) -> None:  # noqa: F811
    """The shared ``OWN_MAC`` conjunction (clause 1: the port and its MAC; clause 2: the kinds) and the shared drops of
    DHCP replies and RAs (with a DHCP port's own exceptions), as the switch runs them."""
    for n in (1, 2):
        ovs_sandbox.vsctl("add-port", BR, f"fwd{n}", "--", "set", "Interface", f"fwd{n}", "type=internal", f"ofport_request={40000 + n}")
    try:
        await gatherResults([firewall.apply_port(port(n), 40000 + n, ZONE, GROUPS) for n in (1, 2)])

        def passes(spec: str) -> bool:
            out = ovs_sandbox.appctl("ofproto/trace", BR, spec)
            actions = next(line for line in out.splitlines() if line.startswith("Datapath actions:"))
            return actions.split(":", 1)[1].strip() != "drop"

        mine, other = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"
        for mac, expected in ((mine, True), (other, False)):
            ns = f"icmp6,in_port=40001,dl_src={mac},dl_dst=33:33:ff:00:00:01,icmpv6_type=135,nd_target=fe80::1"
            rs = f"icmp6,in_port=40001,dl_src={mac},dl_dst=33:33:00:00:00:02,icmpv6_type=133"
            dhcp = f"udp,in_port=40001,dl_src={mac},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67"
            dhcp6 = f"udp6,in_port=40001,dl_src={mac},dl_dst=33:33:00:01:00:02,ipv6_dst=ff02::1:2,udp_src=546,udp_dst=547"
            assert [passes(s) for s in (ns, rs, dhcp, dhcp6)] == [expected] * 4, mac
        # an RA or a DHCP server's reply from its own MAC: still dropped
        ra = f"icmp6,in_port=40001,dl_src={mine},dl_dst=33:33:00:00:00:01,icmpv6_type=134"
        offer = f"udp,in_port=40001,dl_src={mine},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.5.0.1,nw_dst=255.255.255.255,udp_src=67,udp_dst=68"
        assert not passes(ra) and not passes(offer)
        # a DHCP port's replies: from its own (MAC, IP) only
        dhcp_port = {**port(3), "device_owner": "network:dhcp"}
        ovs_sandbox.vsctl("add-port", BR, "fwd3", "--", "set", "Interface", "fwd3", "type=internal", "ofport_request=40003")
        await firewall.apply_port(dhcp_port, 40003, ZONE, GROUPS)
        for src, expected in (("10.5.0.3", True), ("10.5.0.4", False)):
            to = "dl_dst=ff:ff:ff:ff:ff:ff,nw_dst=255.255.255.255,udp_src=67,udp_dst=68"
            reply = f"udp,in_port=40003,dl_src=fa:16:3e:00:00:03,nw_src={src},{to}"
            assert passes(reply) == expected, src
    finally:
        for n in (1, 2, 3):
            ovs_sandbox.vsctl("--if-exists", "del-port", BR, f"fwd{n}")
