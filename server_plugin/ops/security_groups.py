"""The security-group extension's operations, and its rules for the core's port and network operations.

Each operation is one mutation in one transaction (ops/base.py); its controller
change is the group as it is after (sg_mapping: Big Switch re-posts a group
whenever its rules change). The lock key of every change is the group's
(``("security_group", id)``), so changes to one group reach the controllers in
commit order.

A port create costs the default group's lookup (cached per tenant; made once, by
its own operation, before the first port that needs it) and one binding insert.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from functools import partial
from typing import Any

import attrs
from sqlalchemy.orm import Session
from twisted.internet.defer import Deferred

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.controller import sg_mapping
from server_plugin.ops.base import Body, Delta, Operation, Outcome
from server_plugin.ops.core import NetworkRules, PortRules
from server_plugin.policy import NETWORK_DEVICE_PREFIX
from server_plugin.store import security_groups as sg_ops
from server_plugin.store.models import Network, Port
from server_plugin.validators import new_uuid


def _group_delta(before: Body | None, after: Body | None) -> Delta:
    return Delta(sg_mapping.security_group_calls, before, after)


@attrs.frozen
class EnsureDefaultSecurityGroup(Operation):
    """A tenant's default group, made on first use (a list, a port, a group of that tenant); nothing if it exists."""

    kind = "security_group"
    op = "create"
    tenant_id: str
    group_id: str  # the id it gets if made now

    @property
    def object_id(self) -> str:
        return self.group_id

    @property
    def exclusive(self) -> list[tuple[str, str]]:
        """Also the tenant's: a second port create of the tenant waits until the first one's default group is confirmed
        by the controllers or undone, instead of binding a group that the first one's refusal then removes."""
        return [(self.kind, self.group_id), ("default security group of", self.tenant_id)]

    def apply(self, session: Session) -> Outcome:
        made, group_id = sg_ops.create_default_group(session, self.tenant_id, self.group_id)
        if made is None:
            return Outcome(reply=group_id)
        return Outcome(
            reply=group_id,
            undo=partial(sg_ops.purge_group, group_id=group_id),
            changes=lambda profile: [_group_delta(None, made)],
        )


@attrs.frozen
class CreateSecurityGroup(Operation):
    kind = "security_group"
    op = "create"
    ctx: RequestContext
    values: Body
    default_id: str  # the tenant's default group's id if it must be made with this one

    @property
    def object_id(self) -> str:
        return self.values["id"]

    def apply(self, session: Session) -> Outcome:
        made, default_id = sg_ops.create_default_group(session, self.values["tenant_id"], self.default_id)
        group = sg_ops.create_group(session, self.ctx, self.values)

        def undo(session: Session) -> None:
            sg_ops.purge_group(session, group["id"])
            if made is not None:
                sg_ops.purge_group(session, default_id)

        return Outcome(
            reply=group,
            undo=undo,
            changes=lambda profile: [*([_group_delta(None, made)] if made else []), _group_delta(None, group)],
        )


@attrs.frozen
class UpdateSecurityGroup(Operation):
    kind = "security_group"
    op = "update"
    ctx: RequestContext
    object_id: str
    values: Body

    def apply(self, session: Session) -> Outcome:
        before, after = sg_ops.update_group(session, self.ctx, self.object_id, self.values)
        return Outcome(
            reply=after, undo=partial(sg_ops.restore_group, before=before), changes=lambda profile: [_group_delta(before, after)]
        )


@attrs.frozen
class DeleteSecurityGroup(Operation):
    """Rules of other groups that name it go with it (those groups are re-posted)."""

    kind = "security_group"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str

    def check(self, session: Session) -> Outcome:
        before = sg_ops.check_delete_group(session, self.ctx, self.object_id)
        referencing = []
        for group_id in sg_ops.referencing_groups(session, self.object_id):
            group = sg_ops.get_group(session, RequestContext.admin(), group_id)
            kept = [r for r in group["security_group_rules"] if r["remote_group_id"] != self.object_id]
            referencing.append(_group_delta(group, dict(group, security_group_rules=kept)))
        return Outcome(changes=lambda profile: [*referencing, _group_delta(before, None)])

    def apply(self, session: Session) -> Outcome:
        return Outcome(reply=sg_ops.delete_group(session, self.ctx, self.object_id))


