"""The topology sync on StubTreq, a real SQLite store and a Clock: single flight, and retries with backoff."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from server_plugin.controller.mirror import ControllerMirror
from tests.fast.stubs import Controllers, InlineStore


def _topology_puts(ctl: Controllers, port: int = 1) -> list[int | None]:
    return [r["status"] for r in ctl.sims[port].recorder.listing() if r["path"].endswith("/topology")]


def _settle(ctl: Controllers, *ds: Deferred[Any], seconds: float = 5.0) -> list[Any]:
    results: list[Any] = [None] * len(ds)
    for i, d in enumerate(ds):
        d.addBoth(lambda r, i=i: results.__setitem__(i, r))
    ctl.advance(seconds)
    return results


def test_requests_join_the_sync_that_has_not_started_and_one_runs_at_a_time(store: InlineStore) -> None:
    ctl = Controllers(count=1, latency_ms=100)  # the controller takes 0.1 s to answer
    sync = ControllerMirror(store, ctl.pool, ctl.clock, "bigswitch").sync  # type: ignore[arg-type]
    first = sync.request("first")  # starts at once (it holds the gate: its snapshot is taken)
    second, third = sync.request("second"), sync.request("third")  # both wait for one more sync after it
    assert sync.status()["running"] and sync.status()["queued"]
    assert _settle(ctl, first, second, third) == [None, None, None]
    assert _topology_puts(ctl) == [200, 200]
    assert sync.status()["completed"] == 2 and sync.last["reasons"] == ["second", "third"]


def test_a_failed_sync_is_retried_with_backoff_on_the_clock_until_it_lands(store: InlineStore) -> None:
    ctl = Controllers(count=1)
    sync = ControllerMirror(store, ctl.pool, ctl.clock, "bigswitch").sync  # type: ignore[arg-type]
    ctl.fault(1, status=500, count=2, path_regex="/topology")
    failed = sync.request("test")
    [outcome] = _settle(ctl, failed, seconds=0.5)
    assert outcome is not None and sync.status()["retry_scheduled"]  # the caller hears of the failure
    ctl.advance(0.6)
    assert _topology_puts(ctl) == [500, 500]  # the first retry after 1 s
    ctl.advance(1.5)
    assert _topology_puts(ctl) == [500, 500]  # the second waits 2 s
    ctl.advance(0.6)
    assert _topology_puts(ctl) == [500, 500, 200]
    assert sync.status()["completed"] == 1 and not sync.status()["retry_scheduled"]
    sync.stop()
    assert not ctl.clock.getDelayedCalls()


def test_two_processes_on_one_database_share_one_run_and_take_turns(store: InlineStore) -> None:
    """Two mirrors (two processes' syncs: their own holder ids) on one database and one pool: a request made in
    one while the other's run has not read the store yet is satisfied by that run; a later one gets its own."""
    ctl = Controllers(count=1, latency_ms=100)
    first = ControllerMirror(store, ctl.pool, ctl.clock, "bigswitch")  # type: ignore[arg-type]
    second = ControllerMirror(store, ctl.pool, ctl.clock, "bigswitch")  # type: ignore[arg-type]
    assert first.sync.holder != second.sync.holder and first.sync.lease_name == second.sync.lease_name
    in_flight = first.gate.acquire(exclusive=False)  # a change of the first process still being sent
    assert in_flight.called
    a = first.sync.request("a")  # holds the lease, waits for the change before it reads the store
    b = second.sync.request("b")  # counted before that read: the first's run covers it
    assert first.sync.status()["running"] and not second.sync.running
    ctl.advance(1.0)
    assert not a.called and not b.called and _topology_puts(ctl) == []  # nothing is read while the change holds the gate
    first.gate.release(exclusive=False)
    assert _settle(ctl, a, b, seconds=1.0) == [None, None]
    assert _topology_puts(ctl) == [200]
    assert first.sync.status()["completed"] == 1 and second.sync.status()["completed"] == 0
    assert second.sync.status()["last"]["result"] == "ok"  # what the first ran, seen through the second
    c = second.sync.request("c")  # after that run read the store: one more, run here
    assert _settle(ctl, c, seconds=1.0) == [None]
    assert _topology_puts(ctl) == [200, 200] and second.sync.status()["completed"] == 1
    first.sync.stop()
    second.sync.stop()
