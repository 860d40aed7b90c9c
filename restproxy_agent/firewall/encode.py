"""``Flow`` values -> OpenFlow 1.3 messages (os-ken's ofproto parser, with Nicira extensions for conntrack)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import struct
from typing import Any

from os_ken.lib import type_desc
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from restproxy_agent.firewall.flows import Action, Flow


class Datapath:
    """What os-ken's message classes need of a datapath to serialize and parse (no os-ken app framework)."""

    ofproto = ofp
    ofproto_parser = parser
    id = 0


DP = Datapath()
ALL_COOKIES = 0xFFFFFFFFFFFFFFFF
_ORDER: dict[str, int] = {}  # match field -> its OXM/NXM number (the order os-ken sorts fields in)


def _in_oxm_order(fields: Any) -> list[tuple[str, Any]]:
    """``fields`` (name, value) sorted as os-ken orders OXM fields (by their OXM number, memoised per name)."""
    items = []
    for name, value in fields:
        order = _ORDER.get(name)
        if order is None:
            n = ofp.oxm_from_user(name, value)[0]
            order = _ORDER[name] = n[0] if isinstance(n, tuple) else n
        items.append((order, name, value))
    items.sort(key=lambda item: item[0])
    return [(name, value) for _, name, value in items]


def match(fields: Any) -> Any:
    """``OFPMatch`` of a compiler match (already in os-ken's normalised user form: masked values are (network, mask)),
    built with ``_ordered_fields``: os-ken's keyword path normalises every field twice over, which made encoding
    ~0.4 ms a flow, most of an agent restart. tests/fast pins that the bytes are the same as the keyword path's."""
    return parser.OFPMatch(_ordered_fields=_in_oxm_order(fields))


def _action(a: Action) -> Any:
    kind = a[0]
    if kind == "set":
        return parser.OFPActionSetField(**{a[1]: a[2]})
    if kind == "ct":
        _, commit, table = a
        return parser.NXActionCT(
            flags=nicira_ext.NX_CT_F_COMMIT if commit else 0, zone_src="reg6", zone_ofs_nbits=nicira_ext.ofs_nbits(0, 15),
            recirc_table=nicira_ext.NX_CT_RECIRC_NONE if table is None else table, alg=0, actions=[],
        )  # fmt: skip
    if kind == "output":
        return parser.OFPActionOutput(a[1], 0)
    if kind == "output_reg5":
        return parser.NXActionOutputReg(ofs_nbits=nicira_ext.ofs_nbits(0, 31), src="reg5", max_len=0)
    if kind == "conj":
        return parser.NXActionConjunction(clause=a[2] - 1, n_clauses=a[3], id_=a[1])  # the wire's clause is 0-based
    if kind == "normal":
        return parser.OFPActionOutput(ofp.OFPP_NORMAL, 0)
    raise ValueError(f"unknown action {a!r}")


@functools.lru_cache(maxsize=16384)
def instructions(actions: tuple[Action, ...]) -> list[Any]:
    """The instructions for ``actions`` (memoised: serializing them does not change them, and most repeat)."""
    apply = [_action(a) for a in actions if a[0] != "goto"]
    out: list[Any] = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply)] if apply else []
    out += [parser.OFPInstructionGotoTable(a[1]) for a in actions if a[0] == "goto"]
    return out


_HEADER = struct.Struct("!BBHI")  # ofp_header: version, type, length, xid
_FLOW_MOD = struct.Struct(ofp.OFP_FLOW_MOD_PACK_STR0)  # cookie, cookie_mask, table, command, timeouts, priority, buffer, ports, flags
_MATCH_HEADER = struct.Struct("!HH")


@functools.lru_cache(maxsize=65536)
def _oxm(name: str, value: Any) -> bytes:
    """One match field's OXM/NXM TLV, as os-ken serializes it (memoised: ports share most fields and values)."""
    fast = _direct_oxm(name, value)
    return fast if fast is not None else _os_ken_oxm(name, value)


def _os_ken_oxm(name: str, value: Any) -> bytes:
    buf = bytearray()
    parser.OFPMatch(_ordered_fields=[(name, value)]).serialize(buf, 0)
    return bytes(buf[4 : _MATCH_HEADER.unpack_from(buf, 0)[1]])


_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
_ADDRESSES: dict[Any, Any] = {type_desc.IPv4Addr: ipaddress.IPv4Address, type_desc.IPv6Addr: ipaddress.IPv6Address}


@functools.cache
def _field(name: str) -> tuple[Any, bytes, bytes] | None:
    """(os-ken's value type, the TLV header, the masked TLV header) of a field of fixed size; None for any other."""
    n = ofp.oxm_from_user_header(name)
    kind = ofp._oxm_field_desc(n).type
    size = getattr(kind, "size", None)
    if not size or not (isinstance(kind, type_desc.IntDescr) or kind in (type_desc.MacAddr, *_ADDRESSES)):
        return None
    plain, masked = bytearray(), bytearray()
    ofp.oxm_serialize(n, bytes(size), None, plain, 0)
    ofp.oxm_serialize(n, bytes(size), bytes(size), masked, 0)
    return kind, bytes(plain[:-size]), bytes(masked[: -2 * size])


