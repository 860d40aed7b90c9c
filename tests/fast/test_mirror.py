"""The plugin and its mirror on StubTreq, a real SQLite store and a Clock: changes in order, undo of a refused
create, a lost controller re-synced, and the watchdog's check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from server_plugin.context import RequestContext
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.watchdog import ConsistencyWatchdog
from server_plugin.exceptions import QuantumException
from server_plugin.plugin import RestProxyPlugin
from tests.fast.stubs import Controllers, InlineStore

ADMIN = RequestContext.admin()


@pytest.fixture
def store(tmp_path: Any) -> Iterator[InlineStore]:
    s = InlineStore(str(tmp_path / "q.sqlite"))
    try:
        yield s
    finally:
        s.close()


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
