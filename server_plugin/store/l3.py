"""Units of work for the l3 extension: routers, their gateways and interfaces, floating IPs.

As Quantum's l3_db: a router's gateway is a hidden port (``network:router_gateway``,
tenant ``""``) on an external network; an interface is a port
(``network:router_interface``, device_id = the router) on a subnet, recorded in
``routerports``; a floating IP is a hidden port (``network:floatingip``) on an
external network plus the fixed IP it maps to, through the router whose gateway is
on that network and which has an interface on the fixed IP's subnet.

Creates and updates return ``(what the undo needs, the API reply)``; deletes have a
``check_*`` (the local 404/409s, run before any controller call) and the delete.
"""

from __future__ import annotations

import json
from typing import Any

import netaddr
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin import policy
from server_plugin.attributes import GENERATED
from server_plugin.context import RequestContext
from server_plugin.store import access, mirror_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, scoped
from server_plugin.store.models import FloatingIP, IPAllocation, Network, Port, Router, RouterPort, Subnet, utcnow
from server_plugin.store.networks import visible_subnet
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import floatingip_dict, port_dict, router_dict
from server_plugin.validators import is_uuid_like, new_uuid

DEVICE_OWNER_ROUTER_INTF = "network:router_interface"
DEVICE_OWNER_ROUTER_GW = "network:router_gateway"
DEVICE_OWNER_FLOATINGIP = "network:floatingip"

ADMIN = RequestContext.admin()
STALE_RETRIES = 5


class StaleLocks(Exception):
    """The change touches objects its controller locks were not taken for (they changed meanwhile): run it again."""


# -- access ---------------------------------------------------------------------------------


def visible_router(session: Session, ctx: RequestContext, router_id: str, lock: bool = False) -> Router:
    return access.resolve(session, ctx, Router, router_id, lock=lock)


def visible_floatingip(session: Session, ctx: RequestContext, fip_id: str, lock: bool = False) -> FloatingIP:
    return access.resolve(session, ctx, FloatingIP, fip_id, lock=lock)


def _external_network(session: Session, ctx: RequestContext, net_id: str, resource: str) -> Network:
    """An external network: 404 if unknown or invisible, 400 if visible but not external."""
    net = access.resolve(session, ctx, Network, net_id)
    if not net.router_external:
        raise exc.BadRequest(resource=resource, msg=f"Network {net_id} is not a valid external network")
    return net


def l3_owner(session: Session, port_id: str) -> str | None:
    """What makes a port l3's (router interface, router gateway, floating IP), or None."""
    if session.get(RouterPort, port_id) is not None:
        return DEVICE_OWNER_ROUTER_INTF
    if session.scalars(select(Router.id).where(Router.gw_port_id == port_id)).first():
        return DEVICE_OWNER_ROUTER_GW
    if session.scalars(select(FloatingIP.id).where(FloatingIP.floating_port_id == port_id)).first():
        return DEVICE_OWNER_FLOATINGIP
    return None


def _delete_port_row(session: Session, port_id: str | None) -> None:
    port = session.get(Port, port_id) if port_id else None
    if port is not None:
        session.delete(port)
        session.flush()


# -- routers ----------------------------------------------------------------------------------


def _router_reply(session: Session, router: Router) -> dict[str, Any]:
    gw_port = session.get(Port, router.gw_port_id) if router.gw_port_id else None
    return router_dict(router, gw_port)


def get_router(session: Session, ctx: RequestContext, router_id: str) -> dict[str, Any]:
    return _router_reply(session, visible_router(session, ctx, router_id))


