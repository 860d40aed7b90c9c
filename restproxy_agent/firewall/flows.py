"""The flow vocabulary shared by the compiler (which makes ``Flow`` values) and the encoder (which sends them).

A ``Flow`` is a plain, hashable value: its key ``(table, priority, match)`` names the OpenFlow entry, its
``actions`` say what it does. Keeping the compiler's output as values (not os-ken messages) is what lets a
port's old and new flow sets be diffed cheaply, and lets the fast tier test the compiler without a switch.

The pipeline follows Neutron's native OVS firewall (neutron/agent/linux/openvswitch_firewall), table numbers
included, with ``reg5`` = the port's ofport and ``reg6`` = its conntrack zone (the network's local VLAN).
"""

from __future__ import annotations

from typing import Any

import attrs

# Tables (Neutron's numbers).
DISPATCH = 0  # in_port -> reg5/reg6 -> egress pipeline; non-VIF ports -> NORMAL; unknown (unprogrammed VIFs) -> drop
BASE_EGRESS = 71  # anti-spoofing: own MAC/IPs/pairs, ARP, ND, DHCP client; then conntrack
RULES_EGRESS = 72  # conntrack state, then the egress rules
ACCEPT_OR_INGRESS = 73  # destination on this host -> its ingress pipeline; anything else -> NORMAL
BASE_INGRESS = 81  # ARP/ND/DHCP replies in; IP -> conntrack
RULES_INGRESS = 82  # conntrack state, then the ingress rules

# ct_state bits (nicira-ext.h)
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
CT_MASK = CT_NEW | CT_EST | CT_REL | CT_INV | CT_TRK

ETH_IP, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
DEAD_VLAN = 4095  # a VIF's tag until its flows are in (NORMAL then floods nothing to it)
OFPP_LOCAL = 0xFFFFFFFE
OFPP_MAX_10 = 0xFF00  # ofports from here up are reserved (OVSDB shows LOCAL as 65534)
OFPVID_PRESENT = 0x1000

Match = tuple[tuple[str, Any], ...]


def match(**fields: Any) -> Match:
    """A canonical (sorted) match: field names are os-ken ``OFPMatch`` keywords; masked values are (value, mask)."""
    return tuple(sorted(fields.items()))


# Actions: ("set", field, value) | ("ct", commit, table or None) | ("goto", table) | ("output", ofport)
#          | ("output_reg5",) | ("normal",) | ("conj", id, clause, clauses); no actions: drop.
Action = tuple[Any, ...]


def set_field(field: str, value: int) -> Action:
    return ("set", field, value)


def ct(commit: bool = False, table: int | None = None) -> Action:
    """Through conntrack in the zone held in reg6; ``table``: recirculate there; ``commit``: remember the connection."""
    return ("ct", commit, table)


def goto(table: int) -> Action:
    return ("goto", table)


def output(ofport: int) -> Action:
    return ("output", ofport)


def conj(conj_id: int, clause: int, clauses: int) -> Action:
    """``conjunction(id, clause/clauses)`` (1-based clause, as ovs-ofctl writes it)."""
    return ("conj", conj_id, clause, clauses)


NORMAL: Action = ("normal",)
OUTPUT_REG5: Action = ("output_reg5",)


@attrs.frozen(cache_hash=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()

    @property
    def key(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)

    def __str__(self) -> str:  # readable in test failures and logs
        m = ",".join(f"{k}={v}" for k, v in self.match)
        return f"table={self.table},priority={self.priority},{m} actions={self.actions or 'drop'}"
