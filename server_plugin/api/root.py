"""The API's root: the version document at / and dispatch to /v2.0, /v1.0, /v1.1."""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server

from server_plugin import exceptions as exc
from server_plugin.api.auth import request_context
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.guard import APISite, ConnectionLimits
from server_plugin.api.http import AsyncJSONResource, MethodGuard, Reply, limited_request_factory, split_path
from server_plugin.api.routing import Routes
from server_plugin.api.v2 import base_url
from server_plugin.metrics import CONTENT_TYPE_LATEST, MetricsResource, ServerMetrics

# Who may read GET /metrics ([DEFAULT] metrics_access); "off" does not serve it.
METRICS_ACCESS = ("admin", "open", "off")

# openstacksdk picks the highest stable version: v2.0 must be CURRENT and highest.
VERSIONS = (("v1.0", "DEPRECATED"), ("v1.1", "SUPPORTED"), ("v2.0", "CURRENT"))


class VersionsResource(AsyncJSONResource):
    """GET / (and only /): the version list; anything else unknown is 404."""

    def __init__(self, versions: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.versions = versions
        self.routes = Routes().add("", GET=self._versions, HEAD=self._versions)

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        return await _dispatch(self.routes, request)

    async def _versions(self, request: server.Request) -> Reply:
        root = base_url(request)
        return Reply(
            200,
            {
                "versions": [
                    {"id": vid, "status": status, "links": [{"rel": "self", "href": f"{root}/{vid}/"}]} for vid, status in self.versions
                ]
            },
        )


class MetricsAPI(AsyncJSONResource):
    """``GET /metrics``: the Prometheus text, to admins only unless ``metrics_access = open``.

    It names the controllers and shows the load, which is an operator's business:
    with ``admin`` a scraper needs an admin context (noauth: no tenant header or
    the admin role; token: an admin token in X-Auth-Token).
    """

    def __init__(self, metrics: MetricsResource, auth: Any, access: str = "admin") -> None:
        super().__init__()
        if access not in METRICS_ACCESS:
            raise ValueError(f"metrics_access must be one of {METRICS_ACCESS}")
        self.metrics = metrics
        self.auth = auth
        self.access = access
        self.routes = Routes().add("metrics", GET=self._scrape, HEAD=self._scrape)

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        return await _dispatch(self.routes, request)

    async def _scrape(self, request: server.Request) -> Reply:
        if self.access != "open" and not (await request_context(self.auth, request)).is_admin:
            raise exc.PolicyNotAuthorized(action="get_metrics")
        return Reply(200, self.metrics.text(), {"Content-Type": CONTENT_TYPE_LATEST})


class APIRoot(resource.Resource):
    """Routes by the first path segment; every route is a leaf resource."""

    def __init__(
        self,
        v2: resource.Resource,
        v1: dict[str, resource.Resource] | None = None,
        admin: resource.Resource | None = None,
        agent: resource.Resource | None = None,
        metrics: resource.Resource | None = None,
    ) -> None:
        super().__init__()
        self.v2 = v2
        self.admin = admin
        self.agent = agent
        self.metrics = metrics
        self.v1 = v1 or {}
        versions = tuple(v for v in VERSIONS if v[0] == "v2.0" or v[0][1:] in self.v1)
        self.versions = VersionsResource(versions)
        # first path segment -> the API mounted there (each routes the rest itself); anything else: the version list
        mounts = {"v2.0": v2, "admin": admin, "agent": agent, "metrics": metrics, **{f"v{v}": api for v, api in self.v1.items()}}
        self.mounts: dict[str, resource.Resource] = {name: api for name, api in mounts.items() if api is not None}

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.Resource:
        # Undo traversal: the leaf resources read request.path themselves.
        request.postpath.insert(0, path)
        request.prepath.pop()
        first = path.decode("utf-8", "replace")
        if first.endswith(".json"):
            first = first[: -len(".json")]
        return _json_methods(self._route(first))

    def _route(self, first: str) -> resource.Resource:
        return self.mounts.get(first, self.versions)

    def render(self, request: server.Request) -> Any:
        return self.versions.render(request)


async def _dispatch(routes: Routes, request: server.Request) -> Reply:
    match = routes.match(request.method.decode("ascii", "replace"), split_path(request))
    return await match.handler(request, **match.params)


def _json_methods(child: resource.Resource) -> resource.Resource:
    """Every route answers a method it does not take with a JSON 405: ours do; a plain leaf is wrapped."""
    if isinstance(child, AsyncJSONResource):
        return child
    return MethodGuard(child, neutron_fault)


def make_site(root: resource.Resource, max_body: int, metrics: ServerMetrics, limits: ConnectionLimits | None = None) -> server.Site:
    """The API's Site: bodies capped at ``max_body``, each request's latency observed in ``metrics``."""
    site = APISite(root, limits or ConnectionLimits())
    site.requestFactory = metrics.timed_request_factory(limited_request_factory(max_body))
    site.displayTracebacks = False
    return site
