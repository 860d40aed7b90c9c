"""Fast tier: PortWatch's first list asked for ahead (``prefetch``), as the agent does while its OVSDB replica and its
firewall start: the watch then lists with that answer, once, and only after ``startService``; a failed or abandoned
prefetch is a list failure like any other (retried with the backoff), never an unhandled error."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from restproxy_agent.channel import PortWatch


class ListingClient:
    """``list_host`` answers with the Deferreds the test fires; ``open_watch`` never answers."""

    def __init__(self) -> None:
        self.lists: list[Deferred[Any]] = []
        self.watches: list[int] = []

    def list_host(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.lists.append(d)
        return d

    def open_watch(self, since: int) -> Deferred[Any]:
        self.watches.append(since)
        return Deferred()

    async def close(self) -> None:
        """Nothing held."""


@pytest.fixture
def unhandled() -> Any:
    """The 'Unhandled error in Deferred' events logged during the test (after a collection)."""
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "Unhandled error" in str(event.get("log_format", "")):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def _watch(client: ListingClient, clock: Clock, listed: list[Any], groups: list[Any]) -> PortWatch:
    return PortWatch(
        client, lambda seq, ports: listed.append((seq, ports)), lambda event: None, clock,  # type: ignore[arg-type]
        retry_policy=lambda attempt: 1.0, on_groups=groups.append,
    )  # fmt: skip


def test_the_prefetched_list_is_the_watchs_first_and_is_handed_over_only_once_started() -> None:
    clock, client, listed, groups = Clock(), ListingClient(), [], []
    watch = _watch(client, clock, listed, groups)
    watch.prefetch()
    watch.prefetch()  # (once is enough)
    assert len(client.lists) == 1  # asked for at once, before the service starts
    client.lists[0].callback((7, [{"id": "p1"}], [{"id": "sg1"}]))
    assert listed == [] and groups == []  # nothing handed over before startService
    watch.startService()
    assert listed == [(7, [{"id": "p1"}])] and groups == [[{"id": "sg1"}]]
    assert len(client.lists) == 1 and client.watches == [7]  # no second list; the watch goes on from its seq
    watch.stopService()


def test_a_prefetched_list_still_in_flight_is_waited_for() -> None:
    clock, client, listed, groups = Clock(), ListingClient(), [], []
    watch = _watch(client, clock, listed, groups)
    watch.prefetch()
    watch.startService()
    assert listed == [] and len(client.lists) == 1
    client.lists[0].callback((3, [], []))
    assert listed == [(3, [])] and client.watches == [3]
    watch.stopService()


def test_a_failed_prefetch_is_retried_with_the_backoff_and_not_an_unhandled_error(unhandled: list[Any]) -> None:
    clock, client, listed, groups = Clock(), ListingClient(), [], []
    watch = _watch(client, clock, listed, groups)
    watch.prefetch()
    client.lists[0].errback(ConnectionRefusedError("server down"))
    gc.collect()
    assert unhandled == []
    watch.startService()
    assert listed == [] and len(client.lists) == 1  # the failure counts as the first list's: backoff first
    clock.advance(1.0)
    assert len(client.lists) == 2
    client.lists[1].callback((5, [{"id": "p2"}], []))
    assert listed == [(5, [{"id": "p2"}])] and client.watches == [5]
    watch.stopService()


def test_a_prefetch_abandoned_by_a_stop_is_cancelled_quietly(unhandled: list[Any]) -> None:
    clock, client, listed, groups = Clock(), ListingClient(), [], []
    watch = _watch(client, clock, listed, groups)
    watch.prefetch()
    watch.stopService()  # (stopped before it was started)
    assert client.lists[0].called  # cancelled
    gc.collect()
    assert unhandled == [] and listed == []
