"""The controller simulator over real HTTP: Big Switch resources, lost state, faults, auth,
TLS, the Floodlight v0.91 profile with its token-parser quirk, and a 20 MB chunked sync."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from controller_sim import BASE_PATH
from controller_sim.jackson import JsonParseError, StreamingParser, Token
from controller_sim.testing import SimAdminError, SimProcess

DEFAULT_CAPS = ["floatingip", "consistency", "keep-alive"]


# -- bodies as the plugin maps them (bigswitch-plugin-facts §2b) ------------------------------


def mac(i: int) -> str:
    return f"fa:16:3e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def subnet(sid: str, nid: str, cidr: str = "10.0.0.0/24", tenant: str = "t1") -> dict[str, Any]:
    net = ipaddress.ip_network(cidr)
    return {
        "id": sid,
        "name": "",
        "tenant_id": tenant,
        "network_id": nid,
        "ip_version": 4,
        "cidr": cidr,
        "allocation_pools": [{"start": str(net[2]), "end": str(net[-2])}],
        "gateway_ip": str(net[1]),
        "enable_dhcp": True,
        "dns_nameservers": [],
        "host_routes": [],
        "shared": False,
        "state": "UP",
    }


def network(nid: str = "n1", tenant: str = "t1", name: str | None = None, cidr: str = "10.0.0.0/24", **extra: Any) -> dict[str, Any]:
    subnets = [subnet(f"{nid}-s1", nid, cidr, tenant)] if cidr else []
    body = {
        "id": nid,
        "name": name or nid,
        "tenant_id": tenant,
        "shared": False,
        "state": "UP",
        "subnets": subnets,
        "router:external": False,
        "gateway": subnets[0]["gateway_ip"] if subnets else "",
    }
    body.update(extra)
    return body


def port(pid: str, nid: str = "n1", i: int = 1, tenant: str = "t1", device: str = "", ip: str = "10.0.0.5") -> dict[str, Any]:
    return {
        "id": pid,
        "name": "",
        "network_id": nid,
        "tenant_id": tenant,
        "mac_address": mac(i),
        "fixed_ips": [{"subnet_id": f"{nid}-s1", "ip_address": ip}],
        "device_id": device,
        "device_owner": "compute:nova" if device else "",
        "state": "UP",
    }


def router(rid: str = "r1", tenant: str = "t1", name: str = "r1", gw_net: str | None = None) -> dict[str, Any]:
    return {
        "id": rid,
        "tenant_id": tenant,
        "name": name,
        "state": "UP",
        "external_gateway_info": {"network_id": gw_net} if gw_net else None,
    }


def interface(nid: str = "n1", tenant: str = "t1") -> dict[str, Any]:
    return {"id": nid, "network": network(nid, tenant), "subnet": subnet(f"{nid}-s1", nid, tenant=tenant)}


def floatingip(fid: str, net: str = "ext", address: str = "172.24.4.10", port_id: str | None = None) -> dict[str, Any]:
    return {
        "id": fid,
        "tenant_id": "t1",
        "floating_ip_address": address,
        "floating_network_id": net,
        "router_id": "r1" if port_id else None,
        "port_id": port_id,
        "fixed_ip_address": "10.0.0.5" if port_id else None,
    }


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess() as proc:
        yield proc


@pytest.fixture
def bsn(sim: SimProcess) -> SimProcess:
    """The shared bigswitch simulator, reset: empty, no faults, default settings, empty log."""
    sim.clear_faults()
    sim.admin("PUT", "/_sim/config", {"capabilities": DEFAULT_CAPS, "latency_ms": 0, "forget_mode": "conflict"})
    sim.forget("silent")
    sim.admin("DELETE", "/_sim/requests")
    sim.admin("DELETE", "/_sim/stats")
    return sim


@pytest.fixture(scope="module")
def fl() -> Iterator[SimProcess]:
    with SimProcess(profile="floodlight") as proc:
        yield proc


@pytest.fixture
def floodlight(fl: SimProcess) -> SimProcess:
    fl.clear_faults()
    fl.forget()
    return fl


def ok(result: tuple[int, Any]) -> None:
    assert result == (200, {"status": "ok"}), result


def error(result: tuple[int, Any], status: int, fragment: str) -> None:
    assert result[0] == status, result
    assert isinstance(result[1], dict) and fragment in result[1]["error"], result


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return time.monotonic() - started, result


# -- Big Switch resources -----------------------------------------------------------------------


def test_capabilities_health_and_runtime_config(bsn: SimProcess) -> None:
    assert bsn.controller("GET", "capabilities") == (200, DEFAULT_CAPS)
    ok(bsn.controller("GET", "health"))
    bsn.admin("PUT", "/_sim/config", {"capabilities": ["floatingip", "display-name"]})
    assert bsn.controller("GET", "capabilities") == (200, ["floatingip", "display-name"])
    with pytest.raises(SimAdminError) as e:
        bsn.admin("PUT", "/_sim/config", {"forget_mode": "loud"})
    assert e.value.status == 400
    assert bsn.admin("GET", "/_sim/config")["forget_mode"] == "conflict"


def test_network_create_update_delete(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    ok(bsn.controller("PUT", "tenants/t1/networks/n2", {"network": network("n2", cidr="10.2.0.0/24")}))  # PUT upserts
    ok(bsn.controller("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}))
    renamed = network("n1", name="renamed", state="DOWN", floatingips=[])
    ok(bsn.controller("PUT", "tenants/t1/networks/n1", {"network": renamed}))
    state = bsn.state()
    nets = {n["id"]: n for n in state["networks"]}
    assert sorted(nets) == ["n1", "n2"]
    assert nets["n1"]["name"] == "renamed" and nets["n1"]["state"] == "DOWN" and nets["n1"]["gateway"] == "10.0.0.1"
    assert [p["id"] for p in nets["n1"]["ports"]] == ["p1"]  # a network update keeps its ports
    assert nets["n1"]["subnets"][0]["cidr"] == "10.0.0.0/24"
    ok(bsn.controller("DELETE", "tenants/t1/networks/n1"))
    assert [n["id"] for n in bsn.state()["networks"]] == ["n2"]
    error(bsn.controller("DELETE", "tenants/t1/networks/n1"), 404, "NXVNS")
    error(bsn.controller("DELETE", "tenants/other/networks/n2"), 404, "NXVNS")  # networks are per tenant


def test_ports_attachments_and_nxvns(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    ok(bsn.controller("POST", "tenants/t1/networks/n1/ports", {"port": port("p1", device="vm1")}))
    ok(bsn.controller("PUT", "tenants/t1/networks/n1/ports/p1/attachment", {"attachment": {"id": "vm1", "mac": mac(1).upper()}}))
    ok(bsn.controller("PUT", "tenants/t1/networks/n1/ports/p1", {"port": port("p1", device="vm1", ip="10.0.0.9")}))
    (p1,) = bsn.state()["networks"][0]["ports"]
    assert p1["attachment"] == {"id": "vm1", "mac": mac(1)}  # kept across a port update; MAC normalised
    assert p1["fixed_ips"] == [{"subnet_id": "n1-s1", "ip_address": "10.0.0.9"}]
    ok(bsn.controller("DELETE", "tenants/t1/networks/n1/ports/p1/attachment"))
    error(bsn.controller("DELETE", "tenants/t1/networks/n1/ports/p1/attachment"), 404, "attachment")
    error(bsn.controller("PUT", "tenants/t1/networks/n1/ports/nope/attachment", {"attachment": {"id": "vm", "mac": mac(2)}}), 404, "port")
    ok(bsn.controller("DELETE", "tenants/t1/networks/n1/ports/p1"))
    error(bsn.controller("DELETE", "tenants/t1/networks/n1/ports/p1"), 404, "port p1")
    # A network the controller does not know: 404 NXVNS, whatever the port call.
    for method, path, body in [
        ("POST", "tenants/t1/networks/nx/ports", {"port": port("p2", "nx")}),
        ("PUT", "tenants/t1/networks/nx/ports/p2", {"port": port("p2", "nx")}),
        ("PUT", "tenants/t1/networks/nx/ports/p2/attachment", {"attachment": {"id": "vm", "mac": mac(2)}}),
        ("DELETE", "tenants/t1/networks/nx/ports/p2", None),
        ("POST", "tenants/t2/networks/n1/ports", {"port": port("p2", "n1", tenant="t2")}),  # the port's tenant, not the network's
    ]:
        error(bsn.controller(method, path, body), 404, "NXVNS")


def test_icehouse_attachment_creates_and_replaces_the_port(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    body = {"port": port("p9", device="vm9", i=9), "attachment": {"id": "vm9", "mac": mac(9)}}
    ok(bsn.controller("PUT", "tenants/t1/networks/n1/ports/p9/attachment", body))
    (p9,) = bsn.state()["networks"][0]["ports"]
    assert p9["id"] == "p9" and p9["device_id"] == "vm9" and p9["attachment"] == {"id": "vm9", "mac": mac(9)}
    body["port"]["name"] = "renamed"
    ok(bsn.controller("PUT", "tenants/t1/networks/n1/ports/p9/attachment", body))
    assert bsn.state()["networks"][0]["ports"][0]["name"] == "renamed"


def test_routers_interfaces_and_floatingips(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    ok(bsn.controller("POST", "tenants/t1/routers", {"router": router("r1")}))
    ok(bsn.controller("PUT", "tenants/t1/routers/r1", {"router": router("r1", name="renamed", gw_net="ext")}))
    ok(bsn.controller("POST", "tenants/t1/routers/r1/interfaces", {"interface": interface("n1")}))
    error(bsn.controller("POST", "tenants/t1/routers/r9/interfaces", {"interface": interface("n1")}), 404, "router r9")
    (r1,) = bsn.state()["routers"]
    assert r1["name"] == "renamed" and r1["external_gateway_info"] == {"network_id": "ext"}
    assert r1["interfaces"] == [{"id": "n1", "subnet_id": "n1-s1", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"}]
    ok(bsn.controller("DELETE", "tenants/t1/routers/r1/interfaces/n1"))
    error(bsn.controller("DELETE", "tenants/t1/routers/r1/interfaces/n1"), 404, "interface")
    ok(bsn.controller("DELETE", "tenants/t1/routers/r1"))
    error(bsn.controller("DELETE", "tenants/t1/routers/r1"), 404, "router")
    assert bsn.state()["routers"] == []

    ok(bsn.controller("PUT", "tenants/t1/networks/ext", {"network": network("ext", cidr="172.24.4.0/24", **{"router:external": True})}))
    ok(bsn.controller("PUT", "tenants/t1/floatingips/f1", {"floatingip": floatingip("f1")}))
    ok(bsn.controller("PUT", "tenants/t1/floatingips/f1", {"floatingip": floatingip("f1", port_id="p1")}))
    assert [(f["id"], f["port_id"]) for f in bsn.state()["floatingips"]] == [("f1", "p1")]
    # Without the capability the plugin sends them inside the network: that list replaces them.
    ext = network("ext", cidr="172.24.4.0/24", floatingips=[floatingip("f2", address="172.24.4.11")])
    ok(bsn.controller("PUT", "tenants/t1/networks/ext", {"network": ext}))
    assert [f["id"] for f in bsn.state()["floatingips"]] == ["f2"]
    ok(bsn.controller("DELETE", "tenants/t1/floatingips/f2"))
    error(bsn.controller("DELETE", "tenants/t1/floatingips/f2"), 404, "floating IP")
    error(bsn.controller("PUT", "tenants/t1/floatingips/f3", None), 400, "JSON request body is required")


BAD_BODIES = [
    ("POST", "tenants/t1/networks", {"net": network()}, "no 'network' key"),
    ("POST", "tenants/t1/networks", [network()], "must be a JSON object"),
    ("POST", "tenants/t1/networks", {"network": {k: v for k, v in network().items() if k != "id"}}, "network.id: missing"),
    ("PUT", "tenants/t1/networks/n1", {"network": network("n2")}, "network.id: 'n2' does not match 'n1'"),
    ("POST", "tenants/t1/networks", {"network": network(tenant="t2")}, "network.tenant_id: 't2' does not match 't1'"),
    ("POST", "tenants/t1/networks", {"network": network(state="ACTIVE")}, "network.state: must be"),
    ("POST", "tenants/t1/networks", {"network": {k: v for k, v in network().items() if k != "state"}}, "network.state: missing"),
    ("POST", "tenants/t1/networks", {"network": network(subnets={"id": "s"})}, "network.subnets: must be a list"),
    ("POST", "tenants/t1/networks", {"network": network(name=7)}, "network.name: must be a string"),
    ("POST", "tenants/t1/networks", {"network": network(gateway="10.0.0.999")}, "network.gateway: '10.0.0.999' is not an IP"),
    ("POST", "tenants/t1/networks", {"network": network(**{"router:external": "yes"})}, "network.router:external: must be a boolean"),
    (
        "POST",
        "tenants/t1/networks/n1/ports",
        {"port": {**port("p1"), "mac_address": "fa:16:3e:zz:00:01"}},
        "port.mac_address: 'fa:16:3e:zz",
    ),
    (
        "POST",
        "tenants/t1/networks/n1/ports",
        {"port": {k: v for k, v in port("p1").items() if k != "mac_address"}},
        "port.mac_address: missing",
    ),
    ("POST", "tenants/t1/networks/n1/ports", {"port": port("p1", nid="n9")}, "port.network_id: 'n9' does not match 'n1'"),
    ("PUT", "tenants/t1/networks/n1/ports/p2", {"port": port("p1")}, "port.id: 'p1' does not match 'p2'"),
    ("POST", "tenants/t1/networks/n1/ports", {"port": {**port("p1"), "fixed_ips": "10.0.0.5"}}, "port.fixed_ips: must be a list"),
    ("PUT", "tenants/t1/networks/n1/ports/p1/attachment", {"attachment": {"id": "vm1"}}, "attachment.mac: missing"),
    ("PUT", "tenants/t1/networks/n1/ports/p1/attachment", {"attachment": {"mac": mac(1)}}, "attachment.id: missing"),
    ("PUT", "tenants/t1/networks/n1/ports/p1/attachment", {"attachment": {"id": "vm1", "mac": "nope"}}, "'nope' is not a MAC"),
    ("POST", "tenants/t1/routers", {"router": {**router(), "state": True}}, "router.state: must be"),
    (
        "POST",
        "tenants/t1/routers/r1/interfaces",
        {"interface": {**interface(), "id": "n2"}},
        "interface.network.id: 'n1' does not match 'n2'",
    ),
    ("PUT", "tenants/t1/floatingips/f1", {"floatingip": floatingip("f2")}, "floatingip.id: 'f2' does not match 'f1'"),
    ("PUT", "topology", {"routers": []}, "no 'networks' key"),
    ("PUT", "topology", {"networks": [network(ports=[{**port("p1"), "mac_address": "bad"}])]}, "networks[0].ports[0].mac_address"),
    ("PUT", "topology", {"networks": [{k: v for k, v in network().items() if k != "tenant_id"}]}, "networks[0].tenant_id: missing"),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), BAD_BODIES, ids=[f"{i:02d}" for i in range(len(BAD_BODIES))])
def test_bad_bodies_are_400_naming_the_problem(bsn: SimProcess, method: str, path: str, body: Any, message: str) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    ok(bsn.controller("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}))
    ok(bsn.controller("POST", "tenants/t1/routers", {"router": router("r1")}))
    before = bsn.state()
    error(bsn.controller(method, path, body), 400, message)
    assert bsn.state() == before


def test_malformed_requests(bsn: SimProcess) -> None:
    error(bsn.controller("POST", "tenants/t1/networks", raw=b'{"network": {'), 400, "not valid JSON")
    error(bsn.controller("POST", "tenants/t1/networks"), 400, "body is required")
    status, body = bsn.controller(
        "POST", "tenants/t1/networks", raw=json.dumps({"network": network()}).encode(), headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and "application/json" in body["error"]
    error(bsn.controller("GET", "tenants/t1/networks"), 405, "not allowed")
    error(bsn.controller("GET", "tenants/t1/switches"), 404, "no such resource")
    error(bsn.request("GET", "/quantum/v1.0/health"), 404, "no such resource")
    assert bsn.state()["counts"]["networks"] == 0


def test_topology_replaces_everything_and_is_counted(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("old")}))
    ok(bsn.controller("POST", "tenants/t1/routers", {"router": router("rold")}))
    topo = {
        "networks": [
            network("n1", ports=[{**port("p1", device="vm1"), "attachment": {"id": "vm1", "mac": mac(1)}}], floatingips=[]),
            network("ext", tenant="admin", cidr="172.24.4.0/24", floatingips=[floatingip("f1")], ports=[]),
            network("n2", tenant="t2", ports=[{**port("p2", "n2", i=2, tenant="t2"), "attachment": {"id": "", "mac": mac(2)}}]),
        ],
        "routers": [{**router("r1"), "interfaces": [interface("n1")]}],
        "triggered_by_tenant": None,
    }
    ok(bsn.controller("PUT", "topology", topo))
    state = bsn.state()
    assert [(n["tenant_id"], n["id"]) for n in state["networks"]] == [("admin", "ext"), ("t1", "n1"), ("t2", "n2")]
    assert state["counts"] == {
        "networks": 3,
        "ports": 2,
        "attachments": 1,
        "routers": 1,
        "interfaces": 1,
        "floatingips": 1,
        "security_groups": 0,
    }
    assert [r["id"] for r in state["routers"]] == ["r1"]
    ports = {p["id"]: p for n in state["networks"] for p in n["ports"]}
    assert ports["p1"]["attachment"] == {"id": "vm1", "mac": mac(1)}
    assert ports["p2"]["attachment"] is None  # a topology attachment with an empty device id
    stats = bsn.stats()
    assert stats["topology_puts"] == 1 and stats["topology_puts_applied"] == 1
    assert stats["last_topology"]["ports"] == 2
    error(bsn.controller("PUT", "topology", {"networks": [network("x", ports=[{"id": "bad"}])]}), 400, "networks[0].ports[0]")
    assert bsn.state() == state  # a refused topology changes nothing
    assert bsn.stats()["topology_puts"] == 2 and bsn.stats()["topology_puts_applied"] == 1
    ok(bsn.controller("PUT", "topology", {"networks": [], "routers": []}))
    assert bsn.state()["counts"]["networks"] == 0


def test_state_snapshot_does_not_depend_on_the_path_taken(bsn: SimProcess) -> None:
    nets = [network("n1"), network("n2", cidr="10.2.0.0/24")]
    ports = [port("p1", device="vm1"), port("p2", device="vm2", i=2, ip="10.0.0.6"), port("p3", "n2", i=3, ip="10.2.0.5")]
    for net in reversed(nets):
        ok(bsn.controller("POST", "tenants/t1/networks", {"network": net}))
    for p in ports:
        ok(bsn.controller("POST", f"tenants/t1/networks/{p['network_id']}/ports", {"port": p}))
        if p["device_id"]:
            ok(
                bsn.controller(
                    "PUT",
                    f"tenants/t1/networks/{p['network_id']}/ports/{p['id']}/attachment",
                    {"attachment": {"id": p["device_id"], "mac": p["mac_address"]}},
                )
            )
    ok(bsn.controller("POST", "tenants/t1/routers", {"router": router("r1")}))
    ok(bsn.controller("POST", "tenants/t1/routers/r1/interfaces", {"interface": interface("n1")}))
    incremental = bsn.state()
    text = json.dumps(incremental, sort_keys=True)
    assert json.dumps(bsn.state(), sort_keys=True) == text  # deterministic

    topo_nets = []
    for net in nets:
        net_ports = [
            {**p, "attachment": {"id": p["device_id"], "mac": p["mac_address"]}} for p in reversed(ports) if p["network_id"] == net["id"]
        ]
        topo_nets.append({**net, "ports": net_ports, "floatingips": []})
    bsn.forget()
    ok(bsn.controller("PUT", "topology", {"networks": topo_nets[::-1], "routers": [{**router("r1"), "interfaces": [interface("n1")]}]}))
    assert bsn.state() == incremental


def test_forget_conflict_until_topology(bsn: SimProcess) -> None:
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    assert bsn.forget("conflict") == {"status": "ok", "needs_sync": True}
    assert bsn.state()["counts"]["networks"] == 0
    assert bsn.controller("GET", "health") == (409, {"status": "unsynchronized", "error": "requires synchronization"})
    assert bsn.controller("GET", "capabilities") == (200, DEFAULT_CAPS)
    for method, path, body in [
        ("POST", "tenants/t1/networks", {"network": network("n1")}),
        ("PUT", "tenants/t1/networks/n1", {"network": network("n1")}),
        ("DELETE", "tenants/t1/networks/n1", None),
        ("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}),
        ("DELETE", "tenants/t1/networks/n1/ports/p1/attachment", None),
        ("POST", "tenants/t1/routers", {"router": router()}),
        ("PUT", "tenants/t1/floatingips/f1", {"floatingip": floatingip("f1")}),
        ("PUT", "tenants/t1/floatingips/f1", {"nonsense": True}),  # refused before the body is read
    ]:
        assert bsn.controller(method, path, body) == (409, {"error": "requires synchronization"}), (method, path)
    ok(bsn.controller("PUT", "topology", {"networks": [network("n1", ports=[])], "routers": []}))
    ok(bsn.controller("GET", "health"))
    ok(bsn.controller("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}))
    assert bsn.state()["needs_sync"] is False


def test_forget_silent_loses_state_without_saying_so(bsn: SimProcess) -> None:
    bsn.admin("PUT", "/_sim/config", {"forget_mode": "silent"})
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
    assert bsn.forget() == {"status": "ok", "needs_sync": False}
    ok(bsn.controller("GET", "health"))
    error(bsn.controller("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}), 404, "NXVNS")
    assert bsn.stats()["forgets"] == 1


def test_restart_keeps_the_port_and_comes_back_forgotten() -> None:
    with SimProcess() as proc:
        ok(proc.controller("POST", "tenants/t1/networks", {"network": network("n1")}))
        port_before = proc.port
        proc.restart()
        assert proc.port == port_before
        assert proc.controller("GET", "health")[0] == 409
        assert proc.state()["counts"]["networks"] == 0
        proc.kill()
        assert not proc.running
        with pytest.raises(OSError):
            proc.controller("GET", "health", timeout=2)
        proc.restart(forgotten=False)
        ok(proc.controller("GET", "health"))


# -- the request log and stats ------------------------------------------------------------------


def test_request_log_keeps_the_last_1000(bsn: SimProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", bsn.port, timeout=10)
    try:
        for i in range(1005):
            conn.request("GET", f"{BASE_PATH}/health", headers={"X-Seq": str(i)})
            assert conn.getresponse().read() == b'{"status": "ok"}'
        conn.request(
            "PUT",
            f"{BASE_PATH}/tenants/t1/networks/n1",
            body=json.dumps({"network": network()}),
            headers={"Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    log = bsn.requests(bodies=True)
    assert len(log) == 1000
    assert log[0]["headers"]["x-seq"] == "6" and log[-2]["headers"]["x-seq"] == "1004"
    last = log[-1]
    assert (last["method"], last["path"], last["status"]) == ("PUT", f"{BASE_PATH}/tenants/t1/networks/n1", 200)
    assert last["body_length"] == len(json.dumps({"network": network()})) and last["body"] == {"network": network()}
    assert last["headers"]["content-type"] == "application/json"
    assert [e["seq"] for e in bsn.requests(since=last["seq"] - 2)] == [last["seq"] - 1, last["seq"]]
    stats = bsn.stats()
    assert stats["requests"] == 1006 and stats["requests_by_method"] == {"GET": 1005, "PUT": 1}
    assert stats["responses_by_status"] == {"200": 1006}
    bsn.admin("DELETE", "/_sim/requests")
    assert bsn.requests() == []


# -- faults -------------------------------------------------------------------------------------


def test_latency_fault_and_global_latency(bsn: SimProcess) -> None:
    fast, _ = timed(bsn.controller, "GET", "health")
    bsn.fault(latency_ms=500, path_regex="/health$")
    slow, result = timed(bsn.controller, "GET", "health")
    ok(result)
    assert 0.5 <= slow < 3.0 and fast < 0.4
    other, _ = timed(bsn.controller, "GET", "capabilities")
    assert other < 0.4
    admin_time, _ = timed(bsn.admin, "GET", "/_sim/stats")  # never delayed
    assert admin_time < 0.4
    assert bsn.requests()[-2]["duration_ms"] >= 500
    bsn.clear_faults()
    bsn.admin("PUT", "/_sim/config", {"latency_ms": 250})  # like --latency-ms: every controller request
    slow, _ = timed(bsn.controller, "GET", "capabilities")
    assert 0.25 <= slow < 3.0
    assert bsn.stats()["faults_injected"] == {"latency": 1}


def test_status_fault_for_the_next_n_matching_requests(bsn: SimProcess) -> None:
    rule = bsn.fault(status=500, count=2, methods=["post"], path_regex=r"/networks$")
    assert rule["action"] == "status" and rule["count"] == 2
    ok(bsn.controller("GET", "health"))  # not a POST
    for _ in range(2):
        assert bsn.controller("POST", "tenants/t1/networks", {"network": network()}) == (500, {"error": "injected fault: HTTP 500"})
    assert bsn.state()["counts"]["networks"] == 0  # a faulted request is not handled
    ok(bsn.controller("POST", "tenants/t1/networks", {"network": network()}))
    assert bsn.admin("GET", "/_sim/faults") == {"faults": []}  # used up
    bsn.fault(status=502, headers={"Retry-After": "1"}, body={"upstream": "gone"})
    conn = http.client.HTTPConnection("127.0.0.1", bsn.port, timeout=5)
    conn.request("GET", f"{BASE_PATH}/health")
    response = conn.getresponse()
    assert (response.status, json.loads(response.read()), response.getheader("Retry-After")) == (502, {"upstream": "gone"}, "1")
    conn.close()
    stats = bsn.stats()
    assert stats["faults_injected"]["status"] == 3 and stats["faults_active"] == 1
    assert [e["fault"] for e in bsn.requests()] == [None, "status", "status", None, "status"]


def test_fraction_fault_is_reproducible_with_a_seed(bsn: SimProcess) -> None:
    bsn.fault(status=503, fraction=0.5, seed=42)
    statuses = [bsn.controller("GET", "health")[0] for _ in range(40)]
    rng = random.Random(42)
    expected = [503 if rng.random() < 0.5 else 200 for _ in range(40)]
    assert statuses == expected
    assert 8 <= statuses.count(503) <= 32


def test_drop_fault_closes_the_connection(bsn: SimProcess) -> None:
    bsn.fault(action="drop", count=1)
    with pytest.raises(OSError) as e:
        bsn.controller("GET", "health")
    assert isinstance(e.value, ConnectionError) or isinstance(getattr(e.value, "reason", None), ConnectionError), repr(e.value)
    assert not isinstance(e.value, urllib.error.HTTPError)
    ok(bsn.controller("GET", "health"))
    first, second = bsn.requests()
    assert (first["status"], first["fault"]) == (None, "drop") and second["status"] == 200
    assert bsn.stats()["dropped"] == 1


def test_hang_fault_until_the_client_gives_up_or_faults_are_cleared(bsn: SimProcess) -> None:
    bsn.fault(action="hang", path_regex="/networks")
    waited, _ = timed(
        lambda: pytest.raises(TimeoutError, bsn.controller, "POST", "tenants/t1/networks", {"network": network("n1")}, timeout=0.5)
    )
    assert 0.5 <= waited < 2
    ok(bsn.controller("GET", "health"))  # other paths still answer
    deadline = time.monotonic() + 5
    while bsn.stats()["hung_now"] and time.monotonic() < deadline:  # the server notices the client left
        time.sleep(0.05)
    assert bsn.stats()["hung_now"] == 0 and bsn.state()["counts"]["networks"] == 0  # given up: never handled

    results: list[tuple[int, Any]] = []
    worker = threading.Thread(
        target=lambda: results.append(bsn.controller("POST", "tenants/t1/networks", {"network": network("n2")}, timeout=10))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while bsn.stats()["hung_now"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bsn.stats()["hung_now"] == 1 and not results
    assert bsn.admin("DELETE", "/_sim/faults") == {"cleared": 1}
    worker.join(5)
    assert results == [(200, {"status": "ok"})]  # released: handled normally
    assert [n["id"] for n in bsn.state()["networks"]] == ["n2"]
    assert [e["fault"] for e in bsn.requests() if e["method"] == "POST"] == ["hang", "hang"]


def test_fault_rules_are_checked_listed_and_removed(bsn: SimProcess) -> None:
    for bad, fragment in [
        ({}, "action must be one of"),
        ({"status": 99}, "status must be"),
        ({"action": "status"}, "needs a status"),
        ({"action": "drop", "status": 500}, "goes with action 'status'"),
        ({"status": 500, "fraction": 2}, "fraction"),
        ({"status": 500, "count": 0}, "count"),
        ({"status": 500, "path_regex": "("}, "path_regex"),
        ({"status": 500, "colour": "red"}, "unknown fault fields: colour"),
    ]:
        with pytest.raises(SimAdminError) as e:
            bsn.admin("POST", "/_sim/faults", bad)
        assert e.value.status == 400 and fragment in e.value.body["error"], (bad, e.value.body)
    a = bsn.fault(status=500, path_regex="/capabilities")
    b = bsn.fault(latency_ms=10)
    assert [f["id"] for f in bsn.admin("GET", "/_sim/faults")["faults"]] == [a["id"], b["id"]]
    assert bsn.admin("DELETE", f"/_sim/faults/{a['id']}") == {"removed": a["id"]}
    with pytest.raises(SimAdminError) as e:
        bsn.admin("DELETE", f"/_sim/faults/{a['id']}")
    assert e.value.status == 404
    assert bsn.controller("GET", "capabilities")[0] == 200


# -- authentication and TLS -----------------------------------------------------------------------


def test_basic_auth_and_capabilities_option() -> None:
    with SimProcess("--auth", "username:pass", "--capabilities", "floatingip,display-name") as proc:
        exact = {"Authorization": "Basic dXNlcm5hbWU6cGFzcw=="}
        assert proc.controller("GET", "capabilities", headers=exact) == (200, ["floatingip", "display-name"])
        ok(proc.controller("PUT", "tenants/t1/networks/n1", {"network": network()}, headers=exact))
        status, body = proc.controller("GET", "health")
        assert status == 401 and body == {"error": "authentication required"}
        for wrong in ("Basic dXNlcm5hbWU6cGFzcz==", "Basic " + "dXNlcm5hbWU6cGFzcw==".lower(), "Bearer dXNlcm5hbWU6cGFzcw==", ""):
            assert proc.controller("GET", "health", headers={"Authorization": wrong})[0] == 401, wrong
        assert proc.controller("GET", "health", auth=("username", "wrong"))[0] == 401
        ok(proc.controller("GET", "health", auth=("username", "pass")))
        assert proc.state()["counts"]["networks"] == 1  # /_sim/ needs no authentication
        logged = [e["headers"].get("authorization") for e in proc.requests()]
        assert logged[:2] == ["Basic dXNlcm5hbWU6cGFzcw=="] * 2
        assert [e["status"] for e in proc.requests()][2] == 401


def _write_test_pki(directory: str) -> tuple[str, str, str]:
    """A self-signed CA and a server certificate for 127.0.0.1 it signed: (ca, key, cert) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "controller-sim test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = [os.path.join(directory, name) for name in ("ca.pem", "key.pem", "cert.pem")]
    with open(paths[0], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(paths[2], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return paths[0], paths[1], paths[2]


def test_tls_with_a_test_ca() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca, key, cert = _write_test_pki(tmp)
        with SimProcess(auth=("username", "pass"), tls_key=key, tls_cert=cert, cafile=ca) as proc:
            assert proc.url == f"https://{proc.address}" and proc.address == f"127.0.0.1:{proc.port}"
            ok(proc.controller("GET", "health", auth=("username", "pass")))  # verifies the chain and the IP
            assert proc.controller("GET", "health")[0] == 401
            # http.client as the plugin's pool would use it, trusting the CA only.
            conn = http.client.HTTPSConnection("127.0.0.1", proc.port, context=ssl.create_default_context(cafile=ca), timeout=5)
            conn.request("GET", f"{BASE_PATH}/capabilities", headers={"Authorization": "Basic dXNlcm5hbWU6cGFzcw=="})
            assert json.loads(conn.getresponse().read()) == DEFAULT_CAPS
            conn.close()
            # A client that does not trust the test CA refuses the server.
            untrusting = http.client.HTTPSConnection("127.0.0.1", proc.port, context=ssl.create_default_context(), timeout=5)
            with pytest.raises(ssl.SSLCertVerificationError):
                untrusting.request("GET", f"{BASE_PATH}/health")
            untrusting.close()
            # Plain HTTP on the TLS port gets no answer.
            with pytest.raises((OSError, http.client.HTTPException)):
                plain = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=2)
                plain.request("GET", f"{BASE_PATH}/health")
                plain.getresponse().read()


# -- Floodlight v0.91 ---------------------------------------------------------------------------


def fl_list(sim: SimProcess, tenant: str = "demo") -> list[dict[str, Any]]:
    status, body = sim.controller("GET", f"tenants/{tenant}/networks")
    assert status == 200
    return sorted(body, key=lambda n: n["guid"])


def test_floodlight_transcript(floodlight: SimProcess) -> None:
    """floodlight-api-facts.md §5a/§5b, request by request."""
    fl = floodlight
    assert fl.controller("GET", "tenants/tenant1/networks") == (200, [])
    ok(fl.controller("PUT", "tenants/tenant1/networks/net1", {"network": {"gateway": "10.0.0.1", "name": "net1"}}))
    ok(fl.controller("POST", "tenants/tenant1/networks", {"network": {"id": "net3", "name": "net3", "gateway": "10.3.0.1"}}))
    assert fl_list(fl) == [
        {"name": "net1", "guid": "net1", "gateway": "10.0.0.1", "portMac": []},
        {"name": "net3", "guid": "net3", "gateway": "10.3.0.1", "portMac": []},
    ]
    assert fl_list(fl, "otherTenant") == fl_list(fl)  # tenants are ignored
    assert sorted(fl.controller("GET", "tenants/x/networks/net1")[1], key=lambda n: n["guid"]) == fl_list(fl)  # the whole list
    ok(fl.controller("PUT", "tenants/tenant1/networks/net1", {"network": {"gateway": "10.0.0.254", "name": "net1-renamed"}}))
    ok(
        fl.controller(
            "PUT", "tenants/tenant1/networks/net1/ports/port1/attachment", {"attachment": {"id": "vif-1", "mac": "fa:16:3e:00:00:01"}}
        )
    )
    ok(
        fl.controller(
            "PUT", "tenants/tenant1/networks/net1/ports/port2/attachment", {"attachment": {"id": "vif-2", "mac": "fa:16:3e:00:00:02"}}
        )
    )
    net1 = fl_list(fl)[0]
    assert net1 == {
        "name": "net1-renamed",
        "guid": "net1",
        "gateway": "10.0.0.254",
        "portMac": [{"port": "port1", "mac": "FA:16:3E:00:00:01"}, {"port": "port2", "mac": "FA:16:3E:00:00:02"}],
    }
    status, body = fl.request("DELETE", f"{BASE_PATH}/tenants/tenant1/networks/net1/ports/port1/attachment")
    assert (status, body) == (200, {"status": "ok"})
    assert fl_list(fl)[0]["portMac"] == [{"port": "port2", "mac": "FA:16:3E:00:00:02"}]
    ok(fl.controller("DELETE", "tenants/tenant1/networks/net3/ports/nope/attachment"))  # E7
    ok(fl.controller("DELETE", "tenants/tenant1/networks/net1"))
    assert [n["guid"] for n in fl_list(fl)] == ["net3"]
    status, body = fl.controller("DELETE", "tenants/tenant1/networks/doesnotexist")  # E1: an NPE while others exist
    assert status == 500 and body["code"] == 500 and body["throwable"]["class"] == "java.lang.NullPointerException"
    ok(fl.controller("DELETE", "tenants/tenant1/networks/net3"))
    ok(fl.controller("DELETE", "tenants/tenant1/networks/net3"))  # no networks at all: 200
    assert fl_list(fl) == []
    state = fl.state()
    assert state["profile"] == "floodlight" and state["hosts"] == []


def test_floodlight_noops_and_other_paths(floodlight: SimProcess) -> None:
    fl = floodlight
    topo = {"networks": [network("n1", ports=[port("p1")])], "routers": [router()]}
    for method, path, body in [
        ("PUT", "topology", topo),
        ("POST", "tenants/t1/networks/n1/ports", {"port": port("p1")}),
        ("PUT", "tenants/t1/networks/n1/ports/p1", {"port": port("p1")}),
        ("DELETE", "tenants/t1/networks/n1/ports/p1", None),
        ("POST", "tenants/t1/routers", {"router": router()}),
        ("DELETE", "tenants/t1/routers/r1/interfaces/n1", None),
        ("GET", "capabilities", None),
        ("GET", "health", None),
        ("GET", "", None),
    ]:
        ok(fl.controller(method, path, body))
    assert fl.state()["networks"] == [] and fl.stats()["topology_puts"] >= 1
    status, body = fl.request("GET", "/quantum/v1.0/tenants/t1/networks")
    assert status == 404 and body["code"] == 404
    status, body = fl.request("GET", "/wm/core/controller/summary/json")
    assert status == 200 and body["# Switches"] == 0


def test_floodlight_attachment_errors_and_unknown_networks(floodlight: SimProcess) -> None:
    fl = floodlight
    ok(fl.controller("PUT", "tenants/t/networks/net1", {"network": {"name": "net1"}}))
    for att in ({"id": "vif", "mac": "not-a-mac"}, {"id": "vif"}, {"id": "vif", "mac": None}):  # E3, E4
        status, body = fl.controller("PUT", "tenants/t/networks/net1/ports/p/attachment", {"attachment": att})
        assert status == 500 and body["reasonPhrase"] == "Internal Server Error", att
    # E2: an unknown network is accepted, and the MAC is mapped anyway (but listed nowhere).
    ok(fl.controller("PUT", "tenants/t/networks/nonet/ports/p9/attachment", {"attachment": {"id": "vif-9", "mac": "fa:16:3e:00:00:09"}}))
    assert fl_list(fl)[0]["portMac"] == []
    assert fl.state()["hosts"] == [{"mac": "FA:16:3E:00:00:09", "network": "nonet", "port": "p9"}]
    # The Icehouse body (port first) never reaches "attachment": no MAC, NPE.
    icehouse = {"port": port("p1"), "attachment": {"id": "vm1", "mac": mac(1)}}
    assert fl.controller("PUT", "tenants/t/networks/net1/ports/p1/attachment", icehouse)[0] == 500


def test_floodlight_bad_bodies_e5_e6(floodlight: SimProcess) -> None:
    fl = floodlight
    errors_before = fl.stats()["json_parse_errors"]
    ok(fl.controller("PUT", "tenants/t/networks/net5", {"network": {"name": "net5", "gateway": "999.1.1.1"}}))  # E6
    ok(fl.controller("PUT", "tenants/t/networks/net4", raw=b"{not json"))  # E5
    assert fl_list(fl) == [
        {"name": None, "guid": "net4", "gateway": None, "portMac": []},
        {"name": "net5", "guid": "net5", "gateway": None, "portMac": []},
    ]
    assert fl.controller("DELETE", "tenants/t/networks/net4")[0] == 500  # a null-named network cannot be deleted
    assert fl.stats()["json_parse_errors"] == errors_before + 1
    # Read from the source, not the facts: without an id anywhere, createNetwork(null, ...) throws.
    assert fl.controller("POST", "tenants/t/networks", {"network": {"name": "no-id"}})[0] == 500
    assert len(fl_list(fl)) == 2


def test_floodlight_nested_id_quirk(floodlight: SimProcess) -> None:
    """§6: the token parser takes the first nested "id" as the network id, and stops there."""
    fl = floodlight
    # §5b row 3: the plugin's full body; stored under the subnet's id.
    body = {
        "network": {
            "id": "net2",
            "name": "net2",
            "tenant_id": "tenant1",
            "admin_state_up": True,
            "status": "ACTIVE",
            "shared": False,
            "router:external": False,
            "subnets": [{"id": "sub1", "cidr": "10.2.0.0/24", "gateway_ip": "10.2.0.1"}],
            "gateway": "10.2.0.1",
        }
    }
    ok(fl.controller("POST", "tenants/tenant1/networks", body))
    assert fl_list(fl) == [{"name": "net2", "guid": "sub1", "gateway": None, "portMac": []}]  # gateway after the stop: lost
    status, _ = fl.controller("DELETE", "tenants/tenant1/networks/net2")  # row 15
    assert status == 500
    fl.forget()
    # A correct Floodlight body (no nested objects) is stored as meant.
    ok(
        fl.controller(
            "PUT", "tenants/t/networks/n-empty", {"network": {"id": "n-empty", "name": "n-empty", "gateway": "10.9.0.1", "subnets": []}}
        )
    )
    assert fl_list(fl) == [{"name": "n-empty", "guid": "n-empty", "gateway": "10.9.0.1", "portMac": []}]
    # A later update with a non-empty subnet list creates a second network named after the first.
    update = {"network": {"id": "n-empty", "name": "n-empty", "subnets": [{"id": "sub-A", "cidr": "10.9.0.0/24"}]}}
    ok(fl.controller("PUT", "tenants/t/networks/n-empty", update))
    assert [(n["guid"], n["name"]) for n in fl_list(fl)] == [("n-empty", "n-empty"), ("sub-A", "n-empty")]
    # Subnets before id and name: the network becomes the subnet, without a name.
    ok(
        fl.controller(
            "PUT",
            "tenants/t/networks/n-b",
            raw=b'{"network": {"subnets": [{"id": "sub-B", "cidr": "10.8.0.0/24"}], "id": "n-b", "name": "n-b"}}',
        )
    )
    assert ("sub-B", None) in [(n["guid"], n["name"]) for n in fl_list(fl)]
    assert "n-b" not in [n["guid"] for n in fl_list(fl)]
    # A full Big Switch body with a named subnet: its name wins too.
    errors_before = fl.stats()["json_parse_errors"]
    fl.forget()
    ok(fl.controller("PUT", "tenants/t1/networks/n1", {"network": network("n1", name="web")}))
    assert [(n["guid"], n["name"]) for n in fl_list(fl)] == [("n1-s1", "")]
    assert fl.stats()["json_parse_errors"] == errors_before + 1  # "Expected FIELD_NAME", only logged


def test_jackson_tokens_match_jacksons_view() -> None:
    jp = StreamingParser('{"a": [ {"id": 1.50}, null ], "b": {}} trailing garbage')
    seen = [(jp.next_token(), jp.get_text(), jp.current_name()) for _ in range(13)]
    assert seen == [
        (Token.START_OBJECT, "{", None),
        (Token.FIELD_NAME, "a", "a"),
        (Token.START_ARRAY, "[", "a"),
        (Token.START_OBJECT, "{", None),
        (Token.FIELD_NAME, "id", "id"),
        (Token.VALUE_NUMBER_FLOAT, "1.50", "id"),
        (Token.END_OBJECT, "}", None),
        (Token.VALUE_NULL, "null", None),
        (Token.END_ARRAY, "]", "a"),
        (Token.FIELD_NAME, "b", "b"),
        (Token.START_OBJECT, "{", "b"),
        (Token.END_OBJECT, "}", "b"),
        (Token.END_OBJECT, "}", None),
    ]
    with pytest.raises(JsonParseError):  # Floodlight stops before this: the garbage is never read
        jp.next_token()
    for bad in ('{"a": 01}', '{"a": tru}', '{"a" 1}', "[1,]", '{"a": "x\n"}'):
        with pytest.raises(JsonParseError):
            p = StreamingParser(bad)
            while p.next_token() is not None:
                pass


# -- a big streamed topology ----------------------------------------------------------------------


def test_twenty_megabyte_chunked_topology(bsn: SimProcess) -> None:
    nets, per_net = 600, 100
    chunks = [b'{"networks": [']
    for n in range(nets):
        nid = f"net-{n:05d}"
        ports = [
            {**port(f"port-{n:05d}-{p:03d}", nid, i=n * per_net + p, device=f"vm-{n}-{p}", ip=f"10.{n // 250}.{n % 250}.{p + 2}"),
             "attachment": {"id": f"vm-{n}-{p}", "mac": mac(n * per_net + p)}, "binding:host_id": "compute-0001.example.org"}
            for p in range(per_net)
        ]  # fmt: skip
        net = network(nid, cidr=f"10.{n // 250}.{n % 250}.0/24", ports=ports, floatingips=[])
        chunks.append((b"," if n else b"") + json.dumps(net).encode())
    chunks.append(b'], "routers": []}')
    total = sum(len(c) for c in chunks)
    assert total >= 20 * 1024 * 1024

    def stream() -> Iterator[bytes]:
        yield from chunks  # many small writes, as a streaming serializer produces them

    conn = http.client.HTTPConnection("127.0.0.1", bsn.port, timeout=60)
    conn.request("PUT", f"{BASE_PATH}/topology", body=stream(), headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
    conn.close()
    stats = bsn.stats()
    assert stats["topology_puts"] == 1 and stats["last_topology"]["ports"] == nets * per_net
    assert stats["last_topology"]["bytes"] == total
    assert stats["last_topology"]["networks"] == nets and stats["last_topology"]["attachments"] == nets * per_net
    (entry,) = bsn.requests()
    assert entry["headers"]["transfer-encoding"] == "chunked" and "content-length" not in entry["headers"]
    assert entry["body_length"] == total
    summary = bsn.admin("GET", "/_sim/state?summary=1")
    n_ports = nets * per_net
    assert summary == {
        "profile": "bigswitch",
        "needs_sync": False,
        "counts": {
            "networks": nets,
            "ports": n_ports,
            "attachments": n_ports,
            "routers": 0,
            "interfaces": 0,
            "floatingips": 0,
            "security_groups": 0,
        },
    }


# -- entry points -------------------------------------------------------------------------------------


def test_bad_options_exit_with_usage_error() -> None:
    for args in (["--profile", "nox"], ["--forget-mode", "loud"], ["--auth", "nopassword"], ["--latency-ms", "x"]):
        proc = subprocess.run([sys.executable, "-m", "controller_sim", *args], capture_output=True, timeout=30)
        assert proc.returncode == 2, args
        assert b"error:" in proc.stderr


def test_twistd_plugin_runs_the_simulator() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        log = os.path.join(tmp, "twistd.log")
        sim_args = ["--port", f"tcp:{free}:interface=127.0.0.1", "--profile", "floodlight", "--latency-ms", "100"]
        args = [twistd, "-n", "--pidfile=", "--logfile", log, "restproxy-controller-sim", *sim_args]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        try:
            sim = SimProcess()
            sim.port = free
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert sim.admin("GET", "/_sim/stats", timeout=2)["profile"] == "floodlight"
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, open(log).read()
                    time.sleep(0.1)
            assert sim.admin("GET", "/_sim/config")["latency_ms"] == 100
            waited, result = timed(sim.controller, "GET", "tenants/t/networks")
            assert result == (200, []) and waited >= 0.1
            with open(log) as f:
                assert re.search(r"listening on tcp:\d+:interface=127.0.0.1 \(port \d+\)", f.read())
        finally:
            proc.terminate()
            proc.wait(15)
