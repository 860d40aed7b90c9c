"""The L3 extension's operations: routers, interfaces, floating IPs; and its rules for the core's port operations.

Each is one mutation in one transaction (ops/base.py). The hidden ports (gateway,
interface, floating IP) are ports like any other for the controllers: their
changes go through ``mapping.port_calls``. A controller knows one interface per
(router, network), the one with the lowest port id (mirror_ops.router_interface),
so removing one of several re-posts the next.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import partial
from typing import Any

import attrs
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.controller import l3_mapping, mapping
from server_plugin.ops.base import Body, Delta, Operation, Outcome, Profile, StaleLocks, keys
from server_plugin.ops.core import PortRules
from server_plugin.store import floatingips as fip_ops
from server_plugin.store import interfaces as iface_ops
from server_plugin.store import mirror_ops
from server_plugin.store import routers as router_ops
from server_plugin.store.models import Port
from server_plugin.store.settings import CoreSettings


def _with_tenant(session: Session, port: Body | None) -> Body | None:
    return mirror_ops.with_network_tenant(session, port) if port is not None else None


def _port(session: Session, before: Body | None, after: Body | None) -> Delta:
    return Delta(mapping.port_calls, _with_tenant(session, before), _with_tenant(session, after))


# -- routers ---------------------------------------------------------------------------------


@attrs.frozen
class CreateRouter(Operation):
    kind = "router"
    op = "create"
    ctx: RequestContext
    values: Body
    settings: CoreSettings

    @property
    def object_id(self) -> str:
        return self.values["id"]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", (self.values.get("external_gateway_info") or {}).get("network_id"))

    def apply(self, session: Session) -> Outcome:
        _, router, hidden = router_ops.create_router(session, self.ctx, self.values, self.settings)
        return Outcome(
            reply=router,
            undo=partial(router_ops.purge_router, router_id=router["id"]),
            changes=lambda profile: [_port(session, None, hidden["gw_port"]), Delta(l3_mapping.router_calls, None, router)],
        )


@attrs.frozen
class UpdateRouter(Operation):
    kind = "router"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body
    settings: CoreSettings
    gateway_network: str | None  # read before the locks are taken

    @property
    def shared(self) -> Iterable[Hashable]:
        new = (self.values.get("external_gateway_info") or {}).get("network_id")
        return keys("network", self.gateway_network, new)

    def apply(self, session: Session) -> Outcome:
        before, after, gateway = router_ops.update_router(session, self.ctx, self.object_id, self.values, self.settings)
        return Outcome(
            reply=after,
            undo=partial(router_ops.restore_router, before=before),
            changes=lambda profile: [
                _port(session, None, gateway["gw_port"]),
                Delta(l3_mapping.router_calls, before, after),
                _port(session, gateway["removed_gw"], None),
            ],
        )


@attrs.frozen
class DeleteRouter(Operation):
    kind = "router"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str
    gateway_network: str | None

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.gateway_network)

    def check(self, session: Session) -> Outcome:
        checked = router_ops.check_delete_router(session, self.ctx, self.object_id)
        return Outcome(
            changes=lambda profile: [Delta(l3_mapping.router_calls, checked["router"], None), _port(session, checked["gw_port"], None)]
        )

    def apply(self, session: Session) -> Outcome:
        return Outcome(reply=router_ops.delete_router(session, self.ctx, self.object_id))


# -- interfaces -------------------------------------------------------------------------------


def _interface(session: Session, info: Body, without_port: str | None = None) -> Delta:
    router_id, net_id = info["id"], info["network_id"]
    now = {
        "router": {"id": router_id, "tenant_id": info["tenant_id"]},
        "network_id": net_id,
        "interface": mirror_ops.router_interface(session, router_id, net_id, without_port=without_port),
    }
    return Delta(l3_mapping.interface_calls, None, now)


@attrs.frozen
class AddRouterInterface(Operation):
    """By subnet (a new port) or by port (re-owned); ``network_id``/``port_id`` are read before the locks are taken."""

    kind = "router"
    op = "add_interface"
    ctx: RequestContext
    object_id: str
    info: Any
    settings: CoreSettings
    network_id: str | None
    port_id: str | None

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("router", self.object_id), *keys("port", self.port_id)]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.network_id)

    def apply(self, session: Session) -> Outcome:
        undo, info, ports = iface_ops.add_router_interface(session, self.ctx, self.object_id, self.info, self.settings)
        return Outcome(
            reply=info,
            undo=partial(iface_ops.undo_add_router_interface, undo=undo),
            changes=lambda profile: [_port(session, ports["before"], ports["port"]), _interface(session, info)],
        )


@attrs.frozen
class RemoveRouterInterface(Operation):
    kind = "router"
    op = "remove_interface"
    deletes = True
    ctx: RequestContext
    object_id: str
    info: Any
    network_id: str | None
    port_id: str | None

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("router", self.object_id), *keys("port", self.port_id)]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.network_id)

    def check(self, session: Session) -> Outcome:
        checked = iface_ops.check_remove_router_interface(session, self.ctx, self.object_id, self.info)
        port = checked["port"]
        return Outcome(changes=lambda profile: [_interface(session, checked, without_port=port["id"]), _port(session, port, None)])

    def apply(self, session: Session) -> Outcome:
        return Outcome(reply=iface_ops.remove_router_interface(session, self.ctx, self.object_id, self.info))


# -- floating IPs -----------------------------------------------------------------------------


def floatingip_changes(session: Session, changes: Sequence[tuple[str, str, Body | None]], net_ids: Iterable[str]) -> Delta:
    """``changes``: (id, tenant, floating IP after the change or None if gone); with their external networks as they will be."""
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
    now = {"floatingips": [{"id": fid, "tenant_id": tenant, "floatingip": after[fid]} for fid, tenant, _ in changes], "networks": networks}
    return Delta(l3_mapping.floatingip_calls, None, now)


@attrs.frozen
class CreateFloatingIP(Operation):
    kind = "floatingip"
    op = "create"
    ctx: RequestContext
    values: Body
    settings: CoreSettings

    @property
    def object_id(self) -> str:
        return self.values["id"]

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("floatingip", self.object_id), ("network", self.values["floating_network_id"])]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("port", self.values.get("port_id"))

    def apply(self, session: Session) -> Outcome:
        _, fip, hidden = fip_ops.create_floatingip(session, self.ctx, self.values, self.settings)

        def changes(profile: Profile) -> Sequence[Delta]:
            port = _port(session, None, hidden["port"])
            return [port, floatingip_changes(session, [(fip["id"], fip["tenant_id"], fip)], [fip["floating_network_id"]])]

        return Outcome(reply=fip, undo=partial(fip_ops.purge_floatingip, fip_id=fip["id"]), changes=changes)


@attrs.frozen
class UpdateFloatingIP(Operation):
    """Associate or disassociate; ``network_id``/``old_port`` are read before the locks are taken (else StaleLocks)."""

    kind = "floatingip"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body
    network_id: str | None
    old_port: str | None

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("floatingip", self.object_id), *keys("network", self.network_id)]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("port", self.old_port, self.values.get("port_id"))

    def apply(self, session: Session) -> Outcome:
        before, after = fip_ops.update_floatingip(session, self.ctx, self.object_id, self.values, self.old_port)
        return Outcome(
            reply=after,
            undo=partial(fip_ops.restore_floatingip, before=before),
            changes=lambda profile: [
                floatingip_changes(session, [(self.object_id, after["tenant_id"], after)], [after["floating_network_id"]])
            ],
        )


@attrs.frozen
class DeleteFloatingIP(Operation):
    kind = "floatingip"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str
    network_id: str | None

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("floatingip", self.object_id), *keys("network", self.network_id)]

    def check(self, session: Session) -> Outcome:
        checked = fip_ops.check_delete_floatingip(session, self.ctx, self.object_id)
        fip = checked["floatingip"]

        def changes(profile: Profile) -> Sequence[Delta]:
            gone = floatingip_changes(session, [(self.object_id, fip["tenant_id"], None)], [fip["floating_network_id"]])
            return [gone, _port(session, checked["port"], None)]

        return Outcome(changes=changes)

    def apply(self, session: Session) -> Outcome:
        return Outcome(reply=fip_ops.delete_floatingip(session, self.ctx, self.object_id))


# -- the L3 rules of the core's port operations --------------------------------------------------


class L3PortRules(PortRules):
    """A router's or floating IP's port is not the port API's to delete or re-own (Quantum's prevent_l3_port_deletion);
    a deleted port's floating IPs are disassociated, their external networks locked with it."""

    def delete_locks(self, session: Session, port_id: str) -> list[Hashable]:
        return [("network", n) for n in fip_ops.floating_networks_of_port(session, port_id)]

    def check_delete(self, session: Session, port: Port, locked: frozenset[Hashable] | None) -> None:
        owner = router_ops.l3_owner(session, port.id)
        if owner is not None:
            raise exc.L3PortInUse(port_id=port.id, device_owner=port.device_owner or owner)
        if locked is not None and not set(self.delete_locks(session, port.id)) <= locked:
            raise StaleLocks()

    def delete_changes(self, session: Session, port_id: str) -> list[Delta]:
        fips = fip_ops.disassociated_floatingips(session, port_id)
        if not fips:
            return []
        return [floatingip_changes(session, [(f["id"], f["tenant_id"], f) for f in fips], [f["floating_network_id"] for f in fips])]

    def before_delete(self, session: Session, port_id: str) -> None:
        fip_ops.disassociate_port(session, port_id)

    def check_update(self, session: Session, port: Port, values: Body) -> None:
        """The port API cannot take an l3 port from its router or floating IP."""
        if router_ops.l3_owner(session, port.id) is None:
            return
        changed = [k for k in ("device_id", "device_owner") if k in values and values[k] != getattr(port, k)]
        if "fixed_ips" in values:
            current = {a.ip_address: a.subnet_id for a in port.fixed_ips}
            wanted = [(e.get("subnet_id"), e.get("ip_address")) for e in values["fixed_ips"]]
            same = len(wanted) == len(current) and {ip for _, ip in wanted} == set(current)
            if not same or any(subnet not in (None, current[ip]) for subnet, ip in wanted):
                changed.append("fixed_ips")
        if changed:
            raise exc.PortInUse(net_id=port.network_id, port_id=port.id, device_id=port.device_id)

    def after_update(self, session: Session, port_id: str, values: Body, port: Body) -> None:
        """Nor a fixed IP from under a floating IP."""
        if "fixed_ips" in values:
            fip_ops.check_fixed_ips_kept(session, port_id, port)