@attrs.frozen
class CreateSecurityGroupRule(Operation):
    kind = "security_group_rule"
    op = "create"
    ctx: RequestContext
    values: Body

    @property
    def object_id(self) -> str:
        return self.values["id"]

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("security_group", self.values["security_group_id"])]

    def apply(self, session: Session) -> Outcome:
        rule, before, after = sg_ops.create_rule(session, self.ctx, self.values)
        return Outcome(
            reply=rule, undo=partial(sg_ops.purge_rule, rule_id=rule["id"]), changes=lambda profile: [_group_delta(before, after)]
        )


@attrs.frozen
class DeleteSecurityGroupRule(Operation):
    kind = "security_group_rule"
    op = "delete"
    deletes = True
    ctx: RequestContext
    object_id: str
    group_id: str  # read before the locks are taken

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("security_group", self.group_id)]

    def check(self, session: Session) -> Outcome:
        _, before, after = sg_ops.check_delete_rule(session, self.ctx, self.object_id)
        return Outcome(changes=lambda profile: [_group_delta(before, after)])

    def apply(self, session: Session) -> Outcome:
        return Outcome(reply=sg_ops.delete_rule(session, self.ctx, self.object_id))


# -- the core's ports and networks ----------------------------------------------------------------


class DefaultGroups:
    """tenant -> its default group's id, as this server last saw it.

    An id used for a port whose insert then failed (``inserted`` not called before this worker thread's next
    lookup: the store retried the unit of work) is looked up again: an admin may have deleted the group, maybe on
    another server, and the binding's foreign key refused it. Any other failure costs one extra lookup.
    """

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self._unconfirmed = threading.local()  # the tenant whose cached id this thread used last, until inserted

    def inserted(self) -> None:
        self._unconfirmed.tenant = None

    def lookup(self, session: Session, tenant: str) -> str:
        if getattr(self._unconfirmed, "tenant", None) == tenant:
            self.ids.pop(tenant, None)
        self._unconfirmed.tenant = tenant
        found = self.ids.get(tenant)
        if found is None:
            # Made by its own operation before the port (prepare_create); made here only if an admin deleted it meanwhile.
            _, found = sg_ops.create_default_group(session, tenant)
            self.ids[tenant] = found
        return found


def _wants_default(values: Body) -> bool:
    return "security_groups" not in values and not str(values.get("device_owner", "")).startswith(NETWORK_DEVICE_PREFIX)


