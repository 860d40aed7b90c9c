"""RestProxyPlugin: the Quantum v2 core plugin over the SQL store, mirrored to controllers.

Every method is a coroutine (the database work runs in the store's thread
pool). Signatures follow Quantum's v2 plugin interface
(``create_network(context, {"network": {...}})``). With a ControllerMirror,
every change is also sent to the controller pool (see controller/mirror.py for
the order and the undo rules); without one (``[RESTPROXY] servers`` empty) the
plugin is a plain store. Reads never leave the store. Whatever the store can
answer (404, 409, 400) is answered before any controller call.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from server_plugin.context import RequestContext
from server_plugin.controller import mapping
from server_plugin.controller.mirror import Call, Change, ControllerMirror
from server_plugin.l3_plugin import L3Mixin
from server_plugin.store import agent_events, mirror_ops
from server_plugin.store import l3 as l3_ops
from server_plugin.store import networks as net_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.db import Store
from server_plugin.store.listing import ListQuery
from server_plugin.store.settings import CoreSettings
from server_plugin.validators import new_uuid

Body = dict[str, Any]


def strip_fields(item: Body, fields: list[str] | None) -> Body:
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


class RestProxyPlugin(L3Mixin):
    """Quantum v2 core plugin: networks, subnets, ports; routers and floating IPs (l3_plugin.py)."""

    log = Logger()
    supported_extension_aliases = ["binding", "router", "external-net", "ext-gw-mode"]

    def __init__(self, store: Store, settings: CoreSettings | None = None, mirror: ControllerMirror | None = None) -> None:
        self.store = store
        self.settings = settings or CoreSettings()
        self.mirror = mirror
        self.listeners: list[Any] = []

    @property
    def profile(self) -> str:
        return self.mirror.profile if self.mirror is not None else mapping.BIGSWITCH

    async def _apply(self, change: Change) -> Any:
        try:
            if self.mirror is not None:
                return await self.mirror.apply(change)
            return await self.store.run(change.work, *change.args)
        finally:
            self.changed()  # agent events may have been committed (even by an undone change)

    async def _remove(self, change: Change, work: Any, args: tuple[Any, ...]) -> Any:
        try:
            if self.mirror is not None:
                return await self.mirror.remove(change, work, args)
            return await self.store.run(work, *args)
        finally:
            self.changed()

    def changed(self) -> None:
        """Called after every change; the agent channel hooks its event bus here."""
        for listener in self.listeners:
            listener()

    # -- controller calls for each change --------------------------------------
    def _network_put(self, view: Body | None) -> list[Call]:
        if view is None:
            return []
        body = {"network": mapping.network_payload(self.profile, view)}
        return [Call("PUT", mapping.network_path(view["tenant_id"], view["id"]), body)]

    def _subnet_view(self, session: Any, net_id: str, without_subnet: str | None = None) -> Body | None:
        view = mirror_ops.network_view(session, net_id, without_subnet)
        if view is not None and self.profile == mapping.FLOODLIGHT:
            view["attached_ports"] = mirror_ops.attached_ports(session, net_id)
        return view

    def _subnet_calls(self, view: Body | None) -> list[Call]:
        """A subnet change is a network PUT. Floodlight keeps a gateway that a PUT without one cannot
        clear: a network left without a gateway is deleted and put again, with its attachments."""
        if view is None or self.profile != mapping.FLOODLIGHT or mapping.first_gateway(view["subnets"]):
            return self._network_put(view)
        reattach = [
            Call(
                "PUT", mapping.attachment_path(view["tenant_id"], view["id"], port["id"]), {"attachment": mapping.attachment_payload(port)}
            )
            for port in view["attached_ports"]
        ]
        return [*self._network_delete(view), *self._network_put(view), *reattach]

    def _network_post(self, view: Body) -> list[Call]:
        if self.profile == mapping.FLOODLIGHT:
            return self._network_put(view)
        body = {"network": mapping.network_payload(self.profile, view)}
        return [Call("POST", mapping.network_path(view["tenant_id"]), body)]

    def _network_delete(self, view: Body) -> list[Call]:
        delete = Call("DELETE", mapping.network_path(view["tenant_id"], view["id"]), ignore=(404,))
        if self.profile == mapping.FLOODLIGHT:
            # Floodlight finds the network to delete by its name, which a later network of the same name takes
            # over (and a network it lacks is a 500 while it has others): put it first, so the name is its own.
            return [*self._network_put(view), delete]
        return [delete]

    def _port_calls(self, before: Body | None, after: Body | None) -> list[Call]:
        """Port resource and attachment calls for a port going from ``before`` to ``after``."""
        port = after or before
        assert port is not None
        tenant, net_id, port_id = port["network_tenant_id"], port["network_id"], port["id"]
        calls: list[Call] = []
        if self.profile == mapping.BIGSWITCH:
            if before is None:
                calls.append(Call("POST", mapping.port_path(tenant, net_id), {"port": mapping.port_payload(port)}))
            elif after is not None:
                calls.append(Call("PUT", mapping.port_path(tenant, net_id, port_id), {"port": mapping.port_payload(port)}))
        old_device = before["device_id"] if before else ""
        new_device = after["device_id"] if after else ""
        attachment = mapping.attachment_path(tenant, net_id, port_id)
        moved = old_device != new_device or (before and after and before["mac_address"] != after["mac_address"])
        if old_device and (moved or after is None):
            calls.append(Call("DELETE", attachment, ignore=(404,)))
        if new_device and (moved or before is None):
            calls.append(Call("PUT", attachment, {"attachment": mapping.attachment_payload(after)}))
        if after is None and self.profile == mapping.BIGSWITCH:
            calls.append(Call("DELETE", mapping.port_path(tenant, net_id, port_id), ignore=(404,)))
        return calls

    # -- networks --------------------------------------------------------------
    async def create_network(self, context: RequestContext, network: Body) -> Body:
        values = dict(network["network"], id=new_uuid())
        net_id = values["id"]
        result = await self._apply(
            Change(
                "network", net_id, "create", self._network_post,
                work=net_ops.create_network, args=(context, values),
                view=lambda session, _: mirror_ops.network_view(session, net_id),
                undo=mirror_ops.purge_network, exclusive=[("network", net_id)],
            )
        )  # fmt: skip
        self.log.info("network {net_id} created for tenant {tenant_id}", net_id=net_id, tenant_id=result["tenant_id"])
        return result

    async def update_network(self, context: RequestContext, id: str, network: Body) -> Body:
        _, after = await self._apply(
            Change(
                "network", id, "update", self._network_put,
                work=agent_events.after_network_update,
                args=(mirror_ops.updated, net_ops.get_network, net_ops.update_network, context, id, network["network"]),
                view=lambda session, _: mirror_ops.network_view(session, id),
                undo=mirror_ops.restore_network, exclusive=[("network", id)],
            )
        )  # fmt: skip
        return after

    async def delete_network(self, context: RequestContext, id: str) -> None:
        await self._remove(
            Change(
                "network", id, "delete", self._network_delete,
                work=net_ops.check_delete_network, args=(context, id),
                view=lambda session, _: mirror_ops.network_view(session, id), exclusive=[("network", id)],
            ),
            agent_events.before_network_delete, (net_ops.delete_network, context, id),
        )  # fmt: skip
        self.log.info("network {net_id} deleted", net_id=id)

    async def get_network(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(net_ops.get_network, context, id, readonly=True), fields)

    async def get_networks(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(net_ops.get_networks, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]

    # -- subnets (sent to controllers inside their network) ----------------------
    async def _subnet_network(self, subnet_id: str) -> str:
        return await self.store.run(mirror_ops.network_of_subnet, subnet_id, readonly=True) or ""

    async def create_subnet(self, context: RequestContext, subnet: Body) -> Body:
        values = dict(subnet["subnet"], id=new_uuid())
        net_id = values["network_id"]
        _, created = await self._apply(
            Change(
                "subnet", values["id"], "create", self._network_put,
                work=mirror_ops.created_subnet, args=(net_ops.create_subnet, context, values, self.settings),
                view=lambda session, _: mirror_ops.network_view(session, net_id),
                undo=mirror_ops.purge_subnet, exclusive=[("network", net_id)],
            )
        )  # fmt: skip
        return created

    async def update_subnet(self, context: RequestContext, id: str, subnet: Body) -> Body:
        net_id = await self._subnet_network(id)
        _, after = await self._apply(
            Change(
                "subnet", id, "update", self._subnet_calls,
                work=mirror_ops.updated, args=(net_ops.get_subnet, net_ops.update_subnet, context, id, subnet["subnet"], self.settings),
                view=lambda session, _: self._subnet_view(session, net_id),
                undo=mirror_ops.restore_subnet, exclusive=[("network", net_id)],
            )
        )  # fmt: skip
        return after

    async def delete_subnet(self, context: RequestContext, id: str) -> None:
        net_id = await self._subnet_network(id)
        await self._remove(
            Change(
                "subnet", id, "delete", self._subnet_calls,
                work=net_ops.check_delete_subnet, args=(context, id),
                view=lambda session, _: self._subnet_view(session, net_id, without_subnet=id),
                exclusive=[("network", net_id)],
            ),
            net_ops.delete_subnet, (context, id),
        )  # fmt: skip

    async def get_subnet(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(net_ops.get_subnet, context, id, readonly=True), fields)

    async def get_subnets(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(net_ops.get_subnets, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]

    # -- ports ---------------------------------------------------------------------
    async def _port_network(self, port_id: str) -> str:
        return await self.store.run(mirror_ops.network_of_port, port_id, readonly=True) or ""

    async def create_port(self, context: RequestContext, port: Body) -> Body:
        values = dict(port["port"], id=new_uuid())
        port_id = values["id"]
        return await self._apply(
            Change(
                "port", port_id, "create", lambda view: self._port_calls(None, view),
                work=agent_events.after_create, args=(port_ops.create_port, context, values, self.settings),
                view=mirror_ops.with_network_tenant,
                undo=mirror_ops.purge_port, exclusive=[("port", port_id)], shared=[("network", values["network_id"])],
            )
        )  # fmt: skip

    async def update_port(self, context: RequestContext, id: str, port: Body) -> Body:
        net_id = await self._port_network(id)

        def view(session: Any, result: Any) -> Body:
            after = mirror_ops.with_network_tenant(session, result[1])
            return {"before": dict(result[0], network_tenant_id=after["network_tenant_id"]), "after": after}

        _, after = await self._apply(
            Change(
                "port", id, "update", lambda v: self._port_calls(v["before"], v["after"]),
                work=agent_events.after_update,
                args=(mirror_ops.updated, port_ops.get_port, l3_ops.update_port, context, id, port["port"], self.settings),
                view=view, undo=mirror_ops.restore_port, exclusive=[("port", id)], shared=[("network", net_id)],
            )
        )  # fmt: skip
        return after

    async def delete_port(self, context: RequestContext, id: str) -> None:
        # Its floating IPs are disassociated with it: their external networks are locked too (l3_plugin.py).
        for _ in range(l3_ops.STALE_RETRIES):
            net_id = await self._port_network(id)
            fip_nets = await self.store.run(l3_ops.floating_networks_of_port, id, readonly=True)
            try:
                await self._remove(
                    Change(
                        "port", id, "delete", self._port_delete_calls,
                        work=l3_ops.check_delete_port, args=(context, id, fip_nets),
                        view=lambda session, _: self._port_delete_view(session, id),
                        exclusive=[("port", id), *[("network", n) for n in fip_nets]], shared=[("network", net_id)],
                    ),
                    agent_events.after_port_delete, (l3_ops.delete_port, context, id),
                )  # fmt: skip
                return
            except l3_ops.StaleLocks:
                continue  # a floating IP was associated with it meanwhile
        raise l3_ops.StaleLocks()

    async def get_port(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return strip_fields(await self.store.run(port_ops.get_port, context, id, readonly=True), fields)

    async def get_ports(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(port_ops.get_ports, context, query or ListQuery(), readonly=True)
        return [strip_fields(i, fields) for i in items]
