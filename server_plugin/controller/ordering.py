"""Ordering without a global lock: per-object reader/writer locks and the sync gate.

Calls for one object keep their order (its key is held exclusively from the
store transaction to the controller's answer); calls for different objects run
concurrently. A network is held *shared* by its ports' calls and *exclusively*
by its own, so a port is never sent to a controller while its network is
being changed or deleted. The sync gate is the same lock with one key: every
mirrored call holds it shared, a topology sync holds it exclusively, so a
sync's snapshot never interleaves with a half-done call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Hashable, Iterable
from contextlib import asynccontextmanager

from twisted.internet.defer import Deferred


class RWLock:
    """A fair reader/writer lock for the reactor thread (FIFO; writers are not starved)."""

    def __init__(self) -> None:
        self.readers = 0
        self.writer = False
        self._waiting: deque[tuple[bool, Deferred[None]]] = deque()

    @property
    def idle(self) -> bool:
        return not self.readers and not self.writer and not self._waiting

    def acquire(self, exclusive: bool) -> Deferred[None]:
        d: Deferred[None] = Deferred(lambda d: self._cancel(d))
        if not self._waiting and self._can_enter(exclusive):
            self._enter(exclusive)
            d.callback(None)
        else:
            self._waiting.append((exclusive, d))
        return d

    def release(self, exclusive: bool) -> None:
        if exclusive:
            self.writer = False
        else:
            self.readers -= 1
        self._wake()

    def _can_enter(self, exclusive: bool) -> bool:
        return not self.writer and (not exclusive or self.readers == 0)

    def _enter(self, exclusive: bool) -> None:
        if exclusive:
            self.writer = True
        else:
            self.readers += 1

    def _wake(self) -> None:
        while self._waiting and self._can_enter(self._waiting[0][0]):
            exclusive, d = self._waiting.popleft()
            self._enter(exclusive)
            d.callback(None)

    def _cancel(self, d: Deferred[None]) -> None:
        self._waiting = deque(w for w in self._waiting if w[1] is not d)
        self._wake()


class KeyedLocks:
    """RWLocks by key, created on demand and dropped when idle."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, RWLock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, exclusive: Iterable[Hashable] = (), shared: Iterable[Hashable] = ()) -> AsyncIterator[None]:
        """Hold several keys; they are taken in one global order, so two callers never deadlock."""
        wanted: dict[Hashable, bool] = {key: False for key in shared}
        wanted.update({key: True for key in exclusive})
        order = sorted(wanted, key=repr)
        taken: list[tuple[Hashable, bool]] = []
        try:
            for key in order:
                lock = self._locks.setdefault(key, RWLock())
                await lock.acquire(wanted[key])
                taken.append((key, wanted[key]))
            yield
        finally:
            for key, mode in reversed(taken):
                self._locks[key].release(mode)
            for key in order:
                lock = self._locks.get(key)
                if lock is not None and lock.idle:
                    del self._locks[key]
