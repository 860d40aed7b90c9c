"""restproxy-dhcp-agent end to end: API -> server -> DHCP channel -> DHCP agent -> dnsmasq in qdhcp- namespaces on a
private OVS (userspace datapath), with the host agent plugging VMs (netns) that boot with a real DHCP client (udhcpc).

Each test starts one sandbox, server, host agent and DHCP agent (``restproxy_testing.dhcp_stack``) and checks that
nothing is left behind (processes, namespaces, devices).
"""

from __future__ import annotations

import os
import signal
import time
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
    port, vm = dhcp.boot(net_id, "v1", fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.81.0.110"}])
    lease = vm.wait_lease(ip="10.81.0.110")
    dhcp_port = wait_for("the DHCP port", lambda: _dhcp_port(dhcp, net_id))
    server_ip = _ip(dhcp_port)
    assert lease["router"] == "10.81.0.1"
    assert lease["dns"].split() == ["10.81.0.53"]
    assert lease["mtu"] == "1500"
    assert lease["serverid"] == server_ip
    words = lease["staticroutes"].split()
    routes = list(zip(words[::2], words[1::2], strict=True))
    assert ("169.254.169.254/32", server_ip) in routes and ("0.0.0.0/0", "10.81.0.1") in routes
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
    lease = vm.wait_lease(ip="10.81.0.110", dns="10.81.0.53 10.81.0.54")
    assert agent.dnsmasq_pid(net_id) == pid

    # A fixed-IP change is served at the next renewal: the old lease is released, the renewal NAKed, the new IP bound.
    mark = agent.mark()
    dhcp.stack.update(port["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.81.0.120"}])
    tail = agent.wait_log("reloaded (SIGHUP): 2 hosts changed (+1 -1)", mark)
    assert f"dnsmasq pid {pid}" in tail
    vm.renew()
    vm.wait_lease(ip="10.81.0.120", timeout=30)
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


def test_same_cidr_on_two_networks_each_its_own_dnsmasq_and_two_agents_offer_the_same_address(dhcp: DhcpStack) -> None:
    """Two networks with one CIDR: a dnsmasq each, and neither hears the other's VMs. A second DHCP agent (another host)
    serves both networks too, and offers each VM the same address as the first."""
    first = dhcp.agent()
    second = dhcp.agent(token="tok-dhcp-net-2", host="net-2", name="dhcp2")
    net_a, sub_a = dhcp.network("a", "10.82.0.0/24")
    net_b, sub_b = dhcp.network("b", "10.82.0.0/24")
    port_a, vm_a = dhcp.boot(net_a, "va", fixed_ips=[{"subnet_id": sub_a["id"], "ip_address": "10.82.0.110"}])
    port_b, vm_b = dhcp.boot(net_b, "vb", fixed_ips=[{"subnet_id": sub_b["id"], "ip_address": "10.82.0.120"}])
    vm_a.wait_lease(ip="10.82.0.110")
    vm_b.wait_lease(ip="10.82.0.120")
    pids = {(a.state_path, n): a.dnsmasq_pid(n) for a in (first, second) for n in (net_a, net_b)}
    assert None not in pids.values() and len(set(pids.values())) == 4
    for agent in (first, second):
        # Each network's dnsmasq saw its own VM's MAC, never the other network's.
        log_a, log_b = agent.dnsmasq_log(net_a), agent.dnsmasq_log(net_b)
        assert port_b["mac_address"] not in log_a and port_a["mac_address"] not in log_b
    # Both agents' dnsmasq answer, with the same address (the same static host entry): never two different ones.
    wait_for("offers from both agents", lambda: all("DHCPOFFER(ns-" in a.dnsmasq_log(net_a) for a in (first, second)), timeout=20)
    for agent in (first, second):
        offers = [line for line in agent.dnsmasq_log(net_a).splitlines() if "DHCPOFFER" in line or "DHCPACK" in line]
        assert offers and all("10.82.0.110 " + port_a["mac_address"] in line for line in offers), offers
    ports = [
        p for p in dhcp.stack.server.request("GET", f"/v2.0/ports?network_id={net_a}")[1]["ports"] if p["device_owner"] == "network:dhcp"
    ]
    assert sorted(p["binding:host_id"] for p in ports) == ["e2e-host", "net-2"]
    # Both DHCP ports sit on br-e2e with the network's one local VLAN tag, the one the host agent gave the VM.
    tags = dict(
        line.split()
        for line in dhcp.stack.sandbox.vsctl("--format=table", "--no-headings", "--columns=name,tag", "list", "Port").splitlines()
        if "[]" not in line
    )
    vlan_a = tags["tap" + port_a["id"][:11]]
    assert {tags["tap" + p["id"][:11]] for p in ports} == {vlan_a}
    assert tags["tap" + port_b["id"][:11]] != vlan_a


