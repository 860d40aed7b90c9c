"""Bulk port creates (``POST /v2.0/ports`` with ``{"ports": [...]}``): all or nothing, as Neutron, on each database.

A refused item (bad input, a network of another tenant, a taken or repeated
fixed IP or MAC, a subnet that runs out of addresses midway, another tenant's
security group) refuses the request with its own error, and the database is
left exactly as it was: no port, no address, no agent or DHCP event, no
journal entry (a digest of every row of every table). A bulk that goes
through gives each port what a single create gives it (its tenant's default
security group, an address, the events its host and the DHCP agents hear).
With a controller: every port and attachment reaches it; a refusal of any one
call undoes the whole batch, and the controller converges on the store.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text

from controller_sim.testing import SimProcess
from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database
from server_plugin.store.models import Agent
from tests.hostile import StoreDigest
from tests.test_api_tenancy_and_input import as_tenant, assert_fault, create, uniq
from tests.test_controller_consistency import _check, _config, _empty_journal, _pool, _wait_consistent, _wait_for


@pytest.fixture(scope="module")
def digest(db_url: str) -> Iterator[StoreDigest]:
    d = StoreDigest(db_url)
    yield d
    d.close()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> dict[str, Any]:
    """Tenant a: a network with DHCP and a port (so its default group exists); tenant b: a network of its own."""
    a, b = uniq("ba"), uniq("bb")
    net = create(server, "networks", {"name": "bulk-a", "tenant_id": a}, as_tenant(a))
    subnet = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.90.0.0/24"}, as_tenant(a))
    first = create(server, "ports", {"network_id": net["id"]}, as_tenant(a))
    net_b = create(server, "networks", {"name": "bulk-b", "tenant_id": b}, as_tenant(b))
    create(server, "subnets", {"network_id": net_b["id"], "ip_version": 4, "cidr": "10.91.0.0/24"}, as_tenant(b))
    create(server, "ports", {"network_id": net_b["id"]}, as_tenant(b))
    status, group_b = server.request("POST", "/v2.0/security-groups", {"security_group": {"name": "b-only"}}, as_tenant(b))
    assert status == 201, group_b
    return {
        "a": a,
        "b": b,
        "net": net,
        "subnet": subnet,
        "default_group": first["security_groups"],
        "net_b": net_b,
        "group_b": group_b["security_group"],
    }


def _bulk(server: ServerProcess, items: list[dict[str, Any]], tenant: str) -> tuple[int, Any]:
    return server.request("POST", "/v2.0/ports", {"ports": items}, as_tenant(tenant))


def _event_rows(db_url: str) -> list[Any]:
    """Every agent event's (host, kind, object_id), in commit order."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT host, kind, object_id FROM agent_events ORDER BY seq")).all()
    finally:
        engine.dispose()


def _events(db_url: str, object_ids: list[str]) -> list[tuple[str, str, str]]:
    """(host, kind, object id) of the agent events about ``object_ids``, in commit order."""
    rows = _event_rows(db_url)
    wanted = set(object_ids)
    return [(r.host, r.kind, r.object_id) for r in rows if r.object_id in wanted]


def _refused_without_trace(digest: StoreDigest, reply: tuple[int, Any], status: int, error_type: str) -> dict[str, str]:
    before = digest.rows()
    error = assert_fault(*reply(), status, error_type)
    assert digest.rows() == before  # every table, agent_events, the controller journal and Nova's events included
    return error


