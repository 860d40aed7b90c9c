"""The composition root of quantum-server: ``twistd -n quantum-server --config FILE``."""

from __future__ import annotations

import os
from typing import Any

import attrs
from sqlalchemy.engine import make_url
from twisted.application import service, strports
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python import usage

from restproxy_common.ini import log_ignored
from server_plugin import config as config_mod
from server_plugin import metrics, workers
from server_plugin.api.admin import AdminAPI
from server_plugin.api.auth import KeystoneAuth, NoAuth, TokenAuth
from server_plugin.api.guard import ConnectionLimits
from server_plugin.api.listing import PagingOptions
from server_plugin.api.root import APIRoot, MetricsAPI, make_site
from server_plugin.api.v1 import V1API
from server_plugin.api.v2 import V2API
from server_plugin.channel.service import AgentChannel
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.servers import ServerConfigError, parse_servers
from server_plugin.controller.service import ControllerService, build_mirror
from server_plugin.extensions import Extensions
from server_plugin.l3_plugin import L3Plugin, l3_extension
from server_plugin.lifecycle import Deadline, InFlight, OrderedServices
from server_plugin.openstack.nova import NovaNotifier
from server_plugin.plugin import RestProxyPlugin, core_extension
from server_plugin.sg_plugin import SecurityGroupPlugin, sg_extension
from server_plugin.store import migrate, mirror_ops, nova_events
from server_plugin.store.db import Store, migration_engine
from server_plugin.v1_plugin import V1Plugin


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "Path to restproxy.ini."],
        ["port", "p", None, "Listen endpoint (default tcp:<bind_port>:interface=<bind_host>)."],
        ["sql-connection", None, None, "Database URL (overrides [DATABASE] sql_connection)."],
        ["state-path", None, None, "State directory (overrides [DEFAULT] state_path)."],
        ["listen-fd", None, None, "An API worker: serve on this inherited listening socket (started by the parent, see workers.py)."],
    ]

    def postOptions(self) -> None:
        overrides = {"sql_connection": self["sql-connection"], "state_path": self["state-path"]}
        try:
            self["server_config"] = config_mod.load(self["config"], overrides)
        except config_mod.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        servers = self["server_config"].servers
        if servers.strip():
            try:
                parse_servers(servers)
            except ServerConfigError as e:
                raise usage.UsageError(f"[RESTPROXY] servers: {e}") from None


class StoreService(service.Service):
    """Owns the store: migrates the schema on start (if allowed) and stops its threads last."""

    log = Logger()

    def __init__(self, store: Store, auto_upgrade: bool) -> None:
        self.store = store
        self.auto_upgrade = auto_upgrade

    def startService(self) -> None:
        if self.auto_upgrade:
            engine = migration_engine(self.store.url, self.store.settings)
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
        elif not migrate.is_current(self.store.engine):
            raise RuntimeError("database schema is not current: run 'restproxy-manage db upgrade'")
        self.store.start()
        self.log.info("store ready on {backend}", backend=self.store.backend)
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self.store.stop_async())


def make_admin_api(auth: Any, store: Store, mirror: ControllerMirror | None, clock: Any) -> AdminAPI:
    """/admin sees the journal, and the mirror's status and sync when there are controllers."""
    return AdminAPI(
        auth,
        journal=lambda: store.run(mirror_ops.pending, readonly=True),
        clock=clock,
        mirror_status=mirror.status if mirror is not None else None,
        sync=mirror.sync if mirror is not None else None,
    )


def make_auth(cfg: config_mod.ServerConfig, reactor: Any) -> Any:
    """The API's auth_strategy: noauth, token (a tokens file) or keystone ([keystone_authtoken])."""
    if cfg.auth_strategy == "token":
        return TokenAuth.from_file(cfg.api_tokens_file)
    if cfg.auth_strategy == "keystone":
        return KeystoneAuth(cfg.keystone_authtoken, reactor)
    return NoAuth()


def make_api_site(
    cfg: config_mod.ServerConfig,
    extensions: Extensions,
    channel: AgentChannel | None = None,
    server_metrics: metrics.ServerMetrics | None = None,
    reactor: Any = None,
) -> Any:
    plugin = extensions.core
    if reactor is None:
        from twisted.internet import reactor
    auth = make_auth(cfg, reactor)
    paging = PagingOptions(cfg.allow_pagination, cfg.allow_sorting, cfg.pagination_max_limit)
    v2 = V2API(extensions, auth, paging, allow_bulk=cfg.allow_bulk, agents=channel.list_agents if channel else None)
    v1_plugin = V1Plugin(plugin)
    v1 = {"1.0": V1API(v1_plugin, auth, "1.0"), "1.1": V1API(v1_plugin, auth, "1.1")}
    agent_api = channel.resource if channel else None
    if server_metrics is None:
        server_metrics = metrics.ServerMetrics()  # a private registry: nothing shared between sites
    served = server_metrics.resource()
    scrape = MetricsAPI(served, auth, cfg.metrics_access) if cfg.metrics_access != "off" else None
    root = APIRoot(v2, v1, make_admin_api(auth, plugin.store, plugin.mirror, reactor), agent_api, metrics=scrape)
    limits = ConnectionLimits(
        header_timeout=cfg.api_header_timeout, body_timeout=cfg.api_body_timeout, idle_timeout=cfg.api_idle_timeout,
        max_header_size=cfg.max_header_size, max_header_count=cfg.max_header_count,
    )  # fmt: skip
    return make_site(root, cfg.max_request_body_size, server_metrics, limits)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def listen_endpoint(cfg: config_mod.ServerConfig) -> str:
    """``tcp:9696:interface=...``, or ``ssl:...`` with the certificate and key when ``use_ssl`` is set."""
    where = f"{cfg.bind_port}:interface={_quote(cfg.bind_host)}"
    if cfg.use_ssl:
        return f"ssl:{where}:privateKey={_quote(cfg.ssl_key_file)}:certKey={_quote(cfg.ssl_cert_file)}"
    return f"tcp:{where}"


