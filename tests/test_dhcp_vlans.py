"""The local VLAN registry two agents of one host share on br-int (``Bridge.external_ids``), against a real ovsdb-server.

Two OVSDB connections stand for the host agent and the DHCP agent: claims made at the same
moment (each built from the same replica, so the later commit fails its verify and is rebuilt)
never give one network two tags, nor two networks one tag.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_twisted
from twisted.internet import defer, reactor, task

from restproxy_agent.bridge import VLAN_KEY, IntegrationBridge
from restproxy_agent.ovsdb import OvsdbConnection
from restproxy_testing.ovs_sandbox import OvsSandbox
from tests.ovs_sandbox import ovs_sandbox as ovs_sandbox  # noqa: F401  (the module-scoped fixture)


@pytest_twisted.async_yield_fixture
async def two_agents(ovs_sandbox: OvsSandbox) -> AsyncIterator[tuple[IntegrationBridge, IntegrationBridge]]:  # noqa: F811
    name = f"brv-{ovs_sandbox.tag}"
    conns = [await OvsdbConnection(ovs_sandbox.endpoint).connect(timeout=10) for _ in range(2)]
    bridges = (IntegrationBridge(conns[0]), IntegrationBridge(conns[1]))
    await bridges[0].ensure_bridge(name, datapath_type="netdev")
    await bridges[1].ensure_bridge(name, datapath_type="netdev")
    try:
        yield bridges
    finally:
        ovs_sandbox.vsctl("--if-exists", "del-br", name)
        for conn in conns:
            conn.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_from_two_processes_never_collide(two_agents: tuple[IntegrationBridge, IntegrationBridge]) -> None:
    host, dhcp = two_agents
    nets = [str(uuid.uuid4()) for _ in range(6)]
    # Different networks at once, from both sides: all different tags.
    tags = await defer.gatherResults(
        [host.claim_vlan(nets[0]), dhcp.claim_vlan(nets[1]), host.claim_vlan(nets[2]), dhcp.claim_vlan(nets[3])]
    )
    assert len(set(tags)) == 4
    # The same network at once from both: one tag.
    same = await defer.gatherResults([host.claim_vlan(nets[4]), dhcp.claim_vlan(nets[4])])
    assert same[0] == same[1] and same[0] not in tags
    # A tag some port carries (plugged before the registry knew it) is never handed out.
    await host.add_port("vlanport0", "internal", {"iface-id": "x", "attached-mac": "fa:16:3e:00:00:01"}, tag=7)
    free = await dhcp.claim_vlan(nets[5])
    assert free not in (7, *tags, same[0])
    expected = {**dict(zip(nets[:4], tags, strict=True)), nets[4]: same[0], nets[5]: free}
    for _ in range(100):  # the other connection's last commit reaches this replica a moment later
        registry = {
            k[len(VLAN_KEY) :]: int(v) for k, v in host.conn.lookup("Bridge", host.name).external_ids.items() if k.startswith(VLAN_KEY)
        }
        if registry == expected:
            break
        await task.deferLater(reactor, 0.05)
    assert registry == expected
    # A deleted network's claim goes, unless a port still carries its tag.
    await host.add_port("vlanport1", "internal", {"iface-id": "y", "attached-mac": "fa:16:3e:00:00:02"}, tag=tags[0])
    assert await dhcp.release_vlan(nets[0]) is False
    assert await dhcp.release_vlan(nets[1]) is True
    used = {tags[0], tags[2], tags[3], same[0], free, 7}
    assert await host.claim_vlan(str(uuid.uuid4())) == next(t for t in range(1, 4095) if t not in used)  # nets[1]'s tag is free again
