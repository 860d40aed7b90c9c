"""Prometheus metrics of quantum-server, served at ``GET /metrics`` on the API port.

- ``quantum_api_request_seconds{method, status}``: API request latency (status class ``2xx``...),
  measured from the request line to the last byte (or the client going away).
- ``quantum_controller_requests_total{server, outcome}`` and ``quantum_controller_request_seconds{server}``:
  every HTTP call to a controller (``outcome``: ``2xx``, ``4xx``, ``5xx``... or ``error`` when there
  was no answer).
- ``quantum_topology_syncs_total{result}``, ``quantum_topology_sync_last_seconds``,
  ``quantum_topology_sync_running``: full topology syncs, read from the sync state at scrape time.
- ``quantum_agent_watchers``: agents' open watch streams on the agent channel.

Plus the client library's process metrics (CPU, memory, open files).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.python.failure import Failure
from twisted.web import resource, server

API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

API_LATENCY = Histogram(
    "quantum_api_request_seconds", "API request latency by method and status class", ["method", "status"], buckets=API_BUCKETS
)
CONTROLLER_CALLS = Counter("quantum_controller_requests", "HTTP calls to controllers by server and outcome", ["server", "outcome"])
CONTROLLER_LATENCY = Histogram("quantum_controller_request_seconds", "controller call latency by server", ["server"], buckets=API_BUCKETS)

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def status_class(code: int) -> str:
    return f"{code // 100}xx" if code else "error"


def observe_controller_call(server: str, status: int, seconds: float) -> None:
    CONTROLLER_CALLS.labels(server, status_class(status)).inc()
    CONTROLLER_LATENCY.labels(server).observe(seconds)


def timed_request_factory(factory: Callable[..., server.Request]) -> Callable[..., server.Request]:
    """Wrap a Site's request factory so that each request's latency lands in ``quantum_api_request_seconds``."""

    def make(*args: Any, **kwargs: Any) -> server.Request:
        request = factory(*args, **kwargs)
        started = time.monotonic()

        def done(result: Any) -> Any:
            method = request.method.decode("ascii", "replace") if isinstance(request.method, bytes) else str(request.method)
            code = 0 if isinstance(result, Failure) else int(request.code or 0)  # a Failure: the client went away
            API_LATENCY.labels(method if method in _KNOWN_METHODS else "other", status_class(code)).observe(time.monotonic() - started)
            return None  # a lost connection is not an error for whoever else waits on it

        request.notifyFinish().addBoth(done)
        return request

    return make


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


_registered: ServerCollector | None = None


def register_server_collector(
    sync_status: Callable[[], dict[str, Any]] | None, bus_status: Callable[[], dict[str, Any]] | None
) -> ServerCollector:
    """Register (in the default registry) the collector for this server; replaces an earlier one (tests build several)."""
    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
    _registered = ServerCollector(sync_status, bus_status)
    REGISTRY.register(_registered)
    return _registered


class MetricsResource(resource.Resource):
    """``GET /metrics`` in the Prometheus text format (rendered in the reactor thread: it is cheap)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__()
        self.registry = registry

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.text()

    def render_HEAD(self, request: server.Request) -> bytes:
        return self.render_GET(request)
