"""The agent channel over real HTTP: list, watch (latency, resume, relist, fan-out), RPC, auth."""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database

TOKENS = {
    "tok-h1": {"host": "h1", "kind": "agent"},
    "tok-h2": {"host": "h2", "kind": "agent"},
    "tok-dhcp": {"host": "h1", "kind": "dhcp"},
}


def _config(tmp: str, extra: str = "") -> str:
    path = os.path.join(tmp, "agents.json")
    with open(path, "w") as f:
        json.dump({"tokens": TOKENS}, f)
    return f"[AGENT]\nagent_tokens_file = {path}\nagent_watch_heartbeat = 1\n{extra}"


@contextmanager
def channel_server(db_url: str | None = None, extra: str = "") -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(db_url or f"sqlite:///{tmp}/q.sqlite", config_text=_config(tmp, extra)).start()
        try:
            yield server
        finally:
            server.stop()


class Watch:
    """A watch stream read by a thread; lines land in a queue with their arrival time."""

    def __init__(self, server: ServerProcess, host: str, since: int, token: str) -> None:
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        req = urllib.request.Request(f"{server.url}/agent/v1/hosts/{host}/watch?since={since}", headers={"X-Auth-Token": token})
        self.response = urllib.request.urlopen(req, timeout=30)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                self.lines.put((time.monotonic(), json.loads(line)))
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (http.client raises AttributeError on a closed chunked stream)

    def next(self, kind: str = "event", timeout: float = 5.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            at, message = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return at, message

    def close(self) -> None:
        self.response.close()


def _agent(server: ServerProcess, method: str, path: str, body: Any = None, token: str = "tok-h1") -> tuple[int, Any]:
    return server.request(method, path, body, headers={"X-Auth-Token": token})


def _net(server: ServerProcess, cidr: str = "10.0.0.0/24") -> str:
    _, net = server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
    net_id = net["network"]["id"]
    server.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "tenant_id": "t"}})
    return net_id


def _bound_port_of(server: ServerProcess, net_id: str, host: str = "h1", **extra: Any) -> dict[str, Any]:
    body = {"port": dict({"network_id": net_id, "tenant_id": "t", "binding:host_id": host, "device_id": "vm"}, **extra)}
    status, port = server.request("POST", "/v2.0/ports", body)
    assert status == 201, port
    return port["port"]


# Ports without security groups: their events are the subject here; the groups' are tested in test_sg_channel.py.
_bound_port = partial(_bound_port_of, security_groups=[])


def test_list_then_watch_delivers_events_of_this_host_only_and_quickly() -> None:
    with channel_server() as server:
        net_id = _net(server)
        first = _bound_port(server, net_id)
        _bound_port(server, net_id, host="h2")
        status, listed = _agent(server, "GET", "/agent/v1/hosts/h1/ports")
        assert status == 200 and [p["id"] for p in listed["ports"]] == [first["id"]]
        watch = Watch(server, "h1", listed["seq"], "tok-h1")
        try:
            watch.next("heartbeat")
            started = time.monotonic()
            second = _bound_port(server, net_id)
            at, event = watch.next()
            assert event["kind"] == "port_attached" and event["object_id"] == second["id"]
            assert event["payload"]["mac_address"] == second["mac_address"]
            assert at - started < 1.0  # the bench measures the real latency
            server.request("PUT", f"/v2.0/ports/{second['id']}", {"port": {"binding:host_id": "h2"}})
            assert watch.next()[1]["kind"] == "port_detached"
            server.request("DELETE", f"/v2.0/ports/{first['id']}")
            _, event = watch.next()
            assert (event["kind"], event["object_id"]) == ("port_detached", first["id"])
            _bound_port(server, net_id, host="h2")  # not ours: only a heartbeat may follow
            _, heartbeat = watch.next("heartbeat")
            assert heartbeat["seq"] >= event["seq"]
            assert watch.lines.empty() or all(m["type"] == "heartbeat" for _, m in list(watch.lines.queue))
        finally:
            watch.close()


def test_resume_after_a_server_restart_misses_nothing() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/q.sqlite"
        with channel_server(db) as server:
            net_id = _net(server)
            _, listed = _agent(server, "GET", "/agent/v1/hosts/h1/ports")
            seen = listed["seq"]
            ports = [_bound_port(server, net_id)["id"] for _ in range(3)]
        with channel_server(db) as server:  # a new process on the same database
            more = [_bound_port(server, net_id)["id"] for _ in range(2)]
            watch = Watch(server, "h1", seen, "tok-h1")
            try:
                got = [watch.next()[1] for _ in range(5)]
            finally:
                watch.close()
        assert [e["object_id"] for e in got] == ports + more
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)


