"""The event bus on a real SQLite store and a Clock: order, the gap timeout, watchers and a clean stop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import insert
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from server_plugin.channel.bus import EventBus
from server_plugin.store import agent_events
from server_plugin.store.models import AgentEvent
from tests.fast.stubs import InlineStore


def _events(store: InlineStore, *seqs: int, host: str = "h1") -> None:
    def work(session: Any) -> None:
        for seq in seqs:
            session.execute(
                insert(AgentEvent).values(seq=seq, host=host, kind="port_updated", object_id=f"p{seq}", payload=json.dumps({"seq": seq}))
            )

    store.run_sync(work)


class Stream:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.ended: list[bool] = []

    def write(self, data: bytes) -> None:
        self.lines.extend(json.loads(line) for line in data.splitlines())

    def end(self, abort: bool) -> None:
        self.ended.append(abort)

    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.lines if m["type"] == "event"]


def _advance(clock: Clock, seconds: float, step: float = 0.05) -> None:
    """Step by step, as time passes for a LoopingCall (one big advance runs each loop only once)."""
    clock.pump([step] * round(seconds / step))


def _bus(store: InlineStore, clock: Clock, **kwargs: Any) -> EventBus:
    bus = EventBus(store, clock, poll_interval=0.25, gap_timeout=2.0, prune_interval=3600, heartbeat=10, **kwargs)  # type: ignore[arg-type]
    Deferred.fromCoroutine(bus.start())
    return bus


def _watched_bus(store: InlineStore, clock: Clock) -> tuple[EventBus, Stream]:
    """A started bus and a watch of host h1 from the start."""
    bus = _bus(store, clock)
    stream = Stream()
    bus.watch("h1", 0, "tok", stream.write, stream.end).catch_up()
    return bus, stream


def test_a_hole_holds_the_watermark_until_the_gap_timeout_on_the_clock(store: InlineStore) -> None:
    clock = Clock()
    bus = _bus(store, clock)
    stream = Stream()
    watcher = bus.watch("h1", 0, "tok", stream.write, stream.end)
    watcher.catch_up()
    _events(store, 1, 2, 4)  # 3 may still commit (another server's transaction)
    bus.nudge()
    assert bus.watermark == 2 and stream.seqs() == [1, 2]
    _advance(clock, 1.75)  # polls every 0.25 s meanwhile
    assert bus.watermark == 2
    _events(store, 3)  # it did commit: in order, nothing skipped
    _advance(clock, 0.25)
    assert bus.watermark == 4 and stream.seqs() == [1, 2, 3, 4]
    _events(store, 5, 7)  # 6 never commits (rolled back)
    _advance(clock, 2.0)
    assert bus.watermark == 5
    _advance(clock, 0.5)
    assert bus.watermark == 7 and stream.seqs() == [1, 2, 3, 4, 5, 7]


def _recorded(store: InlineStore, *object_ids: str, host: str = "h1") -> None:
    """Events written as the server writes them (agent_events.record, one transaction): numbered by their insert."""

    def work(session: Any) -> None:
        for object_id in object_ids:
            agent_events.record(session, host, "port_updated", object_id, {"id": object_id})

    store.run_sync(work)


def _counting_polls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    polls: list[int] = []
    read = agent_events.events_after

    def counted(session: Any, after: int, limit: int, hosts: Any = None, upto: Any = None) -> Any:
        if hosts is None:
            polls.append(after)
        return read(session, after, limit, hosts, upto)

    monkeypatch.setattr(agent_events, "events_after", counted)
    return polls


def test_events_committed_here_reach_the_watchers_without_a_read_back(store: InlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    polls = _counting_polls(monkeypatch)
    _recorded(store, "p1", "p2")
    _recorded(store, "p3")
    bus.nudge()
    assert polls == [] and bus.watermark == 3 and stream.seqs() == [1, 2, 3]
    assert [m["object_id"] for m in stream.lines] == ["p1", "p2", "p3"] and stream.lines[0]["payload"] == {"id": "p1"}
    _advance(clock, 0.25)  # the next poll (other servers' events) passes over them: each once
    assert polls == [3] and stream.seqs() == [1, 2, 3]
    # a watch that starts behind reads the same events from the store
    late = Stream()
    bus.watch("h1", 0, "tok2", late.write, late.end).catch_up()
    assert late.lines == stream.lines


def test_an_event_committed_here_after_a_hole_waits_for_it_and_is_not_lost(store: InlineStore) -> None:
    """Two transactions of this process: seq 3 commits first while 2 is still open; 2 then commits."""
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    _recorded(store, "p1")
    bus.nudge()
    assert stream.seqs() == [1]

    def committed(seq: int) -> None:
        _events(store, seq)  # the row, as _events writes it; handed over as the commit would
        bus._sink([{"seq": seq, "host": "h1", "kind": "port_updated", "object_id": f"p{seq}",
                    "line": agent_events.event_line(seq, "port_updated", f"p{seq}", json.dumps({"seq": seq}))}])  # fmt: skip

    committed(3)
    bus.nudge()
    assert bus.watermark == 1 and stream.seqs() == [1]  # not ahead of 2
    _advance(clock, 0.5)
    assert bus.watermark == 1
    committed(2)
    bus.nudge()
    assert bus.watermark == 3 and stream.seqs() == [1, 2, 3]
    _advance(clock, 0.5)
    assert stream.seqs() == [1, 2, 3]
    # two commits handed over out of order in one go: in sequence order
    committed(5)
    committed(4)
    bus.nudge()
    assert stream.seqs() == [1, 2, 3, 4, 5]
    # a hole never filled: passed after the gap timeout, as for other servers' events
    committed(7)
    bus.nudge()
    _advance(clock, 2.5)
    assert bus.watermark == 7 and stream.seqs() == [1, 2, 3, 4, 5, 7]


def _committed_here(store: InlineStore, bus: EventBus, seq: int) -> None:
    """The row of ``seq``, handed over as this process's commit would."""
    _events(store, seq)
    bus._sink([{"seq": seq, "host": "h1", "kind": "port_updated", "object_id": f"p{seq}",
                "line": agent_events.event_line(seq, "port_updated", f"p{seq}", json.dumps({"seq": seq}))}])  # fmt: skip


