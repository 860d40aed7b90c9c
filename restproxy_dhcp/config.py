"""restproxy_dhcp_agent.ini: the DHCP agent's settings."""

from __future__ import annotations

import socket
from typing import Any

import attrs

from restproxy_common import ini

DhcpConfigError = ini.ConfigError


@attrs.frozen
class DhcpAgentConfig:
    # [DEFAULT]
    host: str = attrs.field(factory=socket.gethostname)
    # [SERVER] the quantum-server's agent channel; the token's kind is "dhcp"
    server_url: str = "http://127.0.0.1:9696"
    token: str = ""
    server_timeout: float = 10.0
    server_ca_file: str = ""
    # [OVS] the same br-int as the host agent's (and the same isolation mode)
    integration_bridge: str = "br-int"
    ovsdb_connection: str = "unix:/var/run/openvswitch/db.sock"
    datapath_type: str = "system"
    of_controller: str = ""
    of_protocols: str = ""
    local_vlan_isolation: bool = True
    ofport_timeout: float = 10.0
    # [DHCP]
    state_path: str = "/var/lib/restproxy/dhcp"  # one directory per network: hosts, opts, leases, pid, log
    dhcp_lease_duration: int = 86400  # seconds; dnsmasq's minimum is 120
    dhcp_domain: str = "openstacklocal"
    dnsmasq_binary: str = "dnsmasq"
    dnsmasq_user: str = ""  # dnsmasq's --user ("" : its default, nobody; the state directory must then be readable)
    dhcp_release_binary: str = "/usr/bin/dhcp_release"
    namespace_prefix: str = "qdhcp-"  # + network id; another prefix only for two DHCP agents on one machine (tests)
    mtu: int = 1500  # of the DHCP port, and DHCP option 26 sent to VMs
    check_interval: float = 1.0  # how often each dnsmasq is checked alive (a killed one is restarted)
    report_interval: float = 30.0
    log_format: str = "text"
    ignored_options: tuple[str, ...] = ()

    @property
    def agent_type(self) -> str:
        return "DHCP agent"


def load(path: str | None, overrides: dict[str, Any] | None = None) -> DhcpAgentConfig:
    loaded = ini.load_ini(path, DhcpAgentConfig, overrides, relative_paths=("state_path",), reserved=("ignored_options",))
    config = DhcpAgentConfig(**loaded.values, ignored_options=loaded.ignored)
    if config.datapath_type not in ("system", "netdev"):
        raise DhcpConfigError(f"[OVS] datapath_type: '{config.datapath_type}' is not system or netdev")
    if config.log_format not in ("text", "json"):
        raise DhcpConfigError(f"[DHCP] log_format: '{config.log_format}' is not text or json")
    if config.dhcp_lease_duration < 120:
        raise DhcpConfigError("[DHCP] dhcp_lease_duration: dnsmasq's minimum is 120 seconds")
    if not config.namespace_prefix or len(config.namespace_prefix) > 20:
        raise DhcpConfigError("[DHCP] namespace_prefix: 1-20 characters")
    if not config.token:
        raise DhcpConfigError("[SERVER] token is required (a token of kind dhcp in the server's agent_tokens_file)")
    return config
