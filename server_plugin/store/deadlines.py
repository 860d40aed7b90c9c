"""Client-side deadlines for database calls: a stuck call gets its socket cut.

A partition does not close TCP connections: a query (or the pool's pre-ping) on a
pooled connection then waits for an answer that never comes, and libpq has no read
timeout. The server's ``statement_timeout`` cannot help when the server never sees the
query. So every blocking call the dialect makes (ping, execute, commit, rollback) is
registered with a deadline; one watchdog thread shuts down the socket of a call that
outlives it. The driver then fails the call as a lost connection, SQLAlchemy
invalidates the connection, and the store reports the outage.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine

_STATEMENT_CALLS = ("do_execute", "do_execute_no_params", "do_executemany")
_CONNECTION_CALLS = ("do_commit", "do_rollback")
_IDLE_EXIT = 60.0  # seconds without calls after which the watchdog thread ends


def _socket_fd(dbapi_conn: Any) -> int | None:
    """The connection's socket: psycopg ``fileno()``, PyMySQL ``_sock``; None if it has none."""
    for get in (lambda c: c.fileno(), lambda c: c._sock.fileno()):
        try:
            fd = get(dbapi_conn)
        except Exception:
            continue
        if isinstance(fd, int) and fd >= 0:
            return fd
    return None


class NoAnswer(Exception):
    """A ping got no answer within its deadline: its connection was cut, and connecting anew is pointless."""


class _Call:
    __slots__ = ("deadline", "dup", "seconds", "cut")

    def __init__(self, deadline: float, dup: int, seconds: float) -> None:
        self.deadline, self.dup, self.seconds, self.cut = deadline, dup, seconds, False


class SocketDeadlines:
    """One watchdog thread for all calls in flight; started on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._calls: dict[int, _Call] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None  # when the watchdog wakes next; None: when called
        self._idle_since: float | None = None
        self.cut = 0

    @contextlib.contextmanager
    def limit(self, dbapi_conn: Any, seconds: float) -> Iterator[_Call | None]:
        """Bound one call on ``dbapi_conn``; yields the registration (``.cut`` tells if it was cut)."""
        fd = _socket_fd(dbapi_conn)
        if fd is None:
            yield None
            return
        # A duplicate keeps the socket itself: the driver may close its fd (and the number be
        # reused by another socket) before this call unregisters.
        call = _Call(self._clock() + seconds, os.dup(fd), seconds)
        key = next(self._keys)
        with self._cond:
            self._calls[key] = call
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="db-deadlines")
                self._thread.start()
            elif self._wake_at is None or call.deadline < self._wake_at:
                self._cond.notify()  # rarely: deadlines mostly come in order
        try:
            yield call
        finally:
            with self._cond:
                mine = self._calls.pop(key, None)
            if mine is not None:
                os.close(call.dup)

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = self._clock()
                expired = [key for key, call in self._calls.items() if call.deadline <= now]
                cut = [self._calls.pop(key) for key in expired]
                for call in cut:
                    call.cut = True
                if not cut:
                    if self._calls:
                        self._idle_since = None
                    elif self._idle_since is None:
                        self._idle_since = now
                    elif now - self._idle_since >= _IDLE_EXIT:
                        self._thread = None  # the next call starts another: no thread outlives its engine for long
                        return
                    self._wake_at = min((call.deadline for call in self._calls.values()), default=None)
                    self._cond.wait(_IDLE_EXIT if self._wake_at is None else max(0.01, self._wake_at - now))
                    continue
            for call in cut:
                self._cut(call.dup)

    def _cut(self, dup: int) -> None:
        self.cut += 1  # the store logs the outage this causes
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def install(self, engine: Engine, ping_seconds: float, statement_seconds: float) -> None:
        """Wrap the dialect's blocking calls of ``engine`` with these deadlines."""
        dialect = engine.dialect
        ping = dialect.do_ping

        def limited_ping(dbapi_conn: Any) -> Any:
            # Not a disconnect SQLAlchemy would answer by connecting again at once (another
            # connect_timeout): a partition, which the store reports straight away.
            with self.limit(dbapi_conn, ping_seconds) as call:
                try:
                    return ping(dbapi_conn)
                except Exception:
                    if call is not None and call.cut:
                        raise NoAnswer(f"no answer to a ping in {ping_seconds:g} s") from None
                    raise

        dialect.do_ping = limited_ping  # type: ignore[method-assign]

        def wrap(name: str, connection_of: Callable[[Any], Any]) -> None:
            blocking = getattr(dialect, name)

            def limited(first: Any, *args: Any, **kwargs: Any) -> Any:
                with self.limit(connection_of(first), statement_seconds):
                    return blocking(first, *args, **kwargs)

            setattr(dialect, name, limited)

        for name in _STATEMENT_CALLS:
            wrap(name, lambda cursor: cursor.connection)
        for name in _CONNECTION_CALLS:
            wrap(name, lambda conn: conn)
