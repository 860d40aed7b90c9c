"""Units of work the controller mirror needs: journal, controller views, undo, topology pages.

Every mirrored operation runs ``journaled(...)``: the change and a journal
entry in one transaction; the operation's views (the network with its subnets,
the port with its network's tenant, below) are read in that same transaction.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from server_plugin.store import agent_events
from server_plugin.store.models import (
    AllocationPool,
    DNSNameServer,
    FloatingIP,
    HostRoute,
    IPAllocation,
    JournalEntry,
    Network,
    Port,
    Router,
    RouterPort,
    SecurityGroupPortBinding,
    Subnet,
    utcnow,
)
from server_plugin.store.views import VIF_TYPE_OVS, VIF_TYPE_UNBOUND, network_dict, port_dict, subnet_dict

T = TypeVar("T")

# -- journal ------------------------------------------------------------------


def journaled(
    session: Session, kind: str, object_ids: Sequence[str], op: str, work: Callable[[Session], T], close: Sequence[int] = ()
) -> tuple[T, list[int]]:
    """Run ``work(session)`` with a journal entry for (kind, op) and each object id; returns (its result, the entry ids).
    ``close``: entries of confirmed changes to close in the same transaction (at most ``agent_events.WITH_GONE_MAX``;
    PostgreSQL: in the statement that inserts the entry)."""
    result = work(session)
    session.flush()  # the change's own rows first (e.g. the port: the entry is about it)
    now = utcnow()
    if len(object_ids) == 1:
        # Inserted with the transaction's agent events, before it commits (PostgreSQL: in their statement, one round
        # trip fewer): nothing in it reads the journal. Its id is in ``entry`` once the unit of work has ended.
        entry: list[int] = []
        row = {"kind": kind, "object_id": object_ids[0], "op": op, "created_at": now}
        agent_events.insert_with_events(session, _JOURNAL, row, entry, close)
        return result, entry
    if close:
        close_entries(session, list(close))
    connection = session.connection()
    if connection.dialect.insert_executemany_returning_sort_by_parameter_order:
        # A bulk create's entries: one Core executemany that returns their ids in order (500 ORM entries cost more
        # CPU in the flush than the statement).
        values = [{"kind": kind, "object_id": object_id, "op": op, "created_at": now} for object_id in object_ids]
        return result, [row[0] for row in connection.execute(_JOURNAL_INSERT_MANY, values)]
    entries = [JournalEntry(kind=kind, object_id=object_id, op=op, created_at=now) for object_id in object_ids]
    session.add_all(entries)
    session.flush()
    return result, [entry.id for entry in entries]


_JOURNAL = JournalEntry.__table__
_JOURNAL_INSERT_MANY = _JOURNAL.insert().returning(JournalEntry.__table__.c.id, sort_by_parameter_order=True)


def finish(session: Session, entry_ids: list[int], work: Callable[[Session], T] | None = None) -> T | None:
    """Close journal entries, after running ``work`` (the second half of a delete, or an undo)."""
    result = work(session) if work is not None else None
    close_entries(session, entry_ids)
    return result


def close_entries(session: Session, entry_ids: list[int]) -> None:
    for start in range(0, len(entry_ids), 500):  # (a bulk create's entries: IN lists of bounded length)
        session.connection().execute(_CLOSE_ENTRIES, {"ids": entry_ids[start : start + 500]})


_CLOSE_ENTRIES = delete(JournalEntry).where(JournalEntry.id.in_(bindparam("ids", expanding=True)))  # built once


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
    if net.router_external:
        view["floatingips"] = network_floatingips(session, net_id)  # an external network's PUT carries them (facts §2b)
    return view


# The keys of a floating IP on the controller (_make_floatingip_dict), inside its network or on its own.
FLOATINGIP_KEYS = ("id", "tenant_id", "floating_ip_address", "floating_network_id", "router_id", "port_id", "fixed_ip_address")


def _floatingip_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "tenant_id": row.tenant_id, "floating_ip_address": row.floating_ip_address,
        "floating_network_id": row.floating_network_id, "router_id": row.router_id, "port_id": row.fixed_port_id,
        "fixed_ip_address": row.fixed_ip_address,
    }  # fmt: skip


def network_floatingips(session: Session, net_id: str) -> list[dict[str, Any]]:
    """The floating IPs of an external network, as the controller gets them (by id)."""
    f = FloatingIP.__table__
    return [_floatingip_row(r) for r in session.execute(select(f).where(f.c.floating_network_id == net_id).order_by(f.c.id))]


def with_network_tenant(session: Session, port: dict[str, Any]) -> dict[str, Any]:
    """A port dict the unit of work just made, plus its network's tenant (from the session, no query)."""
    net = session.get(Network, port["network_id"])
    return dict(port, network_tenant_id=net.tenant_id if net is not None else port["tenant_id"])


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


