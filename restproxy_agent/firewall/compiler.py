"""Port + its groups -> the port's flows. Pure: no I/O, no clock, no switch; tested in tests/fast.

Modelled on Neutron's native OVS firewall (firewall.py and rules.py). For a port with port security:

- table 0: ``in_port`` -> reg5 = ofport, reg6 = zone -> table 71;
- table 71 (egress base, anti-spoofing): ARP only with the port's (MAC, IP) pairs as sha/spa; IPv6 RS/NS/MLD
  and DHCP client requests from its MACs (a conjunction shared by all ports: one flow per port and MAC); NA only
  for its own addresses; DHCP server replies and router
  advertisements dropped unless the port is a ``network:dhcp`` / ``network:router_interface*`` port; IPv4/IPv6
  only from (MAC, IP) pairs it owns (fixed IPs, allowed address pairs, the IPv6 link-local of its MACs), into
  conntrack; everything else dropped;
- table 72 (egress rules): established/related pass (static flows), invalid drop, new connections matched against
  the egress rules and committed;
- table 73: traffic for this port's MACs in its zone -> reg5 = ofport -> table 81 (its ingress pipeline);
- table 81 (ingress base, shared by every port: it outputs to reg5): ARP, ND, DHCP replies in; IP into conntrack;
- table 82 (ingress rules): as 72 for the ingress rules, ending in ``output`` to the port.

A port without port security gets table 0 and 73 only (accept everything both ways). Remote groups are
expanded to their members' addresses (fixed IPs and allowed-pair prefixes, as the server lists them) with
conjunctive flows, as Neutron does: a rule naming remote group X gives the port one flow per protocol/port match
(clause 2 of conjunction N, N standing for (group, X, direction, ethertype)), and each zone (network) has one flow
per member address of X (clause 1 of N, ``member_flows``), shared by all ports of the zone. A member change then
changes one flow per zone that uses X, not one per port.
"""

from __future__ import annotations

import functools
import ipaddress
import zlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from restproxy_agent.firewall.flows import (
    ACCEPT_OR_INGRESS,
    BASE_EGRESS,
    BASE_INGRESS,
    CT_EST,
    CT_INV,
    CT_MASK,
    CT_NEW,
    CT_REL,
    CT_TRK,
    DEAD_VLAN,
    DISPATCH,
    ETH_ARP,
    ETH_IP,
    ETH_IPV6,
    NORMAL,
    OFPVID_PRESENT,
    OUTPUT_REG5,
    RULES_EGRESS,
    RULES_INGRESS,
    Flow,
    conj,
    ct,
    goto,
    match,
    output,
    set_field,
)

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}
PORTED = {6: "tcp", 17: "udp", 132: "sctp"}  # protocols with port ranges (OFPMatch field prefixes)
ND_OUT = (133, 135, 130, 131, 132, 143)  # RS, NS, MLD query/report/done, MLDv2 report: from the port's MACs
ND_IN = (130, 131, 132, 134, 135, 136, 143)  # MLD, RA, NS, NA
NA, RA = 136, 134
OWN_MAC = 0xFFFFFFFF  # the conjunction id of "from the port's own MAC" (``own_mac_flows``); ``ConjIds`` never gives it
OWN_MAC_PRIORITY = 96  # (a conjunction's flows share their priority, and no other table-71 flow has this one)
NEW = (CT_TRK | CT_NEW, CT_MASK)


@attrs.frozen
class PortInfo:
    """What the compiler needs of a port (``port_info`` builds it from the channel's port dict)."""

    port_id: str
    ofport: int
    zone: int
    mac: str
    fixed_ips: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()  # (ip or cidr, mac)
    port_security: bool = True
    device_owner: str = ""
    security_groups: tuple[str, ...] = ()


def port_info(port: Mapping[str, Any], ofport: int, zone: int) -> PortInfo:
    """The channel's port dict -> ``PortInfo``. A server that predates security groups sends no
    ``port_security_enabled``: such a port is not filtered (the server has no groups to give it)."""
    mac = port["mac_address"].lower()
    pairs = tuple(sorted((str(p["ip_address"]), str(p.get("mac_address") or mac).lower()) for p in port.get("allowed_address_pairs") or ()))
    return PortInfo(
        port_id=port["id"], ofport=ofport, zone=zone, mac=mac,
        fixed_ips=tuple(sorted(ip["ip_address"] for ip in port.get("fixed_ips") or ())),
        pairs=pairs, port_security=bool(port.get("port_security_enabled", False)),
        device_owner=port.get("device_owner") or "", security_groups=tuple(sorted(port.get("security_groups") or ())),
    )  # fmt: skip


