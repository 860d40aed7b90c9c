"""The l3 extension through real clients: routers, interfaces, gateways, floating IPs (facts §4.4, §4.5).

openstacksdk and python-neutronclient against a started server (store only) on SQLite,
PostgreSQL and MariaDB; every conflict of the facts is checked for its status and its
Neutron exception type (python-neutronclient has typed classes for only a few of them:
the others arrive as NotFound/Conflict/BadRequest, and the type is read from the body).
"""

from __future__ import annotations

import uuid
from typing import Any

import openstack
import pytest
from neutronclient.common import exceptions as nc_exc
from neutronclient.v2_0 import client as nc_client
from openstack import exceptions as sdk_exc

from restproxy_testing.support import ServerProcess, uniq

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning", "ignore::FutureWarning")

ADMIN_TENANT = "l3-admin"


@pytest.fixture
def tenant() -> str:
    return uniq("l3-t")


_cidrs = iter(range(1, 250))


def cidr() -> str:
    """A /24 of its own for each subnet of the module (overlapping cidrs on one router are a 400)."""
    return f"10.{next(_cidrs)}.0.0/24"


def typed(server: ServerProcess, method: str, path: str, body: Any = None, tenant: str | None = None) -> tuple[int, str]:
    """(status, NeutronError type) of a request that must fail."""
    headers = {"X-Tenant-Id": tenant} if tenant else None
    status, reply = server.request(method, path, body, headers=headers)
    assert status >= 400, reply
    return status, reply["NeutronError"]["type"]


