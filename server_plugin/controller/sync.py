"""Full topology sync: one at a time, streamed from the store, retried until it lands.

A controller that lost its state gets everything again in one ``PUT
/topology``. The body is produced page by page in the store's threads (query,
map, serialise) and written with back-pressure, so memory stays bounded
whatever the size of the topology. Requests for a sync *join* the sync that has
not yet taken its snapshot, so 50 callers hitting a 409 together cause exactly
one sync; a request arriving after the snapshot was taken queues exactly one
more. The sync holds the gate exclusively: no mirrored call of this process is
half-done while it reads the store.

This holds across every process on the database (API workers, several servers):
the requests and the one run are coordinated by a lease row (store/leases.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, FirstError, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from restproxy_common.backoff import RetrySchedule, backoff_policy
from server_plugin.controller import mapping, views
from server_plugin.controller.ordering import RWLock
from server_plugin.controller.pool import RemoteRestError, ServerPool
from server_plugin.controller.servers import ServerHealth
from server_plugin.store import leases, mirror_ops
from server_plugin.store.db import Store

Progress = Callable[[int, int], None]  # (networks sent, ports sent)
PROFILE_UNKNOWN = "the controllers' profile is not known yet: no controller has answered GET /capabilities"


def render_page(session: Any, profile: str, after_id: str | None, limit: int, first: bool) -> tuple[bytes | None, str | None, int, int]:
    """One page of the ``networks`` array as JSON bytes (run in a store thread)."""
    page = mirror_ops.topology_page(session, after_id, limit)
    if not page:
        return None, after_id, 0, 0
    parts = [json.dumps(mapping.topology_network(profile, view), separators=(",", ":")) for view in page]
    data = ("" if first else ",") + ",".join(parts)
    return data.encode("utf-8"), page[-1]["id"], len(page), sum(len(v["ports"]) for v in page)


def render_routers_page(session: Any, after_id: str | None, limit: int, first: bool) -> tuple[bytes | None, str | None, int]:
    """One page of the ``routers`` array (each with its ``interfaces``) as JSON bytes (run in a store thread)."""
    page = mirror_ops.routers_page(session, after_id, limit)
    if not page:
        return None, after_id, 0
    parts = [json.dumps(mapping.topology_router(view), separators=(",", ":")) for view in page]
    data = ("" if first else ",") + ",".join(parts)
    return data.encode("utf-8"), page[-1]["id"], len(page)


# key -> (session, after_id, limit) -> (items, last id): more arrays of the Big Switch topology body, added by
# extensions (security groups: "security-groups"); Floodlight ignores /topology's extras, so they are not sent to it.
Section = Callable[[Any, "str | None", int], "tuple[list[dict[str, Any]], str | None]"]
SECTIONS: dict[str, Section] = {}


def add_section(key: str, render: Section) -> None:
    SECTIONS[key] = render


def render_section_page(session: Any, key: str, after_id: str | None, limit: int, first: bool) -> tuple[bytes | None, str | None]:
    items, after = SECTIONS[key](session, after_id, limit)
    if not items:
        return None, after_id
    data = ("" if first else ",") + ",".join(json.dumps(i, separators=(",", ":")) for i in items)
    return data.encode("utf-8"), after


@implementer(IBodyProducer)
class TopologyProducer:
    """Writes ``{"networks": [...], "routers": [...]}`` page by page, honouring pause/resume."""

    length = UNKNOWN_LENGTH

    def __init__(self, store: Store, profile: str, page_size: int = 200, progress: Progress | None = None) -> None:
        self.store = store
        self.profile = profile
        self.page_size = page_size
        self.progress = progress
        self.networks = 0
        self.ports = 0
        self.routers = 0
        self.bytes = 0
        self._paused: Deferred[None] | None = None
        self._task: Deferred[None] | None = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._task = ensureDeferred(self._produce(consumer))
        return self._task

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _write(self, consumer: Any, data: bytes) -> None:
        self.bytes += len(data)
        consumer.write(data)

    async def _produce(self, consumer: Any) -> None:
        self._write(consumer, b'{"networks":[')
        after: str | None = None
        first = True
        while True:
            chunk, after, networks, ports = await self.store.run(render_page, self.profile, after, self.page_size, first, readonly=True)
            if chunk is None:
                break
            first = False
            self._write(consumer, chunk)
            self.networks += networks
            self.ports += ports
            if self.progress is not None:
                self.progress(self.networks, self.ports)
            if self._paused is not None:
                await self._paused
        self._write(consumer, b'],"routers":[')
        after = None
        first = True
        while self.profile != mapping.FLOODLIGHT:
            chunk, after, routers = await self.store.run(render_routers_page, after, self.page_size, first, readonly=True)
            if chunk is None:
                break
            first = False
            self._write(consumer, chunk)
            self.routers += routers
            if self._paused is not None:
                await self._paused
        for key in SECTIONS if self.profile != mapping.FLOODLIGHT else ():
            self._write(consumer, f'],"{key}":['.encode())
            after, first = None, True
            while True:
                chunk, after = await self.store.run(render_section_page, key, after, self.page_size, first, readonly=True)
                if chunk is None:
                    break
                first = False
                self._write(consumer, chunk)
                if self._paused is not None:
                    await self._paused
        self._write(consumer, b"]}")


class _Run:
    """This process's run of the sync, as the lease holder."""

    def __init__(self) -> None:
        self.generation: int | None = None  # the requests it covers (None until it read the store)
        self.reasons: list[str] = []
        self.error: BaseException | None = None
        self.task: Deferred[None] | None = None
        self.finished: Deferred[None] = Deferred()
        self.landed_on: str | None = None

    def wait(self) -> Deferred[None]:
        """Fires when the run has ended (never fails: see ``error``)."""
        d: Deferred[None] = Deferred()
        self.finished.addBoth(lambda r: (d.callback(None), r)[1])
        return d