def _value_bytes(kind: Any, value: Any) -> bytes | None:
    """``value`` as os-ken's ``kind.from_user`` would give it, for the plain forms (an int in range, ``aa:bb:..``, a
    bare address); None for anything else (os-ken then does it, errors included)."""
    if isinstance(kind, type_desc.IntDescr):
        return value.to_bytes(kind.size, "big") if type(value) is int and 0 <= value < 1 << (8 * kind.size) else None
    if type(value) is not str:
        return None
    if kind is type_desc.MacAddr:
        return bytes.fromhex(value.replace(":", "")) if _MAC.match(value) else None
    if "%" in value or "/" in value:  # (a scope or a prefix: os-ken's own rules)
        return None
    try:
        return _ADDRESSES[kind](value).packed
    except ValueError:
        return None


def _direct_oxm(name: str, value: Any) -> bytes | None:
    """The TLV os-ken would make, joined from the field's header and the value's bytes (os-ken's generic path,
    netaddr included, cost ~35 us a field: a burst's ports' own addresses, which no memo holds, were most of the
    encoding). None when the field or value is not one of the plain kinds (os-ken then does it)."""
    try:
        field = _field(name)
    except KeyError:
        return None
    if field is None:
        return None
    kind, plain, masked = field
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            return None
        v, m = (_value_bytes(kind, x) for x in value)
        return masked + v + m if v is not None and m is not None else None
    v = _value_bytes(kind, value)
    return plain + v if v is not None else None


def _match_bytes(fields: Any) -> bytes:
    """``ofp_match`` (OXM type, length, the fields in os-ken's order, padding to 8), from memoised fields."""
    oxms = b"".join(_oxm(name, value) for name, value in _in_oxm_order(fields))
    length = 4 + len(oxms)
    return _MATCH_HEADER.pack(ofp.OFPMT_OXM, length) + oxms + bytes(-length % 8)


@functools.lru_cache(maxsize=16384)
def _instruction_bytes(actions: tuple[Action, ...]) -> bytes:
    """The serialized instructions of ``actions``: the tail of a flow mod with an empty match (memoised)."""
    msg = parser.OFPFlowMod(DP, match=parser.OFPMatch(), instructions=instructions(actions))
    msg.serialize()
    return bytes(msg.buf[ofp.OFP_FLOW_MOD_SIZE :])  # (that size includes the empty match, 8 bytes)


class RawFlowMod:
    """An OFPFC_ADD already in wire form but for its xid, with the part of os-ken's message interface that the
    OpenFlow client and ``ONFBundleAddMsg`` use (``set_xid``, ``serialize``, ``buf``, ``xid``). Encoding a flow
    through os-ken's objects took ~0.1 ms (most of a port's filtering time and of a restart); this joins memoised
    bytes. tests/fast pins that the bytes are os-ken's."""

    __slots__ = ("body", "buf", "command", "cookie", "xid")

    def __init__(self, body: bytes, cookie: int) -> None:
        self.body, self.cookie, self.command = body, cookie, ofp.OFPFC_ADD
        self.xid: int | None = None
        self.buf: bytearray | None = None

    def set_xid(self, xid: int) -> None:
        self.xid = xid

    def serialize(self) -> None:
        self.buf = bytearray(_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, ofp.OFP_HEADER_SIZE + len(self.body), self.xid or 0))
        self.buf += self.body


ENCODING = 1  # bump when a ``Flow`` value's wire form changes (tests/fast/test_flow_cookies.py pins it): cookies then change too


@functools.lru_cache(maxsize=65536)
def cookie(flow: Flow) -> int:
    """The flow's cookie: a 63-bit digest of its content (table, priority, match, actions) and of ``ENCODING``; never 0
    (OVS's own default flow). A flow on the switch whose cookie equals a wanted flow's is that flow, so a restarted
    agent keeps the earlier run's identical flows instead of sending them again (the driver's adoption)."""
    text = repr((ENCODING, flow.table, flow.priority, flow.match, flow.actions)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1 | 1


def add(flow: Flow, cookie_: int | None = None) -> Any:
    """OFPFC_ADD: creates the flow, or replaces one with the same table/priority/match (cookie included); the cookie
    is the content's (``cookie``) unless given."""
    cookie_ = cookie(flow) if cookie_ is None else cookie_
    head = _FLOW_MOD.pack(cookie_, 0, flow.table, ofp.OFPFC_ADD, 0, 0, flow.priority, ofp.OFP_NO_BUFFER, 0, 0, 0)
    return RawFlowMod(head + _match_bytes(flow.match) + _instruction_bytes(flow.actions), cookie_)


def delete(flow: Flow) -> Any:
    """OFPFC_DELETE_STRICT of exactly this entry (table, priority, match)."""
    return parser.OFPFlowMod(
        DP, table_id=flow.table, command=ofp.OFPFC_DELETE_STRICT, priority=flow.priority,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match(flow.match),
    )  # fmt: skip


def delete_cookie(value: int) -> Any:
    """Every flow, in every table, whose cookie is exactly ``value``."""
    return parser.OFPFlowMod(
        DP, cookie=value, cookie_mask=ALL_COOKIES, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch(),
    )  # fmt: skip
