"""The l3 extension of RestProxyPlugin: routers, interfaces, gateways, floating IPs, mirrored to the controllers.

Every mutation is a ``Change`` run by the plugin's ``_apply`` / ``_remove``, with the
rules of controller/mirror.py (store first, undo when the pool refuses; deletes send
their calls before the store delete). What goes to a Big Switch controller (facts §2b-2c):

* routers: ``POST/PUT/DELETE /tenants/{t}/routers[/{id}]`` with ``{"router": {...}}``;
* interfaces: ``POST .../routers/{id}/interfaces`` ``{"interface": {"id": net, "network", "subnet"}}``
  and ``DELETE .../interfaces/{net}``: one per (router, network), so when a router has
  several interface ports on one network the controller gets the one with the lowest
  port id (mirror_ops.router_interface), and removing one of them re-posts the next;
* floating IPs: with the pool's ``floatingip`` capability ``PUT/DELETE
  /tenants/{t}/floatingips/{id}``; without it, a PUT of the external network carrying
  all its ``floatingips``;
* the hidden ports (gateway, interface, floating IP) are ports like any other: port
  POST/DELETE and their attachments.

Floodlight ignores routers and floating IPs: only the hidden ports' attachments go to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server_plugin.context import RequestContext
from server_plugin.controller import mapping
from server_plugin.controller.mirror import Call, Change
from server_plugin.store import l3 as l3_ops
from server_plugin.store import mirror_ops
from server_plugin.store.listing import ListQuery
from server_plugin.validators import is_uuid_like, new_uuid

Body = dict[str, Any]


def _strip(item: Body, fields: list[str] | None) -> Body:
    return {k: v for k, v in item.items() if k in fields} if fields else item


def _keys(kind: str, *ids: str | None) -> list[tuple[str, str]]:
    return [(kind, i) for i in ids if i]


class L3Mixin:
    """Mixed into RestProxyPlugin (which provides store, settings, mirror, profile, _apply, _remove, _port_calls, _network_put)."""

    store: Any
    settings: Any
    mirror: Any
    profile: str
    _apply: Any
    _remove: Any
    _port_calls: Any
    _network_put: Any

    # -- controller calls --------------------------------------------------------------------
    @property
    def _floatingip_resources(self) -> bool:
        return self.mirror is not None and "floatingip" in getattr(self.mirror, "capabilities", ())

    def _router_call(self, method: str, router: Body) -> list[Call]:
        if self.profile != mapping.BIGSWITCH:
            return []
        tenant = router["tenant_id"]
        if method == "POST":
            return [Call("POST", mapping.router_path(tenant), {"router": mapping.router_payload(router)})]
        if method == "PUT":
            return [Call("PUT", mapping.router_path(tenant, router["id"]), {"router": mapping.router_payload(router)})]
        return [Call("DELETE", mapping.router_path(tenant, router["id"]), ignore=(404,))]

    def _interface_call(self, router: Body, net_id: str, interface: Body | None) -> list[Call]:
        """The controller's interface for (router, network) as it now is: posted, or deleted when none is left."""
        if self.profile != mapping.BIGSWITCH:
            return []
        tenant = router["tenant_id"]
        if interface is None:
            return [Call("DELETE", mapping.interface_path(tenant, router["id"], net_id), ignore=(404,))]
        return [Call("POST", mapping.interface_path(tenant, router["id"]), {"interface": mapping.interface_payload(interface)})]

    def _floatingip_calls(self, view: Body) -> list[Call]:
        if self.profile != mapping.BIGSWITCH:
            return []
        if self._floatingip_resources:
            calls = []
            for change in view["floatingips"]:
                path = mapping.floatingip_path(change["tenant_id"], change["id"])
                if change["floatingip"] is None:
                    calls.append(Call("DELETE", path, ignore=(404,)))
                else:
                    calls.append(Call("PUT", path, {"floatingip": change["floatingip"]}))
            return calls
        return [call for network in view["networks"] for call in self._network_put(network)]

    def _hidden_port_calls(self, before: Body | None, after: Body | None) -> list[Call]:
        return self._port_calls(before, after) if (before or after) else []

    # -- views (run in the change's transaction) ----------------------------------------------
    @staticmethod
    def _with_tenant(session: Any, port: Body | None) -> Body | None:
        return mirror_ops.with_network_tenant(session, port) if port is not None else None

    @staticmethod
    def _floatingip_view(session: Any, changes: list[tuple[str, str, Body | None]], net_ids: Iterable[str]) -> Body:
        """``changes``: (id, tenant, floating IP after the change or None if gone); the external networks as they will be."""
        after = {fid: (mapping.floatingip_payload(fip) if fip is not None else None) for fid, _, fip in changes}
        networks = []
        for net_id in sorted(set(net_ids)):
            network = mirror_ops.network_view(session, net_id)
            if network is None:
                continue
            if "floatingips" in network:
                listed = [after[f["id"]] if f["id"] in after else f for f in network["floatingips"]]
                network["floatingips"] = [f for f in listed if f is not None]
            networks.append(network)
        return {
            "floatingips": [{"id": fid, "tenant_id": tenant, "floatingip": after[fid]} for fid, tenant, _ in changes],
            "networks": networks,
        }

    # -- routers ----------------------------------------------------------------------------------
    async def create_router(self, context: RequestContext, router: Body) -> Body:
        values = dict(router["router"], id=new_uuid())
        router_id = values["id"]
        gateway = values.get("external_gateway_info") or {}

        def view(session: Any, result: Any) -> Body:
            return {"router": result[1], "gw_port": self._with_tenant(session, result[2]["gw_port"])}

        _, created, _ = await self._apply(
            Change(
                "router", router_id, "create",
                lambda v: [*self._hidden_port_calls(None, v["gw_port"]), *self._router_call("POST", v["router"])],
                work=l3_ops.create_router, args=(context, values, self.settings), view=view,
                undo=l3_ops.purge_router, exclusive=[("router", router_id)], shared=_keys("network", gateway.get("network_id")),
            )
        )  # fmt: skip
        return created

    async def _gateway_network(self, router_id: str) -> str | None:
        return await self.store.run(mirror_ops.gateway_network, router_id, readonly=True) if is_uuid_like(router_id) else None

    async def update_router(self, context: RequestContext, id: str, router: Body) -> Body:
        values = router["router"]
        old_net = await self._gateway_network(id)
        new_net = (values.get("external_gateway_info") or {}).get("network_id")

        def view(session: Any, result: Any) -> Body:
            gateway = result[2]
            return {
                "router": result[1],
                "removed_gw": self._with_tenant(session, gateway["removed_gw"]),
                "gw_port": self._with_tenant(session, gateway["gw_port"]),
            }

        def calls(v: Body) -> list[Call]:
            return [
                *self._hidden_port_calls(None, v["gw_port"]),
                *self._router_call("PUT", v["router"]),
                *self._hidden_port_calls(v["removed_gw"], None),
            ]

        _, after, _ = await self._apply(
            Change(
                "router", id, "update", calls,
                work=l3_ops.update_router, args=(context, id, values, self.settings), view=view,
                undo=l3_ops.restore_router, exclusive=[("router", id)], shared=_keys("network", old_net, new_net),
            )
        )  # fmt: skip
        return after

    async def delete_router(self, context: RequestContext, id: str) -> None:
        gw_net = await self._gateway_network(id)
        await self._remove(
            Change(
                "router", id, "delete",
                lambda v: [*self._router_call("DELETE", v["router"]), *self._hidden_port_calls(v["gw_port"], None)],
                work=l3_ops.check_delete_router, args=(context, id),
                view=lambda session, result: {"router": result["router"], "gw_port": self._with_tenant(session, result["gw_port"])},
                exclusive=[("router", id)], shared=_keys("network", gw_net),
            ),
            l3_ops.delete_router, (context, id),
        )  # fmt: skip

    async def get_router(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return _strip(await self.store.run(l3_ops.get_router, context, id, readonly=True), fields)

    async def get_routers(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(l3_ops.get_routers, context, query or ListQuery(), readonly=True)
        return [_strip(i, fields) for i in items]

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

        def view(session: Any, result: Any) -> Body:
            info = result[1]
            return {
                "router": {"id": info["id"], "tenant_id": info["tenant_id"]},
                "network_id": info["network_id"],
                "before": self._with_tenant(session, result[2]["before"]),
                "port": self._with_tenant(session, result[2]["port"]),
                "interface": mirror_ops.router_interface(session, router_id, info["network_id"]),
            }

        def calls(v: Body) -> list[Call]:
            return [*self._port_calls(v["before"], v["port"]), *self._interface_call(v["router"], v["network_id"], v["interface"])]

        _, info, _ = await self._apply(
            Change(
                "router", router_id, "add_interface", calls,
                work=l3_ops.add_router_interface, args=(context, router_id, interface_info, self.settings), view=view,
                undo=l3_ops.undo_add_router_interface,
                exclusive=[("router", router_id), *_keys("port", port_id)], shared=_keys("network", net_id),
            )
        )  # fmt: skip
        return info

    async def remove_router_interface(self, context: RequestContext, router_id: str, interface_info: Any) -> Body:
        net_id, port_id = await self._interface_target(interface_info)
        if port_id is None and isinstance(interface_info, dict) and is_uuid_like(interface_info.get("subnet_id")):
            # By subnet: the port that goes is the router's interface there; its calls keep their order too.
            subnet_id = interface_info["subnet_id"]
            port_id = await self.store.run(l3_ops.interface_port_on_subnet, router_id, subnet_id, readonly=True)

        def view(session: Any, result: Any) -> Body:
            port = result["port"]
            return {
                "router": {"id": result["id"], "tenant_id": result["tenant_id"]},
                "network_id": result["network_id"],
                "port": self._with_tenant(session, port),
                "interface": mirror_ops.router_interface(session, router_id, result["network_id"], without_port=port["id"]),
            }

        def calls(v: Body) -> list[Call]:
            return [*self._interface_call(v["router"], v["network_id"], v["interface"]), *self._port_calls(v["port"], None)]

        return await self._remove(
            Change(
                "router", router_id, "remove_interface", calls,
                work=l3_ops.check_remove_router_interface, args=(context, router_id, interface_info), view=view,
                exclusive=[("router", router_id), *_keys("port", port_id)], shared=_keys("network", net_id),
            ),
            l3_ops.remove_router_interface, (context, router_id, interface_info),
        )  # fmt: skip

    # -- floating IPs ----------------------------------------------------------------------------
    async def create_floatingip(self, context: RequestContext, floatingip: Body) -> Body:
        values = dict(floatingip["floatingip"], id=new_uuid())
        fip_id, net_id = values["id"], values["floating_network_id"]

        def view(session: Any, result: Any) -> Body:
            fip = result[1]
            changes = [(fip_id, fip["tenant_id"], fip)]
            port = self._with_tenant(session, result[2]["port"])
            return dict(self._floatingip_view(session, changes, [fip["floating_network_id"]]), port=port)

        _, created, _ = await self._apply(
            Change(
                "floatingip", fip_id, "create", lambda v: [*self._port_calls(None, v["port"]), *self._floatingip_calls(v)],
                work=l3_ops.create_floatingip, args=(context, values, self.settings), view=view,
                undo=l3_ops.purge_floatingip, exclusive=[("floatingip", fip_id), ("network", net_id)],
                shared=_keys("port", values.get("port_id")),
            )
        )  # fmt: skip
        return created

    async def update_floatingip(self, context: RequestContext, id: str, floatingip: Body) -> Body:
        values = floatingip["floatingip"]
        for _ in range(l3_ops.STALE_RETRIES):
            found = await self.store.run(l3_ops.floatingip_network, id, readonly=True) if is_uuid_like(id) else None
            net_id, old_port = found or (None, None)

            def view(session: Any, result: Any) -> Body:
                fip = result[1]
                return self._floatingip_view(session, [(id, fip["tenant_id"], fip)], [fip["floating_network_id"]])

            try:
                _, after = await self._apply(
                    Change(
                        "floatingip", id, "update", self._floatingip_calls,
                        work=l3_ops.update_floatingip, args=(context, id, values, old_port), view=view,
                        undo=l3_ops.restore_floatingip, exclusive=[("floatingip", id), *_keys("network", net_id)],
                        shared=_keys("port", old_port, values.get("port_id")),
                    )
                )  # fmt: skip
                return after
            except l3_ops.StaleLocks:
                continue  # associated elsewhere meanwhile: lock what it is now
        raise l3_ops.StaleLocks()

    async def delete_floatingip(self, context: RequestContext, id: str) -> None:
        found = await self.store.run(l3_ops.floatingip_network, id, readonly=True) if is_uuid_like(id) else None
        net_id = found[0] if found else None

        def view(session: Any, result: Any) -> Body:
            fip = result["floatingip"]
            changes = [(id, fip["tenant_id"], None)]
            port = self._with_tenant(session, result["port"])
            return dict(self._floatingip_view(session, changes, [fip["floating_network_id"]]), port=port)

        await self._remove(
            Change(
                "floatingip", id, "delete", lambda v: [*self._floatingip_calls(v), *self._hidden_port_calls(v["port"], None)],
                work=l3_ops.check_delete_floatingip, args=(context, id), view=view,
                exclusive=[("floatingip", id), *_keys("network", net_id)],
            ),
            l3_ops.delete_floatingip, (context, id),
        )  # fmt: skip

    async def get_floatingip(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return _strip(await self.store.run(l3_ops.get_floatingip, context, id, readonly=True), fields)

    async def get_floatingips(self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None) -> list[Body]:
        items = await self.store.run(l3_ops.get_floatingips, context, query or ListQuery(), readonly=True)
        return [_strip(i, fields) for i in items]

    # -- the port API's part ---------------------------------------------------------------------
    def _port_delete_view(self, session: Any, port_id: str) -> Body:
        """The port, and its floating IPs as they will be once disassociated."""
        changes = [(f["id"], f["tenant_id"], f) for f in l3_ops.disassociated_floatingips(session, port_id)]
        nets = [f["floating_network_id"] for _, _, f in changes]
        return dict(self._floatingip_view(session, changes, nets), port=mirror_ops.port_view(session, port_id))

    def _port_delete_calls(self, view: Body) -> list[Call]:
        return [*self._floatingip_calls(view), *self._port_calls(view["port"], None)]
