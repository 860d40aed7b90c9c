"""Building the agent channel from the config, and its lifecycle as a twistd service."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from server_plugin.channel.api import AgentChannelAPI, AgentTokens
from server_plugin.channel.bus import EventBus
from server_plugin.channel.rpc import AgentRPC
from server_plugin.config import ServerConfig
from server_plugin.store import agents

log = Logger(namespace="server_plugin.channel")


class AgentChannel(service.Service):
    """The event bus (started with the server) and the /agent/v1 resource.

    The composition root tells the bus of the plugin's commits (``bus.nudge``): the channel itself only
    reads the plugin's store and calls it for the agents' RPCs."""

    def __init__(self, cfg: ServerConfig, plugin: Any, reactor: Any) -> None:
        self.cfg = cfg
        self.plugin = plugin
        self.bus = EventBus(
            plugin.store, reactor, poll_interval=cfg.agent_event_poll_interval, retention=cfg.agent_event_retention,
            prune_interval=cfg.agent_event_prune_interval, heartbeat=float(cfg.agent_watch_heartbeat),
            max_watches=cfg.agent_max_watches, max_watches_per_token=cfg.agent_max_watches_per_token,
            max_lag=cfg.agent_watch_max_lag, replay_page=cfg.agent_watch_replay_page, send_buffer=cfg.agent_watch_buffer_bytes,
            host_views=getattr(plugin, "host_views", ()), host_interests=getattr(plugin, "host_interests", ()),
        )  # fmt: skip
        self.rpc = AgentRPC(plugin, cfg.add_meta_server_route, on_change=self.bus.nudge)
        self.resource: AgentChannelAPI | None = None
        if cfg.agent_tokens_file:
            tokens = AgentTokens.from_file(cfg.agent_tokens_file)
            self.resource = AgentChannelAPI(self.rpc, self.bus, tokens)
        else:
            log.warn("[AGENT] agent_tokens_file is not set: the agent channel (/agent/v1) is off")
        self.ready: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.ready = ensureDeferred(self.bus.start())
        self.ready.addErrback(lambda f: log.failure("agent event bus failed to start", f))

    def stopService(self) -> Deferred[None]:
        """Ends every watch cleanly (a ``closed`` line, then the end of the stream); fires once the bus has stopped."""
        super().stopService()
        return ensureDeferred(self.bus.stop())

    async def list_agents(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return await self.plugin.store.run(agents.list_agents, float(self.cfg.agent_down_time), filters, readonly=True)
