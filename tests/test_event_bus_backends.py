"""Events committed by this process reach its watchers without a read back, on every backend.

The insert returns their numbers (RETURNING: one multi-row statement on SQLite, PostgreSQL and MariaDB), the
commit hands them to the bus, and the bus gives them out only in sequence: two transactions of this process
that commit out of sequence order (PostgreSQL, MariaDB) reach the watch in order, once each.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from restproxy_testing.inline_store import InlineStore, migrated_store
from server_plugin.channel.bus import EventBus
from server_plugin.store import agent_events, agents
from server_plugin.store.db import RetryTransaction, Store
from server_plugin.store.models import Agent


@pytest.fixture(scope="module")
def store(db_url: str) -> Iterator[Store]:
    with migrated_store(db_url) as store:
        yield store


@pytest.fixture
def bus(store: Store) -> Iterator[EventBus]:
    bus = EventBus(InlineStore(store), Clock(), prune_interval=3600)  # type: ignore[arg-type]
    Deferred.fromCoroutine(bus.start())
    _past_start(bus)
    try:
        yield bus
    finally:
        Deferred.fromCoroutine(bus.stop())


def _past_start(bus: EventBus) -> None:
    """Past the holes a starting bus waits for (the module's earlier tests' rollbacks among the newest numbers)."""
    for _ in range(int(bus.gap_timeout / bus.poll_interval) + 1):
        bus.reactor.advance(bus.poll_interval)
    assert not bus._holes


class _Stream:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.lines.extend(json.loads(line) for line in data.splitlines())

    def events(self) -> list[tuple[int, str]]:
        return [(m["seq"], m["object_id"]) for m in self.lines if m["type"] == "event"]


def _watching(bus: EventBus) -> tuple[_Stream, int]:
    """A watch of host h1 from the bus's watermark now: its stream, and that watermark."""
    stream = _Stream()
    since = bus.watermark
    bus.watch("h1", since, "tok", stream.write, lambda abort: None).catch_up()
    return stream, since


def _record(*object_ids: str) -> Callable[[Any], None]:
    def work(session: Any) -> None:
        for object_id in object_ids:
            agent_events.record(session, "h1", agent_events.PORT_UPDATED, object_id, {"id": object_id, "name": "ü"})

    return work


def _stored(store: Store, since: int) -> list[tuple[int, str]]:
    """Host h1's events after ``since`` (the module's earlier tests left theirs)."""
    stmt = text("SELECT seq, object_id FROM agent_events WHERE seq > :since AND host = 'h1' ORDER BY seq")
    rows = store.run_sync(lambda session: session.execute(stmt, {"since": since}).all())
    return [(seq, object_id) for seq, object_id in rows]


