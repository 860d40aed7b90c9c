"""PostgreSQL: a transaction's BEGIN is also its liveness check, so a busy pool needs no ping.

With ``pool_pre_ping`` every unit of work paid a round trip (``;``) before psycopg's own
implicit BEGIN, another round trip: two of a port create's seven. Here the psycopg
connection runs in autocommit mode and the dialect's ``do_begin`` sends BEGIN itself,
bounded as the ping was (``connect_timeout``, then ``NoAnswer``: a partition gives its 503
as fast as before). BEGIN never waits on a lock, so that bound is right for it, which
would not be for the unit of work's first statement. psycopg still sends COMMIT and
ROLLBACK when the server says a transaction is open (it reads that from the server, not
from its autocommit flag).

A pooled connection is still pinged at checkout when it has been idle longer than
``PING_IF_IDLE`` seconds, or when its last unit of work did not commit (an error, a
timeout), as ``pool_pre_ping`` would: a dead one is replaced there without an error. A
connection found closed by BEGIN itself (the server restarted within that second) is
invalidated with the whole pool by SQLAlchemy, and ``failed_at_begin`` lets the store run
the unit of work once more on a new connection: nothing of it had run.

MySQL/MariaDB keep ``pool_pre_ping``: their transactions begin with the first statement
(no BEGIN round trip to reuse), and a first statement may rightly wait on a lock longer
than a ping may take.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError

from server_plugin.store.deadlines import NoAnswer, SocketDeadlines

PING_IF_IDLE = 1.0  # seconds since the connection's last committed unit of work
_CHECKED = "qrp_checked"  # in the pool record's info (cleared when its connection is closed)
_BEGIN = "BEGIN"
_state = threading.local()


def failed_at_begin() -> bool:
    """Whether this thread's BEGIN failed since ``forget_begin`` (the unit of work then ran nothing)."""
    return getattr(_state, "failed", False)


def forget_begin() -> None:
    """A unit of work's attempt starts (its thread's earlier BEGIN says nothing about it)."""
    _state.failed = False


def install(engine: Engine, deadlines: SocketDeadlines, ping_seconds: float) -> None:
    """Begin ``engine``'s transactions explicitly (bounded by ``ping_seconds``); ping only idle or suspect
    connections at checkout. For an engine created with ``pool_pre_ping=False`` (psycopg 3)."""
    from psycopg.pq import TransactionStatus

    idle = TransactionStatus.IDLE
    dialect = engine.dialect
    implicit_begin = dialect.do_begin

    @event.listens_for(engine, "connect")
    def _autocommit(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.autocommit = True  # psycopg sends no BEGIN of its own: do_begin does
        record.info[_CHECKED] = time.monotonic()  # it just answered: no ping at its first checkout

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        checked = record.info.get(_CHECKED)
        if checked is not None and time.monotonic() - checked < PING_IF_IDLE:
            return
        try:
            dialect.do_ping(dbapi_conn)  # the deadlines' bounded ping (NoAnswer when cut)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_conn, None):
                raise InvalidatePoolError(str(error)) from error  # the pool connects anew, as pool_pre_ping does
            raise

    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(proxy: Any) -> None:
        commit(proxy)
        _info(proxy)[_CHECKED] = time.monotonic()  # committed: good for PING_IF_IDLE more

    def do_rollback(proxy: Any) -> None:
        if proxy.dbapi_connection.info.transaction_status != idle:
            _info(proxy).pop(_CHECKED, None)  # a unit of work that failed (or a cut call): ping it at its next checkout
        rollback(proxy)

    def do_begin(proxy: Any) -> None:
        dbapi_conn = proxy.dbapi_connection
        if not dbapi_conn.autocommit:  # an isolation level was set: psycopg begins with it
            implicit_begin(proxy)
            return
        try:
            deadlines.answered(dbapi_conn, ping_seconds, "BEGIN", _send_begin)
        except NoAnswer as error:
            _state.failed = True
            # Its socket is cut: drop the connection now. SQLAlchemy would otherwise roll back a connection
            # whose BEGIN failed, and that rollback's error ("the connection is lost") would replace this one.
            proxy.invalidate(error)
            raise
        except BaseException:
            _state.failed = True
            raise

    dialect.do_begin = do_begin  # type: ignore[method-assign]
    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


def _info(proxy: Any) -> dict[str, Any]:
    """The pool record's info of ``proxy``; a throwaway dict for the dialect's first-connect proxy (it has none)."""
    try:
        return proxy.info  # type: ignore[no-any-return]
    except NotImplementedError:
        return {}


def _send_begin(dbapi_conn: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(_BEGIN)
    finally:
        cursor.close()
