"""The composition root of restproxy-agent: ``twistd -n restproxy-agent --config FILE``."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from restproxy_agent import config as config_mod
from restproxy_agent.agent import RestProxyAgent
from restproxy_common.agent_cli import agent_options, start_logging
from restproxy_common.startup import resume_collector

Options = agent_options("restproxy_agent.ini", config_mod.load, config_mod.AgentConfigError, "agent_config")


def makeService(options: Any, reactor: Any = None) -> service.Service:
    resume_collector()  # (paused by the twistd plugin while this module's imports ran)
    cfg: config_mod.AgentConfig = options["agent_config"]
    if reactor is None:
        from twisted.internet import reactor
    start_logging(cfg.log_format, cfg.ignored_options, "restproxy-agent")
    agent = RestProxyAgent(cfg, reactor, freeze_start_up=True)
    if not cfg.metrics_port:
        return agent
    from twisted.application import internet

    from restproxy_agent.metrics import metrics_site

    top = service.MultiService()
    agent.setServiceParent(top)
    internet.TCPServer(cfg.metrics_port, metrics_site(agent), interface=cfg.metrics_host).setServiceParent(top)
    return top
