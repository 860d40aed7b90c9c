"""What a caller may see, in one place: for looking up the ids it names and for scoping its lists.

Every id that comes from a caller (a path, a body's network_id, subnet_id or
port_id, a router interface, a gateway, a floating IP's network or port, a
list's marker) is looked up with ``resolve``. An object the caller may not see
gets exactly the NotFound of an id that does not exist, so no answer (status,
type, message) tells another tenant's object from a missing one. Lists use
the same rule as a SQL condition (``visible``).

Visibility (Neutron's defaults): an admin sees everything; a tenant sees its
own objects; networks that are shared or external; subnets of its own or
shared networks; ports on networks it owns.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, bindparam, or_, select, true
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.store.models import FloatingIP, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet
from server_plugin.validators import is_uuid_like

M = TypeVar("M")


def _owned_networks(tenant: str | None) -> Any:
    return select(Network.id).where(Network.tenant_id == tenant)


def _usable_networks(tenant: str | None) -> Any:
    return select(Network.id).where(or_(Network.tenant_id == tenant, Network.shared.is_(True)))


def visible(ctx: RequestContext, model: Any) -> ColumnElement[bool]:
    """The SQL condition for the rows of ``model`` that ``ctx`` may see."""
    if ctx.is_admin:
        return true()
    tenant = ctx.tenant_id
    if model is Network:
        return or_(Network.tenant_id == tenant, Network.shared.is_(True), Network.router_external.is_(True))
    if model is Subnet:
        return or_(Subnet.tenant_id == tenant, Subnet.network_id.in_(_usable_networks(tenant)))
    if model is Port:
        return or_(Port.tenant_id == tenant, Port.network_id.in_(_owned_networks(tenant)))
    if model in (Router, FloatingIP, SecurityGroup):
        return model.tenant_id == tenant
    if model is SecurityGroupRule:
        # a rule: its own, or one in a group the tenant owns (an admin may add rules to a tenant's group)
        owned = select(SecurityGroup.id).where(SecurityGroup.tenant_id == tenant)
        return or_(SecurityGroupRule.tenant_id == tenant, SecurityGroupRule.security_group_id.in_(owned))
    raise TypeError(f"no visibility rule for {model!r}")


_NOT_FOUND = {
    Network: lambda i: exc.NetworkNotFound(net_id=i),
    Subnet: lambda i: exc.SubnetNotFound(subnet_id=i),
    Port: lambda i: exc.PortNotFound(port_id=i),
    Router: lambda i: exc.RouterNotFound(router_id=i),
    FloatingIP: lambda i: exc.FloatingIPNotFound(floatingip_id=i),
    SecurityGroup: lambda i: exc.SecurityGroupNotFound(id=i),
    SecurityGroupRule: lambda i: exc.SecurityGroupRuleNotFound(id=i),
}


# A network by id, built once (its compiled form and cache key are reused): every port create reads one.
_NETWORK_BY_ID = select(Network).where(Network.id == bindparam("obj_id"))


def sees_network(ctx: RequestContext, net: Any) -> bool:
    """``visible(ctx, Network)`` for one loaded row (or anything with its columns)."""
    return ctx.is_admin or net.tenant_id == ctx.tenant_id or bool(net.shared) or bool(net.router_external)


def find(session: Session, ctx: RequestContext, model: type[M], obj_id: Any, lock: bool = False) -> M | None:
    """The object if it exists and ``ctx`` may see it, else None."""
    if not is_uuid_like(obj_id):
        return None  # every id is a UUID we made: anything else (even NUL) names nothing
    if model is Network and not lock:
        net = session.scalars(_NETWORK_BY_ID, {"obj_id": obj_id.lower()}).first()
        return net if net is not None and sees_network(ctx, net) else None  # type: ignore[return-value]
    stmt = select(model).where(model.id == obj_id.lower(), visible(ctx, model))  # type: ignore[attr-defined]
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def resolve(session: Session, ctx: RequestContext, model: type[M], obj_id: Any, lock: bool = False) -> M:
    """The object, or the model's NotFound: the same for another tenant's object as for a missing one."""
    obj = find(session, ctx, model, obj_id, lock)
    if obj is None:
        raise _NOT_FOUND[model](obj_id)
    return obj


class StaleLocks(Exception):
    """The change touches objects its controller locks were not taken for (they changed meanwhile): run it again."""


STALE_RETRIES = 5
