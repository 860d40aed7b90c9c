"""The composition root of restproxy-dhcp-agent: ``twistd -n restproxy-dhcp-agent --config FILE``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python import usage

from restproxy_common.ini import log_ignored
from restproxy_dhcp import config as config_mod
from restproxy_dhcp.agent import DhcpAgent


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "Path to restproxy_dhcp_agent.ini."],
        ["host", None, None, "This host's name (overrides [DEFAULT] host)."],
        ["server-url", None, None, "quantum-server URL (overrides [SERVER] server_url)."],
        ["ovsdb", None, None, "OVSDB endpoint, unix:PATH or tcp:HOST:PORT (overrides [OVS] ovsdb_connection)."],
    ]

    def postOptions(self) -> None:
        overrides = {"host": self["host"], "server_url": self["server-url"], "ovsdb_connection": self["ovsdb"]}
        try:
            self["dhcp_config"] = config_mod.load(self["config"], overrides)
        except config_mod.DhcpConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options, reactor: Any = None) -> service.Service:
    cfg: config_mod.DhcpAgentConfig = options["dhcp_config"]
    if reactor is None:
        from twisted.internet import reactor
    if cfg.log_format == "json":
        globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    log_ignored(Logger(namespace="restproxy-dhcp-agent"), cfg.ignored_options)
    return DhcpAgent(cfg, reactor)