def static_flows() -> list[Flow]:
    """The flows every host has, whatever its ports: default-deny, conntrack state handling, NORMAL fallbacks."""
    est, rel, inv = (CT_TRK | CT_EST, CT_MASK), (CT_TRK | CT_REL, CT_TRK | CT_REL | CT_INV), (CT_TRK | CT_INV, CT_TRK | CT_INV)
    return [
        Flow(DISPATCH, 0, match()),  # a VIF nobody programmed yet, or a port we do not know: nothing passes
        Flow(DISPATCH, 200, match(vlan_vid=(OFPVID_PRESENT | DEAD_VLAN, 0x1FFF))),  # the dead VLAN, from trunks
        Flow(DISPATCH, 50, match(in_port=0xFFFFFFFE), (NORMAL,)),  # the bridge's LOCAL port
        Flow(BASE_EGRESS, 0, match()),
        *own_mac_flows(),
        *server_drops(),
        Flow(RULES_EGRESS, 0, match()),
        Flow(RULES_EGRESS, 100, match(ct_state=inv)),
        Flow(RULES_EGRESS, 90, match(ct_state=est), (goto(ACCEPT_OR_INGRESS),)),
        Flow(RULES_EGRESS, 90, match(ct_state=rel), (goto(ACCEPT_OR_INGRESS),)),
        Flow(ACCEPT_OR_INGRESS, 0, match(), (NORMAL,)),
        Flow(BASE_INGRESS, 0, match()),
        *ingress_base_flows(),
        Flow(RULES_INGRESS, 0, match()),
        Flow(RULES_INGRESS, 100, match(ct_state=inv)),
        Flow(RULES_INGRESS, 90, match(ct_state=est), (OUTPUT_REG5,)),
        Flow(RULES_INGRESS, 90, match(ct_state=rel), (OUTPUT_REG5,)),
    ]


def server_drops() -> list[Flow]:
    """DHCP servers' replies (v4, v6) and router advertisements from any port: dropped (a ``network:dhcp`` or
    ``network:router_interface*`` port has its own exceptions above these, in ``port_flows``)."""
    return [
        Flow(BASE_EGRESS, 90, match(eth_type=ETH_IP, ip_proto=17, udp_src=67)),
        Flow(BASE_EGRESS, 90, match(eth_type=ETH_IPV6, ip_proto=17, udp_src=547)),
        Flow(BASE_EGRESS, 90, match(eth_type=ETH_IPV6, ip_proto=58, icmpv6_type=RA)),
    ]


def own_mac_flows() -> list[Flow]:
    """Conjunction ``OWN_MAC``: a frame from one of the port's own MACs (clause 1: one flow per port and MAC, in
    ``port_flows``) that is IPv6 RS/NS/MLD or a DHCP request (clause 2: these flows, shared) goes on to table 73.
    As Neutron's per-port flows (one per port, MAC and kind, eight a MAC) would, with one flow a MAC instead."""
    kinds = [match(eth_type=ETH_IPV6, ip_proto=58, icmpv6_type=t) for t in ND_OUT]
    kinds += [match(eth_type=ETH_IP, ip_proto=17, udp_src=68, udp_dst=67), match(eth_type=ETH_IPV6, ip_proto=17, udp_src=546, udp_dst=547)]
    flows = [Flow(BASE_EGRESS, OWN_MAC_PRIORITY, m, (conj(OWN_MAC, 2, 2),)) for m in kinds]
    flows.append(Flow(BASE_EGRESS, OWN_MAC_PRIORITY, match(conj_id=OWN_MAC), (goto(ACCEPT_OR_INGRESS),)))
    return flows