def ext_net(nc: nc_client.Client, name: str = "ext", cidr_: str | None = None, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An external network (admin's) with one subnet."""
    net = nc.create_network({"network": {"name": uniq(name), "tenant_id": ADMIN_TENANT, "router:external": True}})["network"]
    cidr_ = cidr_ or f"172.{next(_cidrs) % 16 + 16}.{next(_cidrs)}.0/24"
    body = {"network_id": net["id"], "tenant_id": ADMIN_TENANT, "ip_version": 4, "cidr": cidr_, **extra}
    subnet = nc.create_subnet({"subnet": body})["subnet"]
    return net, subnet


def net_subnet(nc: nc_client.Client, tenant: str, **subnet_extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    net = nc.create_network({"network": {"name": uniq("net"), "tenant_id": tenant}})["network"]
    body = {"network_id": net["id"], "ip_version": 4, "cidr": cidr(), "tenant_id": tenant, **subnet_extra}
    return net, nc.create_subnet({"subnet": body})["subnet"]


def port(nc: nc_client.Client, tenant: str, net_id: str, **extra: Any) -> dict[str, Any]:
    return nc.create_port({"port": {"network_id": net_id, "tenant_id": tenant, **extra}})["port"]


def owned_ports(nc: nc_client.Client, device_id: str) -> list[dict[str, Any]]:
    return nc.list_ports(device_id=device_id)["ports"]


# -- openstacksdk ---------------------------------------------------------------------------------


def test_sdk_router_crud_and_external_networks(conn: openstack.connection.Connection, nc: nc_client.Client, tenant: str) -> None:
    ext = conn.network.create_network(name=uniq("ext"), project_id=ADMIN_TENANT, is_router_external=True)
    assert ext.is_router_external is True
    conn.network.create_subnet(network_id=ext.id, ip_version=4, cidr="172.31.7.0/24", project_id=ADMIN_TENANT)
    plain = conn.network.create_network(name=uniq("plain"), project_id=tenant)
    assert plain.is_router_external is False
    external_ids = {n.id for n in conn.network.networks(is_router_external=True)}
    assert ext.id in external_ids and plain.id not in external_ids

    router = conn.network.create_router(name=uniq("r"), project_id=tenant)
    assert router.status == "ACTIVE" and router.is_admin_state_up is True and router.external_gateway_info is None
    assert router.project_id == tenant
    fetched = conn.network.get_router(router.id)
    assert (fetched.id, fetched.name) == (router.id, router.name)
    renamed = conn.network.update_router(router, name="renamed", is_admin_state_up=False)
    assert (renamed.name, renamed.is_admin_state_up) == ("renamed", False)
    assert [r.id for r in conn.network.routers(project_id=tenant)] == [router.id]

    # Gateway on, then off: a hidden port (tenant "", network:router_gateway) comes and goes.
    with_gw = conn.network.update_router(router, external_gateway_info={"network_id": ext.id})
    gateway = with_gw.external_gateway_info
    assert gateway["network_id"] == ext.id and gateway["enable_snat"] is True
    [gw_ip] = gateway["external_fixed_ips"]
    [gw_port] = owned_ports(nc, router.id)
    assert gw_port["device_owner"] == "network:router_gateway" and gw_port["tenant_id"] == ""
    assert gw_port["network_id"] == ext.id and gw_port["fixed_ips"] == [gw_ip]
    no_snat = conn.network.update_router(router, external_gateway_info={"network_id": ext.id, "enable_snat": False})
    assert no_snat.external_gateway_info["enable_snat"] is False
    assert owned_ports(nc, router.id)[0]["id"] == gw_port["id"]  # same network: the port stays
    cleared = conn.network.update_router(router, external_gateway_info=None)
    assert cleared.external_gateway_info is None
    assert owned_ports(nc, router.id) == []

    # A gateway on a network that is not external is a 400; an unknown network a 404.
    with pytest.raises(sdk_exc.BadRequestException) as info:
        conn.network.update_router(router, external_gateway_info={"network_id": plain.id})
    assert "is not a valid external network" in str(info.value)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.create_router(name="x", project_id=tenant, external_gateway_info={"network_id": str(uuid.uuid4())})

    created = conn.network.create_router(name=uniq("r"), project_id=tenant, external_gateway_info={"network_id": ext.id})
    assert created.external_gateway_info["network_id"] == ext.id
    conn.network.delete_router(created, ignore_missing=False)
    assert owned_ports(nc, created.id) == []  # the gateway port went with it
    conn.network.delete_router(router, ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_router(router.id)


def test_sdk_interfaces_by_subnet_and_by_port(conn: openstack.connection.Connection, nc: nc_client.Client, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), project_id=tenant)
    subnet = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr(), project_id=tenant)
    other = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr(), project_id=tenant)
    router = conn.network.create_router(name=uniq("r"), project_id=tenant)

    info = conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    assert info["id"] == router.id and info["subnet_id"] == subnet.id and info["subnet_ids"] == [subnet.id]
    assert info["network_id"] == net.id and info["tenant_id"] == tenant
    iface = conn.network.get_port(info["port_id"])
    assert iface.device_owner == "network:router_interface" and iface.device_id == router.id
    assert iface.fixed_ips == [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}]
    assert iface.project_id == tenant

    free = conn.network.create_port(network_id=net.id, project_id=tenant, fixed_ips=[{"subnet_id": other.id}])
    by_port = conn.network.add_interface_to_router(router, port_id=free.id)
    assert by_port["port_id"] == free.id and by_port["subnet_id"] == other.id
    reowned = conn.network.get_port(free.id)
    assert (reowned.device_id, reowned.device_owner) == (router.id, "network:router_interface")

    removed = conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    assert removed["port_id"] == info["port_id"] and removed["subnet_id"] == subnet.id
    removed = conn.network.remove_interface_from_router(router, port_id=free.id)
    assert removed["port_id"] == free.id
    # Both interface ports are gone, the one made by the client included (as Quantum does).
    assert [p.id for p in conn.network.ports(device_id=router.id)] == []
    conn.network.delete_router(router, ignore_missing=False)
    conn.network.delete_network(net, ignore_missing=False)


