"""RestProxyPlugin: the Quantum v2 core plugin over the SQL store.

Every method returns a Deferred (it is a coroutine): the database work runs in
the store's thread pool. The method signatures follow Quantum's v2 plugin
interface (``create_network(context, {"network": {...}})``); later layers
(controller pool, agent channel, L3) extend this class.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from server_plugin.context import RequestContext
from server_plugin.store import networks as net_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.db import Store
from server_plugin.store.listing import ListQuery
from server_plugin.store.settings import CoreSettings

Body = dict[str, Any]


def strip_fields(item: Body, fields: list[str] | None) -> Body:
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


class RestProxyPlugin:
    """Quantum v2 core plugin: networks, subnets, ports."""

    log = Logger()
    supported_extension_aliases = ["binding"]

    def __init__(self, store: Store, settings: CoreSettings | None = None) -> None:
        self.store = store
        self.settings = settings or CoreSettings()

    # -- networks
    async def create_network(self, context: RequestContext, network: Body) -> Body:
        result = await self.store.run(net_ops.create_network, context, network["network"])
        self.log.info("network {net_id} created for tenant {tenant_id}", net_id=result["id"], tenant_id=result["tenant_id"])
        return result

    async def update_network(self, context: RequestContext, id: str, network: Body) -> Body:
        return await self.store.run(net_ops.update_network, context, id, network["network"])

    async def delete_network(self, context: RequestContext, id: str) -> None:
        await self.store.run(net_ops.delete_network, context, id)
        self.log.info("network {net_id} deleted", net_id=id)

    async def get_network(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(net_ops.get_network, context, id, readonly=True), fields)

    async def get_networks(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(net_ops.get_networks, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]

    # -- subnets
    async def create_subnet(self, context: RequestContext, subnet: Body) -> Body:
        return await self.store.run(net_ops.create_subnet, context, subnet["subnet"], self.settings)

    async def update_subnet(self, context: RequestContext, id: str, subnet: Body) -> Body:
        return await self.store.run(net_ops.update_subnet, context, id, subnet["subnet"], self.settings)

    async def delete_subnet(self, context: RequestContext, id: str) -> None:
        await self.store.run(net_ops.delete_subnet, context, id)

    async def get_subnet(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(net_ops.get_subnet, context, id, readonly=True), fields)

    async def get_subnets(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(net_ops.get_subnets, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]

    # -- ports
    async def create_port(self, context: RequestContext, port: Body) -> Body:
        return await self.store.run(port_ops.create_port, context, port["port"], self.settings)

    async def update_port(self, context: RequestContext, id: str, port: Body) -> Body:
        return await self.store.run(port_ops.update_port, context, id, port["port"], self.settings)

    async def delete_port(self, context: RequestContext, id: str) -> None:
        await self.store.run(port_ops.delete_port, context, id)

    async def get_port(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(port_ops.get_port, context, id, readonly=True), fields)

    async def get_ports(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(port_ops.get_ports, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]