def ingress_base_flows() -> list[Flow]:
    """Table 81, the same for every filtered port: ARP, ND and DHCP replies in, IP into conntrack. Only a filtered
    port's own table-73 flow leads here, having set reg5 to its ofport, so these output to reg5 instead of each port
    having its own copy matching ``reg5`` (12 flow mods fewer per port: a burst's and a restart's batches are a third
    smaller)."""
    ct_in = (ct(table=RULES_INGRESS),)
    return [
        Flow(BASE_INGRESS, 100, match(eth_type=ETH_ARP), (OUTPUT_REG5,)),
        *(Flow(BASE_INGRESS, 100, match(eth_type=ETH_IPV6, ip_proto=58, icmpv6_type=t), (OUTPUT_REG5,)) for t in ND_IN),
        Flow(BASE_INGRESS, 95, match(eth_type=ETH_IP, ip_proto=17, udp_src=67, udp_dst=68), (OUTPUT_REG5,)),
        Flow(BASE_INGRESS, 95, match(eth_type=ETH_IPV6, ip_proto=17, udp_src=547, udp_dst=546), (OUTPUT_REG5,)),
        Flow(BASE_INGRESS, 90, match(eth_type=ETH_IP), ct_in),
        Flow(BASE_INGRESS, 90, match(eth_type=ETH_IPV6), ct_in),
    ]


def infra_flows(ports: Iterable[tuple[int, int | None]]) -> list[Flow]:
    """Ports that are not VIFs (patch, internal, ...): (ofport, local VLAN tag or None) -> forwarded as before.

    A tagged one sets reg6 to its tag and goes through table 73, so its traffic to a filtered VIF meets that
    VIF's ingress rules; an untagged one (a trunk or patch port) goes straight to NORMAL.
    """
    out = []
    for ofport, tag in ports:
        if tag:
            out.append(Flow(DISPATCH, 50, match(in_port=ofport), (set_field("reg6", tag), goto(ACCEPT_OR_INGRESS))))
        else:
            out.append(Flow(DISPATCH, 50, match(in_port=ofport), (NORMAL,)))
    return out


def link_local(mac: str) -> str:
    """The IPv6 link-local address (EUI-64) of ``mac``."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


@functools.lru_cache(maxsize=65536)
def _net(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(address, strict=False)


def ip_match(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | tuple[str, str]:
    """An os-ken address match value: the address, or (network, netmask) for a prefix."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def port_range_masks(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high] as the fewest (value, mask) pairs over 16 bits (Neutron's port_rule_masking)."""
    out: list[tuple[int, int]] = []
    while low <= high:
        size = 1
        while low % (size * 2) == 0 and low + size * 2 - 1 <= high and size < 0x10000:
            size *= 2
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


def _addresses(port: PortInfo) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """The (MAC, address) pairs the port may send from: fixed IPs, allowed pairs, IPv6 link-locals of its MACs."""
    out = [(port.mac, _net(ip)) for ip in port.fixed_ips]
    out += [(mac, _net(ip)) for ip, mac in port.pairs]
    for mac in sorted({port.mac, *(mac for _, mac in port.pairs)}):
        out.append((mac, _net(link_local(mac))))
    return list(dict.fromkeys(out))


def _macs(port: PortInfo) -> list[str]:
    return sorted({port.mac, *(mac for _, mac in port.pairs)})


@attrs.frozen
class ConjSpec:
    """What a conjunction id stands for: group ``group_id``'s rules that name ``remote_group_id``, one direction/ethertype."""

    group_id: str
    remote_group_id: str
    direction: str
    ethertype: str


class ConjIds:
    """Conjunction ids: stable across agent runs (a CRC-32 of the spec, so that a restarted agent's flows and the
    previous run's agree while both are installed), probing on the rare collision within a run."""

    def __init__(self) -> None:
        self.ids: dict[ConjSpec, int] = {}
        self._taken: dict[int, ConjSpec | None] = {OWN_MAC: None}

    def __call__(self, spec: ConjSpec) -> int:
        found = self.ids.get(spec)
        if found is not None:
            return found
        n = zlib.crc32(f"{spec.group_id}|{spec.remote_group_id}|{spec.direction}|{spec.ethertype}".encode()) or 1
        while n in self._taken:
            n = (n + 1) & 0xFFFFFFFF or 1
        self.ids[spec], self._taken[n] = n, spec
        return n


