"""Store vs controller: what each controller should know, what it does know, and the difference.

The expected view is computed from the store with the same mapping the pool
uses. The actual view comes from the controller simulator's ``GET
/_sim/state`` (Big Switch profile) or Floodlight's ``GET .../networks`` list
(Floodlight keeps only names, gateways and attachment MACs, so only those are
compared). Real Big Switch controllers expose no such read-back.
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
    scheme = "https" if use_ssl else "http"
    if profile == mapping.FLOODLIGHT:
        url = f"{scheme}://{server.netloc}/networkService/v1.1/tenants/default/networks"
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            data = json.load(resp)
        return {
            n["guid"]: {
                "id": n["guid"], "name": n.get("name"), "gateway": n.get("gateway") or None,
                "ports": {pm["port"]: pm["mac"].upper() for pm in n.get("portMac") or []},
            }
            for n in data
        }  # fmt: skip
    with urllib.request.urlopen(f"{scheme}://{server.netloc}/_sim/state", timeout=timeout, context=context) as resp:
        data = json.load(resp)
    return {n["id"]: _normal_network(n) for n in data.get("networks", [])}


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