def test_sdk_floating_ip_associate_disassociate_delete(conn: openstack.connection.Connection, nc: nc_client.Client, tenant: str) -> None:
    ext = conn.network.create_network(name=uniq("ext"), project_id=ADMIN_TENANT, is_router_external=True)
    ext_subnet = conn.network.create_subnet(network_id=ext.id, ip_version=4, cidr="198.51.100.0/24", project_id=ADMIN_TENANT)
    net = conn.network.create_network(name=uniq("net"), project_id=tenant)
    subnet = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr(), project_id=tenant)
    router = conn.network.create_router(name=uniq("r"), project_id=tenant, external_gateway_info={"network_id": ext.id})
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    vm = conn.network.create_port(network_id=net.id, project_id=tenant, device_id="vm-1")

    fip = conn.network.create_ip(floating_network_id=ext.id, project_id=tenant)
    assert fip.floating_ip_address.startswith("198.51.100.") and fip.port_id is None and fip.router_id is None
    assert fip.status == "DOWN"
    [hidden] = owned_ports(nc, fip.id)
    assert hidden["device_owner"] == "network:floatingip" and hidden["tenant_id"] == ""
    assert hidden["fixed_ips"] == [{"subnet_id": ext_subnet.id, "ip_address": fip.floating_ip_address}]

    associated = conn.network.update_ip(fip, port_id=vm.id)
    assert associated.port_id == vm.id and associated.router_id == router.id and associated.status == "ACTIVE"
    assert associated.fixed_ip_address == vm.fixed_ips[0]["ip_address"]
    assert [f.id for f in conn.network.ips(port_id=vm.id)] == [fip.id]
    disassociated = conn.network.update_ip(fip, port_id=None)
    assert (disassociated.port_id, disassociated.fixed_ip_address, disassociated.router_id) == (None, None, None)

    # Created already associated, then the port is deleted: the floating IP stays, disassociated.
    second = conn.network.create_ip(floating_network_id=ext.id, project_id=tenant, port_id=vm.id)
    assert second.port_id == vm.id and second.router_id == router.id
    conn.network.delete_port(vm, ignore_missing=False)
    after = conn.network.get_ip(second.id)
    assert (after.port_id, after.fixed_ip_address, after.router_id) == (None, None, None)

    for each in (fip, second):
        conn.network.delete_ip(each, ignore_missing=False)
        assert owned_ports(nc, each.id) == []
        with pytest.raises(sdk_exc.NotFoundException):
            conn.network.get_ip(each.id)


# -- python-neutronclient -----------------------------------------------------------------------


