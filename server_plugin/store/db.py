"""The SQL store: an engine and a private thread pool.

Modelled on ``twisted.enterprise.adbapi.ConnectionPool``: each call runs one
whole unit of work (a function taking a session) in a worker thread inside one
transaction, so the reactor never waits on the database. Units of work that
lose a race (unique-key violation, deadlock, serialization failure) are
retried from the start; they must therefore only touch the database.

Every wait on the database is bounded (``DatabaseSettings``): connecting, each
statement, each lock wait, the pool. A database that cannot be reached gives 503
``DatabaseUnavailable`` at once while it stays down (``store.outage``), and the
store serves again by itself as soon as it answers.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from server_plugin import exceptions as exc
from server_plugin.store import outage, pg_begin
from server_plugin.store.deadlines import SocketDeadlines
from server_plugin.store.prebuilt import Prebuilt
from server_plugin.store.settings import DatabaseSettings

T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01", "23505"}  # serialization, deadlock, unique
_RETRYABLE_MYSQL_CODES = {1213, 1205, 1062}  # deadlock, lock wait timeout, duplicate


class RetryTransaction(Exception):
    """Raised by a unit of work to ask for a fresh attempt."""


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, RetryTransaction):
        return True
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    pgcode = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if pgcode in _RETRYABLE_PG_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL_CODES:
        return True
    if isinstance(error, IntegrityError):
        return True  # SQLite's unique violations carry no code
    if isinstance(error, OperationalError) and "locked" in str(orig):
        return True
    return False


def make_engine(url: str, settings: DatabaseSettings | None = None) -> Engine:
    """An engine with the per-backend settings this store needs, every wait bounded by ``settings``."""
    settings = settings or DatabaseSettings()
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:")
        if not memory:
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        # SQLite's busy timeout is its lock wait: as long as a statement may take.
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": settings.statement_timeout}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)
        _serialize_sqlite_writers(engine, memory)
        return engine
    # psycopg 3: BEGIN is the liveness check, idle connections alone are pinged (pg_begin.py); others ping each checkout.
    explicit_begin = backend == "postgresql" and parsed.get_driver_name() == "psycopg"
    mysql = backend in ("mysql", "mariadb")
    engine = create_engine(
        url, connect_args=_connect_args(backend, parsed.query, settings), pool_size=20, max_overflow=10,
        pool_timeout=settings.pool_timeout, pool_pre_ping=not explicit_begin, pool_recycle=3600,
        pool_reset_on_return=None if mysql else "rollback",  # MySQL: _rollback_unless_committed
    )  # fmt: skip
    if engine.dialect.name == "mysql":
        _limit_mysql_statements(engine, settings.statement_timeout)
    if mysql:
        _rollback_unless_committed(engine)
    if engine.dialect.driver == "pymysql":
        _bound_pymysql_handshake(engine, settings.connect_timeout)
    # Past the server's own timeout, a call still unanswered means the network is gone.
    deadlines = SocketDeadlines()
    deadlines.install(engine, settings.connect_timeout, settings.statement_timeout + settings.connect_timeout)
    if explicit_begin:
        pg_begin.install(engine, deadlines, settings.connect_timeout)
    return engine


MIGRATION_STATEMENT_TIMEOUT = 6 * 3600.0  # an ALTER TABLE on a large table may rightly take long


def migration_engine(url: str, settings: DatabaseSettings | None = None) -> Engine:
    """An engine for schema migrations: the same bounds, except on how long one statement may take."""
    settings = settings or DatabaseSettings()
    return make_engine(url, attrs.evolve(settings, statement_timeout=max(settings.statement_timeout, MIGRATION_STATEMENT_TIMEOUT)))


GROUP_CONCAT_MAX_LEN = 16 * 1024 * 1024


def _limit_mysql_statements(engine: Engine, seconds: float) -> None:
    """The server stops a statement that runs too long (MariaDB: any; MySQL: SELECTs), before the client gives up."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        if engine.dialect.is_mariadb:
            statement = f"SET SESSION max_statement_time = {float(seconds)}"
        else:
            statement = f"SET SESSION max_execution_time = {int(seconds * 1000)}"
        # A port list's GROUP_CONCAT (store/sql_json.py) must never be cut short: MySQL's default is 1,024 bytes.
        statement += f", group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


_COMMITTED = "qrp_committed"  # in the pool record's info: the connection's last act was a commit


