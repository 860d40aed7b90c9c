"""No IP and no MAC is ever handed out twice, under concurrent creates.

Runs the real units of work from many threads against each database server,
and real HTTP clients against two server processes sharing one database.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor

from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database
from server_plugin import exceptions as exc
from server_plugin import ipam
from server_plugin.context import RequestContext
from server_plugin.store import migrate
from server_plugin.store import networks as net_ops
from server_plugin.store import ports as port_ops
from server_plugin.store.db import Store
from server_plugin.store.settings import CoreSettings

SERVER_BACKENDS = [b for b in BACKENDS if b in ("postgresql", "mariadb")]
ADMIN = RequestContext.admin()
SETTINGS = CoreSettings()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with temporary_database(request.param) as url:
        s = Store(url, global_reactor, max_threads=64)
        migrate.upgrade(s.engine)
        try:
            yield s
        finally:
            s.stop()


def _network_with_subnet(store: Store, cidr: str) -> tuple[str, str]:
    net = store.run_sync(net_ops.create_network, ADMIN, {"tenant_id": "t", "name": "race"})
    values = {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": cidr}
    subnet = store.run_sync(net_ops.create_subnet, ADMIN, values, SETTINGS)
    return net["id"], subnet["id"]


def _create_many(store: Store, count: int, values: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Exception]]:
    def one(_: int) -> Any:
        try:
            return store.run_sync(port_ops.create_port, ADMIN, dict(values), SETTINGS)
        except exc.QuantumException as e:
            return e

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    return [r for r in results if isinstance(r, dict)], [r for r in results if isinstance(r, Exception)]


def test_concurrent_port_creates_get_distinct_ips_and_macs(store: Store) -> None:
    net_id, _ = _network_with_subnet(store, "10.10.0.0/24")
    ports, errors = _create_many(store, 60, {"tenant_id": "t", "network_id": net_id})
    assert errors == []
    ips = [p["fixed_ips"][0]["ip_address"] for p in ports]
    macs = [p["mac_address"] for p in ports]
    assert len(ports) == 60
    assert len(set(ips)) == 60
    assert len(set(macs)) == 60
    stored = store.run_sync(port_ops.get_ports, ADMIN, _all())
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in stored) == sorted(ips)


def test_concurrent_creates_exhaust_a_small_pool_exactly(store: Store) -> None:
    net_id, _ = _network_with_subnet(store, "10.20.0.0/27")  # 29 addresses in the pool
    ports, errors = _create_many(store, 50, {"tenant_id": "t", "network_id": net_id})
    assert len(ports) == 29
    assert {type(e) for e in errors} == {exc.IpAddressGenerationFailure}
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 29


def test_same_requested_ip_is_given_once(store: Store) -> None:
    net_id, subnet_id = _network_with_subnet(store, "10.30.0.0/24")
    wanted = {"tenant_id": "t", "network_id": net_id, "fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.30.0.77"}]}
    ports, errors = _create_many(store, 20, wanted)
    assert len(ports) == 1
    assert len(errors) == 19 and all(isinstance(e, exc.IpAddressInUse) for e in errors)


def test_same_requested_mac_is_given_once(store: Store) -> None:
    net_id, _ = _network_with_subnet(store, "10.40.0.0/24")
    ports, errors = _create_many(store, 20, {"tenant_id": "t", "network_id": net_id, "mac_address": "fa:16:3e:12:34:56"})
    assert len(ports) == 1
    assert len(errors) == 19 and all(isinstance(e, exc.MacAddressInUse) for e in errors)
    # The losers left nothing behind: exactly one allocation exists.
    assert len(store.run_sync(port_ops.get_ports, ADMIN, _all())) == 1


def test_concurrent_creates_in_a_large_subnet_get_distinct_addresses(store: Store) -> None:
    """A /16: each create checks random candidates with one query (not a scan), and the key settles the races."""
    net_id, _ = _network_with_subnet(store, "10.40.0.0/16")
    ports, errors = _create_many(store, 60, {"tenant_id": "t", "network_id": net_id})
    assert errors == []
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 60 and len({p["mac_address"] for p in ports}) == 60


def test_a_generated_mac_already_used_is_replaced(store: Store) -> None:
    """The create reads whether its generated MAC is taken with the network; a taken one is drawn again."""
    net_id, _ = _network_with_subnet(store, "10.41.0.0/24")
    random.seed(1234)
    taken = ipam.random_mac(SETTINGS.base_mac)
    store.run_sync(port_ops.create_port, ADMIN, {"tenant_id": "t", "network_id": net_id, "mac_address": taken}, SETTINGS)
    random.seed(1234)  # the next create draws the same MAC first
    port = store.run_sync(port_ops.create_port, ADMIN, {"tenant_id": "t", "network_id": net_id}, SETTINGS)
    assert port["mac_address"] != taken and port["mac_address"].startswith("fa:16:3e:")


def test_creates_after_a_large_subnets_pools_changed_take_addresses_of_the_new_pools(store: Store) -> None:
    """A create checks candidates drawn from the pools the last create read (with the network, one statement): once
    the pools changed, those are not used."""
    net_id, subnet_id = _network_with_subnet(store, "10.43.0.0/16")
    for _ in range(3):
        store.run_sync(port_ops.create_port, ADMIN, {"tenant_id": "t", "network_id": net_id}, SETTINGS)
    pools = {"allocation_pools": [{"start": "10.43.200.0", "end": "10.43.209.255"}]}  # still large: 2,560 addresses
    store.run_sync(net_ops.update_subnet, ADMIN, subnet_id, pools, SETTINGS)
    made = [store.run_sync(port_ops.create_port, ADMIN, {"tenant_id": "t", "network_id": net_id}, SETTINGS) for _ in range(20)]
    addresses = [p["fixed_ips"][0]["ip_address"] for p in made]
    assert len(set(addresses)) == 20
    assert all(200 <= int(a.split(".")[2]) <= 209 for a in addresses), addresses


def test_a_lost_insert_starts_the_unit_of_work_again(store: Store) -> None:
    """A unique key lost on the create's insert (here: a port id another writer used) is the driver's error, wrapped
    as SQLAlchemy wraps it; the unit of work runs again on a usable transaction (PostgreSQL aborted the first)."""
    net_id, _ = _network_with_subnet(store, "10.42.0.0/24")
    first = store.run_sync(port_ops.create_port, ADMIN, {"tenant_id": "t", "network_id": net_id}, SETTINGS)
    attempts: list[int] = []

    def work(session: Any) -> Any:
        attempts.append(1)
        values = {"tenant_id": "t", "network_id": net_id, "id": first["id"] if len(attempts) == 1 else ""}
        return port_ops.create_port(session, ADMIN, values, SETTINGS)

    port = store.run_sync(work)
    assert len(attempts) == 2 and port["id"] != first["id"]
    assert {p["id"] for p in store.run_sync(port_ops.get_ports, ADMIN, _all())} == {first["id"], port["id"]}


def _all() -> Any:
    from server_plugin.store.listing import ListQuery

    return ListQuery()


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_two_servers_one_database_never_share_an_address(backend: str) -> None:
    """64 HTTP clients spread over two server processes on one database."""
    with temporary_database(backend) as url:
        first = ServerProcess(url).start()
        second = ServerProcess(url, config_text="[DATABASE]\ndb_auto_upgrade = false\n").start()
        try:
            status, net = first.request("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "name": "shared-db"}})
            assert status == 201
            net_id = net["network"]["id"]
            status, _ = first.request(
                "POST", "/v2.0/subnets", {"subnet": {"tenant_id": "t", "network_id": net_id, "ip_version": 4, "cidr": "10.50.0.0/24"}}
            )
            assert status == 201

            def one(i: int) -> tuple[int, Any]:
                target = first if i % 2 else second
                return target.request("POST", "/v2.0/ports", {"port": {"tenant_id": "t", "network_id": net_id}})

            with ThreadPoolExecutor(max_workers=64) as pool:
                results = list(pool.map(one, range(128)))
            assert [s for s, _ in results] == [201] * 128
            ips = [b["port"]["fixed_ips"][0]["ip_address"] for _, b in results]
            macs = [b["port"]["mac_address"] for _, b in results]
            assert len(set(ips)) == 128 and len(set(macs)) == 128
        finally:
            second.stop()
            first.stop()
