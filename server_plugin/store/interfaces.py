"""Units of work for router interfaces (the L3 extension).

An interface is a port (``network:router_interface``, device_id = the router) on a
subnet, recorded in ``routerports``: added by subnet (a new port with the subnet's
gateway IP) or by port (re-owned); removed with its port.
"""

from __future__ import annotations

from typing import Any

import netaddr
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.store import mirror_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.models import IPAllocation, Port, Router, RouterPort, Subnet, utcnow
from server_plugin.store.networks import visible_subnet
from server_plugin.store.routers import ADMIN, DEVICE_OWNER_ROUTER_INTF, floatingips_through, visible_router
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import port_dict
from server_plugin.validators import is_uuid_like


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
        port_ops.delete_port_row(session, undo["port_id"])
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
        for fip in floatingips_through(session, router.id):
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
    port_ops.delete_port_row(session, port["id"])
    return checked
