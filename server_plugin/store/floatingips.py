"""Units of work for floating IPs (the L3 extension), and their part in the core's port operations.

A floating IP is a hidden port (``network:floatingip``) on an external network plus
the fixed IP it maps to, through the router whose gateway is on that network and
which has an interface on the fixed IP's subnet. A port being deleted loses its
floating IPs (disassociated); a port update cannot take a fixed IP from under one.
"""

from __future__ import annotations

from typing import Any

import netaddr
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin.attributes import GENERATED
from server_plugin.context import RequestContext
from server_plugin.store import access
from server_plugin.store import ports as port_ops
from server_plugin.store.access import StaleLocks
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, scoped
from server_plugin.store.models import FloatingIP, IPAllocation, Network, Port, Router, RouterPort, Subnet
from server_plugin.store.routers import ADMIN, DEVICE_OWNER_FLOATINGIP, external_network
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import floatingip_dict, port_dict
from server_plugin.validators import new_uuid


def visible_floatingip(session: Session, ctx: RequestContext, fip_id: str, lock: bool = False) -> FloatingIP:
    return access.resolve(session, ctx, FloatingIP, fip_id, lock=lock)


def get_floatingip(session: Session, ctx: RequestContext, fip_id: str) -> dict[str, Any]:
    return floatingip_dict(visible_floatingip(session, ctx, fip_id))