def test_a_bulk_gives_each_port_what_a_single_create_gives(server: ServerProcess, db_url: str, world: dict[str, Any]) -> None:
    a, net = world["a"], world["net"]["id"]
    items = [{"network_id": net, "name": f"p{i}", "device_id": f"vm-{i}", "binding:host_id": "bulk-host"} for i in range(6)]
    items.append({"network_id": net, "name": "no-groups", "security_groups": []})
    status, body = server.request("POST", "/v2.0/ports", {"ports": [dict(i, tenant_id=a) for i in items]})  # (binding: admin's)
    assert status == 201, body
    ports = body["ports"]
    assert [p["name"] for p in ports] == [i["name"] for i in items]  # in request order
    assert all(p["tenant_id"] == a and p["status"] == "DOWN" for p in ports)
    assert [p["security_groups"] for p in ports] == [world["default_group"]] * 6 + [[]]
    assert len({p["mac_address"] for p in ports}) == len({p["id"] for p in ports}) == len(ports)
    ips = [p["fixed_ips"] for p in ports]
    assert all(len(f) == 1 and f[0]["subnet_id"] == world["subnet"]["id"] for f in ips)
    assert len({f[0]["ip_address"] for f in ips}) == len(ports)
    for port in ports:
        status, shown = server.request("GET", f"/v2.0/ports/{port['id']}")
        assert status == 200 and shown["port"] == port
    ids = [p["id"] for p in ports]
    events = _events(db_url, ids)
    # The DHCP agents hear of every port, the host of each port bound to it: once each.
    assert sorted(e for e in events if e[0] == "@dhcp") == sorted(("@dhcp", "port_created", i) for i in ids)
    assert sorted(e for e in events if e[0] == "bulk-host") == sorted(("bulk-host", "port_attached", i) for i in ids[:6])
    # The host also hears of the default group, once, with every new member.
    group = world["default_group"][0]
    payloads = _group_events(db_url, "bulk-host", group)
    assert len(payloads) == 1 and {f[0]["ip_address"] for f in ips[:6]} <= set(payloads[0]["members"])


def _group_events(db_url: str, host: str, group_id: str) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stmt = text("SELECT payload FROM agent_events WHERE host = :h AND object_id = :g AND kind = 'security_group_updated'")
            return [json.loads(r.payload) for r in conn.execute(stmt, {"h": host, "g": group_id})]
    finally:
        engine.dispose()


def test_a_bulk_after_an_admin_removed_the_default_group_gets_a_new_one(server: ServerProcess) -> None:
    """The server's cached default group is gone: the bulk's insert fails once, and the retry makes a new group."""
    tenant = uniq("bd")
    net = create(server, "networks", {"name": "regroup", "tenant_id": tenant}, as_tenant(tenant))
    create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.95.0.0/24"}, as_tenant(tenant))
    port = create(server, "ports", {"network_id": net["id"]}, as_tenant(tenant))
    assert server.request("DELETE", f"/v2.0/ports/{port['id']}", headers=as_tenant(tenant))[0] == 204
    assert server.request("DELETE", f"/v2.0/security-groups/{port['security_groups'][0]}")[0] == 204
    status, body = _bulk(server, [{"network_id": net["id"]} for _ in range(3)], tenant)
    assert status == 201, body
    groups = {tuple(p["security_groups"]) for p in body["ports"]}
    assert len(groups) == 1 and groups != {tuple(port["security_groups"])}
    status, listed = server.request("GET", "/v2.0/security-groups?name=default", headers=as_tenant(tenant))
    assert [g["id"] for g in listed["security_groups"]] == list(groups.pop())


def test_a_bad_item_refuses_the_whole_bulk(server: ServerProcess, digest: StoreDigest, world: dict[str, Any]) -> None:
    a, net = world["a"], world["net"]["id"]
    good = {"network_id": net, "name": "good", "device_id": "vm"}
    # Bad input the API refuses before the store, and bad input only the store can tell (an unknown subnet).
    bad_input = {"network_id": net, "admin_state_up": "maybe"}
    _refused_without_trace(digest, lambda: _bulk(server, [good, good, bad_input], a), 400, "InvalidInput")
    bad_subnet = {"network_id": net, "fixed_ips": [{"subnet_id": "3f0b2a5e-1111-4222-8333-944455556666"}]}
    _refused_without_trace(digest, lambda: _bulk(server, [good, good, bad_subnet], a), 404, "SubnetNotFound")
    out_of_subnet = {"network_id": net, "fixed_ips": [{"subnet_id": world["subnet"]["id"], "ip_address": "10.99.0.5"}]}
    _refused_without_trace(digest, lambda: _bulk(server, [good, out_of_subnet, good], a), 400, "InvalidInput")
    missing_net = {"network_id": "3f0b2a5e-1111-4222-8333-944455556666"}
    _refused_without_trace(digest, lambda: _bulk(server, [good, missing_net], a), 404, "NetworkNotFound")