def _merge(flows: Iterable[Flow]) -> list[Flow]:
    """No duplicates; entries with the same key whose actions are all conjunctions become one entry with all of them."""
    out: dict[tuple[Any, ...], Flow] = {}
    for f in flows:
        old = out.get(f.key)
        if old is None or old == f:
            out[f.key] = f
        elif all(a[0] == "conj" for a in old.actions + f.actions):
            out[f.key] = attrs.evolve(old, actions=tuple(sorted(set(old.actions + f.actions))))
        else:
            out[f.key] = f  # (never made by this compiler)
    return list(out.values())


def conj_specs(port: PortInfo, groups: Mapping[str, Mapping[str, Any]]) -> set[ConjSpec]:
    """The conjunctions the port's rules use (the zone's member flows must serve them)."""
    if not port.port_security:
        return set()
    out = set()
    for group_id in port.security_groups:
        for rule in (groups.get(group_id) or {}).get("rules") or ():
            if rule.get("remote_group_id"):
                out.add(ConjSpec(group_id, rule["remote_group_id"], rule.get("direction") or "ingress", rule.get("ethertype") or "IPv4"))
    return out


def conj_flows(conj_id: int, spec: ConjSpec) -> list[Flow]:
    """What conjunction ``conj_id`` does when both clauses match: commit the new connection and let it through."""
    eth_type = ETH_IPV6 if spec.ethertype == "IPv6" else ETH_IP
    if spec.direction == "ingress":
        return [Flow(RULES_INGRESS, 60, match(conj_id=conj_id, eth_type=eth_type), (ct(commit=True), OUTPUT_REG5))]
    return [Flow(RULES_EGRESS, 60, match(conj_id=conj_id, eth_type=eth_type), (ct(commit=True), goto(ACCEPT_OR_INGRESS)))]


def member_flows(
    zone: int, specs: Mapping[ConjSpec, int], groups: Mapping[str, Mapping[str, Any]], only: Collection[str] | None = None
) -> list[Flow]:
    """Clause 1 of each conjunction used in ``zone``: one flow per member address of its remote group; with ``only``,
    just the flows of those addresses (a member event's, whichever members still have them)."""
    wanted = None if only is None else {_net(a) for a in only}
    flows = []
    for spec, conj_id in specs.items():
        ipv6 = spec.ethertype == "IPv6"
        members = tuple((groups.get(spec.remote_group_id) or {}).get("members") or ())
        ingress = spec.direction == "ingress"
        table = RULES_INGRESS if ingress else RULES_EGRESS
        field = ("ipv6_" if ipv6 else "ipv4_") + ("src" if ingress else "dst")
        if wanted is None:
            remotes = _remotes(members, 6 if ipv6 else 4)
        else:
            nets = {n for n in (_net(m) for m in members) if n in wanted and n.version == (6 if ipv6 else 4)}
            remotes = tuple(ip_match(n) for n in nets)
        for remote in remotes:
            m = match(reg6=zone, ct_state=NEW, eth_type=ETH_IPV6 if ipv6 else ETH_IP, **{field: remote})
            flows.append(Flow(table, 60, m, (conj(conj_id, 1, 2),)))
    return _merge(flows)


def member_keys(zone: int, specs: Iterable[ConjSpec], addresses: Collection[str]) -> set[tuple[Any, ...]]:
    """The keys that ``addresses``' member flows in ``zone`` have (or would have): what a member event may change."""
    keys = set()
    for spec in specs:
        version = 6 if spec.ethertype == "IPv6" else 4
        ingress = spec.direction == "ingress"
        table = RULES_INGRESS if ingress else RULES_EGRESS
        field = ("ipv6_" if version == 6 else "ipv4_") + ("src" if ingress else "dst")
        for net in {_net(a) for a in addresses}:
            if net.version == version:
                m = match(reg6=zone, ct_state=NEW, eth_type=ETH_IPV6 if version == 6 else ETH_IP, **{field: ip_match(net)})
                keys.add(Flow(table, 60, m).key)
    return keys


