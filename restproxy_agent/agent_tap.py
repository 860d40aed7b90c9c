"""The composition root of restproxy-agent: ``twistd -n restproxy-agent --config FILE``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python import usage

from restproxy_agent import config as config_mod
from restproxy_agent.agent import RestProxyAgent
from restproxy_common.ini import log_ignored


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "Path to restproxy_agent.ini."],
        ["host", None, None, "This host's name (overrides [DEFAULT] host)."],
        ["server-url", None, None, "quantum-server URL (overrides [SERVER] server_url)."],
        ["ovsdb", None, None, "OVSDB endpoint, unix:PATH or tcp:HOST:PORT (overrides [OVS] ovsdb_connection)."],
    ]

    def postOptions(self) -> None:
        overrides = {"host": self["host"], "server_url": self["server-url"], "ovsdb_connection": self["ovsdb"]}
        try:
            self["agent_config"] = config_mod.load(self["config"], overrides)
        except config_mod.AgentConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options, reactor: Any = None) -> service.Service:
    cfg: config_mod.AgentConfig = options["agent_config"]
    if reactor is None:
        from twisted.internet import reactor
    if cfg.log_format == "json":
        globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    log_ignored(Logger(namespace="restproxy-agent"), cfg.ignored_options)
    agent = RestProxyAgent(cfg, reactor)
    if not cfg.metrics_port:
        return agent
    from twisted.application import internet

    from restproxy_agent.metrics import metrics_site

    top = service.MultiService()
    agent.setServiceParent(top)
    internet.TCPServer(cfg.metrics_port, metrics_site(agent), interface=cfg.metrics_host).setServiceParent(top)
    return top