def test_too_old_a_sequence_number_is_told_to_relist() -> None:
    with channel_server(extra="agent_event_retention = 3\nagent_event_prune_interval = 0.2\n") as server:
        net_id = _net(server)
        for _ in range(8):
            _bound_port(server, net_id)
        deadline = time.monotonic() + 5
        while True:
            watch = Watch(server, "h1", 1, "tok-h1")
            _, message = watch.next(kind="relist") if _first_type(watch) == "relist" else (0, {"type": "none"})
            watch.close()
            if message["type"] == "relist" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert message["type"] == "relist"


def _first_type(watch: Watch) -> str:
    at, message = watch.lines.get(timeout=5)
    watch.lines.put((at, message))
    return message["type"]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgresql"])
def test_an_event_committed_on_one_server_reaches_a_watcher_on_the_other(backend: str) -> None:
    with temporary_database(backend) as db, channel_server(db) as first, channel_server(db) as second:
        net_id = _net(first)
        _, listed = _agent(second, "GET", "/agent/v1/hosts/h1/ports")
        watch = Watch(second, "h1", listed["seq"], "tok-h1")
        try:
            watch.next("heartbeat")
            started = time.monotonic()
            port = _bound_port(first, net_id)
            at, event = watch.next()
            assert event["object_id"] == port["id"]
            assert at - started < 1.0
        finally:
            watch.close()


def test_device_up_and_down_show_in_the_api_and_only_for_the_own_host() -> None:
    with channel_server() as server:
        net_id = _net(server)
        port = _bound_port(server, net_id)
        assert port["status"] == "DOWN"
        status, result = _agent(server, "POST", "/agent/v1/rpc/update_device_up", {"device": "tap" + port["id"][:11], "host": "h1"})
        assert status == 200 and result["result"]["exists"] is True
        assert server.request("GET", f"/v2.0/ports/{port['id']}")[1]["port"]["status"] == "ACTIVE"
        status, other = _agent(server, "POST", "/agent/v1/rpc/update_device_down", {"device": port["id"]}, token="tok-h2")
        assert (status, other["result"]) == (200, {"device": port["id"], "exists": False, "status": None})  # as if it did not exist
        assert server.request("GET", f"/v2.0/ports/{port['id']}")[1]["port"]["status"] == "ACTIVE"
        status, _ = _agent(server, "POST", "/agent/v1/rpc/update_device_down", {"device": port["id"], "host": "h1"})
        assert status == 200
        assert server.request("GET", f"/v2.0/ports/{port['id']}")[1]["port"]["status"] == "DOWN"
        status, details = _agent(server, "POST", "/agent/v1/rpc/get_device_details", {"device": port["id"]})
        assert details["result"]["mac_address"] == port["mac_address"]
        _, devices = _agent(server, "POST", "/agent/v1/rpc/get_devices_for_host", {"host": "h1"})
        assert [d["id"] for d in devices["result"]] == [port["id"]]


def test_report_state_lists_agents_alive_then_dead() -> None:
    with channel_server(extra="agent_down_time = 1\n") as server:
        state = {
            "agent_type": "Open vSwitch agent",
            "binary": "restproxy-agent",
            "configurations": {"bridge": "br-int"},
            "start_flag": True,
        }
        assert _agent(server, "POST", "/agent/v1/rpc/report_state", {"agent_state": state})[0] == 200
        [agent] = server.request("GET", "/v2.0/agents")[1]["agents"]
        assert (agent["host"], agent["alive"], agent["configurations"]) == ("h1", True, {"bridge": "br-int"})
        deadline = time.monotonic() + 5
        while agent["alive"] and time.monotonic() < deadline:
            time.sleep(0.2)
            [agent] = server.request("GET", "/v2.0/agents")[1]["agents"]
        assert agent["alive"] is False
        assert server.request("GET", "/v2.0/agents", headers={"X-Tenant-Id": "t"})[1]["agents"] == []