def test_a_tenant_may_not_bulk_create_on_another_tenants_network(server: ServerProcess, digest: StoreDigest, world: dict[str, Any]) -> None:
    b = world["b"]
    mine = {"network_id": world["net_b"]["id"], "name": "mine"}
    theirs = {"network_id": world["net"]["id"], "name": "theirs"}
    _refused_without_trace(digest, lambda: _bulk(server, [mine, theirs], b), 404, "NetworkNotFound")
    # Nor name another tenant's security group, nor create a port in another tenant's name.
    foreign_group = {"network_id": world["net"]["id"], "security_groups": [world["group_b"]["id"]]}
    _refused_without_trace(digest, lambda: _bulk(server, [{"network_id": world["net"]["id"]}, foreign_group], world["a"]), 404,
                           "SecurityGroupNotFound")  # fmt: skip
    other_tenant = dict(mine, tenant_id=world["a"])
    assert_fault(*_bulk(server, [mine, other_tenant], b), 403)
    status, body = server.request("GET", "/v2.0/ports?name=mine", headers=as_tenant(b))
    assert status == 200 and body["ports"] == []


def test_a_fixed_ip_or_mac_taken_or_named_twice_refuses_the_bulk(server: ServerProcess, digest: StoreDigest, world: dict[str, Any]) -> None:
    a, net, subnet = world["a"], world["net"]["id"], world["subnet"]["id"]
    fixed = {"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.90.0.200"}]}
    _refused_without_trace(digest, lambda: _bulk(server, [{"network_id": net}, fixed, fixed], a), 409, "IpAddressInUse")
    by_address_only = {"network_id": net, "fixed_ips": [{"ip_address": "10.90.0.200"}]}
    _refused_without_trace(digest, lambda: _bulk(server, [fixed, by_address_only], a), 409, "IpAddressInUse")
    mac = {"network_id": net, "mac_address": "fa:16:3e:90:00:01"}
    _refused_without_trace(digest, lambda: _bulk(server, [mac, {"network_id": net}, mac], a), 409, "MacAddressInUse")
    # Taken in the store: by a port made before.
    create(server, "ports", dict(fixed, mac_address="fa:16:3e:90:00:02"), as_tenant(a))
    _refused_without_trace(digest, lambda: _bulk(server, [{"network_id": net}, fixed], a), 409, "IpAddressInUse")
    taken_mac = {"network_id": net, "mac_address": "fa:16:3e:90:00:02"}
    _refused_without_trace(digest, lambda: _bulk(server, [{"network_id": net}, taken_mac], a), 409, "MacAddressInUse")
    # An address the batch names is not picked for another port of the batch.
    named = {"network_id": net, "name": "named", "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.90.0.201"}]}
    status, body = _bulk(server, [{"network_id": net, "name": "picked"} for _ in range(3)] + [named], a)
    assert status == 201, body
    addresses = [p["fixed_ips"][0]["ip_address"] for p in body["ports"]]
    assert addresses[-1] == "10.90.0.201" and len(set(addresses)) == 4


def test_a_subnet_running_out_midway_refuses_the_bulk(server: ServerProcess, digest: StoreDigest, world: dict[str, Any]) -> None:
    a = world["a"]
    net = create(server, "networks", {"name": "small", "tenant_id": a}, as_tenant(a))
    # A /29: .1 is the gateway, .2-.6 are the pool: five addresses.
    create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.92.0.0/29"}, as_tenant(a))
    first = create(server, "ports", {"network_id": net["id"]}, as_tenant(a))["fixed_ips"][0]["ip_address"]
    items = [{"network_id": net["id"], "name": f"s{i}"} for i in range(5)]
    _refused_without_trace(digest, lambda: _bulk(server, items, a), 409, "IpAddressGenerationFailure")
    status, body = _bulk(server, items[:4], a)
    assert status == 201, body
    rest = sorted({f"10.92.0.{i}" for i in range(2, 7)} - {first})
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in body["ports"]) == rest
    _refused_without_trace(digest, lambda: _bulk(server, items[:1], a), 409, "IpAddressGenerationFailure")


