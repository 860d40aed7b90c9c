"""The composition root of quantum-server: ``twistd -n quantum-server --config FILE``."""

from __future__ import annotations

from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python import usage

from restproxy_common.ini import log_ignored
from server_plugin import config as config_mod
from server_plugin import metrics
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


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """Every part, given only what it needs; started in order, stopped in reverse within the grace time."""
    cfg: config_mod.ServerConfig = options["server_config"]
    log_ignored(Logger(namespace="quantum-server"), cfg.ignored_options)
    if reactor is None:
        from twisted.internet import reactor
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
    endpoint = options["port"] or listen_endpoint(cfg)
    site = make_api_site(cfg, extensions, channel, server_metrics, reactor)
    site.requestFactory = in_flight.track(site.requestFactory)
    strports.service(endpoint, site).setServiceParent(top)
    server_metrics.watch(mirror.sync.status if mirror is not None else None, channel.bus.status)
    return top
