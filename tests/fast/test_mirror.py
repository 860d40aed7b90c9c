"""The plugin and its mirror on StubTreq, a real SQLite store and a Clock: changes in order, undo of a refused
create, a lost controller re-synced, and the watchdog's check."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from server_plugin.config import ServerConfig
from server_plugin.context import RequestContext
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.service import ControllerService
from server_plugin.controller.watchdog import ConsistencyWatchdog
from server_plugin.exceptions import QuantumException
from server_plugin.plugin import RestProxyPlugin
from tests.fast.stubs import Controllers, InlineStore

ADMIN = RequestContext.admin()


class Stack:
    def __init__(self, store: InlineStore, **sim: Any) -> None:
        self.ctl = Controllers(count=1, **sim)
        self.mirror = ControllerMirror(store, self.ctl.pool, self.ctl.clock, "bigswitch")  # type: ignore[arg-type]
        self.plugin = RestProxyPlugin(store, None, self.mirror)  # type: ignore[arg-type]
        self.sim = self.ctl.sims[1]

    def run(self, d: Deferred[Any], seconds: float = 1.0) -> Any:
        out: list[Any] = []
        d.addBoth(out.append)
        self.ctl.advance(seconds)
        assert out, "not done"
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]

    def create(self, name: str) -> dict[str, Any]:
        body = {"network": {"name": name, "tenant_id": "t", "admin_state_up": True, "shared": False}}
        return self.run(Deferred.fromCoroutine(self.plugin.create_network(ADMIN, body)))  # type: ignore[no-any-return]

    def networks(self) -> list[str]:
        return sorted(n["name"] for n in self.run(Deferred.fromCoroutine(self.plugin.get_networks(ADMIN))))

    def on_controller(self) -> list[str]:
        return sorted(n["id"] for n in self.sim.controller.snapshot()["networks"])


def test_a_create_reaches_the_controller_and_the_store(store: InlineStore) -> None:
    stack = Stack(store)
    net = stack.create("a")
    assert stack.networks() == ["a"] and stack.on_controller() == [net["id"]]


def test_a_create_the_controller_refuses_is_undone(store: InlineStore) -> None:
    stack = Stack(store)
    stack.ctl.fault(1, status=500)
    with pytest.raises(QuantumException):
        stack.create("refused")
    assert stack.networks() == [] and stack.on_controller() == []


def test_changes_to_one_network_reach_the_controller_in_order(store: InlineStore) -> None:
    stack = Stack(store, latency_ms=50)
    net = stack.create("n")
    updates = [Deferred.fromCoroutine(stack.plugin.update_network(ADMIN, net["id"], {"network": {"name": f"v{i}"}})) for i in range(5)]
    for d in updates:
        stack.run(d, seconds=1.0)
    puts = [r for r in stack.sim.recorder.listing(bodies=True) if r["method"] == "PUT"]
    assert [r["body"]["network"]["name"] for r in puts] == [f"v{i}" for i in range(5)]


def test_the_watchdog_resyncs_a_controller_that_lost_its_state(store: InlineStore) -> None:
    stack = Stack(store)
    net = stack.create("kept")
    stack.sim.forget("conflict")  # restarted empty: its /health answers 409 until it gets a /topology
    watchdog = ConsistencyWatchdog(stack.mirror, 5.0, stack.ctl.clock)
    stack.mirror.watchdog = watchdog
    watchdog.start()  # the first check at once
    stack.ctl.advance(1.0)
    assert stack.on_controller() == [net["id"]] and watchdog.repairs == 1
    stack.ctl.advance(10.0)
    assert watchdog.repairs == 1  # consistent now: nothing more to do
    watchdog.stop()


def test_stopping_waits_for_the_change_in_flight_then_holds_later_ones(store: InlineStore) -> None:
    stack = Stack(store, latency_ms=500)
    service = ControllerService(stack.mirror, ServerConfig(controller_profile="bigswitch", server_probe_interval=0), stack.ctl.clock)
    body = {"network": {"name": "in-flight", "tenant_id": "t"}}
    in_flight = Deferred.fromCoroutine(stack.plugin.create_network(ADMIN, body))
    stack.ctl.advance(0.1)
    stopped = service.stopService()
    stack.ctl.advance(0.2)
    assert not stopped.called and not in_flight.called
    stack.ctl.advance(0.3)
    assert in_flight.called and stopped.called  # the change ended, then the service stopped
    later = Deferred.fromCoroutine(stack.plugin.create_network(ADMIN, {"network": {"name": "later", "tenant_id": "t"}}))
    stack.ctl.advance(2.0)
    assert not later.called and [n["name"] for n in stack.sim.controller.snapshot()["networks"]] == ["in-flight"]
    # "later" waits before it writes anything: unanswered, in neither the store nor the journal (nothing to repair)
    assert stack.networks() == ["in-flight"] and stack.run(Deferred.fromCoroutine(_journal(store))) == []


def test_stopping_gives_up_at_the_deadline(store: InlineStore) -> None:
    stack = Stack(store)
    stack.ctl.fault(1, action="hang")
    service = ControllerService(
        stack.mirror, ServerConfig(controller_profile="bigswitch", server_probe_interval=0, shutdown_grace_time=3.0), stack.ctl.clock
    )
    Deferred.fromCoroutine(stack.plugin.create_network(ADMIN, {"network": {"name": "hung", "tenant_id": "t"}}))
    stack.ctl.advance(0.1)
    stopped = service.stopService()
    stack.ctl.advance(2.8)
    assert not stopped.called
    stack.ctl.advance(0.2)
    assert stopped.called


async def _journal(store: InlineStore) -> list[dict[str, Any]]:
    from server_plugin.store import mirror_ops

    pending: list[dict[str, Any]] = await store.run(mirror_ops.pending, readonly=True)
    return pending


def test_auto_profile_holds_changes_until_get_capabilities_answers(store: InlineStore) -> None:
    stack = Stack(store, profile="floodlight", latency_ms=300)
    service = ControllerService(stack.mirror, ServerConfig(controller_profile="auto", server_probe_interval=0), stack.ctl.clock)
    service.startService()
    assert stack.mirror.profile_pending
    created = Deferred.fromCoroutine(stack.plugin.create_network(ADMIN, {"network": {"name": "held", "tenant_id": "t"}}))
    stack.ctl.advance(0.2)
    assert not created.called and stack.sim.recorder.listing()[0]["path"].endswith("/capabilities")
    stack.run(created, seconds=2.0)
    assert (stack.mirror.profile, stack.mirror.profile_source) == ("floodlight", "detected")
    # The create went out after the detection, in Floodlight's form (PUT of the network; Big Switch's is a POST).
    network_call = stack.sim.recorder.listing()[1]
    assert network_call["method"] == "PUT" and "/tenants/t/networks/" in network_call["path"]
    stack.run(service.stopService())