def test_a_hole_made_only_of_numbers_this_process_burnt_is_passed_at_once(store: InlineStore) -> None:
    """What the store reports burnt (a rollback that never sent COMMIT, on PostgreSQL or MariaDB) cannot commit."""
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    _committed_here(store, bus, 1)
    bus._gone_sink([2, 3])
    _committed_here(store, bus, 4)
    bus.nudge()
    assert bus.watermark == 4 and stream.seqs() == [1, 4]  # no time passed
    # partly burnt: 6 may be another server's open transaction, so 7 waits for it, then the gap timeout
    bus._gone_sink([5])
    _committed_here(store, bus, 7)
    bus.nudge()
    _advance(clock, 1.5)
    assert bus.watermark == 4
    _events(store, 6)  # it did commit: in order
    _advance(clock, 0.25)
    assert stream.seqs() == [1, 4, 6, 7] and bus.watermark == 7
    # the report may come after the event that follows the hole: the next nudge or poll passes it
    _events(store, 9)  # (another server's commit, read by the poll)
    _advance(clock, 0.5)
    assert bus.watermark == 7
    bus._gone_sink([8])
    bus.nudge()
    assert bus.watermark == 9 and stream.seqs() == [1, 4, 6, 7, 9]
    # numbers passed by the gap timeout before their report came are forgotten, not kept for ever
    _events(store, 11)
    _advance(clock, 2.75)
    assert bus.watermark == 11
    bus._gone_sink([10])
    _advance(clock, 0.25)
    assert not bus._gone and stream.seqs() == [1, 4, 6, 7, 9, 11]
    # burnt numbers are kept however long the next commit takes (a quiet spell)...
    bus._gone_sink([12])
    _advance(clock, 3.0)
    _committed_here(store, bus, 13)
    bus.nudge()
    assert bus.watermark == 13 and stream.seqs() == [1, 4, 6, 7, 9, 11, 13]
    # ... but forgotten once the store found a connection dead (a database that crashed may give out again a number
    # it never logged): the hole waits, as any other server's would
    bus._gone_sink([14])
    _advance(clock, 0.25)
    store.store.connections_lost += 1
    _committed_here(store, bus, 15)
    bus.nudge()
    assert bus.watermark == 13
    _advance(clock, 2.25)
    assert bus.watermark == 15 and stream.seqs() == [1, 4, 6, 7, 9, 11, 13, 15]


