"""The flow compiler (pure): what a port's flows admit and refuse, read off the flows themselves."""

from __future__ import annotations

from typing import Any

from restproxy_agent.firewall import compiler, encode
from restproxy_agent.firewall.flows import (
    ACCEPT_OR_INGRESS,
    BASE_EGRESS,
    BASE_INGRESS,
    DISPATCH,
    RULES_EGRESS,
    RULES_INGRESS,
    Flow,
)

MAC = "fa:16:3e:00:00:01"


def info(**fields: Any) -> compiler.PortInfo:
    port = {"id": "p1", "mac_address": MAC, "fixed_ips": [{"ip_address": "10.0.0.5"}], "port_security_enabled": True,
            "security_groups": ["g"], **fields}  # fmt: skip
    return compiler.port_info(port, ofport=7, zone=3)


def rule(direction: str = "ingress", ethertype: str = "IPv4", **fields: Any) -> dict[str, Any]:
    base = {"id": "r", "direction": direction, "ethertype": ethertype, "protocol": None, "port_range_min": None,
            "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}  # fmt: skip
    return {**base, **fields}


def groups(*rules: dict[str, Any], members: tuple[str, ...] = ("10.0.0.5",), **others: Any) -> dict[str, Any]:
    return {"g": {"id": "g", "rules": list(rules), "members": list(members)}, **others}


def in_table(flows: list[Flow], table: int) -> list[dict[str, Any]]:
    return [dict(f.match) for f in flows if f.table == table]


def test_port_range_masks_cover_exactly_the_range() -> None:
    for low, high in [(22, 22), (1000, 1999), (1, 65535), (80, 81), (0, 0), (65535, 65535), (1023, 1025)]:
        covered = {p for v, m in compiler.port_range_masks(low, high) for p in range(65536) if p & m == v}
        assert covered == set(range(low, high + 1)), (low, high)


def test_egress_only_from_the_ports_mac_and_ips_and_arp_only_for_them() -> None:
    flows = compiler.port_flows(info(), groups())
    egress = in_table(flows, BASE_EGRESS)
    ip_from = {(m["eth_src"], m["ipv4_src"]) for m in egress if m.get("eth_type") == 0x0800 and "ipv4_src" in m}
    assert ip_from == {(MAC, "10.0.0.5")}
    arp = [m for m in egress if m.get("eth_type") == 0x0806]
    assert arp == [{"reg5": 7, "eth_type": 0x0806, "eth_src": MAC, "arp_sha": MAC, "arp_spa": "10.0.0.5"}]
    ipv6_from = {m["ipv6_src"] for m in egress if "ipv6_src" in m}
    assert ipv6_from == {compiler.link_local(MAC)}  # the link-local of its MAC, nothing else
    # everything else from the port: the table's default drop
    assert any(f.table == BASE_EGRESS and f.match == () and f.actions == () for f in compiler.static_flows())


def test_allowed_address_pairs_widen_exactly_the_pairs() -> None:
    pairs = [{"ip_address": "10.0.9.0/24", "mac_address": "fa:16:3e:00:00:99"}, {"ip_address": "10.0.0.77", "mac_address": MAC}]
    egress = in_table(compiler.port_flows(info(allowed_address_pairs=pairs), groups()), BASE_EGRESS)
    ip_from = {(m["eth_src"], m["ipv4_src"]) for m in egress if "ipv4_src" in m}
    assert ip_from == {(MAC, "10.0.0.5"), (MAC, "10.0.0.77"), ("fa:16:3e:00:00:99", ("10.0.9.0", "255.255.255.0"))}
    ingress_macs = {m["eth_dst"] for m in in_table(compiler.port_flows(info(allowed_address_pairs=pairs), groups()), ACCEPT_OR_INGRESS)}
    assert ingress_macs == {MAC, "fa:16:3e:00:00:99"}


def test_dhcp_and_router_advertisements_out_only_from_their_owners() -> None:
    """Every port's DHCP server replies and RAs are dropped by shared flows; a DHCP port gets its replies back from its
    own (MAC, address) pairs, a router port its RAs, above those drops and into conntrack like its other IP."""
    drops = {(dict(f.match).get("udp_src") or 0, dict(f.match).get("icmpv6_type") or 0)
             for f in compiler.static_flows() if f.table == BASE_EGRESS and f.priority == 90 and not f.actions}  # fmt: skip
    assert drops == {(67, 0), (547, 0), (0, 134)}

    def allowed(owner: str) -> set[tuple[int, int, str, Any]]:
        flows = compiler.port_flows(info(device_owner=owner), groups())
        return {(m.get("udp_src") or 0, m.get("icmpv6_type") or 0, m["eth_src"], m.get("ipv4_src") or m.get("ipv6_src"))
                for f in flows if f.table == BASE_EGRESS and f.priority == 91 and f.actions == (("ct", False, RULES_EGRESS),)
                for m in [dict(f.match)] if m["reg5"] == 7}  # fmt: skip

    link_local = compiler.link_local(MAC)
    assert allowed("compute:nova") == set()
    assert allowed("network:dhcp") == {(67, 0, MAC, "10.0.0.5"), (547, 0, MAC, link_local)}
    assert allowed("network:router_interface") == {(0, 134, MAC, link_local)}
    assert len(compiler.port_flows(info(), groups())) < len(compiler.port_flows(info(device_owner="network:dhcp"), groups()))


def test_no_groups_means_no_rule_flows_and_ingress_is_denied() -> None:
    flows = compiler.port_flows(info(security_groups=[]), {})
    assert in_table(flows, RULES_INGRESS) == [] and in_table(flows, RULES_EGRESS) == []
    assert any(f.table == RULES_INGRESS and f.match == () and f.actions == () for f in compiler.static_flows())


def test_a_tcp_22_rule_from_a_cidr() -> None:
    r = rule(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="192.168.5.0/24")
    flows = [f for f in compiler.port_flows(info(), groups(r)) if f.table == RULES_INGRESS]
    assert len(flows) == 1
    m = dict(flows[0].match)
    assert m["ip_proto"] == 6 and m["tcp_dst"] == 22 and m["ipv4_src"] == ("192.168.5.0", "255.255.255.0") and m["reg5"] == 7
    assert flows[0].actions == (("ct", True, None), ("output", 7))


def test_remote_group_rules_are_conjunctions_with_the_zones_member_flows() -> None:
    r = rule(protocol="tcp", port_range_min=22, port_range_max=22, remote_group_id="h")
    g = groups(r, h={"id": "h", "rules": [], "members": ["10.0.0.8", "10.0.1.0/24", "fd00::8"]})
    ids = compiler.ConjIds()
    port = info()
    clause2 = [f for f in compiler.port_flows(port, g, ids) if f.table == RULES_INGRESS]
    spec = compiler.ConjSpec("g", "h", "ingress", "IPv4")
    n = ids(spec)
    assert [(dict(f.match)["tcp_dst"], f.actions) for f in clause2] == [(22, (("conj", n, 2, 2),))]
    assert compiler.conj_specs(port, g) == {spec}
    members = compiler.member_flows(3, {spec: n}, g)
    assert sorted(str(dict(f.match)["ipv4_src"]) for f in members) == sorted(["10.0.0.8", str(("10.0.1.0", "255.255.255.0"))])
    assert all(dict(f.match)["reg6"] == 3 and f.actions == (("conj", n, 1, 2),) for f in members)
    (done,) = compiler.conj_flows(n, spec)
    assert dict(done.match) == {"conj_id": n, "eth_type": 0x0800} and done.actions[0] == ("ct", True, None)
    assert compiler.member_flows(3, {spec: n}, {"g": g["g"]}) == []  # an unknown remote group admits nothing


def test_conjunction_ids_are_stable_across_runs_and_merge_on_shared_entries() -> None:
    a, b = compiler.ConjSpec("g", "h", "ingress", "IPv4"), compiler.ConjSpec("g2", "h", "ingress", "IPv4")
    assert compiler.ConjIds()(a) == compiler.ConjIds()(a) != compiler.ConjIds()(b)
    ids = compiler.ConjIds()
    (flow,) = compiler.member_flows(1, {a: ids(a), b: ids(b)}, {"h": {"members": ["10.0.0.8"]}})
    assert sorted(flow.actions) == sorted([("conj", ids(a), 1, 2), ("conj", ids(b), 1, 2)])  # one entry, both conjunctions


def test_egress_rules_any_protocol_and_icmp_type_code_and_ipv6_icmp() -> None:
    rules = [rule("egress"), rule("ingress", protocol="icmp", port_range_min=8, port_range_max=0),
             rule("ingress", "IPv6", protocol="icmp", port_range_min=128), rule("ingress", protocol="47")]  # fmt: skip
    flows = compiler.port_flows(info(), groups(*rules))
    assert {tuple(sorted(m)) for m in in_table(flows, RULES_EGRESS)} == {("ct_state", "eth_type", "reg5")}
    ingress = in_table(flows, RULES_INGRESS)
    assert {"icmpv4_type": 8, "icmpv4_code": 0}.items() <= next(m for m in ingress if m.get("ip_proto") == 1).items()
    assert next(m for m in ingress if m.get("eth_type") == 0x86DD)["icmpv6_type"] == 128
    assert any(m.get("ip_proto") == 47 for m in ingress)


def test_port_security_disabled_is_an_accept_path() -> None:
    flows = compiler.port_flows(info(port_security_enabled=False, security_groups=[]), {})
    assert {f.table for f in flows} == {DISPATCH, ACCEPT_OR_INGRESS}
    assert [f.actions[-1] for f in flows if f.table == ACCEPT_OR_INGRESS] == [("output", 7)]


def test_a_server_without_security_groups_leaves_ports_unfiltered() -> None:
    assert compiler.port_info({"id": "p", "mac_address": MAC}, 1, 1).port_security is False


def test_a_member_change_changes_one_member_flow_and_no_port_flow() -> None:
    r = rule(remote_group_id="g")
    spec = compiler.ConjSpec("g", "g", "ingress", "IPv4")
    g1, g2 = groups(r, members=("10.0.0.5", "10.0.0.6")), groups(r, members=("10.0.0.5", "10.0.0.6", "10.0.0.7"))
    assert compiler.port_flows(info(), g1) == compiler.port_flows(info(), g2)
    before, after = set(compiler.member_flows(3, {spec: 9}, g1)), set(compiler.member_flows(3, {spec: 9}, g2))
    assert len(after - before) == 1 and before <= after


def test_every_flow_encodes() -> None:
    r = [rule(protocol="tcp", port_range_min=1000, port_range_max=1999, remote_group_id="g"), rule("egress", "IPv6")]
    flows = compiler.port_flows(info(allowed_address_pairs=[{"ip_address": "fd00::/64"}]), groups(*r)) + compiler.static_flows()
    flows += compiler.infra_flows([(3, 5), (4, None)])
    spec = compiler.ConjSpec("g", "g", "ingress", "IPv4")
    flows += compiler.member_flows(3, {spec: 9}, groups(*r)) + compiler.conj_flows(9, spec)
    for f in flows:
        msg = encode.add(f, 0x42)
        msg.set_xid(7)
        msg.serialize()
        slow = encode.parser.OFPFlowMod(
            encode.DP, cookie=0x42, table_id=f.table, command=encode.ofp.OFPFC_ADD, priority=f.priority,
            match=encode.parser.OFPMatch(**dict(f.match)), instructions=encode.instructions(f.actions),
        )  # fmt: skip
        slow.set_xid(7)
        slow.serialize()
        assert bytes(msg.buf) == bytes(slow.buf), str(f)  # the memoised bytes are exactly os-ken's keyword path's
        fresh = encode.parser.OFPFlowMod(
            encode.DP, cookie=0x42, table_id=f.table, command=encode.ofp.OFPFC_ADD, priority=f.priority,
            match=encode.parser.OFPMatch(**dict(f.match)), instructions=encode.instructions(f.actions),
        )  # fmt: skip
        wrapped = [encode.parser.ONFBundleAddMsg(encode.DP, 3, 0, m, []) for m in (encode.add(f, 0x42), fresh)]
        for w in wrapped:
            w.set_xid(9)
            w.serialize()
        assert bytes(wrapped[0].buf) == bytes(wrapped[1].buf)  # and inside a bundle
    assert any(f.table == BASE_INGRESS for f in flows)


def test_match_fields_joined_directly_are_os_kens_bytes() -> None:
    """``encode._direct_oxm`` (a field's header + its value's bytes) gives what os-ken gives, and leaves to os-ken
    whatever is not plainly an int in range, an ``aa:bb:..`` MAC or a bare address."""
    cases: list[tuple[str, object]] = [
        ("in_port", 7), ("in_port", 0xFFFFFFFE), ("reg5", 33000), ("reg6", 4094), ("conj_id", 0xFFFFFFFF),
        ("eth_type", 0x86DD), ("ip_proto", 58), ("icmpv6_type", 136), ("tcp_dst", (1024, 0xFC00)), ("vlan_vid", (0x1FFF, 0x1FFF)),
        ("ct_state", (0x21, 0x3F)), ("eth_src", "fa:16:3e:0a:bb:Cc"), ("eth_dst", "FA:16:3E:00:00:01"), ("arp_sha", "00:00:00:00:00:00"),
        ("arp_spa", "10.0.0.5"), ("arp_spa", ("10.0.0.0", "255.255.255.0")), ("ipv4_src", "192.168.1.255"),
        ("ipv4_dst", ("0.0.0.0", "0.0.0.0")), ("ipv6_src", "fe80::f816:3eff:fe00:1"), ("ipv6_src", ("fd00::", "ffff:ffff:ffff:ffff::")),
        ("ipv6_nd_target", "2001:db8::1"), ("ipv6_dst", "::"),
    ]  # fmt: skip
    for name, value in cases:
        assert encode._direct_oxm(name, value) is not None, (name, value)
        assert encode._direct_oxm(name, value) == encode._os_ken_oxm(name, value), (name, value)
    # os-ken's own forms (prefixes, other MAC spellings) and bad values are os-ken's to encode or refuse
    others: list[tuple[str, object]] = [
        ("ipv4_src", "10.0.0.0/24"), ("eth_src", "fa-16-3e-00-00-01"), ("eth_src", "fa:16:3e:00:00:0g"), ("ipv6_src", "fe80::1%eth0"),
        ("reg5", -1), ("ip_proto", 256), ("in_port", True), ("tcp_dst", (1, 2, 3)),
    ]  # fmt: skip
    for name, value in others:
        assert encode._direct_oxm(name, value) is None, (name, value)
    assert encode._oxm("ipv4_src", "10.0.0.0/24") == encode._os_ken_oxm("ipv4_src", "10.0.0.0/24")


def test_every_fixed_size_field_joined_directly_is_os_kens_bytes_or_left_to_os_ken() -> None:
    """For every field os-ken knows (OXM, NXM, experimenter headers) and edge values of its kind, plain and masked:
    ``_direct_oxm`` either declines or gives exactly os-ken's bytes (never bytes where os-ken would refuse)."""
    from os_ken.lib import type_desc
    from os_ken.ofproto import ofproto_v1_3 as ofp

    ints: list[object] = [0, 1, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**128 - 1, 2**128, -1, True, 1.0, "1"]
    macs: list[object] = ["fa:16:3e:0a:bb:cc", "FA:16:3E:0A:BB:CC", "fa-16-3e-0a-bb-cc", "fa:16:3e:a:b:c", "fa16.3e0a.bbcc",
                          "fa:16:3e:0a:bb:cc:dd", "ff:ff:ff:ff:ff:ff", "fa:16:3e:0a:bb:cc\n", "fa:16:3e:0a:bb:c\u0663", 1]  # fmt: skip
    ipv4s: list[object] = ["0.0.0.0", "255.255.255.255", "10.0.0.1", "01.2.3.4", "1.2.3", " 1.2.3.4", "256.1.1.1", "::1",
                           "10.0.0.0/24", "\u0661.2.3.4", 167772161]  # fmt: skip
    ipv6s: list[object] = ["::", "::1", "FE80::ABCD", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:102:304", "1:2:3:4:5:6:1.2.3.4",
                           "::ffff:01.2.3.4", "fe80::1%eth0", "2001:db8::/32", "1.2.3.4", "2001:0db8:0000:0000:0000:0000:0000:0001",
                           "02001:db8::1", "1:2:3:4:5:6:7::", "fe80::1 ", "[::1]", "1::2::3"]  # fmt: skip
    values = {type_desc.MacAddr: macs, type_desc.IPv4Addr: ipv4s, type_desc.IPv6Addr: ipv6s}
    joined = 0
    for field in ofp.oxm_types:
        if encode._field(field.name) is None:
            continue
        plain = values.get(field.type, ints)
        for value in [*plain, *((v, m) for v in plain for m in plain[:4]), [plain[0], plain[1]], (plain[0],), (plain[0], None)]:
            direct = encode._direct_oxm(field.name, value)
            if direct is not None:
                joined += 1
                assert direct == encode._os_ken_oxm(field.name, value), (field.name, value)
    assert joined > 1000