def test_agent_restart_kill_and_dnsmasq_kill_keep_dhcp_served(dhcp: DhcpStack) -> None:
    agent = dhcp.agent()
    net_id, subnet = dhcp.network("f", "10.83.0.0/24")
    port, vm = dhcp.boot(net_id, "vf", fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.83.0.110"}])
    vm.wait_lease(ip="10.83.0.110")
    pid = agent.dnsmasq_pid(net_id)
    assert pid is not None

    # kill -9 of the agent: dnsmasq goes on serving (a renewal is answered while the agent is dead).
    agent.kill()
    vm.forget()
    vm.renew()
    assert vm.wait_lease(ip="10.83.0.110")["event"] == "renew"
    assert agent.dnsmasq_pid(net_id) == pid
    # The restarted agent adopts it (same pid, files resynced with SIGHUP), and serves a VM booted since.
    mark = agent.mark()
    agent.start()
    agent.wait_log(f"network {net_id} dnsmasq pid {pid} adopted", mark)
    agent.wait_log(f"network {net_id} dnsmasq pid {pid} reloaded (SIGHUP)", mark)
    _, vm2 = dhcp.boot(net_id, "vf2", fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.83.0.111"}])
    vm2.wait_lease(ip="10.83.0.111")
    assert agent.dnsmasq_pid(net_id) == pid
    assert sum(1 for _, cmd in dnsmasq_processes() if net_id in cmd) == 1

    # A clean restart (SIGTERM) leaves it running too, and adopts it again.
    agent.stop()
    assert agent.dnsmasq_pid(net_id) == pid
    mark = agent.mark()
    agent.start()
    agent.wait_log(f"network {net_id} dnsmasq pid {pid} adopted", mark)
    agent.wait_log("in step after reconcile (listed)", mark)
    assert "dnsmasq started" not in agent.log()[mark:]

    # kill -9 of the adopted dnsmasq: noticed and restarted within check_interval (0.5 s here) + start; the VM renews.
    mark = agent.mark()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    agent.wait_log(f"network {net_id} dnsmasq started", mark, timeout=10)
    restarted = wait_for("a new dnsmasq", lambda: agent.dnsmasq_pid(net_id), timeout=10)
    assert restarted != pid and time.monotonic() - killed < 5
    vm.forget()
    vm.renew()
    vm.wait_lease(ip="10.83.0.110")
    # ... and once more for a dnsmasq this run started (its exit is seen at once).
    mark = agent.mark()
    time.sleep(1.2)  # (one that exits within 1 s of its start is retried with backoff instead: it could not start)
    os.kill(restarted, signal.SIGKILL)
    agent.wait_log(f"dnsmasq pid {restarted} exited; restarting it", mark, timeout=10)
    wait_for("a third dnsmasq", lambda: agent.dnsmasq_pid(net_id) not in (None, pid, restarted), timeout=10)
    assert sum(1 for _, cmd in dnsmasq_processes() if net_id in cmd) == 1
