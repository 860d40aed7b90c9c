"""The L3 extension's controller calls: pure functions of (profile, before, after), as in mapping.py.

Big Switch only (facts §2b-2c); Floodlight ignores routers and floating IPs, so
only their hidden ports (port_calls) reach it.

* routers: ``POST/PUT/DELETE /tenants/{t}/routers[/{id}]`` with ``{"router": {...}}``;
* interfaces: ``POST .../routers/{id}/interfaces`` with ``{"interface": {"id": net, "network", "subnet"}}``
  and ``DELETE .../interfaces/{net}``: one per (router, network);
* floating IPs: with the pool's ``floatingip`` capability ``PUT/DELETE
  /tenants/{t}/floatingips/{id}``; without it, a PUT of each external network
  carrying all its ``floatingips``.
"""

from __future__ import annotations

from typing import Any

from server_plugin.controller.mapping import (
    BIGSWITCH,
    floatingip_path,
    interface_path,
    interface_payload,
    network_calls,
    router_path,
    router_payload,
)
from server_plugin.ops.base import Call, Profile

FLOATINGIP_CAPABILITY = "floatingip"


def router_calls(profile: Profile, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Call]:
    """A router (its API dict) created, updated or deleted."""
    router = after or before
    if profile.name != BIGSWITCH or router is None:
        return []
    tenant = router["tenant_id"]
    if before is None:
        return [Call("POST", router_path(tenant), {"router": router_payload(router)})]
    if after is not None:
        return [Call("PUT", router_path(tenant, router["id"]), {"router": router_payload(router)})]
    return [Call("DELETE", router_path(tenant, router["id"]), ignore=(404,))]


def interface_calls(profile: Profile, before: Any, after: dict[str, Any]) -> list[Call]:
    """The controller's interface for (router, network) as it now is: ``after`` = {router, network_id, interface};
    posted, or deleted when no interface is left (``interface`` None)."""
    if profile.name != BIGSWITCH:
        return []
    router, net_id, interface = after["router"], after["network_id"], after["interface"]
    tenant = router["tenant_id"]
    if interface is None:
        return [Call("DELETE", interface_path(tenant, router["id"], net_id), ignore=(404,))]
    return [Call("POST", interface_path(tenant, router["id"]), {"interface": interface_payload(interface)})]


def floatingip_calls(profile: Profile, before: Any, after: dict[str, Any]) -> list[Call]:
    """Floating IPs changed: ``after`` = {"floatingips": [{id, tenant_id, floatingip (None: gone)}],
    "networks": their external networks as they now are}."""
    if profile.name != BIGSWITCH:
        return []
    if FLOATINGIP_CAPABILITY in profile.capabilities:
        calls = []
        for change in after["floatingips"]:
            path = floatingip_path(change["tenant_id"], change["id"])
            if change["floatingip"] is None:
                calls.append(Call("DELETE", path, ignore=(404,)))
            else:
                calls.append(Call("PUT", path, {"floatingip": change["floatingip"]}))
        return calls
    return [call for network in after["networks"] for call in network_calls(profile, network, network)]