class SecurityGroupPortRules(PortRules):
    """``security_groups``, ``port_security_enabled`` and ``allowed_address_pairs`` on ports, checked as Neutron does."""

    def __init__(self, defaults: DefaultGroups) -> None:
        self.defaults = defaults
        self._making: dict[str, list[Deferred[None]]] = {}  # tenant -> the port creates waiting for its default group

    async def prepare_create(self, plugin: Any, ctx: RequestContext, values: Body) -> None:
        """Make the tenant's default group once, single-flight: the port creates that arrive while it is being made wait
        for that one operation and look again, rather than queue one operation each behind the tenant's lock (64 of
        them, each a store round trip in turn while other ports' work fills the store's queue, held 63 clients for
        seconds). If it was refused (nothing cached), the next waiter makes its own attempt, as each did before."""
        tenant = values.get("tenant_id")
        if not tenant or not _wants_default(values) or values.get("port_security_enabled") is False:
            return
        while tenant not in self.defaults.ids:
            waiting = self._making.get(tenant)
            if waiting is not None:
                wake: Deferred[None] = Deferred()
                waiting.append(wake)
                await wake
                continue
            self._making[tenant] = []
            try:
                self.defaults.ids[tenant] = await plugin.run(EnsureDefaultSecurityGroup(tenant, new_uuid()))
            finally:
                for wake in self._making.pop(tenant):
                    wake.callback(None)

    def before_insert(self, session: Session, ctx: RequestContext, values: Body, row: Port) -> None:
        psec = values.get("port_security_enabled")
        if psec is None:
            psec = row.network.port_security_enabled is not False  # loaded by the create: no query
        has_ip = bool(row.fixed_ips)
        pairs = values.get("allowed_address_pairs") or []
        if pairs and not psec:
            raise exc.AddressPairAndPortSecurityRequired()
        if "security_groups" in values:
            groups = values["security_groups"]
            if groups and not (psec and has_ip):
                raise exc.PortSecurityAndIPRequiredForSecurityGroups()
            sg_ops.tenant_groups(session, ctx, row.tenant_id, groups)
        elif psec and has_ip and _wants_default(values):
            groups = [self.defaults.lookup(session, row.tenant_id)]
        else:
            groups = []
        row.port_security_enabled = bool(psec)
        if groups:
            sg_ops.bind(session, row, groups)
        if pairs:
            sg_ops.set_pairs(session, row, pairs)

    def after_create(self, session: Session, ctx: RequestContext, values: Body, port: Body, row: Port) -> None:
        self.defaults.inserted()
        port["port_security_enabled"] = row.port_security_enabled is not False
        port["security_groups"] = sorted(b.security_group_id for b in row.security_group_bindings)
        port["allowed_address_pairs"] = [{"ip_address": p.ip_address, "mac_address": p.mac_address} for p in row.allowed_address_pairs]

    def check_update_by(self, session: Session, ctx: RequestContext, port: Port, values: Body) -> None:
        psec = values.get("port_security_enabled", port.port_security_enabled is not False)
        current = [b.security_group_id for b in port.security_group_bindings]
        groups = values["security_groups"] if "security_groups" in values else current
        has_ip = bool(values["fixed_ips"]) if "fixed_ips" in values else bool(port.fixed_ips)
        if groups and not (psec and has_ip):
            if "security_groups" in values:
                raise exc.PortSecurityAndIPRequiredForSecurityGroups()
            raise exc.PortSecurityPortHasSecurityGroup()
        pairs = values["allowed_address_pairs"] if "allowed_address_pairs" in values else port.allowed_address_pairs
        if pairs and not psec:
            raise exc.AddressPairAndPortSecurityRequired()
        if "security_groups" in values:
            sg_ops.tenant_groups(session, ctx, port.tenant_id, values["security_groups"])

    def after_update(self, session: Session, port_id: str, values: Body, port: Body) -> None:
        if not any(k in values for k in ("security_groups", "port_security_enabled", "allowed_address_pairs", "binding:host_id")):
            return
        row = session.get(Port, port_id)
        if "binding:host_id" in values:
            sg_ops.rehost(session, row)
        if "port_security_enabled" in values:
            row.port_security_enabled = bool(values["port_security_enabled"])
            port["port_security_enabled"] = bool(values["port_security_enabled"])
        if "security_groups" in values:
            sg_ops.bind(session, row, values["security_groups"])
            port["security_groups"] = sorted(set(values["security_groups"]))
        if "allowed_address_pairs" in values:
            sg_ops.set_pairs(session, row, values["allowed_address_pairs"])
            port["allowed_address_pairs"] = [{"ip_address": p.ip_address, "mac_address": p.mac_address} for p in row.allowed_address_pairs]
        session.flush()

    def restore(self, session: Session, before: Body) -> None:
        row = session.get(Port, before["id"])
        if row is None:
            return
        now_groups = sorted(b.security_group_id for b in row.security_group_bindings)
        now_pairs = [{"ip_address": p.ip_address, "mac_address": p.mac_address} for p in row.allowed_address_pairs]
        row.port_security_enabled = before["port_security_enabled"]
        if now_groups != before["security_groups"]:
            sg_ops.bind(session, row, before["security_groups"])
        if now_pairs != before["allowed_address_pairs"]:
            sg_ops.set_pairs(session, row, before["allowed_address_pairs"])
        sg_ops.rehost(session, row)
        session.flush()
        changed = set(now_groups) ^ set(before["security_groups"])
        if now_pairs != before["allowed_address_pairs"]:
            changed |= set(now_groups) | set(before["security_groups"])
        sg_ops.notify(session, changed)


class PortSecurityNetworkRules(NetworkRules):
    """``port_security_enabled`` on networks: the default of their new ports."""

    def after_create(self, session: Session, ctx: RequestContext, values: Body, network: Body) -> None:
        self._set(session, values, network)

    def after_update(self, session: Session, ctx: RequestContext, values: Body, network: Body) -> None:
        self._set(session, values, network)

    @staticmethod
    def _set(session: Session, values: Body, network: Body) -> None:
        if "port_security_enabled" not in values:
            return
        row = session.get(Network, network["id"])
        row.port_security_enabled = bool(values["port_security_enabled"])
        network["port_security_enabled"] = bool(values["port_security_enabled"])