class _Request:
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.generation: int | None = None


SYNC = "sync"  # the one key of the retry schedule


def lease_key(pool: ServerPool) -> str:
    """The leases of one controller pool: every process configured with the same servers shares them."""
    servers = ",".join(sorted(str(h.address) for h in pool.health))
    return hashlib.sha256(servers.encode()).hexdigest()[:16]


def process_id() -> str:
    """This process among the servers and workers on one database (host, pid, and a nonce for pid reuse)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class TopologySync:
    """The one place that re-syncs controllers; visible through ``status()``.

    Single-flight across every process on the database (see store/leases.py): a request draws a
    generation; whichever process holds the sync lease runs the sync for every request drawn
    before it read the store; the others wait (polling the row) until ``done`` reaches their
    generation, and take the lease over if its holder died. A run renews its lease while it works
    and gives up if it lost it (a later holder's run may carry newer data).
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        pool: ServerPool,
        gate: RWLock,
        reactor: Any,
        profile: Callable[[], str | None],  # None: not known yet (auto, and no controller has answered)
        timeout: float = 600.0,
        page_size: int = 200,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        replay_concurrency: int = 16,
        lease: float = 15.0,
        poll_interval: float = 0.25,
    ) -> None:
        self.store = store
        self.pool = pool
        self.gate = gate
        self.reactor = reactor
        self.profile = profile
        self.timeout = timeout
        self.page_size = page_size
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.running: _Run | None = None
        self.completed = 0
        self.failed = 0
        self.last: dict[str, Any] = {}
        self.progress: dict[str, int] = {}
        # A failed sync is retried with backoff; any sync that starts meanwhile replaces the retry.
        self._retries: RetrySchedule[str] = RetrySchedule(reactor, backoff_policy(retry_initial, retry_max))
        self.last_requests: int | None = None  # Floodlight: calls the last replay needed
        self.replay_concurrency = replay_concurrency
        self.key = lease_key(pool)
        self.lease_name = f"sync:{self.key}"
        self.holder = process_id()
        self.lease = lease
        self.poll_interval = poll_interval
        self.shared: dict[str, Any] = leases.view(None)  # the row as last read
        self._requests: list[_Request] = []
        self._stopped = False

    def _now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    # -- requests
    def request(self, reason: str, since: tuple[str, float] | None = None) -> Deferred[None]:
        """A sync that reads the store after this call; fires when it landed (errback if it failed).

        ``since`` (server, time): the controller had lost its state by then (it answered 409, or it
        was seen down): a sync that landed on it at or after that time, or one running now (it lands
        later), wherever it ran, is enough. Changes made after that run read the store have their own
        requests. So a controller seen back is re-synced once, however many processes saw it."""
        return ensureDeferred(self._request(_Request(reason), since))

    def request_in_background(self, reason: str, since: tuple[str, float] | None = None) -> None:
        """Ask for a sync without waiting; a failure is retried with backoff and logged."""
        self.request(reason, since).addErrback(self._background_failed, reason)

    def _background_failed(self, failure: Failure, reason: str) -> None:
        if not self._stopped and not self._retries.pending(SYNC):
            self._schedule_retry(failure.getErrorMessage())  # it failed in another process: the retry is ours too

    def adopt(self, row: dict[str, Any]) -> None:
        """Requests that a dead holder left unfulfilled (``row``: the lease as read, free or expired): they are
        satisfied by a run here (the watchdog's holder calls this), so none is lost with the process."""
        request = _Request(f"requests left by {row['holder'] or 'a failed run'}")
        request.generation = row["requested"]
        self.log.warn(
            "topology sync requested up to generation {generation} but done only to {done} and nobody runs it: running it here",
            generation=row["requested"], done=row["done"],
        )  # fmt: skip
        ensureDeferred(self._adopted(request)).addErrback(self._background_failed, request.reason)

    async def _adopted(self, request: _Request) -> None:
        self._requests.append(request)
        try:
            await self._until_done(request)
        finally:
            self._requests.remove(request)

    async def _request(self, request: _Request, since: tuple[str, float] | None) -> None:
        if since is not None:
            row = await self._read()
            server, at = since[0], int(since[1] * 1000)
            if row["ok_server"] == server and (row["ok_at"] or 0) >= at:
                return  # a sync landed on it since
            if row["running"] is not None:
                request.generation = row["running"]  # the run under way will land after: join it (its failure is ours)
        if request.generation is None:
            request.generation = await self.store.run(leases.draw, self.lease_name)
        self._requests.append(request)
        try:
            await self._until_done(request)
        finally:
            self._requests.remove(request)

    async def _until_done(self, request: _Request) -> None:
        generation = request.generation
        assert generation is not None
        while True:
            if self._stopped:
                raise RemoteRestError("the server is stopping: the sync was not run")
            run = self.running
            if run is None and self.shared["done"] < generation:
                acquired, self.shared = await self.store.run(
                    leases.acquire, self.lease_name, self.holder, self._now_ms(), int(self.lease * 1000)
                )
                if self.shared["done"] >= generation:
                    return
                if self.shared["failed"] >= generation:  # a run that covered this request failed (here or elsewhere)
                    status = self.shared["status"]
                    error = status.get("last", {}).get("error", "failed")
                    raise RemoteRestError(f"the topology sync run by {status.get('holder', 'another process')} failed: {error}")
                if not acquired:
                    await deferLater(self.reactor, self.poll_interval, lambda: None)  # it runs elsewhere: look again soon
                    continue
                run = self.running or self._start()
            if run is None:
                return  # done (as last read)
            await run.wait()
            if run.generation is not None and run.generation >= generation:
                if run.error is not None:
                    raise run.error
                return

    async def _read(self) -> dict[str, Any]:
        self.shared = await self.store.run(leases.read, self.lease_name, self._now_ms(), readonly=True)
        return self.shared

    def refresh(self) -> Deferred[dict[str, Any]]:
        """The shared state as it is now (``/admin/pool`` through any worker)."""
        return ensureDeferred(self._read())

    @property
    def waiting(self) -> bool:
        """Requests of this process wait for a run (here or elsewhere)."""
        return bool(self._requests)

    def busy(self) -> bool:
        """A sync runs here, or (as last read) in another process, or one is asked for and not yet run: waiting here
        (for a run elsewhere, or a retry after a failure), or counted in the row (the watchdog then looks no further:
        what it would find is already being repaired)."""
        shared = self.shared
        return (
            self.running is not None
            or bool(self._requests)
            or self._retries.pending(SYNC)
            or bool(shared.get("live") and shared.get("running") is not None)
            or shared.get("requested", 0) > max(shared.get("done", 0), shared.get("failed", 0))
        )

    def _start(self) -> _Run:
        run = self.running = _Run()
        self._retries.cancel_all()
        ensureDeferred(self._run(run))
        return run

    async def _run(self, run: _Run) -> None:
        heartbeat = task.LoopingCall(self._renew, run)
        heartbeat.clock = self.reactor
        heartbeat.start(self.lease / 3, now=False)  # the lease is ours from now: kept while changes in flight drain
        await self.gate.acquire(exclusive=True)
        try:
            run.generation = await self.store.run(leases.snapshot, self.lease_name, self.holder, self._now_ms())
            if run.generation is not None:
                run.reasons = [r.reason for r in self._requests if r.generation is not None and r.generation <= run.generation]
                work = run.task = ensureDeferred(self._sync_once(run.reasons))
                run.landed_on = await work
        except CancelledError:
            run.error = RemoteRestError("the sync lease was taken over by another process; this run was stopped")
        except Exception as e:
            run.error = e
        finally:
            if heartbeat.running:
                heartbeat.stop()
            self.gate.release(exclusive=True)
        if run.generation is not None:
            status = {"last": self.last, "progress": self.progress, "holder": self.holder}
            server = run.landed_on if run.error is None else None
            try:
                kept = await self.store.run(leases.finish, self.lease_name, self.holder, run.generation, server, status, self._now_ms())
            except Exception as e:  # the database went away: the lease runs out, another process syncs again
                kept, run.error = False, run.error or e
            if not kept and run.error is None:
                run.error = RemoteRestError("the sync lease was taken over by another process before this run was recorded")
        self.running = None
        run.finished.callback(None)
        if run.generation is None:
            return
        if run.error is not None:
            self._schedule_retry(str(run.error))
        else:
            self._retries.reset(SYNC)

    def _renew(self, run: _Run) -> Deferred[None]:
        async def renew() -> None:
            status = {"progress": dict(self.progress), "holder": self.holder}
            try:
                kept = await self.store.run(leases.renew, self.lease_name, self.holder, self._now_ms(), int(self.lease * 1000), status)
            except Exception:
                return  # the database is away: the run goes on; if the lease runs out meanwhile, finish() says so
            if not kept and run.task is not None:
                self.log.warn("topology sync lease {name} lost to another process: stopping this run", name=self.lease_name)
                run.task.cancel()

        return ensureDeferred(renew())

    def _schedule_retry(self, error: str) -> None:
        if self._stopped or self._retries.pending(SYNC):
            return
        delay = self._retries.failed(SYNC, lambda _: self.request_in_background("retry after failure"))
        self.log.warn("topology sync failed ({error}); retrying in {delay:.1f}s", error=error, delay=delay)

    # -- the sync itself
    async def _sync_once(self, reasons: list[str]) -> str:
        """One sync; the server it landed on."""
        profile = self.profile()
        started = self.reactor.seconds()
        self.progress = {"networks": 0, "ports": 0}
        self.log.info(
            "topology sync starting ({profile}; because: {reasons}; lease {name} held by {holder})",
            profile=profile, reasons="; ".join(sorted(set(reasons))) or "requests of other processes", name=self.lease_name,
            holder=self.holder,
        )  # fmt: skip
        try:
            if profile is None:
                raise RemoteRestError(PROFILE_UNKNOWN)
            if profile == mapping.FLOODLIGHT:
                server, networks, ports, size = await self._replay(profile)
            else:
                server, networks, ports, size = await self._put_topology(profile)
        except Exception as e:
            self.failed += 1
            self.last = {"result": "failed", "error": str(e), "at": self.reactor.seconds(), "reasons": sorted(set(reasons))}
            raise
        elapsed = self.reactor.seconds() - started
        self.completed += 1
        self.last = {
            "result": "ok", "server": server, "networks": networks, "ports": ports, "bytes": size,
            "seconds": round(elapsed, 3), "at": self.reactor.seconds(), "reasons": sorted(set(reasons)),
        }  # fmt: skip
        if profile == mapping.FLOODLIGHT:
            self.last["requests"] = self.last_requests  # only what differed is sent
            self.log.info(
                "topology sync done: {server} holds the store's {networks} networks, {ports} attachments ({calls} calls) in {elapsed:.2f}s",
                networks=networks, ports=ports, calls=self.last_requests, server=server, elapsed=elapsed,
            )  # fmt: skip
            return server
        self.log.info(
            "topology sync done: {networks} networks, {ports} ports, {size} bytes to {server} in {elapsed:.2f}s",
            networks=networks, ports=ports, size=size, server=server, elapsed=elapsed,
        )  # fmt: skip
        return server

    def _on_progress(self, networks: int, ports: int) -> None:
        self.progress = {"networks": networks, "ports": ports}

    async def _put_topology(self, profile: str) -> tuple[str, int, int, int]:
        errors = []
        for health in sorted(self.pool.health, key=lambda h: h.failed):
            producer = TopologyProducer(self.store, profile, self.page_size, self._on_progress)
            response = await self.pool.request_server(health, "PUT", "/topology", producer, timeout=self.timeout)
            if response.ok:
                return str(health.address), producer.networks, producer.ports, producer.bytes
            errors.append(f"{health.address}: {response.status} {response.reason}")
        raise RemoteRestError("topology sync failed on every server: " + "; ".join(errors))

    async def _replay(self, profile: str) -> tuple[str, int, int, int]:
        """Floodlight ignores /topology: read what it holds, then send what differs, network by network
        (network first, then its attachments), and remove what the store does not have."""
        target = next((h for h in sorted(self.pool.health, key=lambda h: h.failed)), None)
        assert target is not None, "a pool always has at least one server"
        response, have, _ = await views.read_floodlight_view(self.pool, target)
        if have is None:
            raise RemoteRestError(f"{target.address}: cannot read its network list ({response.status} {response.reason})")
        replay = _FloodlightReplay(self.pool, target, self.replay_concurrency)
        after: str | None = None
        networks = ports = 0
        while True:
            page = await self.store.run(views.store_floodlight_page, after, self.page_size, readonly=True)
            if not page:
                break
            await replay.all(replay.network(want, have.pop(net_id, None)) for net_id, want in page.items())
            networks += len(page)
            ports += sum(len(want["ports"]) for want in page.values())
            self._on_progress(networks, ports)
            after = next(reversed(page))
        await replay.all(replay.remove(extra) for extra in have.values())
        self.last_requests = replay.requests
        return str(target.address), networks, ports, 0

    def status(self) -> dict[str, Any]:
        """This process's runs, and the shared state as last read (``refresh``): a sync runs anywhere,
        the last one that ended anywhere."""
        shared = self.shared
        remote = bool(shared.get("live") and shared.get("running") is not None and self.running is None)
        last = dict(self.last)
        shared_last = shared.get("status", {}).get("last") or {}
        if shared_last.get("at", 0) > last.get("at", 0):
            last = dict(shared_last)
        pending = [r for r in self._requests if r.generation is not None]
        covered = self.running.generation if self.running is not None and self.running.generation is not None else None
        return {
            "running": self.running is not None or remote,
            "queued": any(covered is None or r.generation > covered for r in pending) and self.busy(),  # type: ignore[operator]
            "progress": dict(self.progress) if not remote else dict(shared.get("status", {}).get("progress") or {}),
            "completed": self.completed,
            "failed": self.failed,
            "retry_scheduled": self._retries.pending(SYNC),
            "last": last,
            "holder": shared.get("holder") if shared.get("live") else (self.holder if self.running is not None else None),
            "generations": {"requested": shared.get("requested", 0), "done": shared.get("done", 0)},
        }

    def stop(self) -> None:
        """No more retries, and waiting requests end (a stopping server); a sync under way goes on (the service waits for it)."""
        self._stopped = True
        self._retries.cancel_all()


