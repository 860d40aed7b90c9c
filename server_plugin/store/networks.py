"""Units of work for networks and subnets (each runs in one transaction)."""

from __future__ import annotations

from typing import Any

import netaddr
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin import ipam, policy
from server_plugin.attributes import GENERATED
from server_plugin.context import RequestContext
from server_plugin.store import access
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, scoped
from server_plugin.store.models import (
    AllocationPool,
    DNSNameServer,
    FloatingIP,
    HostRoute,
    IPAllocation,
    Network,
    Port,
    Router,
    RouterPort,
    Subnet,
    utcnow,
)
from server_plugin.store.settings import AUTO_DELETE_PORT_OWNERS, CoreSettings
from server_plugin.store.views import network_dict, subnet_dict
from server_plugin.validators import new_uuid

# -- access ---------------------------------------------------------------


def visible_network(session: Session, ctx: RequestContext, net_id: str, lock: bool = False) -> Network:
    """The network if this context may see it (its own, shared or external), else NetworkNotFound (never 403)."""
    return access.resolve(session, ctx, Network, net_id, lock=lock)


def owned_network(session: Session, ctx: RequestContext, net_id: str, action: str, lock: bool = False) -> Network:
    """The network if this context may change it: 404 if invisible, 403 if only shared or external."""
    net = visible_network(session, ctx, net_id, lock=lock)
    if not (ctx.is_admin or net.tenant_id == ctx.tenant_id):
        raise exc.PolicyNotAuthorized(action=action)
    return net


def usable_network(session: Session, ctx: RequestContext, net_id: str, action: str) -> Network:
    """A network to put a port on: 404 if invisible, 403 if external but neither owned nor shared."""
    net = visible_network(session, ctx, net_id)
    check_ports_allowed(ctx, net, action)
    return net


def check_ports_allowed(ctx: RequestContext, net: Any, action: str) -> None:
    """403 unless ``ctx`` owns the visible network ``net`` or it is shared (an external network is seen, not used)."""
    if not (ctx.is_admin or net.tenant_id == ctx.tenant_id or net.shared):
        raise exc.PolicyNotAuthorized(action=action)


def visible_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> Subnet:
    return access.resolve(session, ctx, Subnet, subnet_id)


# -- networks --------------------------------------------------------------


def create_network(session: Session, ctx: RequestContext, values: dict[str, Any]) -> dict[str, Any]:
    """(Who may set ``shared`` and ``router:external`` was decided with the request body: server_plugin.policy.)"""
    now = utcnow()
    net = Network(
        id=values.get("id") or new_uuid(),
        tenant_id=values["tenant_id"],
        name=values.get("name", ""),
        description=values.get("description", ""),
        admin_state_up=values.get("admin_state_up", True),
        shared=values.get("shared", False),
        router_external=values.get("router:external", False),
        status="ACTIVE",
        created_at=now,
        updated_at=now,
    )
    session.add(net)
    session.flush()
    session.refresh(net, ["subnets"])
    return network_dict(net)


def get_network(session: Session, ctx: RequestContext, net_id: str) -> dict[str, Any]:
    # External networks are every tenant's to see (Quantum's l3 network filter hook): store.access.
    return network_dict(visible_network(session, ctx, net_id))