def created_subnet(session: Session, create: Callable[..., Any], ctx: Any, values: dict[str, Any], *rest: Any) -> tuple[Any, Any]:
    """Run ``create``, which also stamps the subnet's network; return (what purge_subnet needs, the subnet)."""
    stamp = session.scalar(select(Network.updated_at).where(Network.id == values["network_id"]).with_for_update())
    subnet = create(session, ctx, values, *rest)
    return {"id": subnet["id"], "network_id": subnet["network_id"], "network_updated_at": stamp}, subnet


def purge_subnet(session: Session, created: dict[str, Any]) -> None:
    """Undo created_subnet: the subnet goes, and its network gets its stamp back."""
    subnet = session.get(Subnet, created["id"])
    if subnet is not None:
        session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == created["id"]))
        session.delete(subnet)
    net = session.get(Network, created["network_id"])
    if net is not None and created["network_updated_at"] is not None:
        net.updated_at = created["network_updated_at"]


def purge_port(session: Session, port_id: str) -> None:
    port = session.get(Port, port_id)
    if port is not None:
        agent_events.port_change(session, port_dict(port), None)  # its host heard of it: now it is gone
        session.delete(port)


def restore_network(session: Session, before: dict[str, Any]) -> None:
    net = session.get(Network, before["id"])
    if net is None:
        return
    for key in ("name", "description", "admin_state_up", "shared"):
        setattr(net, key, before[key])
    net.router_external = before.get("router:external", net.router_external)
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
    agent_events.port_change(session, port_dict(port), before)
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
        position = 0
        for subnet_id, ip in ((a["subnet_id"], a["ip_address"]) for a in before["fixed_ips"]):
            if session.get(IPAllocation, (subnet_id, ip)) is not None:
                continue  # another port took it while the change was out: this one stays without it
            port.fixed_ips.append(
                IPAllocation(subnet_id=subnet_id, ip_address=ip, network_id=port.network_id, port_id=port.id, position=position)
            )
            position += 1
    port.updated_at = _timestamp(before)


# -- topology ------------------------------------------------------------------