def get_floatingips(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    stmt = apply_filters(scoped(ctx, FloatingIP), FloatingIP, query.filters)
    stmt = apply_paging(session, ctx, stmt, FloatingIP, query)
    return [floatingip_dict(f) for f in session.scalars(stmt)]


def _floating_address(session: Session, net: Network, requested: Any) -> list[dict[str, str]]:
    if requested is not GENERATED:
        return [{"ip_address": requested}]
    subnets = session.scalars(
        select(Subnet)
        .where(Subnet.network_id == net.id, Subnet.ip_version == 4)
        .options(selectinload(Subnet.allocation_pools))
        .order_by(Subnet.created_at, Subnet.id)
    )
    for subnet in subnets:
        ip = port_ops._pick_ip(session, subnet, set())
        if ip is not None:
            return [{"subnet_id": subnet.id, "ip_address": ip}]
    raise exc.ExternalIpAddressExhausted(net_id=net.id)


def _router_for_floatingip(session: Session, ext_net_id: str, subnet_id: str, port_id: str) -> str:
    """The router with its gateway on the external network and an interface on the subnet (locked), else 404."""
    gw = select(Port.id).where(Port.network_id == ext_net_id)
    candidates = session.scalars(
        select(Router.id)
        .join(RouterPort, RouterPort.router_id == Router.id)
        .join(IPAllocation, IPAllocation.port_id == RouterPort.port_id)
        .where(IPAllocation.subnet_id == subnet_id, Router.gw_port_id.in_(gw))
        .order_by(Router.id)
    ).all()
    for router_id in candidates:
        if session.scalars(select(Router.id).where(Router.id == router_id).with_for_update()).first():
            return router_id
    raise exc.ExternalGatewayForFloatingIPNotFound(external_network_id=ext_net_id, subnet_id=subnet_id, port_id=port_id)


def _associate(session: Session, ctx: RequestContext, fip: FloatingIP, port_id: str, fixed_ip: str | None) -> None:
    port = port_ops.visible_port(session, ctx, port_id)
    if port.tenant_id != fip.tenant_id:
        raise exc.BadRequest(
            resource="floatingip",
            msg=f"Port {port_id} is associated with a different tenant than Floating IP {fip.id} and therefore cannot be bound.",
        )
    if fixed_ip is not None:
        chosen = next((a for a in port.fixed_ips if a.ip_address == fixed_ip), None)
        if chosen is None:
            raise exc.BadRequest(resource="floatingip", msg=f"Port {port_id} does not have fixed ip {fixed_ip}")
        if netaddr.IPAddress(fixed_ip).version != 4:
            raise exc.BadRequest(resource="floatingip", msg=f"Cannot add floating IP to port {port_id}: {fixed_ip} is not an IPv4 address")
    else:
        v4 = [a for a in port.fixed_ips if netaddr.IPAddress(a.ip_address).version == 4]
        if not v4:
            raise exc.BadRequest(resource="floatingip", msg=f"Cannot add floating IP to port {port_id} that has no fixed IPv4 addresses")
        if len(v4) > 1:
            raise exc.BadRequest(
                resource="floatingip",
                msg=f"Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address when assigning a floating IP",
            )
        chosen = v4[0]
    router_id = _router_for_floatingip(session, fip.floating_network_id, chosen.subnet_id, port.id)
    taken = session.scalars(
        select(FloatingIP.id).where(
            FloatingIP.floating_network_id == fip.floating_network_id,
            FloatingIP.fixed_port_id == port.id,
            FloatingIP.fixed_ip_address == chosen.ip_address,
            FloatingIP.id != fip.id,
        )
    ).first()
    if taken:
        raise exc.FloatingIPPortAlreadyAssociated(
            floating_ip_address=fip.floating_ip_address, fip_id=fip.id, port_id=port.id, fixed_ip=chosen.ip_address,
            net_id=fip.floating_network_id,
        )  # fmt: skip
    fip.fixed_port_id, fip.fixed_ip_address, fip.router_id = port.id, chosen.ip_address, router_id


def _disassociate(fip: FloatingIP) -> None:
    fip.fixed_port_id = fip.fixed_ip_address = fip.router_id = None


def create_floatingip(
    session: Session, ctx: RequestContext, values: dict[str, Any], settings: CoreSettings
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Returns (the floating IP's id for the undo, the floating IP, {"port": its hidden port})."""
    net = external_network(session, ctx, values["floating_network_id"], "floatingip")
    requested = values.get("floating_ip_address", GENERATED)  # admin's to choose: server_plugin.policy
    fip_id = values.get("id") or new_uuid()
    port_values = {
        "network_id": net.id, "tenant_id": "", "name": "", "admin_state_up": True, "device_id": fip_id,
        "device_owner": DEVICE_OWNER_FLOATINGIP, "fixed_ips": _floating_address(session, net, requested),
    }  # fmt: skip
    port = port_ops.create_port(session, ADMIN, port_values, settings)
    fip = FloatingIP(
        id=fip_id,
        tenant_id=values["tenant_id"],
        floating_network_id=net.id,
        floating_ip_address=port["fixed_ips"][0]["ip_address"],
        floating_port_id=port["id"],
    )
    session.add(fip)
    session.flush()
    if values.get("port_id"):
        _associate(session, ctx, fip, values["port_id"], values.get("fixed_ip_address"))
    port_ops._flush_allocations(session)  # a racing association of the same fixed IP: start again
    return fip.id, floatingip_dict(fip), {"port": port}


def update_floatingip(
    session: Session, ctx: RequestContext, fip_id: str, values: dict[str, Any], expected_port: Any = GENERATED
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Associate (port_id [+ fixed_ip_address]) or disassociate (port_id null); returns (before, after).

    ``expected_port``: the port the caller locked as the current one; another one means StaleLocks.
    """
    fip = visible_floatingip(session, ctx, fip_id, lock=True)
    if expected_port is not GENERATED and fip.fixed_port_id != expected_port:
        raise StaleLocks()
    before = floatingip_dict(fip)
    if "port_id" in values:
        if values["port_id"] is None:
            _disassociate(fip)
        else:
            _associate(session, ctx, fip, values["port_id"], values.get("fixed_ip_address"))
    elif "fixed_ip_address" in values:
        if fip.fixed_port_id is None:
            raise exc.BadRequest(resource="floatingip", msg="fixed_ip_address cannot be specified without a port_id")
        _associate(session, ctx, fip, fip.fixed_port_id, values["fixed_ip_address"])
    port_ops._flush_allocations(session)
    return before, floatingip_dict(fip)


def restore_floatingip(session: Session, before: dict[str, Any]) -> None:
    fip = session.get(FloatingIP, before["id"])
    if fip is None:
        return
    port_ok = before["port_id"] is None or session.get(Port, before["port_id"]) is not None
    router_ok = before["router_id"] is None or session.get(Router, before["router_id"]) is not None
    if port_ok and router_ok:
        fip.fixed_port_id, fip.fixed_ip_address, fip.router_id = before["port_id"], before["fixed_ip_address"], before["router_id"]
    else:
        _disassociate(fip)


def purge_floatingip(session: Session, fip_id: str) -> None:
    """Undo create_floatingip: the floating IP and its hidden port go."""
    fip = session.get(FloatingIP, fip_id)
    if fip is None:
        return
    port_id = fip.floating_port_id
    session.delete(fip)
    session.flush()
    port_ops.delete_port_row(session, port_id)


def check_delete_floatingip(session: Session, ctx: RequestContext, fip_id: str) -> dict[str, Any]:
    fip = visible_floatingip(session, ctx, fip_id, lock=True)
    port = session.get(Port, fip.floating_port_id)
    return {"floatingip": floatingip_dict(fip), "port": port_dict(port) if port is not None else None}


def delete_floatingip(session: Session, ctx: RequestContext, fip_id: str) -> dict[str, Any]:
    checked = check_delete_floatingip(session, ctx, fip_id)
    fip = session.get(FloatingIP, fip_id)
    port_id = fip.floating_port_id
    session.delete(fip)
    session.flush()
    port_ops.delete_port_row(session, port_id)
    return checked


def floatingip_network(session: Session, fip_id: str) -> tuple[str, str | None] | None:
    """(floating network, associated port) of a floating IP, or None: what its changes lock."""
    row = session.execute(select(FloatingIP.floating_network_id, FloatingIP.fixed_port_id).where(FloatingIP.id == fip_id)).first()
    return (row[0], row[1]) if row is not None else None


# -- ports (the l3 rules of the port API) --------------------------------------------------------


def floating_networks_of_port(session: Session, port_id: str) -> list[str]:
    """The external networks of the floating IPs associated with a port."""
    return sorted(set(session.scalars(select(FloatingIP.floating_network_id).where(FloatingIP.fixed_port_id == port_id))))


def disassociated_floatingips(session: Session, port_id: str) -> list[dict[str, Any]]:
    """The floating IPs associated with a port, as they will be once it is deleted."""
    fips = session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id).order_by(FloatingIP.id))
    return [dict(floatingip_dict(f), port_id=None, fixed_ip_address=None, router_id=None, status="DOWN") for f in fips]


def disassociate_port(session: Session, port_id: str) -> None:
    """A port delete disassociates its floating IPs (Quantum's disassociate_floatingips)."""
    for fip in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id)):
        _disassociate(fip)


def check_fixed_ips_kept(session: Session, port_id: str, port: dict[str, Any]) -> None:
    """409 when a port update took a fixed IP a floating IP maps to."""
    addresses = {a["ip_address"] for a in port["fixed_ips"]}
    for fip in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id)):
        if fip.fixed_ip_address not in addresses:
            raise exc.FixedIpInUseByFloatingIP(ip_address=fip.fixed_ip_address, port_id=port_id, floatingip_id=fip.id)
