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
