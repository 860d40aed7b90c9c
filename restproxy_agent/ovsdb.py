"""One long-lived OVSDB connection: the python ``ovs`` IDL driven by the Twisted reactor, without threads.

How the IDL is driven (reference/ovs-plumbing-facts.md §3): python-ovs is built
for a poll() main loop; every object has ``wait(poller)``. After each
``idl.run()`` we call ``idl.wait()`` with a *recording* poller and translate
what it asked for into reactor registrations: ``addReader``/``addWriter`` on a
``dup()`` of the IDL's socket (python-ovs closes its own socket inside
``run()``, so registering that fd would corrupt the reactor's bookkeeping), and
one ``callLater`` for the reconnect/backoff/probe timer (``immediate_wake`` is
``callLater(0)``). When the fd is ready or the timer fires, we run the IDL
again and register again from scratch; that also follows the socket across
reconnects. Idle, nothing polls.

Reconnecting is python-ovs's own finite-state machine (``ovs.reconnect``:
backoff from 1 s up to ``max_backoff``), which is why this is not a
``ClientService``. After an ovsdb-server restart the IDL downloads everything
again and announces every row as created, with no deletions (a standalone
database keeps no history). ``OvsdbConnection`` hides that: it compares the
fresh replica with the one it had and delivers only the real differences to
listeners (creates, updates with the old values, deletes that happened while it
was away), then calls the ``on_reconnect`` callbacks so the agent reconciles
by iface-id instead of re-plugging.

``IDL.notify()`` only queues events: listeners, waiters and transaction
results run after ``run()`` has returned, when a new transaction may be built.
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import attrs
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReadWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer


def _import_ovs_poller_without_eventlet() -> None:
    """python-ovs's poller imports eventlet, when it is installed, only to ask whether eventlet monkey-patched
    ``select``: 0.2 s of an agent's start (a third of its imports) and a deprecation warning on stderr, for a
    Twisted process that never uses eventlet. Unless eventlet is already loaded (a process that may have patched),
    its import fails for that one look (``sys.modules`` entry None), and the poller takes the answer "not patched"."""
    if "ovs.poller" in sys.modules or "eventlet" in sys.modules:
        return
    sys.modules["eventlet"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("ovs.poller")
    finally:
        del sys.modules["eventlet"]


_import_ovs_poller_without_eventlet()
import ovs.db.idl  # noqa: E402
import ovs.jsonrpc  # noqa: E402
import ovs.poller  # noqa: E402
import ovs.timeval  # noqa: E402

CREATE, UPDATE, DELETE = ovs.db.idl.ROW_CREATE, ovs.db.idl.ROW_UPDATE, ovs.db.idl.ROW_DELETE
Txn = ovs.db.idl.Transaction

# What the agent replicates: the columns it reads or writes, never Interface.statistics & co. (which change every few
# seconds), nor ovs-vswitchd's other status columns: every column costs python-ovs parsing in every update of the row.
# fmt: off
DEFAULT_TABLES: dict[str, list[str] | None] = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg", "ovs_version", "other_config", "external_ids"],
    "Bridge": ["name", "ports", "datapath_type", "fail_mode", "controller", "protocols", "external_ids", "other_config"],
    "Port": ["name", "interfaces", "tag", "external_ids"],
    "Interface": ["name", "type", "external_ids", "ofport", "ofport_request", "error", "mtu_request", "admin_state"],
    "Controller": ["target", "connection_mode", "is_connected"],
}
# fmt: on

Listener = Callable[[str, ovs.db.idl.Row, Any], None]


def cell(row: ovs.db.idl.Row, column: str) -> Any:
    """``getattr(row, column)``, read straight from the replica when no transaction being built has touched the row.

    python-ovs's ``Row.__getattr__`` rebuilds a set or map column's value through ``Datum.from_python`` (constraints
    checked again) on every read, in case the row has pending mutations: in a burst that was the largest single cost
    of the reactor (the bridge scan, every VIF lookup, the name index on every row change). A row with changes or
    mutations pending, or not in the replica, is read by python-ovs itself."""
    d = row.__dict__
    data = d["_data"]
    if data is None or d["_changes"] != {} or d["_mutations"]:
        return getattr(row, column)
    datum = data.get(column)
    if datum is None:
        return getattr(row, column)
    return datum.to_python(row._uuid_to_row)


def changed_columns(updates: Any) -> list[str]:
    """The columns an UPDATE event changed (``updates`` holds their old values)."""
    return sorted(updates._data) if updates is not None and updates._data else []


class OvsdbError(Exception):
    """Base class of this module's errors."""