def test_neutronclient_router_lifecycle_and_conflicts(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    ext, _ = ext_net(nc)
    net, subnet = net_subnet(nc, tenant)
    router = nc.create_router({"router": {"name": uniq("r"), "tenant_id": tenant}})["router"]
    rid = router["id"]
    nc.add_gateway_router(rid, {"network_id": ext["id"]})
    info = nc.add_interface_router(rid, {"subnet_id": subnet["id"]})
    assert info["port_id"] and info["subnet_id"] == subnet["id"]

    # A router with an interface cannot go; nor can its interface or gateway port through the port API.
    with pytest.raises(nc_exc.Conflict, match="still has active ports"):
        nc.delete_router(rid)
    assert typed(server, "DELETE", f"/v2.0/routers/{rid}") == (409, "RouterInUse")
    with pytest.raises(nc_exc.Conflict, match="cannot be deleted directly via the port API"):
        nc.delete_port(info["port_id"])
    assert typed(server, "DELETE", f"/v2.0/ports/{info['port_id']}") == (409, "L3PortInUse")
    [gw_port] = [p for p in owned_ports(nc, rid) if p["device_owner"] == "network:router_gateway"]
    assert typed(server, "DELETE", f"/v2.0/ports/{gw_port['id']}") == (409, "L3PortInUse")
    # The port API cannot take the port from its router either.
    assert typed(server, "PUT", f"/v2.0/ports/{info['port_id']}", {"port": {"device_id": ""}}) == (409, "PortInUse")
    nc.update_port(info["port_id"], {"port": {"name": "renamed"}})  # the rest may change
    # A router interface port blocks the network's delete; the external network is held by the gateway port.
    with pytest.raises(nc_exc.NetworkInUseClient):
        nc.delete_network(net["id"])
    with pytest.raises(nc_exc.NetworkInUseClient):
        nc.delete_network(ext["id"])
    assert typed(server, "DELETE", f"/v2.0/subnets/{subnet['id']}") == (409, "SubnetInUse")
    # Its gateway IP cannot move while the interface holds it; nor can the network stop being external.
    assert typed(server, "PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"gateway_ip": None}}) == (409, "GatewayIpInUse")
    assert typed(server, "PUT", f"/v2.0/networks/{ext['id']}", {"network": {"router:external": False}}) == (409, "ExternalNetworkInUse")

    nc.remove_interface_router(rid, {"subnet_id": subnet["id"]})
    nc.remove_gateway_router(rid)
    assert nc.show_router(rid)["router"]["external_gateway_info"] is None
    assert owned_ports(nc, rid) == []
    nc.delete_router(rid)
    with pytest.raises(nc_exc.NotFound):
        nc.show_router(rid)
    nc.delete_network(net["id"])
    nc.update_network(ext["id"], {"network": {"router:external": False}})  # nothing uses it any more


def test_neutronclient_interface_errors(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    net, subnet = net_subnet(nc, tenant)
    rid = nc.create_router({"router": {"name": uniq("r"), "tenant_id": tenant}})["router"]["id"]
    action = f"/v2.0/routers/{rid}/add_router_interface"
    remove = f"/v2.0/routers/{rid}/remove_router_interface"

    with pytest.raises(nc_exc.BadRequest, match="Either subnet_id or port_id must be specified"):
        nc.add_interface_router(rid, {})
    with pytest.raises(nc_exc.BadRequest, match="Cannot specify both subnet-id and port-id"):
        nc.add_interface_router(rid, {"subnet_id": subnet["id"], "port_id": str(uuid.uuid4())})
    assert typed(server, "PUT", action, {}) == (400, "BadRequest")
    with pytest.raises(nc_exc.NotFound):
        nc.add_interface_router(str(uuid.uuid4()), {"subnet_id": subnet["id"]})
    assert typed(server, "PUT", f"/v2.0/routers/{uuid.uuid4()}/add_router_interface", {"subnet_id": subnet["id"]}) == (
        404,
        "RouterNotFound",
    )
    assert typed(server, "PUT", action, {"subnet_id": str(uuid.uuid4())}) == (404, "SubnetNotFound")
    assert typed(server, "PUT", action, {"port_id": str(uuid.uuid4())}) == (404, "PortNotFound")

    # No gateway IP; gateway IP taken by another port.
    _, no_gw = net_subnet(nc, tenant, gateway_ip=None)
    with pytest.raises(nc_exc.BadRequest, match="must have a gateway IP"):
        nc.add_interface_router(rid, {"subnet_id": no_gw["id"]})
    taken_net, taken = net_subnet(nc, tenant)
    port(nc, tenant, taken_net["id"], fixed_ips=[{"ip_address": taken["gateway_ip"]}])
    with pytest.raises(nc_exc.IpAddressInUseClient):
        nc.add_interface_router(rid, {"subnet_id": taken["id"]})

    # By port: it must have no device and exactly one fixed IP.
    with pytest.raises(nc_exc.PortInUseClient):
        nc.add_interface_router(rid, {"port_id": port(nc, tenant, net["id"], device_id="vm-9")["id"]})
    two_ips = port(nc, tenant, net["id"], fixed_ips=[{"subnet_id": subnet["id"]}, {"subnet_id": subnet["id"]}])
    with pytest.raises(nc_exc.BadRequest, match="exactly one fixed IP"):
        nc.add_interface_router(rid, {"port_id": two_ips["id"]})

    # One interface per subnet, none overlapping.
    nc.add_interface_router(rid, {"subnet_id": subnet["id"]})
    with pytest.raises(nc_exc.BadRequest, match="already has a port on subnet"):
        nc.add_interface_router(rid, {"port_id": port(nc, tenant, net["id"])["id"]})
    overlap_net = nc.create_network({"network": {"name": uniq("o"), "tenant_id": tenant}})["network"]
    overlap = nc.create_subnet(
        {"subnet": {"network_id": overlap_net["id"], "ip_version": 4, "cidr": subnet["cidr"].replace("/24", "/25"), "tenant_id": tenant}}
    )["subnet"]
    with pytest.raises(nc_exc.BadRequest, match="overlaps with cidr"):
        nc.add_interface_router(rid, {"subnet_id": overlap["id"]})

    # Removal: unknown interface by port or subnet (404 with their own types), mismatch (409).
    stranger = port(nc, tenant, net["id"])
    assert typed(server, "PUT", remove, {"port_id": stranger["id"]}) == (404, "RouterInterfaceNotFound")
    assert typed(server, "PUT", remove, {"subnet_id": taken["id"]}) == (404, "RouterInterfaceNotFoundForSubnet")
    assert typed(server, "PUT", remove, {}) == (400, "BadRequest")
    [iface] = [p for p in owned_ports(nc, rid) if p["device_owner"] == "network:router_interface"]
    assert typed(server, "PUT", remove, {"port_id": iface["id"], "subnet_id": taken["id"]}) == (409, "SubnetMismatchForPort")
    with pytest.raises(nc_exc.Conflict):
        nc.remove_interface_router(rid, {"port_id": iface["id"], "subnet_id": taken["id"]})
    nc.remove_interface_router(rid, {"port_id": iface["id"], "subnet_id": subnet["id"]})
    assert owned_ports(nc, rid) == []


def test_neutronclient_floating_ips_and_their_conflicts(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    ext, ext_subnet = ext_net(nc, cidr_="203.0.113.0/29")  # 5 addresses in the pool
    net, subnet = net_subnet(nc, tenant)
    vm = port(nc, tenant, net["id"], device_id="vm-1")
    plain, _ = net_subnet(nc, tenant)

    # No router yet: the port's subnet cannot reach the external network.
    with pytest.raises(nc_exc.NotFound, match="is not reachable from subnet"):
        nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant, "port_id": vm["id"]}})
    body = {"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant, "port_id": vm["id"]}}
    assert typed(server, "POST", "/v2.0/floatingips", body) == (404, "ExternalGatewayForFloatingIPNotFound")
    assert nc.list_floatingips(tenant_id=tenant)["floatingips"] == []  # and nothing was left behind
    with pytest.raises(nc_exc.BadRequest, match="is not a valid external network"):
        nc.create_floatingip({"floatingip": {"floating_network_id": plain["id"], "tenant_id": tenant}})

    rid = nc.create_router({"router": {"name": uniq("r"), "tenant_id": tenant}})["router"]["id"]
    nc.add_interface_router(rid, {"subnet_id": subnet["id"]})
    # An interface but no gateway: still unreachable.
    assert typed(server, "POST", "/v2.0/floatingips", body) == (404, "ExternalGatewayForFloatingIPNotFound")
    nc.add_gateway_router(rid, {"network_id": ext["id"]})

    fip = nc.create_floatingip(body)["floatingip"]
    assert fip["port_id"] == vm["id"] and fip["router_id"] == rid and fip["fixed_ip_address"] == vm["fixed_ips"][0]["ip_address"]
    # One floating IP per fixed IP and external network.
    other = nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant}})["floatingip"]
    with pytest.raises(nc_exc.Conflict, match="already has a floating IP"):
        nc.update_floatingip(other["id"], {"floatingip": {"port_id": vm["id"]}})
    assert typed(server, "PUT", f"/v2.0/floatingips/{other['id']}", {"floatingip": {"port_id": vm["id"]}}) == (
        409,
        "FloatingIPPortAlreadyAssociated",
    )
    # What the floating IP goes through cannot go.
    assert typed(server, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"subnet_id": subnet["id"]}) == (
        409,
        "RouterInterfaceInUseByFloatingIP",
    )
    assert typed(server, "PUT", f"/v2.0/routers/{rid}", {"router": {"external_gateway_info": None}}) == (
        409,
        "RouterExternalGatewayInUseByFloatingIp",
    )
    with pytest.raises(nc_exc.Conflict):
        nc.remove_gateway_router(rid)
    assert typed(server, "DELETE", f"/v2.0/routers/{rid}") == (409, "RouterInUse")
    [hidden] = owned_ports(nc, fip["id"])
    assert typed(server, "DELETE", f"/v2.0/ports/{hidden['id']}") == (409, "L3PortInUse")
    # The fixed IP under a floating IP cannot be taken away by a port update.
    new_ip = subnet["cidr"].replace("0/24", "200")
    status, kind = typed(server, "PUT", f"/v2.0/ports/{vm['id']}", {"port": {"fixed_ips": [{"ip_address": new_ip}]}})
    assert (status, kind) == (409, "FixedIpInUseByFloatingIP")

    # Move it to another port, then disassociate it.
    vm2 = port(nc, tenant, net["id"], device_id="vm-2")
    moved = nc.update_floatingip(fip["id"], {"floatingip": {"port_id": vm2["id"]}})["floatingip"]
    assert moved["port_id"] == vm2["id"] and moved["fixed_ip_address"] == vm2["fixed_ips"][0]["ip_address"]
    nc.update_floatingip(other["id"], {"floatingip": {"port_id": vm["id"]}})  # vm's fixed IP is free again
    cleared = nc.update_floatingip(fip["id"], {"floatingip": {"port_id": None}})["floatingip"]
    assert (cleared["port_id"], cleared["fixed_ip_address"], cleared["router_id"]) == (None, None, None)

    # Deleting the port disassociates its floating IP.
    nc.delete_port(vm["id"])
    assert nc.show_floatingip(other["id"])["floatingip"]["port_id"] is None

    # The pool runs dry: 400 ExternalIpAddressExhausted (the gateway took one address, two floating IPs two more).
    nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant}})
    nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant}})
    with pytest.raises(nc_exc.ExternalIpAddressExhaustedClient):
        nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant}})

    for each in nc.list_floatingips(tenant_id=tenant)["floatingips"]:
        nc.delete_floatingip(each["id"])
        assert owned_ports(nc, each["id"]) == []
    with pytest.raises(nc_exc.NotFound):
        nc.delete_floatingip(fip["id"])
    nc.remove_interface_router(rid, {"subnet_id": subnet["id"]})
    nc.remove_gateway_router(rid)
    nc.delete_router(rid)
    assert [p for p in nc.list_ports(network_id=ext["id"])["ports"]] == []


