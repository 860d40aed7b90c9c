"""Store vs controller: what each controller should know, what it does know, and the difference.

The expected view is computed from the store with the same mapping the pool
uses. Floodlight is read through its own API, by the code the server's
watchdog uses (controller/views.py): its network list, with names, gateways and
attachment MACs, all it keeps. The Big Switch protocol has no read of a
controller's state; only the controller simulator offers one (``GET
/_sim/state``: networks, subnets, ports with their security group ids,
attachments, routers with their interfaces, floating IPs, security groups with
their rules), which is what ``check`` compares in the tests. Floodlight keeps no
security groups, and none are sent to it.
"""

from __future__ import annotations

from typing import Any

from server_plugin.controller import mapping, sg_mapping, views
from server_plugin.controller.pool import ServerPool
from server_plugin.controller.servers import ServerHealth
from server_plugin.store import mirror_ops
from server_plugin.store import security_groups as sg_ops
from server_plugin.store.db import Store

NETWORK_KEYS = ("id", "tenant_id", "name", "state", "gateway", "router:external", "shared")
SUBNET_KEYS = ("id", "cidr", "gateway_ip", "enable_dhcp")
PORT_KEYS = ("id", "mac_address", "device_id", "state")
SIM_STATE_PATH = "/_sim/state"


def _fixed_ips(port: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f.get("subnet_id"), f.get("ip_address")) for f in port.get("fixed_ips") or [])


def _normal_network(net: dict[str, Any]) -> dict[str, Any]:
    item = {k: net.get(k) for k in NETWORK_KEYS}
    item["subnets"] = sorted(({k: s.get(k) for k in SUBNET_KEYS} for s in net.get("subnets") or []), key=lambda s: str(s["id"]))
    ports = {}
    for port in net.get("ports") or []:
        entry = {k: port.get(k) for k in PORT_KEYS}
        entry["fixed_ips"] = _fixed_ips(port)
        entry["security_groups"] = sorted(port.get("security_groups") or [])
        attachment = port.get("attachment") or None
        entry["attachment"] = {"id": attachment.get("id"), "mac": attachment.get("mac")} if attachment and attachment.get("id") else None
        ports[port["id"]] = entry
    item["ports"] = ports
    return item


def expected_state(store: Store, profile: str, page_size: int = 500) -> dict[str, dict[str, Any]]:
    """network id -> what the controller should hold, from the store."""
    if profile == mapping.FLOODLIGHT:
        return store.run_sync(views.store_floodlight_view, readonly=True)
    networks: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        page = store.run_sync(mirror_ops.topology_page, after, page_size, readonly=True)
        if not page:
            return networks
        for view in page:
            networks[view["id"]] = _normal_network(mapping.topology_network(mapping.BIGSWITCH, view))
        after = page[-1]["id"]


class CannotRead(Exception):
    """The controller offers no way to read its state, or did not answer; the message says which, plainly."""


async def read_state(pool: ServerPool, health: ServerHealth, profile: str) -> dict[str, Any]:
    """What the controller holds: ``networks`` by id, and (simulator) ``routers`` and ``floatingips`` by id (None: not kept)."""
    if profile == mapping.FLOODLIGHT:
        try:
            response, networks, _ = await views.read_floodlight_view(pool, health)
        except views.NotFloodlight as e:
            raise CannotRead(f"{e} (is it Floodlight?)") from None
        if networks is None:
            hint = "" if response.status == 0 else " (is it Floodlight?)"
            raise CannotRead(f"cannot read its network list: {response.status} {response.reason}{hint}")
        return {"networks": networks, "routers": None, "floatingips": None}
    response = await pool.request_server(health, "GET", SIM_STATE_PATH, base="")
    data = response.json() if response.ok else None
    if not isinstance(data, dict) or "networks" not in data:
        if response.status == 0:
            raise CannotRead(f"cannot reach it: {response.reason}")
        raise CannotRead(
            "a Big Switch controller offers no way to read its state (the protocol has none; "
            f"GET {SIM_STATE_PATH} is the simulator's and answered {response.status} {response.reason}): nothing compared. "
            "It reports lost state itself (GET /health 409, or 409 to the next change); "
            "'restproxy-manage sync' sends it the store's state"
        )
    return {
        "networks": {n["id"]: _normal_network(n) for n in data.get("networks", [])},
        "routers": {r["id"]: _normal_router(r) for r in data.get("routers") or []},
        "floatingips": {f["id"]: _normal_floatingip(f) for f in data.get("floatingips") or []},
        "security_groups": {g["id"]: _normal_group(g) for g in data["security_groups"]} if "security_groups" in data else None,
    }


# -- l3: routers (with their interfaces) and floating IPs; Floodlight has neither --------------------

ROUTER_KEYS = ("id", "tenant_id", "name", "state", "external_gateway_info")


