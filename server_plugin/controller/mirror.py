"""Mirroring store changes to the controllers, so that the two never silently diverge.

Every mutation is one Operation (server_plugin/ops/base.py) and runs the same
way, holding its objects' keys (see ordering.py):

* create / update: store transaction (the change + a journal entry per object),
  then the controller calls; if the pool refuses them, a second transaction
  undoes the change and the client gets RemoteRestError (500). A bulk create's
  ports are independent: each port's calls in order, several ports at once.
* delete: store transaction with the checks (404/409 answered locally) and a
  journal entry, then the controller calls, then the store delete; if the pool
  refuses, the object stays.

No database transaction is open during an HTTP call, and no lock is global.
A controller that lost its state (409, NXVNS) gets one topology sync, which
carries the change just committed; a delete then runs again from its checks.
Any refusal whose effect on the controller is unknown (a timeout may still
have applied it) asks for a background sync, so the two converge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from server_plugin.controller.ordering import KeyedLocks, RWLock
from server_plugin.controller.pool import ControllerLostState, RemoteRestError, ServerPool
from server_plugin.controller.sync import PROFILE_UNKNOWN, TopologySync
from server_plugin.exceptions import DatabaseUnavailable
from server_plugin.ops.base import Call, Operation, Outcome, Profile, controller_lanes
from server_plugin.store import agent_events, mirror_ops
from server_plugin.store.db import Store

# Lanes of one change (a bulk create's ports) out at once: well within the pool's connections per server.
LANES_IN_FLIGHT = 16
CLOSE_WITH_CHANGE = agent_events.WITH_GONE_MAX  # journal entries a change closes with its own at most (PostgreSQL)
CLOSE_DELAY = 0.05  # seconds confirmed entries wait for changes to close them with their own (PostgreSQL)


class ControllerMirror:
    """Runs changes against the store and the controller pool in a safe order."""

    log = Logger()

    def __init__(
        self, store: Store, pool: ServerPool, reactor: Any, profile: str, sync_timeout: float = 600.0, sync_lease: float = 15.0
    ) -> None:
        self.store = store
        self.pool = pool
        self.profile = profile
        self.capabilities: frozenset[str] = frozenset()  # GET /capabilities of the pool ("floatingip": /floatingips resources)
        self.locks = KeyedLocks()
        self.gate = RWLock()
        self.sync = TopologySync(
            store, pool, self.gate, reactor, lambda: None if self.profile_pending else self.profile, timeout=sync_timeout,
            lease=sync_lease,
        )  # fmt: skip
        self._to_close: list[int] = []
        self._reactor = reactor
        self._close_timer: Any = None  # PostgreSQL: the closing transaction waits for changes to take the entries first
        # "configured", or with controller_profile = auto "pending" until a controller answers GET /capabilities, then "detected"
        self.profile_source = "configured"
        self.profile_error = ""  # what the controllers answered to GET /capabilities while "pending"
        self.watchdog: Any = None  # the ConsistencyWatchdog, once started (its status is shown with the pool's)
        self._closing: Deferred[None] | None = None

    @property
    def profile_pending(self) -> bool:
        return self.profile_source == "pending"

    async def run(self, operation: Operation) -> Any:
        """Run one operation (create, update or delete) with its controller calls; returns its reply."""
        if operation.deletes:
            return await self._remove(operation)
        return await self._apply(operation)

    def _journaled(self, step: Callable[[Session], Outcome], independent: bool) -> Callable[[Session], tuple[Outcome, list[list[Call]]]]:
        """``step`` and the calls its changes make (as lanes, ``controller_lanes``), read in its transaction (the profile
        is the one of now)."""
        profile = Profile(self.profile, self.capabilities)

        def work(session: Session) -> tuple[Outcome, list[list[Call]]]:
            outcome = step(session)
            return outcome, controller_lanes(profile, outcome.changes(profile), independent)

        return work

    async def _apply(self, operation: Operation) -> Any:
        """A create or update: store first, then controllers; undone if they refuse."""
        async with self.locks.hold(exclusive=operation.exclusive, shared=operation.shared):
            await self.gate.acquire(exclusive=False)
            held = True
            try:
                closing = self._closing_with_change()
                try:
                    (outcome, lanes), entries = await self.store.run(
                        mirror_ops.journaled, operation.kind, operation.journal_ids, operation.op,
                        self._journaled(operation.applied, operation.independent_changes), closing,
                    )  # fmt: skip
                except BaseException:
                    if closing:
                        self._close_later(closing)  # not closed: with the next batch (closing twice is harmless)
                    raise
                try:
                    await self._send(lanes)
                except ControllerLostState as lost:
                    synced = self._resync(operation, lost)  # joined while we still hold the gate: it cannot have begun
                    self.gate.release(exclusive=False)
                    held = False
                    try:
                        await synced
                    except RemoteRestError:
                        await self._refused(operation, entries, outcome)  # the sync did not land: refused after all
                        raise
                    # The sync sent the store as it is, this change included.
                except RemoteRestError:
                    await self._refused(operation, entries, outcome)
                    raise
                self._close_later(entries)
                return outcome.reply
            finally:
                if held:
                    self.gate.release(exclusive=False)

    async def _remove(self, operation: Operation) -> Any:
        """A delete: local checks, then controllers, then the store; the object stays if they refuse."""
        async with self.locks.hold(exclusive=operation.exclusive, shared=operation.shared):
            for attempt in (1, 2):
                await self.gate.acquire(exclusive=False)
                held = True
                try:
                    (_, lanes), entries = await self.store.run(
                        mirror_ops.journaled, operation.kind, operation.journal_ids, operation.op,
                        self._journaled(operation.check, operation.independent_changes),
                    )  # fmt: skip
                    try:
                        await self._send(lanes)
                    except ControllerLostState as lost:
                        await self.store.run(mirror_ops.finish, entries)
                        if attempt == 2:
                            self._converge(operation)  # nobody else may ask for the sync it still needs
                            raise RemoteRestError(f"controller still lost its state after a sync: {lost}") from lost
                        synced = self._resync(operation, lost)
                        self.gate.release(exclusive=False)
                        held = False
                        await synced
                        continue  # the object is on the controller again: delete it once more
                    except RemoteRestError:
                        await self.store.run(mirror_ops.finish, entries)
                        self._converge(operation)
                        raise
                    outcome = await self.store.run(mirror_ops.finish, entries, operation.applied)
                    return outcome.reply
                finally:
                    if held:
                        self.gate.release(exclusive=False)
        raise AssertionError("unreachable")

    def _closing_with_change(self) -> list[int]:
        """On PostgreSQL, journal entries of confirmed changes that the next change closes in its own transaction (in
        the statement that inserts its own entry: no transaction of their own, no round trip); elsewhere none."""
        if self.store.backend != "postgresql" or not self._to_close:
            return []
        closing, self._to_close = self._to_close[:CLOSE_WITH_CHANGE], self._to_close[CLOSE_WITH_CHANGE:]
        return closing

    def _close_later(self, entries: list[int]) -> None:
        """Close journal entries of confirmed changes in batches: one transaction for many calls. On PostgreSQL the
        changes that begin within ``CLOSE_DELAY`` take them first (``_closing_with_change``); what is left then, or a
        backlog of two changes' worth, gets a transaction of its own.

        An entry still open at a crash only costs one extra sync at the next start.
        """
        self._to_close.extend(entries)
        self._close_soon()

    def _close_soon(self, now: bool = False) -> None:
        if not self._to_close or self._closing is not None:
            return
        if not now and self.store.backend == "postgresql" and len(self._to_close) < 2 * CLOSE_WITH_CHANGE:
            if self._close_timer is None:
                self._close_timer = self._reactor.callLater(CLOSE_DELAY, self._close_due)
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        closing = ensureDeferred(self._close_batches())
        self._closing = None if closing.called else closing  # (a batch that ended at once has cleared it)

    def _close_due(self) -> None:
        self._close_timer = None
        self._close_soon(now=True)

    def detecting_profile(self) -> Deferred[None]:
        """Hold every change until ``learned`` names the profile (``controller_profile = auto``): one sent
        before would go out with Big Switch bodies, which corrupt a Floodlight. Fires once the gate is held."""
        self.profile_source = "pending"
        return self.gate.acquire(exclusive=True)

    def learned(
        self, capabilities: frozenset[str], profile: str | None = None, detecting: bool = False, errors: Sequence[str] = ()
    ) -> None:
        """What ``GET /capabilities`` told: the capabilities, the profile if it could tell (None: unchanged) and
        what the controllers that could not tell answered; ``detecting`` ends a ``detecting_profile`` hold (after
        the profile is set: the changes held meanwhile go out in its form)."""
        self.capabilities = capabilities
        self.profile_error = "; ".join(errors)
        if profile is not None:
            self.profile, self.profile_source = profile, "detected"
        if detecting:
            self.gate.release(exclusive=True)

    async def journal_closed(self) -> None:
        """Until the journal entries of the confirmed changes are closed (a stopping server waits for it)."""
        self._close_soon(now=True)
        while self._closing is not None:
            await self._closing

    async def _close_batches(self) -> None:
        batch: list[int] = []
        try:
            while self._to_close:
                batch, self._to_close = self._to_close, []
                await self.store.run(mirror_ops.close_entries, batch)
        except DatabaseUnavailable as e:  # an outage, or a stop whose grace time ran out: nothing unexpected
            self.log.warn(
                "closing {count} journal entries failed ({reason}); they cause one sync at the next start",
                count=len(batch) + len(self._to_close), reason=e,
            )  # fmt: skip
        except Exception:
            self.log.failure("closing journal entries failed; they cause one sync at the next start")
        finally:
            self._closing = None

    async def _refused(self, operation: Operation, entries: list[int], outcome: Outcome) -> None:
        """Undo a create or update the pool refused, then converge (its calls may have landed in part)."""
        await self.store.run(mirror_ops.finish, entries, outcome.undo)
        self._converge(operation)

    async def _send(self, lanes: list[list[Call]]) -> None:
        """Each lane's calls in order; several lanes (a bulk create's ports) up to ``LANES_IN_FLIGHT`` at a time.

        After a lane fails no other lane starts, and the ones out are waited for: nothing of this
        change is still on its way once it is undone or synced. A refusal (RemoteRestError) wins over
        a lost state: the change is undone, and the sync that follows repairs both."""
        if lanes and self.profile_pending:
            # Bodies for the wrong profile would corrupt the controller (a Floodlight takes subnet ids for networks).
            raise RemoteRestError(f"{PROFILE_UNKNOWN} ({self.profile_error or 'no answer yet'})")
        if len(lanes) == 1:
            for call in lanes[0]:
                await self.pool.request(call.method, call.path, call.body, ignore_codes=call.ignore)
            return
        if lanes:
            await self._send_lanes(lanes)

    async def _send_lanes(self, lanes: list[list[Call]]) -> None:
        pending = iter(lanes)
        errors: list[Exception] = []

        async def runner() -> None:
            for lane in pending:
                if errors:
                    return
                try:
                    for call in lane:
                        await self.pool.request(call.method, call.path, call.body, ignore_codes=call.ignore)
                except Exception as error:
                    errors.append(error)
                    return

        await gatherResults([ensureDeferred(runner()) for _ in range(min(LANES_IN_FLIGHT, len(lanes)))])
        if errors:
            raise next((e for e in errors if isinstance(e, RemoteRestError)), errors[0])

    def _resync(self, operation: Operation, lost: ControllerLostState) -> Deferred[None]:
        """Join (or start) the sync that follows; fires when it landed, fails with RemoteRestError if it did not."""
        self.log.warn(
            "controller {server} lost its state ({status}) on {op} {kind} {object_id}: re-syncing",
            server=str(lost.response.server), status=lost.response.status, op=operation.op, kind=operation.kind,
            object_id=operation.object_id,
        )  # fmt: skip

        def failed(failure: Failure) -> None:
            raise RemoteRestError(f"controller lost its state and the re-sync failed: {failure.getErrorMessage()}")

        return self.sync.request(f"{lost.response.status} on {operation.describe()}").addErrback(failed)

    def _converge(self, operation: Operation) -> None:
        """The controllers may hold what the store no longer does (a timed-out call may have landed)."""
        self.sync.request_in_background(f"unconfirmed {operation.describe()}")

    def unfinished_at_start(self) -> list[dict[str, Any]]:
        """The journal as the server found it, read before the API serves (so no call of ours is in it)."""
        return self.store.run_sync(mirror_ops.pending, readonly=True)

    async def repair_after_restart(self, entries: list[dict[str, Any]]) -> int:
        """Changes journaled before a crash may be missing on the controllers: re-sync once, then forget them."""
        if not entries:
            return 0
        for entry in entries:
            self.log.warn(
                "unfinished controller call from before restart: {op} {kind} {object_id} (journaled {created_at})",
                op=entry["op"], kind=entry["kind"], object_id=entry["object_id"], created_at=entry["created_at"],
            )  # fmt: skip
        await self.sync.request(f"{len(entries)} unfinished controller call(s) from before restart")
        await self.store.run(mirror_ops.clear_up_to, entries[-1]["id"])
        return len(entries)

    def status(self) -> dict[str, Any]:
        status = {"profile": self.profile, "profile_source": self.profile_source, "servers": self.pool.status(), "sync": self.sync.status()}
        if self.watchdog is not None:
            status["watchdog"] = self.watchdog.status()
        return status