class OvsdbTimeout(OvsdbError):
    """Something did not happen within its time limit."""


class TransactionError(OvsdbError):
    """A transaction failed for good: ``status`` is the IDL's status, ``detail`` the server's error, if any."""

    def __init__(self, status: str, detail: str | None = None, attempts: int = 1) -> None:
        super().__init__(f"OVSDB transaction failed ({status}) after {attempts} attempt(s): {detail or 'no details'}")
        self.status, self.detail, self.attempts = status, detail, attempts


@attrs.frozen
class CommitResult:
    """A committed transaction: its status (``success`` or ``unchanged``) and what the builder returned."""

    status: str
    value: Any
    attempts: int
    txn: Txn = attrs.field(repr=False)

    def real_uuid(self, row: Any):
        """The UUID the server gave a row inserted by this transaction (``row`` or its provisional UUID)."""
        return self.txn.get_insert_uuid(getattr(row, "uuid", row))

    @property
    def increment(self) -> int | None:
        """The new value of the column ``Row.increment`` bumped (e.g. ``next_cfg``), if any."""
        return self.txn.get_increment_new_value() if self.status == Txn.SUCCESS and self.txn._inc_row else None


class _RecordingPoller:
    """Duck-types ``ovs.poller.Poller``: records what the IDL wants to wait for."""

    def __init__(self) -> None:
        self.fds: dict[Any, int] = {}
        self.timeout_ms: int | None = None

    def fd_wait(self, fd: Any, events: int) -> None:
        self.fds[fd] = self.fds.get(fd, 0) | events

    def timer_wait(self, msec: int) -> None:
        msec = max(0, msec)
        if self.timeout_ms is None or msec < self.timeout_ms:
            self.timeout_ms = msec

    def timer_wait_until(self, msec: int) -> None:
        self.timer_wait(msec - ovs.timeval.msec())

    def immediate_wake(self) -> None:
        self.timeout_ms = 0


@implementer(IReadWriteDescriptor)
class _FdWatcher:
    """A reactor registration on a dup of one of the IDL's sockets (valid until we close it)."""

    def __init__(self, source: Any, kick: Callable[[], None]) -> None:
        self.source = source
        self._fd = os.dup(source if isinstance(source, int) else source.fileno())
        self._kick = kick
        self.reading = self.writing = False

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._kick()

    def doWrite(self) -> None:
        self._kick()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "ovsdb"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


RECV_SIZE = 1 << 20  # bytes read from the OVSDB socket at a time (python-ovs reads 4 KiB)
MAX_MESSAGE = 256 << 20  # a JSON-RPC message that is still incomplete at this size is an error
_DECODER = json.JSONDecoder()


def _fast_recv(rpc: Any) -> tuple[int, Any]:
    """``ovs.jsonrpc.Connection.recv`` with the standard library's JSON decoder (C) instead of python-ovs's own parser.

    Without python-ovs's C extension (not on PyPI), its parser lexes every character in Python: the update for a
    burst of 400 new ports (~0.5 MB, twice: our rows, then ovs-vswitchd's status for them) took seconds of the
    reactor. Here bytes are read 1 MiB at a time into a buffer of our own (``rpc.input`` stays empty: python-ovs's
    ``recv_wait`` wakes at once while it holds anything), and a message is decoded when the buffer may hold one
    whole: when it ends with ``}`` and has doubled since a decode found it incomplete, and always before saying
    that nothing more has come (so a complete message never waits): the decoding stays linear in the bytes.
    """
    if rpc.status:
        return rpc.status, None
    state = rpc.__dict__.setdefault("_qrp", {"buf": bytearray(), "tried": 0})
    buf: bytearray = state["buf"]
    while True:
        if buf and buf.rstrip().endswith(b"}") and len(buf) >= 2 * state["tried"]:
            got = _decode_one(rpc, state)
            if got is not None:
                return got
        error, data = rpc.stream.recv(RECV_SIZE)
        if error or not data:
            if buf and state["tried"] != len(buf):
                got = _decode_one(rpc, state)
                if got is not None:
                    return got
            if error == errno.EAGAIN:
                return error, None
            if error:
                rpc.error(error)
            else:
                rpc.error(ovs.jsonrpc.EOF)
            return rpc.status, None
        buf += data if isinstance(data, bytes) else data.encode()
        rpc.received_bytes += len(data)


