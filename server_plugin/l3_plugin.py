"""The L3 extension: routers, interfaces, gateways, floating IPs, composed with the core plugin.

``L3Plugin`` holds the core plugin (its store, settings and ``run``: every
mutation is an operation of ops/l3.py with the rules of controller/mirror.py)
and adds its ``L3PortRules`` to the core's port operations when it is
registered (server_plugin/extensions.py). What the controllers get is in
controller/l3_mapping.py.
"""

from __future__ import annotations

from typing import Any

from server_plugin import exceptions as exc
from server_plugin.attributes import RESOURCES
from server_plugin.context import RequestContext
from server_plugin.extensions import Collection, Extension
from server_plugin.ops import l3
from server_plugin.ops.base import STALE_RETRIES, StaleLocks
from server_plugin.plugin import RestProxyPlugin
from server_plugin.store import floatingips as fip_ops
from server_plugin.store import interfaces as iface_ops
from server_plugin.store import mirror_ops
from server_plugin.store import routers as router_ops
from server_plugin.store.listing import ListQuery
from server_plugin.validators import is_uuid_like, new_uuid

Body = dict[str, Any]


class L3Plugin:
    """Routers and floating IPs over the core plugin."""

    port_rules = l3.L3PortRules()

    def __init__(self, core: RestProxyPlugin) -> None:
        self.core = core
        self.store = core.store
        self.settings = core.settings

    # -- routers ----------------------------------------------------------------------------------
    async def create_router(self, context: RequestContext, router: Body) -> Body:
        return await self.core.run(l3.CreateRouter(context, dict(router["router"], id=new_uuid()), self.settings))

    async def _gateway_network(self, router_id: str) -> str | None:
        return await self.store.run(mirror_ops.gateway_network, router_id, readonly=True) if is_uuid_like(router_id) else None

    async def update_router(self, context: RequestContext, id: str, router: Body) -> Body:
        gateway_network = await self._gateway_network(id)
        return await self.core.run(l3.UpdateRouter(context, id, router["router"], self.settings, gateway_network))

    async def delete_router(self, context: RequestContext, id: str) -> None:
        await self.core.run(l3.DeleteRouter(context, id, await self._gateway_network(id)))

    async def get_router(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.core.read(router_ops.get_router, context, id, fields=fields)

    async def get_routers(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        return await self.core.read(router_ops.get_routers, context, query or ListQuery(), fields=fields)

    # -- interfaces ---------------------------------------------------------------------------
    async def _interface_target(self, info: Any) -> tuple[str | None, str | None]:
        """(network, port) an interface request names, read before its locks are taken."""
        if not isinstance(info, dict):
            return None, None
        port_id, subnet_id = info.get("port_id"), info.get("subnet_id")
        if is_uuid_like(port_id):
            return await self.store.run(mirror_ops.network_of_port, port_id, readonly=True), port_id
        if is_uuid_like(subnet_id):
            return await self.store.run(mirror_ops.network_of_subnet, subnet_id, readonly=True), None
        return None, None

    async def add_router_interface(self, context: RequestContext, router_id: str, interface_info: Any) -> Body:
        net_id, port_id = await self._interface_target(interface_info)
        return await self.core.run(l3.AddRouterInterface(context, router_id, interface_info, self.settings, net_id, port_id))

    async def remove_router_interface(self, context: RequestContext, router_id: str, interface_info: Any) -> Body:
        net_id, port_id = await self._interface_target(interface_info)
        if port_id is None and isinstance(interface_info, dict) and is_uuid_like(interface_info.get("subnet_id")):
            # By subnet: the port that goes is the router's interface there; its calls keep their order too.
            subnet_id = interface_info["subnet_id"]
            port_id = await self.store.run(iface_ops.interface_port_on_subnet, router_id, subnet_id, readonly=True)
        return await self.core.run(l3.RemoveRouterInterface(context, router_id, interface_info, net_id, port_id))

    # -- floating IPs ----------------------------------------------------------------------------
    async def create_floatingip(self, context: RequestContext, floatingip: Body) -> Body:
        return await self.core.run(l3.CreateFloatingIP(context, dict(floatingip["floatingip"], id=new_uuid()), self.settings))

    async def _floatingip_network(self, fip_id: str) -> tuple[str | None, str | None]:
        found = await self.store.run(fip_ops.floatingip_network, fip_id, readonly=True) if is_uuid_like(fip_id) else None
        return found or (None, None)

    async def update_floatingip(self, context: RequestContext, id: str, floatingip: Body) -> Body:
        for _ in range(STALE_RETRIES):
            net_id, old_port = await self._floatingip_network(id)
            try:
                return await self.core.run(l3.UpdateFloatingIP(context, id, floatingip["floatingip"], net_id, old_port))
            except StaleLocks:
                continue  # associated elsewhere meanwhile: lock what it is now
        raise StaleLocks()

    async def delete_floatingip(self, context: RequestContext, id: str) -> None:
        net_id, _ = await self._floatingip_network(id)
        await self.core.run(l3.DeleteFloatingIP(context, id, net_id))

    async def get_floatingip(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.core.read(fip_ops.get_floatingip, context, id, fields=fields)

    async def get_floatingips(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        return await self.core.read(fip_ops.get_floatingips, context, query or ListQuery(), fields=fields)


# The l3 extensions (quantum/extensions/l3.py, l3_ext_gw_mode.py).
L3_DESCRIPTORS = (
    {
        "alias": "router",
        "name": "Neutron L3 Router",
        "description": "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external "
        "networks via a NAT gateway.",
        "updated": "2012-07-20T10:00:00-00:00",
        "links": [],
    },
    {
        "alias": "external-net",
        "name": "Neutron external network",
        "description": "Adds external network attribute to network resource.",
        "updated": "2013-01-14T10:00:00-00:00",
        "links": [],
    },
    {
        "alias": "ext-gw-mode",
        "name": "Neutron L3 Configurable external gateway mode",
        "description": "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
        "updated": "2013-03-28T10:00:00-00:00",
        "links": [],
    },
)


def l3_extension(plugin: L3Plugin) -> Extension:
    """Routers (with their interface actions) and floating IPs; its rules join the core's port operations."""
    return Extension(
        "l3",
        plugin,
        collections=(
            Collection(
                "routers",
                "router",
                RESOURCES["routers"][1],
                exc.RouterNotFound,
                id_key="router_id",
                actions=("add_router_interface", "remove_router_interface"),
            ),  # fmt: skip
            Collection("floatingips", "floatingip", RESOURCES["floatingips"][1], exc.FloatingIPNotFound, id_key="floatingip_id"),
        ),
        descriptors=L3_DESCRIPTORS,
        port_rules=plugin.port_rules,
    )
