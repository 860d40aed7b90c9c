"""RestProxyPlugin: the Quantum v2 core plugin over the SQL store, mirrored to controllers.

Every method is a coroutine (the database work runs in the store's thread
pool). Signatures follow Quantum's v2 plugin interface
(``create_network(context, {"network": {...}})``). With a ControllerMirror,
every change is also sent to the controller pool (see controller/mirror.py for
the order and the undo rules); without one (``[RESTPROXY] servers`` empty) the
plugin is a plain store. Reads never leave the store. Whatever the store can
answer (404, 409, 400) is answered before any controller call.

Each mutation is one operation of ops/core.py, run by ``run``; the L3 extension
(l3_plugin.py) runs its own operations through the same ``run`` and adds its
``PortRules`` to the port operations (server_plugin/extensions.py).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from server_plugin import exceptions as exc
from server_plugin.attributes import RESOURCES
from server_plugin.context import RequestContext
from server_plugin.controller import mapping
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.extensions import Collection, Extension
from server_plugin.ops import bulk, core
from server_plugin.ops.base import STALE_RETRIES, Operation, StaleLocks
from server_plugin.store import mirror_ops, port_list
from server_plugin.store import networks as net_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.db import Store
from server_plugin.store.listing import ListQuery
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import strip_fields
from server_plugin.validators import new_uuid

Body = dict[str, Any]


class RestProxyPlugin:
    """Quantum v2 core plugin: networks, subnets, ports. Other extensions (L3) hold it and add port rules."""

    log = Logger()

    def __init__(self, store: Store, settings: CoreSettings | None = None, mirror: ControllerMirror | None = None) -> None:
        self.store = store
        self.settings = settings or CoreSettings()
        self.mirror = mirror
        self.listeners: list[Any] = []
        self.port_rules: list[core.PortRules] = []  # added by the extensions registered with it
        self.network_rules: list[core.NetworkRules] = []
        self.host_views: list[Any] = []  # extra keys of the agent channel's host list (extensions.Extension.host_view)
        self.host_interests: list[Any] = []  # what a host's watch carries of every host's events (Extension.host_interest)

    @property
    def profile(self) -> str:
        return self.mirror.profile if self.mirror is not None else mapping.BIGSWITCH

    async def run(self, operation: Operation) -> Any:
        """Run one operation: through the mirror (journal, controller calls, undo), or on the store alone; its reply."""
        try:
            if self.mirror is not None:
                return await self.mirror.run(operation)
            outcome = await self.store.run(operation.applied)
            return outcome.reply
        finally:
            self.changed()  # agent events may have been committed (even by an undone change)

    def changed(self) -> None:
        """Called after every change; the agent channel hooks its event bus here."""
        for listener in self.listeners:
            listener()

    async def read(self, work: Any, *args: Any, fields: list[str] | None = None) -> Any:
        """A read-only unit of work, each item stripped to ``fields``."""
        result = await self.store.run(work, *args, readonly=True)
        if isinstance(result, list):
            return [strip_fields(i, fields) for i in result]
        return strip_fields(result, fields)

    # -- networks --------------------------------------------------------------
    async def create_network(self, context: RequestContext, network: Body) -> Body:
        result = await self.run(core.CreateNetwork(context, dict(network["network"], id=new_uuid()), tuple(self.network_rules)))
        self.log.info("network {net_id} created for tenant {tenant_id}", net_id=result["id"], tenant_id=result["tenant_id"])
        return result

    async def update_network(self, context: RequestContext, id: str, network: Body) -> Body:
        return await self.run(core.UpdateNetwork(context, id, network["network"], tuple(self.network_rules)))

    async def delete_network(self, context: RequestContext, id: str) -> None:
        await self.run(core.DeleteNetwork(context, id))
        self.log.info("network {net_id} deleted", net_id=id)

    async def get_network(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.read(net_ops.get_network, context, id, fields=fields)

    async def get_networks(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        return await self.read(net_ops.get_networks, context, query or ListQuery(), fields=fields)

    # -- subnets (sent to controllers inside their network) ----------------------
    async def _subnet_network(self, subnet_id: str) -> str:
        return await self.store.run(mirror_ops.network_of_subnet, subnet_id, readonly=True) or ""

    async def create_subnet(self, context: RequestContext, subnet: Body) -> Body:
        return await self.run(core.CreateSubnet(context, dict(subnet["subnet"], id=new_uuid()), self.settings))

    async def update_subnet(self, context: RequestContext, id: str, subnet: Body) -> Body:
        net_id = await self._subnet_network(id)
        return await self.run(core.UpdateSubnet(context, id, subnet["subnet"], self.settings, net_id))

    async def delete_subnet(self, context: RequestContext, id: str) -> None:
        await self.run(core.DeleteSubnet(context, id, await self._subnet_network(id)))

    async def get_subnet(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.read(net_ops.get_subnet, context, id, fields=fields)

    async def get_subnets(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        return await self.read(net_ops.get_subnets, context, query or ListQuery(), fields=fields)

    # -- ports ---------------------------------------------------------------------
    async def _port_network(self, port_id: str) -> str:
        return await self.store.run(mirror_ops.network_of_port, port_id, readonly=True) or ""

    async def create_port(self, context: RequestContext, port: Body) -> Body:
        values = dict(port["port"], id=new_uuid())
        rules = tuple(self.port_rules)
        for rule in rules:
            await rule.prepare_create(self, context, values)  # e.g. the tenant's default security group, made first
        return await self.run(core.CreatePort(context, values, self.settings, rules))

    async def create_port_bulk(self, context: RequestContext, ports: list[Body]) -> list[Body]:
        """A bulk create (``{"ports": [...]}``): all or nothing, as one operation (ops/bulk.py); the ports in request order."""
        items = [dict(values, id=new_uuid()) for values in ports]
        rules = tuple(self.port_rules)
        for values in items:
            for rule in rules:
                await rule.prepare_create(self, context, values)
        created = await self.run(bulk.CreatePorts(context, tuple(items), self.settings, rules))
        self.log.info("{count} ports created in bulk, {first_id} first", count=len(created), first_id=created[0]["id"])
        return created

    async def update_port(self, context: RequestContext, id: str, port: Body) -> Body:
        net_id = await self._port_network(id)
        return await self.run(core.UpdatePort(context, id, port["port"], self.settings, net_id, tuple(self.port_rules)))

    async def delete_port(self, context: RequestContext, id: str) -> None:
        # The rules may lock more (L3: the external networks of the port's floating IPs, disassociated with it);
        # what they lock is read before the locks are taken, so a change meanwhile means StaleLocks: read again.
        rules = tuple(self.port_rules)
        for _ in range(STALE_RETRIES):
            net_id = await self._port_network(id)
            extra = await self.store.run(_delete_locks, rules, id, readonly=True)
            try:
                await self.run(core.DeletePort(context, id, net_id, rules, tuple(extra)))
                return
            except StaleLocks:
                continue
        raise StaleLocks()

    async def get_port(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.read(port_ops.get_port, context, id, fields=fields)

    async def get_ports(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        return await self.read(port_ops.get_ports, context, query or ListQuery(), fields=fields)

    async def get_ports_chunk(self, context: RequestContext, query: ListQuery, after: Any = None) -> tuple[list[Body], Any]:
        """One chunk of a streamed port list (``port_list.ports_chunk``): the ports and the ``after`` of the next chunk."""
        return await self.store.run(port_list.ports_chunk, context, query, after, readonly=True)


def _delete_locks(session: Any, rules: tuple[core.PortRules, ...], port_id: str) -> list[Any]:
    return [key for rule in rules for key in rule.delete_locks(session, port_id)]


CORE_DESCRIPTORS = (
    {
        "alias": "agent",
        "name": "agent",
        "description": "The agent management extension.",
        "updated": "2013-02-03T10:00:00-00:00",
        "links": [],
    },
    {
        "alias": "binding",
        "name": "Port Binding",
        "description": "Expose port bindings of a virtual port to external application",
        "updated": "2012-11-14T10:00:00-00:00",
        "links": [],
    },
)


def core_extension(plugin: RestProxyPlugin) -> Extension:
    """Networks, subnets and ports (with ``binding:*``), served by the core plugin."""
    return Extension(
        "core",
        plugin,
        collections=(
            Collection("networks", "network", RESOURCES["networks"][1], exc.NetworkNotFound, id_key="net_id"),
            Collection("subnets", "subnet", RESOURCES["subnets"][1], exc.SubnetNotFound, id_key="subnet_id"),
            Collection("ports", "port", RESOURCES["ports"][1], exc.PortNotFound, id_key="port_id"),
        ),
        descriptors=CORE_DESCRIPTORS,
    )
