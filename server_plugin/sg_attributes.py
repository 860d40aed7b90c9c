"""The attributes of the security-group, port-security and allowed-address-pairs extensions, and their validators.

As neutron-lib's api/definitions (securitygroup, port_security, allowedaddresspairs)
and neutron/extensions/securitygroup.py: protocols by name or number, port values,
address pairs; each error is Neutron's type so that clients raise their typed errors.
"""

from __future__ import annotations

from typing import Any

import netaddr

from server_plugin import exceptions as exc
from server_plugin import validators as v
from server_plugin.attributes import DESCRIPTION, GENERATED, ID, PROJECT, REQUIRED, TENANT, TIMESTAMP, Attribute

DEFAULT_NAME = "default"
INGRESS, EGRESS = "ingress", "egress"
DIRECTIONS = (INGRESS, EGRESS)
IPV4, IPV6 = "IPv4", "IPv6"
ETHERTYPES = (IPV4, IPV6)
MAX_ALLOWED_ADDRESS_PAIRS = 10  # Neutron's max_allowed_address_pair

# neutron_lib.constants.IP_PROTOCOL_MAP (the names Neutron takes), and the numbers the server names on the channel.
PROTOCOL_NUMBERS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58, "igmp": 2, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43,
    "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}  # fmt: skip
NAMED_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
PORT_PROTOCOLS = ("tcp", "udp", "dccp", "sctp", "udplite")
ICMP_PROTOCOLS = ("icmp", "icmpv6", "ipv6-icmp")


def _str_filter(value: str) -> str:
    return value


def name_not_default(value: Any) -> str:
    """A group's name on create and update: any string but ``default`` (the tenant's own is made for it)."""
    name = v.string()(value)
    if name.lower() == DEFAULT_NAME:
        raise exc.SecurityGroupDefaultAlreadyExists()
    return name


def protocol(value: Any) -> str | None:
    """A name (case-insensitive), a number 0..255 (as a string), or None for any."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise exc.SecurityGroupRuleInvalidProtocol(protocol=value, values=sorted(PROTOCOL_NUMBERS))
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if 0 <= number <= 255:
            return str(number)
        raise exc.SecurityGroupRuleInvalidProtocol(protocol=value, values=sorted(PROTOCOL_NUMBERS))
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "any":
            return None
        if lowered in PROTOCOL_NUMBERS:
            return lowered
    raise exc.SecurityGroupRuleInvalidProtocol(protocol=value, values=sorted(PROTOCOL_NUMBERS))


def normalized_protocol(value: str | None) -> str | None:
    """What the channel carries (and duplicates are compared by): numbers with a name become the name."""
    if value is None:
        return None
    if value == "ipv6-icmp":
        return "icmpv6"
    return NAMED_NUMBERS.get(value, value)


def port_value(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise exc.SecurityGroupInvalidPortValue(port=value)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise exc.SecurityGroupInvalidPortValue(port=value) from None
    if isinstance(value, float) and number != value or not 0 <= number <= 65535:
        raise exc.SecurityGroupInvalidPortValue(port=value)
    return number


def direction(value: Any) -> str:
    if value not in DIRECTIONS:
        raise exc.SecurityGroupRuleInvalidDirection(direction=value, values=list(DIRECTIONS))
    return value


def ethertype(value: Any) -> str:
    if isinstance(value, str):
        for known in ETHERTYPES:
            if value.lower() == known.lower():
                return known
    raise exc.SecurityGroupRuleInvalidEtherType(ethertype=value, values=list(ETHERTYPES))


def ip_prefix(value: Any) -> str | None:
    """A CIDR or an address (taken as a host prefix); None for any."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or value != value.strip():
        raise v.ValidationError(f"'{value}' is not a valid IP subnet")
    try:
        net = netaddr.IPNetwork(value) if "/" in value else netaddr.IPNetwork(v.ip_address(value))
    except (netaddr.AddrFormatError, ValueError, TypeError, v.ValidationError):
        raise v.ValidationError(f"'{value}' is not a valid IP subnet") from None
    return str(net)