def test_a_large_subnet_gives_distinct_addresses(server: ServerProcess, world: dict[str, Any]) -> None:
    """A /16's pool is past the small-pool scan: addresses are random candidates checked in one query per round."""
    a = world["a"]
    net = create(server, "networks", {"name": "large", "tenant_id": a}, as_tenant(a))
    subnet = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.93.0.0/16"}, as_tenant(a))
    named = {"network_id": net["id"], "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.93.7.7"}]}
    status, body = _bulk(server, [{"network_id": net["id"]} for _ in range(200)] + [named], a)
    assert status == 201, body
    addresses = [p["fixed_ips"][0]["ip_address"] for p in body["ports"]]
    assert len(set(addresses)) == 201 and addresses[-1] == "10.93.7.7"
    status, listed = server.request("GET", f"/v2.0/ports?network_id={net['id']}&fields=fixed_ips", headers=as_tenant(a))
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in listed["ports"]) == sorted(addresses)


# -- with a controller -----------------------------------------------------------------------------------


@contextmanager
def _with_controller(backend: str, profile: str = "bigswitch", **options: Any) -> Iterator[tuple[ServerProcess, SimProcess, str]]:
    with ExitStack() as stack:
        db_url = stack.enter_context(temporary_database(backend))
        sim = SimProcess(profile=profile).start()
        stack.callback(sim.stop)
        config = _config([sim], **options).replace("controller_profile = bigswitch", f"controller_profile = {profile}")
        server = ServerProcess(db_url, config_text=config).start()
        stack.callback(server.stop)
        yield server, sim, db_url


def _network(server: ServerProcess, tenant: str = "t-bulk") -> str:
    net = create(server, "networks", {"name": "net", "tenant_id": tenant})
    create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.94.0.0/24", "tenant_id": tenant})
    create(server, "ports", {"network_id": net["id"], "tenant_id": tenant})  # the default group, made and sent before
    return net["id"]


