"""restproxy_agent.ini: the agent's settings."""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs

from restproxy_common import ini

AgentConfigError = ini.ConfigError  # a setting is missing or malformed; the message names it


@attrs.frozen
class AgentConfig:
    # [DEFAULT]
    host: str = attrs.field(factory=socket.gethostname)
    # [SERVER] the quantum-server's agent channel
    server_url: str = "http://127.0.0.1:9696"
    token: str = ""
    server_timeout: float = 10.0
    server_ca_file: str = ""  # CA to verify an https server_url (default: the system CAs)
    # [OVS]
    integration_bridge: str = "br-int"
    ovsdb_connection: str = "unix:/var/run/openvswitch/db.sock"
    datapath_type: str = "system"
    of_controller: str = ""  # e.g. tcp:127.0.0.1:6633: br-int then fails secure
    of_protocols: str = ""  # e.g. OpenFlow10 for Floodlight v0.91
    local_vlan_isolation: bool = True
    of_mgmt_socket: str = ""  # br-int's OpenFlow management socket; default: <ovsdb socket's dir>/<bridge>.mgmt
    # [AGENT]
    firewall_driver: str = "openflow"  # openflow: security groups in br-int's flows; noop: none (also with of_controller)
    vif_kind: str = "veth"  # default when the port's binding:profile does not say: veth or tap
    netns_deny: str = "qdhcp-*, qrouter-*, snat-*, fip-*"  # namespaces never plugged into (glob patterns; see netns_policy)
    mtu: int = 1500
    ofport_timeout: float = 10.0
    report_interval: float = 30.0
    log_format: str = "text"  # text or json
    status_file: str = ""  # written on SIGUSR1 and on stop, if set
    metrics_port: int = 0  # Prometheus /metrics on this port; 0: off
    metrics_host: str = "127.0.0.1"
    # options in the file that this agent does not know (logged at start)
    ignored_options: tuple[str, ...] = ()

    @property
    def agent_type(self) -> str:
        return "Open vSwitch agent"

    @property
    def mgmt_socket(self) -> str:
        """br-int's OpenFlow management socket: ``of_mgmt_socket``, else next to a unix ovsdb socket, else OVS's run dir."""
        if self.of_mgmt_socket:
            return self.of_mgmt_socket
        kind, _, path = self.ovsdb_connection.partition(":")
        rundir = os.path.dirname(path) if kind == "unix" and path else "/var/run/openvswitch"
        return os.path.join(rundir, f"{self.integration_bridge}.mgmt")


def load(path: str | None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read ``path`` (if given) and apply ``overrides``; unknown options are set aside (logged at start)."""
    loaded = ini.load_ini(path, AgentConfig, overrides, relative_paths=("status_file", "of_mgmt_socket"), reserved=("ignored_options",))
    config = AgentConfig(**loaded.values, ignored_options=loaded.ignored)
    if config.vif_kind not in ("veth", "tap"):
        raise AgentConfigError(f"[AGENT] vif_kind: '{config.vif_kind}' is not veth or tap")
    if config.datapath_type not in ("system", "netdev"):
        raise AgentConfigError(f"[OVS] datapath_type: '{config.datapath_type}' is not system or netdev")
    if config.firewall_driver not in ("openflow", "noop"):
        raise AgentConfigError(f"[AGENT] firewall_driver: '{config.firewall_driver}' is not openflow or noop")
    if config.log_format not in ("text", "json"):
        raise AgentConfigError(f"[AGENT] log_format: '{config.log_format}' is not text or json")
    if not config.token:
        raise AgentConfigError("[SERVER] token is required (the agent's token in the server's agent_tokens_file)")
    return config