def uuid_list(value: Any) -> list[str]:
    """``security_groups`` on a port: a list of UUIDs (None: []), duplicates dropped, order kept."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise v.ValidationError(f"'{value}' is not a list")
    result: list[str] = []
    for entry in value:
        uid = v.uuid_(entry)
        if uid not in result:
            result.append(uid)
    return result


def address_pairs(value: Any) -> list[dict[str, str]]:
    """neutron_lib.api.validators.allowedaddresspairs: a list of {ip_address (IP or CIDR), mac_address?}."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise exc.HTTPBadRequest(detail="Allowed address pairs must be a list.")
    if len(value) > MAX_ALLOWED_ADDRESS_PAIRS:
        raise exc.AllowedAddressPairExhausted(quota=MAX_ALLOWED_ADDRESS_PAIRS)
    seen: set[tuple[Any, Any]] = set()
    result = []
    for pair in value:
        if not isinstance(pair, dict):
            raise v.ValidationError(f"'{pair}' is not a dictionary")
        if "mac_address" in pair:
            try:
                v.mac_address(pair["mac_address"])
            except v.ValidationError as e:
                raise exc.HTTPBadRequest(detail=str(e)) from None
        if "ip_address" not in pair:
            raise exc.AllowedAddressPairsMissingIP()
        mac, ip = pair.get("mac_address"), pair["ip_address"]
        if (mac, ip) in seen:
            raise exc.DuplicateAddressPairInRequest(mac_address=mac, ip_address=ip)
        seen.add((mac, ip))
        extra = sorted(set(pair) - {"mac_address", "ip_address"})
        if extra:
            raise exc.HTTPBadRequest(detail=f"Unrecognized attribute(s) '{', '.join(extra)}'")
        if not isinstance(ip, str):
            raise v.ValidationError(f"'{ip}' is not a valid IP address")
        address = _pair_address(ip)
        entry = {"ip_address": address}
        if mac is not None:
            entry["mac_address"] = v.mac_address(mac).lower()
        result.append(entry)
    return result


def _pair_address(ip: str) -> str:
    if "/" not in ip:
        return v.ip_address(ip)
    try:
        net = netaddr.IPNetwork(ip)
        v.ip_address(ip.partition("/")[0])
    except (netaddr.AddrFormatError, ValueError, TypeError, v.ValidationError):
        raise v.ValidationError(f"'{ip}' is not a valid IP subnet") from None
    return str(net)


SECURITY_GROUPS: dict[str, Attribute] = {
    "id": ID,
    "name": Attribute(allow_post=True, allow_put=True, default="", validate=name_not_default, filter_convert=_str_filter, sortable=True),
    "description": DESCRIPTION,
    "security_group_rules": Attribute(),
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

SECURITY_GROUP_RULES: dict[str, Attribute] = {
    "id": ID,
    "security_group_id": Attribute(allow_post=True, default=REQUIRED, validate=v.uuid_, filter_convert=_str_filter, sortable=True),
    "remote_group_id": Attribute(allow_post=True, default=None, validate=v.uuid_or_none, filter_convert=_str_filter, sortable=True),
    "direction": Attribute(allow_post=True, default=REQUIRED, validate=direction, filter_convert=_str_filter, sortable=True),
    "protocol": Attribute(allow_post=True, default=None, validate=protocol, filter_convert=_str_filter, sortable=True),
    "port_range_min": Attribute(allow_post=True, default=None, validate=port_value, filter_convert=int, sortable=True),
    "port_range_max": Attribute(allow_post=True, default=None, validate=port_value, filter_convert=int, sortable=True),
    "ethertype": Attribute(allow_post=True, default=IPV4, validate=ethertype, filter_convert=_str_filter, sortable=True),
    "remote_ip_prefix": Attribute(allow_post=True, default=None, validate=ip_prefix, filter_convert=_str_filter, sortable=True),
    "description": Attribute(allow_post=True, default="", validate=v.string(), filter_convert=_str_filter, sortable=True),
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

# Added to the core's collections.
NETWORK_ATTRIBUTES: dict[str, Attribute] = {
    "port_security_enabled": Attribute(
        allow_post=True, allow_put=True, default=True, validate=v.boolean, filter_convert=lambda s: v.boolean(s)
    ),
}
PORT_ATTRIBUTES: dict[str, Attribute] = {
    "security_groups": Attribute(allow_post=True, allow_put=True, default=GENERATED, validate=uuid_list),
    "port_security_enabled": Attribute(
        allow_post=True, allow_put=True, default=GENERATED, validate=v.boolean, filter_convert=lambda s: v.boolean(s)
    ),
    "allowed_address_pairs": Attribute(allow_post=True, allow_put=True, default=GENERATED, validate=address_pairs),
}