def get_networks(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    stmt = scoped(ctx, Network, select(Network).options(selectinload(Network.subnets)))
    stmt = apply_filters(stmt, Network, query.filters)
    stmt = apply_paging(session, ctx, stmt, Network, query)
    return [network_dict(n) for n in session.scalars(stmt)]


def update_network(session: Session, ctx: RequestContext, net_id: str, values: dict[str, Any]) -> dict[str, Any]:
    net = owned_network(session, ctx, net_id, "update_network", lock=True)
    policy.enforce(ctx, "update", "network", values)
    if "shared" in values and values["shared"] != net.shared and not values["shared"]:
        _check_unshare(session, net)
    if "router:external" in values and values["router:external"] != net.router_external:
        if not values["router:external"]:
            _check_unset_external(session, net)
        net.router_external = values["router:external"]
    for key in ("name", "description", "admin_state_up", "shared"):
        if key in values:
            setattr(net, key, values[key])
    net.updated_at = utcnow()
    session.flush()
    return network_dict(net)


def _check_unshare(session: Session, net: Network) -> None:
    foreign = session.scalars(select(Port.id).where(Port.network_id == net.id, Port.tenant_id != net.tenant_id).limit(1)).first()
    foreign = (
        foreign or session.scalars(select(Subnet.id).where(Subnet.network_id == net.id, Subnet.tenant_id != net.tenant_id).limit(1)).first()
    )
    if foreign:
        raise exc.InvalidSharedSetting(network=net.name or net.id)


def _check_unset_external(session: Session, net: Network) -> None:
    """A network with router gateways or floating IPs on it stays external (409 ExternalNetworkInUse)."""
    gateway = session.scalars(select(Router.id).join(Port, Port.id == Router.gw_port_id).where(Port.network_id == net.id).limit(1)).first()
    if gateway or session.scalars(select(FloatingIP.id).where(FloatingIP.floating_network_id == net.id).limit(1)).first():
        raise exc.ExternalNetworkInUse(net_id=net.id)


def check_delete_network(session: Session, ctx: RequestContext, net_id: str) -> tuple[Network, list[Port]]:
    """404, 403 or 409 NetworkInUse, as a delete would answer; else the network and its (auto) ports."""
    net = owned_network(session, ctx, net_id, "delete_network", lock=True)
    ports = list(session.scalars(select(Port).where(Port.network_id == net_id)))
    if any(p.device_owner not in AUTO_DELETE_PORT_OWNERS for p in ports):
        raise exc.NetworkInUse(net_id=net_id)
    return net, ports


def delete_network(session: Session, ctx: RequestContext, net_id: str) -> dict[str, Any]:
    """Delete a network with its subnets and auto-deleted (DHCP) ports; return what it was."""
    net, ports = check_delete_network(session, ctx, net_id)
    before = network_dict(net)
    for port in ports:
        session.delete(port)
    session.flush()
    for subnet in list(net.subnets):
        session.delete(subnet)
    session.flush()
    session.delete(net)
    return before


# -- subnets ---------------------------------------------------------------


def _check_overlap(session: Session, settings: CoreSettings, net: Network, cidr: str, ignore_id: str | None = None) -> None:
    stmt = select(Subnet)
    if settings.allow_overlapping_ips:
        stmt = stmt.where(Subnet.network_id == net.id)
    new = netaddr.IPSet([cidr])
    for other in session.scalars(stmt):
        if other.id != ignore_id and new & netaddr.IPSet([other.cidr]):
            raise exc.InvalidInput(error_message=f"Requested subnet with cidr: {cidr} for network: {net.id} overlaps with another subnet")


def _check_nameservers_and_routes(settings: CoreSettings, subnet_id: str, ip_version: int, values: dict[str, Any]) -> None:
    dns = values.get("dns_nameservers")
    if dns is not None:
        if len(dns) > settings.max_dns_nameservers:
            raise exc.DNSNameServersExhausted(subnet_id=subnet_id, quota=settings.max_dns_nameservers)
        for address in dns:
            if netaddr.IPAddress(address).version != ip_version:
                raise exc.InvalidInput(error_message=f"DNS nameserver {address} does not match the ip_version {ip_version}")
    routes = values.get("host_routes")
    if routes is not None:
        if len(routes) > settings.max_subnet_host_routes:
            raise exc.HostRoutesExhausted(subnet_id=subnet_id, quota=settings.max_subnet_host_routes)
        for route in routes:
            if netaddr.IPNetwork(route["destination"]).version != ip_version or netaddr.IPAddress(route["nexthop"]).version != ip_version:
                raise exc.InvalidInput(error_message=f"Host route {route} does not match the ip_version {ip_version}")


def _set_pools(subnet: Subnet, pools: list[dict[str, str]]) -> None:
    subnet.allocation_pools = [AllocationPool(first_ip=p["start"], last_ip=p["end"], position=i) for i, p in enumerate(pools)]


def _set_dns(subnet: Subnet, servers: list[str]) -> None:
    subnet.dns_nameservers = [DNSNameServer(address=a, position=i) for i, a in enumerate(servers)]


def _set_routes(subnet: Subnet, routes: list[dict[str, str]]) -> None:
    subnet.host_routes = [HostRoute(destination=r["destination"], nexthop=r["nexthop"], position=i) for i, r in enumerate(routes)]


def create_subnet(session: Session, ctx: RequestContext, values: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    net = owned_network(session, ctx, values["network_id"], "create_subnet", lock=True)
    cidr, ip_version = values["cidr"], values["ip_version"]
    if netaddr.IPNetwork(cidr).version != ip_version:
        raise exc.InvalidInput(error_message=f"cidr '{cidr}' does not match the ip_version '{ip_version}'")
    _check_overlap(session, settings, net, cidr)
    gateway = values.get("gateway_ip", GENERATED)
    if gateway is GENERATED:
        gateway = ipam.default_gateway(cidr)
    ipam.validate_gateway(cidr, ip_version, gateway, settings.force_gateway_on_subnet)
    pools = values.get("allocation_pools", GENERATED)
    if pools is GENERATED:
        pools = ipam.default_pools(cidr, gateway)
    else:
        ipam.validate_pools(cidr, ip_version, pools, gateway)
    subnet_id = values.get("id") or new_uuid()
    _check_nameservers_and_routes(settings, subnet_id, ip_version, values)
    now = utcnow()
    subnet = Subnet(
        id=subnet_id,
        tenant_id=values["tenant_id"],
        network_id=net.id,
        name=values.get("name", ""),
        description=values.get("description", ""),
        ip_version=ip_version,
        cidr=cidr,
        gateway_ip=gateway,
        enable_dhcp=values.get("enable_dhcp", True),
        created_at=now,
        updated_at=now,
    )
    _set_pools(subnet, pools)
    _set_dns(subnet, values.get("dns_nameservers", []))
    _set_routes(subnet, values.get("host_routes", []))
    session.add(subnet)
    net.updated_at = now
    session.flush()
    session.refresh(subnet)
    return subnet_dict(subnet, shared=net.shared)


def get_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> dict[str, Any]:
    return subnet_dict(visible_subnet(session, ctx, subnet_id))


def get_subnets(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    stmt = select(Subnet).options(
        selectinload(Subnet.allocation_pools),
        selectinload(Subnet.dns_nameservers),
        selectinload(Subnet.host_routes),
        selectinload(Subnet.network),
    )
    stmt = scoped(ctx, Subnet, stmt)
    filters = dict(query.filters)
    shared = filters.pop("shared", None)
    if shared is not None:
        stmt = stmt.join(Network, Subnet.network_id == Network.id).where(Network.shared.in_(shared))
    stmt = apply_filters(stmt, Subnet, filters)
    stmt = apply_paging(session, ctx, stmt, Subnet, query)
    return [subnet_dict(s) for s in session.scalars(stmt)]


def update_subnet(session: Session, ctx: RequestContext, subnet_id: str, values: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    subnet = visible_subnet(session, ctx, subnet_id)
    if not (ctx.is_admin or subnet.tenant_id == ctx.tenant_id or subnet.network.tenant_id == ctx.tenant_id):
        raise exc.PolicyNotAuthorized(action="update_subnet")
    gateway = values.get("gateway_ip", subnet.gateway_ip)
    if "gateway_ip" in values:
        ipam.validate_gateway(subnet.cidr, subnet.ip_version, gateway, settings.force_gateway_on_subnet)
    if "allocation_pools" in values or "gateway_ip" in values:
        pools = values.get("allocation_pools")
        if pools is None:
            pools = [{"start": p.first_ip, "end": p.last_ip} for p in subnet.allocation_pools]
        ipam.validate_pools(subnet.cidr, subnet.ip_version, pools, gateway)
        if "allocation_pools" in values:
            _set_pools(subnet, pools)
    if "gateway_ip" in values and gateway != subnet.gateway_ip and subnet.gateway_ip is not None:
        _check_gateway_not_routed(session, subnet)
    if gateway is not None and "gateway_ip" in values and gateway != subnet.gateway_ip:
        taken = session.get(IPAllocation, (subnet.id, gateway))
        if taken is not None:
            raise exc.IpAddressInUse(net_id=subnet.network_id, ip_address=gateway)
    _check_nameservers_and_routes(settings, subnet.id, subnet.ip_version, values)
    for key in ("name", "description", "enable_dhcp", "gateway_ip"):
        if key in values:
            setattr(subnet, key, values[key])
    if "dns_nameservers" in values:
        _set_dns(subnet, values["dns_nameservers"])
    if "host_routes" in values:
        _set_routes(subnet, values["host_routes"])
    subnet.updated_at = utcnow()
    session.flush()
    session.refresh(subnet)
    return subnet_dict(subnet)


def _check_gateway_not_routed(session: Session, subnet: Subnet) -> None:
    """The gateway IP a router interface holds cannot move (Neutron's 409 GatewayIpInUse)."""
    holder = session.scalars(
        select(IPAllocation.port_id)
        .join(RouterPort, RouterPort.port_id == IPAllocation.port_id)
        .where(IPAllocation.subnet_id == subnet.id, IPAllocation.ip_address == subnet.gateway_ip)
    ).first()
    if holder:
        raise exc.GatewayIpInUse(ip_address=subnet.gateway_ip, port_id=holder)


def check_delete_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> tuple[Subnet, list[Any]]:
    """404, 403 or 409 SubnetInUse, as a delete would answer; else the subnet and its (auto) allocations."""
    subnet = visible_subnet(session, ctx, subnet_id)
    if not (ctx.is_admin or subnet.tenant_id == ctx.tenant_id or subnet.network.tenant_id == ctx.tenant_id):
        raise exc.PolicyNotAuthorized(action="delete_subnet")
    session.scalars(select(Network).where(Network.id == subnet.network_id).with_for_update()).first()
    rows = session.execute(
        select(IPAllocation, Port.device_owner).join(Port, Port.id == IPAllocation.port_id).where(IPAllocation.subnet_id == subnet_id)
    ).all()
    if any(owner not in AUTO_DELETE_PORT_OWNERS for _, owner in rows):
        raise exc.SubnetInUse(subnet_id=subnet_id)
    return subnet, list(rows)


def delete_subnet(session: Session, ctx: RequestContext, subnet_id: str) -> dict[str, Any]:
    subnet, rows = check_delete_subnet(session, ctx, subnet_id)
    before = subnet_dict(subnet)
    for allocation, _ in rows:
        session.delete(allocation)
    session.flush()
    session.delete(subnet)
    session.flush()
    return before
