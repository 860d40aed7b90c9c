"""Tenancy on the agent channel: every RPC acts only on what belongs to the caller's host and role.

The rule (server_plugin/channel/authz.py): a host agent sees ports bound to its
host; a DHCP agent sees networks with DHCP-enabled subnets and its own host's
``network:dhcp`` ports; the host a body names must be the token's; whatever a
caller may not touch is answered exactly as if it did not exist, and changes
nothing. Run on every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from restproxy_testing.channel_support import channel_server, rpc, snapshot
from restproxy_testing.support import ServerProcess


class Env:
    """One server and its objects: a DHCP network A, a network B without DHCP, VM and DHCP ports on hosts h1 and h2."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.net_a, self.subnet_a = self._network("a", "10.0.0.0/24", dhcp=True)
        self.net_b, _ = self._network("b", "10.1.0.0/24", dhcp=False)
        self.vm1 = self._port(self.net_a, "h1", "vm-1")
        self.vm2 = self._port(self.net_a, "h2", "vm-2")
        self.dhcp1 = self._port(self.net_a, "h1", "dhcp-h1", owner="network:dhcp")
        self.dhcp2 = self._port(self.net_a, "h2", "dhcp-h2", owner="network:dhcp")
        self.b_port = self._port(self.net_b, "h1", "vm-b")

    def _network(self, name: str, cidr: str, dhcp: bool) -> tuple[str, str]:
        _, net = self.server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": "t"}})
        body = {"subnet": {"network_id": net["network"]["id"], "ip_version": 4, "cidr": cidr, "tenant_id": "t", "enable_dhcp": dhcp}}
        status, subnet = self.server.request("POST", "/v2.0/subnets", body)
        assert status == 201, subnet
        return net["network"]["id"], subnet["subnet"]["id"]

    def _port(self, net_id: str, host: str, device_id: str, owner: str = "compute:nova") -> dict[str, Any]:
        body = {"port": {"network_id": net_id, "tenant_id": "t", "binding:host_id": host, "device_id": device_id, "device_owner": owner}}
        status, port = self.server.request("POST", "/v2.0/ports", body)
        assert status == 201, port
        return port["port"]

    def port(self, port_id: str) -> tuple[int, Any]:
        return self.server.request("GET", f"/v2.0/ports/{port_id}")

    def delete_ports_except(self, keep: set[str]) -> None:
        for port in self.server.request("GET", "/v2.0/ports")[1]["ports"]:
            if port["id"] not in keep:
                self.server.request("DELETE", f"/v2.0/ports/{port['id']}")

    @property
    def fixed(self) -> set[str]:
        return {p["id"] for p in (self.vm1, self.vm2, self.dhcp1, self.dhcp2, self.b_port)}


@pytest.fixture(scope="module")
def env(db_url: str) -> Iterator[Env]:
    with channel_server(db_url) as server:
        yield Env(server)


def _normalise(body: Any, target: str) -> Any:
    """The answer with the named id replaced, so answers about different objects compare equal."""
    text = repr(body).replace(target, "<target>")
    return text


# (method, token, body for a target, what the targets are per case)
Body = Callable[[Env, str], dict[str, Any]]
NONEXISTENT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

DEVICE_CASES = {"other host's port": lambda e: e.vm2["id"], "other host's DHCP port": lambda e: e.dhcp2["id"]}
DHCP_PORT_CASES = {
    "other host's DHCP port": lambda e: e.dhcp2["id"],
    "VM port on the agent's own host": lambda e: e.vm1["id"],
    "other host's VM port": lambda e: e.vm2["id"],
}
DHCP_DEVICE_CASES = {
    "other host's DHCP device": lambda e: e.dhcp2["device_id"],
    "VM on the agent's own host": lambda e: e.vm1["device_id"],
    "other host's VM": lambda e: e.vm2["device_id"],
}
NETWORK_CASES = {"network without DHCP": lambda e: e.net_b}