def topology_page(session: Session, after_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` networks after ``after_id`` (by id), each with full subnets and ports.

    Plain SQL (no ORM objects): a sync reads every row of the store, and this
    is what keeps 100,000 ports within seconds. The dicts have the keys of
    views.network_dict / subnet_dict / port_dict that the controller bodies use.
    """
    n, p, a = Network.__table__, Port.__table__, IPAllocation.__table__
    stmt = select(n)
    if after_id is not None:
        stmt = stmt.where(n.c.id > after_id)
    networks = {row.id: _network_row(row) for row in session.execute(stmt.order_by(n.c.id).limit(limit))}
    if not networks:
        return []
    net_ids = list(networks)
    _add_subnets(session, networks)
    f = FloatingIP.__table__
    for row in session.execute(select(f).where(f.c.floating_network_id.in_(net_ids)).order_by(f.c.id)):
        networks[row.floating_network_id].setdefault("floatingips", []).append(_floatingip_row(row))
    ports = {}
    for row in session.execute(select(p).where(p.c.network_id.in_(net_ids)).order_by(p.c.network_id, p.c.id)):
        port = {
            "id": row.id, "name": row.name, "tenant_id": row.tenant_id, "network_id": row.network_id, "mac_address": row.mac_address,
            "admin_state_up": bool(row.admin_state_up), "status": row.status, "fixed_ips": [], "device_id": row.device_id,
            "device_owner": row.device_owner, "binding:host_id": row.binding_host_id,
            "binding:vif_type": VIF_TYPE_OVS if row.binding_host_id else VIF_TYPE_UNBOUND,
        }  # fmt: skip
        ports[row.id] = port
        networks[row.network_id]["ports"].append(port)
    alloc_stmt = select(a.c.port_id, a.c.subnet_id, a.c.ip_address).where(a.c.network_id.in_(net_ids)).order_by(a.c.port_id, a.c.position)
    for row in session.execute(alloc_stmt):
        port = ports.get(row.port_id)
        if port is not None:
            port["fixed_ips"].append({"subnet_id": row.subnet_id, "ip_address": row.ip_address})
    b = SecurityGroupPortBinding.__table__
    bindings = select(b.c.port_id, b.c.security_group_id).join(p, p.c.id == b.c.port_id).where(p.c.network_id.in_(net_ids))
    for row in session.execute(bindings.order_by(b.c.port_id, b.c.security_group_id)):
        if row.port_id in ports:  # (a port created since the read above is in the next sync)
            ports[row.port_id].setdefault("security_groups", []).append(row.security_group_id)
    return list(networks.values())


def _network_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "description": row.description, "tenant_id": row.tenant_id,
        "admin_state_up": bool(row.admin_state_up), "status": row.status, "shared": bool(row.shared),
        "router:external": bool(row.router_external), "subnets": [], "ports": [],
    }  # fmt: skip


def _add_subnets(session: Session, networks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Fill each network's ``subnets`` with full subnet dicts (pools, DNS, routes); returns them by id."""
    s = Subnet.__table__
    subnets = {}
    subnet_stmt = select(s).where(s.c.network_id.in_(list(networks))).order_by(s.c.created_at, s.c.id)
    for row in session.execute(subnet_stmt):
        subnet = {
            "id": row.id, "name": row.name, "description": row.description, "tenant_id": row.tenant_id, "network_id": row.network_id,
            "ip_version": row.ip_version, "cidr": row.cidr, "gateway_ip": row.gateway_ip, "enable_dhcp": bool(row.enable_dhcp),
            "allocation_pools": [], "dns_nameservers": [], "host_routes": [], "shared": networks[row.network_id]["shared"],
        }  # fmt: skip
        subnets[row.id] = subnet
        networks[row.network_id]["subnets"].append(subnet)
    if subnets:
        ids = list(subnets)
        pools, dns, routes = AllocationPool.__table__, DNSNameServer.__table__, HostRoute.__table__
        for row in session.execute(select(pools).where(pools.c.subnet_id.in_(ids)).order_by(pools.c.subnet_id, pools.c.position)):
            subnets[row.subnet_id]["allocation_pools"].append({"start": row.first_ip, "end": row.last_ip})
        for row in session.execute(select(dns).where(dns.c.subnet_id.in_(ids)).order_by(dns.c.subnet_id, dns.c.position)):
            subnets[row.subnet_id]["dns_nameservers"].append(row.address)
        for row in session.execute(select(routes).where(routes.c.subnet_id.in_(ids)).order_by(routes.c.subnet_id, routes.c.position)):
            subnets[row.subnet_id]["host_routes"].append({"destination": row.destination, "nexthop": row.nexthop})
    return subnets


def routers_page(session: Session, after_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` routers after ``after_id`` (by id), each with its gateway and ``interfaces`` (plain SQL).

    A controller knows one interface per (router, network), keyed by the network id: when a
    router has several interface ports on one network, the one with the lowest port id is it
    (the incremental calls follow the same rule, see :func:`router_interface`).
    """
    r, p, rp, a = Router.__table__, Port.__table__, RouterPort.__table__, IPAllocation.__table__
    stmt = select(r, p.c.network_id.label("gw_network_id")).select_from(r.outerjoin(p, p.c.id == r.c.gw_port_id))
    if after_id is not None:
        stmt = stmt.where(r.c.id > after_id)
    routers = {}
    for row in session.execute(stmt.order_by(r.c.id).limit(limit)):
        gateway = {"network_id": row.gw_network_id, "enable_snat": bool(row.enable_snat)} if row.gw_port_id else None
        routers[row.id] = {
            "id": row.id, "tenant_id": row.tenant_id, "name": row.name, "admin_state_up": bool(row.admin_state_up),
            "status": row.status, "external_gateway_info": gateway, "interfaces": [],
        }  # fmt: skip
    if not routers:
        return []
    # (router, network) -> (port id, subnet id) of the interface the controller knows
    chosen: dict[tuple[str, str], tuple[str, str]] = {}
    iface_stmt = (
        select(rp.c.router_id, rp.c.port_id, p.c.network_id, a.c.subnet_id)
        .select_from(rp.join(p, p.c.id == rp.c.port_id).join(a, a.c.port_id == rp.c.port_id))
        .where(rp.c.router_id.in_(list(routers)))
        .order_by(rp.c.router_id, rp.c.port_id, a.c.position)
    )
    for row in session.execute(iface_stmt):
        key = (row.router_id, row.network_id)
        if key not in chosen or row.port_id < chosen[key][0]:
            chosen[key] = (row.port_id, row.subnet_id)
    if chosen:
        n = Network.__table__
        net_ids = sorted({net_id for _, net_id in chosen})
        networks = {row.id: _network_row(row) for row in session.execute(select(n).where(n.c.id.in_(net_ids)))}
        subnets = _add_subnets(session, networks)
        for (router_id, net_id), (_, subnet_id) in sorted(chosen.items()):
            network = dict(networks[net_id])
            network.pop("ports")
            routers[router_id]["interfaces"].append({"id": net_id, "network": network, "subnet": subnets[subnet_id]})
    return list(routers.values())


def router_interface(session: Session, router_id: str, net_id: str, without_port: str | None = None) -> dict[str, Any] | None:
    """The interface a controller should know for (router, network), as in :func:`routers_page`; None if none is left."""
    rows = session.execute(
        select(RouterPort.port_id, IPAllocation.subnet_id)
        .join(Port, Port.id == RouterPort.port_id)
        .join(IPAllocation, IPAllocation.port_id == RouterPort.port_id)
        .where(RouterPort.router_id == router_id, Port.network_id == net_id)
        .order_by(RouterPort.port_id, IPAllocation.position)
    ).all()
    rows = [row for row in rows if row.port_id != without_port]
    if not rows:
        return None
    network = network_view(session, net_id)
    if network is None:
        return None
    network.pop("floatingips", None)
    subnet = next(s for s in network["subnets"] if s["id"] == rows[0].subnet_id)
    return {"id": net_id, "network": network, "subnet": subnet}


# -- what a change locks, read before -----------------------------------------------------


def network_of_subnet(session: Session, subnet_id: str) -> str | None:
    return session.scalar(select(Subnet.network_id).where(Subnet.id == subnet_id))


def network_of_port(session: Session, port_id: str) -> str | None:
    return session.scalar(select(Port.network_id).where(Port.id == port_id))


def gateway_network(session: Session, router_id: str) -> str | None:
    """The external network of a router's gateway port, if it has one."""
    return session.scalar(select(Port.network_id).join(Router, Router.gw_port_id == Port.id).where(Router.id == router_id))


def attached_ports(session: Session, net_id: str) -> list[dict[str, Any]]:
    """The network's ports that have a device: what their attachments are made of."""
    rows = session.execute(select(Port.id, Port.device_id, Port.mac_address).where(Port.network_id == net_id).order_by(Port.id))
    return [{"id": r.id, "device_id": r.device_id, "mac_address": r.mac_address} for r in rows if r.device_id]