def _decode_one(rpc: Any, state: dict[str, Any]) -> tuple[int, Any] | None:
    """The first whole message in the buffer (removed from it), or None if it has none yet."""
    buf: bytearray = state["buf"]
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError as e:
        text = buf[: e.start].decode("utf-8")  # (a character cut by a read: the part before it may hold a message)
    start = len(text) - len(text.lstrip())
    try:
        value, end = _DECODER.raw_decode(text, start)
    except ValueError:
        state["tried"] = len(buf)
        if len(buf) > MAX_MESSAGE:
            rpc.error(errno.EPROTO)
            return rpc.status, None
        return None
    used = end if len(text) == len(buf) else len(text[:end].encode("utf-8"))
    del buf[:used]
    state["tried"] = 0
    msg = ovs.jsonrpc.Message.from_json(value)
    if not isinstance(msg, ovs.jsonrpc.Message):
        rpc.error(errno.EPROTO)
        return rpc.status, None
    return 0, msg


def _fast_recv_wait(rpc: Any, poller: Any) -> None:
    """``recv_wait`` for ``_fast_recv``: wake at once while the buffer holds what no decode has tried yet."""
    state = rpc.__dict__.get("_qrp")
    if rpc.status or (state is not None and state["buf"] and state["tried"] != len(state["buf"])):
        poller.immediate_wake()
    else:
        rpc.stream.recv_wait(poller)


def _use_fast_recv(session: Any) -> None:
    """Every connection ``session`` makes (one per reconnect) receives with ``_fast_recv``."""
    recv, recv_wait = session.recv, session.recv_wait

    def install() -> None:
        rpc = session.rpc
        if rpc is not None and "recv" not in rpc.__dict__:
            rpc.recv = functools.partial(_fast_recv, rpc)
            rpc.recv_wait = functools.partial(_fast_recv_wait, rpc)

    def fast_recv() -> Any:
        install()
        return recv()

    def fast_recv_wait(poller: Any) -> None:
        install()
        recv_wait(poller)

    session.recv, session.recv_wait = fast_recv, fast_recv_wait


class _NameIndex:
    """A table's rows by ``name``, kept by python-ovs's ``IndexedRows`` (it calls ``add``, ``remove`` and ``clear``).

    python-ovs's own index (``index_create``) is a sorted list of named tuples: every row inserted or changed costs
    a tuple, a comparison function and a bisection (python-ovs re-indexes a row on every change), a third of the
    parsing of a burst's updates; a lookup built two more tuples. This is a dict.
    """

    columns = (SimpleNamespace(column="name"),)  # (python-ovs's Row reads it: setting a row's name re-indexes it)

    def __init__(self) -> None:
        self._rows: dict[str, dict[Any, Any]] = {}  # name -> {uuid: row} (two rows may share a name for a moment)

    @staticmethod
    def _name(row: Any) -> str | None:
        try:
            return cell(row, "name")  # (a row this client is inserting has no name until the column is set)
        except AttributeError:
            return None

    def add(self, row: Any) -> None:
        name = self._name(row)
        if name is not None:
            self._rows.setdefault(name, {})[row.uuid] = row

    def remove(self, row: Any) -> None:
        name = self._name(row)
        rows = self._rows.get(name) if name is not None else None
        if rows is not None and rows.get(row.uuid) is row:
            del rows[row.uuid]
            if not rows:
                del self._rows[name]

    def clear(self) -> None:
        self._rows.clear()

    def get(self, name: str) -> Any:
        rows = self._rows.get(name)
        return next(iter(rows.values())) if rows else None


