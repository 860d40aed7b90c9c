"""Prometheus metrics of restproxy-agent, served on ``[AGENT] metrics_port`` (off by default).

- ``restproxy_agent_plug_seconds``: from a port's event (or reconcile) to its ACTIVE report.
- ``restproxy_agent_vifs``: VIFs with our ``iface-id`` on the integration bridge; ``restproxy_agent_ports_desired``:
  ports bound to this host.
- ``restproxy_agent_errors_total``: failed port syncs (each is retried); ``restproxy_agent_plugs_total``,
  ``restproxy_agent_unplugs_total``.
- ``restproxy_agent_server_connected`` / ``restproxy_agent_ovsdb_connected``: 1 or 0.

All in the agent's own registry (``AgentMetrics``), never the client library's global one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from restproxy_common.metrics import MetricsResource, new_registry, replace_collector

PLUG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentCollector(Collector):
    """Reads the agent's state when scraped."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        s = dict(self.agent.stats, desired=len(self.agent.desired))
        s["server_connected"], s["ovsdb_connected"] = self.agent.watch.connected, self.agent.conn.connected
        vifs = len(self.agent.bridge.ports_with_iface_ids()) if self.agent.conn.connected else 0
        yield GaugeMetricFamily("restproxy_agent_vifs", "VIFs with an iface-id on the integration bridge", value=float(vifs))
        yield GaugeMetricFamily("restproxy_agent_ports_desired", "ports bound to this host", value=float(s.get("desired", 0)))
        yield CounterMetricFamily("restproxy_agent_errors", "failed port syncs (retried)", value=float(s.get("errors", 0)))
        yield CounterMetricFamily("restproxy_agent_plugs", "VIFs plugged", value=float(s.get("plugged", 0)))
        yield CounterMetricFamily("restproxy_agent_unplugs", "VIFs unplugged", value=float(s.get("unplugged", 0)))
        yield GaugeMetricFamily(
            "restproxy_agent_server_connected", "watch stream to the server open", value=float(bool(s.get("server_connected")))
        )
        yield GaugeMetricFamily("restproxy_agent_ovsdb_connected", "connected to ovsdb-server", value=float(bool(s.get("ovsdb_connected"))))


class AgentMetrics:
    """The agent's metrics, in ``registry`` (default: a new one with the process metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.plug_seconds = Histogram(
            "restproxy_agent_plug_seconds", "time from a port's event to its ACTIVE report", buckets=PLUG_BUCKETS, registry=self.registry
        )
        self._collector: AgentCollector | None = None

    def watch(self, agent: Any) -> None:
        """Export ``agent``'s state (a RestProxyAgent) at each scrape, in place of an earlier agent's."""
        old, self._collector = self._collector, AgentCollector(agent)
        replace_collector(self.registry, old, self._collector)


def metrics_site(agent: Any) -> Any:
    """A Site serving ``/metrics`` (at any path) for ``agent`` (a RestProxyAgent), from its own registry. (twisted.web's
    server is imported here: ~0.13 s of every agent's start, for a port that is off by default.)"""
    from twisted.web import server

    agent.metrics.watch(agent)
    site = server.Site(MetricsResource(agent.metrics.registry))
    site.displayTracebacks = False
    return site