def test_fixed_ip_address_choice_and_the_admin_address(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    # Addresses outside the pool may be chosen (by an admin), and nothing else takes them.
    ext, _ = ext_net(nc, cidr_="192.0.2.0/24", allocation_pools=[{"start": "192.0.2.2", "end": "192.0.2.50"}])
    net, subnet = net_subnet(nc, tenant)
    rid = nc.create_router({"router": {"name": uniq("r"), "tenant_id": tenant, "external_gateway_info": {"network_id": ext["id"]}}})
    rid = rid["router"]["id"]
    nc.add_interface_router(rid, {"subnet_id": subnet["id"]})
    two = port(nc, tenant, net["id"], fixed_ips=[{"subnet_id": subnet["id"]}, {"subnet_id": subnet["id"]}])
    base = {"floating_network_id": ext["id"], "tenant_id": tenant, "port_id": two["id"]}
    with pytest.raises(nc_exc.BadRequest, match="multiple fixed IPv4 addresses"):
        nc.create_floatingip({"floatingip": base})
    with pytest.raises(nc_exc.BadRequest, match="does not have fixed ip"):
        nc.create_floatingip({"floatingip": dict(base, fixed_ip_address="10.255.255.1")})
    second_ip = two["fixed_ips"][1]["ip_address"]
    fip = nc.create_floatingip({"floatingip": dict(base, fixed_ip_address=second_ip, floating_ip_address="192.0.2.77")})["floatingip"]
    assert (fip["fixed_ip_address"], fip["floating_ip_address"]) == (second_ip, "192.0.2.77")
    # The same address twice is taken; a tenant may not choose one at all.
    with pytest.raises(nc_exc.IpAddressInUseClient):
        nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant, "floating_ip_address": "192.0.2.77"}})
    chosen = {"floatingip": {"floating_network_id": ext["id"], "floating_ip_address": "192.0.2.78"}}
    assert typed(server, "POST", "/v2.0/floatingips", chosen, tenant=tenant) == (403, "PolicyNotAuthorized")
    nc.delete_floatingip(fip["id"])


