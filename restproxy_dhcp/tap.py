"""The composition root of restproxy-dhcp-agent: ``twistd -n restproxy-dhcp-agent --config FILE``."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from restproxy_common.agent_cli import agent_options, start_logging
from restproxy_common.startup import resume_collector
from restproxy_dhcp import config as config_mod
from restproxy_dhcp.agent import DhcpAgent

Options = agent_options("restproxy_dhcp_agent.ini", config_mod.load, config_mod.DhcpConfigError, "dhcp_config")


def makeService(options: Any, reactor: Any = None) -> service.Service:
    resume_collector()  # (paused by the twistd plugin while this module's imports ran)
    cfg: config_mod.DhcpAgentConfig = options["dhcp_config"]
    if reactor is None:
        from twisted.internet import reactor
    start_logging(cfg.log_format, cfg.ignored_options, "restproxy-dhcp-agent")
    return DhcpAgent(cfg, reactor)
