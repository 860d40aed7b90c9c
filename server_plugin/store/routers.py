"""Units of work for routers and their gateways (the L3 extension).

As Quantum's l3_db: a router's gateway is a hidden port (``network:router_gateway``,
tenant ``""``) on an external network. Creates and updates return
``(what the undo needs, the API reply, the hidden ports touched)``; deletes have a
``check_*`` (the local 404/409s, run before any controller call) and the delete.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin import policy
from server_plugin.context import RequestContext
from server_plugin.store import access
from server_plugin.store import ports as port_ops
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, scoped
from server_plugin.store.models import FloatingIP, Network, Port, Router, RouterPort, utcnow
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import port_dict, router_dict
from server_plugin.validators import new_uuid

DEVICE_OWNER_ROUTER_INTF = "network:router_interface"
DEVICE_OWNER_ROUTER_GW = "network:router_gateway"
DEVICE_OWNER_FLOATINGIP = "network:floatingip"

ADMIN = RequestContext.admin()

# -- access ---------------------------------------------------------------------------------


def visible_router(session: Session, ctx: RequestContext, router_id: str, lock: bool = False) -> Router:
    return access.resolve(session, ctx, Router, router_id, lock=lock)


def external_network(session: Session, ctx: RequestContext, net_id: str, resource: str) -> Network:
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
    net = external_network(session, ctx, info["network_id"], "router")
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


def _router_snapshot(session: Session, router: Router) -> dict[str, Any]:
    gw_port = session.get(Port, router.gw_port_id) if router.gw_port_id else None
    return {
        "id": router.id, "name": router.name, "admin_state_up": router.admin_state_up, "enable_snat": router.enable_snat,
        "updated_at": router.updated_at, "gw_port": port_ops.port_snapshot(gw_port) if gw_port is not None else None,
    }  # fmt: skip


def floatingips_through(session: Session, router_id: str, net_id: str | None = None) -> list[FloatingIP]:
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
                if floatingips_through(session, router.id, old_port.network_id):
                    raise exc.RouterExternalGatewayInUseByFloatingIp(router_id=router.id, net_id=old_port.network_id)
            if old_port is not None:
                removed = port_dict(old_port)
                router.gw_port_id = None
                session.flush()
                port_ops.delete_port_row(session, old_port.id)
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
        port_ops.delete_port_row(session, current)
        if old is not None and port_ops.restore_deleted_port(session, old):
            router.gw_port_id = old["id"]
    router.updated_at = before["updated_at"]


def purge_router(session: Session, router_id: str) -> None:
    """Undo create_router: the router and its gateway port go."""
    router = session.get(Router, router_id)
    if router is None:
        return
    gw_port_id, router.gw_port_id = router.gw_port_id, None
    session.flush()
    port_ops.delete_port_row(session, gw_port_id)
    session.delete(router)


def check_delete_router(session: Session, ctx: RequestContext, router_id: str) -> dict[str, Any]:
    """404, or 409 RouterInUse while it has interfaces or floating IPs; else the router (with its gateway port)."""
    router = visible_router(session, ctx, router_id, lock=True)
    if session.scalars(select(RouterPort.port_id).where(RouterPort.router_id == router.id).limit(1)).first() or floatingips_through(
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
    port_ops.delete_port_row(session, gw_port_id)
    session.delete(router)
    session.flush()
    return checked