def test_dhcp_callbacks() -> None:
    with channel_server() as server:
        net_id = _net(server)
        subnet = server.request("GET", "/v2.0/subnets")[1]["subnets"][0]
        server.request(
            "PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}}
        )
        dhcp = "tok-dhcp"
        assert _agent(server, "POST", "/agent/v1/rpc/get_active_networks", {"host": "h1"}, token=dhcp)[1]["result"] == [net_id]
        [info] = _agent(server, "POST", "/agent/v1/rpc/get_active_networks_info", {"host": "h1"}, token=dhcp)[1]["result"]
        assert info["id"] == net_id and [s["id"] for s in info["subnets"]] == [subnet["id"]]
        status, port = _agent(
            server, "POST", "/agent/v1/rpc/get_dhcp_port", {"network_id": net_id, "device_id": "dhcp-1", "host": "h1"}, token=dhcp
        )
        port = port["result"]
        assert port["device_owner"] == "network:dhcp" and port["fixed_ips"][0]["subnet"]["id"] == subnet["id"]
        routes = server.request("GET", f"/v2.0/subnets/{subnet['id']}")[1]["subnet"]["host_routes"]
        assert {"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"} in routes
        assert {"destination": "169.254.169.254/32", "nexthop": port["fixed_ips"][0]["ip_address"]} in routes
        again = _agent(server, "POST", "/agent/v1/rpc/get_dhcp_port", {"network_id": net_id, "device_id": "dhcp-1"}, token=dhcp)[1][
            "result"
        ]
        assert again["id"] == port["id"]  # reused
        info = _agent(server, "POST", "/agent/v1/rpc/get_network_info", {"network_id": net_id}, token=dhcp)[1]["result"]
        assert [p["id"] for p in info["ports"]] == [port["id"]]
        args = {"network_id": net_id, "device_id": "dhcp-1", "subnet_id": subnet["id"]}
        assert _agent(server, "POST", "/agent/v1/rpc/release_port_fixed_ip", args, token=dhcp)[0] == 200
        assert server.request("GET", f"/v2.0/ports/{port['id']}")[1]["port"]["fixed_ips"] == []
        change = {"port_id": port["id"], "port": {"port": {"fixed_ips": [{"subnet_id": subnet["id"]}]}}}
        status, updated = _agent(server, "POST", "/agent/v1/rpc/update_dhcp_port", change, token=dhcp)
        assert status == 200 and len(updated["result"]["fixed_ips"]) == 1
        assert (
            _agent(server, "POST", "/agent/v1/rpc/update_lease_expiration", {"network_id": net_id, "ip_address": "10.0.0.5"}, token=dhcp)[0]
            == 200
        )
        assert (
            _agent(server, "POST", "/agent/v1/rpc/release_dhcp_port", {"network_id": net_id, "device_id": "dhcp-1"}, token=dhcp)[0] == 200
        )
        assert server.request("GET", f"/v2.0/ports/{port['id']}")[0] == 404
        status, created = _agent(
            server, "POST", "/agent/v1/rpc/create_dhcp_port", {"port": {"port": {"network_id": net_id}}, "host": "h1"}, token=dhcp
        )
        assert status == 200 and created["result"]["device_owner"] == "network:dhcp" and created["result"]["binding:host_id"] == "h1"


@pytest.mark.parametrize(
    ("token", "method", "path", "body", "expected"),
    [
        (None, "GET", "/agent/v1/hosts/h1/ports", None, 401),
        ("nope", "GET", "/agent/v1/hosts/h1/ports", None, 401),
        ("tok-h1", "GET", "/agent/v1/hosts/h2/ports", None, 403),
        ("tok-h1", "GET", "/agent/v1/hosts/h2/watch?since=0", None, 403),
        ("tok-h1", "GET", "/agent/v1/hosts/h1/watch?since=x", None, 400),
        ("tok-h1", "GET", "/agent/v1/hosts/h1/watch?since=999999", None, 400),
        ("tok-h1", "POST", "/agent/v1/rpc/get_active_networks", {}, 403),
        ("tok-h1", "POST", "/agent/v1/rpc/no_such_method", {}, 404),
        ("tok-h1", "POST", "/agent/v1/rpc/update_device_up", {"device": 5}, 400),
        ("tok-h1", "POST", "/agent/v1/rpc/update_device_up", {}, 400),
        ("tok-h1", "POST", "/agent/v1/rpc/report_state", {"agent_state": {"agent_type": ""}}, 400),
        ("tok-h1", "POST", "/agent/v1/rpc/report_state", {"agent_state": {"agent_type": "x", "binary": "y", "host": "h2"}}, 403),
        ("tok-dhcp", "POST", "/agent/v1/rpc/get_dhcp_port", {"network_id": "not-a-uuid", "device_id": "d"}, 400),
        ("tok-h1", "GET", "/agent/v1/rpc/get_devices_for_host", None, 405),
    ],
)  # fmt: skip
def test_refused_requests_change_nothing(token: str | None, method: str, path: str, body: Any, expected: int) -> None:
    with channel_server() as server:
        headers = {"X-Auth-Token": token} if token else {}
        status, reply = server.request(method, path, body, headers=headers)
        assert status == expected, reply
        assert "NeutronError" in reply
        assert server.request("GET", "/v2.0/ports")[1]["ports"] == []
        assert server.request("GET", "/v2.0/agents")[1]["agents"] == []


def test_malformed_json_is_400() -> None:
    with channel_server() as server:
        status, reply = server.request("POST", "/agent/v1/rpc/report_state", raw=b"{nope", headers={"X-Auth-Token": "tok-h1"})
        assert status == 400 and reply["NeutronError"]["type"] == "HTTPBadRequest"
