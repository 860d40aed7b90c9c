"""Strict checks of the Big Switch request bodies.

A real controller refuses malformed bodies, and a plugin bug that sends ``admin_state_up``
instead of ``state``, a bad MAC or a body for the wrong object must show up in tests as a
400 that names the problem, not as silently stored garbage. Each checker returns the body
(MACs lower-cased) or raises a 400 ``ApiError`` whose message is ``<where>: <problem>``.
Unknown keys are accepted, as a controller ignores fields it does not use.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from controller_sim.replies import ApiError, bad_request

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
STATES = ("UP", "DOWN")

Obj = dict[str, Any]


def _fail(where: str, problem: str) -> ApiError:
    return bad_request(f"{where}: {problem}")


def resource(body: Any, key: str) -> Obj:
    """``{key: {...}}`` -> the inner object."""
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object with a {key!r} key, not {type(body).__name__}")
    if key not in body:
        raise bad_request(f"the body has no {key!r} key")
    return check_object(body[key], key)


def check_object(value: Any, where: str) -> Obj:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _str(obj: Obj, key: str, where: str, *, required: bool = False, nullable: bool = False, empty: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise _fail(f"{where}.{key}", "missing")
        return None
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", f"must be a string, not {_kind(value)}")
    if not empty and not value:
        raise _fail(f"{where}.{key}", "must not be empty")
    return value


def _id(obj: Obj, key: str, where: str, expected: str | None = None, *, required: bool = True) -> str | None:
    value = _str(obj, key, where, required=required, empty=False)
    if value is not None and expected is not None and value != expected:
        raise _fail(f"{where}.{key}", f"{value!r} does not match {expected!r} in the URL")
    return value


def _mac(obj: Obj, key: str, where: str, *, required: bool = True) -> str | None:
    value = _str(obj, key, where, required=required)
    if value is None:
        return None
    if not MAC_RE.match(value):
        raise _fail(f"{where}.{key}", f"{value!r} is not a MAC address")
    return value.lower()


def _ip(obj: Obj, key: str, where: str, *, empty: bool = False) -> str | None:
    value = _str(obj, key, where, nullable=True)
    if value is None or (empty and value == ""):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _fail(f"{where}.{key}", f"{value!r} is not an IP address") from None
    return value


def _state(obj: Obj, where: str) -> str:
    if "state" not in obj:
        raise _fail(f"{where}.state", 'missing ("UP" or "DOWN")')
    value = obj["state"]
    if value not in STATES:
        raise _fail(f"{where}.state", f'must be "UP" or "DOWN", not {value!r}')
    return value


def _bool(obj: Obj, key: str, where: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise _fail(f"{where}.{key}", f"must be a boolean, not {_kind(obj[key])}")


def _list(obj: Obj, key: str, where: str, *, nullable: bool = False) -> list[Any]:
    if key not in obj or (nullable and obj[key] is None):
        return []
    value = obj[key]
    if not isinstance(value, list):
        raise _fail(f"{where}.{key}", f"must be a list, not {_kind(value)}")
    return value


def check_subnet(subnet: Any, where: str, network_id: str | None) -> Obj:
    subnet = check_object(subnet, where)
    _id(subnet, "id", where)
    _id(subnet, "network_id", where, network_id, required=False)
    cidr = _str(subnet, "cidr", where, required=True)
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise _fail(f"{where}.cidr", f"{cidr!r} is not a CIDR") from None
    _ip(subnet, "gateway_ip", where)
    _str(subnet, "name", where, nullable=True)
    _bool(subnet, "enable_dhcp", where)
    for i, pool in enumerate(_list(subnet, "allocation_pools", where, nullable=True)):
        pool = check_object(pool, f"{where}.allocation_pools[{i}]")
        _ip(pool, "start", f"{where}.allocation_pools[{i}]")
        _ip(pool, "end", f"{where}.allocation_pools[{i}]")
    return subnet


def check_network(net: Any, where: str = "network", *, tenant: str | None = None, net_id: str | None = None) -> Obj:
    """A mapped network. ``tenant``/``net_id`` come from the URL; in a topology the
    network carries its own ``tenant_id``, which is then required."""
    net = check_object(net, where)
    nid = _id(net, "id", where, net_id)
    _id(net, "tenant_id", where, tenant, required=tenant is None)
    _str(net, "name", where, nullable=True)
    _state(net, where)
    _bool(net, "router:external", where)
    _bool(net, "shared", where)
    _ip(net, "gateway", where, empty=True)
    for i, subnet in enumerate(_list(net, "subnets", where)):
        check_subnet(subnet, f"{where}.subnets[{i}]", nid)
    for i, fip in enumerate(_list(net, "floatingips", where, nullable=True)):
        check_floatingip(fip, f"{where}.floatingips[{i}]", network_id=nid)
    return net


def check_port(port: Any, where: str = "port", *, net_id: str | None = None, port_id: str | None = None) -> Obj:
    port = check_object(port, where)
    _id(port, "id", where, port_id)
    _id(port, "network_id", where, net_id, required=False)
    port["mac_address"] = _mac(port, "mac_address", where)
    _str(port, "tenant_id", where, nullable=True)
    _str(port, "name", where, nullable=True)
    _str(port, "device_id", where, nullable=True)
    _str(port, "device_owner", where, nullable=True)
    _state(port, where)
    for i, fixed in enumerate(_list(port, "fixed_ips", where, nullable=True)):
        fixed = check_object(fixed, f"{where}.fixed_ips[{i}]")
        _str(fixed, "subnet_id", f"{where}.fixed_ips[{i}]", required=True)
        _ip(fixed, "ip_address", f"{where}.fixed_ips[{i}]")
    for i, group in enumerate(_list(port, "security_groups", where, nullable=True)):
        if not isinstance(group, str) or not group:
            raise _fail(f"{where}.security_groups[{i}]", f"must be a security group id, not {_kind(group)}")
    return port


def check_attachment(att: Any, where: str = "attachment") -> Obj | None:
    """``{"id": device id, "mac": mac}``; an empty or null id (a port without a device, as
    the topology sends it) means "no attachment" and gives None."""
    att = check_object(att, where)
    device = _str(att, "id", where, required=True, nullable=True)
    mac = _mac(att, "mac", where)
    if not device:
        return None
    return {"id": device, "mac": mac}


def check_router(router: Any, where: str = "router", *, tenant: str | None = None, router_id: str | None = None) -> Obj:
    router = check_object(router, where)
    _id(router, "id", where, router_id)
    _id(router, "tenant_id", where, tenant, required=tenant is None)
    _str(router, "name", where, nullable=True)
    _state(router, where)
    gw = router.get("external_gateway_info")
    if gw is not None:
        gw = check_object(gw, f"{where}.external_gateway_info")
        _id(gw, "network_id", f"{where}.external_gateway_info")
    _list(router, "router_rules", where, nullable=True)
    return router


def check_interface(iface: Any, where: str = "interface", *, iface_id: str | None = None) -> Obj:
    """``{"id": net id, "network": mapped network, "subnet": mapped subnet}``."""
    iface = check_object(iface, where)
    nid = _id(iface, "id", where, iface_id)
    if "network" in iface and iface["network"] is not None:
        network = check_object(iface["network"], f"{where}.network")
        _id(network, "id", f"{where}.network", nid)
    if "subnet" not in iface:
        raise _fail(f"{where}.subnet", "missing")
    check_subnet(iface["subnet"], f"{where}.subnet", nid)
    return iface


def check_floatingip(fip: Any, where: str = "floatingip", *, fip_id: str | None = None, network_id: str | None = None) -> Obj:
    fip = check_object(fip, where)
    _id(fip, "id", where, fip_id, required=fip_id is None)
    _id(fip, "floating_network_id", where, network_id, required=network_id is None)
    _ip(fip, "floating_ip_address", where)
    _ip(fip, "fixed_ip_address", where)
    _str(fip, "port_id", where, nullable=True)
    _str(fip, "router_id", where, nullable=True)
    _str(fip, "tenant_id", where, nullable=True)
    return fip


SG_DIRECTIONS = ("ingress", "egress")
SG_ETHERTYPES = ("IPv4", "IPv6")


def _port_number(obj: Obj, key: str, where: str) -> None:
    value = obj.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535):
        raise _fail(f"{where}.{key}", f"must be null or an integer 0..65535, not {value!r}")


def check_security_group_rule(rule: Any, where: str, group_id: str) -> Obj:
    rule = check_object(rule, where)
    _id(rule, "id", where)
    _id(rule, "security_group_id", where, group_id)
    if rule.get("direction") not in SG_DIRECTIONS:
        raise _fail(f"{where}.direction", f"must be one of {list(SG_DIRECTIONS)}, not {rule.get('direction')!r}")
    if rule.get("ethertype") not in SG_ETHERTYPES:
        raise _fail(f"{where}.ethertype", f"must be one of {list(SG_ETHERTYPES)}, not {rule.get('ethertype')!r}")
    _str(rule, "protocol", where, nullable=True)
    _port_number(rule, "port_range_min", where)
    _port_number(rule, "port_range_max", where)
    prefix = _str(rule, "remote_ip_prefix", where, nullable=True)
    if prefix is not None:
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise _fail(f"{where}.remote_ip_prefix", f"{prefix!r} is not a CIDR") from None
    remote = _str(rule, "remote_group_id", where, nullable=True)
    if prefix is not None and remote is not None:
        raise _fail(where, "remote_ip_prefix and remote_group_id are exclusive")
    return rule


def check_security_group(group: Any, where: str = "security-group", *, group_id: str | None = None) -> Obj:
    """networking-bigswitch's ``security-group``: id, tenant_id, name, description, security_group_rules."""
    group = check_object(group, where)
    _id(group, "id", where, group_id)
    _id(group, "tenant_id", where)
    _str(group, "name", where, nullable=True)
    _str(group, "description", where, nullable=True)
    if "security_group_rules" not in group:
        raise _fail(f"{where}.security_group_rules", "missing")
    for i, rule in enumerate(_list(group, "security_group_rules", where)):
        check_security_group_rule(rule, f"{where}.security_group_rules[{i}]", group["id"])
    return group


