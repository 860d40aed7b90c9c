"""Mirroring store changes to the controllers, so that the two never silently diverge.

Each change runs in this order, holding its objects' keys (see ordering.py):

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

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from server_plugin.controller.ordering import KeyedLocks, RWLock
from server_plugin.controller.pool import ControllerLostState, RemoteRestError, ServerPool
from server_plugin.controller.sync import PROFILE_UNKNOWN, TopologySync
from server_plugin.store import mirror_ops
from server_plugin.store.db import Store


@attrs.frozen
class Call:
    """One controller request of a change."""

    method: str
    path: str
    body: Any = None
    ignore: tuple[int, ...] = ()


CallsFor = Callable[[Any], list[Call]]  # controller view -> the calls to make


@attrs.frozen
class Change:
    """What one mirrored change touches and how to make, send and undo it."""

    kind: str
    object_id: str
    op: str
    calls: CallsFor
    work: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    view: Callable[[Any, Any], Any] | None = None
    undo: Callable[..., Any] | None = None
    exclusive: Iterable[Hashable] = ()
    shared: Iterable[Hashable] = ()


class ControllerMirror:
    """Runs changes against the store and the controller pool in a safe order."""

    log = Logger()

    def __init__(self, store: Store, pool: ServerPool, reactor: Any, profile: str, sync_timeout: float = 600.0) -> None:
        self.store = store
        self.pool = pool
        self.profile = profile
        self.capabilities: frozenset[str] = frozenset()  # GET /capabilities of the pool ("floatingip": /floatingips resources)
        self.locks = KeyedLocks()
        self.gate = RWLock()
        self.sync = TopologySync(
            store, pool, self.gate, reactor, lambda: None if self.profile_pending else self.profile, timeout=sync_timeout
        )
        self._to_close: list[int] = []
        # "configured", or with controller_profile = auto "pending" until a controller answers GET /capabilities, then "detected"
        self.profile_source = "configured"
        self.profile_error = ""  # what the controllers answered to GET /capabilities while "pending"
        self.watchdog: Any = None  # the ConsistencyWatchdog, once started (its status is shown with the pool's)
        self._closing: Deferred[None] | None = None

    @property
    def profile_pending(self) -> bool:
        return self.profile_source == "pending"

    async def apply(self, change: Change) -> Any:
        """A create or update: store first, then controllers; undone if they refuse."""
        async with self.locks.hold(exclusive=change.exclusive, shared=change.shared):
            await self.gate.acquire(exclusive=False)
            held = True
            try:
                result, entry, view = await self.store.run(
                    mirror_ops.journaled, change.kind, change.object_id, change.op, change.work, change.args, change.view
                )
                try:
                    await self._send(change.calls(view))
                except ControllerLostState as lost:
                    synced = self._resync(change, lost)  # joined while we still hold the gate: it cannot have begun
                    self.gate.release(exclusive=False)
                    held = False
                    try:
                        await synced
                    except RemoteRestError:
                        await self._refused(change, entry, result)  # the sync did not land: refused after all
                        raise
                    # The sync sent the store as it is, this change included.
                except RemoteRestError:
                    await self._refused(change, entry, result)
                    raise
                self._close_later(entry)
                return result
            finally:
                if held:
                    self.gate.release(exclusive=False)

    async def remove(self, change: Change, remove_work: Callable[..., Any], remove_args: tuple[Any, ...]) -> Any:
        """A delete: local checks, then controllers, then the store; the object stays if they refuse."""
        async with self.locks.hold(exclusive=change.exclusive, shared=change.shared):
            for attempt in (1, 2):
                await self.gate.acquire(exclusive=False)
                held = True
                try:
                    _, entry, view = await self.store.run(
                        mirror_ops.journaled, change.kind, change.object_id, change.op, change.work, change.args, change.view
                    )
                    try:
                        await self._send(change.calls(view))
                    except ControllerLostState as lost:
                        await self.store.run(mirror_ops.finish, entry)
                        if attempt == 2:
                            self._converge(change)  # nobody else may ask for the sync it still needs
                            raise RemoteRestError(f"controller still lost its state after a sync: {lost}") from lost
                        synced = self._resync(change, lost)
                        self.gate.release(exclusive=False)
                        held = False
                        await synced
                        continue  # the object is on the controller again: delete it once more
                    except RemoteRestError:
                        await self.store.run(mirror_ops.finish, entry)
                        self._converge(change)
                        raise
                    return await self.store.run(mirror_ops.finish, entry, remove_work, remove_args)
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
            self._closing = ensureDeferred(self._close_batches())

    async def _close_batches(self) -> None:
        try:
            while self._to_close:
                batch, self._to_close = self._to_close, []
                await self.store.run(mirror_ops.close_entries, batch)
        except Exception:
            self.log.failure("closing journal entries failed; they cause one sync at the next start")
        finally:
            self._closing = None

    async def _refused(self, change: Change, entry: int, result: Any) -> None:
        """Undo a create or update the pool refused, then converge (its calls may have landed in part)."""
        await self.store.run(mirror_ops.finish, entry, change.undo, (_undo_arg(change, result),))
        self._converge(change)

    async def _send(self, calls: list[Call]) -> None:
        if calls and self.profile_pending:
            # Bodies for the wrong profile would corrupt the controller (a Floodlight takes subnet ids for networks).
            raise RemoteRestError(f"{PROFILE_UNKNOWN} ({self.profile_error or 'no answer yet'})")
        for call in calls:
            await self.pool.request(call.method, call.path, call.body, ignore_codes=call.ignore)

    def _resync(self, change: Change, lost: ControllerLostState) -> Deferred[None]:
        """Join (or start) the sync that follows; fires when it landed, fails with RemoteRestError if it did not."""
        self.log.warn(
            "controller {server} lost its state ({status}) on {op} {kind} {object_id}: re-syncing",
            server=str(lost.response.server), status=lost.response.status, op=change.op, kind=change.kind, object_id=change.object_id,
        )  # fmt: skip

        def failed(failure: Failure) -> None:
            raise RemoteRestError(f"controller lost its state and the re-sync failed: {failure.getErrorMessage()}")

        return self.sync.request(f"{lost.response.status} on {change.op} {change.kind} {change.object_id}").addErrback(failed)

    def _converge(self, change: Change) -> None:
        """The controllers may hold what the store no longer does (a timed-out call may have landed)."""
        self.sync.request_in_background(f"unconfirmed {change.op} {change.kind} {change.object_id}")

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


def _undo_arg(change: Change, result: Any) -> Any:
    """Creates are undone by id, updates from the values before (``result`` is (before, after) then);
    a create that changes more than its object returns (what its undo needs, the object) too."""
    return change.object_id if change.op == "create" and not isinstance(result, tuple) else result[0]