def _normal_router(router: dict[str, Any]) -> dict[str, Any]:
    """A router as sent (interfaces carry the full subnet) or as the simulator reports it (subnet_id, cidr).

    An interface is compared by network, subnet and cidr: a controller keeps the subnet as it
    was when the interface was added, and a later change of the subnet's gateway (allowed when
    the interface was made from a port) is not sent to it again.
    """
    item = {k: router.get(k) for k in ROUTER_KEYS}
    interfaces = []
    for iface in router.get("interfaces") or []:
        subnet = iface.get("subnet")
        if isinstance(subnet, dict):
            subnet_id, cidr = subnet.get("id"), subnet.get("cidr")
        else:
            subnet_id, cidr = iface.get("subnet_id"), iface.get("cidr")
        interfaces.append({"id": iface.get("id"), "subnet_id": subnet_id, "cidr": cidr})
    item["interfaces"] = sorted(interfaces, key=lambda i: str(i["id"]))
    return item


SG_KEYS = ("id", "tenant_id", "name", "description")
SG_RULE_KEYS = ("id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id")


def _normal_group(group: dict[str, Any]) -> dict[str, Any]:
    """A security group as sent (sg_mapping) or as the simulator reports it: its fields and its rules, by id."""
    item = {k: group.get(k) for k in SG_KEYS}
    rules = ({k: r.get(k) for k in SG_RULE_KEYS} for r in group.get("security_group_rules") or [])
    item["security_group_rules"] = sorted(rules, key=lambda r: str(r["id"]))
    return item


def _normal_floatingip(fip: dict[str, Any]) -> dict[str, Any]:
    return {k: fip.get(k) for k in mapping.FLOATINGIP_KEYS}


def expected_l3(store: Store, profile: str, page_size: int = 500) -> dict[str, Any]:
    """``routers`` and ``floatingips`` by id, as the controller should hold them (None for Floodlight, which has neither)."""
    if profile == mapping.FLOODLIGHT:
        return {"routers": None, "floatingips": None, "security_groups": None}
    routers: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        page = store.run_sync(mirror_ops.routers_page, after, page_size, readonly=True)
        if not page:
            break
        for view in page:
            routers[view["id"]] = _normal_router(mapping.topology_router(view))
        after = page[-1]["id"]
    floatingips: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        page = store.run_sync(mirror_ops.topology_page, after, page_size, readonly=True)
        if not page:
            break
        for view in page:
            for fip in view.get("floatingips", []):
                floatingips[fip["id"]] = _normal_floatingip(fip)
        after = page[-1]["id"]
    groups: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        page = store.run_sync(sg_ops.groups_page, after, page_size, readonly=True)
        if not page:
            break
        for group in page:
            groups[group["id"]] = _normal_group(sg_mapping.security_group_payload(group))
        after = page[-1]["id"]
    return {"routers": routers, "floatingips": floatingips, "security_groups": groups}


def compare_l3(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences in routers (with interfaces), floating IPs and security groups (with their rules); nothing when
    either side does not have them (Floodlight has none of them)."""
    problems = []
    for kind, name in (("routers", "router"), ("floatingips", "floating IP"), ("security_groups", "security group")):
        want_all, have_all = expected.get(kind), actual.get(kind)
        if want_all is None or have_all is None:
            continue
        for object_id in sorted(set(want_all) | set(have_all)):
            want, have = want_all.get(object_id), have_all.get(object_id)
            if have is None:
                problems.append(f"{name} {object_id}: missing on the controller")
            elif want is None:
                problems.append(f"{name} {object_id}: on the controller but not in the store")
            else:
                for key in sorted(set(want) | set(have)):
                    if want.get(key) != have.get(key):
                        problems.append(f"{name} {object_id}: {key} is {have.get(key)!r} on the controller, {want.get(key)!r} in the store")
    return problems


def compare(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]], profile: str = mapping.BIGSWITCH) -> list[str]:
    """Human-readable differences; empty when the controller holds exactly the store's view."""
    if profile == mapping.FLOODLIGHT:
        return views.compare(expected, actual)
    problems = []
    for net_id in sorted(set(expected) | set(actual)):
        want, have = expected.get(net_id), actual.get(net_id)
        if have is None:
            problems.append(f"network {net_id}: missing on the controller")
            continue
        if want is None:
            problems.append(f"network {net_id}: on the controller but not in the store")
            continue
        for key in sorted(set(want) | set(have)):
            if key == "ports":
                continue
            if want.get(key) != have.get(key):
                problems.append(f"network {net_id}: {key} is {have.get(key)!r} on the controller, {want.get(key)!r} in the store")
        want_ports, have_ports = want.get("ports", {}), have.get("ports", {})
        for port_id in sorted(set(want_ports) | set(have_ports)):
            if port_id not in have_ports:
                problems.append(f"port {port_id} (network {net_id}): missing on the controller")
            elif port_id not in want_ports:
                problems.append(f"port {port_id} (network {net_id}): on the controller but not in the store")
            elif want_ports[port_id] != have_ports[port_id]:
                problems.append(
                    f"port {port_id} (network {net_id}): {have_ports[port_id]!r} on the controller, {want_ports[port_id]!r} in the store"
                )
    return problems
