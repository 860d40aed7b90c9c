"""One agent's open watch: a push producer that never holds more than a page of its host's events.

A watcher is either *live* (caught up: each new event of its host is written
as it is dispatched) or *catching up* (it reads its host's events from the
store, a page at a time, after the last one it wrote). It writes only while
the connection takes data: when the transport's buffer fills, twisted pauses
it (``IPushProducer``), it stops writing, drops the rest of the page and
leaves live mode; when the buffer drains, it resumes from the store after its
last written sequence number. The events are in the store anyway, so nothing
is buffered per watcher beyond the transport's own (bounded) send buffer, and
an agent that never reads costs a socket, not its backlog.

A watcher whose client stops reading while ``max_lag`` events of its host go
by is closed (the agent resumes from its last number, or lists again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from server_plugin.store import agent_events

if TYPE_CHECKING:
    from server_plugin.channel.bus import EventBus


def message(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def relist_message(since: int, first: int) -> bytes | None:
    """The relist line if events after ``since`` were pruned (the oldest kept is ``first``); 0 means from what is kept."""
    if since and first and since < first - 1:
        return message(type="relist", reason=f"events after {since} are no longer kept")
    return None


@implementer(IPushProducer)
class Watcher:
    log = Logger()

    def __init__(
        self,
        bus: EventBus,
        host: str,
        since: int,
        key: Any,
        write: Callable[[bytes], None],
        end: Callable[[bool], None],
        interest: Any = None,
    ) -> None:
        """``write`` sends bytes; ``end(abort)`` finishes the response (``abort``: the client is not reading, drop it).
        ``interest``: which events for every host it carries (``EventBus.interest``; None: all)."""
        self.bus = bus
        self.host = host
        self.interest = interest
        self.key = key
        self.last_sent = since
        self.opened_at = bus.reactor.seconds()
        self.paused = False
        self.live = False
        self.closed = False
        self._write = write
        self._end = end
        self._missed = 0  # events of the host dispatched while not live (tells a catch-up that it must read again)
        self._missed_unread = 0  # ... of those, while paused since the client last read
        self._catching_up: Deferred[None] | None = None
        self._line_size = 1024  # of the events last read: sizes the next page

    # -- IPushProducer (the HTTP channel pauses us when its send buffer is full)
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._missed_unread = 0
        if not self.live:
            self.catch_up()

    def stopProducing(self) -> None:
        self.close(None)

    # -- from the bus
    def deliver(self, event: dict[str, Any]) -> None:
        """One dispatched event (``seq``, ``host``, ``kind``, ``object_id``, ``line``) of this host or of every host."""
        if self.closed or event["seq"] <= self.last_sent:
            return
        if self.live and not self.paused:
            self._offer(event)
            return
        self.live = False  # the store has it; a catch-up will read it
        self._missed += 1
        if not self.paused:
            self.catch_up()  # (already running, most likely)
        else:
            self._missed_unread += 1
            if self._missed_unread > self.bus.max_lag:
                self.close(f"more than {self.bus.max_lag} events behind and not reading: resume from {self.last_sent}")

    def heartbeat(self) -> None:
        """Tell the agent how far it is current: the bus's watermark when live, else its last event."""
        if not self.closed and not self.paused:
            self._write(message(type="heartbeat", seq=max(self.last_sent, self.bus.watermark) if self.live else self.last_sent))

    def _send(self, seq: int, line: bytes) -> None:
        self.last_sent = seq
        self._write(line)

    def _offer(self, event: dict[str, Any]) -> None:
        """Send the event, or pass over one for every host that this host's interest does not admit."""
        if self.interest is None or self.interest.admits(event["host"], event["kind"], event["object_id"]):
            self._send(event["seq"], event["line"])
        else:
            self.last_sent = event["seq"]

    # -- catching up from the store
    def catch_up(self) -> None:
        if self._catching_up is None and not self.closed:
            self._catching_up = ensureDeferred(self._catch_up())
            self._catching_up.addErrback(self._failed)

    async def _catch_up(self) -> None:
        try:
            while not self.closed and not self.paused:
                upto, missed, limit = self.bus.watermark, self._missed, self._page_size()
                first, page = await self.bus.store.run(agent_events.replay_page, self.host, self.last_sent, limit, upto, readonly=True)
                if self.closed:
                    return
                relist = relist_message(self.last_sent, first)
                if relist is not None:
                    self._write(relist)
                    self.close(None)
                    return
                if page:
                    self._line_size = sum(len(event["line"]) for event in page) // len(page)
                for event in page:
                    if self.paused or self.closed:
                        return  # the rest stays in the store for the next catch-up
                    if event["seq"] > self.last_sent:
                        self._offer(event)
                if len(page) < limit and self._missed == missed:
                    # Every event of the host up to ``upto`` is written, and none came since: from now on, live.
                    self.live, self._missed = True, 0
                    return
        finally:
            self._catching_up = None

    def _page_size(self) -> int:
        """As many events as the connection takes before it pauses us (reading more would be dropped and read again)."""
        return max(1, min(self.bus.replay_page, self.bus.send_buffer // max(self._line_size, 1) + 1))

    def _failed(self, failure: Any) -> None:
        self.log.failure("agent {host}: catching up failed; closing its watch at {seq}", failure, host=self.host, seq=self.last_sent)
        self.close(None)

    def will_read(self, seq: int) -> bool:
        """Whether event ``seq`` (committed now) still reaches this watch: it is behind it, and no read of the store is
        under way (one may have begun before it committed), so its next catch-up reads it."""
        return not self.live and self._catching_up is None and self.last_sent < seq

    def relist(self, reason: str) -> None:
        """End the watch with a relist line: the agent lists its host again (an event it passed over committed late).
        The line goes out even to a client that is not reading now (one line more in its send buffer)."""
        if self.closed:
            return
        self.closed = True
        self.bus.unwatch(self)
        self.log.info("agent {host}: asking it to list again at {seq}: {reason}", host=self.host, seq=self.last_sent, reason=reason)
        self._write(message(type="relist", reason=reason))
        self._end(False)

    # -- ending
    def close(self, reason: str | None) -> None:
        """End the watch; ``reason`` (a server-side close) is told to the agent if it still reads."""
        if self.closed:
            return
        self.closed = True
        self.bus.unwatch(self)
        if reason is not None:
            self.log.info("agent {host}: closing its watch at {seq}: {reason}", host=self.host, seq=self.last_sent, reason=reason)
            if not self.paused:
                self._write(message(type="closed", seq=self.last_sent, reason=reason))
        self._end(self.paused)
