"""openstacksdk against a real quantum-server: CRUD, listing options and typed errors.

The sdk is used exactly as a deployment would use it without Keystone:
``auth_type="none"`` and an endpoint override at the server root, so it first
runs version discovery on ``GET /`` and then talks to ``/v2.0``.
"""

from __future__ import annotations

import uuid

import netaddr
import openstack
import pytest
from openstack import exceptions as sdk_exc

from restproxy_testing.support import uniq

# The sdk warns about its own deprecations on every call; they say nothing about the server.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test, so list assertions see only this test's objects."""
    return uniq("sdk-t")


def _network_with_subnet(conn: openstack.connection.Connection, tenant: str, cidr: str = "10.20.0.0/24", **subnet_args: object) -> tuple:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    subnet = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr, tenant_id=tenant, **subnet_args)
    return net, subnet


# -- discovery and networks ------------------------------------------------------


def test_version_discovery_reaches_v2_networks(conn: openstack.connection.Connection) -> None:
    endpoint = conn.network.get_endpoint()
    assert endpoint.rstrip("/").endswith("/v2.0")
    assert isinstance(list(conn.network.networks(name=uniq("none"))), list)


def test_network_create_get_update_delete(conn: openstack.connection.Connection, tenant: str) -> None:
    name = uniq("net")
    net = conn.network.create_network(name=name, tenant_id=tenant, admin_state_up=False)
    assert net.id and net.name == name
    assert net.project_id == tenant
    assert net.is_admin_state_up is False
    assert net.status == "ACTIVE"
    assert net.is_shared is False
    assert net.subnet_ids == []

    fetched = conn.network.get_network(net.id)
    assert (fetched.id, fetched.name, fetched.project_id) == (net.id, name, tenant)

    updated = conn.network.update_network(net, name=name + "-new", is_admin_state_up=True)
    assert updated.name == name + "-new"
    assert updated.is_admin_state_up is True
    assert conn.network.get_network(net.id).name == name + "-new"

    assert conn.network.find_network(name + "-new").id == net.id

    conn.network.delete_network(net, ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_network(net.id)
    assert conn.network.find_network(name + "-new") is None


def test_get_network_with_fields_returns_only_those(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    fetched = conn.network.get_network(net.id, fields=["id", "name"])
    assert fetched.id == net.id and fetched.name == net.name
    assert fetched.status is None
    assert fetched.project_id is None


def test_delete_missing_network(conn: openstack.connection.Connection) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(sdk_exc.NotFoundException) as info:
        conn.network.delete_network(missing, ignore_missing=False)
    assert info.value.status_code == 404
    assert missing in str(info.value)
    assert conn.network.delete_network(missing, ignore_missing=True) is None


# -- subnets ----------------------------------------------------------------


def test_subnet_defaults(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.21.0.0/24")
    assert subnet.network_id == net.id
    assert subnet.cidr == "10.21.0.0/24"
    assert subnet.ip_version == 4
    assert subnet.gateway_ip == "10.21.0.1"
    assert subnet.allocation_pools == [{"start": "10.21.0.2", "end": "10.21.0.254"}]
    assert subnet.dns_nameservers == []
    assert subnet.host_routes == []
    assert subnet.is_dhcp_enabled is True
    assert conn.network.get_network(net.id).subnet_ids == [subnet.id]


def test_subnet_with_gateway_pools_dns_and_routes(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    subnet = conn.network.create_subnet(
        network_id=net.id,
        tenant_id=tenant,
        name=uniq("sub"),
        ip_version=4,
        cidr="10.22.0.0/24",
        gateway_ip="10.22.0.254",
        allocation_pools=[{"start": "10.22.0.10", "end": "10.22.0.19"}, {"start": "10.22.0.100", "end": "10.22.0.109"}],
        dns_nameservers=["8.8.8.8", "8.8.4.4"],
        host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.22.0.254"}],
        is_dhcp_enabled=False,
    )
    assert subnet.gateway_ip == "10.22.0.254"
    assert subnet.allocation_pools == [{"start": "10.22.0.10", "end": "10.22.0.19"}, {"start": "10.22.0.100", "end": "10.22.0.109"}]
    assert subnet.dns_nameservers == ["8.8.8.8", "8.8.4.4"]
    assert subnet.host_routes == [{"destination": "192.168.0.0/16", "nexthop": "10.22.0.254"}]
    assert subnet.is_dhcp_enabled is False

    updated = conn.network.update_subnet(
        subnet, name="renamed", dns_nameservers=["1.1.1.1"], host_routes=[], gateway_ip="10.22.0.1", is_dhcp_enabled=True
    )
    assert updated.name == "renamed"
    assert updated.dns_nameservers == ["1.1.1.1"]
    assert updated.host_routes == []
    assert updated.gateway_ip == "10.22.0.1"
    assert updated.is_dhcp_enabled is True
    again = conn.network.get_subnet(subnet.id)
    assert (again.name, again.dns_nameservers, again.gateway_ip) == ("renamed", ["1.1.1.1"], "10.22.0.1")

    conn.network.delete_subnet(subnet, ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_subnet(subnet.id)
    assert conn.network.get_network(net.id).subnet_ids == []


def test_subnet_without_gateway_gets_whole_range(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    subnet = conn.network.create_subnet(network_id=net.id, tenant_id=tenant, ip_version=4, cidr="10.23.0.0/29", gateway_ip=None)
    assert subnet.gateway_ip is None
    assert subnet.allocation_pools == [{"start": "10.23.0.1", "end": "10.23.0.6"}]


def test_ipv6_subnet_and_dual_stack_port(conn: openstack.connection.Connection, tenant: str) -> None:
    net, v4 = _network_with_subnet(conn, tenant, "10.24.0.0/24")
    v6 = conn.network.create_subnet(
        network_id=net.id, tenant_id=tenant, ip_version=6, cidr="2001:DB8:24::/64", dns_nameservers=["2001:4860:4860::8888"]
    )
    assert v6.ip_version == 6
    assert v6.cidr == "2001:db8:24::/64"
    assert v6.gateway_ip == "2001:db8:24::1"
    assert v6.allocation_pools[0]["start"] == "2001:db8:24::2"
    assert v6.dns_nameservers == ["2001:4860:4860::8888"]

    port = conn.network.create_port(network_id=net.id, tenant_id=tenant)
    by_subnet = {ip["subnet_id"]: ip["ip_address"] for ip in port.fixed_ips}
    assert set(by_subnet) == {v4.id, v6.id}
    assert netaddr.IPAddress(by_subnet[v6.id]) in netaddr.IPNetwork("2001:db8:24::/64")

    fixed = conn.network.create_port(
        network_id=net.id, tenant_id=tenant, fixed_ips=[{"subnet_id": v6.id, "ip_address": "2001:db8:24::abcd"}]
    )
    assert fixed.fixed_ips == [{"subnet_id": v6.id, "ip_address": "2001:db8:24::abcd"}]


# -- ports ------------------------------------------------------------------


def test_port_create_get_update_delete(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.25.0.0/24")
    port = conn.network.create_port(
        network_id=net.id,
        tenant_id=tenant,
        name=uniq("port"),
        mac_address="fa:16:3e:25:00:01",
        device_id="vm-25",
        device_owner="compute:nova",
        binding_host_id="host-a",
    )
    assert port.network_id == net.id
    assert port.mac_address == "fa:16:3e:25:00:01"
    assert port.device_id == "vm-25"
    assert port.device_owner == "compute:nova"
    assert port.binding_host_id == "host-a"
    assert port.project_id == tenant
    assert len(port.fixed_ips) == 1 and port.fixed_ips[0]["subnet_id"] == subnet.id

    updated = conn.network.update_port(port, name="renamed", binding_host_id="host-b", device_id="", is_admin_state_up=False)
    assert updated.name == "renamed"
    assert updated.binding_host_id == "host-b"
    assert updated.device_id == ""
    assert updated.is_admin_state_up is False
    assert conn.network.get_port(port.id).binding_host_id == "host-b"

    conn.network.delete_port(port, ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_port(port.id)


def test_port_fixed_ips_by_subnet_and_by_address(conn: openstack.connection.Connection, tenant: str) -> None:
    # Picked addresses come from the pool (.2-.50); the ones asked for below lie outside it, so no pick can take them.
    net, subnet = _network_with_subnet(conn, tenant, "10.26.0.0/24", allocation_pools=[{"start": "10.26.0.2", "end": "10.26.0.50"}])
    by_subnet = conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"subnet_id": subnet.id}])
    assert by_subnet.fixed_ips[0]["subnet_id"] == subnet.id
    by_address = conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"ip_address": "10.26.0.77"}])
    assert by_address.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "10.26.0.77"}]
    both = conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.26.0.78"}])
    assert both.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "10.26.0.78"}]

    moved = conn.network.update_port(by_address, fixed_ips=[{"ip_address": "10.26.0.79"}])
    assert moved.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "10.26.0.79"}]
    # The old address is free again.
    reuse = conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"ip_address": "10.26.0.77"}])
    assert reuse.fixed_ips[0]["ip_address"] == "10.26.0.77"

    found = list(conn.network.ports(network_id=net.id, fixed_ips=["ip_address=10.26.0.79"]))
    assert [p.id for p in found] == [by_address.id]


