"""An orderly shutdown within a grace time: stop listening, end the watches, let the requests and
controller calls in flight end, then stop the store.

twistd stops a ``MultiService``'s children all at once; here each waits for the one before, and all
share one deadline (``[DEFAULT] shutdown_grace_time``) so that the process exits in time whatever hangs.
What is cut short is not lost: a change is journaled in the same transaction as its store write, and
the journal is repaired at the next start; a change that had not written yet is not answered either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application import service
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import server

from restproxy_common.web import on_finish

T = TypeVar("T")
log = Logger(namespace="server_plugin.lifecycle")
# What a step may take past the deadline to clean up (close connections, join threads) after it gave up waiting.
CLEANUP_MARGIN = 2.0


class Deadline:
    """One deadline for every step of a shutdown, set when the shutdown begins."""

    def __init__(self, clock: IReactorTime, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.at: float | None = None

    def begin(self) -> None:
        if self.at is None:
            self.at = self.clock.seconds() + self.seconds

    def left(self) -> float:
        self.begin()
        assert self.at is not None
        return max(self.at - self.clock.seconds(), 0.0)

    def bound(self, d: Deferred[T], margin: float = 0.0) -> Deferred[T]:
        """``d``, cancelled with TimeoutError when the deadline (plus ``margin``) passes first."""
        return d.addTimeout(self.left() + margin, self.clock)


class OrderedServices(service.MultiService):
    """Starts its children in order and stops them one after the other in reverse order."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def stopService(self) -> Deferred[None]:
        self.deadline.begin()
        service.Service.stopService(self)
        return ensureDeferred(self._stop_each())

    async def _stop_each(self) -> None:
        """Each child waits for what it must within the deadline itself; past it, it only cleans up."""
        started = self.deadline.clock.seconds()
        for child in reversed(list(self)):
            try:
                await self.deadline.bound(maybeDeferred(child.stopService), CLEANUP_MARGIN)
            except TimeoutError:
                log.warn("{service} did not stop within the grace time", service=type(child).__name__)
            except Exception:
                log.failure("stopping {service} failed", service=type(child).__name__)
        log.info("stopped in {ms:.0f} ms", ms=(self.deadline.clock.seconds() - started) * 1000)


class InFlight(service.Service):
    """Tracks the API requests being served; stopping waits (within the deadline) until they have ended."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.open = 0
        self._idle: list[Deferred[None]] = []

    def track(self, factory: Callable[..., server.Request]) -> Callable[..., server.Request]:
        """A request factory that counts each request until it finishes or its connection is lost."""

        def make(*args: Any, **kwargs: Any) -> server.Request:
            request = factory(*args, **kwargs)
            self.open += 1
            on_finish(request, self._ended)
            return request

        return make

    def _ended(self, _: object) -> None:
        self.open -= 1
        if not self.open:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._drain())

    async def _drain(self) -> None:
        started, waiting = self.deadline.clock.seconds(), self.open
        if not waiting:
            return
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        try:
            await self.deadline.bound(idle)
        except TimeoutError:
            log.warn("{count} of {waiting} API requests still open after the grace time", count=self.open, waiting=waiting)
            return
        ms = (self.deadline.clock.seconds() - started) * 1000
        log.info("{count} API requests in flight ended in {ms:.0f} ms", count=waiting, ms=ms)
