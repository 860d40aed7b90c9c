"""Security groups end to end: API -> server -> channel -> restproxy-agent -> OpenFlow on br-int -> netns VMs.

The agent-level cases (spoofing, allowed pairs, restarts with kill -9) are in test_agent_security_groups.py against a
stand-in channel; these drive the same enforcement through the real server, as a tenant would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing.support import wait_for
from tests.agent_stack import Stack, agent_stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    with agent_stack() as s:
        yield s


def _ok(status_body: tuple[int, Any], status: int = 201) -> dict[str, Any]:
    code, body = status_body
    assert code == status, body
    return body


def _default_group(stack: Stack, tenant: str) -> str:
    groups = _ok(stack.server.request("GET", f"/v2.0/security-groups?tenant_id={tenant}&name=default"), 200)["security_groups"]
    assert len(groups) == 1, groups
    return groups[0]["id"]


def _rule(stack: Stack, group: str, tenant: str, **rule: Any) -> str:
    body = {"security_group_rule": {"security_group_id": group, "direction": "ingress", "ethertype": "IPv4", "tenant_id": tenant, **rule}}
    return _ok(stack.server.request("POST", "/v2.0/security-group-rules", body))["security_group_rule"]["id"]


def _until(what: str, probe: Any, timeout: float = 15.0) -> None:
    wait_for(what, probe, timeout=timeout)


def test_groups_decide_who_reaches_whom_on_a_shared_network(stack: Stack) -> None:
    net = _ok(stack.server.request("POST", "/v2.0/networks", {"network": {"name": "sg", "tenant_id": "t", "shared": True}}))["network"]
    _ok(
        stack.server.request(
            "POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "tenant_id": "t", "ip_version": 4, "cidr": "10.74.0.0/24"}}
        )
    )
    a1, a2 = stack.vm_port(net["id"], "a1"), stack.vm_port(net["id"], "a2")  # tenant t: t's default group
    b1 = stack.vm_port(net["id"], "b1", tenant_id="u")  # tenant u: u's default group
    t_default, u_default = _default_group(stack, "t"), _default_group(stack, "u")
    assert a1["security_groups"] == [t_default] and b1["security_groups"] == [u_default]
    stack.wait_status([a1["id"], a2["id"], b1["id"]], "ACTIVE")
    for port in (a1, a2, b1):
        assert stack.port(port["id"])["binding:vif_details"]["port_filter"] is True
    vm_a1, vm_a2, vm_b1 = stack.vm(a1, "a1"), stack.vm(a2, "a2"), stack.vm(b1, "b1")
    ip = {name: p["fixed_ips"][0]["ip_address"] for name, p in (("a1", a1), ("a2", a2), ("b1", b1))}

    # The default group: its members talk; the other tenant's VM is refused both ways (each side's ingress).
    assert vm_a1.ping_until(ip["a2"], deadline=10)
    assert vm_a1.tcp_roundtrip(vm_a2, ip["a2"])
    assert not vm_b1.ping(ip["a1"], count=2, wait=1)
    assert not vm_a1.ping(ip["b1"], count=2, wait=1)

    # TCP 22 from a1's address only, in a group of tenant u that b1 joins.
    ssh = _ok(stack.server.request("POST", "/v2.0/security-groups", {"security_group": {"name": "ssh", "tenant_id": "u"}}))
    ssh_id = ssh["security_group"]["id"]
    rule = _rule(stack, ssh_id, "u", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix=ip["a1"] + "/32")
    stack.update(b1["id"], security_groups=[u_default, ssh_id])
    _until("a1 -> b1:22 admitted", lambda: vm_a1.tcp_roundtrip(vm_b1, ip["b1"], port=22, timeout=2))
    assert not vm_a2.tcp_roundtrip(vm_b1, ip["b1"], port=22, timeout=2)  # not from that CIDR
    assert not vm_a1.tcp_roundtrip(vm_b1, ip["b1"], port=2222, timeout=2)  # not that port
    assert not vm_a1.ping(ip["b1"], count=2, wait=1)  # nor ICMP

    # Deleting the rule refuses new connections.
    _ok(stack.server.request("DELETE", f"/v2.0/security-group-rules/{rule}"), 204)
    _until("a1 -> b1:22 refused after the rule's delete", lambda: not vm_a1.tcp_roundtrip(vm_b1, ip["b1"], port=22, timeout=2))

    # Remote group: ICMP from members of ssh admitted at b1's peers in u's default; membership changes take effect.
    b2 = stack.vm_port(net["id"], "b2", tenant_id="u", security_groups=[ssh_id])
    stack.wait_status([b2["id"]], "ACTIVE")
    vm_b2 = stack.vm(b2, "b2")
    ip["b2"] = b2["fixed_ips"][0]["ip_address"]
    assert not vm_b2.ping(ip["b1"], count=2, wait=1)  # b2 is not in u's default group: b1 refuses it
    stack.update(b2["id"], security_groups=[ssh_id, u_default])
    _until("b2 joined u's default group: b1 admits it", lambda: vm_b2.ping(ip["b1"], count=1, wait=1))
    stack.update(b2["id"], security_groups=[ssh_id])
    _until("b2 left u's default group: b1 refuses it", lambda: not vm_b2.ping(ip["b1"], count=2, wait=1))

    # port_security_enabled false (no groups): b2 takes anything.
    stack.update(b2["id"], security_groups=[], port_security_enabled=False)
    _until("a1 -> b2 with b2's port security off", lambda: vm_a1.ping(ip["b2"], count=1, wait=1))
    assert stack.port(b2["id"])["binding:vif_details"]["port_filter"] is False


def test_a_vm_stays_isolated_from_unfiltered_neighbours_across_an_agent_kill(stack: Stack) -> None:
    """kill -9 and restart of the agent: the default group keeps admitting members and refusing the other tenant."""
    net = _ok(stack.server.request("POST", "/v2.0/networks", {"network": {"name": "k", "tenant_id": "t", "shared": True}}))["network"]
    _ok(
        stack.server.request(
            "POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "tenant_id": "t", "ip_version": 4, "cidr": "10.75.0.0/24"}}
        )
    )
    a1, a2 = stack.vm_port(net["id"], "k1"), stack.vm_port(net["id"], "k2")
    b1 = stack.vm_port(net["id"], "k3", tenant_id="u")
    stack.wait_status([a1["id"], a2["id"], b1["id"]], "ACTIVE")
    vm_a1, vm_b1 = stack.vm(a1, "k1"), stack.vm(b1, "k3")
    stack.vm(a2, "k2")
    a2_ip = a2["fixed_ips"][0]["ip_address"]
    assert vm_a1.ping_until(a2_ip, deadline=10)
    mark = stack.agent.mark()
    stack.agent.kill()
    assert not vm_b1.ping(a2_ip, count=2, wait=1)  # the flows stay in OVS while no agent runs
    stack.agent.start()
    stack.agent.wait_log("firewall: removed", mark, timeout=60)
    assert vm_a1.ping_until(a2_ip, deadline=10)
    assert not vm_b1.ping(a2_ip, count=2, wait=1)
