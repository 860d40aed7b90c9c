"""The consistency watchdog: finds a controller that lost its state while nothing changed, on each profile.

Every ``server_probe_interval`` seconds it looks at the active controller:

* Floodlight never says it lost anything (unknown paths, ``/health`` included, answer 200;
  an attachment to a network it does not know is accepted), so the watchdog reads its network
  list and compares it with the store's expected view cheaply: the counts of networks and
  attachments every time (a few aggregate queries), and a digest when the store's digest is
  known for the store's current fingerprint (counts, last change times). The store's digest
  (a read of every attachment, in a store thread) is recomputed once changes have stopped for
  one check, at most every 30 s while they go on, and every 5 min anyway. Only when they differ does it compare the
  two views in full, holding the mirror's gate so that no change is half-sent, and then asks
  for a replay.
* Big Switch offers no read of its state: ``GET /health`` answering 409 says it lost it. A
  Big Switch controller that restarted and answers 200 is found if it was seen down (it
  refused connections or timed out): it is re-synced when it answers again. One that
  restarted between two probes is found by the next call's 409 or 404 NXVNS.

A probe that gets no answer marks the controller failed (``pool-status`` shows it); the pool
probes failed controllers every second and calls :meth:`back_in_service` when one answers, so
what it lost is replayed at once rather than at the next tick.

Every process (API worker, server) on one database ticks, but only the holder of the pool's
watchdog lease (store/leases.py; renewed at each tick, so it passes to another process within
``3 * interval + 2 * server_timeout`` if the holder dies) probes and compares, and only while no sync runs anywhere. A
controller seen back by several processes asks for a sync "since" it was seen failing, which one
sync that lands on it after that time (or is running then) satisfies, wherever it ran: a detected state loss
causes one sync.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from server_plugin.controller import mapping, views
from server_plugin.controller.servers import ServerHealth
from server_plugin.store import leases

STORE_DIGEST_MIN_INTERVAL = 30.0  # seconds: while the store changes, its digest (a read of every attachment) at most this often
STORE_DIGEST_MAX_AGE = 300.0  # seconds: and at least this often, whatever the fingerprint says
PROBLEM_LINES_LOGGED = 5


def compare_now(session: Any, actual: views.FloodlightView) -> tuple[list[str], str]:
    """The full comparison (run in a store thread, only when the cheap one found a difference)."""
    view = views.store_floodlight_view(session)
    return views.compare(view, actual), views.summary(view)


class ConsistencyWatchdog:
    log = Logger()

    def __init__(self, mirror: Any, interval: float, reactor: Any) -> None:
        self.mirror = mirror
        self.interval = interval
        self.reactor = reactor
        self.checks = 0
        self.repairs = 0
        self.last: dict[str, Any] = {}
        self._loop: task.LoopingCall | None = None
        self._running: Deferred[None] | None = None
        self._store: tuple[Any, views.ViewDigest, float] | None = None  # (fingerprint, digest, computed at)
        self._last_fingerprint: Any = None
        self._warned_not_floodlight: set[str] = set()
        self.lease_name = f"watchdog:{mirror.sync.key}"
        self.holding = False  # this process holds the watchdog lease (as of the last tick)

    # -- life cycle
    def start(self) -> None:
        """First check at once (a Floodlight may have restarted while this server was down), then every interval."""
        self.mirror.pool.back_in_service.append(self.back_in_service)
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.back_in_service in self.mirror.pool.back_in_service:
            self.mirror.pool.back_in_service.remove(self.back_in_service)
        if self.holding:  # another process takes over at its next tick rather than when the lease runs out
            self.holding = False
            release = self.mirror.store.run(leases.release, self.lease_name, self.mirror.sync.holder)
            release.addErrback(lambda _: None)

    def back_in_service(self, health: ServerHealth) -> None:
        """A failed controller answers again: if it is the active one, look at it now."""
        if self.mirror.pool.active is not health:
            return
        if self.mirror.profile == mapping.BIGSWITCH and health.last_error_status == 0 and not self.mirror.profile_pending:
            # It was unreachable: it may have restarted empty and a Big Switch controller cannot be read.
            reason = f"{health.address} answers again after {health.last_error}"
            self.log.warn("controller {server} answers again; re-syncing it (it may have restarted empty)", server=str(health.address))
            since = (str(health.address), health.last_error_at or self.reactor.seconds())
            self.mirror.sync.request_in_background(reason, since=since)
            return
        self.check()

    def check(self) -> Deferred[None]:
        """One check (a check already under way is joined, not repeated); never fails."""
        running = self._running
        if running is None:
            running = self._running = ensureDeferred(self._check())
            running.addErrback(lambda f: self.log.failure("consistency check failed", f))
            running.addBoth(self._finished)
        waiter: Deferred[None] = Deferred()
        running.addBoth(lambda _: waiter.callback(None))
        return waiter

    def _finished(self, _: Any) -> None:
        self._running = None

    # -- the checks
    async def _check(self) -> None:
        pool, sync = self.mirror.pool, self.mirror.sync
        active = pool.active
        if active is None or sync.running is not None:
            return
        shared = await sync.refresh()
        orphaned = not shared["live"] and shared["requested"] > max(shared["done"], shared["failed"])
        if orphaned and sync.running is None and not sync.waiting:
            # Requested, and nobody runs it: asked by a process that died (or its holder died mid-run). Every
            # process looks (one read of the row a tick); the first to take the sync lease runs it for all.
            sync.adopt(shared)
            return
        if self.mirror.profile_pending:
            # Every process learns the profile for itself (its changes wait for it), lease or not.
            if not await self._detect_profile():
                # Nobody answered usefully: let the pool know (no answer, or a 401, is a failure that pool-status
                # shows; failed servers are probed every second, and checked as soon as they are back).
                await self.mirror.pool.call(active, "GET", views.HEALTH_PATH)
                return
        if not await self._hold_lease() or sync.busy():
            return
        self.checks += 1
        started = self.reactor.seconds()
        if self.mirror.profile == mapping.FLOODLIGHT:
            result = await self._check_floodlight(active)
        else:
            result = await self._check_bigswitch(active)
        self.last = {
            "server": str(active.address),
            "result": result,
            "at": self.reactor.seconds(),
            "ms": round((self.reactor.seconds() - started) * 1000, 1),
        }

    async def _hold_lease(self) -> bool:
        """Take or renew the watchdog lease: one process on the database checks (the others' ticks cost one row)."""
        sync = self.mirror.sync
        # (a check may wait for a controller's answer up to the pool's timeout, twice: the lease outlives it)
        lease_ms = int(max(3 * self.interval + 2 * self.mirror.pool.settings.timeout, 5.0) * 1000)
        acquired, row = await self.mirror.store.run(leases.acquire, self.lease_name, sync.holder, sync._now_ms(), lease_ms)
        if acquired != self.holding:
            self.log.info(
                "consistency watchdog {state} (lease {name}; holder {holder})",
                state="checks from this process" if acquired else "left to another process", name=self.lease_name,
                holder=row["holder"],
            )  # fmt: skip
        self.holding = acquired
        if not acquired:
            self.last = {"result": f"checked by {row['holder']}", "at": self.reactor.seconds()}
        return acquired

    async def _detect_profile(self) -> bool:
        """``controller_profile = auto`` and nobody answered at start: detect now, with changes held meanwhile."""
        await self.mirror.gate.acquire(exclusive=True)
        try:
            errors: list[str] = []
            detected, capabilities = await views.read_capabilities(self.mirror.pool, errors)
            self.mirror.learned(capabilities, detected, errors=errors)
            if detected is None:
                return False
        finally:
            self.mirror.gate.release(exclusive=True)
        self.log.info("controller profile detected: {profile}", profile=detected)
        return True

    async def _check_bigswitch(self, active: ServerHealth) -> str:
        asked = self.reactor.seconds()
        response = await self.mirror.pool.call(active, "GET", views.HEALTH_PATH, probe=True)
        if response.status == 409:
            self.log.warn("controller {server} reports it needs a sync (GET /health 409)", server=str(active.address))
            # It had lost its state when asked: a sync that lands on it after that (one that another process
            # runs meanwhile, say) is enough.
            self._repair(f"GET /health 409 from {active.address}", since=(str(active.address), asked))
            return "needs sync (GET /health 409)"
        return "ok" if response.ok else f"{response.status} {response.reason}"

    async def _check_floodlight(self, active: ServerHealth) -> str:
        try:
            response, _, actual_digest = await views.read_floodlight_view(self.mirror.pool, active, view=False)
        except views.NotFloodlight as e:
            if str(active.address) not in self._warned_not_floodlight:
                self._warned_not_floodlight.add(str(active.address))
                self.log.warn(
                    "controller {server} (profile floodlight): {error}; cannot check it", server=str(active.address), error=str(e)
                )
            return f"cannot read: {e}"
        if actual_digest is None:
            return f"cannot read its network list ({response.status} {response.reason})"
        if not await self._differs(actual_digest):
            return "consistent"
        # Different: maybe only a change in flight between the two reads. Look again with no change
        # half-sent (the gate held just for the cheap reads), then describe the difference for the log.
        started = self.reactor.seconds()
        await self.mirror.gate.acquire(exclusive=True)
        try:
            response, _, actual_digest = await views.read_floodlight_view(self.mirror.pool, active, view=False)
            confirmed = actual_digest is not None and await self._differs(actual_digest, settled=True)
        finally:
            self.mirror.gate.release(exclusive=True)
        if actual_digest is None:
            return f"cannot read its network list ({response.status} {response.reason})"
        if not confirmed:
            return "consistent"
        response, actual, _ = await views.read_floodlight_view(self.mirror.pool, active)
        if actual is None:
            return f"cannot read its network list ({response.status} {response.reason})"
        problems, expected_summary = await self.mirror.store.run(compare_now, actual, readonly=True)
        if not problems:  # repaired meanwhile (a change, a sync), or the cached store digest was stale
            self._store = None
            return "consistent"
        self.log.warn(
            "controller {server} differs from the store: {count} difference(s) (it holds {actual}, the store {expected}; "
            "compared in {ms:.0f} ms): {sample}; replaying",
            server=str(active.address), count=len(problems), actual=views.summary(actual), expected=expected_summary,
            ms=(self.reactor.seconds() - started) * 1000, sample="; ".join(problems[:PROBLEM_LINES_LOGGED]),
        )  # fmt: skip
        self._repair(f"{active.address} differs from the store ({len(problems)} difference(s))")
        return f"{len(problems)} difference(s); replaying"

    async def _differs(self, actual: views.ViewDigest, settled: bool = False) -> bool:
        """The cheap comparison: the counts (from the store's fingerprint: a few aggregate queries) every
        time, the digest when the store's is known for this fingerprint. The store's digest (a read of
        every attachment) is recomputed once the fingerprint has moved and then held still for one
        check (or ``settled``: no change can be under way), or at most every STORE_DIGEST_MIN_INTERVAL
        while it keeps moving."""
        store = self.mirror.store
        fingerprint = await store.run(views.store_fingerprint, readonly=True)
        if actual.counts != (fingerprint[0], fingerprint[4]):
            return True
        now = self.reactor.seconds()
        cached, settled = self._store, settled or fingerprint == self._last_fingerprint
        self._last_fingerprint = fingerprint
        if (
            cached is None
            or now - cached[2] >= STORE_DIGEST_MAX_AGE
            or (cached[0] != fingerprint and (settled or now - cached[2] >= STORE_DIGEST_MIN_INTERVAL))
        ):
            cached = self._store = (fingerprint, await store.run(views.store_digest, readonly=True), now)
        return cached[0] == fingerprint and cached[1].value != actual.value

    def _repair(self, reason: str, since: tuple[str, float] | None = None) -> None:
        self.repairs += 1
        self.mirror.sync.request_in_background(reason, since=since)

    def status(self) -> dict[str, Any]:
        return {
            "interval": self.interval, "checks": self.checks, "repairs": self.repairs, "last": dict(self.last),
            "lease_held": self.holding,
        }  # fmt: skip
