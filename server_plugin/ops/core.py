"""The core operations: networks, subnets, ports (Quantum v2), each one mutation in one transaction.

Subnets go to the controllers inside their network (a network PUT). Port
operations take the ``PortRules`` of the other extensions (L3: a router's port
cannot be re-owned, a port's floating IPs are disassociated when it goes), so
the core never imports them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import partial
from typing import Any

import attrs
from sqlalchemy import select
from sqlalchemy.orm import Session

from server_plugin.context import RequestContext
from server_plugin.controller import mapping
from server_plugin.ops.base import Body, Delta, NetworkEvent, NetworkGone, Operation, Outcome, PortEvent, Profile, SubnetEvent, keys
from server_plugin.store import dhcp_events, mirror_ops, port_filter
from server_plugin.store import networks as net_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.models import Port
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import port_dict

ADMIN = RequestContext.admin()


class NetworkRules:
    """What an extension adds to the core network operations (in the operation's transaction)."""

    def after_create(self, session: Session, ctx: RequestContext, values: Body, network: Body) -> None:
        """The network is made (``network`` is its reply: complete it in place)."""

    def after_update(self, session: Session, ctx: RequestContext, values: Body, network: Body) -> None:
        """The network is updated (``network`` is its reply: complete it in place)."""


class PortRules:
    """What an extension adds to the core port operations; the hooks but ``prepare_create`` run in the operation's transaction."""

    async def prepare_create(self, plugin: Any, ctx: RequestContext, values: Body) -> None:
        """Before a port create's operation runs (e.g. make what it will refer to, through ``plugin.run``)."""

    def before_insert(self, session: Session, ctx: RequestContext, values: Body, row: Port) -> None:
        """The new port ``row`` has its addresses and ``row.network``, and is not inserted yet: add the extension's rows
        to its collections (they go in with the port). The row is a ``store.ports.NewPort`` (plain attributes, never
        in the session), a single create's and a bulk create's alike: read and set attributes only."""

    def after_create(self, session: Session, ctx: RequestContext, values: Body, port: Body, row: Port) -> None:
        """The port ``row`` is made (``row.network`` loaded): add the extension's own (``port`` is the reply and the event:
        complete it in place)."""

    def delete_locks(self, session: Session, port_id: str) -> list[Hashable]:
        """Keys a port delete must hold besides the port's (read before the locks are taken)."""
        return []

    def check_delete(self, session: Session, port: Port, locked: frozenset[Hashable] | None) -> None:
        """Refuse the delete (409), or StaleLocks when it touches objects not in ``locked`` (None: not asked)."""

    def delete_changes(self, session: Session, port_id: str) -> list[Delta]:
        """What the controllers must hear before the port goes (e.g. its floating IPs disassociated)."""
        return []

    def before_delete(self, session: Session, port_id: str) -> None:
        """Run just before the port row is deleted."""

    def check_update(self, session: Session, port: Port, values: Body) -> None:
        """Refuse an update before it is made."""

    def check_update_by(self, session: Session, ctx: RequestContext, port: Port, values: Body) -> None:
        """``check_update`` for rules that need the caller (e.g. whose objects it may name)."""
        self.check_update(session, port, values)

    def restore(self, session: Session, before: Body) -> None:
        """Undo of a port update: put back what the extension keeps of ``before``."""

    def after_update(self, session: Session, port_id: str, values: Body, port: Body) -> None:
        """Refuse an update once made (the transaction rolls back), or complete ``port`` (the reply) in place."""


# -- networks ----------------------------------------------------------------------------------


def _network_changes(session: Session, net_id: str, created: bool = False) -> Sequence[Delta]:
    view = mirror_ops.network_view(session, net_id)
    return [Delta(mapping.network_calls, None if created else view, view)]


@attrs.frozen
class CreateNetwork(Operation):
    kind = "network"
    op = "create"
    ctx: RequestContext
    values: Body
    rules: Sequence[NetworkRules] = ()

    @property
    def object_id(self) -> str:
        return self.values["id"]

    def apply(self, session: Session) -> Outcome:
        network = net_ops.create_network(session, self.ctx, self.values)
        for rule in self.rules:
            rule.after_create(session, self.ctx, self.values, network)
        return Outcome(
            reply=network,
            undo=partial(mirror_ops.purge_network, net_id=network["id"]),
            changes=lambda profile: _network_changes(session, network["id"], created=True),
        )


@attrs.frozen
class UpdateNetwork(Operation):
    kind = "network"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body
    rules: Sequence[NetworkRules] = ()

    def apply(self, session: Session) -> Outcome:
        before = net_ops.get_network(session, ADMIN, self.object_id)
        after = net_ops.update_network(session, self.ctx, self.object_id, self.values)
        for rule in self.rules:
            rule.after_update(session, self.ctx, self.values, after)
        seen = before.get("admin_state_up") != after.get("admin_state_up") or before.get("name") != after.get("name")
        return Outcome(
            reply=after,
            undo=partial(mirror_ops.restore_network, before=before),
            events=[NetworkEvent(after)] if seen else [],
            changes=lambda profile: _network_changes(session, self.object_id),
        )


@attrs.frozen
class DeleteNetwork(Operation):
    """Its (DHCP) ports go with it; their hosts hear about both."""

    kind = "network"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str

    def check(self, session: Session) -> Outcome:
        net_ops.check_delete_network(session, self.ctx, self.object_id)
        view = mirror_ops.network_view(session, self.object_id)
        return Outcome(changes=lambda profile: [Delta(mapping.network_calls, view, None)])

    def apply(self, session: Session) -> Outcome:
        ports = [port_dict(p) for p in session.scalars(select(Port).where(Port.network_id == self.object_id))]
        before = net_ops.delete_network(session, self.ctx, self.object_id)
        hosts = tuple(sorted({p["binding:host_id"] for p in ports if p["binding:host_id"]}))
        return Outcome(reply=before, events=[*(PortEvent(p, None) for p in ports), NetworkGone(self.object_id, hosts)])


# -- subnets (sent to the controllers inside their network) ----------------------------------------


def _subnet_network_view(session: Session, profile: Profile, net_id: str, without_subnet: str | None = None) -> Body | None:
    view = mirror_ops.network_view(session, net_id, without_subnet)
    if view is not None and profile.name == mapping.FLOODLIGHT:
        view["attached_ports"] = mirror_ops.attached_ports(session, net_id)
    return view


@attrs.frozen
class CreateSubnet(Operation):
    kind = "subnet"
    op = "create"
    ctx: RequestContext
    values: Body
    settings: CoreSettings

    @property
    def object_id(self) -> str:
        return self.values["id"]

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return keys("network", self.values.get("network_id"))

    def apply(self, session: Session) -> Outcome:
        created, subnet = mirror_ops.created_subnet(session, net_ops.create_subnet, self.ctx, self.values, self.settings)
        return Outcome(
            reply=subnet,
            undo=partial(mirror_ops.purge_subnet, created=created),
            events=[SubnetEvent(dhcp_events.SUBNET_CREATED, None, subnet)],
            changes=lambda profile: _network_changes(session, subnet["network_id"]),
        )


@attrs.frozen
class UpdateSubnet(Operation):
    kind = "subnet"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body
    settings: CoreSettings
    network_id: str  # read before the locks are taken

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("network", self.network_id)]

    def apply(self, session: Session) -> Outcome:
        before = net_ops.get_subnet(session, ADMIN, self.object_id)
        after = net_ops.update_subnet(session, self.ctx, self.object_id, self.values, self.settings)
        return Outcome(
            reply=after,
            undo=partial(mirror_ops.restore_subnet, before=before),
            events=[SubnetEvent(dhcp_events.SUBNET_UPDATED, before, after)],
            changes=lambda profile: [Delta(mapping.subnet_calls, None, _subnet_network_view(session, profile, self.network_id))],
        )