def test_bulk_port_create(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.37.0.0/24")
    ports = list(conn.network.create_ports([{"network_id": net.id, "tenant_id": tenant, "name": f"bulk-{i}"} for i in range(3)]))
    assert [p.name for p in ports] == ["bulk-0", "bulk-1", "bulk-2"]
    assert all(p.id and p.fixed_ips[0]["subnet_id"] == subnet.id for p in ports)
    assert len({p.fixed_ips[0]["ip_address"] for p in ports}) == 3
    assert sorted(p.id for p in conn.network.ports(network_id=net.id)) == sorted(p.id for p in ports)


def test_project_id_and_unicode_round_trip(conn: openstack.connection.Connection, tenant: str) -> None:
    name = "réseau-ネット-\U0001f310-" + uuid.uuid4().hex[:6]
    net = conn.network.create_network(name=name, project_id=tenant)
    assert net.project_id == tenant and net.name == name
    assert [n.id for n in conn.network.networks(name=name)] == [net.id]
    assert conn.network.get_network(net.id).name == name


def test_port_on_network_without_subnets_has_no_fixed_ips(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    port = conn.network.create_port(network_id=net.id, tenant_id=tenant)
    assert port.fixed_ips == []
    assert port.mac_address.startswith("fa:16:3e:")


# -- listing ------------------------------------------------------------------


def test_list_filters(conn: openstack.connection.Connection, tenant: str) -> None:
    name = uniq("flt")
    up = conn.network.create_network(name=name, tenant_id=tenant)
    down = conn.network.create_network(name=name, tenant_id=tenant, admin_state_up=False)
    other = conn.network.create_network(name=uniq("flt"), tenant_id=tenant)

    assert {n.id for n in conn.network.networks(name=name)} == {up.id, down.id}
    assert [n.id for n in conn.network.networks(name=name, is_admin_state_up=False)] == [down.id]
    assert [n.id for n in conn.network.networks(name=name, is_admin_state_up=True)] == [up.id]
    assert {n.id for n in conn.network.networks(id=[up.id, other.id])} == {up.id, other.id}
    assert {n.id for n in conn.network.networks(project_id=tenant)} == {up.id, down.id, other.id}
    assert list(conn.network.networks(name=uniq("nothing"))) == []


def test_list_port_filters(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.27.0.0/24")
    a = conn.network.create_port(network_id=net.id, tenant_id=tenant, device_id="dev-a", binding_host_id="host-27")
    b = conn.network.create_port(network_id=net.id, tenant_id=tenant, device_id="dev-b", mac_address="fa:16:3e:27:00:0b")
    assert [p.id for p in conn.network.ports(device_id="dev-a")] == [a.id]
    assert [p.id for p in conn.network.ports(binding_host_id="host-27")] == [a.id]
    assert [p.id for p in conn.network.ports(mac_address="fa:16:3e:27:00:0b")] == [b.id]
    assert {p.id for p in conn.network.ports(network_id=net.id)} == {a.id, b.id}
    assert [s.id for s in conn.network.subnets(network_id=net.id, cidr="10.27.0.0/24")] == [subnet.id]


def test_list_fields(conn: openstack.connection.Connection, tenant: str) -> None:
    name = uniq("fld")
    net = conn.network.create_network(name=name, tenant_id=tenant)
    listed = list(conn.network.networks(name=name, fields=["id", "name"]))
    assert [(n.id, n.name) for n in listed] == [(net.id, name)]
    assert listed[0].status is None and listed[0].project_id is None


def test_paging_returns_every_item_once(conn: openstack.connection.Connection, tenant: str) -> None:
    created = {conn.network.create_network(name=uniq("pg"), tenant_id=tenant).id for _ in range(5)}
    paged = [n.id for n in conn.network.networks(project_id=tenant, limit=2)]
    assert sorted(paged) == sorted(created)
    exact = [n.id for n in conn.network.networks(project_id=tenant, limit=5)]
    assert sorted(exact) == sorted(created)
    one = [n.id for n in conn.network.networks(project_id=tenant, limit=1)]
    assert sorted(one) == sorted(created)


def test_paging_ports_and_subnets(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("pg"), tenant_id=tenant)
    subnets = {conn.network.create_subnet(network_id=net.id, tenant_id=tenant, ip_version=4, cidr=f"10.28.{i}.0/24").id for i in range(3)}
    ports = {conn.network.create_port(network_id=net.id, tenant_id=tenant).id for _ in range(3)}
    assert sorted(s.id for s in conn.network.subnets(network_id=net.id, limit=2)) == sorted(subnets)
    assert sorted(p.id for p in conn.network.ports(network_id=net.id, limit=2)) == sorted(ports)


def test_sorting(conn: openstack.connection.Connection, tenant: str) -> None:
    names = ["sort-c", "sort-a", "sort-d", "sort-b"]
    for name in names:
        conn.network.create_network(name=name, tenant_id=tenant)
    ascending = [n.name for n in conn.network.networks(project_id=tenant, sort_key="name", sort_dir="asc")]
    assert ascending == sorted(names)
    descending = [n.name for n in conn.network.networks(project_id=tenant, sort_key="name", sort_dir="desc")]
    assert descending == sorted(names, reverse=True)
    paged = [n.name for n in conn.network.networks(project_id=tenant, sort_key="name", sort_dir="desc", limit=3)]
    assert paged == sorted(names, reverse=True)


def test_sorting_by_project_and_paging_by_marker(conn: openstack.connection.Connection) -> None:
    name = uniq("multi")
    tenants = sorted(uniq("sdk-t") for _ in range(3))
    ids = {t: conn.network.create_network(name=name, tenant_id=t).id for t in reversed(tenants)}
    listed = list(conn.network.networks(name=name, sort_key="project_id", sort_dir="asc"))
    assert [n.project_id for n in listed] == tenants
    after_first = list(conn.network.networks(name=name, sort_key="project_id", sort_dir="asc", marker=ids[tenants[0]], limit=1))
    assert [n.project_id for n in after_first] == tenants[1:]


def test_bad_sort_key_is_bad_request(conn: openstack.connection.Connection) -> None:
    with pytest.raises(sdk_exc.BadRequestException):
        list(conn.network.networks(sort_key="no_such_attribute", sort_dir="asc"))


# -- conflicts and errors -------------------------------------------------------


def test_ip_address_in_use(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.29.0.0/24")
    conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"ip_address": "10.29.0.50"}])
    with pytest.raises(sdk_exc.ConflictException) as info:
        conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.29.0.50"}])
    assert info.value.status_code == 409
    assert "10.29.0.50" in str(info.value)
    assert len(list(conn.network.ports(network_id=net.id))) == 1


def test_mac_address_in_use(conn: openstack.connection.Connection, tenant: str) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    conn.network.create_port(network_id=net.id, tenant_id=tenant, mac_address="fa:16:3e:30:00:01")
    with pytest.raises(sdk_exc.ConflictException) as info:
        conn.network.create_port(network_id=net.id, tenant_id=tenant, mac_address="FA:16:3E:30:00:01")
    assert "fa:16:3e:30:00:01" in str(info.value)
    # The same MAC on another network is fine.
    other = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    assert (
        conn.network.create_port(network_id=other.id, tenant_id=tenant, mac_address="fa:16:3e:30:00:01").mac_address == "fa:16:3e:30:00:01"
    )


def test_network_in_use(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.31.0.0/24")
    port = conn.network.create_port(network_id=net.id, tenant_id=tenant, device_owner="compute:nova")
    with pytest.raises(sdk_exc.ConflictException) as info:
        conn.network.delete_network(net, ignore_missing=False)
    assert "ports still in use" in str(info.value)
    assert conn.network.get_network(net.id).subnet_ids == [subnet.id]
    conn.network.delete_port(port)
    conn.network.delete_network(net, ignore_missing=False)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.get_subnet(subnet.id)


def test_subnet_in_use(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.32.0.0/24")
    conn.network.create_port(network_id=net.id, tenant_id=tenant)
    with pytest.raises(sdk_exc.ConflictException) as info:
        conn.network.delete_subnet(subnet, ignore_missing=False)
    assert "One or more ports have an IP allocation" in str(info.value)
    assert conn.network.get_subnet(subnet.id).id == subnet.id


def test_ip_generation_failure_is_conflict(conn: openstack.connection.Connection, tenant: str) -> None:
    net, _ = _network_with_subnet(conn, tenant, "10.33.0.0/30")
    first = conn.network.create_port(network_id=net.id, tenant_id=tenant)
    assert first.fixed_ips[0]["ip_address"] == "10.33.0.2"
    with pytest.raises(sdk_exc.ConflictException):
        conn.network.create_port(network_id=net.id, tenant_id=tenant)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cidr": "10.34.0.1/24"},  # host bits set
        {"cidr": "10.34.0.0"},  # no prefix
        {"cidr": "not-a-cidr"},
        {"cidr": "10.34.0.0/24", "ip_version": 6},
        {"cidr": "10.34.0.0/24", "gateway_ip": "10.34.0.300"},
        {"cidr": "10.34.0.0/24", "allocation_pools": [{"start": "10.34.0.20", "end": "10.34.0.10"}]},
        {"cidr": "10.34.0.0/24", "allocation_pools": [{"start": "10.34.1.1", "end": "10.34.1.10"}]},
        {"cidr": "10.34.0.0/24", "dns_nameservers": ["not-an-ip"]},
        {"cidr": "10.34.0.0/24", "host_routes": [{"destination": "10.0.0.0/8"}]},
    ],
    ids=["host-bits", "no-prefix", "garbage", "version-mismatch", "bad-gateway", "reversed-pool", "pool-outside", "bad-dns", "bad-route"],
)
def test_invalid_subnet_is_bad_request(conn: openstack.connection.Connection, tenant: str, kwargs: dict) -> None:
    net = conn.network.create_network(name=uniq("net"), tenant_id=tenant)
    args = {"ip_version": 4, **kwargs}
    with pytest.raises(sdk_exc.BadRequestException) as info:
        conn.network.create_subnet(network_id=net.id, tenant_id=tenant, **args)
    assert info.value.status_code == 400
    assert conn.network.get_network(net.id).subnet_ids == []


def test_invalid_port_input_is_bad_request(conn: openstack.connection.Connection, tenant: str) -> None:
    net, subnet = _network_with_subnet(conn, tenant, "10.35.0.0/24")
    with pytest.raises(sdk_exc.BadRequestException):
        conn.network.create_port(network_id=net.id, tenant_id=tenant, mac_address="not-a-mac")
    with pytest.raises(sdk_exc.BadRequestException):
        conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"ip_address": "10.99.0.5"}])
    with pytest.raises(sdk_exc.BadRequestException):
        conn.network.create_port(network_id=net.id, tenant_id=tenant, fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.35.0.255"}])
    with pytest.raises(sdk_exc.BadRequestException):
        conn.network.create_network(name=uniq("net"), tenant_id=tenant, admin_state_up="sometimes")
    assert list(conn.network.ports(network_id=net.id)) == []


def test_port_on_missing_network_is_not_found(conn: openstack.connection.Connection, tenant: str) -> None:
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.create_port(network_id=str(uuid.uuid4()), tenant_id=tenant)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.network.create_subnet(network_id=str(uuid.uuid4()), tenant_id=tenant, ip_version=4, cidr="10.36.0.0/24")