def get_routers(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    stmt = apply_filters(scoped(ctx, Router), Router, query.filters)
    stmt = apply_paging(session, ctx, stmt, Router, query)
    routers = list(session.scalars(stmt))
    gw_ids = [r.gw_port_id for r in routers if r.gw_port_id]
    gw_ports = {p.id: p for p in session.scalars(select(Port).where(Port.id.in_(gw_ids)).options(selectinload(Port.fixed_ips)))}
    return [router_dict(r, gw_ports.get(r.gw_port_id or "")) for r in routers]


def _create_gw_port(session: Session, ctx: RequestContext, router: Router, info: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    net = _external_network(session, ctx, info["network_id"], "router")
    values: dict[str, Any] = {
        "network_id": net.id, "tenant_id": "", "name": "", "admin_state_up": True,
        "device_id": router.id, "device_owner": DEVICE_OWNER_ROUTER_GW,
    }  # fmt: skip
    if info.get("external_fixed_ips"):
        values["fixed_ips"] = info["external_fixed_ips"]
    no_ip = exc.BadRequest(resource="router", msg=f"No IPs available for external network {net.id}")
    try:
        port = port_ops.create_port(session, ADMIN, values, settings)
    except exc.IpAddressGenerationFailure:
        raise no_ip from None
    if not port["fixed_ips"]:
        raise no_ip
    return port


def create_router(
    session: Session, ctx: RequestContext, values: dict[str, Any], settings: CoreSettings
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Returns (router id for the undo, the router, {"gw_port": the new gateway port or None})."""
    now = utcnow()
    router = Router(
        id=values.get("id") or new_uuid(),
        tenant_id=values["tenant_id"],
        name=values.get("name", ""),
        admin_state_up=values.get("admin_state_up", True),
        status="ACTIVE",
        enable_snat=True,
        created_at=now,
        updated_at=now,
    )
    session.add(router)
    session.flush()
    gw_port = None
    info = values.get("external_gateway_info")
    if info:  # (enable_snat and external_fixed_ips are admin's: checked with the body, server_plugin.policy)
        gw_port = _create_gw_port(session, ctx, router, info, settings)
        router.gw_port_id = gw_port["id"]
        router.enable_snat = info.get("enable_snat", True)
        session.flush()
    return router.id, _router_reply(session, router), {"gw_port": gw_port}


def _port_snapshot(port: Port) -> dict[str, Any]:
    """Everything needed to put a deleted port back as it was."""
    return dict(port_dict(port), created_at_raw=port.created_at, updated_at_raw=port.updated_at)


def _restore_port(session: Session, snap: dict[str, Any]) -> bool:
    """Put back a port deleted by a change being undone (its addresses, if still free); False if it cannot be."""
    if session.get(Port, snap["id"]) is not None:
        return True
    if session.get(Network, snap["network_id"]) is None:
        return False
    port = Port(
        id=snap["id"], tenant_id=snap["tenant_id"], network_id=snap["network_id"], name=snap["name"],
        description=snap["description"], mac_address=snap["mac_address"], admin_state_up=snap["admin_state_up"],
        status=snap["status"], device_id=snap["device_id"], device_owner=snap["device_owner"],
        binding_host_id=snap["binding:host_id"], binding_profile=json.dumps(snap["binding:profile"], sort_keys=True),
        created_at=snap["created_at_raw"], updated_at=snap["updated_at_raw"], fixed_ips=[],
    )  # fmt: skip
    session.add(port)
    session.flush()
    position = 0
    for entry in snap["fixed_ips"]:
        if session.get(IPAllocation, (entry["subnet_id"], entry["ip_address"])) is not None:
            continue  # taken while the change was out
        port.fixed_ips.append(
            IPAllocation(subnet_id=entry["subnet_id"], ip_address=entry["ip_address"], network_id=port.network_id, port_id=port.id,
                         position=position)
        )  # fmt: skip
        position += 1
    session.flush()
    return True


def _router_snapshot(session: Session, router: Router) -> dict[str, Any]:
    gw_port = session.get(Port, router.gw_port_id) if router.gw_port_id else None
    return {
        "id": router.id, "name": router.name, "admin_state_up": router.admin_state_up, "enable_snat": router.enable_snat,
        "updated_at": router.updated_at, "gw_port": _port_snapshot(gw_port) if gw_port is not None else None,
    }  # fmt: skip


def _floatingips_through(session: Session, router_id: str, net_id: str | None = None) -> list[FloatingIP]:
    stmt = select(FloatingIP).where(FloatingIP.router_id == router_id)
    if net_id is not None:
        stmt = stmt.where(FloatingIP.floating_network_id == net_id)
    return list(session.scalars(stmt.order_by(FloatingIP.id)))


def _gateway_changes(old_port: Port | None, info: dict[str, Any] | None) -> bool:
    if info is None or old_port is None:
        return (info is None) != (old_port is None)
    if info["network_id"] != old_port.network_id:
        return True
    wanted = info.get("external_fixed_ips")
    if not wanted:
        return False
    current = [(a.subnet_id, a.ip_address) for a in old_port.fixed_ips]
    return any(
        not any(("subnet_id" not in w or w["subnet_id"] == s) and ("ip_address" not in w or w["ip_address"] == ip) for s, ip in current)
        for w in wanted
    ) or len(wanted) != len(current)


def update_router(
    session: Session, ctx: RequestContext, router_id: str, values: dict[str, Any], settings: CoreSettings
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Returns (the router as it was, the router, {"removed_gw": old gateway port, "gw_port": new one})."""
    router = visible_router(session, ctx, router_id, lock=True)
    policy.enforce(ctx, "update", "router", values)
    before = _router_snapshot(session, router)
    removed = created = None
    for key in ("name", "admin_state_up"):
        if key in values:
            setattr(router, key, values[key])
    if "external_gateway_info" in values:
        info = values["external_gateway_info"]
        old_port = session.get(Port, router.gw_port_id) if router.gw_port_id else None
        if _gateway_changes(old_port, info):
            if old_port is not None and (info is None or info["network_id"] != old_port.network_id):
                if _floatingips_through(session, router.id, old_port.network_id):
                    raise exc.RouterExternalGatewayInUseByFloatingIp(router_id=router.id, net_id=old_port.network_id)
            if old_port is not None:
                removed = port_dict(old_port)
                router.gw_port_id = None
                session.flush()
                _delete_port_row(session, old_port.id)
            if info:
                created = _create_gw_port(session, ctx, router, info, settings)
                router.gw_port_id = created["id"]
        router.enable_snat = info.get("enable_snat", True) if info else True
    router.updated_at = utcnow()
    session.flush()
    return before, _router_reply(session, router), {"removed_gw": removed, "gw_port": created}


def restore_router(session: Session, before: dict[str, Any]) -> None:
    """Undo update_router: attributes, and the old gateway port instead of the new one."""
    router = session.get(Router, before["id"])
    if router is None:
        return
    router.name, router.admin_state_up, router.enable_snat = before["name"], before["admin_state_up"], before["enable_snat"]
    old = before["gw_port"]
    if router.gw_port_id != (old["id"] if old else None):
        current = router.gw_port_id
        router.gw_port_id = None
        session.flush()
        _delete_port_row(session, current)
        if old is not None and _restore_port(session, old):
            router.gw_port_id = old["id"]
    router.updated_at = before["updated_at"]


def purge_router(session: Session, router_id: str) -> None:
    """Undo create_router: the router and its gateway port go."""
    router = session.get(Router, router_id)
    if router is None:
        return
    gw_port_id, router.gw_port_id = router.gw_port_id, None
    session.flush()
    _delete_port_row(session, gw_port_id)
    session.delete(router)


def check_delete_router(session: Session, ctx: RequestContext, router_id: str) -> dict[str, Any]:
    """404, or 409 RouterInUse while it has interfaces or floating IPs; else the router (with its gateway port)."""
    router = visible_router(session, ctx, router_id, lock=True)
    if session.scalars(select(RouterPort.port_id).where(RouterPort.router_id == router.id).limit(1)).first() or _floatingips_through(
        session, router.id
    ):
        raise exc.RouterInUse(router_id=router.id)
    gw_port = session.get(Port, router.gw_port_id) if router.gw_port_id else None
    return {"router": router_dict(router, gw_port), "gw_port": port_dict(gw_port) if gw_port is not None else None}


def delete_router(session: Session, ctx: RequestContext, router_id: str) -> dict[str, Any]:
    checked = check_delete_router(session, ctx, router_id)
    router = session.get(Router, router_id)
    gw_port_id, router.gw_port_id = router.gw_port_id, None
    session.flush()
    _delete_port_row(session, gw_port_id)
    session.delete(router)
    session.flush()
    return checked


# -- interfaces ------------------------------------------------------------------------------


def _interface_request(info: Any) -> tuple[str | None, str | None]:
    if not isinstance(info, dict):
        raise exc.HTTPBadRequest(detail="Body contains invalid data")
    port_id, subnet_id = info.get("port_id"), info.get("subnet_id")
    for key, value in (("port_id", port_id), ("subnet_id", subnet_id)):
        if value is not None and not isinstance(value, str):
            raise exc.InvalidInput(error_message=f"Invalid input for {key}. Reason: '{value}' is not a valid UUID")
    return port_id or None, subnet_id or None


def _check_for_dup_router_subnet(session: Session, router: Router, subnet: Subnet) -> None:
    """An interface per subnet, and no two interfaces with overlapping cidrs (Quantum's _check_for_dup_router_subnet)."""
    rows = session.execute(
        select(Subnet.id, Subnet.cidr)
        .join(IPAllocation, IPAllocation.subnet_id == Subnet.id)
        .join(RouterPort, RouterPort.port_id == IPAllocation.port_id)
        .where(RouterPort.router_id == router.id)
    ).all()
    new = netaddr.IPSet([subnet.cidr])
    for other_id, other_cidr in rows:
        if other_id == subnet.id:
            raise exc.BadRequest(resource="router", msg=f"Router already has a port on subnet {subnet.id}")
        if new & netaddr.IPSet([other_cidr]):
            raise exc.BadRequest(
                resource="router",
                msg=f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr {other_cidr} of subnet {other_id}",
            )


def _interface_info(router: Router, port_id: str, subnet: Subnet) -> dict[str, Any]:
    return {
        "id": router.id, "tenant_id": router.tenant_id, "project_id": router.tenant_id, "port_id": port_id,
        "subnet_id": subnet.id, "subnet_ids": [subnet.id], "network_id": subnet.network_id,
    }  # fmt: skip


def add_router_interface(
    session: Session, ctx: RequestContext, router_id: str, info: Any, settings: CoreSettings
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """By subnet (a new port with the subnet's gateway IP) or by port (re-owned).

    Returns (what the undo needs, the interface info, {"before": the port before or None, "port": the port}).
    """
    router = visible_router(session, ctx, router_id, lock=True)
    port_id, subnet_id = _interface_request(info)
    if port_id and subnet_id:
        raise exc.BadRequest(resource="router", msg="Cannot specify both subnet-id and port-id")
    if not port_id and not subnet_id:
        raise exc.BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")
    before = None
    if port_id:
        port = port_ops.visible_port(session, ctx, port_id)
        if port.device_id:
            raise exc.PortInUse(net_id=port.network_id, port_id=port.id, device_id=port.device_id)
        if len(port.fixed_ips) != 1:
            raise exc.BadRequest(resource="router", msg="Router port must have exactly one fixed IP")
        subnet = session.get(Subnet, port.fixed_ips[0].subnet_id)
        _check_for_dup_router_subnet(session, router, subnet)
        before = port_dict(port)
        port.device_id, port.device_owner, port.updated_at = router.id, DEVICE_OWNER_ROUTER_INTF, utcnow()
        after = port_dict(port)
    else:
        subnet = visible_subnet(session, ctx, subnet_id)
        if not subnet.gateway_ip:
            raise exc.BadRequest(resource="router", msg="Subnet for router interface must have a gateway IP")
        _check_for_dup_router_subnet(session, router, subnet)
        values = {
            "network_id": subnet.network_id, "tenant_id": subnet.tenant_id, "name": "", "admin_state_up": True,
            "fixed_ips": [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
            "device_id": router.id, "device_owner": DEVICE_OWNER_ROUTER_INTF,
        }  # fmt: skip
        after = port_ops.create_port(session, ADMIN, values, settings)
    session.add(RouterPort(port_id=after["id"], router_id=router.id, port_type=DEVICE_OWNER_ROUTER_INTF))
    port_ops._flush_allocations(session)  # two routers taking one port: the loser starts again and gets PortInUse
    undo = {"router_id": router.id, "port_id": after["id"], "before": before}
    return undo, _interface_info(router, after["id"], subnet), {"before": before, "port": after}


def undo_add_router_interface(session: Session, undo: dict[str, Any]) -> None:
    session.execute(delete(RouterPort).where(RouterPort.port_id == undo["port_id"]))
    if undo["before"] is None:
        _delete_port_row(session, undo["port_id"])
    else:
        mirror_ops.restore_port(session, undo["before"])


def check_remove_router_interface(session: Session, ctx: RequestContext, router_id: str, info: Any) -> dict[str, Any]:
    """The 400/404/409s of remove_router_interface; returns the interface info plus ``port`` (the port to delete)."""
    router = visible_router(session, ctx, router_id, lock=True)
    port_id, subnet_id = _interface_request(info)
    if not port_id and not subnet_id:
        raise exc.BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")
    if port_id:
        link = session.get(RouterPort, port_id) if is_uuid_like(port_id) else None
        port = session.get(Port, port_id) if link is not None else None
        if link is None or link.router_id != router.id or port is None:
            raise exc.RouterInterfaceNotFound(router_id=router.id, port_id=port_id)
        port_subnets = [a.subnet_id for a in port.fixed_ips]
        if subnet_id and subnet_id not in port_subnets:
            raise exc.SubnetMismatchForPort(port_id=port_id, subnet_id=subnet_id)
        subnet = session.get(Subnet, port_subnets[0]) if port_subnets else None
    else:
        subnet = visible_subnet(session, ctx, subnet_id)  # another tenant's subnet is as unknown as a missing one
        port = session.scalars(
            select(Port)
            .join(RouterPort, RouterPort.port_id == Port.id)
            .join(IPAllocation, IPAllocation.port_id == Port.id)
            .where(RouterPort.router_id == router.id, IPAllocation.subnet_id == subnet.id)
            .order_by(Port.id)
        ).first()
        if port is None:
            raise exc.RouterInterfaceNotFoundForSubnet(router_id=router.id, subnet_id=subnet_id)
    if subnet is not None:
        cidr = netaddr.IPNetwork(subnet.cidr)
        for fip in _floatingips_through(session, router.id):
            if fip.fixed_ip_address and netaddr.IPAddress(fip.fixed_ip_address) in cidr:
                raise exc.RouterInterfaceInUseByFloatingIP(router_id=router.id, subnet_id=subnet.id)
    reply = {
        "id": router.id, "tenant_id": router.tenant_id, "project_id": router.tenant_id, "port_id": port.id,
        "subnet_id": subnet.id if subnet else None, "subnet_ids": [subnet.id] if subnet else [], "network_id": port.network_id,
    }  # fmt: skip
    return dict(reply, port=port_dict(port))


def interface_port_on_subnet(session: Session, router_id: str, subnet_id: str) -> str | None:
    """The router's interface port on a subnet (what a removal by subnet deletes), read before its locks are taken."""
    return session.scalars(
        select(RouterPort.port_id)
        .join(IPAllocation, IPAllocation.port_id == RouterPort.port_id)
        .where(RouterPort.router_id == router_id, IPAllocation.subnet_id == subnet_id)
        .order_by(RouterPort.port_id)
    ).first()


def remove_router_interface(session: Session, ctx: RequestContext, router_id: str, info: Any) -> dict[str, Any]:
    """The interface goes, and its port with it; returns the interface info."""
    checked = check_remove_router_interface(session, ctx, router_id, info)
    port = checked.pop("port")
    session.execute(delete(RouterPort).where(RouterPort.port_id == port["id"]))
    _delete_port_row(session, port["id"])
    return checked


# -- floating IPs ------------------------------------------------------------------------------


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
    net = _external_network(session, ctx, values["floating_network_id"], "floatingip")
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
    _delete_port_row(session, port_id)


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
    _delete_port_row(session, port_id)
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


def check_delete_port(session: Session, ctx: RequestContext, port_id: str, locked_networks: Any = None) -> dict[str, Any]:
    """404, or 409 L3PortInUse for a port a router or floating IP owns (Quantum's prevent_l3_port_deletion)."""
    port = port_ops.visible_port(session, ctx, port_id)
    owner = l3_owner(session, port.id)
    if owner is not None:
        raise exc.L3PortInUse(port_id=port.id, device_owner=port.device_owner or owner)
    if locked_networks is not None and not set(floating_networks_of_port(session, port.id)) <= set(locked_networks):
        raise StaleLocks()
    return port_dict(port)


def delete_port(session: Session, ctx: RequestContext, port_id: str) -> dict[str, Any]:
    """A port delete also disassociates its floating IPs (Quantum's disassociate_floatingips)."""
    check_delete_port(session, ctx, port_id)
    for fip in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id)):
        _disassociate(fip)
    session.flush()
    return port_ops.delete_port(session, ctx, port_id)


def update_port(session: Session, ctx: RequestContext, port_id: str, values: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    """The port API cannot take an l3 port from its router or floating IP, nor a fixed IP from under a floating IP."""
    port = port_ops.visible_port(session, ctx, port_id)
    owner = l3_owner(session, port.id)
    if owner is not None:
        changed = [k for k in ("device_id", "device_owner") if k in values and values[k] != getattr(port, k)]
        if "fixed_ips" in values:
            current = {a.ip_address: a.subnet_id for a in port.fixed_ips}
            wanted = [(e.get("subnet_id"), e.get("ip_address")) for e in values["fixed_ips"]]
            same = len(wanted) == len(current) and {ip for _, ip in wanted} == set(current)
            if not same or any(subnet not in (None, current[ip]) for subnet, ip in wanted):
                changed.append("fixed_ips")
        if changed:
            raise exc.PortInUse(net_id=port.network_id, port_id=port.id, device_id=port.device_id)
    result = port_ops.update_port(session, ctx, port_id, values, settings)
    if "fixed_ips" in values:
        addresses = {a["ip_address"] for a in result["fixed_ips"]}
        for fip in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id)):
            if fip.fixed_ip_address not in addresses:
                raise exc.FixedIpInUseByFloatingIP(ip_address=fip.fixed_ip_address, port_id=port_id, floatingip_id=fip.id)
    return result
