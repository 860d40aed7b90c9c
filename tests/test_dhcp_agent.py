"""restproxy-dhcp-agent end to end: API -> server -> DHCP channel -> DHCP agent -> dnsmasq in qdhcp- namespaces on a
private OVS (userspace datapath), with the host agent plugging VMs (netns) that boot with a real DHCP client (udhcpc).

Each test starts one sandbox, server, host agent and DHCP agent (``restproxy_testing.dhcp_stack``) and checks that
nothing is left behind (processes, namespaces, devices).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from restproxy_testing.dhcp_stack import DhcpStack, dhcp_stack, dnsmasq_processes, netns_list
from restproxy_testing.support import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")


@pytest.fixture
def dhcp() -> Iterator[DhcpStack]:
    with dhcp_stack() as d:
        yield d


def _ip(port: dict) -> str:
    return port["fixed_ips"][0]["ip_address"]


def test_vm_boots_with_its_fixed_ip_gateway_metadata_route_dns_and_mtu_then_changes_reach_it(dhcp: DhcpStack) -> None:
    agent = dhcp.agent()
    net_id, subnet = dhcp.network("d1", "10.81.0.0/24", dns_nameservers=["10.81.0.53"])
    port, vm = dhcp.boot(net_id, "v1", fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.81.0.10"}])
    lease = vm.wait_lease(ip="10.81.0.10")
    dhcp_port = wait_for("the DHCP port", lambda: _dhcp_port(dhcp, net_id))
    server_ip = _ip(dhcp_port)
    assert lease["router"] == "10.81.0.1"
    assert lease["dns"].split() == ["10.81.0.53"]
    assert lease["mtu"] == "1500"
    assert lease["serverid"] == server_ip
    routes = lease["staticroutes"].split()
    assert ("169.254.169.254/32", server_ip) in list(zip(routes[::2], routes[1::2]))
    assert ("0.0.0.0/0", "10.81.0.1") in list(zip(routes[::2], routes[1::2]))
    assert "default via 10.81.0.1" in vm.routes() and "169.254.169.254 via " + server_ip in vm.routes()
    # The DHCP port: network:dhcp, bound to this host, Neutron's device_id, and its namespace holds its address.
    assert dhcp_port["binding:host_id"] == "e2e-host" and dhcp_port["device_id"].startswith("dhcp")
    assert dhcp_port["device_id"].endswith(net_id)
    assert f"qdhcp-{net_id}" in netns_list()
    log = agent.log()
    assert f"network {net_id} dnsmasq started: pid {agent.dnsmasq_pid(net_id)}, netns qdhcp-{net_id}" in log
    # GET /v2.0/agents shows it alive, as a "DHCP agent".
    report = wait_for("the DHCP agent's report", lambda: [a for a in dhcp.agents_report() if a["agent_type"] == "DHCP agent"])
    assert report[0]["alive"] and report[0]["binary"] == "restproxy-dhcp-agent" and report[0]["host"] == "e2e-host"

    # A new DNS server on the subnet reaches the VM at its next renewal (files rewritten, SIGHUP, same dnsmasq).
    pid = agent.dnsmasq_pid(net_id)
    mark = agent.mark()
    status, _ = dhcp.stack.server.request(
        "PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"dns_nameservers": ["10.81.0.53", "10.81.0.54"]}}
    )
    assert status == 200
    agent.wait_log(f"network {net_id} dnsmasq pid {pid} reloaded (SIGHUP)", mark)
    vm.renew()
    lease = vm.wait_lease(ip="10.81.0.10", dns="10.81.0.53 10.81.0.54")
    assert agent.dnsmasq_pid(net_id) == pid

    # A fixed-IP change is served at the next renewal: the old lease is released, the renewal NAKed, the new IP bound.
    mark = agent.mark()
    dhcp.stack.update(port["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.81.0.20"}])
    tail = agent.wait_log("1 hosts changed" if False else "reloaded (SIGHUP): 2 hosts changed (+1 -1)", mark)
    assert f"dnsmasq pid {pid}" in tail
    vm.renew()
    vm.wait_lease(ip="10.81.0.20", timeout=30)
    assert agent.dnsmasq_pid(net_id) == pid

    # Deleting the network leaves no dnsmasq, namespace, OVS port or state behind.
    dhcp.stack.delete(port["id"])
    vm.stop()
    status, _ = dhcp.stack.server.request("DELETE", f"/v2.0/networks/{net_id}")
    assert status == 204
    agent.wait_log(f"network {net_id} torn down: dnsmasq pid {pid} stopped, netns qdhcp-{net_id} deleted")
    assert not any(f"{net_id}" in cmd for _, cmd in dnsmasq_processes())
    assert f"qdhcp-{net_id}" not in netns_list()
    assert not [n for n, ids in dhcp.stack.interfaces().items() if ids.get("restproxy-owner") == "dhcp"]
    assert not os.path.exists(os.path.join(agent.state_path, net_id))
    assert f"tap{dhcp_port['id'][:11]}" not in os.listdir("/sys/class/net")


def _dhcp_port(dhcp: DhcpStack, net_id: str) -> dict | None:
    status, body = dhcp.stack.server.request("GET", f"/v2.0/ports?network_id={net_id}&device_owner=network:dhcp")
    ports = body["ports"] if status == 200 else []
    return ports[0] if ports else None