@functools.lru_cache(maxsize=4096)
def _remotes(members: tuple[str, ...], version: int) -> tuple[Any, ...]:
    nets = sorted({n for n in (_net(m) for m in members) if n.version == version}, key=lambda n: (int(n.network_address), n.prefixlen))
    return tuple(ip_match(n) for n in nets)


def port_flows(port: PortInfo, groups: Mapping[str, Mapping[str, Any]], conj_ids: ConjIds | None = None) -> list[Flow]:
    """All flows of one port (no duplicates): dispatch, anti-spoofing, conntrack and its groups' rules.

    The parts are memoised (a port's base flows by its ``PortInfo``; a rule's flows by the rule, the ofport and
    the remote group's members), so a member change recompiles only the rules that name the changed group.
    """
    flows = list(_base_flows(port))
    ids = conj_ids if conj_ids is not None else ConjIds()
    if port.port_security:
        for group_id in port.security_groups:
            group = groups.get(group_id)
            if group is None:
                continue  # not known (yet): it admits nothing
            for rule in group.get("rules") or ():
                conj_id = None
                if rule.get("remote_group_id"):
                    spec = ConjSpec(group_id, rule["remote_group_id"], rule.get("direction") or "ingress", rule.get("ethertype") or "IPv4")
                    conj_id = ids(spec)
                flows.extend(rule_flows(rule, port, conj_id))
    return _merge(flows)


@functools.lru_cache(maxsize=8192)
def _base_flows(port: PortInfo) -> tuple[Flow, ...]:
    p, reg5 = port.ofport, port.ofport
    flows: list[Flow] = []
    enter = (set_field("reg5", p), set_field("reg6", port.zone))
    if not port.port_security:
        flows.append(Flow(DISPATCH, 100, match(in_port=p), (*enter, goto(ACCEPT_OR_INGRESS))))
        for mac in _macs(port):
            flows.append(Flow(ACCEPT_OR_INGRESS, 100, match(reg6=port.zone, eth_dst=mac), (output(p),)))
        return tuple(flows)
    flows.append(Flow(DISPATCH, 100, match(in_port=p), (*enter, goto(BASE_EGRESS))))
    addresses = _addresses(port)
    to_rules = (ct(table=RULES_EGRESS),)
    accept = (goto(ACCEPT_OR_INGRESS),)
    for mac, net in addresses:
        if net.version == 4:
            flows.append(Flow(BASE_EGRESS, 95, match(reg5=reg5, eth_type=ETH_ARP, eth_src=mac, arp_sha=mac, arp_spa=ip_match(net)), accept))
            flows.append(Flow(BASE_EGRESS, 65, match(reg5=reg5, eth_type=ETH_IP, eth_src=mac, ipv4_src=ip_match(net)), to_rules))
        else:
            flows.append(Flow(BASE_EGRESS, 65, match(reg5=reg5, eth_type=ETH_IPV6, eth_src=mac, ipv6_src=ip_match(net)), to_rules))
            if net.prefixlen == 128:
                target = str(net.network_address)
                na = match(reg5=reg5, eth_type=ETH_IPV6, eth_src=mac, ip_proto=58, icmpv6_type=NA, ipv6_nd_target=target)
                flows.append(Flow(BASE_EGRESS, 95, na, accept))
    for mac in _macs(port):  # ND (but NA) and DHCP requests from its MACs: clause 1 of ``OWN_MAC`` (see ``own_mac_flows``)
        flows.append(Flow(BASE_EGRESS, OWN_MAC_PRIORITY, match(reg5=reg5, eth_src=mac), (conj(OWN_MAC, 1, 2),)))
    # DHCP servers' replies only from DHCP ports, router advertisements only from routers: dropped for every port by
    # ``server_drops``; such a port gets them back from its own addresses, into conntrack as its other IP (priority
    # 91: what the source check at 65 would have done had the drop at 90 not been there).
    owner = port.device_owner
    dhcp, router = owner == "network:dhcp", owner.startswith("network:router_interface")
    for mac, net in addresses if dhcp or router else ():
        if dhcp and net.version == 4:
            back = match(reg5=reg5, eth_type=ETH_IP, eth_src=mac, ipv4_src=ip_match(net), ip_proto=17, udp_src=67)
        elif dhcp:
            back = match(reg5=reg5, eth_type=ETH_IPV6, eth_src=mac, ipv6_src=ip_match(net), ip_proto=17, udp_src=547)
        elif net.version == 6:
            back = match(reg5=reg5, eth_type=ETH_IPV6, eth_src=mac, ipv6_src=ip_match(net), ip_proto=58, icmpv6_type=RA)
        else:
            continue
        flows.append(Flow(BASE_EGRESS, 91, back, to_rules))
    # table 73: this port's MACs in its zone -> its ingress pipeline
    for mac in _macs(port):
        flows.append(Flow(ACCEPT_OR_INGRESS, 100, match(reg6=port.zone, eth_dst=mac), (set_field("reg5", p), goto(BASE_INGRESS))))
    # table 81 (ARP, ND and DHCP replies in; IP to conntrack) is shared: see ``ingress_base_flows``
    return tuple(dict.fromkeys(flows))


