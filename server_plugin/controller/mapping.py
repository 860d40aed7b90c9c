"""Quantum objects -> controller bodies and paths, per controller profile.

``bigswitch``: the Grizzly/Havana wire protocol (facts §2b): ``admin_state_up``
becomes ``state`` UP/DOWN, ``status`` is dropped, networks carry their full
subnets and a ``gateway``; ports and attachments are separate resources.

``floodlight``: Floodlight's VirtualNetworkFilter reads only a network's
``id``, ``name`` and ``gateway`` and an attachment's ``mac``, and its JSON
parser takes *any* nested ``"id"`` for the network id, so network bodies must
carry nothing nested. It ignores ports, routers and ``/topology``, so a sync
replays networks and attachments one by one.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import quote

from server_plugin.ops.base import Call, Profile

BIGSWITCH = "bigswitch"
FLOODLIGHT = "floodlight"
PROFILES = (BIGSWITCH, FLOODLIGHT)

PORT_KEYS = (
    "id", "name", "network_id", "tenant_id", "mac_address", "fixed_ips",
    "device_id", "device_owner", "binding:host_id", "binding:vif_type",
)  # fmt: skip


def map_state(obj: dict[str, Any]) -> dict[str, Any]:
    mapped = {k: v for k, v in obj.items() if k not in ("admin_state_up", "status", "project_id", "created_at", "updated_at")}
    mapped["state"] = "UP" if obj.get("admin_state_up", True) else "DOWN"
    return mapped


def first_gateway(subnets: list[dict[str, Any]]) -> str:
    return next((s["gateway_ip"] for s in subnets if s.get("gateway_ip")), "")


def floodlight_gateway(gateway: str | None) -> str | None:
    """The gateway Floodlight keeps for one sent: dotted IPv4 only (anything else is logged and dropped), never 0.0.0.0."""
    if not gateway:
        return None
    try:
        address = ipaddress.IPv4Address(gateway)
    except ValueError:
        return None
    return None if int(address) == 0 else str(address)


def network_payload(profile: str, view: dict[str, Any], floatingips: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``network`` object for POST/PUT (``view`` = network dict with full subnet dicts)."""
    subnets = view.get("subnets", [])
    if profile == FLOODLIGHT:
        # An IPv6 first gateway is sent as none: Floodlight would drop it anyway.
        return {"id": view["id"], "name": view.get("name") or view["id"], "gateway": floodlight_gateway(first_gateway(subnets)) or ""}
    mapped = map_state(view)
    mapped["subnets"] = [map_state(s) for s in subnets]
    mapped["gateway"] = first_gateway(subnets)
    mapped["router:external"] = bool(view.get("router:external", False))
    mapped.pop("ports", None)
    if floatingips is not None:
        mapped["floatingips"] = floatingips
    return mapped


def port_payload(port: dict[str, Any]) -> dict[str, Any]:
    """A Big Switch port body. ``security_groups`` (the group ids) as networking-bigswitch sent them: its port
    dicts were Neutron's, extended by the security group mixin, in each port call and in the topology."""
    mapped = {k: port.get(k) for k in PORT_KEYS}
    mapped["state"] = "UP" if port.get("admin_state_up", True) else "DOWN"
    mapped["security_groups"] = sorted(port.get("security_groups") or [])
    return mapped


def attachment_payload(port: dict[str, Any]) -> dict[str, Any]:
    return {"id": port["device_id"], "mac": port["mac_address"]}


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


