"""Per-host agent events, written in the same transaction as the change they describe.

An agent's desired state is "the ports bound to my host" (``binding:host_id``).
Each change to that set, or to one of its ports or their networks, adds one
row to ``agent_events`` with a sequence number; agents list, then watch from a
number, and never miss a change because the row commits with the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Integer, Table, bindparam, delete, event, func, literal_column, or_, select, union_all
from sqlalchemy.orm import Session

from server_plugin.store import dhcp_events, port_filter
from server_plugin.store.models import AgentEvent, Port, utcnow
from server_plugin.store.prebuilt import Prebuilt
from server_plugin.store.views import port_dict

PORT_ATTACHED = "port_attached"
PORT_UPDATED = "port_updated"
PORT_DETACHED = "port_detached"
NETWORK_UPDATED = "network_updated"
NETWORK_DELETED = "network_deleted"

# The reserved key of events for every host agent (as dhcp_events.DHCP_HOST is the DHCP agents'): no agent token,
# and no port's binding:host_id, may carry a name that starts with "@". The bus hands these to every host's watch.
EVERY_HOST = "@hosts"
RESERVED_PREFIX = "@"

# What an agent acts on; changes to other attributes (name, description) are not sent.
WATCHED_PORT_KEYS = (
    "mac_address", "admin_state_up", "fixed_ips", "device_id", "device_owner", "binding:profile", "network_id", "status",
    "security_groups", "port_security_enabled", "allowed_address_pairs",
)  # fmt: skip


# (session, before, after) run first by every port change: an extension's own events (security groups' members)
PortHook = Callable[[Session, "dict[str, Any] | None", "dict[str, Any] | None"], None]
PORT_HOOKS: list[PortHook] = []


# (session, [(before, after), ...]) the same for many ports of one change (a bulk create, its undo)
PortsHook = Callable[[Session, "Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]"], None]
PORTS_HOOKS: dict[PortHook, PortsHook] = {}


def on_port_change(hook: PortHook, many: PortsHook | None = None) -> None:
    """Run ``hook`` on every port change, in its transaction, before the port's own events (once, however often asked);
    ``many``, if given, runs instead for the changes of many ports at once (``ports_change``)."""
    if hook not in PORT_HOOKS:
        PORT_HOOKS.append(hook)
    if many is not None:
        PORTS_HOOKS[hook] = many


# (no RETURNING of the sequence number: a store without a local sink); compiled once, run on the driver's cursor
_COLUMNS = ["host", "kind", "object_id", "payload", "created_at"]
_INSERT = Prebuilt(AgentEvent.__table__.insert().inline(), _COLUMNS)
_PENDING = "agent_events_pending"  # session.info key: the transaction's event rows, not inserted yet
_INSERTED = "agent_events_inserted"  # session.info key: the transaction's events inserted with their seq
SINK = "agent_events_sink"  # session.info key (Store.session_info): called with the events a transaction committed
GONE = "agent_events_gone"  # session.info key (Store.session_info): called with the numbers a rollback burnt for good
_NUMBERED = "agent_events_numbered"  # session.info key: every seq the transaction's inserts returned (for GONE)
_COMMITTING = "agent_events_committing"  # session.info key: COMMIT may have been sent (its outcome may be unknown)
_MARKS = "agent_events_savepoints"  # session.info key: each open savepoint -> how many rows were held when it began
# Where a rolled-back insert's sequence numbers are never given out again (a sequence; InnoDB's AUTO_INCREMENT).
# SQLite gives them out again (its seq is the rowid, max + 1): a rollback there burns nothing.
_BURNING_DIALECTS = frozenset({"postgresql", "mysql", "mariadb"})
_RETURNING_MAX = 64  # events one transaction hands its sink at most (a bulk create of 20 bound ports); more are read back by polls
_INSERT_RETURNING: dict[int, Prebuilt] = {}  # one multi-row insert per row count, each compiled once
_WITH = "agent_events_with"  # session.info key: other rows to insert with the events (``insert_with_events``)
_RIDERS: dict[str, Prebuilt] = {}  # per table: the insert of one such row alone
_WITH_EVENTS: dict[tuple[str, int, int], Prebuilt] = {}  # per table, event count and rows deleted: the row and the events in one statement


def record(session: Session, host: str, kind: str, object_id: str, payload: dict[str, Any]) -> None:
    """One event row, in call order; the transaction's rows go in with one statement before it commits.

    A port create writes two or three events (its host's, the DHCP agents', its groups' members): one round trip
    instead of one each. Their sequence numbers are taken in call order, as separate inserts took them."""
    row = {"host": host, "kind": kind, "object_id": object_id, "payload": payload_text(payload), "created_at": utcnow()}
    session.info.setdefault(_PENDING, []).append(row)


def payload_text(payload: dict[str, Any]) -> str:
    """An event's payload as stored (JSON, keys sorted; it goes out in the watch stream as it is, never parsed):
    orjson's, a fraction of the stdlib encoder's CPU (every port create writes one to three); the stdlib's for what
    orjson refuses (an integer past 64 bits in a binding profile, a key that is not a string) and for text that is not
    ASCII (the stdlib escapes it: the stored text stays ASCII, whatever the column's character set)."""
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(payload, sort_keys=True)
    return text if text.isascii() else json.dumps(payload, sort_keys=True)


def flush(session: Session) -> None:
    """Insert the rows ``record`` holds, and those ``insert_with_events`` holds: only ``before_commit`` does, as the
    transaction's last statement before COMMIT.

    Inserting takes the rows' sequence numbers, and a number taken is a hole to every event bus until its transaction
    commits; a bus waits ``gap_timeout`` for a hole, then passes it (its events never reach the watchers). So nothing
    numbers events mid-transaction: reads of the events (``last_bound_host``) look at the held rows themselves.

    With a sink (the server's event bus, see ``SINK``) the insert returns the rows' sequence numbers (RETURNING, on
    all three databases), so that the bus can hand the committed events to its watchers without reading them back.
    Without one, or for more than ``_RETURNING_MAX`` rows, or where the database has no RETURNING, the rows go in as
    before and the commit tells the sink only that it must poll."""
    rows = session.info.pop(_PENDING, None)
    riders = session.info.pop(_WITH, None)
    if not rows and not riders:
        return
    connection = session.connection()
    numbered = SINK in session.info and session.info.get(_INSERTED, []) is not None and connection.dialect.insert_returning
    if riders and not (rows and numbered and len(rows) <= _RETURNING_MAX and len(riders) == 1 and connection.dialect.name == "postgresql"):
        for table, row, returned, gone in riders:  # each on its own (before the events, as the transaction asked for them)
            if connection.dialect.insert_returning:
                returned.extend(key for (key,) in _rider(table).rows(connection, row))
            else:  # (MySQL: no RETURNING)
                returned.append(connection.execute(table.insert(), row).inserted_primary_key[0])
            if gone:
                (key,) = table.primary_key.columns
                connection.execute(table.delete().where(key.in_(gone)))
        riders = None
    if not rows:
        return
    if SINK not in session.info:
        _INSERT.insert(connection, rows)
        return
    inserted = session.info.setdefault(_INSERTED, [])
    if inserted is None or len(rows) > _RETURNING_MAX or not connection.dialect.insert_returning:
        session.info[_INSERTED] = None  # None: events went in unnumbered; the bus must read them back
        _INSERT.insert(connection, rows)
        return
    params = {f"{key}_{i}": value for i, row in enumerate(rows) for key, value in row.items()}
    if riders:
        # PostgreSQL: the other row goes in with the events, one statement (a data-modifying WITH), one round trip
        ((table, row, returned, gone),) = riders
        params.update({f"w_{key}": value for key, value in row.items()})
        params.update({f"d_{i}": key for i, key in enumerate(gone)})
        found = _with_events(table, len(rows), len(gone)).rows(connection, params)
        returned.extend(key for tag, key in found if tag == 0)
        seqs = sorted(seq for tag, seq in found if tag == 1)
    else:
        # The rows take their numbers in VALUES order (as ``record`` promises); RETURNING's own order is not promised.
        seqs = sorted(seq for (seq,) in _insert_returning(len(rows)).rows(connection, params))
    if GONE in session.info and connection.dialect.name in _BURNING_DIALECTS:
        session.info.setdefault(_NUMBERED, []).extend(seqs)
    inserted.extend(
        {"seq": seq, "host": row["host"], "kind": row["kind"], "object_id": row["object_id"],
         "line": event_line(seq, row["kind"], row["object_id"], row["payload"])}
        for seq, row in zip(seqs, rows, strict=True)
    )  # fmt: skip


def insert_with_events(session: Session, table: Table, row: dict[str, Any], returned: list[Any], gone: Sequence[Any] = ()) -> None:
    """Insert ``row`` (every column but the table's integer primary key, which ``returned`` gets) into ``table`` when the
    transaction's events go in (``flush``, just before it commits): on PostgreSQL in their
    statement, a round trip fewer (a mirrored change's journal entry). Nothing in the transaction may read it before.
    ``returned`` is filled then (it is empty until the unit of work has ended). ``gone``: keys of rows of ``table``
    to delete then (at most ``WITH_GONE_MAX``), in the same statement on PostgreSQL (journal entries of confirmed changes)."""
    if len(gone) > WITH_GONE_MAX:
        raise ValueError(f"at most {WITH_GONE_MAX} rows to delete")
    session.info.setdefault(_WITH, []).append((table, row, returned, tuple(gone)))


WITH_GONE_MAX = 8  # (each count is a statement of its own, prepared by the server)


def _rider(table: Table) -> Prebuilt:
    found = _RIDERS.get(table.name)
    if found is None:
        (key,) = table.primary_key.columns
        columns = [c.name for c in table.columns if c is not key]
        found = _RIDERS[table.name] = Prebuilt(table.insert().returning(key), columns)
    return found


def _with_events(table: Table, count: int, gone: int) -> Prebuilt:
    """``table``'s row and ``count`` events in one statement, and ``gone`` rows of ``table`` deleted by key (before the
    events are numbered): rows (0, the row's key), (1, an event's seq) and (2, a deleted row's key)."""
    found = _WITH_EVENTS.get((table.name, count, gone))
    if found is None:
        (key,) = table.primary_key.columns
        events = AgentEvent.__table__
        other = table.insert().values({c.name: bindparam(f"w_{c.name}", type_=c.type) for c in table.columns if c is not key})
        rider = other.returning(key.label("key")).cte("w")
        values = [{column: bindparam(f"{column}_{i}", type_=events.c[column].type) for column in _COLUMNS} for i in range(count)]
        added = events.insert().values(values).returning(events.c.seq.label("key")).cte("e")
        parts = [
            select(literal_column("0", Integer).label("tag"), rider.c.key),
            select(literal_column("1", Integer).label("tag"), added.c.key),
        ]
        if gone:
            # Read first: PostgreSQL runs an Append's branches in order, so the deletes (and any wait for a row lock
            # they meet) are done before the events take their numbers (a number taken is a hole to every event bus
            # until COMMIT: ``flush``). Left unread, the deletes would run last, after the numbers.
            deleted = table.delete().where(key.in_([bindparam(f"d_{i}", type_=key.type) for i in range(gone)]))
            parts.insert(0, select(literal_column("2", Integer).label("tag"), deleted.returning(key.label("key")).cte("d").c.key))
        statement = union_all(*parts)
        found = _WITH_EVENTS[(table.name, count, gone)] = Prebuilt(statement)
    return found


def _insert_returning(count: int) -> Prebuilt:
    found = _INSERT_RETURNING.get(count)
    if found is None:
        table = AgentEvent.__table__
        # (typed: SQLAlchemy types only the first row's parameters from their columns; SQLite's DateTime needs its own)
        values = [{column: bindparam(f"{column}_{i}", type_=table.c[column].type) for column in _COLUMNS} for i in range(count)]
        statement = table.insert().values(values).returning(AgentEvent.seq)
        found = _INSERT_RETURNING[count] = Prebuilt(statement)
    return found


@event.listens_for(Session, "before_commit")
def _flush_before_commit(session: Session) -> None:
    """Flush the ORM's changes (what the commit would do next), then insert the held rows: the events take their
    numbers in the last statement before COMMIT, after every row lock the transaction waits for (a flush that waits on
    another transaction's lock holds no number meanwhile). What fails here fails before COMMIT is sent. From here on
    the transaction may commit, whatever is raised: its numbers are no longer known to be burnt.

    A savepoint's release inserts nothing: its rows wait for the transaction's own commit (or go with the savepoint
    if the transaction rolls it back)."""
    session.flush()
    if session.in_nested_transaction():
        return
    flush(session)
    session.info[_COMMITTING] = True


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: Any) -> None:
    """A savepoint begins: how many rows were held then (a rollback to it drops the rows recorded since)."""
    if transaction.nested:
        held = (len(session.info.get(_PENDING) or ()), len(session.info.get(_WITH) or ()))
        session.info.setdefault(_MARKS, {})[transaction] = held


@event.listens_for(Session, "after_transaction_end")
def _forget_savepoint(session: Session, transaction: Any) -> None:
    if transaction.nested:
        session.info.get(_MARKS, {}).pop(transaction, None)


@event.listens_for(Session, "after_commit")
def _to_sink_after_commit(session: Session) -> None:
    """Hand the committed events to the sink (in the store's thread: the sink must be thread-safe), or None if
    some went in unnumbered. (A released savepoint commits nothing yet: its events wait for the transaction's commit.)"""
    if session.in_nested_transaction():
        return
    session.info.pop(_COMMITTING, None)
    session.info.pop(_NUMBERED, None)
    if _INSERTED in session.info:
        session.info[SINK](session.info.pop(_INSERTED))


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    """A rolled-back savepoint may have taken some inserted events with it, and not others: none of this session's
    go to the sink as numbered (the bus polls for what did commit), and none is known to be burnt yet.

    A rolled-back transaction that never sent COMMIT burnt the numbers its inserts returned: the sink of ``GONE``
    hears of them (the bus need not wait for them to commit). After a COMMIT that raised (a lost connection) the
    transaction may have committed: its numbers are forgotten, not called burnt."""
    if session.in_nested_transaction():
        marks = session.info.get(_MARKS, {}).get(session.get_nested_transaction()) or (0, 0)
        for key, mark in zip((_PENDING, _WITH), marks, strict=True):
            held = session.info.get(key)
            if held is not None:
                del held[mark:]  # the rows recorded since the savepoint began (all of them if that is not known)
        if session.info.get(_INSERTED):
            session.info[_INSERTED] = None
        return
    session.info.pop(_PENDING, None)
    session.info.pop(_WITH, None)
    session.info.pop(_INSERTED, None)
    committing = session.info.pop(_COMMITTING, False)
    numbered = session.info.pop(_NUMBERED, None)
    gone = session.info.get(GONE)
    if numbered and not committing and gone is not None:
        gone(numbered)


def port_change(session: Session, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """The events of a port going from ``before`` to ``after`` (None: not there); DHCP agents' too (``dhcp_events``)
    and those of the extensions' hooks (``PORT_HOOKS``)."""
    dhcp_events.port_change(session, before, after)
    for hook in PORT_HOOKS:
        hook(session, before, after)
    _host_events(session, before, after)


def ports_change(session: Session, changes: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> None:
    """``port_change`` of many ports in one transaction (a bulk create, its undo): the same DHCP and host events, and
    each extension's hook once for all of them where it has a ``many`` form (one security group update, not one per port)."""
    dhcp_events.ports_change(session, changes)
    for hook in PORT_HOOKS:
        many = PORTS_HOOKS.get(hook)
        if many is not None:
            many(session, changes)
        else:
            for before, after in changes:
                hook(session, before, after)
    for before, after in changes:
        _host_events(session, before, after)


def _host_events(session: Session, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    old_host = (before or {}).get("binding:host_id") or ""
    new_host = (after or {}).get("binding:host_id") or ""
    if old_host and old_host != new_host:
        record(session, old_host, PORT_DETACHED, before["id"], before)
    if new_host:
        if old_host != new_host:
            record(session, new_host, PORT_ATTACHED, after["id"], after)
        elif any(before.get(k) != after.get(k) for k in WATCHED_PORT_KEYS):
            record(session, new_host, PORT_UPDATED, after["id"], after)


def network_change(session: Session, net: dict[str, Any], kind: str) -> None:
    """Tell every host with a port on the network (network updated or deleted)."""
    hosts = session.scalars(select(Port.binding_host_id).where(Port.network_id == net["id"], Port.binding_host_id != "").distinct())
    for host in hosts:
        record(session, host, kind, net["id"], {"network": net})
    dhcp_events.network_change(session, net, kind)


# -- wrappers for the plugin's units of work ------------------------------------------------


def after_create(session: Session, work: Callable[..., Any], *args: Any) -> Any:
    port = work(session, *args)
    port_change(session, None, port)
    return port


def after_update(session: Session, work: Callable[..., Any], *args: Any) -> Any:
    before, after = work(session, *args)
    port_change(session, before, after)
    return before, after


def after_port_delete(session: Session, work: Callable[..., Any], *args: Any) -> Any:
    before = work(session, *args)
    port_change(session, before, None)
    return before


def before_network_delete(session: Session, work: Callable[..., Any], ctx: Any, net_id: str) -> Any:
    """Network delete: its (DHCP) ports go with it; their hosts hear about both."""
    ports = [port_dict(p) for p in session.scalars(select(Port).where(Port.network_id == net_id))]
    result = work(session, ctx, net_id)
    for port in ports:
        port_change(session, port, None)
    hosts = {p["binding:host_id"] for p in ports if p["binding:host_id"]}
    for host in hosts:
        record(session, host, NETWORK_DELETED, net_id, {"network": {"id": net_id}})
    dhcp_events.network_change(session, {"id": net_id}, NETWORK_DELETED)
    return result


def after_network_update(session: Session, work: Callable[..., Any], *args: Any) -> Any:
    before, after = work(session, *args)
    if before.get("admin_state_up") != after.get("admin_state_up") or before.get("name") != after.get("name"):
        network_change(session, after, NETWORK_UPDATED)
    return before, after


# -- reading ------------------------------------------------------------------------------------


def last_seq(session: Session) -> int:
    return session.scalar(select(func.max(AgentEvent.seq))) or 0


def newest_seqs(session: Session, count: int) -> tuple[int, list[int]]:
    """The numbers after ``newest - count`` (none below 0) and those of them that are committed, ascending."""
    newest = session.scalar(select(func.max(AgentEvent.seq))) or 0
    after = max(newest - count, 0)
    return after, list(session.scalars(select(AgentEvent.seq).where(AgentEvent.seq > after).order_by(AgentEvent.seq)))


def seqs_after(session: Session, after: int, limit: int) -> list[int]:
    """The numbers of up to ``limit`` committed events after ``after``, ascending (the bus looking past a full batch)."""
    stmt = select(AgentEvent.seq).where(AgentEvent.seq > after).order_by(AgentEvent.seq).limit(limit)
    return list(session.scalars(stmt))


def committed_in(session: Session, runs: Sequence[tuple[int, int]]) -> list[tuple[int, str]]:
    """(seq, host) of the events stored with a number in one of ``runs`` (first, last)."""
    stmt = select(AgentEvent.seq, AgentEvent.host).where(or_(*(AgentEvent.seq.between(first, last) for first, last in runs)))
    return [(seq, host) for seq, host in session.execute(stmt.order_by(AgentEvent.seq))]


def first_seq(session: Session) -> int:
    return session.scalar(select(func.min(AgentEvent.seq))) or 0


def event_line(seq: int, kind: str, object_id: str, payload: str) -> bytes:
    """One event as the watch stream carries it; the payload is stored as JSON and goes out as it is, never parsed."""
    head = json.dumps({"type": "event", "seq": seq, "kind": kind, "object_id": object_id}, separators=(",", ":"))
    return f'{head[:-1]},"payload":{payload}}}\n'.encode()


def events_after(
    session: Session, after: int, limit: int, hosts: Iterable[str] | None = None, upto: int | None = None
) -> list[dict[str, Any]]:
    """Up to ``limit`` events after ``after`` (of ``hosts``, up to ``upto``), each with its stream line (committed
    ones: not those this transaction holds)."""
    if hosts is None and upto is None:  # the bus's poll, after every commit: a statement built once
        rows = session.connection().execute(_NEW_EVENTS, {"after": after, "limit": limit})
    else:
        stmt = select(AgentEvent.seq, AgentEvent.host, AgentEvent.kind, AgentEvent.object_id, AgentEvent.payload).where(
            AgentEvent.seq > after
        )
        if hosts is not None:
            stmt = stmt.where(AgentEvent.host.in_(list(hosts)))
        if upto is not None:
            stmt = stmt.where(AgentEvent.seq <= upto)
        rows = session.execute(stmt.order_by(AgentEvent.seq).limit(limit))
    return [
        {"seq": seq, "host": host, "kind": kind, "object_id": oid, "line": event_line(seq, kind, oid, payload)}
        for seq, host, kind, oid, payload in rows
    ]


_NEW_EVENTS = (
    select(AgentEvent.seq, AgentEvent.host, AgentEvent.kind, AgentEvent.object_id, AgentEvent.payload)
    .where(AgentEvent.seq > bindparam("after"))
    .order_by(AgentEvent.seq)
    .limit(bindparam("limit"))
)


def replay_page(session: Session, host: str, after: int, limit: int, upto: int) -> tuple[int, list[dict[str, Any]]]:
    """For a watcher catching up: the oldest kept seq, and the next page of its host's events after ``after`` up to
    ``upto`` (a host agent's own events and those for every host)."""
    page = events_after(session, after, limit, [host] if host.startswith(RESERVED_PREFIX) else [host, EVERY_HOST], upto)
    return first_seq(session), page


def prune(session: Session, keep: int) -> int:
    """Keep the newest ``keep`` events; agents behind that must list again."""
    newest = last_seq(session)
    if newest <= keep:
        return 0
    return session.execute(delete(AgentEvent).where(AgentEvent.seq <= newest - keep)).rowcount or 0


def host_ports(session: Session, host: str) -> list[dict[str, Any]]:
    """The desired state of one host: every port bound to it."""
    from sqlalchemy.orm import selectinload

    rows = session.scalars(select(Port).where(Port.binding_host_id == host).options(selectinload(Port.fixed_ips)).order_by(Port.id))
    return port_filter.apply(session, [port_dict(p) for p in rows])


def host_state(session: Session, host: str, views: Iterable[Callable[..., dict[str, Any]]] = ()) -> dict[str, Any]:
    """``{"ports": host_ports}`` and the keys each extension's view adds, read in one transaction."""
    ports = host_ports(session, host)
    state: dict[str, Any] = {"ports": ports}
    for view in views:
        state.update(view(session, host, ports))
    return state


def last_bound_host(session: Session, port_id: str) -> str:
    """The host the port was last attached to or detached from, as the kept events tell ("" if they do not): this
    transaction's own held rows first (newest first; they are not inserted, so take no number yet), then the store's."""
    for row in reversed(session.info.get(_PENDING) or ()):
        if row["object_id"] == port_id and row["kind"] in (PORT_ATTACHED, PORT_DETACHED):
            return str(row["host"])
    stmt = (
        select(AgentEvent.host)
        .where(AgentEvent.object_id == port_id, AgentEvent.kind.in_((PORT_ATTACHED, PORT_DETACHED)))
        .order_by(AgentEvent.seq.desc())
        .limit(1)
    )
    return session.scalar(stmt) or ""