def _protocol(rule: Mapping[str, Any], ipv6: bool) -> int | None:
    proto = rule.get("protocol")
    if proto in (None, "", "any"):
        return None
    number = PROTOCOLS[proto] if proto in PROTOCOLS else int(proto)
    if ipv6 and number == 1:
        number = 58  # "icmp" in an IPv6 rule means ICMPv6 (as Neutron does)
    return number


def table_of(ingress: bool) -> int:
    return RULES_INGRESS if ingress else RULES_EGRESS


_RULE_KEYS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id")


def rule_flows(rule: Mapping[str, Any], port: PortInfo, conj_id: int | None = None) -> list[Flow]:
    """One rule -> flows in table 72 (egress) or 82 (ingress) for ``port``. A remote-group rule (``conj_id``: its
    conjunction) gives clause 2 of the conjunction; its clause 1 (the members) comes from ``member_flows``."""
    return list(_rule_flows(tuple(rule.get(k) for k in _RULE_KEYS), port.ofport, conj_id))


@functools.lru_cache(maxsize=65536)
def _rule_flows(key: tuple[Any, ...], ofport: int, conj_id: int | None) -> tuple[Flow, ...]:
    rule = dict(zip(_RULE_KEYS, key, strict=True))
    ipv6 = rule.get("ethertype") == "IPv6"
    eth_type, version = (ETH_IPV6, 6) if ipv6 else (ETH_IP, 4)
    ingress = rule.get("direction") == "ingress"
    base: dict[str, Any] = {"reg5": ofport, "ct_state": NEW, "eth_type": eth_type}
    proto = _protocol(rule, ipv6)
    variants: list[dict[str, Any]] = [{}]
    if proto is not None:
        base["ip_proto"] = proto
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        full = (low is None or int(low) <= 1) and (high is None or int(high) >= 65535)
        if proto in PORTED and not full:
            low = 1 if low is None else int(low)
            high = 65535 if high is None else int(high)
            field = f"{PORTED[proto]}_dst"
            variants = [{field: v if m == 0xFFFF else (v, m)} for v, m in port_range_masks(low, high)]
        elif proto in (1, 58) and low is not None:
            prefix = "icmpv6" if proto == 58 else "icmpv4"
            base[f"{prefix}_type"] = int(low)
            if high is not None:
                base[f"{prefix}_code"] = int(high)
    remotes: list[Any] = [None]
    field = ("ipv6_" if ipv6 else "ipv4_") + ("src" if ingress else "dst")
    if conj_id is not None:
        return tuple(Flow(table_of(ingress), 60, match(**dict(base, **extra)), (conj(conj_id, 2, 2),)) for extra in variants)
    if rule.get("remote_ip_prefix"):
        net = _net(rule["remote_ip_prefix"])
        if net.version != version:
            return ()
        remotes = [None] if net.prefixlen == 0 else [ip_match(net)]
    if ingress:
        table, actions = RULES_INGRESS, (ct(commit=True), output(ofport))
    else:
        table, actions = RULES_EGRESS, (ct(commit=True), goto(ACCEPT_OR_INGRESS))
    out = []
    for remote in remotes:
        for extra in variants:
            fields = dict(base, **extra)
            if remote is not None:
                fields[field] = remote
            out.append(Flow(table, 70, match(**fields), actions))
    return tuple(out)
