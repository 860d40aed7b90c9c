"""The SQL store: an engine and a private thread pool.

Modelled on ``twisted.enterprise.adbapi.ConnectionPool``: each call runs one
whole unit of work (a function taking a session) in a worker thread inside one
transaction, so the reactor never waits on the database. Units of work that
lose a race (unique-key violation, deadlock, serialization failure) are
retried from the start; they must therefore only touch the database.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01", "23505"}  # serialization, deadlock, unique
_RETRYABLE_MYSQL_CODES = {1213, 1205, 1062}  # deadlock, lock wait timeout, duplicate


class RetryTransaction(Exception):
    """Raised by a unit of work to ask for a fresh attempt."""


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, RetryTransaction):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    pgcode = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if pgcode in _RETRYABLE_PG_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL_CODES:
        return True
    if isinstance(exc, IntegrityError):
        return True  # SQLite's unique violations carry no code
    if isinstance(exc, OperationalError) and "locked" in str(orig):
        return True
    return False


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings this store needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:")
        if not memory:
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)
        _serialize_sqlite_writers(engine, memory)
        return engine
    return create_engine(url, pool_size=20, max_overflow=10, pool_pre_ping=True, pool_recycle=3600)


_sqlite_mode = threading.local()


def _serialize_sqlite_writers(engine: Engine, memory: bool) -> None:
    """Take SQLite's write lock at BEGIN so concurrent writers queue, not fail."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if getattr(_sqlite_mode, "readonly", False):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """Runs units of work against the database without blocking the reactor."""

    log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any = None,
        max_threads: int = 8,
        max_attempts: int = 30,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.url = url
        self.engine = make_engine(url)
        self.backend = self.engine.dialect.name
        if self.backend == "sqlite":
            # SQLite has one writer at a time: one worker queues units of work
            # in order instead of letting threads spin on the file lock.
            max_threads = 1
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.max_attempts = max_attempts
        self._reactor = reactor
        self._threadpool = ThreadPool(minthreads=1, maxthreads=max_threads, name="store")
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._threadpool.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._threadpool.stop()
            self._started = False
        self.engine.dispose()

    def run(self, work: Callable[..., T], *args: Any, readonly: bool = False, **kwargs: Any) -> Deferred[T]:
        """Run ``work(session, *args, **kwargs)`` in one transaction in a worker thread."""
        self.start()
        return deferToThreadPool(self._reactor, self._threadpool, self.run_sync, work, *args, readonly=readonly, **kwargs)

    def run_sync(self, work: Callable[..., T], *args: Any, readonly: bool = False, **kwargs: Any) -> T:
        """The same unit of work in the calling thread (CLI, migrations, tests)."""
        attempt = 0
        while True:
            attempt += 1
            _sqlite_mode.readonly = readonly
            try:
                with self.sessionmaker() as session, session.begin():
                    return work(session, *args, **kwargs)
            except Exception as exc:
                if attempt >= self.max_attempts or not _is_retryable(exc):
                    raise
                # Back off a little, with jitter, so racing writers spread out (a worker thread, never the reactor).
                time.sleep(min(0.002 * attempt, 0.05) * random.random())
            finally:
                _sqlite_mode.readonly = False

    def session(self) -> Session:
        return self.sessionmaker()