def test_committed_events_are_given_out_with_their_stored_numbers_without_a_poll(
    store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, since = _watching(bus)
    polls: list[int] = []
    monkeypatch.setattr(agent_events, "events_after", lambda *args: polls.append(1) or [])
    store.run_sync(_record("a", "b", "c"))
    store.run_sync(_record("d"))
    bus.nudge()
    assert polls == [] and stream.events() == _stored(store, since) and [o for _, o in stream.events()] == ["a", "b", "c", "d"]
    assert stream.lines[0]["payload"] == {"id": "a", "name": "ü"}
    # every row of the multi-row insert is stored as a single row's is (each parameter typed: SQLite's DateTime)
    stmt = text("SELECT created_at FROM agent_events WHERE seq > :since ORDER BY seq")
    stored = [str(value) for (value,) in store.run_sync(lambda session: session.execute(stmt, {"since": since}).all())]
    assert len({len(value) for value in stored}) == 1, stored


def test_a_rolled_back_transaction_hands_nothing_over(store: Store, bus: EventBus) -> None:
    def fails(session: Any) -> None:
        _record("gone")(session)
        agent_events.flush(session)  # numbered, then rolled back
        raise LookupError("undone")

    with pytest.raises(LookupError):
        store.run_sync(fails)
    assert not bus._committed
    stream, since = _watching(bus)
    store.run_sync(_record("kept"))
    bus.nudge()
    bus.reactor.advance(bus.gap_timeout + bus.poll_interval)  # PostgreSQL's sequence left a hole: passed in time
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["kept"] and stream.events() == _stored(store, since)


def test_transactions_committed_out_of_sequence_order_reach_the_watch_in_order(store: Store, bus: EventBus) -> None:
    if store.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: its transactions commit in sequence order")
    stream, since = _watching(bus)
    numbered, go = threading.Event(), threading.Event()

    def early(session: Any) -> None:
        _record("early")(session)
        agent_events.flush(session)  # takes its number now...
        numbered.set()
        assert go.wait(10)  # ... and commits after "late"

    thread = threading.Thread(target=store.run_sync, args=(early,))
    thread.start()
    try:
        assert numbered.wait(10)
        store.run_sync(_record("late"))
        bus.nudge()
        assert stream.events() == [] and bus.watermark == since  # "late" waits for "early"
    finally:
        go.set()
        thread.join(10)
    bus.nudge()
    assert [o for _, o in stream.events()] == ["early", "late"] and stream.events() == _stored(store, since)
    bus.reactor.advance(bus.gap_timeout + bus.poll_interval)  # polls pass over them: each once
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["early", "late"]


def _burns(store: Store) -> bool:
    """PostgreSQL's sequence and InnoDB's AUTO_INCREMENT never give a rolled-back number out again; SQLite does."""
    return store.backend != "sqlite"


def _gone_reports(bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """What the store tells the bus of burnt numbers (the bus still acts on it)."""
    reports: list[list[int]] = []
    sink = bus._gone_sink

    def heard(seqs: list[int]) -> None:
        reports.append(list(seqs))
        sink(seqs)

    monkeypatch.setattr(bus, "_gone_sink", heard)
    bus.store.session_info(agent_events.GONE, heard)
    return reports


def _numbered_then_undone(*object_ids: str) -> Callable[[Any], None]:
    def work(session: Any) -> None:
        _record(*object_ids)(session)
        agent_events.flush(session)  # numbered, then rolled back
        raise LookupError("undone")

    return work


def test_a_hole_this_process_rolled_back_is_passed_at_once_while_an_open_transactions_number_is_waited_for(
    store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = _gone_reports(bus, monkeypatch)
    stream, since = _watching(bus)
    # rolled back, then a later commit: given out with no time passing (the Clock stands still), not after gap_timeout
    with pytest.raises(LookupError):
        store.run_sync(_numbered_then_undone("gone1", "gone2"))
    assert len(reports) == (1 if _burns(store) else 0) and all(len(r) == 2 for r in reports)
    store.run_sync(_record("after-rollback"))
    bus.nudge()
    assert [o for _, o in stream.events()] == ["after-rollback"] and stream.events() == _stored(store, since)
    if store.backend == "sqlite":
        return  # one writer at a time, and numbers given out again: no hole to pass
    # another transaction holds an earlier number, open: what comes after it (a burnt hole and a commit) waits for it
    numbered, go = threading.Event(), threading.Event()

    def open_early(session: Any) -> None:
        _record("early")(session)
        agent_events.flush(session)
        numbered.set()
        assert go.wait(10)

    thread = threading.Thread(target=store.run_sync, args=(open_early,))
    thread.start()
    try:
        assert numbered.wait(10)
        with pytest.raises(LookupError):
            store.run_sync(_numbered_then_undone("gone3"))
        store.run_sync(_record("late"))
        bus.nudge()
        bus.reactor.advance(bus.gap_timeout / 2)
        bus.nudge()
        assert [o for _, o in stream.events()] == ["after-rollback"]  # "early" may still commit: waited for
    finally:
        go.set()
        thread.join(10)
    bus.nudge()
    assert [o for _, o in stream.events()] == ["after-rollback", "early", "late"] and stream.events() == _stored(store, since)
    bus.reactor.advance(bus.gap_timeout + bus.poll_interval)
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["after-rollback", "early", "late"]


def test_a_retried_attempts_numbers_are_passed_at_once(store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Store._attempts rolls back an attempt that lost a race (an IPAM collision) and runs the work again."""
    reports = _gone_reports(bus, monkeypatch)
    stream, since = _watching(bus)
    attempts: list[int] = []

    def races(session: Any) -> None:
        attempts.append(1)
        _record(f"try{len(attempts)}")(session)
        agent_events.flush(session)
        if len(attempts) == 1:
            raise RetryTransaction()

    store.run_sync(races)
    bus.nudge()
    assert len(attempts) == 2 and len(reports) == (1 if _burns(store) else 0)
    assert [o for _, o in stream.events()] == ["try2"] and stream.events() == _stored(store, since)


def test_a_commit_that_raised_may_have_committed_its_numbers_are_not_passed(
    store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COMMIT whose answer was lost: the rows did commit. Nothing is called burnt; the poll gives them out."""
    reports = _gone_reports(bus, monkeypatch)
    stream, since = _watching(bus)
    dialect = store.engine.dialect
    commit = dialect.do_commit

    def lost_answer(proxy: Any) -> None:
        commit(proxy)
        raise ConnectionError("the connection was lost before the COMMIT's answer")

    monkeypatch.setattr(dialect, "do_commit", lost_answer)
    with pytest.raises(ConnectionError):
        store.run_sync(_record("committed-unknown"))
    monkeypatch.setattr(dialect, "do_commit", commit)
    assert reports == []
    store.run_sync(_record("next"))
    bus.nudge()
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["committed-unknown", "next"] and stream.events() == _stored(store, since)


def test_a_rolled_back_savepoint_burns_nothing_known_and_its_transaction_rolled_back_burns_all(
    store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = _gone_reports(bus, monkeypatch)
    stream, since = _watching(bus)

    def savepoint(session: Any) -> None:
        _record("kept")(session)
        agent_events.flush(session)
        nested = session.begin_nested()
        _record("in-savepoint")(session)
        agent_events.flush(session)
        nested.rollback()

    store.run_sync(savepoint)
    bus.nudge()
    assert reports == [] and [o for _, o in stream.events()] == ["kept"] and stream.events() == _stored(store, since)

    def savepoint_then_undone(session: Any) -> None:
        savepoint(session)
        raise LookupError("undone")

    with pytest.raises(LookupError):
        store.run_sync(savepoint_then_undone)
    assert [len(r) for r in reports] == ([2] if _burns(store) else [])


def test_a_released_savepoints_events_go_to_the_bus_only_when_its_transaction_commits(
    store: Store, bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, since = _watching(bus)

    def released(session: Any) -> None:
        _record("before")(session)
        with session.begin_nested():
            _record("released")(session)
            agent_events.flush(session)
        assert not bus._committed  # released, not committed: nothing handed over yet

    def released_then_undone(session: Any) -> None:
        released(session)
        raise LookupError("undone")

    with pytest.raises(LookupError):
        store.run_sync(released_then_undone)
    assert not bus._committed
    store.run_sync(released)
    bus.nudge()
    bus.reactor.advance(bus.gap_timeout + bus.poll_interval)  # (the undone transaction left a hole, not known burnt)
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["before", "released"] and stream.events() == _stored(store, since)


def test_numbers_burnt_while_the_bus_waits_on_other_servers_holes_are_still_passed_at_once(
    store: Store, bus: EventBus, db_url: str
) -> None:
    """Another server's rolled-back numbers hold the watermark back gap_timeout (each from when first seen); numbers
    this process burnt meanwhile are passed at once when the watermark reaches them, however late that is."""
    if not _burns(store):
        pytest.skip("SQLite gives rolled-back numbers out again: no hole to pass")
    other = Store(db_url, reactor=Clock())  # another server (api_workers > 1): its burnt numbers are not known here
    try:
        stream, since = _watching(bus)
        for name in ("other-1", "c1", "other-2", "c2", "mine", "c3"):
            if name.startswith("other"):
                with pytest.raises(LookupError):
                    other.run_sync(_numbered_then_undone(name))
            elif name == "mine":
                with pytest.raises(LookupError):
                    store.run_sync(_numbered_then_undone(name))
            else:
                store.run_sync(_record(name))
            bus.nudge()
        steps = int(bus.gap_timeout / bus.poll_interval)
        for _ in range(2 * steps + 1):
            bus.reactor.advance(bus.poll_interval)  # the other server's holes are waited for...
        # ... but this process's own burnt number after them is not
        assert [o for _, o in stream.events()] == ["c1", "c2", "c3"] and stream.events() == _stored(store, since)
    finally:
        other.stop()


def test_a_number_burnt_before_a_quiet_spell_still_passes_at_once(store: Store, bus: EventBus) -> None:
    """One server, idle: an attempt rolled back (an IPAM race), and the next change comes a few seconds later. Its
    event goes out at once: the hole is only this process's burnt number."""
    if not _burns(store):
        pytest.skip("SQLite gives rolled-back numbers out again: no hole to pass")
    stream, since = _watching(bus)
    with pytest.raises(LookupError):
        store.run_sync(_numbered_then_undone("burnt"))
    bus.nudge()
    for _ in range(int(3 * bus.gap_timeout / bus.poll_interval)):
        bus.reactor.advance(bus.poll_interval)  # quiet
    store.run_sync(_record("next"))
    bus.nudge()
    assert [o for _, o in stream.events()] == ["next"] and stream.events() == _stored(store, since)


def test_burnt_numbers_are_forgotten_once_a_connection_is_found_dead(store: Store, bus: EventBus) -> None:
    """A database that crashed may give out again numbers it never logged: after the store found a connection dead
    (here: killed by the server), the numbers it was told were burnt before are waited for as any other hole."""
    if not _burns(store):
        pytest.skip("SQLite gives rolled-back numbers out again: no hole to pass")
    stream, since = _watching(bus)
    with pytest.raises(LookupError):
        store.run_sync(_numbered_then_undone("burnt"))
    bus.reactor.advance(bus.poll_interval)  # (heard of)
    pg = store.backend == "postgresql"
    others = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        if pg
        else "SELECT id FROM information_schema.processlist WHERE db = database() AND id <> connection_id()"
    )
    other = Store(store.url, reactor=Clock())
    try:  # every connection of the store's pool, killed by the server
        for (pid,) in other.run_sync(lambda session: session.execute(others).all()):
            kill = text("SELECT pg_terminate_backend(:pid)" if pg else f"KILL {int(pid)}")
            other.run_sync(lambda session, kill=kill, pid=pid: session.execute(kill, {"pid": pid}))
    finally:
        other.stop()
    lost = store.connections_lost
    store.run_sync(_record("next"))  # (on a new connection: the dead one is found and dropped)
    assert store.connections_lost > lost
    bus.nudge()
    assert stream.events() == []  # the burnt hole waits, as another server's would
    for _ in range(int(bus.gap_timeout / bus.poll_interval) + 1):
        bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["next"] and stream.events() == _stored(store, since)


def _advance_past_gap(bus: EventBus) -> None:
    for _ in range(int(bus.gap_timeout / bus.poll_interval) + 2):
        bus.reactor.advance(bus.poll_interval)


def test_a_transaction_that_waits_on_a_row_lock_holds_no_number_meanwhile(store: Store, bus: EventBus) -> None:
    """Its flush waits on another transaction's row lock longer than gap_timeout while other commits go by: its events
    take their numbers only after that wait (the last statement before COMMIT), so no hole of theirs is passed and
    they reach the watch."""
    if store.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: no row lock to wait on while others commit")
    store.run_sync(lambda session: agents.report_state(session, {"agent_type": "t", "host": "lock-h"}))
    agent_id = store.run_sync(lambda session: session.scalars(select(Agent.id).where(Agent.host == "lock-h")).one())
    stream, since = _watching(bus)
    locked, go, changed = threading.Event(), threading.Event(), threading.Event()

    def locker(session: Any) -> None:
        session.execute(update(Agent).where(Agent.id == agent_id).values(topic="locked"))
        locked.set()
        assert go.wait(20)

    def waiter(session: Any) -> None:
        session.get(Agent, agent_id).topic = "waiter"  # (flushed at commit: it waits for the locker there)
        _record("waiter")(session)
        changed.set()

    threads = [threading.Thread(target=store.run_sync, args=(locker,))]
    threads[0].start()
    try:
        assert locked.wait(10)
        threads.append(threading.Thread(target=store.run_sync, args=(waiter,)))
        threads[1].start()
        assert changed.wait(10)
        time.sleep(0.3)  # (into its lock wait)
        store.run_sync(_record("meanwhile"))
        bus.nudge()
        _advance_past_gap(bus)
        assert [o for _, o in stream.events()] == ["meanwhile"]
    finally:
        go.set()
        for thread in threads:
            thread.join(20)
    bus.nudge()
    bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["meanwhile", "waiter"] and stream.events() == _stored(store, since)


def test_reading_the_last_bound_host_numbers_nothing_mid_transaction(store: Store, bus: EventBus) -> None:
    """agents.agent_port asks which host last held a port (this transaction's own events first): that read takes no
    number (the rows go in at COMMIT), and the events still reach the watch."""
    stream, since = _watching(bus)
    count = text("SELECT count(*) FROM agent_events WHERE object_id = :id")

    def work(session: Any) -> tuple[str, str, int]:
        agent_events.record(session, "h1", agent_events.PORT_ATTACHED, "lbh-port", {"id": "lbh-port"})
        first = agent_events.last_bound_host(session, "lbh-port")
        agent_events.record(session, "h2", agent_events.PORT_ATTACHED, "lbh-port", {"id": "lbh-port"})
        second = agent_events.last_bound_host(session, "lbh-port")
        return first, second, session.scalar(count, {"id": "lbh-port"})

    assert store.run_sync(work) == ("h1", "h2", 0)  # (none inserted yet when it read)
    assert store.run_sync(lambda session: agent_events.last_bound_host(session, "lbh-port")) == "h2"  # (committed)
    bus.nudge()
    assert [o for _, o in stream.events()] == ["lbh-port"] and stream.events() == _stored(store, since)


def test_a_restarted_bus_gives_out_what_an_open_transaction_commits_within_gap_timeout(store: Store, bus: EventBus, db_url: str) -> None:
    """A worker (re)starts while another's transaction holds a number below the newest, still open: the new bus starts
    below it, and when it commits within gap_timeout its event reaches the new bus's watch, in order, once."""
    if store.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: no number can be open below a committed one")
    numbered, go = threading.Event(), threading.Event()

    def open_early(session: Any) -> None:
        _record("open")(session)
        agent_events.flush(session)  # numbered (the window between the insert and COMMIT, made long)
        numbered.set()
        assert go.wait(10)

    thread = threading.Thread(target=store.run_sync, args=(open_early,))
    thread.start()
    other = Store(db_url, reactor=Clock())  # the restarted worker's
    restarted = EventBus(InlineStore(other), Clock(), prune_interval=3600)  # type: ignore[arg-type]
    try:
        assert numbered.wait(10)
        store.run_sync(_record("after"))
        Deferred.fromCoroutine(restarted.start())
        stream, since = _watching(restarted)
        open_seq = store.run_sync(lambda session: session.scalar(text("SELECT max(seq) FROM agent_events"))) - 1
        assert since < open_seq
        restarted.reactor.advance(restarted.gap_timeout / 2)
        go.set()
        thread.join(10)
        _advance_past_gap(restarted)
        assert [o for _, o in stream.events()][-2:] == ["open", "after"] and stream.events() == _stored(store, since)
    finally:
        go.set()
        thread.join(10)
        Deferred.fromCoroutine(restarted.stop())
        other.stop()


def test_other_servers_rollbacks_are_each_waited_for_from_when_first_seen_not_one_after_another(
    store: Store, bus: EventBus, db_url: str
) -> None:
    if not _burns(store):
        pytest.skip("SQLite gives rolled-back numbers out again: no hole to pass")
    other = Store(db_url, reactor=Clock())  # another server: its rolled-back numbers are holes here
    try:
        stream, since = _watching(bus)
        names = []
        for i in range(5):
            with pytest.raises(LookupError):
                other.run_sync(_numbered_then_undone(f"other-{i}"))
            store.run_sync(_record(f"c{i}"))
            names.append(f"c{i}")
        bus.nudge()
        steps = int(bus.gap_timeout / bus.poll_interval)
        for _ in range(steps - 1):
            bus.reactor.advance(bus.poll_interval)
        assert stream.events() == []  # (the first hole is still waited for)
        for _ in range(2):
            bus.reactor.advance(bus.poll_interval)
        assert [o for _, o in stream.events()] == names and stream.events() == _stored(store, since)  # one wait, not five
    finally:
        other.stop()


def test_an_event_that_commits_after_its_hole_was_passed_makes_the_watch_list_again(store: Store, bus: EventBus) -> None:
    """A number held open longer than gap_timeout (here made long: inserted mid-transaction) is passed; when its
    transaction commits after all, the watch that passed it is told to list again instead of never hearing of it."""
    if store.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: no number can be open below a committed one")
    stream, ended = _Stream(), list[bool]()  # (a watch whose end is seen)
    bus.watch("h1", bus.watermark, "tok", stream.write, ended.append).catch_up()
    numbered, go = threading.Event(), threading.Event()

    def held(session: Any) -> None:
        _record("held")(session)
        agent_events.flush(session)
        numbered.set()
        assert go.wait(10)

    thread = threading.Thread(target=store.run_sync, args=(held,))
    thread.start()
    try:
        assert numbered.wait(10)
        store.run_sync(_record("after"))
        bus.nudge()
        _advance_past_gap(bus)
        assert [o for _, o in stream.events()] == ["after"]  # "held" passed
    finally:
        go.set()
        thread.join(10)
    bus.nudge()
    for _ in range(int(bus.late_check_interval / bus.poll_interval) + 1):
        bus.reactor.advance(bus.poll_interval)
    assert [o for _, o in stream.events()] == ["after"] and stream.lines[-1]["type"] == "relist" and ended == [False]
    assert bus.late_commits == 1 and bus.count == 0


def test_other_servers_rollbacks_all_through_a_backlog_longer_than_a_batch_cost_one_wait(store: Store, db_url: str) -> None:
    """Another server commits a burst (more than a batch) with rollbacks all through it: the bus reads the numbers past
    the full batch it is held at, so every hole of the backlog is timed from then (one gap_timeout, not one per batch)."""
    if not _burns(store):
        pytest.skip("SQLite gives rolled-back numbers out again: no hole to pass")
    bus = EventBus(InlineStore(store), Clock(), prune_interval=3600, batch=3)  # type: ignore[arg-type]
    Deferred.fromCoroutine(bus.start())
    _past_start(bus)
    other = Store(db_url, reactor=Clock())  # another server: its commits and rollbacks are read back by polls
    try:
        stream, since = _watching(bus)
        names = []
        for i in range(12):  # four batches' worth, a hole after each event
            other.run_sync(_record(f"b{i}"))
            names.append(f"b{i}")
            with pytest.raises(LookupError):
                other.run_sync(_numbered_then_undone(f"rolled-{i}"))
        other.run_sync(_record("last"))
        names.append("last")
        bus.nudge()
        for _ in range(int(bus.gap_timeout / bus.poll_interval) + 2):
            bus.reactor.advance(bus.poll_interval)
        assert [o for _, o in stream.events()] == names and stream.events() == _stored(store, since)
    finally:
        Deferred.fromCoroutine(bus.stop())
        other.stop()
