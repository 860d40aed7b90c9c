"""Store vs controller: what each controller should know, what it does know, and the difference.

The expected view is computed from the store with the same mapping the pool
uses. The actual view comes from the controller simulator's ``GET
/_sim/state`` (Big Switch profile: networks, subnets, ports, attachments,
routers with their interfaces, floating IPs) or Floodlight's ``GET
.../networks`` list (Floodlight keeps only names, gateways and attachment MACs,
so only those are compared). Real Big Switch controllers expose no such read-back.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

from server_plugin.controller import mapping
from server_plugin.controller.servers import ServerAddress
from server_plugin.store import mirror_ops
from server_plugin.store.db import Store

NETWORK_KEYS = ("id", "tenant_id", "name", "state", "gateway", "router:external", "shared")
SUBNET_KEYS = ("id", "cidr", "gateway_ip", "enable_dhcp")
PORT_KEYS = ("id", "mac_address", "device_id", "state")


def _fixed_ips(port: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f.get("subnet_id"), f.get("ip_address")) for f in port.get("fixed_ips") or [])


def _normal_network(net: dict[str, Any]) -> dict[str, Any]:
    item = {k: net.get(k) for k in NETWORK_KEYS}
    item["subnets"] = sorted(({k: s.get(k) for k in SUBNET_KEYS} for s in net.get("subnets") or []), key=lambda s: str(s["id"]))
    ports = {}
    for port in net.get("ports") or []:
        entry = {k: port.get(k) for k in PORT_KEYS}
        entry["fixed_ips"] = _fixed_ips(port)
        attachment = port.get("attachment") or None
        entry["attachment"] = {"id": attachment.get("id"), "mac": attachment.get("mac")} if attachment and attachment.get("id") else None
        ports[port["id"]] = entry
    item["ports"] = ports
    return item


def expected_state(store: Store, profile: str, page_size: int = 500) -> dict[str, dict[str, Any]]:
    """network id -> what the controller should hold, from the store."""
    networks: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        page = store.run_sync(mirror_ops.topology_page, after, page_size, readonly=True)
        if not page:
            return networks
        for view in page:
            topo = mapping.topology_network(mapping.BIGSWITCH, view)
            if profile == mapping.FLOODLIGHT:
                networks[view["id"]] = _floodlight_expected(topo)
            else:
                networks[view["id"]] = _normal_network(topo)
        after = page[-1]["id"]


def _floodlight_expected(topo: dict[str, Any]) -> dict[str, Any]:
    ports = {p["id"]: p["mac_address"].upper() for p in topo["ports"] if p.get("device_id")}
    return {"id": topo["id"], "name": topo.get("name") or topo["id"], "gateway": topo.get("gateway") or None, "ports": ports}


def fetch_actual(
    server: ServerAddress, profile: str, use_ssl: bool = False, timeout: float = 30.0, context: ssl.SSLContext | None = None
) -> dict[str, dict[str, Any]]:
    """network id -> what the controller holds."""
    return fetch_state(server, profile, use_ssl, timeout, context)["networks"]


def fetch_state(
    server: ServerAddress, profile: str, use_ssl: bool = False, timeout: float = 30.0, context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """What the controller holds: ``networks`` by id, and (Big Switch) ``routers`` and ``floatingips`` by id."""
    scheme = "https" if use_ssl else "http"
    if profile == mapping.FLOODLIGHT:
        url = f"{scheme}://{server.netloc}/networkService/v1.1/tenants/default/networks"
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            data = json.load(resp)
        networks = {
            n["guid"]: {
                "id": n["guid"], "name": n.get("name"), "gateway": n.get("gateway") or None,
                "ports": {pm["port"]: pm["mac"].upper() for pm in n.get("portMac") or []},
            }
            for n in data
        }  # fmt: skip
        return {"networks": networks, "routers": None, "floatingips": None}
    with urllib.request.urlopen(f"{scheme}://{server.netloc}/_sim/state", timeout=timeout, context=context) as resp:
        data = json.load(resp)
    return {
        "networks": {n["id"]: _normal_network(n) for n in data.get("networks", [])},
        "routers": {r["id"]: _normal_router(r) for r in data.get("routers") or []},
        "floatingips": {f["id"]: _normal_floatingip(f) for f in data.get("floatingips") or []},
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


def _normal_floatingip(fip: dict[str, Any]) -> dict[str, Any]:
    return {k: fip.get(k) for k in mapping.FLOATINGIP_KEYS}


def expected_l3(store: Store, profile: str, page_size: int = 500) -> dict[str, Any]:
    """``routers`` and ``floatingips`` by id, as the controller should hold them (None for Floodlight, which has neither)."""
    if profile == mapping.FLOODLIGHT:
        return {"routers": None, "floatingips": None}
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
    return {"routers": routers, "floatingips": floatingips}


def compare_l3(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences in routers (with interfaces) and floating IPs; nothing when either side does not have them."""
    problems = []
    for kind, name in (("routers", "router"), ("floatingips", "floating IP")):
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


def compare(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences; empty when the controller holds exactly the store's view."""
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