def check_topology(body: Any) -> Obj:
    """The whole ``PUT /topology`` body; every object in it is checked."""
    if not isinstance(body, dict):
        raise bad_request(f"the topology must be a JSON object, not {_kind(body)}")
    if "networks" not in body:
        raise bad_request("the topology has no 'networks' key")
    seen: set[tuple[str, str]] = set()
    for i, net in enumerate(_list(body, "networks", "topology")):
        where = f"networks[{i}]"
        check_network(net, where)
        key = (net["tenant_id"], net["id"])
        if key in seen:
            raise _fail(f"{where}.id", f"network {net['id']!r} of tenant {net['tenant_id']!r} appears twice")
        seen.add(key)
        port_ids: set[str] = set()
        for j, port in enumerate(_list(net, "ports", where, nullable=True)):
            pwhere = f"{where}.ports[{j}]"
            check_port(port, pwhere, net_id=net["id"])
            if port["id"] in port_ids:
                raise _fail(f"{pwhere}.id", f"port {port['id']!r} appears twice")
            port_ids.add(port["id"])
            if port.get("attachment") is not None:
                check_attachment(port["attachment"], f"{pwhere}.attachment")
    seen.clear()
    for i, router in enumerate(_list(body, "routers", "topology", nullable=True)):
        where = f"routers[{i}]"
        check_router(router, where)
        key = (router["tenant_id"], router["id"])
        if key in seen:
            raise _fail(f"{where}.id", f"router {router['id']!r} of tenant {router['tenant_id']!r} appears twice")
        seen.add(key)
        for j, iface in enumerate(_list(router, "interfaces", where, nullable=True)):
            check_interface(iface, f"{where}.interfaces[{j}]")
    groups: set[str] = set()
    for i, group in enumerate(_list(body, "security-groups", "topology", nullable=True)):
        where = f"security-groups[{i}]"
        check_security_group(group, where)
        if group["id"] in groups:
            raise _fail(f"{where}.id", f"security group {group['id']!r} appears twice")
        groups.add(group["id"])
    return body
