"""Units of work the controller mirror needs: journal, controller views, undo, topology pages.

Every mirrored change runs ``journaled(...)``: the change and a journal entry
in one transaction, plus what the controller call needs (the network with its
subnets, the port with its network's tenant), read in that same transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from server_plugin.store.models import (
    AllocationPool,
    DNSNameServer,
    HostRoute,
    IPAllocation,
    JournalEntry,
    Network,
    Port,
    Subnet,
    utcnow,
)
from server_plugin.store.views import network_dict, port_dict, subnet_dict

# -- journal ------------------------------------------------------------------


def journaled(
    session: Session,
    kind: str,
    object_id: str,
    op: str,
    work: Callable[..., Any] | None,
    args: tuple[Any, ...],
    view: Callable[[Session, Any], Any] | None = None,
) -> tuple[Any, int, Any]:
    """Run ``work(session, *args)`` (None: checks only) with a journal entry; returns (result, entry id, view)."""
    result = work(session, *args) if work is not None else None
    entry = JournalEntry(kind=kind, object_id=object_id, op=op, created_at=utcnow())
    session.add(entry)
    session.flush()
    return result, entry.id, (view(session, result) if view is not None else None)


def finish(session: Session, entry_id: int, work: Callable[..., Any] | None = None, args: tuple[Any, ...] = ()) -> Any:
    """Close a journal entry, after running ``work`` (the second half of a delete, or an undo)."""
    result = work(session, *args) if work is not None else None
    session.execute(delete(JournalEntry).where(JournalEntry.id == entry_id))
    return result


def pending(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(JournalEntry).order_by(JournalEntry.id))
    return [{"id": r.id, "kind": r.kind, "object_id": r.object_id, "op": r.op, "created_at": str(r.created_at)} for r in rows]


def clear_up_to(session: Session, last_id: int) -> int:
    return session.execute(delete(JournalEntry).where(JournalEntry.id <= last_id)).rowcount or 0


# -- views ---------------------------------------------------------------------


def network_view(session: Session, net_id: str, without_subnet: str | None = None) -> dict[str, Any] | None:
    """The network with full subnet dicts (what the controller's network body is made of)."""
    net = session.get(Network, net_id)
    if net is None:
        return None
    view = network_dict(net)
    view["subnets"] = [subnet_dict(s, shared=net.shared) for s in net.subnets if s.id != without_subnet]
    return view


def port_view(session: Session, port_id: str) -> dict[str, Any] | None:
    """The port plus ``network_tenant_id`` (controller paths use the network's tenant)."""
    port = session.get(Port, port_id)
    if port is None:
        return None
    view = port_dict(port)
    view["network_tenant_id"] = session.scalar(select(Network.tenant_id).where(Network.id == port.network_id)) or port.tenant_id
    return view


# -- undo ----------------------------------------------------------------------


def _timestamp(before: dict[str, Any]) -> datetime.datetime:
    """The object's ``updated_at`` as it was: an undone update leaves no trace."""
    return datetime.datetime.strptime(before["updated_at"], "%Y-%m-%dT%H:%M:%SZ")


def purge_network(session: Session, net_id: str) -> None:
    net = session.get(Network, net_id)
    if net is None:
        return
    for port in session.scalars(select(Port).where(Port.network_id == net_id)):
        session.delete(port)
    session.flush()
    for subnet in list(net.subnets):
        session.delete(subnet)
    session.flush()
    session.delete(net)


def purge_subnet(session: Session, subnet_id: str) -> None:
    subnet = session.get(Subnet, subnet_id)
    if subnet is not None:
        session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == subnet_id))
        session.delete(subnet)


def purge_port(session: Session, port_id: str) -> None:
    port = session.get(Port, port_id)
    if port is not None:
        session.delete(port)


def restore_network(session: Session, before: dict[str, Any]) -> None:
    net = session.get(Network, before["id"])
    if net is None:
        return
    for key in ("name", "description", "admin_state_up", "shared"):
        setattr(net, key, before[key])
    net.updated_at = _timestamp(before)


