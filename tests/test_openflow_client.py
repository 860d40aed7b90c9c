"""The OpenFlow 1.3 client against a real ovs-vswitchd (private sandbox): handshake, barrier-completed batches,
errors tied to their batch, ONF bundles all-or-nothing, flow stats, version refusal."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from os_ken.ofproto import ofproto_v1_3 as ofp
from twisted.internet import reactor
from twisted.internet.task import deferLater

from restproxy_agent.firewall import encode
from restproxy_agent.firewall.flows import NORMAL, Flow, goto, match
from restproxy_agent.openflow import LANE_MIN, OpenFlowClient, OpenFlowError
from restproxy_testing.ovs_sandbox import OvsSandbox
from tests.ovs_sandbox import ovs_sandbox as ovs_sandbox  # noqa: F401  (the module-scoped fixture)

BR = "br-ofc"
GOOD = Flow(0, 10, match(in_port=1), (NORMAL,))
OTHER = Flow(0, 11, match(in_port=2), (NORMAL,))
BAD = Flow(10, 1, match(), (goto(5),))  # goto_table to an earlier table: the switch refuses it


@pytest_twisted.async_yield_fixture
async def client(ovs_sandbox: OvsSandbox) -> AsyncIterator[OpenFlowClient]:  # noqa: F811
    ovs_sandbox.vsctl("--may-exist", "add-br", BR, "--", "set", "Bridge", BR, "datapath_type=netdev", "protocols=OpenFlow13",
                      "fail_mode=secure")  # fmt: skip
    c = OpenFlowClient(reactor, f"{ovs_sandbox.run_dir}/{BR}.mgmt")
    await c.connect()
    try:
        yield c
    finally:
        c.stop()
        ovs_sandbox.vsctl("del-br", BR)


def cookies(stats: list) -> list[int]:
    return sorted(s.cookie for s in stats)


@pytest_twisted.ensureDeferred
async def test_a_batch_completes_on_its_barrier_and_flows_read_back(client: OpenFlowClient) -> None:
    await client.send([encode.add(GOOD, 0x10), encode.add(OTHER, 0x11)])
    assert cookies(await client.flow_stats()) == [0x10, 0x11] == sorted(await client.flow_cookies())
    await client.send([encode.delete_cookie(0x10)])
    assert cookies(await client.flow_stats()) == [0x11]


@pytest_twisted.ensureDeferred
async def test_an_error_fails_its_batch_and_a_bundle_applies_nothing(client: OpenFlowClient) -> None:
    with pytest.raises(OpenFlowError) as refused:
        await client.send([encode.add(BAD, 0x20)])
    assert refused.value.type == ofp.OFPET_BAD_INSTRUCTION
    with pytest.raises(OpenFlowError):
        await client.bundle([encode.add(GOOD, 0x21), encode.add(BAD, 0x21)])
    assert cookies(await client.flow_stats()) == []  # the good flow of the refused bundle is not there either
    await client.bundle([encode.add(GOOD, 0x22)])  # and the connection carries on
    assert cookies(await client.flow_stats()) == [0x22]
    await client.stream([lambda f=f: encode.add(f, 0x23) for f in (GOOD, OTHER)], atomic=True, chunk=1)
    assert cookies(await client.flow_stats()) == [0x23, 0x23]


@pytest_twisted.ensureDeferred
async def test_a_bridge_without_openflow13_is_refused(ovs_sandbox: OvsSandbox) -> None:  # noqa: F811
    ovs_sandbox.vsctl("add-br", "br-of10", "--", "set", "Bridge", "br-of10", "datapath_type=netdev", "protocols=OpenFlow10")
    try:
        c = OpenFlowClient(reactor, f"{ovs_sandbox.run_dir}/br-of10.mgmt")
        proto_d = c.connect()
        try:
            await deferLater(reactor, 1.0, lambda: None)
            assert not proto_d.called  # it keeps retrying; it never claims a 1.0-only bridge
        finally:
            c.stop()
    finally:
        ovs_sandbox.vsctl("del-br", "br-of10")


@pytest_twisted.ensureDeferred
async def test_a_large_plain_batch_goes_over_every_lane_and_an_error_on_any_fails_it(client: OpenFlowClient) -> None:
    await deferLater(reactor, 0.3, lambda: None)  # (the extra lanes connect after the main connection)
    assert len(client._extra) == client.lanes - 1
    flows = [Flow(0, 10, match(in_port=i + 1), (NORMAL,)) for i in range(LANE_MIN)]
    await client.stream([lambda f=f: encode.add(f, 0x30) for f in flows], atomic=False, chunk=100)
    assert cookies(await client.flow_stats()) == [0x30] * LANE_MIN == await client.flow_cookies()  # (several replies)
    bad = [*(Flow(0, 11, match(in_port=i + 1), (NORMAL,)) for i in range(LANE_MIN - 1)), BAD]
    with pytest.raises(OpenFlowError):  # the refused one is on the last lane, whose barrier comes back last or not
        await client.stream([lambda f=f: encode.add(f, 0x31) for f in bad], atomic=False, chunk=100)


def broken(flows: list[Flow], cookie: int, at: int) -> list[Any]:
    """Encoders for ``flows`` of which the one at ``at`` raises (a bug in an encoder, not a switch error)."""

    def make(n: int, f: Flow) -> Any:
        if n == at:
            raise ValueError("encoder bug")
        return encode.add(f, cookie)

    return [functools.partial(make, n, f) for n, f in enumerate(flows)]


@pytest_twisted.ensureDeferred
async def test_an_error_midway_through_a_spread_batch_waits_for_every_lane_before_it_goes_up(client: OpenFlowClient) -> None:
    """What went out on any lane is in the switch when the error reaches the caller (its next batch, a delete bundle,
    cannot be overtaken by adds still queued on another lane), and no lane keeps the batch open."""
    await deferLater(reactor, 0.3, lambda: None)
    lanes = [client.proto, *client._extra]
    assert len(lanes) == client.lanes
    flows = [Flow(0, 10, match(in_port=i + 1), (NORMAL,)) for i in range(LANE_MIN)]
    chunk = LANE_MIN // client.lanes  # (what _spread makes of it: every lane gets a part)
    at = chunk * (client.lanes - 1)  # the last lane's chunk fails: the others have written theirs
    with pytest.raises(ValueError):
        await client.stream(broken(flows, 0x40, at), atomic=False, chunk=1000)
    assert all(not p._open for p in lanes)
    assert sorted(await client.flow_cookies()) == [0x40] * at
    await client.stream([lambda f=f: encode.add(f, 0x41) for f in flows], atomic=False)  # the lanes carry on
    assert sorted(await client.flow_cookies()) == [0x41] * LANE_MIN


@pytest_twisted.ensureDeferred
async def test_an_encoder_error_in_a_bundle_discards_it_and_leaves_no_batch_open(client: OpenFlowClient) -> None:
    with pytest.raises(ValueError):
        await client.stream(broken([GOOD, OTHER], 0x50, 1), atomic=True, chunk=1)
    assert not client.proto._open
    assert await client.flow_cookies() == []  # never committed
    await client.bundle([encode.add(GOOD, 0x51)])
    assert await client.flow_cookies() == [0x51]
