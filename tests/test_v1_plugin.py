"""The v1 plugin interface (V1Plugin) straight over a migrated store, on every backend.

Each test uses its own tenants, so they share one database per backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import netaddr
import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, DeferredList

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.plugin import RestProxyPlugin
from server_plugin.store import migrate
from server_plugin.store import ports as port_ops
from server_plugin.store.db import Store
from server_plugin.v1_plugin import QuantumPluginBase, V1Plugin


@pytest.fixture(scope="module")
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url, global_reactor)
    migrate.upgrade(s.engine)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def v1(store: Store) -> V1Plugin:
    return V1Plugin(RestProxyPlugin(store))


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def _raises(error: type[Exception], d: Any) -> Exception:
    """Await ``d`` and return the exception it failed with (fails the test if it did not)."""
    try:
        await d
    except error as e:
        return e
    pytest.fail(f"expected {error.__name__}")


async def _net_with_port(v1: V1Plugin, tenant: str, **port_kwargs: Any) -> tuple[str, str]:
    net = await v1.create_network(tenant, "net")
    port = await v1.create_port(tenant, net["net-id"], **port_kwargs)
    return net["net-id"], port["port-id"]


def test_interface_is_abstract_and_v1plugin_implements_all_of_it() -> None:
    expected = {
        "get_all_networks", "create_network", "delete_network", "get_network_details", "rename_network", "update_network",
        "get_all_ports", "create_port", "update_port", "delete_port", "get_port_details",
        "plug_interface", "unplug_interface", "get_interface_details", "get_all_attached_interfaces",
    }  # fmt: skip
    assert QuantumPluginBase.__abstractmethods__ == expected
    with pytest.raises(TypeError):
        QuantumPluginBase()  # type: ignore[abstract]
    assert not V1Plugin.__abstractmethods__


@pytest_twisted.ensureDeferred
async def test_methods_return_deferreds(v1: V1Plugin, tenant: str) -> None:
    d = v1.get_all_networks(tenant)
    assert isinstance(d, Deferred)
    assert await d == []


# -- networks ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_and_list_networks_per_tenant(v1: V1Plugin, tenant: str) -> None:
    created = await v1.create_network(tenant, "blue")
    assert set(created) == {"net-id", "net-name", "net-op-status"}
    assert created["net-name"] == "blue" and created["net-op-status"] == "UP"
    other = await v1.create_network(tenant + "-other", "red")
    assert await v1.get_all_networks(tenant) == [created]
    assert [n["net-id"] for n in await v1.get_all_networks(tenant + "-other")] == [other["net-id"]]
    # It is a v2 network of the tenant.
    v2 = await v1.plugin.get_network(RequestContext.admin(), created["net-id"])
    assert v2["tenant_id"] == tenant and v2["name"] == "blue" and v2["admin_state_up"] is True


@pytest_twisted.ensureDeferred
async def test_network_of_another_tenant_is_not_found(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "mine")
    intruder = tenant + "-x"
    for call in (
        lambda: v1.get_network_details(intruder, net["net-id"]),
        lambda: v1.rename_network(intruder, net["net-id"], "stolen"),
        lambda: v1.delete_network(intruder, net["net-id"]),
        lambda: v1.get_all_ports(intruder, net["net-id"]),
        lambda: v1.create_port(intruder, net["net-id"]),
    ):
        e = await _raises(exc.NetworkNotFound, call())
        assert net["net-id"] in str(e)
    assert (await v1.get_network_details(tenant, net["net-id"]))["net-name"] == "mine"


@pytest_twisted.ensureDeferred
async def test_shared_network_of_another_tenant_is_invisible_in_v1(v1: V1Plugin, tenant: str) -> None:
    owner = tenant + "-owner"
    shared = await v1.plugin.create_network(RequestContext.admin(), {"network": {"tenant_id": owner, "name": "pub", "shared": True}})
    # v2 shows it to everyone, v1 only to its tenant.
    assert await v1.plugin.get_network(RequestContext(tenant_id=tenant), shared["id"])
    assert await v1.get_all_networks(tenant) == []
    await _raises(exc.NetworkNotFound, v1.get_network_details(tenant, shared["id"]))
    assert [n["net-id"] for n in await v1.get_all_networks(owner)] == [shared["id"]]


@pytest_twisted.ensureDeferred
async def test_get_network_details_lists_plugged_interfaces(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await v1.create_port(tenant, net_id)
    details = await v1.get_network_details(tenant, net_id)
    assert details == {"net-id": net_id, "net-name": "net", "net-op-status": "UP", "net-ifaces": []}
    await v1.plug_interface(tenant, net_id, port_id, "vif-1")
    assert (await v1.get_network_details(tenant, net_id))["net-ifaces"] == ["vif-1"]
    await _raises(exc.NetworkNotFound, v1.get_network_details(tenant, str(uuid.uuid4())))


@pytest_twisted.ensureDeferred
async def test_rename_and_update_network(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "old")
    renamed = await v1.rename_network(tenant, net["net-id"], "new")
    assert renamed == {"net-id": net["net-id"], "net-name": "new", "net-op-status": "UP"}
    assert (await v1.update_network(tenant, net["net-id"], name="newer"))["net-name"] == "newer"
    assert (await v1.get_network_details(tenant, net["net-id"]))["net-name"] == "newer"
    await _raises(exc.InvalidInput, v1.update_network(tenant, net["net-id"], name=42))
    await _raises(exc.NetworkNotFound, v1.rename_network(tenant, str(uuid.uuid4()), "x"))


@pytest_twisted.ensureDeferred
async def test_network_op_status_follows_admin_state(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "n")
    await v1.plugin.update_network(RequestContext(tenant_id=tenant), net["net-id"], {"network": {"admin_state_up": False}})
    assert (await v1.get_all_networks(tenant))[0]["net-op-status"] == "DOWN"


@pytest_twisted.ensureDeferred
async def test_delete_network_takes_unplugged_ports_with_it(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    assert await v1.delete_network(tenant, net_id) == {"net-id": net_id}
    await _raises(exc.NetworkNotFound, v1.get_network_details(tenant, net_id))
    await _raises(exc.PortNotFound, v1.plugin.get_port(RequestContext.admin(), port_id))
    assert v1.locks.__len__() == 0


@pytest_twisted.ensureDeferred
async def test_delete_network_with_an_attachment_is_in_use(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await v1.create_port(tenant, net_id)
    await v1.plug_interface(tenant, net_id, port_id, "vif-busy")
    e = await _raises(exc.NetworkInUse, v1.delete_network(tenant, net_id))
    assert net_id in str(e)
    # Nothing was deleted: both ports are still there.
    assert len(await v1.get_all_ports(tenant, net_id)) == 2
    await v1.unplug_interface(tenant, net_id, port_id)
    await v1.delete_network(tenant, net_id)
    assert await v1.get_all_networks(tenant) == []


# -- ports ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_port_defaults_to_down_and_allocates_mac_and_ip(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "n")
    ctx = RequestContext(tenant_id=tenant)
    await v1.plugin.create_subnet(
        ctx, {"subnet": {"tenant_id": tenant, "network_id": net["net-id"], "cidr": "10.9.0.0/24", "ip_version": 4}}
    )
    created = await v1.create_port(tenant, net["net-id"])
    assert set(created) == {"port-id"}
    details = await v1.get_port_details(tenant, net["net-id"], created["port-id"])
    assert details == {
        "port-id": created["port-id"],
        "net-id": net["net-id"],
        "attachment": None,
        "port-state": "DOWN",
        "port-op-status": "DOWN",
    }
    v2 = await v1.plugin.get_port(ctx, created["port-id"])
    assert v2["admin_state_up"] is False and v2["tenant_id"] == tenant and v2["device_id"] == ""
    assert v2["mac_address"].startswith("fa:16:3e:")
    [fixed_ip] = v2["fixed_ips"]
    assert netaddr.IPAddress(fixed_ip["ip_address"]) in netaddr.IPNetwork("10.9.0.0/24")


@pytest_twisted.ensureDeferred
async def test_create_port_states(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "n")
    active = await v1.create_port(tenant, net["net-id"], port_state="ACTIVE")
    lower = await v1.create_port(tenant, net["net-id"], port_state="active")
    for port in (active, lower):
        assert (await v1.get_port_details(tenant, net["net-id"], port["port-id"]))["port-state"] == "ACTIVE"
    for bad in ("UP", "", 1):
        e = await _raises(exc.StateInvalid, v1.create_port(tenant, net["net-id"], port_state=bad))
        assert f"Unsupported port state: {bad}" == str(e)
    assert len(await v1.get_all_ports(tenant, net["net-id"])) == 2
    await _raises(exc.NetworkNotFound, v1.create_port(tenant, str(uuid.uuid4())))


@pytest_twisted.ensureDeferred
async def test_update_port_state(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    assert await v1.update_port(tenant, net_id, port_id, state="ACTIVE") == {"port-id": port_id, "port-state": "ACTIVE"}
    assert (await v1.plugin.get_port(RequestContext.admin(), port_id))["admin_state_up"] is True
    assert (await v1.update_port(tenant, net_id, port_id, state="DOWN"))["port-state"] == "DOWN"
    await _raises(exc.StateInvalid, v1.update_port(tenant, net_id, port_id, state="BROKEN"))
    assert (await v1.get_port_details(tenant, net_id, port_id))["port-state"] == "DOWN"


@pytest_twisted.ensureDeferred
async def test_port_not_found_names_the_network(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    other_net = (await v1.create_network(tenant, "other"))["net-id"]
    missing = str(uuid.uuid4())
    for call in (
        lambda: v1.get_port_details(tenant, other_net, port_id),
        lambda: v1.update_port(tenant, other_net, port_id, state="ACTIVE"),
        lambda: v1.delete_port(tenant, other_net, port_id),
        lambda: v1.plug_interface(tenant, other_net, port_id, "vif"),
        lambda: v1.unplug_interface(tenant, other_net, port_id),
        lambda: v1.get_interface_details(tenant, other_net, port_id),
    ):
        e = await _raises(exc.PortNotFound, call())
        assert e.type == "PortNotFound"
        assert str(e) == f"Port {port_id} could not be found on network {other_net}"
    await _raises(exc.PortNotFound, v1.get_port_details(tenant, net_id, missing))
    # The port itself was not touched.
    assert (await v1.get_port_details(tenant, net_id, port_id))["port-state"] == "DOWN"


@pytest_twisted.ensureDeferred
async def test_port_op_status_follows_port_status(v1: V1Plugin, tenant: str, store: Store) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await store.run(port_ops.set_port_status, port_id, "ACTIVE")
    assert (await v1.get_port_details(tenant, net_id, port_id))["port-op-status"] == "UP"
    await store.run(port_ops.set_port_status, port_id, "BUILD")
    assert (await v1.get_port_details(tenant, net_id, port_id))["port-op-status"] == "DOWN"


@pytest_twisted.ensureDeferred
async def test_delete_port(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await v1.plug_interface(tenant, net_id, port_id, "vif-d")
    e = await _raises(exc.PortInUse, v1.delete_port(tenant, net_id, port_id))
    assert "vif-d" in str(e)
    await v1.unplug_interface(tenant, net_id, port_id)
    assert await v1.delete_port(tenant, net_id, port_id) == {"port-id": port_id}
    assert await v1.get_all_ports(tenant, net_id) == []
    await _raises(exc.PortNotFound, v1.delete_port(tenant, net_id, port_id))


# -- attachments --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_plug_and_unplug(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    assert await v1.get_interface_details(tenant, net_id, port_id) is None
    assert await v1.plug_interface(tenant, net_id, port_id, "vif-a") is None
    assert await v1.get_interface_details(tenant, net_id, port_id) == "vif-a"
    assert (await v1.get_port_details(tenant, net_id, port_id))["attachment"] == "vif-a"
    # The attachment is the v2 port's device_id (what the controller protocol sends).
    assert (await v1.plugin.get_port(RequestContext.admin(), port_id))["device_id"] == "vif-a"
    assert await v1.get_all_attached_interfaces(tenant, net_id) == ["vif-a"]
    await v1.unplug_interface(tenant, net_id, port_id)
    assert await v1.get_interface_details(tenant, net_id, port_id) is None
    assert await v1.get_all_attached_interfaces(tenant, net_id) == []
    await v1.unplug_interface(tenant, net_id, port_id)  # a no-op on an empty port
    assert await v1.get_interface_details(tenant, net_id, port_id) is None


@pytest_twisted.ensureDeferred
async def test_plug_into_a_plugged_port_is_port_in_use(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await v1.plug_interface(tenant, net_id, port_id, "vif-1")
    for vif in ("vif-2", "vif-1"):
        e = await _raises(exc.PortInUse, v1.plug_interface(tenant, net_id, port_id, vif))
        assert "vif-1" in str(e)
    assert await v1.get_interface_details(tenant, net_id, port_id) == "vif-1"


@pytest_twisted.ensureDeferred
async def test_plug_a_vif_already_on_another_port_of_the_network(v1: V1Plugin, tenant: str) -> None:
    net_id, first = await _net_with_port(v1, tenant)
    second = (await v1.create_port(tenant, net_id))["port-id"]
    await v1.plug_interface(tenant, net_id, first, "vif-x")
    e = await _raises(exc.AlreadyAttached, v1.plug_interface(tenant, net_id, second, "vif-x"))
    assert e.kwargs == {"att_id": "vif-x", "port_id": second, "net_id": net_id, "att_port_id": first}
    assert await v1.get_interface_details(tenant, net_id, second) is None
    # The same VIF id on another network is another matter.
    other_net, other_port = await _net_with_port(v1, tenant)
    await v1.plug_interface(tenant, other_net, other_port, "vif-x")
    assert await v1.get_interface_details(tenant, other_net, other_port) == "vif-x"


@pytest_twisted.ensureDeferred
async def test_plug_rejects_empty_vif(v1: V1Plugin, tenant: str) -> None:
    net_id, port_id = await _net_with_port(v1, tenant)
    await _raises(exc.InvalidInput, v1.plug_interface(tenant, net_id, port_id, ""))
    assert await v1.get_interface_details(tenant, net_id, port_id) is None


@pytest_twisted.ensureDeferred
async def test_concurrent_plugs_of_one_vif_attach_it_once(v1: V1Plugin, tenant: str) -> None:
    net = await v1.create_network(tenant, "race")
    ports = [(await v1.create_port(tenant, net["net-id"]))["port-id"] for _ in range(4)]
    results = await DeferredList([v1.plug_interface(tenant, net["net-id"], p, "vif-race") for p in ports], consumeErrors=True)
    ok = [success for success, _ in results if success]
    errors = [f.value for success, f in results if not success]
    assert len(ok) == 1
    assert all(isinstance(e, exc.AlreadyAttached) for e in errors)
    assert await v1.get_all_attached_interfaces(tenant, net["net-id"]) == ["vif-race"]
    assert len(v1.locks) == 0


# -- filters (v1.1) -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_network_filters(v1: V1Plugin, tenant: str, store: Store) -> None:
    empty = (await v1.create_network(tenant, "empty"))["net-id"]
    plugged, plugged_port = await _net_with_port(v1, tenant)
    await v1.plug_interface(tenant, plugged, plugged_port, "vif-f")
    active, active_port = await _net_with_port(v1, tenant, port_state="ACTIVE")
    await store.run(port_ops.set_port_status, active_port, "ACTIVE")

    async def ids(**filters: str) -> set[str]:
        return {n["net-id"] for n in await v1.get_all_networks(tenant, filters)}

    assert await ids() == {empty, plugged, active}
    assert await ids(name="empty") == {empty}
    assert await ids(name="net") == {plugged, active}
    assert await ids(**{"op-status": "UP"}) == {empty, plugged, active}
    assert await ids(**{"op-status": "DOWN"}) == set()
    assert await ids(**{"has-attachment": "true"}) == {plugged}
    assert await ids(**{"has-attachment": "False"}) == {empty, active}
    assert await ids(attachment="vif-f") == {plugged}
    assert await ids(port=active_port) == {active}
    assert await ids(**{"port-state": "ACTIVE"}) == {active}
    assert await ids(**{"port-state": "DOWN"}) == {plugged}
    assert await ids(**{"port-op-status": "UP"}) == {active}
    assert await ids(name="net", **{"has-attachment": "true"}) == {plugged}  # filters are ANDed
    assert await ids(nonsense="x") == {empty, plugged, active}  # unknown filters are ignored, as in Essex


@pytest_twisted.ensureDeferred
async def test_port_filters(v1: V1Plugin, tenant: str, store: Store) -> None:
    net_id, down = await _net_with_port(v1, tenant)
    up = (await v1.create_port(tenant, net_id, port_state="ACTIVE"))["port-id"]
    await v1.plug_interface(tenant, net_id, up, "vif-p")
    await store.run(port_ops.set_port_status, up, "ACTIVE")

    async def ids(**filters: str) -> set[str]:
        return {p["port-id"] for p in await v1.get_all_ports(tenant, net_id, filters)}

    assert await ids() == {down, up}
    assert await ids(state="ACTIVE") == {up}
    assert await ids(state="DOWN") == {down}
    assert await ids(**{"op-status": "UP"}) == {up}
    assert await ids(**{"has-attachment": "true"}) == {up}
    assert await ids(**{"has-attachment": "false"}) == {down}
    assert await ids(attachment="vif-p") == {up}
    assert await ids(attachment="vif-none") == set()
    details = await v1.get_all_port_details(tenant, net_id, {"state": "ACTIVE"})
    assert details == [{"port-id": up, "net-id": net_id, "attachment": "vif-p", "port-state": "ACTIVE", "port-op-status": "UP"}]
