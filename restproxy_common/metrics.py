"""Prometheus plumbing shared by the server and the agent: a registry per process role, served as a resource.

Each role builds its own ``CollectorRegistry`` (``new_registry``) and passes it to whatever
observes or serves metrics, so one process never exports another role's metrics and tests
can build several instances side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.registry import Collector
from twisted.web import resource

if TYPE_CHECKING:  # (twisted.web.server, ~0.13 s to import, only where a site is made)
    from twisted.web import server

__all__ = ["CONTENT_TYPE_LATEST", "MetricsResource", "new_registry", "replace_collector"]


def new_registry(process: bool = True) -> CollectorRegistry:
    """An empty registry, with the client library's process, platform and GC metrics unless ``process`` is False."""
    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def replace_collector(registry: CollectorRegistry, old: Collector | None, new: Collector) -> Collector:
    """Register ``new`` in ``registry`` in place of ``old`` (if any); returns ``new``."""
    if old is not None:
        registry.unregister(old)
    registry.register(new)
    return new


class MetricsResource(resource.Resource):
    """``GET /metrics`` in the Prometheus text format (rendered in the reactor thread: it is cheap)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry if registry is not None else new_registry(process=False)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.text()

    def render_HEAD(self, request: server.Request) -> bytes:
        return self.render_GET(request)