class _FloodlightReplay:
    """The calls that bring Floodlight networks to what the store says (see plugin.py for why each).

    Networks are repaired concurrently, and a network's attachments too once the network is
    there; the calls in flight are bounded. One port's calls, and a network's, keep their order.
    """

    def __init__(self, pool: ServerPool, target: ServerHealth, concurrency: int) -> None:
        self.pool = pool
        self.target = target
        self.requests = 0
        self._slots = DeferredSemaphore(concurrency)

    @staticmethod
    async def all(work: Iterable[Coroutine[Any, Any, None]]) -> None:
        """Run every coroutine; the first failure is raised once all have ended."""
        try:
            await gatherResults([ensureDeferred(w) for w in work], consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()

    async def _call(self, method: str, path: str, body: Any = None) -> None:
        self.requests += 1
        await self._slots.acquire()
        try:
            response = await self.pool.call(self.target, method, path, body)
        finally:
            self._slots.release()
        if not response.ok:
            raise RemoteRestError(f"{self.target.address}: {method} {path}: {response.status} {response.reason}", response.status)

    async def _put_network(self, tenant: str, net_id: str, name: str, gateway: str | None) -> None:
        body: dict[str, Any] = {"id": net_id, "name": name}
        if gateway is not None:
            body["gateway"] = gateway
        await self._call("PUT", mapping.network_path(tenant, net_id), {"network": body})

    async def _attachment(self, tenant: str, net_id: str, port_id: str, held: str | None, mac: str | None) -> None:
        path = mapping.attachment_path(tenant, net_id, port_id)
        if held is not None:  # gone, or another MAC (Floodlight would keep the old one's mapping): out first
            await self._call("DELETE", path)
        if mac is not None:
            # Floodlight uses only the MAC; the id (the device's) is ignored, and the store view does not carry it.
            await self._call("PUT", path, {"attachment": {"id": port_id, "mac": mac}})

    async def network(self, want: dict[str, Any], have: dict[str, Any] | None) -> None:
        tenant, net_id = want["tenant_id"], want["id"]
        if have is not None and want["gateway"] is None and have["gateway"] is not None:
            # A PUT cannot clear a gateway: delete (named first, so that the delete finds it) and start again.
            await self.remove(have, tenant)
            have = None
        if have is None or (have["name"], have["gateway"]) != (want["name"], want["gateway"]):
            await self._put_network(tenant, net_id, want["name"], want["gateway"])
        held: dict[str, str] = have["ports"] if have is not None else {}
        wanted: dict[str, str] = want["ports"]
        changed = sorted(p for p in set(held) | set(wanted) if held.get(p) != wanted.get(p))
        await self.all(self._attachment(tenant, net_id, p, held.get(p), wanted.get(p)) for p in changed)

    async def remove(self, have: dict[str, Any], tenant: str = "restproxy") -> None:
        """Delete a network (Floodlight finds it by name: give it its own first; its attachments go with it)."""
        net_id = have["id"]
        await self._put_network(tenant, net_id, net_id, None)
        await self._call("DELETE", mapping.network_path(tenant, net_id))
