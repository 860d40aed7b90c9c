"""Mirroring store changes to the controllers, so that the two never silently diverge.

Every mutation is one Operation (server_plugin/ops/base.py) and runs the same
way, holding its objects' keys (see ordering.py):

* create / update: store transaction (the change + a journal entry), then the
  controller calls; if the pool refuses them, a second transaction undoes the
  change and the client gets RemoteRestError (500).
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
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from server_plugin.controller.ordering import KeyedLocks, RWLock
from server_plugin.controller.pool import ControllerLostState, RemoteRestError, ServerPool
from server_plugin.controller.sync import PROFILE_UNKNOWN, TopologySync
from server_plugin.ops.base import Call, Operation, Outcome, Profile, controller_calls
from server_plugin.store import mirror_ops
from server_plugin.store.db import Store


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

    def _journaled(self, step: Callable[[Session], Outcome]) -> Callable[[Session], tuple[Outcome, list[Call]]]:
        """``step`` and the calls its changes make, read in its transaction (the profile is the one of now)."""
        profile = Profile(self.profile, self.capabilities)

        def work(session: Session) -> tuple[Outcome, list[Call]]:
            outcome = step(session)
            return outcome, controller_calls(profile, outcome.changes(profile))

        return work

    async def _apply(self, operation: Operation) -> Any:
        """A create or update: store first, then controllers; undone if they refuse."""
        async with self.locks.hold(exclusive=operation.exclusive, shared=operation.shared):
            await self.gate.acquire(exclusive=False)
            held = True
            try:
                (outcome, calls), entry = await self.store.run(
                    mirror_ops.journaled, operation.kind, operation.object_id, operation.op, self._journaled(operation.applied)
                )
                try:
                    await self._send(calls)
                except ControllerLostState as lost:
                    synced = self._resync(operation, lost)  # joined while we still hold the gate: it cannot have begun
                    self.gate.release(exclusive=False)
                    held = False
                    try:
                        await synced
                    except RemoteRestError:
                        await self._refused(operation, entry, outcome)  # the sync did not land: refused after all
                        raise
                    # The sync sent the store as it is, this change included.
                except RemoteRestError:
                    await self._refused(operation, entry, outcome)
                    raise
                self._close_later(entry)
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
                    (_, calls), entry = await self.store.run(
                        mirror_ops.journaled, operation.kind, operation.object_id, operation.op, self._journaled(operation.check)
                    )
                    try:
                        await self._send(calls)
                    except ControllerLostState as lost:
                        await self.store.run(mirror_ops.finish, entry)
                        if attempt == 2:
                            self._converge(operation)  # nobody else may ask for the sync it still needs
                            raise RemoteRestError(f"controller still lost its state after a sync: {lost}") from lost
                        synced = self._resync(operation, lost)
                        self.gate.release(exclusive=False)
                        held = False
                        await synced
                        continue  # the object is on the controller again: delete it once more
                    except RemoteRestError:
                        await self.store.run(mirror_ops.finish, entry)
                        self._converge(operation)
                        raise
                    outcome = await self.store.run(mirror_ops.finish, entry, operation.applied)
                    return outcome.reply
                finally:
                    if held:
                        self.gate.release(exclusive=False)
        raise AssertionError("unreachable")

    def _close_later(self, entry: int) -> None:
        """Close journal entries of confirmed changes in batches: one transaction for many calls.

        An entry still open at a crash only costs one extra sync at the next start.
        """
        self._to_close.append(entry)
        if self._closing is None:
            closing = ensureDeferred(self._close_batches())
            self._closing = None if closing.called else closing  # (a batch that ended at once has cleared it)

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
        while self._closing is not None:
            await self._closing

    async def _close_batches(self) -> None:
        try:
            while self._to_close:
                batch, self._to_close = self._to_close, []
                await self.store.run(mirror_ops.close_entries, batch)
        except Exception:
            self.log.failure("closing journal entries failed; they cause one sync at the next start")
        finally:
            self._closing = None

    async def _refused(self, operation: Operation, entry: int, outcome: Outcome) -> None:
        """Undo a create or update the pool refused, then converge (its calls may have landed in part)."""
        await self.store.run(mirror_ops.finish, entry, outcome.undo)
        self._converge(operation)

    async def _send(self, calls: list[Call]) -> None:
        if calls and self.profile_pending:
            # Bodies for the wrong profile would corrupt the controller (a Floodlight takes subnet ids for networks).
            raise RemoteRestError(f"{PROFILE_UNKNOWN} ({self.profile_error or 'no answer yet'})")
        for call in calls:
            await self.pool.request(call.method, call.path, call.body, ignore_codes=call.ignore)

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