def _rollback_unless_committed(engine: Engine) -> None:
    """Return a MySQL connection to the pool without a ROLLBACK when its last act was a COMMIT.

    The pool rolls back every connection handed back to it, and a MySQL driver sends that ROLLBACK whatever
    state the connection is in (psycopg does not, when the server says no transaction is open): after each
    committed unit of work, a round trip for nothing. A commit marks the connection, the next BEGIN (an
    explicit or implicit transaction's, ``do_begin``) unmarks it, and at its return (the engine has
    ``pool_reset_on_return=None``) any connection not marked is rolled back as the pool would."""
    dialect = engine.dialect
    commit, begin = dialect.do_commit, dialect.do_begin

    def do_commit(proxy: Any) -> None:
        commit(proxy)
        _record_info(proxy)[_COMMITTED] = True

    def do_begin(proxy: Any) -> None:
        _record_info(proxy).pop(_COMMITTED, None)
        begin(proxy)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_begin = do_begin  # type: ignore[method-assign]

    @event.listens_for(engine, "reset")
    def _reset(dbapi_conn: Any, record: Any, state: Any) -> None:
        committed = record.info.pop(_COMMITTED, False) if record is not None else False
        if not (committed or state.transaction_was_reset or state.terminate_only):
            dialect.do_rollback(dbapi_conn)  # (through the deadlines)


def _record_info(proxy: Any) -> dict[str, Any]:
    """The pool record's info of ``proxy``; a throwaway dict for the dialect's first-connect proxy (it has none)."""
    try:
        return proxy.info  # type: ignore[no-any-return]
    except NotImplementedError:
        return {}


def _bound_pymysql_handshake(engine: Engine, seconds: float) -> None:
    """PyMySQL waits for the server's greeting with ``read_timeout``: make connecting obey ``connect_timeout``."""

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        handshake = dict(cparams, read_timeout=seconds, write_timeout=seconds)
        conn = dialect.loaded_dbapi.connect(*cargs, **handshake)
        # PyMySQL applies these before each read and write from now on.
        conn._read_timeout, conn._write_timeout = cparams.get("read_timeout"), cparams.get("write_timeout")
        return conn


def _connect_args(backend: str, query: Any, settings: DatabaseSettings) -> dict[str, Any]:
    """Driver arguments for the timeouts; what the URL sets itself wins."""
    connect = max(1, round(settings.connect_timeout))
    if backend == "postgresql":
        statement_ms = int(settings.statement_timeout * 1000)
        options = " ".join(filter(None, [f"-c statement_timeout={statement_ms}", query.get("options", "")]))
        args: dict[str, Any] = {"connect_timeout": connect, "options": options}
    elif backend in ("mysql", "mariadb"):
        answer = max(1, round(settings.statement_timeout + settings.connect_timeout))
        args = {"connect_timeout": connect, "read_timeout": answer, "write_timeout": answer}
    else:
        return {}
    return {key: value for key, value in args.items() if key not in query or key == "options"}


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
        (_BEGIN if getattr(_sqlite_mode, "readonly", False) else _BEGIN_IMMEDIATE).rows(conn, {}, autobegin=False)


# Every SQLite transaction starts with one of these: on the driver's cursor (prebuilt.py), not a whole execution.
_BEGIN, _BEGIN_IMMEDIATE = Prebuilt(text("BEGIN")), Prebuilt(text("BEGIN IMMEDIATE"))


