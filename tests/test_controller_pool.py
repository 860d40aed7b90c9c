"""The controller pool against real simulator processes on 127.0.0.1.

Covers the original plugin's pool scenarios (facts §7) and what we promise on
top: failover and failover memory, 503 retries, timeouts, all servers down
(500 and the store unchanged, for every kind of mutation), 404 on delete, one
re-sync for a 409 storm, a controller restarted empty, exact headers.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.support import ServerProcess

TENANT = "t-pool"


@contextmanager
def stack(sims: int = 1, config: str = "", probe: int = 0, **sim_kwargs: Any) -> Iterator[tuple[ServerProcess, list[SimProcess]]]:
    """``sims`` simulators and a server (SQLite) whose pool lists them in order."""
    with ExitStack() as stack_:
        started = []
        for _ in range(sims):
            sim = SimProcess(**sim_kwargs).start()
            stack_.callback(sim.stop)
            started.append(sim)
        tmp = stack_.enter_context(tempfile.TemporaryDirectory())
        servers = ",".join(s.address for s in started)
        text = f"[RESTPROXY]\nservers = {servers}\nserver_timeout = 2\nserver_probe_interval = {probe}\n{config}"
        server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=text).start()
        stack_.callback(server.stop)
        yield server, started


def _network(server: ServerProcess, name: str = "net") -> dict[str, Any]:
    status, body = server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": TENANT}})
    assert status == 201, body
    return body["network"]


def _subnet(server: ServerProcess, net_id: str, cidr: str = "10.1.0.0/24") -> dict[str, Any]:
    status, body = server.request(
        "POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "tenant_id": TENANT}}
    )
    assert status == 201, body
    return body["subnet"]


def _port(server: ServerProcess, net_id: str, **extra: Any) -> tuple[int, Any]:
    return server.request("POST", "/v2.0/ports", {"port": dict({"network_id": net_id, "tenant_id": TENANT}, **extra)})


def _mutations(sim: SimProcess) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["method"] != "GET" and r["path"].startswith("/networkService")]


def test_mirrors_networks_subnets_ports_and_attachments() -> None:
    with stack() as (server, (sim,)):
        net = _network(server)
        subnet = _subnet(server, net["id"])
        status, port = _port(server, net["id"], device_id="vm-1")
        assert status == 201
        state = sim.state()
        [network] = state["networks"]
        assert network["id"] == net["id"] and network["tenant_id"] == TENANT and network["state"] == "UP"
        assert network["gateway"] == subnet["gateway_ip"] and [s["id"] for s in network["subnets"]] == [subnet["id"]]
        [controller_port] = network["ports"]
        assert controller_port["attachment"] == {"id": "vm-1", "mac": port["port"]["mac_address"]}
        # Unplug by clearing device_id, then delete: the controller follows.
        status, _ = server.request("PUT", f"/v2.0/ports/{port['port']['id']}", {"port": {"device_id": ""}})
        assert status == 200
        assert sim.state()["networks"][0]["ports"][0]["attachment"] is None
        assert server.request("DELETE", f"/v2.0/ports/{port['port']['id']}")[0] == 204
        assert server.request("DELETE", f"/v2.0/networks/{net['id']}")[0] == 204
        assert sim.state()["counts"]["networks"] == 0


def test_headers_are_the_originals_and_basic_auth_is_exact() -> None:
    with stack(auth="username:pass", config="server_auth = username:pass\nneutron_id = Quantum-test\n") as (server, (sim,)):
        _network(server)
        [request] = _mutations(sim)
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["authorization"] == "Basic dXNlcm5hbWU6cGFzcw=="
        assert base64.b64decode("dXNlcm5hbWU6cGFzcw==") == b"username:pass"
        assert headers["content-type"] == "application/json"
        assert headers["accept"] == "application/json"
        assert headers["quantumproxy-agent"] == "QuantumRestProxy"
        assert headers["instance-id"] == "Quantum-test"
        assert headers["orchestration-service-id"] == "Quantum v2.0"
        assert "username:pass" not in server.log() and "dXNlcm5hbWU6cGFzcw==" not in server.log()


def test_wrong_password_is_a_failure_and_the_store_is_unchanged() -> None:
    with stack(auth="username:pass", config="server_auth = username:wrong\n") as (server, _):
        status, body = server.request("POST", "/v2.0/networks", {"network": {"name": "x", "tenant_id": TENANT}})
        assert status == 500 and body["NeutronError"]["type"] == "RemoteRestError"
        assert "401" in body["NeutronError"]["message"]
        assert server.request("GET", "/v2.0/networks")[1]["networks"] == []


def test_failover_to_the_second_server_and_remember_it() -> None:
    with stack(sims=2) as (server, (first, second)):
        first.fault(action="status", status=500)
        net = _network(server, "after-failover")
        assert [n["id"] for n in second.state()["networks"]] == [net["id"]]
        before = len(first.requests())
        _network(server, "sticky")
        assert len(first.requests()) == before  # the failed server is not tried first again
        assert second.state()["counts"]["networks"] == 2
        _, pool = server.request("GET", "/admin/pool")
        states = {s["server"]: (s["state"], s["active"]) for s in pool["servers"]}
        assert states == {first.address: ("failed", False), second.address: ("ok", True)}
        assert pool["servers"][0]["last_error"].startswith("500")


def test_connection_refused_and_timeout_fail_over() -> None:
    with stack(sims=3) as (server, (dead, hanging, good)):
        dead.stop()
        hanging.fault(action="hang")
        net = _network(server)
        assert [n["id"] for n in good.state()["networks"]] == [net["id"]]
        _, pool = server.request("GET", "/admin/pool")
        errors = {s["server"]: s["last_error"] for s in pool["servers"]}
        assert errors[hanging.address] == "0 timed out"
        assert errors[dead.address].startswith("0 ")
        hanging.clear_faults()


def test_503_is_retried_on_the_same_server_before_failing_over() -> None:
    with stack(sims=2) as (server, (first, second)):
        first.fault(action="status", status=503, count=2, methods=["POST"])
        _network(server)
        assert first.state()["counts"]["networks"] == 1
        assert second.state()["counts"]["networks"] == 0
        assert [r["status"] for r in _mutations(first)] == [503, 503, 200]


@pytest.mark.parametrize(
    "mutation",
    ["create_network", "update_network", "delete_network", "create_subnet", "update_subnet", "delete_subnet",
     "create_port", "update_port", "delete_port", "plug_port"],
)  # fmt: skip
def test_all_servers_down_gives_500_and_leaves_the_store_as_it_was(mutation: str) -> None:
    with stack(sims=2) as (server, sims):
        net = _network(server, "before")
        subnet = _subnet(server, net["id"])
        # A port would make these deletes a local 409; every other case gets one.
        port = None if mutation in ("delete_network", "delete_subnet") else _port(server, net["id"], name="p")[1]["port"]
        listing = _everything(server)
        for sim in sims:
            sim.fault(action="status", status=500)
        status, body = _do(server, mutation, net, subnet, port)
        assert status == 500, body
        assert body["NeutronError"]["type"] == "RemoteRestError"
        assert _everything(server) == listing
        for sim in sims:
            sim.clear_faults()
        # Whatever the controllers saw, the pool converges on the store by itself.
        _wait_consistent(server, sims[0])


def _do(server: ServerProcess, mutation: str, net: dict[str, Any], subnet: dict[str, Any], port: dict[str, Any] | None) -> tuple[int, Any]:
    port = port or {"id": "unused"}
    calls = {
        "create_network": ("POST", "/v2.0/networks", {"network": {"name": "new", "tenant_id": TENANT}}),
        "update_network": ("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed", "admin_state_up": False}}),
        "delete_network": ("DELETE", f"/v2.0/networks/{net['id']}", None),
        "create_subnet": (
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.9.0.0/24", "tenant_id": TENANT}},
        ),
        "update_subnet": ("PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"name": "renamed", "dns_nameservers": ["10.0.0.53"]}}),
        "delete_subnet": ("DELETE", f"/v2.0/subnets/{subnet['id']}", None),
        "create_port": ("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "tenant_id": TENANT, "device_id": "vm"}}),
        "update_port": ("PUT", f"/v2.0/ports/{port['id']}", {"port": {"name": "renamed", "fixed_ips": [{"subnet_id": subnet["id"]}]}}),
        "delete_port": ("DELETE", f"/v2.0/ports/{port['id']}", None),
        "plug_port": ("PUT", f"/v2.0/ports/{port['id']}", {"port": {"device_id": "vm-2", "binding:host_id": "h"}}),
    }
    method, path, body = calls[mutation]
    return server.request(method, path, body)


def _everything(server: ServerProcess) -> dict[str, Any]:
    return {c: sorted(server.request("GET", f"/v2.0/{c}")[1][c], key=lambda x: x["id"]) for c in ("networks", "subnets", "ports")}


def _wait_consistent(server: ServerProcess, sim: SimProcess, timeout: float = 20.0) -> None:
    import subprocess
    import sys
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "server_plugin.manage", "--sql-connection", server.db_url, "check", "--servers", sim.address],
            capture_output=True, text=True, env=dict(os.environ),
        )  # fmt: skip
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert result.returncode == 0, result.stdout + result.stderr


def test_delete_of_something_the_controller_never_had_is_success() -> None:
    with stack(forget_mode="silent") as (server, (sim,)):
        net = _network(server)
        sim.forget()
        assert server.request("DELETE", f"/v2.0/networks/{net['id']}")[0] == 204
        assert [r["status"] for r in _mutations(sim)][-1] == 404


def test_conflict_storm_causes_exactly_one_sync() -> None:
    with stack() as (server, (sim,)):
        net = _network(server)
        _subnet(server, net["id"], "10.2.0.0/16")
        sim.forget()  # conflict mode: every mutation is 409 until a /topology PUT
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda i: _port(server, net["id"], device_id=f"vm-{i}"), range(50)))
        assert [status for status, _ in results] == [201] * 50
        assert sim.stats()["topology_puts"] == 1
        _wait_consistent(server, sim)
        _, pool_status = server.request("GET", "/admin/pool")
        assert pool_status["sync"]["completed"] == 1 and pool_status["sync"]["last"]["result"] == "ok"


def test_controller_restarted_empty_is_resynced() -> None:
    with stack() as (server, (sim,)):
        net = _network(server)
        _subnet(server, net["id"])
        for i in range(5):
            assert _port(server, net["id"], device_id=f"vm-{i}")[0] == 201
        sim.restart(kill=True)
        assert sim.state()["counts"]["networks"] == 0
        assert server.request("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "after-restart"}})[0] == 200
        state = sim.state()
        assert state["counts"]["ports"] == 5 and state["networks"][0]["name"] == "after-restart"
        _wait_consistent(server, sim)


def test_shared_network_ports_go_under_the_network_tenant() -> None:
    with stack() as (server, (sim,)):
        status, body = server.request("POST", "/v2.0/networks", {"network": {"name": "shared", "tenant_id": "owner", "shared": True}})
        net = body["network"]
        status, port = server.request("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, headers={"X-Tenant-Id": "guest"})
        assert status == 201, port
        posts = [r for r in _mutations(sim) if r["method"] == "POST" and r["path"].endswith("/ports")]
        assert posts[-1]["path"] == f"/networkService/v1.1/tenants/owner/networks/{net['id']}/ports"
        assert sim.state()["networks"][0]["ports"][0]["tenant_id"] == "guest"


def test_an_idle_controller_that_lost_its_state_is_resynced_by_the_health_watchdog() -> None:
    with stack(probe=1) as (server, (sim,)):
        net = _network(server)
        sim.forget()  # conflict mode: GET /health answers 409 until a /topology PUT
        _wait_consistent(server, sim)  # no API traffic: only the watchdog can notice
        assert sim.stats()["topology_puts"] == 1
        assert any(n["id"] == net["id"] for n in sim.state()["networks"])