# method -> (token, body(env, target), refused cases, the nonexistent target, the own target)
TABLE: dict[str, tuple[str, Body, dict[str, Callable[[Env], str]], str, Callable[[Env], str]]] = {
    "get_device_details": ("tok-h1", lambda e, t: {"device": t, "host": "h1"}, DEVICE_CASES, NONEXISTENT, lambda e: e.vm1["id"]),
    "update_device_up": ("tok-h1", lambda e, t: {"device": t, "host": "h1"}, DEVICE_CASES, NONEXISTENT, lambda e: e.vm1["id"]),
    "update_device_down": ("tok-h1", lambda e, t: {"device": t}, DEVICE_CASES, NONEXISTENT, lambda e: e.vm1["id"]),
    "update_device_list": ("tok-h1", lambda e, t: {"devices_up": [t], "host": "h1"}, DEVICE_CASES, NONEXISTENT, lambda e: e.vm1["id"]),
    "get_network_info": ("tok-dhcp1", lambda e, t: {"network_id": t, "host": "h1"}, NETWORK_CASES, NONEXISTENT, lambda e: e.net_a),
    "update_lease_expiration": (
        "tok-dhcp1", lambda e, t: {"network_id": t, "ip_address": "10.0.0.9"}, NETWORK_CASES, NONEXISTENT, lambda e: e.net_a,
    ),
    "create_dhcp_port": ("tok-dhcp1", lambda e, t: {"port": {"port": {"network_id": t}}}, NETWORK_CASES, NONEXISTENT, lambda e: e.net_a),
    "update_dhcp_port": (
        "tok-dhcp1",
        lambda e, t: {"port_id": t, "port": {"port": {"binding:host_id": "h1", "mac_address": "fa:16:3e:12:34:56", "name": "x"}}},
        DHCP_PORT_CASES, NONEXISTENT, lambda e: e.dhcp1["id"],
    ),
    "release_dhcp_port": ("tok-dhcp1", lambda e, t: {"network_id": e.net_a, "device_id": t}, DHCP_DEVICE_CASES, "no-such-device", None),
    "release_port_fixed_ip": (
        "tok-dhcp1", lambda e, t: {"network_id": e.net_a, "device_id": t, "subnet_id": e.subnet_a}, DHCP_DEVICE_CASES, "no-such-device",
        None,
    ),
    "get_dhcp_port": ("tok-dhcp1", lambda e, t: {"network_id": e.net_a, "device_id": t}, DHCP_DEVICE_CASES, "no-such-device", None),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(TABLE))
def test_what_is_not_the_callers_is_answered_as_nonexistent_and_unchanged(env: Env, method: str) -> None:
    token, body, cases, nonexistent, _ = TABLE[method]
    answers = {}
    for case, target_of in {**cases, "nonexistent": lambda e: nonexistent}.items():
        target = target_of(env)
        before = snapshot(env.server)
        status, answer = rpc(env.server, method, body(env, target), token)
        assert status < 500, (case, answer)
        if method == "get_dhcp_port":
            # Not the caller's: a new DHCP port of its own is made, as for an unknown device; what was named is untouched.
            assert status == 200, answer
            made = answer["result"]
            assert made["id"] not in env.fixed and made["binding:host_id"] == "h1" and made["device_owner"] == "network:dhcp"
            after = snapshot(env.server)
            assert [p for p in after["ports"] if p["id"] in env.fixed] == [p for p in before["ports"] if p["id"] in env.fixed], case
            env.delete_ports_except(env.fixed)
            answers[case] = status
            continue
        assert snapshot(env.server) == before, f"{method} on {case} changed the store"
        answers[case] = (status, _normalise(answer, target))
    assert all(a == answers["nonexistent"] for a in answers.values()), answers


