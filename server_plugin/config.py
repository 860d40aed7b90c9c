"""restproxy.ini: the server's settings, with Quantum's section and option names.

Sections: ``[DEFAULT]`` (API server), ``[DATABASE]`` (store), ``[RESTPROXY]``
(controller pool; the original option names, see etc/restproxy.ini).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs

from restproxy_common import ini
from restproxy_common.ini import ConfigError
from server_plugin.openstack.config import KeystoneAuthConfig, NovaConfig, load_keystone, load_nova
from server_plugin.store.settings import CoreSettings, DatabaseSettings

__all__ = ["ConfigError", "ServerConfig", "load"]


@attrs.frozen
class ServerConfig:
    # [DEFAULT]
    bind_host: str = "0.0.0.0"
    bind_port: int = 9696
    auth_strategy: str = "noauth"
    api_tokens_file: str = ""
    state_path: str = "./state"
    allow_bulk: bool = True
    allow_pagination: bool = True
    allow_sorting: bool = True
    pagination_max_limit: int = -1
    max_request_body_size: int = 114688
    base_mac: str = "fa:16:3e:00:00:00"
    mac_generation_retries: int = 16
    max_fixed_ips_per_port: int = 5
    max_dns_nameservers: int = 5
    max_subnet_host_routes: int = 20
    allow_overlapping_ips: bool = True
    force_gateway_on_subnet: bool = False
    db_workers: int = 8
    api_workers: int = 1  # processes serving the API on one socket (server_plugin/workers.py); SQLite keeps 1
    # slow clients and oversized headers (server_plugin/api/guard.py); who may read GET /metrics
    api_header_timeout: float = 10.0
    api_body_timeout: float = 60.0
    api_idle_timeout: float = 60.0
    max_header_size: int = 16384
    max_header_count: int = 100
    metrics_access: str = "admin"
    shutdown_grace_time: float = 20.0  # seconds SIGTERM waits for requests and controller calls in flight
    # TLS for the API and the agent channel (Quantum's option names)
    use_ssl: bool = False
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    # [DATABASE]
    sql_connection: str = ""
    db_auto_upgrade: bool = True
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    pool_timeout: float = 10.0
    retry_interval: float = 1.0
    # [RESTPROXY]
    servers: str = "localhost:8800"
    server_auth: str = ""
    server_ssl: bool = False
    sync_data: bool = False
    server_timeout: int = 10
    neutron_id: str = attrs.field(factory=lambda: "Quantum-" + socket.gethostname())
    add_meta_server_route: bool = True
    # controller profile: auto (GET /capabilities decides), bigswitch, floodlight
    controller_profile: str = "auto"
    no_ssl_validation: bool = False
    ssl_ca_file: str = ""
    ssl_host_certs_dir: str = ""
    sync_timeout: int = 600
    server_probe_interval: int = 5
    # seconds: the sync lease shared by every process on the database; a killed holder's run is taken over after it
    sync_lease: float = 15.0
    # [AGENT] the agents' channel (disabled without a tokens file)
    agent_tokens_file: str = ""
    agent_down_time: int = 75
    agent_event_retention: int = 100000
    agent_watch_heartbeat: int = 10
    agent_event_poll_interval: float = 0.25
    agent_event_prune_interval: float = 60.0
    agent_max_watches: int = 2000
    agent_max_watches_per_token: int = 4
    agent_watch_buffer_bytes: int = 16384
    agent_watch_max_lag: int = 10000
    agent_watch_replay_page: int = 100
    # Nova's port events (Neutron's [DEFAULT] options; [nova] holds where and how)
    notify_nova_on_port_status_changes: bool = False
    send_events_interval: float = 2.0
    # [keystone_authtoken] and [nova], each read into its own class (server_plugin/openstack/config.py)
    keystone_authtoken: KeystoneAuthConfig = attrs.field(factory=KeystoneAuthConfig)
    nova: NovaConfig = attrs.field(factory=NovaConfig)
    # options in the file that this server does not know (logged at start)
    ignored_options: tuple[str, ...] = ()

    @property
    def database_url(self) -> str:
        if self.sql_connection:
            return self.sql_connection
        path = os.path.abspath(os.path.join(self.state_path, "quantum.sqlite"))
        return f"sqlite:///{path}"

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            base_mac=self.base_mac,
            mac_generation_retries=self.mac_generation_retries,
            max_fixed_ips_per_port=self.max_fixed_ips_per_port,
            max_dns_nameservers=self.max_dns_nameservers,
            max_subnet_host_routes=self.max_subnet_host_routes,
            allow_overlapping_ips=self.allow_overlapping_ips,
            force_gateway_on_subnet=self.force_gateway_on_subnet,
        )

    def database_settings(self) -> DatabaseSettings:
        return DatabaseSettings(
            connect_timeout=self.connect_timeout,
            statement_timeout=self.statement_timeout,
            pool_timeout=self.pool_timeout,
            retry_interval=self.retry_interval,
        )


# Older spellings that deployments still carry.
_ALIASES = {
    "quantum_id": "neutron_id",
    "serverauth": "server_auth",
    "serverssl": "server_ssl",
    "syncdata": "sync_data",
    "servertimeout": "server_timeout",
}


_RELATIVE_PATHS = (
    "state_path",
    "api_tokens_file",
    "ssl_ca_file",
    "ssl_host_certs_dir",
    "agent_tokens_file",
    "ssl_cert_file",
    "ssl_key_file",
)


def load(path: str | None, overrides: dict[str, Any] | None = None) -> ServerConfig:
    """Read ``path`` (if given) and apply ``overrides``; unknown options are set aside (logged at start)."""
    loaded = ini.load_ini(
        path, ServerConfig, overrides, aliases=_ALIASES, relative_paths=_RELATIVE_PATHS,
        reserved=("ignored_options", "keystone_authtoken", "nova"), own_sections=("keystone_authtoken", "nova"),
    )  # fmt: skip
    keystone, nova = load_keystone(path), load_nova(path)
    config = ServerConfig(
        **loaded.values, keystone_authtoken=KeystoneAuthConfig(**keystone.values), nova=NovaConfig(**nova.values),
        ignored_options=loaded.ignored + keystone.ignored + nova.ignored,
    )  # fmt: skip
    if config.auth_strategy not in ("noauth", "token", "keystone"):
        raise ConfigError(f"[DEFAULT] auth_strategy: '{config.auth_strategy}' is not noauth, token or keystone")
    if config.auth_strategy == "keystone":
        config.keystone_authtoken.check()
    if config.notify_nova_on_port_status_changes:
        config.nova.check()
    if config.send_events_interval <= 0:
        raise ConfigError("[DEFAULT] send_events_interval must be greater than 0")
    if config.controller_profile not in ("auto", "bigswitch", "floodlight"):
        raise ConfigError(f"[RESTPROXY] controller_profile: '{config.controller_profile}' is not auto, bigswitch or floodlight")
    for name in ("server_timeout", "sync_timeout"):
        if not getattr(config, name) > 0:  # (0 would let a hung controller hold a call, or a sync, forever)
            raise ConfigError(f"[RESTPROXY] {name}: '{getattr(config, name)}' must be a positive number of seconds")
    if not config.sync_lease >= 1:
        raise ConfigError(f"[RESTPROXY] sync_lease: {config.sync_lease} must be at least 1 second")
    if config.metrics_access not in ("admin", "open", "off"):
        raise ConfigError(f"[DEFAULT] metrics_access: '{config.metrics_access}' is not admin, open or off")
    for key in ("api_header_timeout", "api_body_timeout", "api_idle_timeout", "max_header_size", "max_header_count"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"[DEFAULT] {key}: must be greater than 0")
    if config.use_ssl and not (config.ssl_cert_file and config.ssl_key_file):
        raise ConfigError("[DEFAULT] use_ssl needs ssl_cert_file and ssl_key_file")
    for name in ("connect_timeout", "statement_timeout", "pool_timeout", "retry_interval"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"[DATABASE] {name}: '{getattr(config, name)}' must be a positive number of seconds")
    if config.api_workers < 1:
        raise ConfigError(f"[DEFAULT] api_workers: '{config.api_workers}' must be at least 1")
    if config.auth_strategy == "token" and not config.api_tokens_file:
        raise ConfigError("[DEFAULT] api_tokens_file is required with auth_strategy = token")
    return config