class Store:
    """Runs units of work against the database without blocking the reactor."""

    log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any,
        max_threads: int = 8,
        max_attempts: int = 30,
        settings: DatabaseSettings | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or DatabaseSettings()
        self.engine = make_engine(url, self.settings)
        self.backend = self.engine.dialect.name
        if self.backend == "sqlite":
            # SQLite has one writer at a time: one worker queues units of work
            # in order instead of letting threads spin on the file lock.
            max_threads = 1
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.max_attempts = max_attempts
        self.health = outage.DatabaseHealth(self.settings.retry_interval, where=_where(url))
        self._reactor = reactor
        self._threadpool = ThreadPool(minthreads=1, maxthreads=max_threads, name="store")
        self._started = False
        self._stopping = False
        # Connections found dead (a lost server, a cut call: a database that crashed and restarted among them). The
        # event bus forgets the sequence numbers it was told were burnt when this changes (EventBus._drain_burnt).
        self.connections_lost = 0
        event.listen(self.engine, "invalidate", self._connection_lost)

    def _connection_lost(self, dbapi_conn: Any, record: Any, exception: Any) -> None:
        self.connections_lost += 1  # (store threads; the bus only compares it with what it last saw)

    def start(self) -> None:
        if not self._started:
            self._threadpool.start()
            self._started = True

    def stop(self) -> None:
        """Join the worker threads here (the CLI, tests); a running server uses ``stop_async``."""
        if self._started:
            self._threadpool.stop()
            self._started = False
        self.engine.dispose()

    async def stop_async(self) -> None:
        """Let the queued units of work end and join the workers off the reactor thread (which keeps serving
        meanwhile), then close the connections. Work submitted after this began is refused (503)."""
        self._stopping = True
        if self._started:
            self._started = False
            await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._threadpool.stop)
        self.engine.dispose()

    def run(self, work: Callable[..., T], *args: Any, readonly: bool = False, **kwargs: Any) -> Deferred[T]:
        """Run ``work(session, *args, **kwargs)`` in one transaction in a worker thread."""
        if self._stopping:
            return fail(exc.DatabaseUnavailable(reason="the server is shutting down"))
        self.start()
        if self.health.refusing():
            # Known down: answer now rather than queue behind threads that wait on the network.
            return fail(exc.DatabaseUnavailable(reason=self.health.reason))
        queued = time.monotonic()
        return deferToThreadPool(self._reactor, self._threadpool, self._dequeued, queued, work, *args, readonly=readonly, **kwargs)

    def _dequeued(self, queued: float, work: Callable[..., T], *args: Any, readonly: bool = False, **kwargs: Any) -> T:
        """A unit of work that waited for a thread longer than a statement may take is not started.

        Its client has been waiting that long already; answering 503 keeps the queue
        short while the database is slow (e.g. a locked SQLite file), and nothing is done late.
        """
        waited = time.monotonic() - queued
        if waited > self.settings.statement_timeout:
            self.health.overloaded(waited)
            raise exc.DatabaseUnavailable(reason="the database is too slow to answer")
        return self.run_sync(work, *args, readonly=readonly, **kwargs)

    def run_sync(self, work: Callable[..., T], *args: Any, readonly: bool = False, **kwargs: Any) -> T:
        """The same unit of work in the calling thread (CLI, migrations, tests)."""
        probe = self.health.admit()  # checked again here: work queued before an outage began
        try:
            result = self._attempts(work, args, kwargs, readonly, probe)
        finally:
            if probe:
                self.health.end_probe()
        self.health.succeeded()
        return result

    def _attempts(self, work: Callable[..., T], args: Any, kwargs: Any, readonly: bool, probe: bool) -> T:
        started = time.monotonic()
        attempt = 0
        stale_retried = False
        while True:
            attempt += 1
            attempt_started = time.monotonic()
            _sqlite_mode.readonly = readonly
            pg_begin.forget_begin()
            try:
                with self.sessionmaker() as session, session.begin():
                    if probe:
                        session.connection()  # reach the database before the work, whatever it does
                        self.health.succeeded()
                    return work(session, *args, **kwargs)
            except Exception as error:
                if not stale_retried and _stale_at_begin(error):
                    stale_retried = True  # a pooled connection the server closed (pg_begin.py): once more, on a new one
                    continue
                failure = outage.classify(error)
                if failure is not None and failure.kind == outage.UNREACHABLE:
                    self.health.failed(failure, since=attempt_started)
                    raise exc.DatabaseUnavailable(reason=failure.reason) from error
                # Races are retried, but not past the statement timeout (a lock wait may take all of it).
                elapsed = time.monotonic() - started
                if attempt < self.max_attempts and elapsed < self.settings.statement_timeout and _is_retryable(error):
                    # Back off a little, with jitter, so racing writers spread out (a worker thread, never the reactor).
                    time.sleep(min(0.002 * attempt, 0.05) * random.random())
                    continue
                if failure is not None:
                    self.log.warn(
                        "database call failed after {elapsed_ms} ms: {reason} ({detail})",
                        elapsed_ms=int(elapsed * 1000), reason=failure.reason, detail=failure.detail,
                    )  # fmt: skip
                    raise exc.DatabaseUnavailable(reason=failure.reason) from error
                raise
            finally:
                _sqlite_mode.readonly = False

    def session(self) -> Session:
        return self.sessionmaker()

    def session_info(self, key: str, value: Any) -> None:
        """Put ``key`` in the ``info`` of every session made from now on (None: take it out); a part that listens to
        sessions' events finds there what the server gave it (agent_events.SINK: where committed events go)."""
        info = dict(self.sessionmaker.kw.get("info") or {})
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
        self.sessionmaker.configure(info=info)


def _stale_at_begin(error: BaseException) -> bool:
    """A BEGIN found its connection closed (SQLAlchemy invalidated the pool): nothing of the work ran."""
    return isinstance(error, DBAPIError) and error.connection_invalidated and pg_begin.failed_at_begin()


def _where(url: str) -> str:
    """``host:port/database`` (or the SQLite file) for logs: never the user or password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()}://{parsed.host or 'localhost'}{port}/{parsed.database or ''}"
