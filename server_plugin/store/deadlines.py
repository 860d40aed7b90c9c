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
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

T = TypeVar("T")

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


class _Socket:
    """A connection's socket, duplicated once: the duplicate keeps the socket itself, so that the
    watchdog never cuts another socket that reused the number after the driver closed its fd.
    Closed when the pool closes the connection, or the connection is collected."""

    __slots__ = ("fd", "dup", "__weakref__")

    def __init__(self, fd: int, dup: int) -> None:
        self.fd, self.dup = fd, dup


class _Call:
    __slots__ = ("deadline", "socket", "seconds", "cut", "owned")

    def __init__(self, deadline: float, socket: _Socket, seconds: float, owned: bool) -> None:
        self.deadline, self.socket, self.seconds, self.cut = deadline, socket, seconds, False
        self.owned = owned  # the call's own duplicate (a connection that cannot be tracked): closed when it ends


class SocketDeadlines:
    """One watchdog thread for all calls in flight; started on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._calls: dict[int, _Call] = {}
        self._keys = itertools.count()
        self._sockets: weakref.WeakKeyDictionary[Any, _Socket] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None
        # When the watchdog wakes next (None: when called). With no call in flight it still wakes
        # every ``_shortest`` seconds, so that a new call, whose deadline is at least that far
        # off, does not have to wake it.
        self._wake_at: float | None = None
        self._shortest: float | None = None  # the shortest limit asked for so far
        self._idle_since: float | None = None
        self.cut = 0

    @contextlib.contextmanager
    def limit(self, dbapi_conn: Any, seconds: float) -> Iterator[_Call | None]:
        """Bound one call on ``dbapi_conn``; yields the registration (``.cut`` tells if it was cut)."""
        started = self.begin(dbapi_conn, seconds)
        try:
            yield started[1] if started is not None else None
        finally:
            if started is not None:
                self.end(started[0])

    def begin(self, dbapi_conn: Any, seconds: float) -> tuple[int, _Call] | None:
        """Register a call on ``dbapi_conn`` (None: it has no socket); ``end(key)`` when it returns."""
        fd = _socket_fd(dbapi_conn)
        if fd is None:
            return None
        owner = getattr(dbapi_conn, "dbapi_connection", dbapi_conn)  # a pool's proxy (do_commit's): its DBAPI connection
        key = next(self._keys)
        with self._cond:
            sock = self._tracked(owner, fd)
            owned = sock is None
            if sock is None:
                sock = _Socket(fd, os.dup(fd))
            call = _Call(self._clock() + seconds, sock, seconds, owned)
            self._calls[key] = call
            if self._shortest is None or seconds < self._shortest:
                self._shortest = seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="db-deadlines")
                self._thread.start()
            elif self._wake_at is None or call.deadline < self._wake_at:
                self._cond.notify()  # rarely: deadlines mostly come in order
        return key, call

    def end(self, key: int) -> None:
        with self._cond:
            call = self._calls.pop(key, None)
            if call is not None and call.owned:
                self._close(call.socket)

    def _tracked(self, owner: Any, fd: int) -> _Socket | None:
        """(Under the lock.) ``owner``'s duplicated socket, made on first use or when the driver connected
        anew (the old one closed); None for an owner that takes no weak reference (each call dups then)."""
        try:
            sock = self._sockets.get(owner)
        except TypeError:
            return None
        if sock is not None and sock.fd == fd:
            return sock
        if sock is not None:
            self._close(sock)
        sock = self._sockets[owner] = _Socket(fd, os.dup(fd))
        weakref.finalize(owner, self._release, sock).atexit = False  # at exit the process closes it
        return sock

    def forget(self, dbapi_conn: Any, *_: Any) -> None:
        """The pool closed ``dbapi_conn``: close the duplicate of its socket (a pool ``close`` listener)."""
        with self._cond:
            sock = self._sockets.pop(dbapi_conn, None)
            if sock is not None:
                self._close(sock)

    def _release(self, sock: _Socket) -> None:
        with self._cond:
            self._close(sock)

    @staticmethod
    def _close(sock: _Socket) -> None:
        if sock.dup >= 0:
            os.close(sock.dup)
            sock.dup = -1

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
                    nearest = min((call.deadline for call in self._calls.values()), default=None)
                    if nearest is None and self._shortest is not None:
                        nearest = now + min(self._shortest, _IDLE_EXIT)  # idle: before any new call's deadline
                    self._wake_at = nearest
                    self._cond.wait(_IDLE_EXIT if nearest is None else max(0.01, nearest - now))
                    continue
                for call in cut:  # under the lock: a duplicate is not closed meanwhile
                    self._cut(call.socket)
                    if call.owned:
                        self._close(call.socket)  # its end() will not find it

    def _cut(self, target: _Socket) -> None:
        self.cut += 1  # the store logs the outage this causes
        if target.dup < 0:
            return  # the connection was closed already
        try:
            sock = socket.socket(fileno=target.dup)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()  # a tracked duplicate stays open until its connection closes

    def answered(self, dbapi_conn: Any, seconds: float, what: str, call: Callable[[Any], T]) -> T:
        """``call(dbapi_conn)``, a quick exchange (a ping, a BEGIN), cut after ``seconds``: then ``NoAnswer``.

        Not a disconnect SQLAlchemy would answer by connecting again at once (another
        connect_timeout): a partition, which the store reports straight away."""
        with self.limit(dbapi_conn, seconds) as registered:
            try:
                return call(dbapi_conn)
            except Exception:
                if registered is not None and registered.cut:
                    raise NoAnswer(f"no answer to {what} in {seconds:g} s") from None
                raise

    def install(self, engine: Engine, ping_seconds: float, statement_seconds: float) -> None:
        """Wrap the dialect's blocking calls of ``engine`` with these deadlines."""
        dialect = engine.dialect
        ping = dialect.do_ping

        def limited_ping(dbapi_conn: Any) -> Any:
            return self.answered(dbapi_conn, ping_seconds, "a ping", ping)

        dialect.do_ping = limited_ping  # type: ignore[method-assign]

        def wrap(name: str, connection_of: Callable[[Any], Any]) -> None:
            blocking = getattr(dialect, name)

            def limited(first: Any, *args: Any, **kwargs: Any) -> Any:
                started = self.begin(connection_of(first), statement_seconds)
                try:
                    return blocking(first, *args, **kwargs)
                finally:
                    if started is not None:
                        self.end(started[0])

            setattr(dialect, name, limited)

        for name in _STATEMENT_CALLS:
            wrap(name, lambda cursor: cursor.connection)
        for name in _CONNECTION_CALLS:
            wrap(name, lambda conn: conn)
        # A connection the pool closes (recycled, invalidated, disposed) lets go of its socket at once.
        event.listen(engine, "close", self.forget)
        event.listen(engine, "close_detached", self.forget)
