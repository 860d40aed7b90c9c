"""Building the controller pool from the config, and its start/stop as a twistd service."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from restproxy_common.tls import ControllerTLSPolicy
from server_plugin.config import ServerConfig
from server_plugin.controller import mapping, views
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.pool import CallObserver, PoolSettings, ServerPool
from server_plugin.controller.servers import ServerAddress, parse_servers
from server_plugin.controller.watchdog import ConsistencyWatchdog
from server_plugin.lifecycle import Deadline
from server_plugin.store.db import Store

log = Logger(namespace="server_plugin.controller")


def build_mirror(cfg: ServerConfig, store: Store, reactor: Any, observe: CallObserver | None = None) -> ControllerMirror | None:
    """The pool and mirror for ``[RESTPROXY] servers``; None (store only) when it is empty."""
    if not cfg.servers.strip():
        log.warn("[RESTPROXY] servers is empty: running without controllers (store only)")
        return None
    pool = build_pool(cfg, parse_servers(cfg.servers), reactor, observe)
    profile = cfg.controller_profile if cfg.controller_profile != "auto" else mapping.BIGSWITCH
    return ControllerMirror(store, pool, reactor, profile, sync_timeout=float(cfg.sync_timeout), sync_lease=float(cfg.sync_lease))


def build_pool(cfg: ServerConfig, servers: list[ServerAddress], reactor: Any, observe: CallObserver | None = None) -> ServerPool:
    """A pool with the config's credentials, timeouts and TLS trust (the server's, and restproxy-manage check's);
    ``observe`` hears of every call (the server's metrics)."""
    settings = PoolSettings(
        auth=cfg.server_auth,
        use_ssl=cfg.server_ssl,
        timeout=float(cfg.server_timeout),
        neutron_id=cfg.neutron_id,
        probe_interval=float(cfg.server_probe_interval),
    )
    tls = None
    if cfg.server_ssl:
        tls = ControllerTLSPolicy.from_directory(cfg.ssl_ca_file, cfg.ssl_host_certs_dir, cfg.no_ssl_validation)
    return ServerPool(servers, reactor, settings, tls_policy=tls, observe=observe)


class ControllerService(service.Service):
    """Starts after the store: detects the profile, repairs unfinished calls, syncs if asked. Stops
    after the API: lets a sync and the changes in flight end (until the shutdown deadline), then holds
    every later change back before it writes anything, and closes the pool."""

    def __init__(self, mirror: ControllerMirror, cfg: ServerConfig, clock: IReactorTime, deadline: Deadline | None = None) -> None:
        self.mirror = mirror
        self.cfg = cfg
        self.clock = clock
        self.deadline = deadline or Deadline(clock, cfg.shutdown_grace_time)
        self.ready: Deferred[None] | None = None
        self.watchdog: ConsistencyWatchdog | None = None
        self._held: Deferred[None] | None = None  # the gate, taken exclusively until the profile is known

    def startService(self) -> None:
        super().startService()
        unfinished = self.mirror.unfinished_at_start()
        if self.cfg.controller_profile == "auto":
            # Hold every change until the profile is known (the API may already serve meanwhile).
            # If no controller answers, changes are refused until one does (ControllerMirror._send).
            self._held = self.mirror.detecting_profile()
        self.ready = ensureDeferred(self._start(unfinished))
        self.ready.addErrback(lambda f: log.failure("controller start-up failed", f))

    async def _start(self, unfinished: list[dict[str, Any]]) -> None:
        servers = ", ".join(str(h.address) for h in self.mirror.pool.health)
        if self._held is not None:
            await self._held
            detected: str | None = None
            capabilities: frozenset[str] = frozenset()
            errors: list[str] = []
            try:
                detected, capabilities = await views.read_capabilities(self.mirror.pool, errors)
            finally:
                self.mirror.learned(capabilities, detected, detecting=True, errors=errors)
            if detected is None:
                log.warn(
                    "no controller answered GET /capabilities ({errors}): changes are refused until one does (the bodies depend on it)",
                    errors=self.mirror.profile_error,
                )
            self._log_capabilities()
        elif self.mirror.profile == mapping.BIGSWITCH:
            # Only the floating IP paths depend on them, and both ways end in the same controller state:
            # neither changes nor the repair below wait for the answer.
            ensureDeferred(self._read_capabilities()).addErrback(lambda f: log.failure("GET /capabilities failed", f))
        log.info("controller pool: {servers} (profile {profile})", servers=servers, profile=self.mirror.profile)
        self.mirror.pool.start_probing()
        repaired = await self.mirror.repair_after_restart(unfinished)
        if self.cfg.sync_data and not repaired:
            self.mirror.sync.request_in_background("sync_data at start")
        if self.cfg.server_probe_interval > 0:
            self.watchdog = ConsistencyWatchdog(self.mirror, float(self.cfg.server_probe_interval), self.mirror.sync.reactor)
            self.mirror.watchdog = self.watchdog
            self.watchdog.start()

    async def _read_capabilities(self) -> None:
        _, capabilities = await views.read_capabilities(self.mirror.pool)
        self.mirror.learned(capabilities)
        self._log_capabilities()

    def _log_capabilities(self) -> None:
        if self.mirror.capabilities:
            log.info("controller capabilities: {capabilities}", capabilities=", ".join(sorted(self.mirror.capabilities)))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        started = self.clock.seconds()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.mirror.sync.stop()  # no retry of a failed sync
        # A sync under way is let finish; each change in flight holds the gate shared: once the gate is ours,
        # they have ended. A later change waits behind it before it writes anything (it ends unanswered); one
        # cut short by the deadline is journaled with its store write and repaired at the next start.
        running = self.mirror.sync.running
        try:
            if running is not None:
                await self.deadline.bound(running.wait())
            await self.deadline.bound(self.mirror.gate.acquire(exclusive=True))
            await self.deadline.bound(ensureDeferred(self.mirror.journal_closed()))
            log.info("controller calls drained in {ms:.0f} ms", ms=(self.clock.seconds() - started) * 1000)
        except (CancelledError, TimeoutError):
            log.warn(
                "controller calls still in flight after {grace}s (sync running: {running}); stopping anyway:"
                " their journal entries are repaired at the next start",
                grace=self.deadline.seconds, running=self.mirror.sync.running is not None,
            )  # fmt: skip
        except Exception:
            pass  # the sync failed: it is logged by the sync, and the next start syncs again if needed
        await self.mirror.pool.close()