def _vm_ports(net_id: str, count: int, tenant: str = "t-bulk") -> list[dict[str, Any]]:
    return [
        {"network_id": net_id, "tenant_id": tenant, "name": f"vm{i}", "device_id": f"vm-{i}", "device_owner": "compute:nova",
         "binding:host_id": "h1"}
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("profile", ["bigswitch", "floodlight"])
def test_every_port_of_a_bulk_reaches_the_controller(profile: str) -> None:
    with _with_controller("sqlite", profile, server_timeout=5) as (server, sim, db_url):
        net_id = _network(server)
        status, body = server.request("POST", "/v2.0/ports", {"ports": _vm_ports(net_id, 40)})
        assert status == 201, body
        _empty_journal(server)
        if profile == "bigswitch":
            code, output = _check(db_url, sim)
            assert code == 0, output
        requests = sim.requests()
        attached = {r["path"].split("/")[-2] for r in requests if r["method"] == "PUT" and r["path"].endswith("/attachment")}
        assert attached >= {p["id"] for p in body["ports"]}
        if profile == "bigswitch":
            posted = [r for r in requests if r["method"] == "POST" and r["path"].endswith(f"/networks/{net_id}/ports")]
            assert len(posted) == 41  # the first port's and the bulk's, one each
        assert sim.stats()["topology_puts"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_controller_call_undoes_the_whole_bulk(backend: str) -> None:
    """One port's call refused (500 from the only controller): every port goes, its host and the DHCP agents hear
    it went, the journal empties and the controller converges on the store (it got some of the ports)."""
    with _with_controller(backend, server_timeout=5) as (server, sim, db_url):
        net_id = _network(server)
        sim.fault(action="status", status=500, count=1, methods=["PUT"], path_regex=r"/attachment$")
        before = sorted(p["id"] for p in server.request("GET", f"/v2.0/ports?network_id={net_id}")[1]["ports"])
        status, reply = server.request("POST", "/v2.0/ports", {"ports": _vm_ports(net_id, 30)})
        assert status == 500 and reply["NeutronError"]["type"] == "RemoteRestError", reply
        after = sorted(p["id"] for p in server.request("GET", f"/v2.0/ports?network_id={net_id}")[1]["ports"])
        assert after == before
        _empty_journal(server)
        _wait_consistent(db_url, sim, timeout=30)
        rows = _event_rows(db_url)
        created = [r.object_id for r in rows if r.kind == "port_attached"]
        assert len(created) == 30
        kinds = {(r.host, r.kind) for r in rows if r.object_id in set(created)}
        assert kinds == {("h1", "port_attached"), ("h1", "port_detached"), ("@dhcp", "port_created"), ("@dhcp", "port_deleted")}


def test_a_bulk_is_journaled_port_by_port_and_a_timeout_undoes_it() -> None:
    """While a bulk's calls are out, the journal holds one entry per port; a call that hangs past the timeout
    refuses the bulk, and the ones that landed are taken back by the sync that follows."""
    with _with_controller("sqlite", server_timeout=2) as (server, sim, db_url):
        net_id = _network(server)
        _empty_journal(server)
        sim.fault(action="hang", count=1, methods=["POST"], path_regex=r"/ports$")
        outcome: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: outcome.update(reply=server.request("POST", "/v2.0/ports", {"ports": _vm_ports(net_id, 8)}))
        )
        thread.start()
        journal = _wait_for(lambda: sim.stats()["hung_now"] == 1 and _pool(server)["journal"], 10, "the hung call")
        assert len(journal) == 8 and {(e["op"], e["kind"]) for e in journal} == {("create", "port")}
        thread.join(30)
        status, reply = outcome["reply"]
        assert status == 500 and reply["NeutronError"]["type"] == "RemoteRestError", reply
        assert [p["name"] for p in server.request("GET", f"/v2.0/ports?network_id={net_id}")[1]["ports"]] == [""]
        _empty_journal(server)
        sim.clear_faults()
        _wait_consistent(db_url, sim, timeout=30)


def test_a_bulk_meeting_a_lost_state_is_carried_by_one_sync() -> None:
    with _with_controller("sqlite", server_timeout=5) as (server, sim, db_url):
        net_id = _network(server)
        sim.forget()  # every call is 409 until a /topology PUT
        started = time.monotonic()
        status, body = server.request("POST", "/v2.0/ports", {"ports": _vm_ports(net_id, 20)})
        assert status == 201, body
        assert time.monotonic() - started < 20
        assert sim.stats()["topology_puts"] == 1
        _empty_journal(server)
        assert _check(db_url, sim)[0] == 0


def _twin_network(server: ServerProcess, tenant: str, n: int) -> dict[str, str]:
    net = create(server, "networks", {"name": f"twin{n}", "tenant_id": tenant})
    v4 = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": f"10.{96 + n}.0.0/24", "tenant_id": tenant})
    v6 = create(server, "subnets", {"network_id": net["id"], "ip_version": 6, "cidr": f"fd00:{96 + n}::/64", "tenant_id": tenant})
    return {"net": net["id"], "v4": v4["id"], "v6": v6["id"], "prefix": f"10.{96 + n}.0."}


def _twin_items(world: dict[str, str], group: str) -> list[dict[str, Any]]:
    """Port bodies that exercise each attribute and extension a create sets (the same bodies on either twin network)."""
    v4, v6, prefix = world["v4"], world["v6"], world["prefix"]
    return [
        {},
        {
            "name": "n",
            "description": "d",
            "admin_state_up": False,
            "device_id": "vm-1",
            "device_owner": "compute:nova",
            "binding:host_id": "twin-filtering",
            "binding:profile": {"b": 2, "a": [1]},
        },
        {"mac_address": "fa:16:3e:aa:bb:01", "fixed_ips": [{"subnet_id": v4, "ip_address": prefix + "50"}]},
        {
            "allowed_address_pairs": [{"ip_address": "10.200.0.0/24"}, {"ip_address": "10.201.0.7", "mac_address": "fa:16:3e:00:00:09"}],
            "binding:host_id": "twin-plain",
        },
        {"security_groups": []},
        {"port_security_enabled": False, "binding:host_id": "twin-filtering"},
        {"device_owner": "network:dhcp", "binding:host_id": "twin-plain"},
        {"fixed_ips": [{"subnet_id": v6}]},
        {"security_groups": [group], "binding:host_id": "twin-filtering"},
        {"fixed_ips": []},
        {"fixed_ips": [{"subnet_id": v4}, {"subnet_id": v4}, {"ip_address": prefix + "60"}]},
    ]  # (the network is the caller's to add)


def _normalized(port: dict[str, Any], world: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    """A port's answer with what differs by design between twins (ids, its network, drawn MACs and addresses) named
    by role; what each drawn value must be is asserted here."""
    out = dict(port)
    assert out.pop("network_id") == world["net"]
    out.pop("id")
    assert out["created_at"] == out["updated_at"] and len(out.pop("created_at")) == len(out.pop("updated_at")) == 20
    mac = out.pop("mac_address") if "mac_address" not in given else None
    assert mac is None or mac.startswith("fa:16:3e:")
    out["allowed_address_pairs"] = [dict(p, mac_address="the port's") if p["mac_address"] == port["mac_address"] else p
                                    for p in port["allowed_address_pairs"]]  # fmt: skip
    subnets = {world["v4"]: "v4", world["v6"]: "v6"}
    named = {f.get("ip_address") for f in given.get("fixed_ips", [])}
    fixed = []
    for f in port["fixed_ips"]:
        ip = f["ip_address"]
        if ip not in named:
            assert ip.startswith(world["prefix"]) if subnets[f["subnet_id"]] == "v4" else ip.startswith("fd00:")
            ip = "drawn"
        fixed.append({"subnet_id": subnets[f["subnet_id"]], "ip_address": ip.replace(world["prefix"], "prefix.")})
    out["fixed_ips"] = fixed
    return out


def _port_events(db_url: str, port_ids: list[str]) -> list[list[tuple[str, str]]]:
    rows = _event_rows(db_url)
    return [sorted((r.host, r.kind) for r in rows if r.object_id == port_id) for port_id in port_ids]


def test_a_bulk_answers_and_stores_what_single_creates_do(server: ServerProcess, db_url: str) -> None:
    """The same bodies created one by one on one network and in one bulk on its twin: the same answers (but for ids,
    drawn MACs and addresses), the same ports read back, the same events for the agents, on each database."""
    tenant = uniq("tw")
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:  # an agent that filters on one host (binding:vif_details' port_filter)
            conn.execute(insert(Agent), [{
                "id": str(uuid.uuid4()), "agent_type": "Open vSwitch agent", "binary": "restproxy-agent", "topic": "N/A",
                "host": "twin-filtering", "admin_state_up": True, "configurations": json.dumps({"firewall": "openflow"}, sort_keys=True),
            }])  # fmt: skip
    finally:
        engine.dispose()
    status, body = server.request("POST", "/v2.0/security-groups", {"security_group": {"name": "twin", "tenant_id": tenant}})
    assert status == 201, body
    group = body["security_group"]["id"]
    one, bulk = _twin_network(server, tenant, 1), _twin_network(server, tenant, 2)
    singles = []
    for item in _twin_items(one, group):
        singles.append(create(server, "ports", dict(item, network_id=one["net"], tenant_id=tenant)))
    bulk_items = _twin_items(bulk, group)
    status, body = server.request("POST", "/v2.0/ports", {"ports": [dict(i, network_id=bulk["net"], tenant_id=tenant) for i in bulk_items]})
    assert status == 201, body
    together = body["ports"]
    expected = [_normalized(p, one, i) for p, i in zip(singles, _twin_items(one, group), strict=True)]
    assert [_normalized(p, bulk, i) for p, i in zip(together, bulk_items, strict=True)] == expected
    assert expected[0]["security_groups"] and expected[1]["binding:vif_details"]["port_filter"] is True  # (the test tests)
    for port in singles + together:
        status, shown = server.request("GET", f"/v2.0/ports/{port['id']}")
        assert status == 200 and shown["port"] == port
    assert _port_events(db_url, [p["id"] for p in together]) == _port_events(db_url, [p["id"] for p in singles])
