"""One job at a time per key, many keys at once: the agent's per-port state machine.

``KeyedSerializer.request(key, since)`` starts the job for ``key`` now if none
runs, or else asks the running one for one more pass when it ends (requests
that arrive meanwhile merge into that one pass, keeping the earliest
``since``). The key is marked busy *before* the job starts and freed in the
same ``finally`` that ends its loop, so correctness never depends on whether
the job waits for anything: a job that completes without waiting (its
Deferreds have already fired) leaves the key free, exactly as one that
completes later. Its predecessor stored the job's Deferred after starting it,
and a port whose sync finished at once stayed "busy" for good (issue 10).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

K = TypeVar("K", bound=Hashable)


class KeyedSerializer(Generic[K]):
    """Runs ``job(key, since)`` for one key at a time; ``on_error(key, error, since)`` hears of its exceptions."""

    log = Logger()

    def __init__(self, job: Callable[[K, float], Awaitable[None]], on_error: Callable[[K, Exception, float], None]) -> None:
        self._job = job
        self._on_error = on_error
        self._running: set[K] = set()
        self._again: dict[K, float] = {}
        self._idle: dict[K, list[Deferred[None]]] = {}

    def __len__(self) -> int:
        """How many keys have a job running."""
        return len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    def request(self, key: K, since: float) -> None:
        """Run the job for ``key`` now, or once more after the one running (``since``: when the cause happened)."""
        if key in self._running:
            self._again[key] = min(since, self._again.get(key, since))
            return
        self._running.add(key)
        Deferred.fromCoroutine(self._loop(key, since))  # never fails: _loop handles every exception

    def idle(self, key: K) -> Deferred[None]:
        """Fires once ``key`` has no job running or asked for (at once if it has none now)."""
        if key not in self._running:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.setdefault(key, []).append(d)
        return d

    def all_idle(self) -> Deferred[None]:
        """Fires once every job running now has ended (with the passes asked of it)."""
        pending = [self.idle(key) for key in list(self._running)]
        return DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    async def _loop(self, key: K, since: float) -> None:
        try:
            while True:
                try:
                    await self._job(key, since)
                except Exception as e:
                    self._report(key, e, since)
                if key not in self._again:
                    return
                since = self._again.pop(key)
        finally:
            self._running.discard(key)
            self._again.pop(key, None)
            for d in self._idle.pop(key, []):
                d.callback(None)

    def _report(self, key: K, error: Exception, since: float) -> None:
        try:
            self._on_error(key, error, since)
        except Exception:
            self.log.failure("error handler failed for {key}", key=key)