@attrs.frozen
class DeleteSubnet(Operation):
    kind = "subnet"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str
    network_id: str

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("network", self.network_id)]

    def check(self, session: Session) -> Outcome:
        net_ops.check_delete_subnet(session, self.ctx, self.object_id)
        return Outcome(
            changes=lambda profile: [
                Delta(mapping.subnet_calls, None, _subnet_network_view(session, profile, self.network_id, without_subnet=self.object_id))
            ]
        )

    def apply(self, session: Session) -> Outcome:
        before = net_ops.delete_subnet(session, self.ctx, self.object_id)
        return Outcome(reply=before, events=[SubnetEvent(dhcp_events.SUBNET_DELETED, before, None)])


# -- ports ---------------------------------------------------------------------------------------


@attrs.frozen
class CreatePort(Operation):
    kind = "port"
    op = "create"
    ctx: RequestContext
    values: Body
    settings: CoreSettings
    rules: Sequence[PortRules] = ()

    @property
    def object_id(self) -> str:
        return self.values["id"]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.values.get("network_id"))

    def apply(self, session: Session) -> Outcome:
        hooks = [partial(rule.before_insert, session, self.ctx, self.values) for rule in self.rules]
        row = port_ops.create_port_row(session, self.ctx, self.values, self.settings, hooks)
        port = port_dict(row)
        for rule in self.rules:
            rule.after_create(session, self.ctx, self.values, port, row)
        port_filter.apply(session, [port], known={row.binding_host_id: row.host_filters})
        view = dict(port, network_tenant_id=row.network.tenant_id)
        return Outcome(
            reply=port,
            undo=partial(mirror_ops.purge_port, port_id=port["id"]),
            events=[PortEvent(None, port)],
            changes=lambda profile: [Delta(mapping.port_calls, None, view)],
        )