class _QueueingIdl(ovs.db.idl.Idl):
    """An Idl whose ``notify`` only queues: nothing may run inside ``run()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued: list[tuple[str, ovs.db.idl.Row, Any]] = []

    def notify(self, event: str, row: ovs.db.idl.Row, updates: Any = None) -> None:
        self.queued.append((event, row, updates))


class _SchemaFetcher(protocol.Protocol):
    """Asks an OVSDB server for one database schema (JSON-RPC ``get_schema``) without blocking."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.done: defer.Deferred = defer.Deferred()
        self._buf = ""

    def connectionMade(self) -> None:
        self.transport.write(json.dumps({"method": "get_schema", "params": [self.database], "id": 0}).encode())

    def dataReceived(self, data: bytes) -> None:
        self._buf += data.decode("utf-8", "replace")
        try:
            msg, _ = json.JSONDecoder().raw_decode(self._buf.lstrip())
        except ValueError:
            return  # incomplete
        self.transport.loseConnection()
        if not self.done.called:
            if msg.get("error") is not None:
                self.done.errback(OvsdbError(f"get_schema {self.database}: {msg['error']}"))
            else:
                self.done.callback(msg["result"])

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            self.done.errback(OvsdbError(f"connection closed before the schema arrived: {reason.getErrorMessage()}"))


def _endpoint(reactor: Any, remote: str):
    kind, _, rest = remote.partition(":")
    if kind == "unix":
        return UNIXClientEndpoint(reactor, rest, timeout=5)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return HostnameEndpoint(reactor, host.strip("[]"), int(port), timeout=5)
    raise ValueError(f"unsupported OVSDB endpoint {remote!r} (use unix:PATH or tcp:HOST:PORT)")


@attrs.define(eq=False)
class _PendingTxn:
    fn: Callable[[Txn, ovs.db.idl.Idl], Any]
    d: defer.Deferred
    max_attempts: int
    attempts: int = 0
    seqno: int = 0
    txn: Txn | None = None
    value: Any = None
    timer: Any = None


@attrs.define(eq=False)
class _Waiter:
    predicate: Callable[[ovs.db.idl.Idl], Any]
    d: defer.Deferred
    timer: Any = None


