"""Telling a database outage from an ordinary error, and failing fast while it lasts.

``classify`` sorts driver errors: *unreachable* (refused, connect timed out, connection
lost, server shutting down) means the database is down for everyone; *timeout* (a
statement or lock wait ran out, no free connection in the pool) is one request's bad
luck. Both become 503 ``DatabaseUnavailable``; only the first opens the breaker.

``DatabaseHealth`` is that breaker. After an unreachable error every unit of work gets
503 at once, without waiting on the network, except one probe every ``retry_interval``
seconds; the first success closes it. Each outage is logged once when it begins and once
when it ends, however many requests and polls meet it in between.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import attrs
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from twisted.logger import Logger

from server_plugin import exceptions as exc
from server_plugin.store.deadlines import NoAnswer

UNREACHABLE = "unreachable"
TIMEOUT = "timeout"

# PostgreSQL SQLSTATEs: class 08 is "connection exception".
_PG_DOWN = {"57P01": "the server is shutting down", "57P02": "the server crashed", "57P03": "the server is starting up"}
_PG_DOWN_LIKE = {"53300": "too many connections"}
_PG_TIMEOUT = {"57014": "a statement timed out", "55P03": "a lock wait timed out"}
# MySQL/MariaDB client and server error numbers.
_MY_CONNECT = {2002, 2003, 2005}
_MY_LOST = {1927, 2006, 2013, 2014, 2045, 2055, 4031}
_MY_DOWN = {1040: "too many connections", 1053: "the server is shutting down"}
_MY_TIMEOUT = {1205: "a lock wait timed out", 1969: "a statement timed out", 3024: "a statement timed out"}
_SQLITE_DOWN = ("unable to open database file", "disk i/o error")
_SQLITE_TIMEOUT = {"database is locked": "the database is locked", "readonly database": "the database file is read-only"}


@attrs.frozen
class Failure:
    kind: str  # UNREACHABLE or TIMEOUT
    reason: str  # a short phrase for clients
    detail: str  # the driver's first line, for the log (no URL, no password)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)[:300]


def _connect_reason(text: str) -> str:
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timeout" in lowered or "timed out" in lowered:
        return "connection timed out"
    return "cannot connect"


def classify(error: BaseException) -> Failure | None:
    """An outage (or a timeout) behind ``error``, or None for any other error."""
    if isinstance(error, NoAnswer):
        return Failure(UNREACHABLE, "no answer in time", str(error))
    if isinstance(error, PoolTimeoutError):
        return Failure(TIMEOUT, "no free database connection", _first_line(error))
    if not isinstance(error, DBAPIError):
        return None
    orig = error.orig
    detail = _first_line(orig)
    module = type(orig).__module__
    if module.startswith("psycopg"):
        found = _postgresql(error, detail)
    elif module.startswith(("pymysql", "MySQLdb")):
        found = _mysql(orig, detail)
    elif module.startswith("sqlite3"):
        found = _sqlite(detail)
    else:
        found = None
    if found is None and error.connection_invalidated:
        return Failure(UNREACHABLE, "connection lost", detail)
    return found


def _postgresql(error: DBAPIError, detail: str) -> Failure | None:
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if sqlstate:
        if sqlstate.startswith("08"):
            return Failure(UNREACHABLE, "connection lost", detail)
        if sqlstate in _PG_DOWN or sqlstate in _PG_DOWN_LIKE:
            return Failure(UNREACHABLE, {**_PG_DOWN, **_PG_DOWN_LIKE}[sqlstate], detail)
        if sqlstate in _PG_TIMEOUT:
            return Failure(TIMEOUT, _PG_TIMEOUT[sqlstate], detail)
        return None
    if isinstance(error, (OperationalError, InterfaceError)):
        # libpq's own errors carry no SQLSTATE: failed or lost connections.
        lowered = detail.lower()
        if error.connection_invalidated or "closed" in lowered or "consuming input" in lowered:
            return Failure(UNREACHABLE, "connection lost", detail)
        return Failure(UNREACHABLE, _connect_reason(detail), detail)
    return None


def _mysql(orig: BaseException, detail: str) -> Failure | None:
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if code is not None and len(args) > 1:
        detail = f"{code} {_first_line(Exception(args[1]))}"  # "2003 Can't connect ...", not a tuple's repr
    if code in _MY_CONNECT:
        return Failure(UNREACHABLE, _connect_reason(detail), detail)
    if code in _MY_LOST:
        return Failure(UNREACHABLE, "no answer in time" if "timed out" in detail.lower() else "connection lost", detail)
    if code in _MY_DOWN:
        return Failure(UNREACHABLE, _MY_DOWN[code], detail)
    if code in _MY_TIMEOUT:
        return Failure(TIMEOUT, _MY_TIMEOUT[code], detail)
    return None


def _sqlite(detail: str) -> Failure | None:
    lowered = detail.lower()
    if any(text in lowered for text in _SQLITE_DOWN):
        return Failure(UNREACHABLE, "the database file cannot be used", detail)
    for text, reason in _SQLITE_TIMEOUT.items():
        if text in lowered:
            return Failure(TIMEOUT, reason, detail)
    return None


class DatabaseHealth:
    """The breaker: up, or down since a moment with one probe at a time. Thread-safe."""

    log = Logger()

    def __init__(self, retry_interval: float, where: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self.where = where
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.reason = ""
        self.refused = 0  # units of work answered 503 without trying, in this outage
        self.outages = 0
        self._next_probe = 0.0
        self._probing = False
        self._recovered_at = -1e9  # when the last outage ended
        self._overload_logged = -1e9
        self._overloaded = 0

    def refusing(self) -> bool:
        """True while down and not yet time for another probe (or one is in flight)."""
        with self._lock:
            if self.down_since is None or (not self._probing and self._clock() >= self._next_probe):
                return False
            self.refused += 1
            return True

    def admit(self) -> bool:
        """Let a unit of work try: True if it is the probe; raises DatabaseUnavailable if it must not try."""
        with self._lock:
            if self.down_since is None:
                return False
            if self._probing or self._clock() < self._next_probe:
                self.refused += 1
                raise exc.DatabaseUnavailable(reason=self.reason)
            self._probing = True
            return True

    def end_probe(self) -> None:
        with self._lock:
            self._probing = False

    def failed(self, failure: Failure, since: float | None = None) -> None:
        """An unreachable database, met by a call that began at ``since``: open the breaker (logged once per outage)."""
        with self._lock:
            now = self._clock()
            if self.down_since is None and since is not None and since < self._recovered_at:
                return  # a call from before the recovery, timing out late: news of the last outage, not a new one
            self._next_probe = now + self.retry_interval
            if self.down_since is not None:
                return
            self.down_since, self.reason, self.refused = min(now, since or now), failure.reason, 0
            self.outages += 1
        self.log.error(
            "database unavailable: {reason} ({detail}) at {where}; requests get 503 until it answers again",
            reason=failure.reason, detail=failure.detail, where=self.where,
        )  # fmt: skip

    def succeeded(self) -> None:
        """The database answered: close the breaker (logged once per outage)."""
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is None:
                return
            now = self._clock()
            elapsed, refused = now - self.down_since, self.refused
            self.down_since, self._recovered_at = None, now
        self.log.info(
            "database available again after {elapsed:.1f} s at {where} ({refused} calls refused meanwhile)",
            elapsed=elapsed, where=self.where, refused=refused,
        )  # fmt: skip

    def overloaded(self, waited: float, every: float = 10.0) -> None:
        """A unit of work waited too long for a thread and was refused (logged at most once per ``every`` s)."""
        with self._lock:
            self._overloaded += 1
            now = self._clock()
            if now - self._overload_logged < every:
                return
            self._overload_logged, count, self._overloaded = now, self._overloaded, 0
        self.log.warn(
            "database too slow: {count} unit(s) of work waited over {waited:.1f} s for a store thread and got 503",
            count=count, waited=waited,
        )  # fmt: skip