@attrs.frozen
class UpdatePort(Operation):
    kind = "port"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body
    settings: CoreSettings
    network_id: str
    rules: Sequence[PortRules] = ()

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.network_id)

    def apply(self, session: Session) -> Outcome:
        before = port_ops.get_port(session, ADMIN, self.object_id)
        if self.rules:
            port = port_ops.visible_port(session, self.ctx, self.object_id)
            for rule in self.rules:
                rule.check_update_by(session, self.ctx, port, self.values)
        after = port_ops.update_port(session, self.ctx, self.object_id, self.values, self.settings)
        for rule in self.rules:
            rule.after_update(session, self.object_id, self.values, after)
        port_filter.apply(session, [after])

        def changes(profile: Profile) -> Sequence[Delta]:
            now = mirror_ops.with_network_tenant(session, after)
            return [Delta(mapping.port_calls, dict(before, network_tenant_id=now["network_tenant_id"]), now)]

        return Outcome(
            reply=after, undo=partial(_restore_port, before=before, rules=self.rules), events=[PortEvent(before, after)], changes=changes
        )


def _restore_port(session: Session, before: Body, rules: Sequence[PortRules]) -> None:
    mirror_ops.restore_port(session, before=before)
    for rule in rules:
        rule.restore(session, before)


@attrs.frozen
class DeletePort(Operation):
    """A port delete; the rules may lock more (``extra_locks``, read before) and tell the controllers more."""

    kind = "port"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str
    network_id: str
    rules: Sequence[PortRules] = ()
    extra_locks: tuple[Hashable, ...] = ()

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("port", self.object_id), *self.extra_locks]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", self.network_id)

    def _checked(self, session: Session, locked: frozenset[Hashable] | None) -> Port:
        port = port_ops.visible_port(session, self.ctx, self.object_id)
        for rule in self.rules:
            rule.check_delete(session, port, locked)
        return port

    def check(self, session: Session) -> Outcome:
        self._checked(session, frozenset(self.exclusive))

        def changes(profile: Profile) -> Sequence[Delta]:
            before = [delta for rule in self.rules for delta in rule.delete_changes(session, self.object_id)]
            return [*before, Delta(mapping.port_calls, mirror_ops.port_view(session, self.object_id), None)]

        return Outcome(changes=changes)

    def apply(self, session: Session) -> Outcome:
        self._checked(session, None)
        for rule in self.rules:
            rule.before_delete(session, self.object_id)
        session.flush()
        before = port_ops.delete_port(session, self.ctx, self.object_id)
        return Outcome(reply=before, events=[PortEvent(before, None)])