class OvsdbConnection:
    """The agent's connection to one OVSDB server (``unix:/path`` or ``tcp:host:port``).

    ``await connect()`` fetches the schema from the server, starts the IDL and
    waits for the first full replica. Then:

    * ``transact(fn)``: ``fn(txn, idl)`` builds the change (it must read the
      replica, not assume: it is run again on ``TRY_AGAIN``, e.g. after a
      reconnect, and a retried transaction may already have been applied);
      the Deferred fires with a ``CommitResult``, or fails with
      ``TransactionError``/``OvsdbTimeout``. Any number may be in flight.
    * ``wait_for(predicate, timeout)``: fires with the predicate's first truthy
      value, evaluated on the replica now and after every update.
    * ``add_listener(cb, table)``: ``cb(event, row, updates)`` for creates,
      updates (``updates`` holds old values of the changed columns) and deletes.
    * ``on_reconnect(cb)``: ``cb()`` after a reconnect, once the replica is fresh.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        *,
        reactor: Any = None,
        database: str = "Open_vSwitch",
        tables: dict[str, list[str] | None] | None = None,
        max_backoff: float = 8.0,
        probe_interval_ms: int | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.endpoint, self.database = endpoint, database
        self._reactor = reactor
        self._tables = DEFAULT_TABLES if tables is None else tables
        self._max_backoff_ms = int(max_backoff * 1000)
        self._probe_interval_ms = probe_interval_ms
        self._idl: _QueueingIdl | None = None
        self._watchers: list[_FdWatcher] = []
        self._timer: Any = None
        self._inflight: list[_PendingTxn] = []
        self._parked: list[_PendingTxn] = []
        self._waiters: list[_Waiter] = []
        self._listeners: list[tuple[Listener, str | None]] = []
        self._reconnect_cbs: list[Callable[[], Any]] = []
        self._snapshot: dict[str, dict[Any, ovs.db.idl.Row]] | None = None
        self._was_monitoring = False
        self._synced: defer.Deferred = defer.Deferred()
        self._in_kick = self._closed = False
        self.reconnects = 0

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def connect(self, timeout: float = 30.0) -> OvsdbConnection:
        """Fetch the schema (retrying while the server is not up), start the IDL, wait for the first replica."""
        if self._idl is not None or self._closed:
            raise OvsdbError("connect() may be called once per OvsdbConnection")
        deadline = self._reactor.seconds() + timeout
        try:
            await self._start(deadline)
        except BaseException:
            self.close()
            raise
        self.log.info("OVSDB {endpoint} connected, {n} tables replicated", endpoint=self.endpoint, n=len(self.idl.tables))
        return self

    async def _start(self, deadline: float) -> None:
        schema = await self._fetch_schema(deadline)
        helper = ovs.db.idl.SchemaHelper(None, schema)
        for table, columns in self._tables.items():
            if table not in schema["tables"]:
                continue
            if columns is None:
                helper.register_table(table)
            else:
                helper.register_columns(table, [c for c in columns if c in schema["tables"][table]["columns"]])
        self._idl = _QueueingIdl(self.endpoint, helper, probe_interval=self._probe_interval_ms)
        self._idl._session.reconnect.set_backoff(1000, self._max_backoff_ms)
        _use_fast_recv(self._idl._session)
        for table in self._idl.tables.values():
            if "name" in table.columns:
                table.rows.indexes["name"] = _NameIndex()
        self._kick()
        remaining = max(0.1, deadline - self._reactor.seconds())
        await self._synced.addTimeout(remaining, self._reactor, onTimeoutCancel=self._connect_timed_out)

    def _connect_timed_out(self, result: Any, timeout: float) -> None:
        raise OvsdbTimeout(f"no OVSDB replica from {self.endpoint} within {timeout:.1f}s")

    async def _fetch_schema(self, deadline: float) -> dict:
        policy = backoffPolicy(initialDelay=0.1, maxDelay=1.0, factor=2.0, jitter=lambda: 0)
        endpoint = _endpoint(self._reactor, self.endpoint)
        attempt = 0
        while True:
            proto = _SchemaFetcher(self.database)
            try:
                await connectProtocol(endpoint, proto)
                return await proto.done.addTimeout(max(0.1, deadline - self._reactor.seconds()), self._reactor)
            except Exception as e:
                if self._reactor.seconds() >= deadline:
                    raise OvsdbTimeout(f"could not fetch the {self.database} schema from {self.endpoint}: {e}") from e
                self.log.debug("schema fetch from {endpoint} failed ({error}); retrying", endpoint=self.endpoint, error=e)
            delay = min(policy(attempt), max(0.0, deadline - self._reactor.seconds()))
            attempt += 1
            await task.deferLater(self._reactor, delay)

    def close(self) -> None:
        """Close the connection; whatever is still pending fails with ``OvsdbError``."""
        if self._closed:
            return
        self._closed = True
        self._unregister_all()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        err = OvsdbError("OVSDB connection closed")
        for p in self._inflight + self._parked:
            self._fail_txn(p, err)
        for w in list(self._waiters):
            self._settle_waiter(w, Failure(err))
        if self._idl is not None:
            self._idl.close()

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def idl(self) -> ovs.db.idl.Idl:
        if self._idl is None:
            raise OvsdbError("not connected yet: await connect() first")
        return self._idl

    @property
    def connected(self) -> bool:
        """True while the session is up and the replica is current."""
        idl = self._idl
        return idl is not None and idl._session.is_connected() and idl.state == idl.IDL_S_MONITORING

    def rows(self, table: str) -> list[ovs.db.idl.Row]:
        return list(self.idl.tables[table].rows.values())

    def lookup(self, table: str, name: str) -> ovs.db.idl.Row | None:
        """The row of ``table`` whose ``name`` column is ``name`` (through the name index), or None."""
        index: _NameIndex = self.idl.tables[table].rows.indexes["name"]
        return index.get(name)

    # -- transactions -----------------------------------------------------------------------------------------
    def transact(self, fn: Callable[[Txn, ovs.db.idl.Idl], Any], *, timeout: float | None = 30.0, max_attempts: int = 20) -> defer.Deferred:
        """Build a transaction with ``fn(txn, idl)`` and commit it; retried on ``TRY_AGAIN``. Fires with a CommitResult."""
        if self._closed or self._idl is None:
            return defer.fail(OvsdbError("OVSDB connection closed" if self._closed else "not connected yet: await connect() first"))
        p = _PendingTxn(fn=fn, d=defer.Deferred(lambda d: self._abandon(p, None)), max_attempts=max_attempts)
        if timeout is not None:
            p.timer = self._reactor.callLater(timeout, self._abandon, p, timeout)
        self._attempt(p)
        self._rearm()
        return p.d

    def _attempt(self, p: _PendingTxn) -> None:
        idl = self.idl
        p.attempts += 1
        p.seqno = idl.change_seqno
        txn = Txn(idl)
        try:
            p.value = p.fn(txn, idl)
        except BaseException:
            txn.abort()
            self._fail_txn(p, Failure())
            return
        p.txn = txn
        status = txn.commit()
        if status == Txn.INCOMPLETE:
            self._inflight.append(p)
        else:
            self._finish_txn(p, status)

    def _finish_txn(self, p: _PendingTxn, status: str) -> None:
        if p.d.called:
            return
        if status in (Txn.SUCCESS, Txn.UNCHANGED):
            if p.timer is not None and p.timer.active():
                p.timer.cancel()
            p.d.callback(CommitResult(status=status, value=p.value, attempts=p.attempts, txn=p.txn))
        elif status == Txn.TRY_AGAIN and p.attempts < p.max_attempts:
            self._parked.append(p)  # retried once change_seqno moves (see _retry_parked)
        else:
            detail = p.txn.get_error() if p.txn is not None else None
            self._fail_txn(p, TransactionError(status, detail, p.attempts))

    def _fail_txn(self, p: _PendingTxn, err: Exception | Failure) -> None:
        for queue in (self._inflight, self._parked):
            if p in queue:
                queue.remove(p)
        if p.timer is not None and p.timer.active():
            p.timer.cancel()
        if not p.d.called:
            p.d.errback(err)

    def _abandon(self, p: _PendingTxn, timeout: float | None) -> None:
        """Timed out or cancelled: stop waiting. A transaction already sent may still commit."""
        if p.timer is not None and p.timer.active():
            p.timer.cancel()
        p.timer = None
        if timeout is None:
            for queue in (self._inflight, self._parked):
                if p in queue:
                    queue.remove(p)
            return  # Deferred.cancel errbacks with CancelledError itself
        self._fail_txn(p, OvsdbTimeout(f"transaction not confirmed within {timeout:.1f}s ({p.attempts} attempt(s)); it may still commit"))

    def _retry_parked(self) -> None:
        idl = self.idl
        if not self._parked or idl.state != idl.IDL_S_MONITORING:
            return
        ready = [p for p in self._parked if p.seqno != idl.change_seqno]
        self._parked = [p for p in self._parked if p.seqno == idl.change_seqno]
        for p in ready:
            self._attempt(p)

    # -- waiting and notifications ----------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[ovs.db.idl.Idl], Any], timeout: float | None = None) -> defer.Deferred:
        """Fire with ``predicate(idl)`` once it is truthy (now or after an update); its exceptions fail the Deferred."""
        try:
            value = predicate(self.idl)
        except Exception:
            return defer.fail()
        if value:
            return defer.succeed(value)
        w = _Waiter(predicate=predicate, d=defer.Deferred(lambda d: self._drop_waiter(w)))
        if timeout is not None:
            w.timer = self._reactor.callLater(timeout, self._waiter_timed_out, w, timeout)
        self._waiters.append(w)
        return w.d

    def _drop_waiter(self, w: _Waiter) -> None:
        if w in self._waiters:
            self._waiters.remove(w)
        if w.timer is not None and w.timer.active():
            w.timer.cancel()

    def _waiter_timed_out(self, w: _Waiter, timeout: float) -> None:
        w.timer = None
        self._settle_waiter(w, Failure(OvsdbTimeout(f"condition not met within {timeout:.1f}s")))

    def _settle_waiter(self, w: _Waiter, result: Any) -> None:
        self._drop_waiter(w)
        if w.d.called:
            return
        if isinstance(result, Failure):
            w.d.errback(result)
        else:
            w.d.callback(result)

    def _check_waiters(self) -> None:
        for w in list(self._waiters):
            try:
                value = w.predicate(self.idl)
            except Exception:
                self._settle_waiter(w, Failure())
                continue
            if value:
                self._settle_waiter(w, value)

    def add_listener(self, cb: Listener, table: str | None = None) -> Callable[[], None]:
        """Call ``cb(event, row, updates)`` for row changes (of ``table``, or all). Returns an unsubscribe function."""
        entry = (cb, table)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    def on_reconnect(self, cb: Callable[[], Any]) -> Callable[[], None]:
        """Call ``cb()`` after each reconnect, once the replica is fresh and its changes delivered. Returns an unsubscribe."""
        self._reconnect_cbs.append(cb)
        return lambda: self._reconnect_cbs.remove(cb) if cb in self._reconnect_cbs else None

    def _dispatch(self, events: list[tuple[str, ovs.db.idl.Row, Any]]) -> None:
        for event, row, updates in events:
            for cb, table in list(self._listeners):
                if table is None or table == row._table.name:
                    try:
                        cb(event, row, updates)
                    except Exception:
                        self.log.failure("OVSDB listener {cb!r} failed on {event}", cb=cb, event=event)

    # -- the reactor driver -----------------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._closed or self._in_kick or self._idl is None:
            return
        idl = self._idl
        self._in_kick = True
        try:
            seqno = idl.change_seqno
            idl.run()
            events, idl.queued = idl.queued, []
            monitoring = idl.state == idl.IDL_S_MONITORING
            if self._was_monitoring and not monitoring and self._snapshot is None:
                # Reconnected: restart_fsm() ran, the replica is intact until the new dump arrives.
                self._snapshot = {name: dict(t.rows.items()) for name, t in idl.tables.items()}
            resynced = monitoring and not self._was_monitoring
            self._was_monitoring = monitoring
            if resynced and self._snapshot is not None:
                events = self._reconcile(events)
        except Exception:
            self.log.failure("OVSDB IDL run failed")
            events, resynced = [], False
        finally:
            self._in_kick = False
        self._after_run(events, resynced, idl.change_seqno != seqno)
        self._rearm()

    def _after_run(self, events: list, resynced: bool, changed: bool) -> None:
        self._dispatch(events)
        if self._inflight:
            done = []
            for p in list(self._inflight):
                status = p.txn.commit()  # not the idl's current txn: just reports the status run() set
                if status != Txn.INCOMPLETE:
                    self._inflight.remove(p)
                    done.append((p, status))
            for p, status in done:
                self._finish_txn(p, status)
        self._retry_parked()
        if changed or resynced or events:
            self._check_waiters()
        if resynced:
            if not self._synced.called:
                self._synced.callback(None)
            else:
                self.reconnects += 1
                self.log.info("OVSDB {endpoint} reconnected; replica refreshed", endpoint=self.endpoint)
                for cb in list(self._reconnect_cbs):
                    try:
                        defer.maybeDeferred(cb).addErrback(lambda f: self.log.failure("on_reconnect callback failed", f))
                    except Exception:
                        self.log.failure("on_reconnect callback failed")

    def _reconcile(self, events: list) -> list:
        """Turn a full re-download into the real differences against the replica we had before the reconnect."""
        snapshot, self._snapshot = self._snapshot or {}, None
        out = []
        for event, row, updates in events:
            old_rows = snapshot.get(row._table.name, {})
            if event == CREATE and row.uuid in old_rows:
                old = old_rows.pop(row.uuid)
                changed = {c: d for c, d in old._data.items() if row._data.get(c) != d}
                if changed:
                    out.append((UPDATE, row, ovs.db.idl.Row(self.idl, row._table, row.uuid, changed)))
                continue
            out.append((event, row, updates))
        for name, old_rows in snapshot.items():
            rows = self.idl.tables[name].rows
            out.extend((DELETE, old, None) for uuid, old in old_rows.items() if uuid not in rows)
        return out

    def _rearm(self) -> None:
        if self._closed or self._in_kick or self._idl is None:
            return
        rec = _RecordingPoller()
        self._idl.wait(rec)
        keep = []
        for w in self._watchers:
            if w.source in rec.fds:
                keep.append(w)
            else:
                self._unregister(w)
        self._watchers = keep
        for source, events in rec.fds.items():
            w = next((w for w in self._watchers if w.source is source), None)
            if w is None:
                w = _FdWatcher(source, self._kick)
                self._watchers.append(w)
            self._set_interest(w, bool(events & ovs.poller.POLLIN), bool(events & ovs.poller.POLLOUT))
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None if rec.timeout_ms is None else self._reactor.callLater(rec.timeout_ms / 1000.0, self._kick)

    def _set_interest(self, w: _FdWatcher, read: bool, write: bool) -> None:
        if read and not w.reading:
            self._reactor.addReader(w)
        elif not read and w.reading:
            self._reactor.removeReader(w)
        if write and not w.writing:
            self._reactor.addWriter(w)
        elif not write and w.writing:
            self._reactor.removeWriter(w)
        w.reading, w.writing = read, write

    def _unregister(self, w: _FdWatcher) -> None:
        self._set_interest(w, False, False)
        w.close()

    def _unregister_all(self) -> None:
        for w in self._watchers:
            self._unregister(w)
        self._watchers = []