@pytest.mark.parametrize("method", sorted(m for m in TABLE if TABLE[m][4] is not None))
def test_the_callers_own_objects_are_reachable(env: Env, method: str) -> None:
    token, body, _, _, own = TABLE[method]
    status, answer = rpc(env.server, method, body(env, own(env)), token)
    try:
        assert status == 200, answer
        result = answer["result"]
        if method == "get_device_details":
            assert result["mac_address"] == env.vm1["mac_address"]
        elif method in ("update_device_up", "update_device_down"):
            assert result["exists"] is True
        elif method == "update_device_list":
            assert result["devices_up"] == [env.vm1["id"]]
        elif method == "get_network_info":
            assert {p["id"] for p in result["ports"]} >= {env.vm1["id"], env.vm2["id"]}
        elif method == "create_dhcp_port":
            assert (result["device_owner"], result["binding:host_id"]) == ("network:dhcp", "h1")
        elif method == "update_dhcp_port":
            assert result["id"] == env.dhcp1["id"] and result["binding:host_id"] == "h1"
    finally:
        env.delete_ports_except(env.fixed)
        rpc(env.server, "update_dhcp_port", {"port_id": env.dhcp1["id"], "port": {"mac_address": env.dhcp1["mac_address"]}}, "tok-dhcp1")


def test_dhcp_agent_releases_only_its_own_dhcp_port(env: Env) -> None:
    made = rpc(env.server, "get_dhcp_port", {"network_id": env.net_a, "device_id": "dhcp-own"}, "tok-dhcp1")[1]["result"]
    again = rpc(env.server, "get_dhcp_port", {"network_id": env.net_a, "device_id": "dhcp-own"}, "tok-dhcp1")[1]["result"]
    assert again["id"] == made["id"]  # reused
    args = {"network_id": env.net_a, "device_id": "dhcp-own", "subnet_id": env.subnet_a}
    assert rpc(env.server, "release_port_fixed_ip", args, "tok-dhcp1")[0] == 200
    assert env.port(made["id"])[1]["port"]["fixed_ips"] == []
    assert rpc(env.server, "release_dhcp_port", {"network_id": env.net_a, "device_id": "dhcp-own"}, "tok-dhcp2")[0] == 200
    assert env.port(made["id"])[0] == 200  # another host's DHCP agent cannot release it
    assert rpc(env.server, "release_dhcp_port", {"network_id": env.net_a, "device_id": "dhcp-own"}, "tok-dhcp1")[0] == 200
    assert env.port(made["id"])[0] == 404


def test_dhcp_agents_see_the_networks_with_dhcp_enabled_subnets(env: Env) -> None:
    assert rpc(env.server, "get_active_networks", {"host": "h1"}, "tok-dhcp1")[1]["result"] == [env.net_a]
    infos = rpc(env.server, "get_active_networks_info", {}, "tok-dhcp1")[1]["result"]
    assert [i["id"] for i in infos] == [env.net_a]


def test_a_vm_port_cannot_be_turned_into_a_dhcp_port(env: Env) -> None:
    """get_dhcp_port with a VM's device id used to take the VM's port over (owner changed to network:dhcp)."""
    before = env.port(env.vm1["id"])[1]
    status, answer = rpc(env.server, "get_dhcp_port", {"network_id": env.net_a, "device_id": env.vm1["device_id"]}, "tok-dhcp1")
    env.delete_ports_except(env.fixed)
    assert status == 200 and answer["result"]["id"] != env.vm1["id"]
    assert env.port(env.vm1["id"])[1] == before


DEVICE_METHODS = ["get_device_details", "update_device_up", "update_device_down", "update_device_list", "get_devices_for_host"]
DHCP_METHODS = [
    "get_active_networks", "get_active_networks_info", "get_network_info", "get_dhcp_port", "create_dhcp_port", "update_dhcp_port",
    "release_dhcp_port", "release_port_fixed_ip", "update_lease_expiration",
]  # fmt: skip


def _valid_body(env: Env, method: str) -> dict[str, Any]:
    if method in TABLE:
        own = TABLE[method][4]
        return TABLE[method][1](env, own(env) if own else "dhcp-h1")
    if method == "report_state":
        return {"agent_state": {"agent_type": "x", "binary": "y"}}
    return {}


