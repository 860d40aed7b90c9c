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


class SocketDeadlines:
    """One watchdog thread for all calls in flight; started on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._calls: dict[int, tuple[float, int, float]] = {}  # key -> (deadline, dup'ed fd, seconds)
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None  # when the watchdog wakes next; None: when called
        self.cut = 0

    @contextlib.contextmanager
    def limit(self, dbapi_conn: Any, seconds: float) -> Iterator[None]:
        fd = _socket_fd(dbapi_conn)
        if fd is None:
            yield
            return
        # A duplicate keeps the socket itself: the driver may close its fd (and the number be
        # reused by another socket) before this call unregisters.
        dup = os.dup(fd)
        key = next(self._keys)
        deadline = self._clock() + seconds
        with self._cond:
            self._calls[key] = (deadline, dup, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="db-deadlines")
                self._thread.start()
            elif self._wake_at is None or deadline < self._wake_at:
                self._cond.notify()  # rarely: deadlines mostly come in order
        try:
            yield
        finally:
            with self._cond:
                entry = self._calls.pop(key, None)
            if entry is not None:
                os.close(dup)

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = self._clock()
                expired = [(key, entry) for key, entry in self._calls.items() if entry[0] <= now]
                for key, _ in expired:
                    del self._calls[key]
                if not expired:
                    self._wake_at = min((entry[0] for entry in self._calls.values()), default=None)
                    self._cond.wait(None if self._wake_at is None else max(0.01, self._wake_at - now))
                    continue
            for _, (_, dup, seconds) in expired:
                self._cut(dup, seconds)

    def _cut(self, dup: int, seconds: float) -> None:
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

        def wrap(name: str, seconds: float, connection_of: Callable[[Any], Any]) -> None:
            call = getattr(dialect, name)

            def limited(first: Any, *args: Any, **kwargs: Any) -> Any:
                with self.limit(connection_of(first), seconds):
                    return call(first, *args, **kwargs)

            setattr(dialect, name, limited)

        wrap("do_ping", ping_seconds, lambda conn: conn)
        for name in _STATEMENT_CALLS:
            wrap(name, statement_seconds, lambda cursor: cursor.connection)
        for name in _CONNECTION_CALLS:
            wrap(name, statement_seconds, lambda conn: conn)