def _migrate_once(cfg: config_mod.ServerConfig) -> None:
    """The parent of API workers migrates (or checks) the schema once, before any worker starts."""
    settings = cfg.database_settings()
    engine = migration_engine(cfg.database_url, settings)
    try:
        if cfg.db_auto_upgrade:
            migrate.upgrade(engine)
        elif not migrate.is_current(engine):
            raise RuntimeError("database schema is not current: run 'restproxy-manage db upgrade'")
    finally:
        engine.dispose()


def api_worker_count(cfg: config_mod.ServerConfig, log: Logger) -> int:
    """``api_workers``, except that SQLite keeps one worker (one writer at a time: more processes only wait on its lock)."""
    if cfg.api_workers > 1 and make_url(cfg.database_url).get_backend_name() == "sqlite":
        log.warn("api_workers = {n}: SQLite keeps one API worker (one writer at a time); running 1", n=cfg.api_workers)
        return 1
    return cfg.api_workers


def make_supervisor(options: Options, cfg: config_mod.ServerConfig, count: int, reactor: Any) -> service.MultiService:
    """The parent of ``count`` API workers: binds the socket, migrates once, starts and supervises them."""
    host, port, _ = workers.parse_listen(options["port"] or listen_endpoint(cfg))
    sock = workers.bind_socket(host, port)
    top = service.MultiService()
    supervisor = workers.WorkerSupervisor(
        reactor, workers.worker_argv(options), sock, count, cfg.shutdown_grace_time, prepare=lambda: _migrate_once(cfg)
    )
    supervisor.setServiceParent(top)
    return top


def _with_worker_header(factory: Any) -> Any:
    """Each response says which worker process answered (``X-Restproxy-Worker: <pid>``)."""
    pid = [str(os.getpid()).encode()]

    def make(*args: Any, **kwargs: Any) -> Any:
        request = factory(*args, **kwargs)
        request.responseHeaders.setRawHeaders(b"x-restproxy-worker", pid)
        return request

    return make


def _listener(options: Options, cfg: config_mod.ServerConfig, site: Any, reactor: Any) -> service.Service:
    """Where the API listens: its endpoint, or (a worker) the parent's socket, with TLS on top when use_ssl."""
    endpoint = options["port"] or listen_endpoint(cfg)
    if options["listen-fd"] is None:
        return strports.service(endpoint, site)
    factory = site
    if workers.parse_listen(endpoint)[2] == "ssl":
        from twisted.internet import ssl
        from twisted.protocols.tls import TLSMemoryBIOFactory

        key = cfg.ssl_key_file
        cert = cfg.ssl_cert_file
        if options["port"]:  # the test harness names them in --port
            parts = dict(p.split("=", 1) for p in endpoint.split(":") if "=" in p)
            key, cert = parts.get("privateKey", key), parts.get("certKey", cert)
        factory = TLSMemoryBIOFactory(ssl.DefaultOpenSSLContextFactory(key, cert), False, site)
    return workers.AdoptedPort(reactor, int(options["listen-fd"]), factory)


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """Every part, given only what it needs; started in order, stopped in reverse within the grace time."""
    cfg: config_mod.ServerConfig = options["server_config"]
    log = Logger(namespace="quantum-server")
    log_ignored(log, cfg.ignored_options)
    if reactor is None:
        from twisted.internet import reactor
    worker = options["listen-fd"] is not None
    if not worker:
        count = api_worker_count(cfg, log)
        if count > 1:
            return make_supervisor(options, cfg, count, reactor)
    else:
        cfg = attrs.evolve(cfg, db_auto_upgrade=False)  # the parent migrated: N workers must not race to
    server_metrics = metrics.ServerMetrics()  # this server's own registry, handed to each part that reports
    deadline = Deadline(reactor, cfg.shutdown_grace_time)
    store = Store(cfg.database_url, reactor=reactor, max_threads=cfg.db_workers, settings=cfg.database_settings())
    mirror = build_mirror(cfg, store, reactor, server_metrics.observe_controller_call)
    plugin = RestProxyPlugin(store, cfg.core_settings(), mirror)
    extensions = Extensions(plugin, [core_extension(plugin), l3_extension(L3Plugin(plugin)), sg_extension(SecurityGroupPlugin(plugin))])
    top = OrderedServices(deadline)
    StoreService(store, cfg.db_auto_upgrade).setServiceParent(top)
    if mirror is not None:
        ControllerService(mirror, cfg, reactor, deadline).setServiceParent(top)
    if cfg.notify_nova_on_port_status_changes:  # after the store (started before, stopped after it)
        nova_events.install(store)
        NovaNotifier(store, cfg.nova, cfg.send_events_interval, reactor).setServiceParent(top)
    in_flight = InFlight(deadline)
    in_flight.setServiceParent(top)
    channel = AgentChannel(cfg, plugin, reactor)
    plugin.listeners.append(channel.bus.nudge)  # a commit wakes the bus at once
    channel.setServiceParent(top)
    site = make_api_site(cfg, extensions, channel, server_metrics, reactor)
    site.requestFactory = in_flight.track(site.requestFactory)
    if worker:
        site.requestFactory = _with_worker_header(site.requestFactory)
    _listener(options, cfg, site, reactor).setServiceParent(top)
    if worker:
        workers.ParentWatch(reactor).setServiceParent(top)
    server_metrics.watch(mirror.sync.status if mirror is not None else None, channel.bus.status)
    return top
