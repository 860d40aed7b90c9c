"""The agent's reconcile decisions, on a Clock with in-memory br-int, links and channel (tests/fast/agent_doubles.py).

The real-OVS tests (test_agent_e2e, test_agent_serial) prove the plumbing; these pin what the agent decides
for each case and run in milliseconds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import Clock

from restproxy_agent.agent import RECONCILE_CHUNK, STOP_GRACE, RestProxyAgent
from restproxy_agent.config import AgentConfig
from restproxy_common.backoff import backoff_policy
from tests.fast.agent_doubles import FakeBridge, FakeChannel, FakeConn, FakeLinks, Gates, Log

MAC = "fa:16:3e:00:00:01"
REPORT_WINDOW = 0.01  # past UpReports' batching window


@attrs.define
class Host:
    agent: RestProxyAgent
    clock: Clock
    log: Log
    gates: Gates
    bridge: FakeBridge
    links: FakeLinks
    channel: FakeChannel

    def start(self, *ports: dict[str, Any]) -> None:
        self.agent.startService()
        self.channel.answer_list(1, list(ports))
        self.clock.advance(REPORT_WINDOW)

    def event(self, kind: str, port: dict[str, Any], seq: int = 2) -> None:
        self.agent.watch.on_event({"type": "event", "kind": kind, "object_id": port["id"], "payload": port, "seq": seq})
        self.clock.advance(REPORT_WINDOW)


def port(port_id: str, status: str = "DOWN", **fields: Any) -> dict[str, Any]:
    return {"id": port_id, "mac_address": MAC, "network_id": "net1", "device_id": "vm1", "status": status, **fields}


@pytest.fixture
def host() -> Iterator[Host]:
    clock, log, gates = Clock(), Log(), Gates()
    bridge, links, channel = FakeBridge(log, gates), FakeLinks(log, gates), FakeChannel(log)
    cfg = AgentConfig(host="h1", vif_kind="tap", report_interval=30.0, firewall_driver="noop")
    agent = RestProxyAgent(
        cfg, clock, conn=FakeConn(), client=channel, bridge=bridge, links=links,  # type: ignore[arg-type]
        retry_policy=backoff_policy(initial=0.5, maximum=4.0),
    )  # fmt: skip
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        yield Host(agent, clock, log, gates, bridge, links, channel)
    finally:
        if agent.running:
            agent.stopService()
        signal.signal(signal.SIGUSR1, previous)


def test_a_listed_port_missing_from_the_bridge_is_plugged_and_reported_up(host: Host) -> None:
    host.start(port("p1"))
    assert host.log == [("create_tap", "p1"), ("add_port", "p1"), ("report_up", "p1")]
    assert host.agent.stats["plugged"] == 1 and host.agent.reported_up == {"p1"}


def test_a_port_present_and_right_is_left_alone(host: Host) -> None:
    host.bridge.put("p1", MAC, "vm1")
    host.start(port("p1", status="ACTIVE"))
    assert host.log == []  # no re-plug, no needless report


def test_a_port_present_and_right_but_not_yet_reported_is_only_reported(host: Host) -> None:
    host.bridge.put("p1", MAC, "vm1")
    host.start(port("p1"))
    assert host.log == [("report_up", "p1")]


def test_a_drifted_port_is_fixed_in_place(host: Host) -> None:
    host.bridge.put("p1", MAC, "vm1", **{"vm-uuid": "someone-else"})
    host.start(port("p1", status="ACTIVE"))
    assert host.log == [("add_port", "p1")]  # external_ids rewritten on the same port: no unplug, no new device
    assert host.agent.stats["adjusted"] == 1 and host.bridge.vif("tapp1").external_ids["vm-uuid"] == "vm1"


def test_a_port_with_a_new_mac_is_replugged(host: Host) -> None:
    host.bridge.put("p1", "fa:16:3e:99:99:99", "vm1")
    host.start(port("p1", status="ACTIVE"))
    assert host.log == [("delete_port", "p1"), ("delete_link", "p1"), ("create_tap", "p1"), ("add_port", "p1"), ("report_up", "p1")]


def test_a_stale_port_is_unplugged_and_reported_down(host: Host) -> None:
    host.bridge.put("gone", MAC, "vm1")
    host.start()
    assert host.log == [("delete_port", "gone"), ("delete_link", "gone"), ("report_down", "gone")]
    assert host.bridge.ports == {}


def test_admin_state_down_takes_the_host_end_down_and_reports_down(host: Host) -> None:
    host.bridge.put("p1", MAC, "vm1")
    host.start(port("p1", status="ACTIVE", admin_state_up=False))
    assert host.log == [("link_down", "p1"), ("report_down", "p1")]


def test_a_refused_namespace_is_not_plugged_reported_down_and_not_retried(host: Host) -> None:
    host.start(port("p1", **{"binding:profile": {"netns": "qdhcp-abc"}}))
    assert host.log == [("report_down", "p1")]
    assert host.agent.stats["refused"] == 1 and "qdhcp-abc" in host.agent.failures["p1"]
    host.clock.advance(60)
    assert host.log == [("report_down", "p1")]


def test_an_event_during_a_sync_runs_it_again_after(host: Host) -> None:
    host.gates.hold("create_tap")
    host.start(port("p1"))
    assert host.log == [("create_tap", "p1")] and "p1" in host.agent.syncs
    host.event("port_detached", port("p1"))
    assert host.log == [("create_tap", "p1")]  # one sync at a time per port
    host.gates.release("create_tap")
    host.clock.advance(REPORT_WINDOW)
    assert host.log.actions("p1") == ["create_tap", "add_port", "report_up", "delete_port", "delete_link", "report_down"]
    assert "p1" not in host.agent.syncs


def test_a_sync_that_finishes_at_once_does_not_freeze_the_port(host: Host) -> None:
    """Issue 10: every double answers with a fired Deferred, so the sync ends before request() returns."""
    host.bridge.put("p1", MAC, "vm1")
    host.start(port("p1", status="ACTIVE"))
    assert host.log == [] and len(host.agent.syncs) == 0
    host.event("port_updated", port("p1", status="ACTIVE", device_id="vm2"))
    assert host.log == [("add_port", "p1")]  # the second change was synced, not swallowed by a "busy" port
    host.event("port_updated", port("p1", status="ACTIVE", device_id="vm2", admin_state_up=False), seq=3)
    assert host.log[1:] == [("link_down", "p1"), ("report_down", "p1")]


def test_a_failed_sync_is_retried_with_backoff_until_it_succeeds(host: Host) -> None:
    host.gates.fail("create_tap", times=2)
    host.start(port("p1"))
    assert host.log.actions("p1") == ["create_tap"] and "p1" in host.agent.failures
    host.clock.advance(0.48)  # t = 0.49 s
    assert host.log.actions("p1") == ["create_tap"]
    host.clock.advance(0.02)  # first retry at 0.5 s
    assert host.log.actions("p1") == ["create_tap"] * 2
    host.clock.advance(0.98)  # t = 1.49 s
    assert host.log.actions("p1") == ["create_tap"] * 2
    host.clock.advance(0.02)  # second retry 1 s later
    host.clock.advance(REPORT_WINDOW)
    assert host.log.actions("p1") == ["create_tap"] * 3 + ["add_port", "report_up"]
    assert host.agent.failures == {} and host.agent.stats["errors"] == 2


def test_stopping_cancels_pending_retries(host: Host) -> None:
    host.gates.fail("create_tap", times=100)
    host.start(port("p1"))
    assert host.log.actions("p1") == ["create_tap"]
    host.agent.stopService()
    host.clock.advance(120)
    assert host.log.actions("p1") == ["create_tap"]
    assert host.channel.closed


def test_the_list_is_asked_for_while_ovsdb_connects_and_reconciled_only_once_connected(host: Host) -> None:
    """The server lists the host's ports while the OVSDB replica syncs (a restart's start: both take ~0.2 s), but
    nothing is synced before the replica is there."""
    connecting: Deferred[None] = Deferred()
    host.agent.conn.connect = lambda: connecting  # type: ignore[method-assign]
    asked: list[bool] = []
    listing = host.channel.list_ports
    host.channel.list_ports = lambda: asked.append(True) or listing()  # type: ignore[method-assign]
    host.agent.startService()
    assert asked == [True]  # before the replica is in
    host.channel.answer_list(1, [port("p1")])
    host.clock.advance(REPORT_WINDOW)
    assert host.log == [] and host.agent.stats["reconciles"] == 0
    connecting.callback(None)
    host.clock.advance(REPORT_WINDOW)
    assert host.log == [("create_tap", "p1"), ("add_port", "p1"), ("report_up", "p1")] and asked == [True]


def test_an_agent_whose_start_failed_cancels_its_prefetched_list_and_closes_its_channel_when_stopped(host: Host) -> None:
    """The list is asked for before OVSDB connects; should the start fail there, the watch never starts, and stopping
    the agent must still cancel that request and close the channel's connections."""
    host.agent.conn.connect = lambda: fail(ConnectionRefusedError("no ovsdb-server"))  # type: ignore[method-assign]
    host.agent.startService()
    assert not host.agent.watch.running
    host.agent.stopService()
    host.clock.advance(REPORT_WINDOW)
    assert host.channel.listing.called and host.channel.closed
    host.channel.listing.addErrback(lambda f: f.trap(CancelledError))


def test_a_stop_during_a_reconcile_starts_no_more_of_its_syncs(host: Host) -> None:
    """The ports already plugged are synced RECONCILE_CHUNK a reactor turn: a stop meanwhile ends that, and the
    reconcile's end (the 'in step' line, remove_stale) never comes."""
    count = RECONCILE_CHUNK * 3
    for n in range(count):
        host.bridge.put(f"p{n:03}", MAC, "vm1")
    host.agent.startService()
    host.channel.answer_list(1, [port(f"p{n:03}", status="ACTIVE", device_id="vm2") for n in range(count)])
    assert host.log == []  # (the first chunk goes in the next turn)
    turn = next(c for c in host.clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "turn")
    host.clock.calls.remove(turn)
    turn.func(*turn.args, **turn.kw)  # (one turn: Clock.advance(0) would run the turns it schedules too)
    assert len(host.log) == RECONCILE_CHUNK
    host.agent.stopService()
    host.clock.advance(STOP_GRACE + 1)
    assert len(host.log) == RECONCILE_CHUNK