@pytest.mark.parametrize(
    ("method", "token"), [(m, "tok-dhcp1") for m in DEVICE_METHODS] + [(m, "tok-h1") for m in DHCP_METHODS]
)  # fmt: skip
def test_each_method_is_for_its_role_only(env: Env, method: str, token: str) -> None:
    before = snapshot(env.server)
    status, answer = rpc(env.server, method, _valid_body(env, method), token)
    assert status == 403 and answer["NeutronError"]["type"] == "PolicyNotAuthorized", answer
    assert snapshot(env.server) == before


def _with_other_host(env: Env, method: str) -> list[dict[str, Any]]:
    """The method's valid body naming host h2 in each place a host can be named."""
    body = _valid_body(env, method)
    variants = [dict(body, host="h2")]
    if method == "report_state":
        variants.append({"agent_state": dict(body["agent_state"], host="h2")})
    if method in ("create_dhcp_port", "update_dhcp_port"):
        port = dict(body["port"]["port"], **{"binding:host_id": "h2"})
        variants.append(dict(body, port={"port": port}))
    return variants


@pytest.mark.parametrize(
    ("method", "token"),
    [(m, "tok-h1") for m in DEVICE_METHODS] + [(m, "tok-dhcp1") for m in DHCP_METHODS] + [("report_state", "tok-h1")],
)
def test_the_host_a_body_names_must_be_the_tokens(env: Env, method: str, token: str) -> None:
    for body in _with_other_host(env, method):
        before = snapshot(env.server)
        status, answer = rpc(env.server, method, body, token)
        assert status == 403 and answer["NeutronError"]["type"] == "PolicyNotAuthorized", (body, answer)
        assert snapshot(env.server) == before


def test_admin_token_acts_for_the_host_it_names(env: Env) -> None:
    status, answer = rpc(env.server, "get_device_details", {"device": env.vm2["id"], "host": "h1"}, "tok-admin")
    assert (status, answer["result"]) == (200, {"device": env.vm2["id"]})
    status, answer = rpc(env.server, "get_device_details", {"device": env.vm2["id"]}, "tok-admin")
    assert status == 200 and answer["result"]["mac_address"] == env.vm2["mac_address"]
    status, answer = rpc(env.server, "get_devices_for_host", {"host": "h2"}, "tok-admin")
    assert {p["id"] for p in answer["result"]} == {env.vm2["id"], env.dhcp2["id"]}


def test_a_port_unbound_from_the_host_can_still_be_reported_down_by_it_only(env: Env) -> None:
    port = env._port(env.net_a, "h1", "vm-moving")
    try:
        assert rpc(env.server, "update_device_up", {"device": port["id"]}, "tok-h1")[1]["result"]["exists"] is True
        env.server.request("PUT", f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": ""}})
        assert rpc(env.server, "update_device_down", {"device": port["id"]}, "tok-h2")[1]["result"]["exists"] is False
        assert rpc(env.server, "update_device_up", {"device": port["id"]}, "tok-h1")[1]["result"]["exists"] is False
        assert env.port(port["id"])[1]["port"]["status"] == "ACTIVE"
        assert rpc(env.server, "update_device_down", {"device": port["id"]}, "tok-h1")[1]["result"]["exists"] is True
        assert env.port(port["id"])[1]["port"]["status"] == "DOWN"
    finally:
        env.delete_ports_except(env.fixed)


def test_the_device_name_prefix_finds_only_the_hosts_own_ports(env: Env) -> None:
    """``tap`` + 11 characters of the id: another host's port with that prefix is not found."""
    status, answer = rpc(env.server, "get_device_details", {"device": "tap" + env.vm2["id"][:11]}, "tok-h1")
    assert (status, answer["result"]) == (200, {"device": "tap" + env.vm2["id"][:11]})
    status, answer = rpc(env.server, "get_device_details", {"device": "tap" + env.vm1["id"][:11]}, "tok-h1")
    assert answer["result"]["port_id"] == env.vm1["id"]
    assert uuid.UUID(answer["result"]["port_id"])
