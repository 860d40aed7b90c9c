"""Building the controller pool from the config, and its start/stop as a twistd service."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from restproxy_common.tls import ControllerTLSPolicy
from server_plugin.config import ServerConfig
from server_plugin.controller import mapping, views
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.pool import PoolSettings, ServerPool
from server_plugin.controller.servers import ServerAddress, parse_servers
from server_plugin.controller.watchdog import ConsistencyWatchdog
from server_plugin.store.db import Store

log = Logger(namespace="server_plugin.controller")


def build_mirror(cfg: ServerConfig, store: Store, reactor: Any) -> ControllerMirror | None:
    """The pool and mirror for ``[RESTPROXY] servers``; None (store only) when it is empty."""
    if not cfg.servers.strip():
        log.warn("[RESTPROXY] servers is empty: running without controllers (store only)")
        return None
    pool = build_pool(cfg, parse_servers(cfg.servers), reactor)
    profile = cfg.controller_profile if cfg.controller_profile != "auto" else mapping.BIGSWITCH
    return ControllerMirror(store, pool, reactor, profile, sync_timeout=float(cfg.sync_timeout))


def build_pool(cfg: ServerConfig, servers: list[ServerAddress], reactor: Any) -> ServerPool:
    """A pool with the config's credentials, timeouts and TLS trust (the server's, and restproxy-manage check's)."""
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
    return ServerPool(servers, reactor, settings, tls_policy=tls)


class ControllerService(service.Service):
    """Starts after the store: detects the profile, repairs unfinished calls, syncs if asked."""

    def __init__(self, mirror: ControllerMirror, cfg: ServerConfig) -> None:
        self.mirror = mirror
        self.cfg = cfg
        self.ready: Deferred[None] | None = None
        self.watchdog: ConsistencyWatchdog | None = None

    def startService(self) -> None:
        super().startService()
        unfinished = self.mirror.unfinished_at_start()
        if self.cfg.controller_profile == "auto":
            # Hold every change until the profile is known (the API may already serve meanwhile):
            # one sent before would go out with Big Switch bodies, which corrupt a Floodlight.
            # If no controller answers, changes are refused until one does (ControllerMirror._send).
            self.mirror.profile_source = "pending"
            self.mirror.gate.acquire(exclusive=True)
        self.ready = ensureDeferred(self._start(unfinished))
        self.ready.addErrback(lambda f: log.failure("controller start-up failed", f))

    async def _start(self, unfinished: list[dict[str, Any]]) -> None:
        servers = ", ".join(str(h.address) for h in self.mirror.pool.health)
        if self.cfg.controller_profile == "auto":
            try:
                errors: list[str] = []
                detected, self.mirror.capabilities = await views.read_capabilities(self.mirror.pool, errors)
                self.mirror.profile_error = "; ".join(errors)
                if detected is not None:  # (before the changes held meanwhile go on)
                    self.mirror.profile, self.mirror.profile_source = detected, "detected"
            finally:
                self.mirror.gate.release(exclusive=True)
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
        _, self.mirror.capabilities = await views.read_capabilities(self.mirror.pool)
        self._log_capabilities()

    def _log_capabilities(self) -> None:
        if self.mirror.capabilities:
            log.info("controller capabilities: {capabilities}", capabilities=", ".join(sorted(self.mirror.capabilities)))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.mirror.sync.stop()
        return ensureDeferred(self.mirror.pool.close())