def test_member_actions_paths_methods_and_bodies(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    _, subnet = net_subnet(nc, tenant)
    rid = nc.create_router({"router": {"name": uniq("r"), "tenant_id": tenant}})["router"]["id"]
    # python-neutronclient 6.2 (and quantumclient) put a .json suffix on the action.
    status, info = server.request("PUT", f"/v2.0/routers/{rid}/add_router_interface.json", {"subnet_id": subnet["id"]})
    assert status == 200 and info["subnet_id"] == subnet["id"], info
    status, info = server.request("PUT", f"/v2.0/routers/{rid.upper()}/remove_router_interface.json", {"subnet_id": subnet["id"]})
    assert status == 200 and info["port_id"], info
    assert server.request("GET", f"/v2.0/routers/{rid}/add_router_interface")[0] == 405
    assert server.request("PUT", f"/v2.0/routers/{rid}/add_extraroutes", {"router": {}})[0] == 404
    assert server.request("PUT", f"/v2.0/networks/{uuid.uuid4()}/add_router_interface", {"subnet_id": subnet["id"]})[0] == 404
    assert typed(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", ["x"]) == (400, "HTTPBadRequest")
    assert server.request("PUT", f"/v2.0/routers/{rid}/add_router_interface", raw=b"{nope")[0] == 400
    assert typed(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": 7}) == (400, "InvalidInput")
    # A wrapped body names nothing: Neutron's 400.
    assert typed(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"router": {"subnet_id": subnet["id"]}}) == (
        400,
        "BadRequest",
    )
    bad = {"router": {"name": "x", "tenant_id": tenant, "status": "DOWN"}}
    assert typed(server, "POST", "/v2.0/routers", bad) == (400, "HTTPBadRequest")
    gw = {"router": {"tenant_id": tenant, "external_gateway_info": {"network_id": "not-a-uuid"}}}
    assert typed(server, "POST", "/v2.0/routers", gw) == (400, "InvalidInput")
    extensions = {e["alias"] for e in server.request("GET", "/v2.0/extensions")[1]["extensions"]}
    assert {"router", "external-net", "binding"} <= extensions
    resources = {r["collection"] for r in server.request("GET", "/v2.0")[1]["resources"]}
    assert {"routers", "floatingips"} <= resources


def test_tenant_scoping(server: ServerProcess, nc: nc_client.Client) -> None:
    alice, bob = uniq("alice"), uniq("bob")
    as_alice, as_bob = {"X-Tenant-Id": alice}, {"X-Tenant-Id": bob}
    ext, _ = ext_net(nc)

    def call(headers: dict[str, str], method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return server.request(method, path, body, headers=headers)

    # Only an admin makes a network external; every tenant sees external networks.
    status, body = call(as_alice, "POST", "/v2.0/networks", {"network": {"name": "x", "router:external": True}})
    assert status == 403 and body["NeutronError"]["type"] == "PolicyNotAuthorized"
    status, net = call(as_alice, "POST", "/v2.0/networks", {"network": {"name": "mine"}})
    net = net["network"]
    status, _ = call(as_alice, "PUT", f"/v2.0/networks/{net['id']}", {"network": {"router:external": True}})
    assert status == 403
    assert ext["id"] in [n["id"] for n in call(as_bob, "GET", "/v2.0/networks")[1]["networks"]]
    assert call(as_bob, "GET", f"/v2.0/networks/{ext['id']}")[0] == 200
    external = call(as_bob, "GET", "/v2.0/networks?router:external=true")[1]["networks"]
    assert ext["id"] in [n["id"] for n in external] and all(n["router:external"] for n in external)
    assert net["id"] not in [n["id"] for n in call(as_alice, "GET", "/v2.0/networks?router:external=true")[1]["networks"]]

    # A router for another tenant is refused; another tenant's router is not found.
    assert call(as_alice, "POST", "/v2.0/routers", {"router": {"name": "r", "tenant_id": bob}})[0] == 403
    status, router = call(as_alice, "POST", "/v2.0/routers", {"router": {"name": "r", "external_gateway_info": {"network_id": ext["id"]}}})
    assert status == 201, router
    rid = router["router"]["id"]
    _, subnet = call(as_alice, "POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr()}})
    subnet = subnet["subnet"]
    for method, path, body in (
        ("GET", f"/v2.0/routers/{rid}", None),
        ("PUT", f"/v2.0/routers/{rid}", {"router": {"name": "stolen"}}),
        ("DELETE", f"/v2.0/routers/{rid}", None),
        ("PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": subnet["id"]}),
        ("PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"subnet_id": subnet["id"]}),
    ):
        status, reply = call(as_bob, method, path, body)
        assert (status, reply["NeutronError"]["type"]) == (404, "RouterNotFound"), (method, path)
    assert call(as_bob, "GET", "/v2.0/routers")[1]["routers"] == []
    # Bob's router cannot use Alice's subnet.
    _, bob_router = call(as_bob, "POST", "/v2.0/routers", {"router": {"name": "b"}})
    status, reply = call(as_bob, "PUT", f"/v2.0/routers/{bob_router['router']['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    assert (status, reply["NeutronError"]["type"]) == (404, "SubnetNotFound")

    status, info = call(as_alice, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": subnet["id"]})
    assert status == 200, info
    _, vm = call(as_alice, "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "device_id": "vm"}})
    vm = vm["port"]
    # Alice allocates on the admin's external network and associates her own port.
    status, fip = call(as_alice, "POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext["id"], "port_id": vm["id"]}})
    assert status == 201 and fip["floatingip"]["tenant_id"] == alice, fip
    fid = fip["floatingip"]["id"]
    # Bob sees none of it and cannot touch it; nor may he associate Alice's port with his own floating IP.
    assert call(as_bob, "GET", "/v2.0/floatingips")[1]["floatingips"] == []
    for method, path, body in (
        ("GET", f"/v2.0/floatingips/{fid}", None),
        ("PUT", f"/v2.0/floatingips/{fid}", {"floatingip": {"port_id": None}}),
        ("DELETE", f"/v2.0/floatingips/{fid}", None),
    ):
        status, reply = call(as_bob, method, path, body)
        assert (status, reply["NeutronError"]["type"]) == (404, "FloatingIPNotFound"), (method, path)
    status, bob_fip = call(as_bob, "POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext["id"]}})
    assert status == 201, bob_fip
    status, reply = call(as_bob, "PUT", f"/v2.0/floatingips/{bob_fip['floatingip']['id']}", {"floatingip": {"port_id": vm["id"]}})
    assert (status, reply["NeutronError"]["type"]) == (404, "PortNotFound")
    # The hidden ports are nobody's but the admin's.
    assert all(p["tenant_id"] == bob for p in call(as_bob, "GET", "/v2.0/ports")[1]["ports"])
    # An admin creating a floating IP for Bob cannot bind Alice's port to it.
    status, reply = server.request(
        "POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext["id"], "tenant_id": bob, "port_id": vm["id"]}}
    )
    assert (status, reply["NeutronError"]["type"]) == (400, "BadRequest") and "different tenant" in reply["NeutronError"]["message"]

    # Clean up as the owners.
    assert call(as_bob, "DELETE", f"/v2.0/floatingips/{bob_fip['floatingip']['id']}")[0] == 204
    assert call(as_alice, "DELETE", f"/v2.0/floatingips/{fid}")[0] == 204
    assert call(as_alice, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"subnet_id": subnet["id"]})[0] == 200
    assert call(as_alice, "DELETE", f"/v2.0/routers/{rid}")[0] == 204
    assert call(as_bob, "DELETE", f"/v2.0/routers/{bob_router['router']['id']}")[0] == 204


def test_listing_filters_fields_and_paging(server: ServerProcess, nc: nc_client.Client, tenant: str) -> None:
    ext, _ = ext_net(nc)
    ids = sorted(nc.create_router({"router": {"name": f"r{i}", "tenant_id": tenant}})["router"]["id"] for i in range(3))
    listed = nc.list_routers(tenant_id=tenant, fields=["id", "name"])["routers"]
    assert sorted(r["id"] for r in listed) == ids and all(set(r) == {"id", "name"} for r in listed)
    assert [r["name"] for r in nc.list_routers(tenant_id=tenant, name="r1")["routers"]] == ["r1"]
    status, page = server.request("GET", f"/v2.0/routers?tenant_id={tenant}&limit=2&sort_key=id&sort_dir=asc")
    assert status == 200 and [r["id"] for r in page["routers"]] == ids[:2] and page["routers_links"][0]["rel"] == "next"
    fips = [nc.create_floatingip({"floatingip": {"floating_network_id": ext["id"], "tenant_id": tenant}})["floatingip"] for _ in range(2)]
    by_address = nc.list_floatingips(floating_ip_address=fips[1]["floating_ip_address"])["floatingips"]
    assert [f["id"] for f in by_address] == [fips[1]["id"]]
    assert sorted(f["id"] for f in nc.list_floatingips(floating_network_id=ext["id"])["floatingips"]) == sorted(f["id"] for f in fips)
    for fip in fips:
        nc.delete_floatingip(fip["id"])
    for rid in ids:
        nc.delete_router(rid)