def test_sqlite_gives_a_rolled_back_number_out_again_so_none_is_reported_burnt(store: InlineStore) -> None:
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    reports: list[list[int]] = []
    store.session_info(agent_events.GONE, reports.append)

    def undone(session: Any) -> None:
        agent_events.record(session, "h1", "port_updated", "gone", {"id": "gone"})
        agent_events.flush(session)
        raise LookupError("undone")

    with pytest.raises(LookupError):
        store.run_sync(undone)
    _recorded(store, "p1")
    bus.nudge()
    assert reports == [] and stream.seqs() == [1] and [m["object_id"] for m in stream.lines] == ["p1"]


def test_a_transaction_with_more_events_than_are_numbered_is_read_back(store: InlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    polls = _counting_polls(monkeypatch)
    _recorded(store, "p1")
    _recorded(store, *[f"q{i}" for i in range(agent_events._RETURNING_MAX + 1)])
    bus.nudge()
    assert polls == [1] and stream.seqs() == list(range(1, agent_events._RETURNING_MAX + 3))


def test_heartbeats_come_from_the_clock(store: InlineStore) -> None:
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    clock.advance(9.9)
    assert [m for m in stream.lines if m["type"] == "heartbeat"] == []
    clock.advance(0.2)
    assert [m["type"] for m in stream.lines] == ["heartbeat"]


def test_stop_ends_every_watch_cleanly_and_stops_polling(store: InlineStore) -> None:
    clock = Clock()
    bus = _bus(store, clock)
    streams = [Stream(), Stream()]
    for i, stream in enumerate(streams):
        bus.watch(f"h{i}", 0, f"tok{i}", stream.write, stream.end).catch_up()
    done = Deferred.fromCoroutine(bus.stop())
    assert done.called
    for stream in streams:
        assert stream.lines[-1]["type"] == "closed" and stream.ended == [False]  # a closed line, then the end (no abort)
    assert bus.count == 0 and not clock.getDelayedCalls()


def test_a_watch_beyond_the_cap_is_refused_and_the_tokens_oldest_is_replaced(store: InlineStore) -> None:
    bus = _bus(store, Clock(), max_watches=3, max_watches_per_token=2)
    first, second, third = Stream(), Stream(), Stream()
    bus.watch("h1", 0, "a", first.write, first.end)
    bus.watch("h1", 0, "a", second.write, second.end)
    bus.watch("h1", 0, "a", third.write, third.end)
    assert first.lines[-1]["type"] == "closed" and bus.count == 2
    bus.watch("h2", 0, "b", Stream().write, Stream().end)
    with pytest.raises(Exception, match="max_watches"):
        bus.watch("h3", 0, "c", Stream().write, Stream().end)


def test_events_for_every_host_reach_each_host_watch_live_and_in_catch_up_but_not_the_dhcp_stream(store: InlineStore) -> None:
    clock = Clock()
    bus = _bus(store, clock)
    live = {name: Stream() for name in ("h1", "h2", "@dhcp")}
    for name, stream in live.items():
        bus.watch(name, 0, f"tok-{name}", stream.write, stream.end).catch_up()
    _events(store, 1, host="h1")
    _events(store, 2, host="@hosts")
    _events(store, 3, host="@dhcp")
    _events(store, 4, host="h2")
    bus.nudge()
    assert (live["h1"].seqs(), live["h2"].seqs(), live["@dhcp"].seqs()) == ([1, 2], [2, 4], [3])
    # a watch that starts behind reads them from the store: its host's and every host's, in order
    late = Stream()
    bus.watch("h2", 0, "tok-late", late.write, late.end).catch_up()
    assert late.seqs() == [2, 4]
    dhcp_late = Stream()
    bus.watch("@dhcp", 0, "tok-dhcp-late", dhcp_late.write, dhcp_late.end).catch_up()
    assert dhcp_late.seqs() == [3]


class _Interest:
    """As sg_plugin.GroupInterest: member events of the groups it has; a group sent to its host whole joins them."""

    def __init__(self, groups: set[str]) -> None:
        self.groups = groups

    def admits(self, host: str, kind: str, object_id: str) -> bool:
        if host != "@hosts":
            if kind == "security_group_updated":
                self.groups.add(object_id)
            return True
        return kind != "security_group_member" or object_id in self.groups


def _event(store: InlineStore, seq: int, host: str, kind: str, object_id: str) -> None:
    store.run_sync(lambda s: s.execute(insert(AgentEvent).values(seq=seq, host=host, kind=kind, object_id=object_id, payload="{}")))


@pytest.mark.parametrize("late", [False, True], ids=["live", "catching-up"])
def test_a_watch_carries_the_events_for_every_host_that_its_interest_admits(store: InlineStore, late: bool) -> None:
    clock = Clock()
    bus = _bus(store, clock)
    stream = Stream()

    def watch() -> None:
        bus.watch("h1", 0, "tok", stream.write, stream.end, _Interest({"g1"})).catch_up()

    if not late:
        watch()
    _event(store, 1, "@hosts", "security_group_member", "g1")
    _event(store, 2, "@hosts", "security_group_member", "g2")  # not h1's group: passed over
    _event(store, 3, "h1", "security_group_updated", "g2")  # now it is
    _event(store, 4, "@hosts", "security_group_member", "g2")
    _event(store, 5, "h2", "security_group_updated", "g3")  # another host's
    _event(store, 6, "@hosts", "security_group_member", "g3")
    bus.nudge()
    if late:
        watch()
    assert stream.seqs() == [1, 3, 4]
    clock.advance(10)  # a heartbeat says it is current past what it passed over
    assert stream.lines[-1] == {"type": "heartbeat", "seq": 6}


def test_holes_seen_together_are_waited_for_together_each_from_when_it_was_first_seen(store: InlineStore) -> None:
    """Three holes read in one poll pass after one gap_timeout, not three; a hole first seen later keeps its own
    timer; one that commits within its time goes out in order. (Polls every 0.25 s; times below are the Clock's.)"""
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    _events(store, 1, 3, 5, 7)  # 2, 4 and 6: other servers' transactions, open or rolled back
    bus.nudge()  # (the poll at t=0 sees the three holes)
    assert bus.watermark == 1
    _advance(clock, 1.6)
    assert bus.watermark == 1
    _events(store, 4, 9)  # 4 did commit in time; 8 is first seen missing by the poll at t=1.75
    _advance(clock, 0.3)  # t=1.9
    assert bus.watermark == 1 and stream.seqs() == [1]
    _advance(clock, 0.2)  # t=2.1: 2 and 6 passed together, 4 in order; 8 still waited for
    assert stream.seqs() == [1, 3, 4, 5, 7] and bus.watermark == 7
    _advance(clock, 1.5)  # t=3.6
    _events(store, 8)  # commits 1.85 s after it was first seen: in time
    _advance(clock, 0.2)
    assert stream.seqs() == [1, 3, 4, 5, 7, 8, 9]
    _events(store, 11, 13)
    _advance(clock, 1.3)  # 10 and 12 first seen at t=4.0...
    _events(store, 15)
    _advance(clock, 0.3)  # ... 14 at t=5.25
    _advance(clock, 1.0)  # t=6.4: 10 and 12 passed, 14 not yet
    assert stream.seqs()[-2:] == [11, 13] and bus.watermark == 13
    _advance(clock, 1.2)
    assert stream.seqs()[-1] == 15


def test_many_holes_do_not_add_up_to_a_growing_lag(store: InlineStore) -> None:
    """A rollback every 0.5 s (other servers'): each hole waits its own 2 s, so the watermark stays ~2 s behind
    (one timer reset at each delivery would wait 2 s per hole: ever further behind)."""
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    seq = 0
    for _ in range(40):  # 20 s: each round a commit, a rolled-back number, a commit
        _events(store, seq + 1, seq + 3)
        seq += 3
        bus.nudge()
        _advance(clock, 0.5)
        assert bus.watermark >= seq - 3 * 5  # never more than 5 rounds (2.5 s) behind
    _advance(clock, 2.5)
    assert bus.watermark == seq and stream.seqs() == [n for n in range(1, seq + 1) if n % 3 != 2]


def test_a_starting_bus_waits_for_the_numbers_missing_among_the_newest(store: InlineStore) -> None:
    """A server (re)starts while another's transaction holding number 3 is still open: it starts below the hole,
    and gives 3 out if it commits within gap_timeout; a hole that never fills is passed after gap_timeout."""
    _events(store, 1, 2, 4, 5, 7)
    clock = Clock()
    bus = _bus(store, clock)
    assert bus.watermark == 2 and bus.newest_read == 7  # (an agent from another server may watch from up to 7)
    stream = Stream()
    bus.watch("h1", bus.watermark, "tok", stream.write, stream.end).catch_up()
    _advance(clock, 1.1)
    assert stream.seqs() == []
    _events(store, 3)  # it commits, within gap_timeout of the start
    _advance(clock, 0.2)
    assert stream.seqs() == [3, 4, 5] and bus.watermark == 5  # 6 still waited for
    _advance(clock, 0.8)
    assert stream.seqs() == [3, 4, 5, 7] and bus.watermark == 7
    # only the newest start_window numbers are looked at: a hole older than that is not waited for
    assert _bus(store, Clock(), start_window=2).watermark == 5
    assert _bus(store, Clock(), start_window=1).watermark == 7


def test_a_hole_that_commits_after_it_was_passed_makes_its_hosts_watches_list_again(
    store: InlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event can no longer go out in order: the watches of its host that passed it get a relist line and end;
    other hosts' watches go on; the passed numbers are looked for only for late_window."""
    clock = Clock()
    bus, stream = _watched_bus(store, clock)
    other = Stream()
    bus.watch("h2", 0, "tok-h2", other.write, other.end).catch_up()
    looked: list[list[tuple[int, int]]] = []
    committed_in = agent_events.committed_in
    monkeypatch.setattr(agent_events, "committed_in", lambda session, runs: looked.append(list(runs)) or committed_in(session, runs))
    _events(store, 1, 3, 6)  # 2, 4 and 5: holes
    bus.nudge()
    _advance(clock, 2.3)
    assert stream.seqs() == [1, 3, 6] and bus.watermark == 6
    _advance(clock, 1.0)
    assert looked and looked[-1] == [(2, 2), (4, 5)]
    _events(store, 4, host="h1")  # 4 commits after all, 2.x s late
    _events(store, 7, host="h2")
    _advance(clock, 1.0)
    assert stream.lines[-1]["type"] == "relist" and stream.ended == [False]
    assert stream.seqs() == [1, 3, 6] and bus.late_commits == 1 and bus.count == 1
    assert other.seqs() == [7] and other.ended == []
    _advance(clock, 1.6)
    assert looked[-1] == [(2, 2), (5, 5)]  # (4 no longer looked for)
    count = len(looked)
    _advance(clock, bus.late_window)
    assert not bus._passed and len(looked) <= count + bus.late_window / bus.late_check_interval + 1
    count = len(looked)
    _advance(clock, 5.0)
    assert len(looked) == count  # nothing passed recently: no query


def test_holes_beyond_a_full_batch_are_waited_for_together_with_those_in_it(store: InlineStore) -> None:
    """A backlog longer than a batch (a burst from another server) with holes all through it: every hole in it is
    timed from when a poll first could see it, not batch after batch (one gap_timeout per batch: ever further behind
    while the backlog lasts)."""
    clock = Clock()
    bus = _bus(store, clock, batch=4)
    stream = Stream()
    bus.watch("h1", 0, "tok", stream.write, stream.end).catch_up()
    odd = list(range(1, 41, 2))  # 2, 4, ... 38: other servers' rollbacks, ten batches' worth of them
    _events(store, *odd)
    bus.nudge()
    _advance(clock, bus.gap_timeout + 0.5)
    assert bus.watermark == 39 and stream.seqs() == odd


class _DownAtFirst:
    """``store``, whose first ``refusals`` reads of where a bus begins find the database unavailable."""

    def __init__(self, store: InlineStore, refusals: int) -> None:
        self.store, self.refusals, self.calls = store, refusals, 0

    def run(self, work: Any, *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.defer import fail

        from server_plugin.exceptions import DatabaseUnavailable

        if work is not agent_events.newest_seqs:
            return self.store.run(work, *args, **kwargs)
        self.calls += 1
        if self.calls <= self.refusals:
            return fail(DatabaseUnavailable(reason="connection refused"))
        return self.store.run(work, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_bus_whose_database_is_down_at_its_start_starts_once_it_answers(store: InlineStore) -> None:
    from server_plugin.channel.bus import BusStarting

    _events(store, 1, 2)
    clock = Clock()
    down = _DownAtFirst(store, refusals=3)
    bus = EventBus(down, clock, poll_interval=0.25, gap_timeout=2.0, prune_interval=3600, heartbeat=10)  # type: ignore[arg-type]
    started = Deferred.fromCoroutine(bus.start())
    with pytest.raises(BusStarting) as refused:  # a watch now could miss events: 503, the agent retries
        bus.watch("h1", 0, "tok", Stream().write, Stream().end)
    assert refused.value.status == 503
    _recorded(store, "p3")  # committed here while the bus is not started
    bus.nudge()
    _advance(clock, 0.6)  # asked again each poll_interval
    assert not started.called and down.calls == 3
    _advance(clock, 0.25)
    assert started.called and started.result is None  # no failure: started
    stream = Stream()
    bus.watch("h1", 0, "tok", stream.write, stream.end).catch_up()
    _recorded(store, "p4")
    bus.nudge()
    _advance(clock, 0.25)
    assert bus.watermark == 4 and stream.seqs() == [1, 2, 3, 4]


def test_a_bus_stopped_while_its_database_is_down_at_its_start_ends_its_start(store: InlineStore) -> None:
    clock = Clock()
    down = _DownAtFirst(store, refusals=100)
    bus = EventBus(down, clock, poll_interval=0.25, gap_timeout=2.0, prune_interval=3600, heartbeat=10)  # type: ignore[arg-type]
    started = Deferred.fromCoroutine(bus.start())
    _advance(clock, 0.5)
    Deferred.fromCoroutine(bus.stop())
    assert started.called and started.result is None
    calls = down.calls
    _advance(clock, 1.0)
    assert down.calls == calls and bus._loop is None  # asked no more, never started polling
