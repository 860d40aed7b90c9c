"""Prometheus metrics of quantum-server, served at ``GET /metrics`` on the API port.

- ``quantum_api_request_seconds{method, status}``: API request latency (status class ``2xx``...),
  measured from the request line to the last byte (or the client going away).
- ``quantum_controller_requests_total{server, outcome}`` and ``quantum_controller_request_seconds{server}``:
  every HTTP call to a controller (``outcome``: ``2xx``, ``4xx``, ``5xx``... or ``error`` when there
  was no answer).
- ``quantum_topology_syncs_total{result}``, ``quantum_topology_sync_last_seconds``,
  ``quantum_topology_sync_running``: full topology syncs, read from the sync state at scrape time.
- ``quantum_agent_watchers``: agents' open watch streams on the agent channel.

Plus the client library's process metrics (CPU, memory, open files). They all live in the
server's own registry (``ServerMetrics``), never the client library's global one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.python.failure import Failure
from twisted.web import server

from restproxy_common.metrics import CONTENT_TYPE_LATEST, MetricsResource, new_registry, replace_collector
from restproxy_common.web import on_finish

__all__ = ["CONTENT_TYPE_LATEST", "MetricsResource", "ServerMetrics"]

API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def status_class(code: int) -> str:
    return f"{code // 100}xx" if code else "error"


class ServerCollector(Collector):
    """Reads the topology sync and agent channel state when scraped."""

    def __init__(self, sync_status: Callable[[], dict[str, Any]] | None, bus_status: Callable[[], dict[str, Any]] | None) -> None:
        self.sync_status = sync_status
        self.bus_status = bus_status

    def collect(self) -> Iterator[Any]:
        if self.sync_status is not None:
            status = self.sync_status()
            syncs = CounterMetricFamily("quantum_topology_syncs", "full topology syncs by result", labels=["result"])
            syncs.add_metric(["ok"], status.get("completed", 0))
            syncs.add_metric(["failed"], status.get("failed", 0))
            yield syncs
            last = status.get("last") or {}
            yield GaugeMetricFamily(
                "quantum_topology_sync_last_seconds", "duration of the last successful topology sync", value=float(last.get("seconds", 0.0))
            )
            yield GaugeMetricFamily(
                "quantum_topology_sync_running", "1 while a topology sync runs", value=1.0 if status.get("running") else 0.0
            )
        if self.bus_status is not None:
            yield GaugeMetricFamily("quantum_agent_watchers", "open agent watch streams", value=float(self.bus_status().get("watchers", 0)))


class ServerMetrics:
    """The server's metrics, in ``registry`` (default: a new one with the process metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.api_latency = Histogram(
            "quantum_api_request_seconds", "API request latency by method and status class", ["method", "status"],
            buckets=API_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.controller_calls = Counter(
            "quantum_controller_requests", "HTTP calls to controllers by server and outcome", ["server", "outcome"], registry=self.registry
        )
        self.controller_latency = Histogram(
            "quantum_controller_request_seconds",
            "controller call latency by server",
            ["server"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self._collector: ServerCollector | None = None
        self._api_children: dict[tuple[str, str], Any] = {}
        self._controller_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_controller_call(self, server: str, status: int, seconds: float) -> None:
        key = (server, status)
        children = self._controller_children.get(key)  # a few servers and statuses, looked up per call
        if children is None:
            children = self._controller_children[key] = (
                self.controller_calls.labels(server, status_class(status)), self.controller_latency.labels(server)
            )  # fmt: skip
        children[0].inc()
        children[1].observe(seconds)

    def observe_api_request(self, method: str, code: int, seconds: float) -> None:
        key = (method if method in _KNOWN_METHODS else "other", status_class(code))
        child = self._api_children.get(key)  # a few label pairs, looked up per request
        if child is None:
            child = self._api_children[key] = self.api_latency.labels(*key)
        child.observe(seconds)

    def watch(self, sync_status: Callable[[], dict[str, Any]] | None, bus_status: Callable[[], dict[str, Any]] | None) -> ServerCollector:
        """Export the topology sync's and agent channel's state (replaces an earlier pair)."""
        old, self._collector = self._collector, ServerCollector(sync_status, bus_status)
        replace_collector(self.registry, old, self._collector)
        return self._collector

    def timed_request_factory(self, factory: Callable[..., server.Request]) -> Callable[..., server.Request]:
        """Wrap a Site's request factory so that each request's latency lands in ``quantum_api_request_seconds``."""
        return _timed(factory, self.observe_api_request)

    def resource(self) -> MetricsResource:
        return MetricsResource(self.registry)


def _timed(factory: Callable[..., server.Request], observe: Callable[[str, int, float], None]) -> Callable[..., server.Request]:
    def make(*args: Any, **kwargs: Any) -> server.Request:
        request = factory(*args, **kwargs)
        started = time.monotonic()

        def done(result: Failure | None) -> None:
            method = request.method.decode("ascii", "replace") if isinstance(request.method, bytes) else str(request.method)
            code = 0 if isinstance(result, Failure) else int(request.code or 0)  # a Failure: the client went away
            observe(method, code, time.monotonic() - started)

        on_finish(request, done)
        return request

    return make
