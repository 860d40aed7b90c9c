"""Routers, interfaces, gateways and floating IPs mirrored to controller simulators.

What goes on the wire (paths and bodies of facts §2b-2c, floating IPs inside the
external network's PUT or on their own resources when the pool has the "floatingip"
capability); every L3 mutation refused by all controllers is a 500 RemoteRestError that
leaves the store as it was; a controller restarted empty gets routers and floating IPs
back in the topology sync; Floodlight gets none of them; and a few hundred concurrent
L3 operations under random faults end with the controller holding what the store holds
(``restproxy-manage check``, which compares routers, interfaces and floating IPs too).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.support import BACKENDS, ROOT, ServerProcess, temporary_database, wait_for

TENANT = "t-l3"
ADMIN_TENANT = "t-l3-admin"
BASE = "/networkService/v1.1"
API_PATHS = r"^/networkService/v1\.1/"
NO_CAPABILITIES = ""  # the simulator's --capabilities "": floating IPs go inside their network


@contextmanager
def stack(
    sims: int = 1, config: str = "", timeout: int = 2, backend: str = "sqlite", **sim_kwargs: Any
) -> Iterator[tuple[ServerProcess, list[SimProcess]]]:
    """``sims`` simulators and a server (on a new database of ``backend``) whose pool lists them in order."""
    with ExitStack() as stack_:
        started = []
        for _ in range(sims):
            sim = SimProcess(**sim_kwargs).start()
            stack_.callback(sim.stop)
            started.append(sim)
        db_url = stack_.enter_context(temporary_database(backend))
        servers = ",".join(s.address for s in started)
        text = f"[RESTPROXY]\nservers = {servers}\nserver_timeout = {timeout}\nserver_probe_interval = 0\n{config}"
        server = ServerProcess(db_url, config_text=text).start()
        stack_.callback(server.stop)
        yield server, started


def ok(server: ServerProcess, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
    got, reply = server.request(method, path, body)
    expected = status or {"POST": 201, "DELETE": 204}.get(method, 200)
    assert got == expected, (method, path, got, reply)
    return reply


def create(server: ServerProcess, kind: str, tenant: str = TENANT, **fields: Any) -> dict[str, Any]:
    return ok(server, "POST", f"/v2.0/{kind}s", {kind: dict({"tenant_id": tenant}, **fields)})[kind]


def check(server: ServerProcess, sim: SimProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    command = ["--sql-connection", server.db_url, "check", "--servers", sim.address, *extra]
    return subprocess.run([sys.executable, "-m", "server_plugin.manage", *command], capture_output=True, text=True, cwd=ROOT, timeout=120)


def wait_consistent(server: ServerProcess, sim: SimProcess, *extra: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = check(server, sim, *extra)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def admin_sync(server: ServerProcess) -> None:
    """``POST /admin/sync?wait=1`` (also cancels a sync retry waiting for its backoff)."""
    req = urllib.request.Request(server.url + "/admin/sync?wait=1", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        resp.read()


def mutations(sim: SimProcess, since: int = 0) -> list[dict[str, Any]]:
    return [r for r in sim.requests(since=since, bodies=True) if r["method"] != "GET" and r["path"].startswith(BASE)]


def last_seq(sim: SimProcess) -> int:
    entries = sim.requests()
    return entries[-1]["seq"] if entries else 0


def calls(sim: SimProcess, since: int) -> list[tuple[str, str]]:
    """(method, path below the base with the ids named) of the mutations since ``since``."""
    return [(r["method"], r["path"][len(BASE) :]) for r in mutations(sim, since)]


class Topo:
    """An external network, a tenant network and subnet, a router with its gateway and an interface, a VM port."""

    def __init__(self, server: ServerProcess, ext_cidr: str = "172.24.4.0/24", cidr: str = "10.1.0.0/24") -> None:
        self.server = server
        self.ext = create(server, "network", tenant=ADMIN_TENANT, name="public", **{"router:external": True})
        self.ext_subnet = create(server, "subnet", tenant=ADMIN_TENANT, network_id=self.ext["id"], ip_version=4, cidr=ext_cidr)
        self.net = create(server, "network", name="private")
        self.subnet = create(server, "subnet", network_id=self.net["id"], ip_version=4, cidr=cidr)
        self.router = create(server, "router", name="r1", external_gateway_info={"network_id": self.ext["id"]})
        self.iface = ok(server, "PUT", f"/v2.0/routers/{self.router['id']}/add_router_interface", {"subnet_id": self.subnet["id"]})
        self.vm = create(server, "port", network_id=self.net["id"], device_id="vm-1")


def everything(server: ServerProcess) -> dict[str, Any]:
    collections = ("networks", "subnets", "ports", "routers", "floatingips")
    return {c: sorted(ok(server, "GET", f"/v2.0/{c}")[c], key=lambda x: x["id"]) for c in collections}


# -- what goes on the wire -------------------------------------------------------------------------


@pytest.mark.parametrize("capabilities", ["floatingip", NO_CAPABILITIES], ids=["floatingip-resources", "inside-network"])
def test_l3_calls_and_bodies(capabilities: str) -> None:
    with stack(capabilities=capabilities) as (server, (sim,)):
        ext = create(server, "network", tenant=ADMIN_TENANT, name="public", **{"router:external": True})
        create(server, "subnet", tenant=ADMIN_TENANT, network_id=ext["id"], ip_version=4, cidr="172.24.4.0/24")
        net = create(server, "network", name="private")
        subnet = create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.1.0.0/24")
        assert {n["id"]: n["router:external"] for n in sim.state()["networks"]} == {ext["id"]: True, net["id"]: False}

        # Router with a gateway: the hidden gateway port (tenant "", under the network's tenant), then the router.
        seq = last_seq(sim)
        router = create(server, "router", name="r1", external_gateway_info={"network_id": ext["id"]})
        rid = router["id"]
        gw_port = ok(server, "GET", f"/v2.0/ports?device_id={rid}")["ports"][0]
        sent = mutations(sim, seq)
        assert [(r["method"], r["path"][len(BASE) :]) for r in sent] == [
            ("POST", f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}/ports"),
            ("PUT", f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}/ports/{gw_port['id']}/attachment"),
            ("POST", f"/tenants/{TENANT}/routers"),
        ]
        assert sent[0]["body"]["port"]["device_owner"] == "network:router_gateway" and sent[0]["body"]["port"]["tenant_id"] == ""
        assert sent[1]["body"] == {"attachment": {"id": rid, "mac": gw_port["mac_address"]}}
        assert sent[2]["body"] == {
            "router": {
                "id": rid, "tenant_id": TENANT, "name": "r1", "state": "UP",
                "external_gateway_info": {"network_id": ext["id"], "enable_snat": True},
            }
        }  # fmt: skip

        # Interface by subnet: the port, its attachment, then the interface (network id as its id).
        seq = last_seq(sim)
        info = ok(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": subnet["id"]})
        sent = mutations(sim, seq)
        assert [(r["method"], r["path"][len(BASE) :]) for r in sent] == [
            ("POST", f"/tenants/{TENANT}/networks/{net['id']}/ports"),
            ("PUT", f"/tenants/{TENANT}/networks/{net['id']}/ports/{info['port_id']}/attachment"),
            ("POST", f"/tenants/{TENANT}/routers/{rid}/interfaces"),
        ]
        interface = sent[2]["body"]["interface"]
        assert interface["id"] == net["id"] and interface["network"]["id"] == net["id"] and interface["network"]["state"] == "UP"
        assert interface["subnet"]["id"] == subnet["id"] and interface["subnet"]["gateway_ip"] == "10.1.0.1"
        assert "admin_state_up" not in interface["subnet"] and interface["subnet"]["state"] == "UP"
        [controller_router] = sim.state()["routers"]
        assert controller_router["interfaces"] == [
            {"id": net["id"], "subnet_id": subnet["id"], "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1"}
        ]

        # Floating IP, associated: its hidden port, then the floating IP on its own resource or inside its network.
        vm = create(server, "port", network_id=net["id"], device_id="vm-1")
        seq = last_seq(sim)
        fip = create(server, "floatingip", floating_network_id=ext["id"], port_id=vm["id"])
        mapped = {
            "id": fip["id"], "tenant_id": TENANT, "floating_ip_address": fip["floating_ip_address"], "floating_network_id": ext["id"],
            "router_id": rid, "port_id": vm["id"], "fixed_ip_address": vm["fixed_ips"][0]["ip_address"],
        }  # fmt: skip
        sent = mutations(sim, seq)
        assert [r["method"] for r in sent[:2]] == ["POST", "PUT"] and sent[1]["body"]["attachment"]["id"] == fip["id"]
        if capabilities:
            assert [(r["method"], r["path"][len(BASE) :], r["body"]) for r in sent[2:]] == [
                ("PUT", f"/tenants/{TENANT}/floatingips/{fip['id']}", {"floatingip": mapped})
            ]
        else:
            [network_put] = sent[2:]
            assert (network_put["method"], network_put["path"][len(BASE) :]) == ("PUT", f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}")
            assert network_put["body"]["network"]["floatingips"] == [mapped]
            assert network_put["body"]["network"]["router:external"] is True
        assert sim.state()["floatingips"] == [mapped]

        # Disassociate, delete.
        seq = last_seq(sim)
        ok(server, "PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
        unbound = dict(mapped, router_id=None, port_id=None, fixed_ip_address=None)
        assert sim.state()["floatingips"] == [unbound]
        expected_path = f"/tenants/{TENANT}/floatingips/{fip['id']}" if capabilities else f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}"
        assert calls(sim, seq) == [("PUT", expected_path)]
        seq = last_seq(sim)
        ok(server, "DELETE", f"/v2.0/floatingips/{fip['id']}")
        fip_port = f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}/ports"
        hidden = [
            p
            for p in mutations(sim)
            if p["method"] == "POST" and p["path"].endswith(fip_port) and p["body"]["port"]["device_id"] == fip["id"]
        ]
        hidden_id = hidden[0]["body"]["port"]["id"]
        assert calls(sim, seq) == [
            ("DELETE" if capabilities else "PUT", expected_path),
            ("DELETE", f"{fip_port}/{hidden_id}/attachment"),
            ("DELETE", f"{fip_port}/{hidden_id}"),
        ]
        assert sim.state()["floatingips"] == []

        # Interface by port: the port is re-owned (PUT, attachment), then the interface.
        net2 = create(server, "network", name="second")
        subnet2 = create(server, "subnet", network_id=net2["id"], ip_version=4, cidr="10.2.0.0/24")
        spare = create(server, "port", network_id=net2["id"])
        seq = last_seq(sim)
        ok(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"port_id": spare["id"]})
        port_path = f"/tenants/{TENANT}/networks/{net2['id']}/ports/{spare['id']}"
        assert calls(sim, seq) == [
            ("PUT", port_path),
            ("PUT", f"{port_path}/attachment"),
            ("POST", f"/tenants/{TENANT}/routers/{rid}/interfaces"),
        ]
        # ...and removed: the interface, then the port (it goes, as in Quantum).
        seq = last_seq(sim)
        ok(server, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"port_id": spare["id"]})
        assert calls(sim, seq) == [
            ("DELETE", f"/tenants/{TENANT}/routers/{rid}/interfaces/{net2['id']}"),
            ("DELETE", f"{port_path}/attachment"),
            ("DELETE", port_path),
        ]
        assert [i["subnet_id"] for i in sim.state()["routers"][0]["interfaces"]] == [subnet["id"]]
        assert subnet2["id"]  # the subnet stays

        # Gateway cleared: the router PUT, then the gateway port goes. Router deleted after its interface.
        seq = last_seq(sim)
        ok(server, "PUT", f"/v2.0/routers/{rid}", {"router": {"external_gateway_info": None, "name": "r1b"}})
        gw_path = f"/tenants/{ADMIN_TENANT}/networks/{ext['id']}/ports/{gw_port['id']}"
        assert calls(sim, seq) == [("PUT", f"/tenants/{TENANT}/routers/{rid}"), ("DELETE", f"{gw_path}/attachment"), ("DELETE", gw_path)]
        assert sim.state()["routers"][0]["external_gateway_info"] is None and sim.state()["routers"][0]["name"] == "r1b"
        ok(server, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"subnet_id": subnet["id"]})
        seq = last_seq(sim)
        ok(server, "DELETE", f"/v2.0/routers/{rid}")
        assert calls(sim, seq) == [("DELETE", f"/tenants/{TENANT}/routers/{rid}")]
        assert sim.state()["routers"] == []
        wait_consistent(server, sim)


def test_two_interfaces_on_one_network_are_one_controller_interface() -> None:
    """The controller keys interfaces by network: it gets the one with the lowest port id, and the other when that one goes."""
    with stack() as (server, (sim,)):
        net = create(server, "network", name="two-subnets")
        subnets = [create(server, "subnet", network_id=net["id"], ip_version=4, cidr=f"10.{i}.0.0/24") for i in (5, 6)]
        rid = create(server, "router", name="r")["id"]
        infos = [ok(server, "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": s["id"]}) for s in subnets]
        first = min(infos, key=lambda i: i["port_id"])
        second = max(infos, key=lambda i: i["port_id"])
        [controller] = sim.state()["routers"]
        assert [i["subnet_id"] for i in controller["interfaces"]] == [first["subnet_id"]]
        assert "consistent with the store" in wait_consistent(server, sim)
        seq = last_seq(sim)
        ok(server, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"port_id": first["port_id"]})
        assert calls(sim, seq)[0] == ("POST", f"/tenants/{TENANT}/routers/{rid}/interfaces")  # the other one, not a DELETE
        assert [i["subnet_id"] for i in sim.state()["routers"][0]["interfaces"]] == [second["subnet_id"]]
        wait_consistent(server, sim)
        ok(server, "PUT", f"/v2.0/routers/{rid}/remove_router_interface", {"port_id": second["port_id"]})
        assert sim.state()["routers"][0]["interfaces"] == []
        wait_consistent(server, sim)


# -- every L3 mutation refused by every controller -------------------------------------------------

REFUSED = [
    "create_router", "create_router_with_gateway", "update_router", "set_gateway", "change_gateway", "clear_gateway",
    "delete_router", "add_interface_by_subnet", "add_interface_by_port", "remove_interface_by_subnet", "remove_interface_by_port",
    "create_floatingip", "create_floatingip_associated", "associate_floatingip", "move_floatingip", "disassociate_floatingip",
    "delete_floatingip", "delete_port_with_floatingip",
]  # fmt: skip


@pytest.fixture(scope="module", params=["floatingip", NO_CAPABILITIES], ids=["floatingip-resources", "inside-network"])
def refused_stack(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, list[SimProcess]]]:
    with stack(sims=2, capabilities=request.param) as started:
        yield started


def _refused_case(server: ServerProcess, mutation: str, n: int) -> tuple[str, str, Any]:
    """A fresh topology for one case (its own cidrs) and the request to refuse."""
    topo = Topo(server, ext_cidr=f"172.25.{n}.0/24", cidr=f"10.{n}.0.0/24")
    ext, rid = topo.ext["id"], topo.router["id"]
    other_ext = create(server, "network", tenant=ADMIN_TENANT, name="public2", **{"router:external": True})
    create(server, "subnet", tenant=ADMIN_TENANT, network_id=other_ext["id"], ip_version=4, cidr=f"172.26.{n}.0/24")
    bare = create(server, "router", name="bare")
    gw_only = create(server, "router", name="gw-only", external_gateway_info={"network_id": ext})
    spare_subnet = create(server, "subnet", network_id=topo.net["id"], ip_version=4, cidr=f"10.{n + 100}.0.0/24")
    spare_port = create(server, "port", network_id=topo.net["id"], fixed_ips=[{"subnet_id": spare_subnet["id"]}])
    by_port = create(server, "port", network_id=topo.net["id"], fixed_ips=[{"subnet_id": spare_subnet["id"]}])
    ok(server, "PUT", f"/v2.0/routers/{gw_only['id']}/add_router_interface", {"port_id": by_port["id"]})
    vm2 = create(server, "port", network_id=topo.net["id"], device_id="vm-2")
    bound = create(server, "floatingip", floating_network_id=ext, port_id=topo.vm["id"])
    free = create(server, "floatingip", floating_network_id=ext)
    table = {
        "create_router": ("POST", "/v2.0/routers", {"router": {"name": "new", "tenant_id": TENANT}}),
        "create_router_with_gateway": (
            "POST", "/v2.0/routers", {"router": {"name": "new", "tenant_id": TENANT, "external_gateway_info": {"network_id": ext}}},
        ),
        "update_router": ("PUT", f"/v2.0/routers/{rid}", {"router": {"name": "renamed", "admin_state_up": False}}),
        "set_gateway": ("PUT", f"/v2.0/routers/{bare['id']}", {"router": {"external_gateway_info": {"network_id": ext}}}),
        "change_gateway": (
            "PUT", f"/v2.0/routers/{gw_only['id']}", {"router": {"external_gateway_info": {"network_id": other_ext["id"]}}},
        ),
        "clear_gateway": ("PUT", f"/v2.0/routers/{gw_only['id']}", {"router": {"external_gateway_info": None}}),
        "delete_router": ("DELETE", f"/v2.0/routers/{bare['id']}", None),
        "add_interface_by_subnet": ("PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": spare_subnet["id"]}),
        "add_interface_by_port": ("PUT", f"/v2.0/routers/{rid}/add_router_interface", {"port_id": spare_port["id"]}),
        "remove_interface_by_subnet": ("PUT", f"/v2.0/routers/{gw_only['id']}/remove_router_interface", {"subnet_id": spare_subnet["id"]}),
        "remove_interface_by_port": ("PUT", f"/v2.0/routers/{gw_only['id']}/remove_router_interface", {"port_id": by_port["id"]}),
        "create_floatingip": ("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext, "tenant_id": TENANT}}),
        "create_floatingip_associated": (
            "POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext, "tenant_id": TENANT, "port_id": vm2["id"]}},
        ),
        "associate_floatingip": ("PUT", f"/v2.0/floatingips/{free['id']}", {"floatingip": {"port_id": vm2["id"]}}),
        "move_floatingip": ("PUT", f"/v2.0/floatingips/{bound['id']}", {"floatingip": {"port_id": vm2["id"]}}),
        "disassociate_floatingip": ("PUT", f"/v2.0/floatingips/{bound['id']}", {"floatingip": {"port_id": None}}),
        "delete_floatingip": ("DELETE", f"/v2.0/floatingips/{bound['id']}", None),
        "delete_port_with_floatingip": ("DELETE", f"/v2.0/ports/{topo.vm['id']}", None),
    }  # fmt: skip
    return table[mutation]


@pytest.mark.parametrize("mutation", REFUSED)
def test_all_controllers_down_gives_500_and_leaves_the_store_as_it_was(
    refused_stack: tuple[ServerProcess, list[SimProcess]], mutation: str
) -> None:
    server, sims = refused_stack
    method, path, body = _refused_case(server, mutation, REFUSED.index(mutation) + 1)
    before = everything(server)
    for sim in sims:
        sim.fault(action="status", status=500, path_regex=API_PATHS)
    try:
        status, reply = server.request(method, path, body)
        assert status == 500, (mutation, reply)
        assert reply["NeutronError"]["type"] == "RemoteRestError"
        assert everything(server) == before
    finally:
        for sim in sims:
            sim.clear_faults()
    # The calls that did land are undone on the controller by the sync the refusal asked for.
    admin_sync(server)
    wait_consistent(server, sims[0])
    # The same request goes through once the controllers are back.
    status, reply = server.request(method, path, body)
    assert status < 300, (mutation, reply)
    wait_consistent(server, sims[0])


# -- a controller that lost everything ---------------------------------------------------------------


def test_controller_restarted_empty_gets_routers_and_floating_ips_back() -> None:
    with stack(capabilities=NO_CAPABILITIES) as (server, (sim,)):
        topo = Topo(server)
        fip = create(server, "floatingip", floating_network_id=topo.ext["id"], port_id=topo.vm["id"])
        counts = sim.state()["counts"]
        assert (counts["routers"], counts["interfaces"], counts["floatingips"]) == (1, 1, 1)
        before = sim.state()
        sim.restart(kill=True)
        assert sim.state()["counts"]["routers"] == 0
        # The next change meets a 409 and brings one topology sync, which carries routers and floating IPs.
        ok(server, "PUT", f"/v2.0/routers/{topo.router['id']}", {"router": {"name": "after-restart"}})
        after = sim.state()
        assert sim.stats()["topology_puts"] == 1
        [router] = after["routers"]
        assert router["name"] == "after-restart" and router["interfaces"] == before["routers"][0]["interfaces"]
        assert router["external_gateway_info"] == {"network_id": topo.ext["id"], "enable_snat": True}
        assert after["floatingips"] == before["floatingips"] and after["floatingips"][0]["id"] == fip["id"]
        assert after["networks"] == before["networks"]
        assert "1 routers, 1 floating IPs" in wait_consistent(server, sim)
        # A controller that silently lost them is caught by the check.
        sim.restart(kill=True, forgotten=False)
        result = check(server, sim)
        assert result.returncode == 1
        assert f"router {topo.router['id']}: missing on the controller" in result.stdout
        assert f"floating IP {fip['id']}: missing on the controller" in result.stdout


def test_check_reports_wrong_interfaces_and_floating_ips() -> None:
    with stack() as (server, (sim,)):
        topo = Topo(server)
        fip = create(server, "floatingip", floating_network_id=topo.ext["id"], port_id=topo.vm["id"])
        wait_consistent(server, sim)
        # Tamper with the controller directly: another interface subnet, a floating IP moved.
        other = create(server, "network", name="other")
        other_subnet = create(server, "subnet", network_id=other["id"], ip_version=4, cidr="10.9.0.0/24")
        body = {"interface": {"id": other["id"], "subnet": {"id": other_subnet["id"], "cidr": "10.9.0.0/24", "network_id": other["id"]}}}
        assert sim.controller("POST", f"tenants/{TENANT}/routers/{topo.router['id']}/interfaces", body)[0] == 200
        moved = dict(sim.state()["floatingips"][0], port_id=None, fixed_ip_address=None)
        assert sim.controller("PUT", f"tenants/{TENANT}/floatingips/{fip['id']}", {"floatingip": moved})[0] == 200
        result = check(server, sim)
        assert result.returncode == 1
        assert f"router {topo.router['id']}: interfaces is" in result.stdout
        assert f"floating IP {fip['id']}: port_id is None on the controller, '{topo.vm['id']}' in the store" in result.stdout
        admin_sync(server)
        wait_consistent(server, sim)


# -- Floodlight ------------------------------------------------------------------------------------------


def test_floodlight_gets_no_routers_or_floating_ips() -> None:
    with stack(profile="floodlight") as (server, (sim,)):
        wait_for("profile detection", lambda: server.request("GET", "/admin/pool")[1]["profile"] == "floodlight")
        topo = Topo(server)
        fip = create(server, "floatingip", floating_network_id=topo.ext["id"], port_id=topo.vm["id"])
        ok(server, "PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
        sent = mutations(sim)
        assert not [r for r in sent if "/routers" in r["path"] or "/floatingips" in r["path"] or r["path"].endswith("/ports")]
        # Only the hidden ports' attachments: the gateway, the interface, the floating IP (a device each).
        attached = {r["body"]["attachment"]["id"] for r in sent if r["path"].endswith("/attachment") and r["method"] == "PUT"}
        assert {topo.router["id"], fip["id"], "vm-1"} <= attached
        ok(server, "DELETE", f"/v2.0/floatingips/{fip['id']}")
        ok(server, "PUT", f"/v2.0/routers/{topo.router['id']}/remove_router_interface", {"subnet_id": topo.subnet["id"]})
        ok(server, "DELETE", f"/v2.0/routers/{topo.router['id']}")
        wait_consistent(server, sim, "--profile", "floodlight")
        assert sim.stats()["java_exceptions"] == 0


# -- random faults over a few hundred L3 operations -----------------------------------------------------

CHAOS_OPS = int(os.environ.get("QRP_L3_CHAOS_OPS", "320"))
CHAOS_THREADS = 4
CHAOS_SEED = int(os.environ.get("QRP_CHAOS_SEED", "1729"))
CHAOS_FAULTS: list[dict[str, Any]] = [
    {"action": "status", "status": 500, "fraction": 0.06},
    {"action": "status", "status": 503, "fraction": 0.05},
    {"action": "status", "status": 409, "fraction": 0.04},
    {"action": "drop", "fraction": 0.03},
    {"action": "hang", "fraction": 0.01},
    {"action": "delay", "latency_ms": 1300, "fraction": 0.01},
]


class L3Client:
    """One tenant's routers, subnets, VMs and floating IPs, and what the server said about each."""

    def __init__(self, server: ServerProcess, index: int, ext: dict[str, Any], problems: list[str], outcomes: Counter[Any]) -> None:
        self.server, self.index, self.ext = server, index, ext
        self.tenant = f"t-chaos-{index}"
        self.rng = random.Random(f"{CHAOS_SEED}-{index}")
        self.problems, self.outcomes = problems, outcomes
        self.net: dict[str, Any] = {}
        self.subnets: list[str] = []
        self.routers: dict[str, dict[str, Any]] = {}  # id -> {"gateway": bool, "interfaces": {subnet id: port id}}
        self.vms: dict[str, str] = {}  # port id -> fixed IP
        self.fips: dict[str, str | None] = {}  # id -> port id
        self.failed_creates: list[str] = []

    def request(self, method: str, path: str, body: Any = None, op: str = "") -> tuple[int, Any]:
        status, reply = self.server.request(method, path, body, headers={"X-Tenant-Id": self.tenant})
        self.outcomes[(op, status)] += 1
        if status >= 500 and not (status == 500 and reply and reply["NeutronError"]["type"] == "RemoteRestError"):
            self.problems.append(f"{op}: {status} {reply}")
        return status, reply

    def setup(self) -> None:
        _, net = self.request("POST", "/v2.0/networks", {"network": {"name": f"chaos-{self.index}"}}, "setup")
        self.net = net["network"]
        for i in range(6):
            body = {"subnet": {"network_id": self.net["id"], "ip_version": 4, "cidr": f"10.{50 + self.index}.{i}.0/24"}}
            status, subnet = self.request("POST", "/v2.0/subnets", body, "setup")
            assert status == 201, subnet
            self.subnets.append(subnet["subnet"]["id"])

    def run(self, ops: int) -> None:
        actions = [
            (3, self.create_router), (2, self.delete_router), (3, self.gateway), (5, self.add_interface), (3, self.remove_interface),
            (4, self.create_vm), (2, self.delete_vm), (5, self.create_fip), (5, self.associate), (2, self.delete_fip), (1, self.rename),
        ]  # fmt: skip
        weights = [w for w, _ in actions]
        for _ in range(ops):
            self.rng.choices([a for _, a in actions], weights)[0]()

    # -- operations (the model changes only on a 2xx)
    def create_router(self) -> None:
        gateway = self.rng.random() < 0.7
        body: dict[str, Any] = {"name": f"r-{self.index}"}
        if gateway:
            body["external_gateway_info"] = {"network_id": self.ext["id"]}
        status, reply = self.request("POST", "/v2.0/routers", {"router": body}, "create_router")
        self._expect(status, 201, "create_router")
        if status == 201:
            self.routers[reply["router"]["id"]] = {"gateway": gateway, "interfaces": {}}
        elif status == 500:
            self.failed_creates.append("router")

    def _router(self) -> str | None:
        return self.rng.choice(sorted(self.routers)) if self.routers else None

    def delete_router(self) -> None:
        rid = self._router()
        if rid is None:
            return
        status, _ = self.request("DELETE", f"/v2.0/routers/{rid}", op="delete_router")
        busy = bool(self.routers[rid]["interfaces"]) or any(self._fip_router(f) == rid for f in self.fips)
        self._expect(status, 409 if busy else 204, "delete_router")
        if status == 204:
            del self.routers[rid]

    def gateway(self) -> None:
        rid = self._router()
        if rid is None:
            return
        router = self.routers[rid]
        info = None if router["gateway"] else {"network_id": self.ext["id"]}
        status, _ = self.request("PUT", f"/v2.0/routers/{rid}", {"router": {"external_gateway_info": info}}, "gateway")
        in_use = router["gateway"] and any(self._fip_router(f) == rid for f in self.fips)
        self._expect(status, 409 if in_use else 200, "gateway")
        if status == 200:
            router["gateway"] = info is not None

    def add_interface(self) -> None:
        rid = self._router()
        if rid is None:
            return
        used = {s for r in self.routers.values() for s in r["interfaces"]}
        free = [s for s in self.subnets if s not in used]
        if not free:
            return
        subnet = self.rng.choice(free)
        status, reply = self.request("PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": subnet}, "add_interface")
        self._expect(status, 200, "add_interface")
        if status == 200:
            self.routers[rid]["interfaces"][subnet] = reply["port_id"]

    def remove_interface(self) -> None:
        choices = [(rid, s) for rid, r in self.routers.items() for s in r["interfaces"]]
        if not choices:
            return
        rid, subnet = self.rng.choice(sorted(choices))
        body = {"subnet_id": subnet} if self.rng.random() < 0.5 else {"port_id": self.routers[rid]["interfaces"][subnet]}
        status, _ = self.request("PUT", f"/v2.0/routers/{rid}/remove_router_interface", body, "remove_interface")
        in_use = any(self._fip_subnet(f) == subnet for f in self.fips)
        self._expect(status, 409 if in_use else 200, "remove_interface")
        if status == 200:
            del self.routers[rid]["interfaces"][subnet]

    def create_vm(self) -> None:
        subnet = self.rng.choice(self.subnets)
        body = {"port": {"network_id": self.net["id"], "device_id": f"vm-{self.rng.random()}", "fixed_ips": [{"subnet_id": subnet}]}}
        status, reply = self.request("POST", "/v2.0/ports", body, "create_vm")
        self._expect(status, 201, "create_vm")
        if status == 201:
            self.vms[reply["port"]["id"]] = subnet
        elif status == 500:
            self.failed_creates.append("port")

    def delete_vm(self) -> None:
        if not self.vms:
            return
        port_id = self.rng.choice(sorted(self.vms))
        status, _ = self.request("DELETE", f"/v2.0/ports/{port_id}", op="delete_vm")
        self._expect(status, 204, "delete_vm")
        if status == 204:
            del self.vms[port_id]
            for fid, bound in self.fips.items():
                if bound == port_id:
                    self.fips[fid] = None

    def _reachable(self, port_id: str) -> bool:
        subnet = self.vms[port_id]
        return any(r["gateway"] and subnet in r["interfaces"] for r in self.routers.values())

    def _fip_subnet(self, fid: str) -> str | None:
        port_id = self.fips[fid]
        return self.vms.get(port_id) if port_id else None

    def _fip_router(self, fid: str) -> str | None:
        subnet = self._fip_subnet(fid)
        routers = sorted(rid for rid, r in self.routers.items() if r["gateway"] and subnet in r["interfaces"])
        return routers[0] if subnet and routers else None

    def _free_vm(self) -> str | None:
        taken = set(self.fips.values())
        candidates = sorted(p for p in self.vms if p not in taken)
        return self.rng.choice(candidates) if candidates else None

    def create_fip(self) -> None:
        body: dict[str, Any] = {"floating_network_id": self.ext["id"]}
        port_id = self._free_vm() if self.rng.random() < 0.5 else None
        if port_id:
            body["port_id"] = port_id
        status, reply = self.request("POST", "/v2.0/floatingips", {"floatingip": body}, "create_fip")
        self._expect(status, 201 if not port_id or self._reachable(port_id) else 404, "create_fip")
        if status == 201:
            self.fips[reply["floatingip"]["id"]] = port_id
        elif status == 500:
            self.failed_creates.append("floatingip")

    def associate(self) -> None:
        if not self.fips:
            return
        fid = self.rng.choice(sorted(self.fips))
        port_id = None if self.fips[fid] and self.rng.random() < 0.5 else self._free_vm()
        status, _ = self.request("PUT", f"/v2.0/floatingips/{fid}", {"floatingip": {"port_id": port_id}}, "associate")
        self._expect(status, 200 if port_id is None or self._reachable(port_id) else 404, "associate")
        if status == 200:
            self.fips[fid] = port_id

    def delete_fip(self) -> None:
        if not self.fips:
            return
        fid = self.rng.choice(sorted(self.fips))
        status, _ = self.request("DELETE", f"/v2.0/floatingips/{fid}", op="delete_fip")
        self._expect(status, 204, "delete_fip")
        if status == 204:
            del self.fips[fid]

    def rename(self) -> None:
        rid = self._router()
        if rid is not None:
            status, _ = self.request("PUT", f"/v2.0/routers/{rid}", {"router": {"name": f"r-{self.rng.random()}"}}, "rename")
            self._expect(status, 200, "rename")

    def _expect(self, status: int, expected: int, op: str) -> None:
        if status not in (expected, 500):
            self.problems.append(f"client {self.index} {op}: {status}, expected {expected} (or 500)")

    def compare(self) -> list[str]:
        """The store holds exactly what this client was answered 2xx about."""
        headers = {"X-Tenant-Id": self.tenant}
        problems = []
        routers = {r["id"]: r for r in self.server.request("GET", "/v2.0/routers", headers=headers)[1]["routers"]}
        if set(routers) != set(self.routers):
            problems.append(f"client {self.index}: routers {sorted(routers)} in the store, {sorted(self.routers)} answered")
        ports = self.server.request("GET", f"/v2.0/ports?network_id={self.net['id']}", headers=headers)[1]["ports"]
        for rid, model in self.routers.items():
            if rid not in routers:
                continue
            if (routers[rid]["external_gateway_info"] is not None) != model["gateway"]:
                problems.append(f"client {self.index}: router {rid} gateway {routers[rid]['external_gateway_info']} vs {model['gateway']}")
            stored = {p["fixed_ips"][0]["subnet_id"]: p["id"] for p in ports if p["device_id"] == rid}
            if stored != model["interfaces"]:
                problems.append(f"client {self.index}: router {rid} interfaces {stored} in the store, {model['interfaces']} answered")
        vms = {p["id"] for p in ports if p["device_owner"] == ""}
        if vms != set(self.vms):
            problems.append(f"client {self.index}: VMs {sorted(vms)} in the store, {sorted(self.vms)} answered")
        fips = {f["id"]: f["port_id"] for f in self.server.request("GET", "/v2.0/floatingips", headers=headers)[1]["floatingips"]}
        if fips != self.fips:
            problems.append(f"client {self.index}: floating IPs {fips} in the store, {self.fips} answered")
        return problems


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_faults_over_hundreds_of_l3_operations_converge(backend: str) -> None:
    """Row locks and unique keys differ per backend: the concurrent clients run on each."""
    started = time.monotonic()
    chaos_stack = stack(sims=2, config="sync_timeout = 5\n", timeout=1, backend=backend, capabilities=NO_CAPABILITIES)
    with chaos_stack as (server, (primary, standby)):
        ext = create(server, "network", tenant=ADMIN_TENANT, name="chaos-public", **{"router:external": True})
        create(server, "subnet", tenant=ADMIN_TENANT, network_id=ext["id"], ip_version=4, cidr="172.30.0.0/16")
        problems: list[str] = []
        outcomes: Counter[Any] = Counter()
        clients = [L3Client(server, i, ext, problems, outcomes) for i in range(CHAOS_THREADS)]
        for client in clients:
            client.setup()
        standby.fault(action="status", status=500, path_regex=API_PATHS)
        for i, rule in enumerate(CHAOS_FAULTS):
            primary.fault(**rule, seed=CHAOS_SEED + i, path_regex=API_PATHS)
        stop = threading.Event()

        def forgetter() -> None:
            rng = random.Random(f"{CHAOS_SEED}-forget")
            while not stop.wait(rng.uniform(2.0, 4.0)):
                primary.forget()

        def guarded(client: L3Client) -> None:
            try:
                client.run(CHAOS_OPS // CHAOS_THREADS)
            except Exception as e:
                problems.append(f"client {client.index} crashed: {e!r}")

        threads = [threading.Thread(target=guarded, args=(c,), daemon=True) for c in clients]
        forgetting = threading.Thread(target=forgetter, daemon=True)
        for t in [*threads, forgetting]:
            t.start()
        for t in threads:
            t.join(300)
        stop.set()
        forgetting.join(10)
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        stats = primary.stats()
        primary.clear_faults()
        standby.clear_faults()
        # Whatever the refused or timed-out calls left behind, the pool converges by itself (background syncs).
        converge_started = time.monotonic()
        wait_consistent(server, primary, timeout=90)
        converge_seconds = time.monotonic() - converge_started
        # And once more from a lost state: the next call's 409 brings a sync with every router and floating IP.
        primary.forget()
        ok(server, "PUT", f"/v2.0/networks/{ext['id']}", {"network": {"name": "chaos-public-2"}})
        report = wait_consistent(server, primary)
        for client in clients:
            problems.extend(client.compare())
        wait_for("the journal to empty", lambda: server.request("GET", "/admin/pool")[1]["journal"] == [], timeout=15)
        statuses = Counter(status for (_, status), n in outcomes.items() for _ in range(n))
        print(
            f"\nl3 chaos ({backend}): {sum(outcomes.values())} ops, statuses {dict(sorted(statuses.items()))}, "
            f"faults {stats['faults_injected']}, converge {converge_seconds:.1f}s, "
            f"total {time.monotonic() - started:.1f}s; {report.strip()}"
        )
        assert problems == [], "\n".join(problems[:40])
        assert statuses[500] > 0 and statuses[200] > 0 and statuses[201] > 0 and statuses[204] > 0
        # Random picks skip when there is nothing to act on (no router yet...): at least half must be real requests.
        assert sum(outcomes.values()) >= CHAOS_OPS * 0.5
