"""One backoff policy for every retry loop, testable with a ``twisted.internet.task.Clock``.

A policy is Twisted's ``backoffPolicy`` (what ``ClientService`` takes): a callable
``attempt -> seconds``, attempt 0 being the first retry: ``initial * factor ** attempt``,
capped at ``maximum``, plus up to ``jitter`` seconds so that many clients retrying
after one outage spread out. ``RetrySchedule`` keeps one pending retry per key (a
port, a server) on an injected clock; ``reset`` (a success) starts the key over.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IDelayedCall, IReactorTime

Policy = Callable[[int], float]
K = TypeVar("K", bound=Hashable)


def backoff_policy(
    initial: float, maximum: float, factor: float = 2.0, jitter: float = 0.0, rand: Callable[[], float] = random.random
) -> Policy:
    """``attempt -> delay``: ``min(initial * factor ** attempt, maximum)`` plus ``jitter * rand()`` seconds."""
    if initial <= 0 or maximum < initial or factor < 1 or jitter < 0:
        raise ValueError(f"bad backoff: initial={initial} maximum={maximum} factor={factor} jitter={jitter}")
    return backoffPolicy(initialDelay=initial, maxDelay=maximum, factor=factor, jitter=lambda: jitter * rand())


class RetrySchedule(Generic[K]):
    """At most one pending retry per key, spaced by ``policy`` on ``clock``; a success resets the key."""

    def __init__(self, clock: IReactorTime, policy: Policy) -> None:
        self.clock = clock
        self.policy = policy
        self._attempts: dict[K, int] = {}
        self._pending: dict[K, IDelayedCall] = {}

    def failed(self, key: K, retry: Callable[[K], Any]) -> float:
        """Count a failure of ``key`` and call ``retry(key)`` after the next delay (replacing a pending one); returns the delay."""
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        delay = self.policy(attempt)
        self._cancel(key)
        self._pending[key] = self.clock.callLater(delay, self._fire, key, retry)
        return delay

    def reset(self, key: K) -> None:
        """``key`` succeeded (or must not be retried): its next failure starts from the first delay; a pending retry is dropped."""
        self._attempts.pop(key, None)
        self._cancel(key)

    def attempts(self, key: K) -> int:
        return self._attempts.get(key, 0)

    def pending(self, key: K) -> bool:
        return key in self._pending

    def cancel_all(self) -> None:
        """Drop every pending retry (a stopping service); attempt counts are kept."""
        for key in list(self._pending):
            self._cancel(key)

    def _fire(self, key: K, retry: Callable[[K], Any]) -> None:
        self._pending.pop(key, None)
        retry(key)

    def _cancel(self, key: K) -> None:
        call = self._pending.pop(key, None)
        if call is not None and call.active():
            call.cancel()
