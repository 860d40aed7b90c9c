"""A mirrored change's journal entry goes in with the transaction's agent events (PostgreSQL: one statement), and
may close earlier entries in that transaction: on each database, the rows, the ids and the events the sink hears
are those separate statements gave."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from twisted.internet.task import Clock

from server_plugin.store import agent_events, migrate, mirror_ops
from server_plugin.store.db import Store
from server_plugin.store.models import AgentEvent, JournalEntry, utcnow


@pytest.fixture(scope="module")
def store(db_url: str) -> Iterator[tuple[Store, list[Any]]]:
    store = Store(db_url, reactor=Clock())
    migrate.upgrade(store.engine)
    heard: list[Any] = []
    store.session_info(agent_events.SINK, heard.append)
    try:
        yield store, heard
    finally:
        store.stop()


def _events(count: int) -> Any:
    def work(session: Session) -> str:
        for i in range(count):
            agent_events.record(session, f"h{i}", agent_events.PORT_ATTACHED, f"p{i}", {"port": {"id": f"p{i}"}})
        return "done"

    return work


def _journal(session: Session) -> list[tuple[int, str, str, str]]:
    return [(e.id, e.kind, e.object_id, e.op) for e in session.scalars(select(JournalEntry).order_by(JournalEntry.id))]


@pytest.mark.parametrize("events", [0, 1, 3])
def test_the_entry_and_the_events_go_in_together(store: tuple[Store, list[Any]], events: int) -> None:
    db, heard = store
    heard.clear()
    before = db.run_sync(lambda s: s.scalar(select(AgentEvent.seq).order_by(AgentEvent.seq.desc()).limit(1)) or 0)
    result, entries = db.run_sync(mirror_ops.journaled, "port", ["p-one"], "create", _events(events))
    assert result == "done" and len(entries) == 1
    journal = db.run_sync(_journal, readonly=True)
    assert (entries[0], "port", "p-one", "create") in journal
    rows = db.run_sync(
        lambda s: [
            (e.seq, e.host, e.object_id) for e in s.scalars(select(AgentEvent).where(AgentEvent.seq > before).order_by(AgentEvent.seq))
        ]
    )
    # the events in call order, numbered in that order, and handed to the sink with those numbers
    assert [(h, o) for _, h, o in rows] == [(f"h{i}", f"p{i}") for i in range(events)]
    if events:
        assert [(e["seq"], e["host"]) for batch in heard for e in batch] == [(seq, h) for seq, h, _ in rows]
    db.run_sync(mirror_ops.close_entries, entries)


def test_a_change_closes_earlier_entries_with_its_own(store: tuple[Store, list[Any]]) -> None:
    db, _ = store
    earlier = [db.run_sync(mirror_ops.journaled, "port", [f"old{i}"], "create", _events(1))[1][0] for i in range(3)]
    for events in (0, 2):  # with events (PostgreSQL: one statement) and without (the entry alone)
        closing = earlier[:2] if events else earlier[2:]
        _, entries = db.run_sync(mirror_ops.journaled, "port", [f"new{events}"], "update", _events(events), closing)
        ids = [row[0] for row in db.run_sync(_journal, readonly=True)]
        assert entries[0] in ids and not set(closing) & set(ids)
        db.run_sync(mirror_ops.close_entries, entries)
    assert db.run_sync(_journal, readonly=True) == []


def test_a_change_that_fails_keeps_its_entry_and_the_ones_it_would_close(store: tuple[Store, list[Any]]) -> None:
    db, _ = store
    (earlier,) = db.run_sync(mirror_ops.journaled, "port", ["kept"], "create", _events(1))[1]

    def fails(session: Session) -> None:
        _events(2)(session)
        raise ValueError("refused")

    with pytest.raises(ValueError):
        db.run_sync(mirror_ops.journaled, "port", ["failed"], "create", fails, [earlier])
    assert [row[2] for row in db.run_sync(_journal, readonly=True)] == ["kept"]
    db.run_sync(mirror_ops.close_entries, [earlier])


def test_a_savepoint_rolled_back_drops_only_the_rows_held_since_it_began(store: tuple[Store, list[Any]]) -> None:
    """An entry held before a savepoint survives its rollback (with the events held before it); one held inside it
    goes with it, on each database."""
    db, heard = store
    heard.clear()
    table = JournalEntry.__table__

    def work(session: Session) -> tuple[list[int], list[int]]:
        kept: list[int] = []
        dropped: list[int] = []
        agent_events.record(session, "h-kept", agent_events.PORT_ATTACHED, "p-kept", {"port": {"id": "p-kept"}})
        agent_events.insert_with_events(
            session, table, {"kind": "port", "object_id": "sp-kept", "op": "create", "created_at": utcnow()}, kept
        )
        nested = session.begin_nested()
        agent_events.record(session, "h-gone", agent_events.PORT_ATTACHED, "p-gone", {"port": {"id": "p-gone"}})
        agent_events.insert_with_events(
            session, table, {"kind": "port", "object_id": "sp-gone", "op": "create", "created_at": utcnow()}, dropped
        )
        nested.rollback()
        return kept, dropped

    kept, dropped = db.run_sync(work)
    journal = db.run_sync(_journal, readonly=True)
    assert len(kept) == 1 and dropped == []
    assert [(row[0], row[2]) for row in journal] == [(kept[0], "sp-kept")]
    hosts = db.run_sync(lambda s: list(s.scalars(select(AgentEvent.host).where(AgentEvent.host.in_(["h-kept", "h-gone"])))))
    assert hosts == ["h-kept"]
    db.run_sync(mirror_ops.close_entries, kept)


def test_more_events_than_one_numbered_insert_still_close_the_entries_with_the_change(store: tuple[Store, list[Any]]) -> None:
    """Past ``_RETURNING_MAX`` events the entry and the closing go in on their own (PostgreSQL too), in the change's
    transaction."""
    db, _ = store
    earlier = [db.run_sync(mirror_ops.journaled, "port", [f"many-old{i}"], "create", _events(1))[1][0] for i in range(2)]
    _, entries = db.run_sync(mirror_ops.journaled, "port", ["many-new"], "update", _events(agent_events._RETURNING_MAX + 1), earlier)
    journal = db.run_sync(_journal, readonly=True)
    assert [(row[0], row[2]) for row in journal] == [(entries[0], "many-new")]
    db.run_sync(mirror_ops.close_entries, entries)


def _next_event_number(connection: Any) -> int:
    """What the database will number the next event from (a number taken is a hole to every event bus until COMMIT)."""
    if connection.dialect.name == "postgresql":
        name = connection.execute(text("SELECT pg_get_serial_sequence('agent_events', 'seq')")).scalar()
        return int(connection.execute(text(f"SELECT last_value FROM {name}")).scalar())
    query = "SELECT auto_increment FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'agent_events'"
    return int(connection.execute(text(query)).scalar())


def test_the_events_are_numbered_after_the_closing_waited_for_its_rows(store: tuple[Store, list[Any]]) -> None:
    """An entry to close whose row another transaction holds (a starting server's ``clear_up_to``) is waited for
    before the change's events take their numbers: the wait is no hole to the event buses (PostgreSQL: the closing
    is in the events' statement)."""
    db, _ = store
    if db.backend == "sqlite":
        pytest.skip("SQLite locks the whole database: a second writer waits before the change writes anything")
    (held,) = db.run_sync(mirror_ops.journaled, "port", ["held"], "create", _events(1))[1]
    with db.engine.connect() as locker, db.engine.connect() as observer:
        locker.execute(text("DELETE FROM controller_journal WHERE id = :id"), {"id": held})  # (the row lock, kept open)
        before = _next_event_number(observer)
        observer.rollback()
        done: list[Any] = []
        change = threading.Thread(
            target=lambda: done.append(db.run_sync(mirror_ops.journaled, "port", ["p"], "update", _events(1), [held]))
        )
        change.start()
        try:
            time.sleep(1.0)
            assert change.is_alive() and not done  # waiting for the row
            assert _next_event_number(observer) == before  # and no number taken meanwhile
        finally:
            locker.rollback()
            change.join(30)
    assert done and [row[2] for row in db.run_sync(_journal, readonly=True)] == ["p"]
    db.run_sync(mirror_ops.close_entries, done[0][1])
