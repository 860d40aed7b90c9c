"""The event bus: from committed agent events to the watchers of each host.

One poller per server process reads new rows of ``agent_events`` (woken at
once by local commits, and every ``poll_interval`` for commits made by other
servers on the same database) and hands each event to the watchers of its
host. Sequence numbers can commit out of order (two transactions on
PostgreSQL or MariaDB), so the poller never passes a hole in the sequence
until it has waited ``gap_timeout`` for it (a rolled-back transaction leaves a
hole forever): watchers therefore see every event, in order, exactly once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from server_plugin.exceptions import DatabaseUnavailable
from server_plugin.store import agent_events
from server_plugin.store.db import Store

Event = dict[str, Any]


class Watcher:
    """One agent's open watch: receives events of its host with seq > ``last_sent``."""

    def __init__(self, host: str, since: int, send: Callable[[Event], None]) -> None:
        self.host = host
        self.last_sent = since
        self._send = send
        self._buffer: list[Event] | None = []  # events that arrive while catching up

    def deliver(self, event: Event) -> None:
        if self._buffer is not None:
            self._buffer.append(event)
        elif event["seq"] > self.last_sent:
            self.last_sent = event["seq"]
            self._send(event)

    def caught_up(self, events: list[Event]) -> None:
        buffered, self._buffer = self._buffer or [], None
        # The replay and the live events overlap in any order: merge by seq, each once.
        for event in sorted({e["seq"]: e for e in [*events, *buffered]}.values(), key=lambda e: e["seq"]):
            self.deliver(event)


class EventBus:
    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: Any,
        poll_interval: float = 0.25,
        gap_timeout: float = 2.0,
        batch: int = 1000,
        retention: int = 100_000,
        prune_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.poll_interval = poll_interval
        self.gap_timeout = gap_timeout
        self.batch = batch
        self.retention = retention
        self.prune_interval = prune_interval
        self.watermark = 0  # every event <= watermark has been dispatched
        self.watchers: dict[str, set[Watcher]] = defaultdict(set)
        self.dispatched = 0
        self._gap_since: float | None = None
        self._polling: Deferred[None] | None = None
        self._again = False
        self._loop: task.LoopingCall | None = None
        self._prune_loop: task.LoopingCall | None = None

    # -- lifecycle
    async def start(self) -> None:
        self.watermark = await self.store.run(agent_events.last_seq, readonly=True)
        self._loop = task.LoopingCall(self.nudge)
        self._loop.clock = self.reactor
        self._loop.start(self.poll_interval, now=False)
        self._prune_loop = task.LoopingCall(self._prune)
        self._prune_loop.clock = self.reactor
        self._prune_loop.start(self.prune_interval, now=True)

    def stop(self) -> None:
        for loop in (self._loop, self._prune_loop):
            if loop is not None and loop.running:
                loop.stop()

    # -- polling
    def nudge(self) -> None:
        """New events may be committed: poll now (coalesced with a poll in progress)."""
        if self._polling is not None:
            self._again = True
            return
        self._polling = ensureDeferred(self._poll())

    async def _poll(self) -> None:
        try:
            while True:
                self._again = False
                events = await self.store.run(agent_events.events_after, self.watermark, self.batch, readonly=True)
                self._dispatch(events)
                if not self._again and len(events) < self.batch:
                    break
        except DatabaseUnavailable:
            pass  # logged once per outage by the store; the next tick tries again
        except Exception:
            self.log.failure("agent event poll failed; retrying at the next tick")
        finally:
            self._polling = None

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if event["seq"] != self.watermark + 1:
                # A hole: an earlier transaction may still commit. Wait for it, but not forever.
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < self.gap_timeout:
                    return
                self.log.debug("skipping sequence hole {start}..{end}", start=self.watermark + 1, end=event["seq"] - 1)
            self._gap_since = None
            self.watermark = event["seq"]
            self.dispatched += 1
            for watcher in list(self.watchers.get(event["host"], ())):
                watcher.deliver(event)

    async def _prune(self) -> None:
        try:
            removed = await self.store.run(agent_events.prune, self.retention)
            if removed:
                self.log.info("pruned {count} old agent events", count=removed)
        except DatabaseUnavailable:
            pass  # logged once per outage by the store
        except Exception:
            self.log.failure("pruning agent events failed")

    # -- watchers
    async def watch(self, host: str, since: int, send: Callable[[Event], None]) -> Watcher | None:
        """Register a watcher and replay what it missed; None if ``since`` is older than what is kept."""
        first = await self.store.run(agent_events.first_seq, readonly=True)
        if since and first and since < first - 1:
            return None
        watcher = Watcher(host, since, send)
        self.watchers[host].add(watcher)
        missed: list[Event] = []
        after = since
        while True:
            page = await self.store.run(agent_events.events_after, after, self.batch, [host], readonly=True)
            page = [e for e in page if e["seq"] <= self.watermark]
            missed.extend(page)
            if len(page) < self.batch:
                break
            after = page[-1]["seq"]
        watcher.caught_up(missed)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self.watchers.get(watcher.host)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[watcher.host]

    def status(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "watchers": sum(len(w) for w in self.watchers.values()), "dispatched": self.dispatched}