def restore_subnet(session: Session, before: dict[str, Any]) -> None:
    subnet = session.get(Subnet, before["id"])
    if subnet is None:
        return
    for key in ("name", "description", "gateway_ip", "enable_dhcp"):
        setattr(subnet, key, before[key])
    subnet.allocation_pools = [
        AllocationPool(first_ip=p["start"], last_ip=p["end"], position=i) for i, p in enumerate(before["allocation_pools"])
    ]
    subnet.dns_nameservers = [DNSNameServer(address=a, position=i) for i, a in enumerate(before["dns_nameservers"])]
    subnet.host_routes = [
        HostRoute(destination=r["destination"], nexthop=r["nexthop"], position=i) for i, r in enumerate(before["host_routes"])
    ]
    subnet.updated_at = _timestamp(before)


def restore_port(session: Session, before: dict[str, Any]) -> None:
    """Put a port back as it was; its old addresses are taken back if still free."""
    import json

    port = session.get(Port, before["id"])
    if port is None:
        return
    for key, column in (
        ("name", "name"),
        ("description", "description"),
        ("admin_state_up", "admin_state_up"),
        ("device_id", "device_id"),
        ("device_owner", "device_owner"),
        ("mac_address", "mac_address"),
        ("binding:host_id", "binding_host_id"),
        ("status", "status"),
    ):
        setattr(port, column, before[key])
    port.binding_profile = json.dumps(before["binding:profile"], sort_keys=True)
    old = {(a["subnet_id"], a["ip_address"]) for a in before["fixed_ips"]}
    now = {(a.subnet_id, a.ip_address) for a in port.fixed_ips}
    if old != now:
        port.fixed_ips.clear()
        session.flush()
        for position, (subnet_id, ip) in enumerate((a["subnet_id"], a["ip_address"]) for a in before["fixed_ips"]):
            port.fixed_ips.append(
                IPAllocation(subnet_id=subnet_id, ip_address=ip, network_id=port.network_id, port_id=port.id, position=position)
            )
    port.updated_at = _timestamp(before)


# -- topology ------------------------------------------------------------------


def topology_page(session: Session, after_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` networks after ``after_id`` (by id), each with full subnets and ports."""
    stmt = select(Network).options(selectinload(Network.subnets).selectinload(Subnet.allocation_pools))
    stmt = stmt.options(selectinload(Network.subnets).selectinload(Subnet.dns_nameservers))
    stmt = stmt.options(selectinload(Network.subnets).selectinload(Subnet.host_routes))
    if after_id is not None:
        stmt = stmt.where(Network.id > after_id)
    networks = list(session.scalars(stmt.order_by(Network.id).limit(limit)))
    if not networks:
        return []
    ports_by_net: dict[str, list[dict[str, Any]]] = {n.id: [] for n in networks}
    port_stmt = (
        select(Port).where(Port.network_id.in_(list(ports_by_net))).options(selectinload(Port.fixed_ips)).order_by(Port.network_id, Port.id)
    )
    for port in session.scalars(port_stmt):
        ports_by_net[port.network_id].append(port_dict(port))
    page = []
    for net in networks:
        view = network_dict(net)
        view["subnets"] = [subnet_dict(s, shared=net.shared) for s in net.subnets]
        view["ports"] = ports_by_net[net.id]
        page.append(view)
    session.expunge_all()
    return page


# -- updates that remember what they replaced -----------------------------------------


def updated(
    session: Session, getter: Callable[..., Any], updater: Callable[..., Any], ctx: Any, object_id: str, *rest: Any
) -> tuple[Any, Any]:
    """Run ``updater(session, ctx, object_id, *rest)``; return (before, after) for an undo."""
    from server_plugin.context import RequestContext

    before = getter(session, RequestContext.admin(), object_id)
    after = updater(session, ctx, object_id, *rest)
    return before, after


def network_of_subnet(session: Session, subnet_id: str) -> str | None:
    return session.scalar(select(Subnet.network_id).where(Subnet.id == subnet_id))


def network_of_port(session: Session, port_id: str) -> str | None:
    return session.scalar(select(Port.network_id).where(Port.id == port_id))
