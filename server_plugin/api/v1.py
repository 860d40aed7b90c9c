"""The Quantum v1.0 and v1.1 REST API (Diablo/Essex): /v1.x/tenants/{tenant_id}/networks[...].

One ``V1API`` per version, over the v1 plugin interface (``server_plugin.v1_plugin``).
The two versions share every route and differ where Essex made them differ:
creates answer 200 in v1.0 and 202 in v1.1; v1.1 adds ``op-status`` to
detailed views and takes the list filters in the query string (v1.0 ignores
the query string); faults are v1.0's own codes and names (420
networkNotFound, ...) or v1.1's standard codes with a ``QuantumError`` body
(``api.faults``).

JSON only. The old API defaulted to XML, but its last client always sent a
``.json`` suffix, so a path ending in ``.xml`` or a body declared as XML is
refused with 415 rather than misread; an ``Accept`` header is ignored and
the answer is JSON.

Tenancy: a caller sees only the tenant in its credentials. A non-admin whose
tenant is not the URL's gets the same fault as for a network that does not
exist (NetworkNotFound), so it learns nothing about other tenants; an admin
may act for any tenant.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import attrs
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin.api import routing
from server_plugin.api.auth import request_context
from server_plugin.api.faults import v1_fault, v1_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, header, query_args, read_json, split_path
from server_plugin.api.routing import Routes
from server_plugin.context import RequestContext
from server_plugin.v1_plugin import QuantumPluginBase
from server_plugin.validators import ValidationError, is_uuid_like, tenant_id

VERSIONS = ("1.0", "1.1")


class ForeignTenant(exc.NetworkNotFound):
    """Another tenant's collection: as unknown to the caller as another tenant's network."""

    message = "Networks of tenant %(tenant_id)s could not be found"

    @property
    def type(self) -> str:
        return "NetworkNotFound"


@attrs.define
class Route:
    """What a v1 path names: the tenant, and the ids in it ("" when absent)."""

    tenant_id: str
    net_id: str = ""
    port_id: str = ""


# Where an id and the literal "detail" would fit the same path (``networks/{id}`` and ``networks/detail``,
# ``ports/{id}`` and ``ports/detail``), the id is anything but "detail"; elsewhere any id goes to the plugin.
CHECKS = {**routing.CHECKS, "id": lambda value: value != "detail"}


def v1_routes(api: V1API) -> Routes:
    """The routes under ``/v1.x/tenants/{tenant}/networks``; each handler takes (request, Route)."""
    net, port = "{net_id}", "{net_id}/ports/{port_id}"
    return (
        Routes(checks=CHECKS)
        .add("", GET=api._get_networks, POST=api._post_networks)
        .add("detail", GET=api._get_networks_detail)
        .add("{net_id:id}", GET=api._get_network, PUT=api._put_network, DELETE=api._delete_network)
        .add(f"{net}/detail", GET=api._get_network_detail)
        .add(f"{net}/ports", GET=api._get_ports, POST=api._post_ports)
        .add(f"{net}/ports/detail", GET=api._get_ports_detail)
        .add(f"{net}/ports/{{port_id:id}}", GET=api._get_port, PUT=api._put_port, DELETE=api._delete_port)
        .add(f"{port}/detail", GET=api._get_port_detail)
        .add(f"{port}/attachment", GET=api._get_attachment, PUT=api._put_attachment, DELETE=api._delete_attachment)
    )


def parse_tenant(segments: list[str]) -> tuple[str, list[str]]:
    """Segments after the version (``tenants/T/networks/...``): the tenant and the rest; 404 if no v1 path."""
    if len(segments) < 3 or segments[0] != "tenants" or segments[2] != "networks":
        raise exc.HTTPNotFound()
    try:
        tenant = tenant_id(unquote(segments[1], errors="strict"))  # the same rule as a v2 body's tenant_id
    except (ValidationError, UnicodeDecodeError) as e:
        raise exc.InvalidInput(error_message=f"Invalid input for tenant_id. Reason: {e}") from None
    return tenant, segments[3:]


def _refuse_xml(request: server.Request) -> None:
    path = request.path.decode("utf-8", "replace")
    content_type = (header(request, "Content-Type") or "").lower()
    if path.endswith(".xml") or "xml" in content_type:
        raise exc.HTTPUnsupportedMediaType()


def _resource(request: server.Request, key: str, optional: bool = False) -> dict[str, Any]:
    """``body[key]`` as Essex's _prepare_request_body wanted it: a non-empty object.

    With ``optional``, no body at all gives {} (a port create may have none).
    """
    body = read_json(request, required=False)
    if body is None and optional:
        return {}
    if not isinstance(body, dict) or not isinstance(body.get(key), dict) or not body[key]:
        raise exc.HTTPBadRequest(detail=f"Unable to find '{key}' in request body")
    return body[key]


def _param(item: dict[str, Any], name: str) -> Any:
    value = item.get(name)
    if value is None:
        raise exc.HTTPBadRequest(detail=f"Failed to parse request. Parameter: {name} not specified")
    return value


class V1API(AsyncJSONResource):
    """Everything under /v1.0 or /v1.1 (one instance per version)."""

    def __init__(self, plugin: QuantumPluginBase, auth: Any, version: str) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"unknown v1 API version {version!r}")
        self.plugin = plugin
        self.auth = auth
        self.version = version
        self.routes = v1_routes(self)

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return v1_fault(error, self.version)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return v1_internal_error(self.version)

    @property
    def v11(self) -> bool:
        return self.version == "1.1"

    @property
    def created(self) -> int:
        return 202 if self.v11 else 200

    async def handle(self, request: server.Request) -> Reply:
        ctx = await request_context(self.auth, request)
        _refuse_xml(request)
        tenant, rest = parse_tenant(split_path(request)[1:])  # drop "v1.x"
        match = self.routes.match(request.method.decode("ascii", "replace"), rest)
        route = Route(tenant, **match.params)
        self._check_tenant(ctx, route)
        self._normalise_ids(route)
        return await match.handler(request, route)

    @staticmethod
    def _check_tenant(ctx: RequestContext, route: Route) -> None:
        if ctx.is_admin or ctx.tenant_id == route.tenant_id:
            return
        if route.net_id:
            raise exc.NetworkNotFound(net_id=route.net_id)
        raise ForeignTenant(tenant_id=route.tenant_id)

    @staticmethod
    def _normalise_ids(route: Route) -> None:
        """Ids are UUIDs we made, so case does not matter, and a network id that is no UUID cannot exist.

        A port id that is no UUID still goes to the plugin, which reports an unknown network first.
        """
        if route.net_id:
            if not is_uuid_like(route.net_id):
                raise exc.NetworkNotFound(net_id=route.net_id)
            route.net_id = route.net_id.lower()
        if is_uuid_like(route.port_id):
            route.port_id = route.port_id.lower()

    def _filters(self, request: server.Request) -> dict[str, str]:
        if not self.v11:
            return {}
        return {key: values[-1] for key, values in query_args(request).items() if values}

    # -- views (Essex quantum/api/views/networks.py and ports.py)
    def _network(self, net: dict[str, Any], detail: bool) -> dict[str, Any]:
        view: dict[str, Any] = {"id": net["net-id"]}
        if detail:
            view["name"] = net["net-name"]
            if self.v11:
                view["op-status"] = net["net-op-status"]
        return view

    def _port(self, port: dict[str, Any], detail: bool, attachment: bool) -> dict[str, Any]:
        view: dict[str, Any] = {"id": port["port-id"]}
        if detail:
            view["state"] = port["port-state"]
            if self.v11:
                view["op-status"] = port["port-op-status"]
        if attachment and port["attachment"] is not None:
            view["attachment"] = {"id": port["attachment"]}
        return view

    # -- networks
    async def _get_networks(self, request: server.Request, route: Route, detail: bool = False) -> Reply:
        nets = await self.plugin.get_all_networks(route.tenant_id, self._filters(request))
        return Reply(200, {"networks": [self._network(n, detail) for n in nets]})

    async def _get_networks_detail(self, request: server.Request, route: Route) -> Reply:
        return await self._get_networks(request, route, detail=True)

    async def _post_networks(self, request: server.Request, route: Route) -> Reply:
        item = _resource(request, "network")
        net = await self.plugin.create_network(route.tenant_id, _param(item, "name"))
        return Reply(self.created, {"network": {"id": net["net-id"]}})

    async def _get_network(self, request: server.Request, route: Route, detail: bool = False) -> Reply:
        net = await self.plugin.get_network_details(route.tenant_id, route.net_id)
        view = self._network(net, detail=True)
        if detail:
            ports = await self.plugin.get_all_port_details(route.tenant_id, route.net_id)
            view["ports"] = [self._port(p, detail=True, attachment=True) for p in ports]
        return Reply(200, {"network": view})

    async def _get_network_detail(self, request: server.Request, route: Route) -> Reply:
        return await self._get_network(request, route, detail=True)

    async def _put_network(self, request: server.Request, route: Route) -> Reply:
        item = _resource(request, "network")
        await self.plugin.update_network(route.tenant_id, route.net_id, name=_param(item, "name"))
        return Reply(204)

    async def _delete_network(self, request: server.Request, route: Route) -> Reply:
        await self.plugin.delete_network(route.tenant_id, route.net_id)
        return Reply(204)

    # -- ports
    async def _get_ports(self, request: server.Request, route: Route, detail: bool = False) -> Reply:
        ports = await self.plugin.get_all_port_details(route.tenant_id, route.net_id, self._filters(request))
        return Reply(200, {"ports": [self._port(p, detail, attachment=False) for p in ports]})

    async def _get_ports_detail(self, request: server.Request, route: Route) -> Reply:
        return await self._get_ports(request, route, detail=True)

    async def _post_ports(self, request: server.Request, route: Route) -> Reply:
        state = _resource(request, "port", optional=True).get("state")
        port = await self.plugin.create_port(route.tenant_id, route.net_id, port_state=state)
        return Reply(self.created, {"port": {"id": port["port-id"]}})

    async def _get_port(self, request: server.Request, route: Route, attachment: bool = False) -> Reply:
        port = await self.plugin.get_port_details(route.tenant_id, route.net_id, route.port_id)
        return Reply(200, {"port": self._port(port, detail=True, attachment=attachment)})

    async def _get_port_detail(self, request: server.Request, route: Route) -> Reply:
        return await self._get_port(request, route, attachment=True)

    async def _put_port(self, request: server.Request, route: Route) -> Reply:
        item = _resource(request, "port")
        await self.plugin.update_port(route.tenant_id, route.net_id, route.port_id, state=_param(item, "state"))
        return Reply(204)

    async def _delete_port(self, request: server.Request, route: Route) -> Reply:
        await self.plugin.delete_port(route.tenant_id, route.net_id, route.port_id)
        return Reply(204)

    # -- attachment
    async def _get_attachment(self, request: server.Request, route: Route) -> Reply:
        vif = await self.plugin.get_interface_details(route.tenant_id, route.net_id, route.port_id)
        return Reply(200, {"attachment": {"id": vif} if vif is not None else {}})

    async def _put_attachment(self, request: server.Request, route: Route) -> Reply:
        item = _resource(request, "attachment")
        await self.plugin.plug_interface(route.tenant_id, route.net_id, route.port_id, _param(item, "id"))
        return Reply(204)

    async def _delete_attachment(self, request: server.Request, route: Route) -> Reply:
        await self.plugin.unplug_interface(route.tenant_id, route.net_id, route.port_id)
        return Reply(204)
