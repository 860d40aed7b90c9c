"""python-neutronclient against a real quantum-server.

neutronclient turns ``NeutronError.type`` into ``<type>Client`` exceptions, so
these tests pin the error *types* the server reports, not just the statuses.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from neutronclient.common import exceptions as nc_exc
from neutronclient.v2_0 import client as nc_client

from restproxy_testing.support import uniq

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture
def tenant() -> str:
    return uniq("nc-t")


def _net(nc: nc_client.Client, tenant: str, **extra: Any) -> dict[str, Any]:
    return nc.create_network({"network": {"name": uniq("net"), "tenant_id": tenant, **extra}})["network"]


def _subnet(nc: nc_client.Client, tenant: str, net_id: str, cidr: str, **extra: Any) -> dict[str, Any]:
    body = {"network_id": net_id, "tenant_id": tenant, "ip_version": 6 if ":" in cidr else 4, "cidr": cidr, **extra}
    return nc.create_subnet({"subnet": body})["subnet"]


def _port(nc: nc_client.Client, tenant: str, net_id: str, **extra: Any) -> dict[str, Any]:
    return nc.create_port({"port": {"network_id": net_id, "tenant_id": tenant, **extra}})["port"]


# -- CRUD -------------------------------------------------------------------


def test_network_crud(nc: nc_client.Client, tenant: str) -> None:
    name = uniq("net")
    net = nc.create_network({"network": {"name": name, "tenant_id": tenant}})["network"]
    assert net["name"] == name and net["tenant_id"] == tenant and net["project_id"] == tenant
    assert net["status"] == "ACTIVE" and net["admin_state_up"] is True and net["shared"] is False and net["subnets"] == []
    assert nc.show_network(net["id"])["network"]["id"] == net["id"]
    updated = nc.update_network(net["id"], {"network": {"name": name + "-2", "admin_state_up": False}})["network"]
    assert (updated["name"], updated["admin_state_up"]) == (name + "-2", False)
    assert nc.show_network(net["id"])["network"]["name"] == name + "-2"
    nc.delete_network(net["id"])
    with pytest.raises(nc_exc.NetworkNotFoundClient) as info:
        nc.show_network(net["id"])
    assert info.value.status_code == 404


def test_show_with_fields(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    shown = nc.show_network(net["id"], fields=["id", "name"])["network"]
    assert shown == {"id": net["id"], "name": net["name"]}


def test_subnet_crud(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(
        nc,
        tenant,
        net["id"],
        "10.40.0.0/24",
        name="s40",
        gateway_ip="10.40.0.1",
        allocation_pools=[{"start": "10.40.0.100", "end": "10.40.0.200"}],
        dns_nameservers=["10.0.0.53"],
        host_routes=[{"destination": "172.16.0.0/12", "nexthop": "10.40.0.254"}],
    )
    assert subnet["allocation_pools"] == [{"start": "10.40.0.100", "end": "10.40.0.200"}]
    assert subnet["dns_nameservers"] == ["10.0.0.53"]
    assert subnet["host_routes"] == [{"destination": "172.16.0.0/12", "nexthop": "10.40.0.254"}]
    assert nc.show_network(net["id"])["network"]["subnets"] == [subnet["id"]]

    updated = nc.update_subnet(subnet["id"], {"subnet": {"name": "s40b", "gateway_ip": None, "enable_dhcp": False}})["subnet"]
    assert (updated["name"], updated["gateway_ip"], updated["enable_dhcp"]) == ("s40b", None, False)

    nc.delete_subnet(subnet["id"])
    with pytest.raises(nc_exc.NotFound):
        nc.show_subnet(subnet["id"])


def test_ipv6_subnet(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "fd00:41::/64")
    assert subnet["ip_version"] == 6 and subnet["gateway_ip"] == "fd00:41::1"
    port = _port(nc, tenant, net["id"], fixed_ips=[{"ip_address": "fd00:41::10"}])
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "fd00:41::10"}]
    with pytest.raises(nc_exc.IpAddressInUseClient):
        _port(nc, tenant, net["id"], fixed_ips=[{"ip_address": "fd00:41:0::10"}])


def test_port_crud(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.42.0.0/24")
    port = _port(
        nc,
        tenant,
        net["id"],
        name="p42",
        mac_address="fa:16:3e:42:00:01",
        device_id="vm-42",
        fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.42.0.42"}],
        **{"binding:host_id": "compute-1"},
    )
    assert port["mac_address"] == "fa:16:3e:42:00:01"
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.42.0.42"}]
    assert port["binding:host_id"] == "compute-1"
    assert port["device_id"] == "vm-42"

    updated = nc.update_port(port["id"], {"port": {"fixed_ips": [{"subnet_id": subnet["id"]}], "binding:host_id": "compute-2"}})["port"]
    assert updated["binding:host_id"] == "compute-2"
    assert len(updated["fixed_ips"]) == 1 and updated["fixed_ips"][0]["subnet_id"] == subnet["id"]

    listed = nc.list_ports(device_id="vm-42")["ports"]
    assert [p["id"] for p in listed] == [port["id"]]
    nc.delete_port(port["id"])
    with pytest.raises(nc_exc.PortNotFoundClient):
        nc.show_port(port["id"])


def test_bulk_create(nc: nc_client.Client, tenant: str) -> None:
    names = [uniq("bulk") for _ in range(3)]
    created = nc.create_network({"networks": [{"name": n, "tenant_id": tenant} for n in names]})["networks"]
    assert [n["name"] for n in created] == names
    listed = nc.list_networks(tenant_id=tenant)["networks"]
    assert sorted(n["id"] for n in listed) == sorted(n["id"] for n in created)

    ports = nc.create_port({"ports": [{"network_id": created[0]["id"], "tenant_id": tenant} for _ in range(2)]})["ports"]
    assert len({p["mac_address"] for p in ports}) == 2


def test_bulk_create_is_all_or_nothing(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _port(nc, tenant, net["id"], mac_address="fa:16:3e:43:00:01")
    bulk = {
        "ports": [
            {"network_id": net["id"], "tenant_id": tenant, "name": "ok"},
            {"network_id": net["id"], "tenant_id": tenant, "mac_address": "fa:16:3e:43:00:01"},
        ]
    }
    with pytest.raises(nc_exc.MacAddressInUseClient):
        nc.create_port(bulk)
    assert nc.list_ports(network_id=net["id"], name="ok")["ports"] == []
    with pytest.raises(nc_exc.BadRequest):
        nc.create_network({"networks": [{"name": "good", "tenant_id": tenant}, {"name": 7, "tenant_id": tenant}]})
    assert nc.list_networks(tenant_id=tenant, name="good")["networks"] == []


# -- listing ------------------------------------------------------------------


def test_filters_and_fields(nc: nc_client.Client, tenant: str) -> None:
    name = uniq("flt")
    a = _net(nc, tenant, name=name)
    b = _net(nc, tenant, name=name, admin_state_up=False)
    c = _net(nc, tenant)
    assert {n["id"] for n in nc.list_networks(name=name)["networks"]} == {a["id"], b["id"]}
    assert [n["id"] for n in nc.list_networks(name=name, admin_state_up=False)["networks"]] == [b["id"]]
    assert {n["id"] for n in nc.list_networks(id=[a["id"], c["id"]])["networks"]} == {a["id"], c["id"]}
    fields = nc.list_networks(id=a["id"], fields=["id", "status"])["networks"]
    assert fields == [{"id": a["id"], "status": "ACTIVE"}]


def test_fixed_ips_filter(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.44.0.0/24")
    port = _port(nc, tenant, net["id"], fixed_ips=[{"ip_address": "10.44.0.44"}])
    _port(nc, tenant, net["id"])
    found = nc.list_ports(fixed_ips=["ip_address=10.44.0.44"])["ports"]
    assert [p["id"] for p in found] == [port["id"]]
    on_subnet = nc.list_ports(fixed_ips=[f"subnet_id={subnet['id']}"])["ports"]
    assert len(on_subnet) == 2


def test_retrieve_all_follows_next_links(nc: nc_client.Client, tenant: str) -> None:
    ids = {_net(nc, tenant)["id"] for _ in range(5)}
    listed = nc.list_networks(retrieve_all=True, limit=2, tenant_id=tenant)["networks"]
    assert sorted(n["id"] for n in listed) == sorted(ids)


def test_generator_pages(nc: nc_client.Client, tenant: str) -> None:
    ids = {_net(nc, tenant)["id"] for _ in range(5)}
    pages = list(nc.list_networks(retrieve_all=False, limit=2, tenant_id=tenant))
    assert [len(p["networks"]) for p in pages] == [2, 2, 1]
    assert sorted(n["id"] for p in pages for n in p["networks"]) == sorted(ids)
    for page in pages[:-1]:
        assert "next" in [link["rel"] for link in page["networks_links"]]
    assert "next" not in [link["rel"] for link in pages[-1]["networks_links"]]


def test_generator_pages_sorted(nc: nc_client.Client, tenant: str) -> None:
    names = [f"n{i}" for i in range(5)]
    for name in reversed(names):
        _net(nc, tenant, name=name)
    pages = list(nc.list_networks(retrieve_all=False, limit=2, tenant_id=tenant, sort_key="name", sort_dir="asc"))
    assert [n["name"] for p in pages for n in p["networks"]] == names
    pages = list(nc.list_networks(retrieve_all=False, limit=2, tenant_id=tenant, sort_key=["name"], sort_dir=["desc"]))
    assert [n["name"] for p in pages for n in p["networks"]] == names[::-1]


def test_urls_carry_no_json_suffix(nc: nc_client.Client, tenant: str) -> None:
    _net(nc, tenant)
    _net(nc, tenant)
    page = next(iter(nc.list_networks(retrieve_all=False, limit=1, tenant_id=tenant)))
    hrefs = [link["href"] for link in page["networks_links"]]
    assert hrefs and all("/v2.0/networks?" in href and ".json" not in href for href in hrefs)


# -- typed errors -------------------------------------------------------------


def test_not_found_types(nc: nc_client.Client) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(nc_exc.NetworkNotFoundClient):
        nc.show_network(missing)
    with pytest.raises(nc_exc.NetworkNotFoundClient):
        nc.update_network(missing, {"network": {"name": "x"}})
    with pytest.raises(nc_exc.NetworkNotFoundClient):
        nc.delete_network(missing)
    with pytest.raises(nc_exc.PortNotFoundClient):
        nc.show_port(missing)
    with pytest.raises(nc_exc.PortNotFoundClient):
        nc.delete_port(missing)
    with pytest.raises(nc_exc.NotFound) as info:
        nc.show_subnet(missing)
    assert "Subnet" in str(info.value)


def test_network_in_use(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _subnet(nc, tenant, net["id"], "10.45.0.0/24")
    port = _port(nc, tenant, net["id"])
    with pytest.raises(nc_exc.NetworkInUseClient) as info:
        nc.delete_network(net["id"])
    assert info.value.status_code == 409
    assert nc.show_port(port["id"])["port"]["id"] == port["id"]


def test_dhcp_port_does_not_block_network_delete(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _subnet(nc, tenant, net["id"], "10.46.0.0/24")
    dhcp = _port(nc, tenant, net["id"], device_owner="network:dhcp")
    nc.delete_network(net["id"])
    with pytest.raises(nc_exc.PortNotFoundClient):
        nc.show_port(dhcp["id"])


def test_subnet_in_use(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.47.0.0/24")
    _port(nc, tenant, net["id"])
    with pytest.raises(nc_exc.Conflict) as info:
        nc.delete_subnet(subnet["id"])
    assert "One or more ports have an IP allocation" in str(info.value)


def test_ip_address_in_use(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.48.0.0/24")
    _port(nc, tenant, net["id"], fixed_ips=[{"ip_address": "10.48.0.5"}])
    with pytest.raises(nc_exc.IpAddressInUseClient):
        _port(nc, tenant, net["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.48.0.5"}])
    other = _port(nc, tenant, net["id"])
    with pytest.raises(nc_exc.IpAddressInUseClient):
        nc.update_port(other["id"], {"port": {"fixed_ips": [{"ip_address": "10.48.0.5"}]}})
    assert nc.show_port(other["id"])["port"]["fixed_ips"] == other["fixed_ips"]


def test_mac_address_in_use(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _port(nc, tenant, net["id"], mac_address="fa:16:3e:49:00:01")
    with pytest.raises(nc_exc.MacAddressInUseClient):
        _port(nc, tenant, net["id"], mac_address="fa:16:3e:49:00:01")
    other = _port(nc, tenant, net["id"])
    with pytest.raises(nc_exc.MacAddressInUseClient):
        nc.update_port(other["id"], {"port": {"mac_address": "fa:16:3e:49:00:01"}})


def test_ip_address_generation_failure(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _subnet(nc, tenant, net["id"], "10.50.0.0/29", allocation_pools=[{"start": "10.50.0.2", "end": "10.50.0.3"}])
    got = {_port(nc, tenant, net["id"])["fixed_ips"][0]["ip_address"] for _ in range(2)}
    assert got == {"10.50.0.2", "10.50.0.3"}
    with pytest.raises(nc_exc.IpAddressGenerationFailureClient) as info:
        _port(nc, tenant, net["id"])
    assert info.value.status_code == 409
    assert len(nc.list_ports(network_id=net["id"])["ports"]) == 2


def test_ip_address_generation_failure_on_slash_30(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _subnet(nc, tenant, net["id"], "10.51.0.0/30")
    assert _port(nc, tenant, net["id"])["fixed_ips"][0]["ip_address"] == "10.51.0.2"
    with pytest.raises(nc_exc.IpAddressGenerationFailureClient):
        _port(nc, tenant, net["id"])


@pytest.mark.parametrize(
    "body",
    [
        {"name": ["list"]},
        {"admin_state_up": "perhaps"},
        {"shared": 3},
        {"unknown_attribute": 1},
        {"status": "DOWN"},
        {"id": "3f0b2a5e-0000-4000-8000-000000000000"},
        {"name": "x" * 256},
    ],
    ids=["name-list", "admin-state", "shared-int", "unknown", "status-ro", "id-ro", "name-too-long"],
)
def test_invalid_network_input_is_bad_request(nc: nc_client.Client, tenant: str, body: dict[str, Any]) -> None:
    with pytest.raises(nc_exc.BadRequest) as info:
        nc.create_network({"network": {"tenant_id": tenant, **body}})
    assert info.value.status_code == 400
    assert nc.list_networks(tenant_id=tenant)["networks"] == []


def test_invalid_update_is_bad_request(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.52.0.0/24")
    with pytest.raises(nc_exc.BadRequest):
        nc.update_network(net["id"], {"network": {"tenant_id": "someone-else"}})
    with pytest.raises(nc_exc.BadRequest):
        nc.update_subnet(subnet["id"], {"subnet": {"cidr": "10.53.0.0/24"}})
    with pytest.raises(nc_exc.BadRequest):
        nc.update_subnet(subnet["id"], {"subnet": {"dns_nameservers": ["1.1.1.1", "1.1.1.1"]}})
    assert nc.show_network(net["id"])["network"]["tenant_id"] == tenant
    assert nc.show_subnet(subnet["id"])["subnet"]["cidr"] == "10.52.0.0/24"


def test_invalid_fixed_ips_are_bad_request(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    subnet = _subnet(nc, tenant, net["id"], "10.54.0.0/24")
    other_net = _net(nc, tenant)
    other_subnet = _subnet(nc, tenant, other_net["id"], "10.55.0.0/24")
    for fixed_ips in (
        [{"ip_address": "10.99.0.1"}],  # on none of the network's subnets
        [{"subnet_id": subnet["id"], "ip_address": "10.54.0.0"}],  # network address
        [{"subnet_id": other_subnet["id"]}],  # subnet of another network
        [{}],  # neither key
        [{"ip_address": "10.54.0.9"}, {"ip_address": "10.54.0.9"}],  # duplicate
    ):
        with pytest.raises(nc_exc.BadRequest):
            _port(nc, tenant, net["id"], fixed_ips=fixed_ips)
    assert nc.list_ports(network_id=net["id"])["ports"] == []


def test_overlapping_subnets_are_bad_request(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    _subnet(nc, tenant, net["id"], "10.56.0.0/16")
    with pytest.raises(nc_exc.BadRequest):
        _subnet(nc, tenant, net["id"], "10.56.4.0/24")
    assert len(nc.list_subnets(network_id=net["id"])["subnets"]) == 1


def test_allocation_pool_conflicts(nc: nc_client.Client, tenant: str) -> None:
    net = _net(nc, tenant)
    with pytest.raises(nc_exc.Conflict):
        _subnet(
            nc,
            tenant,
            net["id"],
            "10.57.0.0/24",
            allocation_pools=[{"start": "10.57.0.10", "end": "10.57.0.20"}, {"start": "10.57.0.15", "end": "10.57.0.30"}],
        )
    with pytest.raises(nc_exc.Conflict):
        _subnet(
            nc, tenant, net["id"], "10.57.0.0/24", gateway_ip="10.57.0.12", allocation_pools=[{"start": "10.57.0.10", "end": "10.57.0.20"}]
        )
    assert nc.list_subnets(network_id=net["id"])["subnets"] == []


def test_bad_limit_and_sort_are_bad_request(nc: nc_client.Client) -> None:
    with pytest.raises(nc_exc.BadRequest):
        nc.list_networks(limit=-1)
    with pytest.raises(nc_exc.BadRequest):
        nc.list_networks(sort_key=["name", "id"], sort_dir=["asc"])
    with pytest.raises(nc_exc.BadRequest):
        nc.list_networks(sort_key="name", sort_dir="sideways")


def test_unknown_marker_is_not_found(nc: nc_client.Client) -> None:
    with pytest.raises(nc_exc.NetworkNotFoundClient):
        nc.list_networks(limit=1, marker=str(uuid.uuid4()))
