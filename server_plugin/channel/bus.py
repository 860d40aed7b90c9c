"""The event bus: from committed agent events to the watchers of each host.

One poller per server process reads new rows of ``agent_events`` (woken at
once by local commits, and every ``poll_interval`` for commits made by other
servers on the same database) and hands each event to the watchers of its
host. Sequence numbers can commit out of order (two transactions on
PostgreSQL or MariaDB), so the poller never passes a hole in the sequence
until it has waited ``gap_timeout`` for it (a rolled-back transaction leaves a
hole forever): watchers therefore see every event, in order, exactly once, if
its transaction commits within ``gap_timeout`` of its number being first seen
missing. Each missing number is timed from when a poll first found it missing
below a committed one, so holes seen together are waited for together (k
rollbacks cost one ``gap_timeout``, not k, and the lag cannot grow with the
rate of rollbacks). A transaction takes its numbers in its last statement
before COMMIT (``agent_events``: after the ORM flush and its row-lock waits),
so a hole that is not a rollback lasts one INSERT and one COMMIT.

A hole passed by the timeout whose transaction commits after all (a COMMIT
that took longer than ``gap_timeout``) can no longer go out in order: the bus
looks for such late commits among the numbers it passed (once a second, for
``late_window``) and tells the watches of that host that passed it to list
again (a ``relist`` line). An agent that was not watching this server at that
moment, and resumes past the number, is not told (see README, event bus).

A bus that starts (a server or an API worker restarting) treats the numbers
missing among the newest ``start_window`` as holes first seen at its start:
another server's transaction that holds one, still open, is waited for as
above. Until they are passed, its watermark (what its lists are current to)
is below them, at most ``gap_timeout``.

The events this process commits need no read back: their insert returns
their sequence numbers and the commit hands them to the bus
(``agent_events.SINK``), which gives them to the watchers at once when they
are next in sequence (a ~1 ms store round trip less between a port's commit
and its agent). Anything else (an event after a hole, a commit whose events
went in unnumbered) makes it poll as before; the poll passes over what was
already given out.

A hole made only of numbers that this process's own rolled-back transactions
burnt (PostgreSQL, MariaDB: an IPAM collision retried, an undone change) is
passed at once: the store tells the bus of them (``agent_events.GONE``) only
when the transaction never sent COMMIT, so they can never commit. Holes of
other servers' rollbacks, or of a COMMIT whose outcome is unknown, still wait
``gap_timeout``.

The bus also keeps the open watchers (``watcher.Watcher``) within bounds: at
most ``max_watches`` in all (a new one beyond is refused with a 429) and
``max_watches_per_token`` per agent token (a new one closes the token's
oldest: an agent that reconnects replaces its dead stream), and sends every
watcher a heartbeat each ``heartbeat`` seconds from one timer.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger

from server_plugin import exceptions as exc
from server_plugin.channel.watcher import Watcher
from server_plugin.exceptions import DatabaseUnavailable
from server_plugin.store import agent_events, dhcp_events
from server_plugin.store.db import Store

Event = dict[str, Any]

_MAX_PASSED_RUNS = 1000  # holes passed by the timeout, watched for a late commit (the oldest forgotten beyond)


class TooManyWatches(exc.QuantumException):
    status = 429
    message = "%(detail)s"

    @property
    def type(self) -> str:
        return "HTTPTooManyRequests"


class BusStarting(exc.ServiceUnavailable):
    message = "%(detail)s"


class EventBus:
    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: Any,
        poll_interval: float = 0.25,
        gap_timeout: float = 2.0,
        batch: int = 1000,
        retention: int = 100_000,
        prune_interval: float = 60.0,
        heartbeat: float = 10.0,
        max_watches: int = 2000,
        max_watches_per_token: int = 4,
        max_lag: int = 10000,
        start_window: int = 1000,
        look_ahead: int = 10,
        late_window: float = 60.0,
        late_check_interval: float = 1.0,
        replay_page: int = 100,
        send_buffer: int = 16384,
        host_views: Any = (),
        host_interests: Any = (),
    ) -> None:
        self.host_views = host_views  # (session, host, ports) -> extra keys of a host's list (extensions.Extension.host_view)
        self.host_interests = host_interests  # (session, host) -> what a host's watch carries of every host's events
        self.store = store
        self.reactor = reactor
        self.poll_interval = poll_interval
        self.gap_timeout = gap_timeout
        self.batch = batch
        self.retention = retention
        self.prune_interval = prune_interval
        self.heartbeat = heartbeat
        self.max_watches = max_watches
        self.max_watches_per_token = max_watches_per_token
        self.max_lag = max_lag
        self.start_window = start_window  # at start, numbers missing among the newest this many are waited for
        self.look_ahead = look_ahead  # batches of numbers read past a full batch held at a hole (to see their holes)
        self.late_window = late_window  # how long a hole passed by the timeout is watched for a late commit
        self.late_check_interval = late_check_interval
        self.late_commits = 0  # events found committed after their number was passed (their hosts' watches relisted)
        self.replay_page = replay_page
        self.send_buffer = send_buffer  # bytes a watch connection holds unsent before its watcher pauses
        self.watermark = 0  # every event <= watermark has been dispatched
        self.watchers: dict[str, set[Watcher]] = defaultdict(set)
        self.by_key: dict[Any, list[Watcher]] = {}  # oldest first
        self.count = 0
        self.refused = 0
        self.dispatched = 0
        # The numbers seen missing below a committed one and not passed yet: runs (first, last, when first seen),
        # ascending, all above the watermark. Each is waited for ``gap_timeout`` from when it was first seen (holes
        # seen together are waited for together, not one after the other).
        self._holes: list[tuple[int, int, float]] = []
        self._horizon = 0  # the highest number a poll has read: every missing number up to it is in _holes
        # Holes passed by the timeout (first, last, when passed), oldest first: looked for now and then, for
        # ``late_window``, in case their transaction commits after all (the watches that passed it must list again).
        self._passed: deque[tuple[int, int, float]] = deque()
        self._late_checked = 0.0
        self._checking_late: Deferred[None] | None = None
        self._polling: Deferred[None] | None = None
        self._starting: Deferred[None] | None = None  # the wait to ask again, while the database does not answer at start
        self._started = False  # polls and hand-overs only once start() has read where to begin
        self._stopped = False
        self._again = False
        self._loop: task.LoopingCall | None = None
        self._prune_loop: task.LoopingCall | None = None
        self._heartbeat_loop: task.LoopingCall | None = None
        # What this process's commits handed over (appended in store threads): a batch of numbered events, or None
        # for a commit whose events must be read back.
        self._committed: deque[list[Event] | None] = deque()
        self._burnt: deque[list[int]] = deque()  # numbers this process's rollbacks burnt (appended in store threads)
        # Those of them not yet passed (reactor thread only). Kept until the watermark passes them, however long that
        # takes (a quiet spell, other servers' holes waited for first), but forgotten once the store has found a
        # connection dead: a database that crashed may hand out again numbers it never logged.
        self._gone: set[int] = set()
        self._lost_seen = self._connections_lost()

    def _sink(self, events: list[Event] | None) -> None:
        """agent_events.SINK: called in a store thread after a commit (deque.append is thread-safe)."""
        self._committed.append(events)

    def _gone_sink(self, seqs: list[int]) -> None:
        """agent_events.GONE: called in a store thread after a rollback with the numbers it burnt for good."""
        self._burnt.append(seqs)

    def _connections_lost(self) -> int | None:
        """The store's count of connections found dead (None: a store that does not count them)."""
        lost: int | None = getattr(self.store, "connections_lost", None)
        return lost

    def _drain_burnt(self) -> None:
        lost = self._connections_lost()
        if lost != self._lost_seen:  # (the reports not drained yet may be from before the loss: forgotten too)
            self._lost_seen = lost
            self._gone.clear()
            self._burnt.clear()
        while self._burnt:
            self._gone.update(self._burnt.popleft())

    def _seen(self, seqs: list[int], now: float) -> None:
        """A poll read ``seqs`` (ascending, all above the watermark: every committed number from the watermark on, up
        to its last): the numbers it found missing below its last are holes first seen ``now``."""
        last = max(self._horizon, self.watermark)
        for seq in seqs:
            if seq > last + 1:
                self._holes.append((last + 1, seq - 1, now))
            last = max(last, seq)
        self._horizon = last

    def _hole_passes(self, seq: int, read_at: float | None = None) -> bool:
        """Whether every number between the watermark and ``seq`` can be passed: burnt by this process's rollbacks
        (none of them can still commit), or, for a poll whose read began at ``read_at`` (None: not a poll), a hole
        first seen ``gap_timeout`` or more before that read (a commit by then is in what it read)."""
        self._drain_burnt()
        unknown: list[range] = []  # the numbers that must be burnt
        expired: list[range] = []  # those waited for long enough
        at = self.watermark + 1
        for first, last, since in self._holes:
            if first >= seq:
                break
            if first > at:
                unknown.append(range(at, first))
            numbers = range(max(first, at), min(last + 1, seq))
            (unknown if read_at is None or read_at - since < self.gap_timeout else expired).append(numbers)
            at = last + 1
        if at < seq:
            unknown.append(range(at, seq))
        count = sum(len(numbers) for numbers in unknown)
        if count > len(self._gone) or not all(n in self._gone for numbers in unknown for n in numbers):
            return False
        for numbers in unknown:
            self._gone.difference_update(numbers)
        if expired:
            self.log.debug("passing sequence hole {start}..{end}", start=self.watermark + 1, end=seq - 1)
            now = self.reactor.seconds()
            self._passed.extend((numbers[0], numbers[-1], now) for numbers in expired if numbers)
            while len(self._passed) > _MAX_PASSED_RUNS:
                self._passed.popleft()
        return True

    # -- lifecycle
    async def start(self) -> None:
        session_info = getattr(self.store, "session_info", None)  # (a store without it: the bus polls for every event)
        if session_info is not None:
            session_info(agent_events.SINK, self._sink)  # before reading the watermark: no commit falls between
            session_info(agent_events.GONE, self._gone_sink)
        # Numbers missing among the newest may be other servers' transactions still open (this process restarted
        # while they ran): holes first seen now, waited for as any other, so that what commits within gap_timeout
        # of now reaches the watchers. The watermark starts below the first of them.
        # (Never older than the retention: prune deletes only numbers at least that far below the newest.)
        # A database that does not answer yet (down when the server starts): asked again each poll_interval, as a poll
        # would (the store logs the outage once); the bus starts once it answers.
        while True:
            try:
                after, seqs = await self.store.run(agent_events.newest_seqs, min(self.start_window, self.retention), readonly=True)
                break
            except DatabaseUnavailable:
                if self._stopped:
                    return
                self._starting = task.deferLater(self.reactor, self.poll_interval, lambda: None)
                try:
                    await self._starting
                except CancelledError:
                    return  # stopped before it could start
                finally:
                    self._starting = None
        for seq in seqs:
            if seq != after + 1:
                break
            after = seq
        self.watermark = self._horizon = after
        self._started = True
        self._seen([seq for seq in seqs if seq > after], self.reactor.seconds())
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.poll_interval, now=False)
        self._prune_loop = task.LoopingCall(self._prune)
        self._prune_loop.clock = self.reactor
        self._prune_loop.start(self.prune_interval, now=True)
        self._heartbeat_loop = task.LoopingCall(self._heartbeats)
        self._heartbeat_loop.clock = self.reactor
        self._heartbeat_loop.start(self.heartbeat, now=False)

    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Stop polling (a poll under way ends first) and end every watch cleanly: each agent gets a ``closed``
        line and the end of its stream (it lists again from the server that serves it next)."""
        self._stopped = True
        if self._starting is not None:
            self._starting.cancel()
        for loop in (self._loop, self._prune_loop, self._heartbeat_loop):
            if loop is not None and loop.running:
                loop.stop()
        session_info = getattr(self.store, "session_info", None)
        if session_info is not None:
            session_info(agent_events.SINK, None)
            session_info(agent_events.GONE, None)
        if self._polling is not None:
            await self._polling
        if self._checking_late is not None:
            await self._checking_late
        for watchers in list(self.watchers.values()):
            for watcher in list(watchers):
                watcher.close(reason)

    @property
    def newest_read(self) -> int:
        """The newest number this bus knows committed (a watch may start from any number up to it: another server's
        agent that moves here while this bus still waits on a hole below)."""
        return max(self.watermark, self._horizon)

    # -- reads for the channel API
    async def host_ports(self, host: str) -> tuple[int, list[dict[str, Any]]]:
        """``host``'s desired ports and the sequence number they are current to (every event <= it is in them)."""
        seq, state = await self.host_state(host)
        return seq, state["ports"]

    async def host_state(self, host: str) -> tuple[int, dict[str, Any]]:
        """``{"ports": [...], ...}`` with the extensions' keys (``host_views``: security groups), read in one
        transaction, and the sequence number it is current to."""
        seq = self.watermark
        return seq, await self.store.run(agent_events.host_state, host, tuple(self.host_views), readonly=True)

    async def dhcp_networks(self) -> tuple[int, list[dict[str, Any]]]:
        """The networks DHCP agents serve (with subnets and ports) and the sequence number they are current to."""
        seq = self.watermark
        return seq, await self.store.run(dhcp_events.network_infos, readonly=True)

    async def first_seq(self) -> int:
        """The oldest event the store still keeps, 0 for none (a watch from before it must list again)."""
        first: int = await self.store.run(agent_events.first_seq, readonly=True)
        return first

    # -- polling
    def nudge(self) -> None:
        """New events may be committed: give out those this process committed, and poll unless they were all
        of them, next in sequence."""
        if not self._started:
            return  # (start() reads where to begin; its first tick gives out what was committed meanwhile)
        if not self._deliver_committed():
            self._poll_now()

    def _tick(self) -> None:
        """Every ``poll_interval``: other servers' commits."""
        self._drain_burnt()
        if self._gone:  # passed by a poll (a hole that timed out first)
            self._gone = {n for n in self._gone if n > self.watermark}
        self._deliver_committed()
        self._poll_now()
        self._check_late()

    def _deliver_committed(self) -> bool:
        """Give out the events this process committed that are next in sequence; True if that was all of them and
        no hole is waited for (no poll is needed), False if some must be read back (or none came)."""
        if not self._committed:
            return False
        complete = not self._holes  # a hole waited for: the poll reads past it once it fills
        events: list[Event] = []
        while self._committed:
            batch = self._committed.popleft()
            if batch is None:
                complete = False
            else:
                events.extend(batch)
        events.sort(key=lambda event: event["seq"])  # (commits hand over in commit order, not sequence order)
        for event in events:
            if event["seq"] <= self.watermark:
                continue  # a poll gave it out already
            if event["seq"] != self.watermark + 1 and not self._hole_passes(event["seq"]):
                return False  # a hole: an earlier transaction may still commit; the poll waits for it
            self._deliver(event)
        return complete

    def _poll_now(self) -> None:
        """Poll now (coalesced with a poll in progress)."""
        if self._polling is not None:
            self._again = True
            return
        polling = ensureDeferred(self._poll())
        self._polling = None if polling.called else polling  # (a poll that ended at once has already cleared it)

    async def _poll(self) -> None:
        try:
            while True:
                self._again = False
                before, read_at = self.watermark, self.reactor.seconds()
                events = await self.store.run(agent_events.events_after, self.watermark, self.batch, None, readonly=True)
                self._dispatch(events, read_at)
                if len(events) == self.batch and self.watermark < events[-1]["seq"]:
                    await self._look_ahead()
                if not self._again and (len(events) < self.batch or self.watermark == before):
                    break  # (a full batch held at a hole: read again at the next tick, not at once)
        except DatabaseUnavailable:
            pass  # logged once per outage by the store; the next tick tries again
        except Exception:
            self.log.failure("agent event poll failed; retrying at the next tick")
        finally:
            self._polling = None

    async def _look_ahead(self) -> None:
        """A full batch is held at a hole: the numbers after what has been read are read too (numbers only, up to
        ``look_ahead`` batches), so that the holes of a backlog longer than a batch are first seen now, each timed from
        now, not one batch after another (a gap_timeout per batch: the lag would grow while the backlog lasts)."""
        after = max(self._horizon, self.watermark)
        seqs = await self.store.run(agent_events.seqs_after, after, self.batch * self.look_ahead, readonly=True)
        self._seen([seq for seq in seqs if seq > max(self._horizon, self.watermark)], self.reactor.seconds())

    def _dispatch(self, events: list[Event], read_at: float) -> None:
        """What a poll whose read began at ``read_at`` found: every committed event after the watermark (up to a
        batch), ascending."""
        events = [event for event in events if event["seq"] > self.watermark]  # (given out already: _deliver_committed)
        self._seen([event["seq"] for event in events], self.reactor.seconds())
        for event in events:
            if event["seq"] <= self.watermark:
                continue
            if event["seq"] != self.watermark + 1 and not self._hole_passes(event["seq"], read_at):
                return  # a hole: an earlier transaction may still commit. Waited for, but not forever.
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        """``event`` is the next to give out (none before it is still to come)."""
        seq = event["seq"]
        holes = self._holes
        while holes and holes[0][0] <= seq:  # (the holes it passes, and any of it: a hole that did commit)
            first, last, since = holes[0]
            if last <= seq:
                holes.pop(0)
            else:
                holes[0] = (seq + 1, last, since)
        self.watermark = seq
        self.dispatched += 1
        for watcher in self._targets(event["host"]):
            watcher.deliver(event)

    # -- holes that commit after they were passed
    def _check_late(self) -> None:
        """Now and then, while holes passed by the timeout are recent: did any of them commit after all?"""
        now = self.reactor.seconds()
        while self._passed and now - self._passed[0][2] > self.late_window:
            self._passed.popleft()
        if not self._passed or self._checking_late is not None or now - self._late_checked < self.late_check_interval:
            return
        self._late_checked = now
        checking = ensureDeferred(self._find_late([(first, last) for first, last, _ in self._passed]))
        self._checking_late = None if checking.called else checking

    async def _find_late(self, runs: list[tuple[int, int]]) -> None:
        try:
            found = await self.store.run(agent_events.committed_in, runs, readonly=True)
        except DatabaseUnavailable:
            return
        except Exception:
            self.log.failure("looking for late commits failed; trying again later")
            return
        finally:
            self._checking_late = None
        for seq, host in found:
            self._late(seq, host)

    def _late(self, seq: int, host: str) -> None:
        """Event ``seq`` of ``host`` committed after its number was passed: the watches of that host that passed it
        never get it, so they are told to list again (a watch that is behind it and not reading reads it as usual)."""
        kept: deque[tuple[int, int, float]] = deque()
        for first, last, passed in self._passed:
            if first <= seq <= last:
                kept.extend(run for run in ((first, seq - 1, passed), (seq + 1, last, passed)) if run[0] <= run[1])
            else:
                kept.append((first, last, passed))
        self._passed = kept
        self.late_commits += 1
        watchers = [w for w in self._targets(host) if not w.will_read(seq)]
        self.log.warn(
            "agent event {seq} ({host}) committed after the bus passed its number; {count} watches list again",
            seq=seq, host=host, count=len(watchers),
        )  # fmt: skip
        for watcher in watchers:
            watcher.relist(f"event {seq} committed after it was passed over")

    def _targets(self, host: str) -> list[Watcher]:
        """The watchers of ``host``; for ``EVERY_HOST``, every host agent's (not the DHCP agents')."""
        if host != agent_events.EVERY_HOST:
            return list(self.watchers.get(host, ()))
        return [w for name, mine in self.watchers.items() if not name.startswith(agent_events.RESERVED_PREFIX) for w in mine]

    async def _prune(self) -> None:
        try:
            removed = await self.store.run(agent_events.prune, self.retention)
            if removed:
                self.log.info("pruned {count} old agent events", count=removed)
        except DatabaseUnavailable:
            pass  # logged once per outage by the store
        except Exception:
            self.log.failure("pruning agent events failed")

    # -- watchers
    async def interest(self, host: str) -> Any:
        """What a new watch of ``host`` carries of the events for every host (None: all of them): read when it starts,
        then kept by the watch from the events it sends (extensions.Extension.host_interest)."""
        if host.startswith(agent_events.RESERVED_PREFIX) or not self.host_interests:
            return None
        found = await self.store.run(lambda session: [f(session, host) for f in self.host_interests], readonly=True)
        return found[0] if len(found) == 1 else _AllOf(found)

    def watch(
        self, host: str, since: int, key: Any, write: Callable[[bytes], None], end: Callable[[bool], None], interest: Any = None
    ) -> Watcher:
        """A new watcher of ``host`` from ``since`` for the token ``key`` (429 over the total cap); ``start()`` it once producing.

        ``interest``: from ``interest(host)``."""
        if not self._started:  # (it does not know yet where the events begin: a watch now could miss some)
            raise BusStarting(detail="the agent event bus is starting (the database has not answered yet); retry")
        if self.count >= self.max_watches:
            self.refused += 1
            raise TooManyWatches(detail=f"this server already serves {self.count} watches (max_watches); retry later")
        mine = self.by_key.setdefault(key, [])
        while len(mine) >= self.max_watches_per_token:
            mine[0].close(f"this token opened more than {self.max_watches_per_token} watches; the oldest is closed")
        watcher = Watcher(self, host, since, key, write, end, interest)
        self.watchers[host].add(watcher)
        mine.append(watcher)
        self.count += 1
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self.watchers.get(watcher.host)
        if watchers is None or watcher not in watchers:
            return
        watchers.discard(watcher)
        if not watchers:
            del self.watchers[watcher.host]
        mine = self.by_key.get(watcher.key, [])
        mine.remove(watcher)
        if not mine:
            del self.by_key[watcher.key]
        self.count -= 1

    def _heartbeats(self) -> None:
        for watchers in list(self.watchers.values()):
            for watcher in list(watchers):
                watcher.heartbeat()

    def status(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark, "watchers": self.count, "dispatched": self.dispatched, "refused": self.refused,
            "late_commits": self.late_commits,
        }  # fmt: skip


class _AllOf:
    """Several extensions' interests: an event for every host goes out if each admits it (each sees every event)."""

    def __init__(self, interests: list[Any]) -> None:
        self.interests = interests

    def admits(self, host: str, kind: str, object_id: str) -> bool:
        return all([i.admits(host, kind, object_id) for i in self.interests])