def segment(value: str) -> str:
    """An id as one path segment, percent-encoded (UTF-8): a tenant id is any string a client sent, and a space,
    CR/LF, "/", "?", "#" or "%" in it must not change the path (or the request line), nor may "." or ".." (a
    server may remove dot segments). A UUID is unchanged (and costs one regex match, not ``quote``'s work).
    Every path built from ids goes through here."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    if _PLAIN_SEGMENT(value) is not None:
        return value
    return quote(value, safe="")


def network_path(tenant_id: str, net_id: str | None = None) -> str:
    return f"/tenants/{segment(tenant_id)}/networks" + (f"/{segment(net_id)}" if net_id else "")


def port_path(tenant_id: str, net_id: str, port_id: str | None = None) -> str:
    return network_path(tenant_id, net_id) + "/ports" + (f"/{segment(port_id)}" if port_id else "")


def attachment_path(tenant_id: str, net_id: str, port_id: str) -> str:
    return port_path(tenant_id, net_id, port_id) + "/attachment"


def topology_network(profile: str, view: dict[str, Any]) -> dict[str, Any]:
    """One network of a ``/topology`` body: mapped, with ports and their attachments."""
    mapped = network_payload(profile, view, floatingips=view.get("floatingips", []))
    ports = []
    for port in view.get("ports", []):
        entry = port_payload(port)
        entry["attachment"] = {"id": port.get("device_id", ""), "mac": port.get("mac_address")}
        ports.append(entry)
    mapped["ports"] = ports
    return mapped


# -- l3 (Big Switch only: Floodlight ignores routers and floating IPs) --------------------------

FLOATINGIP_KEYS = ("id", "tenant_id", "floating_ip_address", "floating_network_id", "router_id", "port_id", "fixed_ip_address")


def router_payload(router: dict[str, Any]) -> dict[str, Any]:
    """The ``router`` object: ``id, tenant_id, name, state, external_gateway_info`` ({network_id, enable_snat} or null)."""
    gateway = router.get("external_gateway_info")
    return {
        "id": router["id"],
        "tenant_id": router["tenant_id"],
        "name": router.get("name", ""),
        "state": "UP" if router.get("admin_state_up", True) else "DOWN",
        "external_gateway_info": {"network_id": gateway["network_id"], "enable_snat": bool(gateway.get("enable_snat", True))}
        if gateway
        else None,
    }


def interface_payload(interface: dict[str, Any]) -> dict[str, Any]:
    """``{"id": network id, "network": mapped network, "subnet": mapped subnet}`` (the network id is the interface id)."""
    network = {k: v for k, v in interface["network"].items() if k not in ("floatingips", "ports")}
    return {"id": interface["id"], "network": network_payload(BIGSWITCH, network), "subnet": map_state(interface["subnet"])}


def floatingip_payload(fip: dict[str, Any]) -> dict[str, Any]:
    return {k: fip.get(k) for k in FLOATINGIP_KEYS}


def router_path(tenant_id: str, router_id: str | None = None) -> str:
    return f"/tenants/{segment(tenant_id)}/routers" + (f"/{segment(router_id)}" if router_id else "")


def interface_path(tenant_id: str, router_id: str, net_id: str | None = None) -> str:
    return router_path(tenant_id, router_id) + "/interfaces" + (f"/{segment(net_id)}" if net_id else "")


def floatingip_path(tenant_id: str, fip_id: str) -> str:
    return f"/tenants/{segment(tenant_id)}/floatingips/{segment(fip_id)}"


def topology_router(view: dict[str, Any]) -> dict[str, Any]:
    """One router of a ``/topology`` body: mapped, with its ``interfaces``."""
    mapped = router_payload(view)
    mapped["interfaces"] = [interface_payload(i) for i in view.get("interfaces", [])]
    return mapped


# -- the calls of a change: pure functions of (profile, before, after), see ops/base.py --------


def _network_put(profile: Profile, view: dict[str, Any] | None) -> list[Call]:
    if view is None:
        return []
    return [Call("PUT", network_path(view["tenant_id"], view["id"]), {"network": network_payload(profile.name, view)})]


def network_calls(profile: Profile, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Call]:
    """A network (with full subnets) created, updated or deleted."""
    if before is None:
        if after is None:
            return []
        if profile.name == FLOODLIGHT:
            return _network_put(profile, after)
        return [Call("POST", network_path(after["tenant_id"]), {"network": network_payload(profile.name, after)})]
    if after is not None:
        return _network_put(profile, after)
    delete = Call("DELETE", network_path(before["tenant_id"], before["id"]), ignore=(404,))
    if profile.name == FLOODLIGHT:
        # Floodlight finds the network to delete by its name, which a later network of the same name takes
        # over (and a network it lacks is a 500 while it has others): put it first, so the name is its own.
        return [*_network_put(profile, before), delete]
    return [delete]


def subnet_calls(profile: Profile, before: Any, network: dict[str, Any] | None) -> list[Call]:
    """A subnet updated or deleted: a PUT of its network as it now is (``network`` carries ``attached_ports``).

    Floodlight keeps a gateway that a PUT without one cannot clear: a network left
    without a gateway is deleted and put again, with its attachments."""
    if network is None or profile.name != FLOODLIGHT or first_gateway(network["subnets"]):
        return _network_put(profile, network)
    reattach = [
        Call("PUT", attachment_path(network["tenant_id"], network["id"], port["id"]), {"attachment": attachment_payload(port)})
        for port in network["attached_ports"]
    ]
    return [*network_calls(profile, network, None), *_network_put(profile, network), *reattach]


def port_calls(profile: Profile, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Call]:
    """Port resource and attachment calls for a port (with ``network_tenant_id``) going from ``before`` to ``after``."""
    port = after or before
    if port is None:
        return []
    tenant, net_id, port_id = port["network_tenant_id"], port["network_id"], port["id"]
    bigswitch = profile.name == BIGSWITCH
    calls: list[Call] = []
    if bigswitch:
        if before is None:
            calls.append(Call("POST", port_path(tenant, net_id), {"port": port_payload(port)}))
        elif after is not None:
            calls.append(Call("PUT", port_path(tenant, net_id, port_id), {"port": port_payload(port)}))
    old_device = before["device_id"] if before else ""
    new_device = after["device_id"] if after else ""
    attachment = attachment_path(tenant, net_id, port_id)
    moved = old_device != new_device or (before and after and before["mac_address"] != after["mac_address"])
    if old_device and (moved or after is None):
        calls.append(Call("DELETE", attachment, ignore=(404,)))
    if new_device and (moved or before is None):
        calls.append(Call("PUT", attachment, {"attachment": attachment_payload(after)}))
    if after is None and bigswitch:
        calls.append(Call("DELETE", port_path(tenant, net_id, port_id), ignore=(404,)))
    return calls
