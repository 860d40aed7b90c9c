"""The Quantum v2.0 REST API: /v2.0/{collection}[/{id}] over RestProxyPlugin."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin import policy
from server_plugin.api import body as body_rules
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, header, query_args, read_json, split_path
from server_plugin.api.listing import PagingOptions, fields_of, list_query, pagination_links
from server_plugin.attributes import RESOURCES, Attribute
from server_plugin.context import RequestContext
from server_plugin.validators import is_uuid_like

EXTENSIONS = {
    "agent": {
        "alias": "agent",
        "name": "agent",
        "description": "The agent management extension.",
        "updated": "2013-02-03T10:00:00-00:00",
        "links": [],
    },
    "binding": {
        "alias": "binding",
        "name": "Port Binding",
        "description": "Expose port bindings of a virtual port to external application",
        "updated": "2012-11-14T10:00:00-00:00",
        "links": [],
    },
}


# The l3 extensions (quantum/extensions/l3.py, l3_ext_gw_mode.py), listed when the plugin has routers.
L3_EXTENSIONS = {
    "router": {
        "alias": "router",
        "name": "Neutron L3 Router",
        "description": "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external "
        "networks via a NAT gateway.",
        "updated": "2012-07-20T10:00:00-00:00",
        "links": [],
    },
    "external-net": {
        "alias": "external-net",
        "name": "Neutron external network",
        "description": "Adds external network attribute to network resource.",
        "updated": "2013-01-14T10:00:00-00:00",
        "links": [],
    },
    "ext-gw-mode": {
        "alias": "ext-gw-mode",
        "name": "Neutron L3 Configurable external gateway mode",
        "description": "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
        "updated": "2013-03-28T10:00:00-00:00",
        "links": [],
    },
}

ROUTER_ACTIONS = ("add_router_interface", "remove_router_interface")


@attrs.frozen
class Collection:
    """One v2.0 collection and the plugin methods behind it."""

    plural: str
    singular: str
    attributes: dict[str, Attribute]
    not_found: type[exc.NotFound]


CORE_COLLECTIONS = {
    "networks": Collection("networks", "network", RESOURCES["networks"][1], exc.NetworkNotFound),
    "subnets": Collection("subnets", "subnet", RESOURCES["subnets"][1], exc.SubnetNotFound),
    "ports": Collection("ports", "port", RESOURCES["ports"][1], exc.PortNotFound),
}

L3_COLLECTIONS = {
    "routers": Collection("routers", "router", RESOURCES["routers"][1], exc.RouterNotFound),
    "floatingips": Collection("floatingips", "floatingip", RESOURCES["floatingips"][1], exc.FloatingIPNotFound),
}


def base_url(request: server.Request) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = header(request, "Host") or f"{request.getHost().host}:{request.getHost().port}"
    return f"{scheme}://{host}"


def _strip(item: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


class V2API(AsyncJSONResource):
    """Everything under /v2.0."""

    def __init__(self, plugin: Any, auth: Any, paging: PagingOptions | None = None, allow_bulk: bool = True, agents: Any = None) -> None:
        super().__init__()
        self.agents = agents  # async (filters) -> list of agents, from the agent channel
        self.plugin = plugin
        self.auth = auth
        self.paging = paging or PagingOptions()
        self.allow_bulk = allow_bulk
        self.collections: dict[str, Collection] = dict(CORE_COLLECTIONS)
        self.extensions = dict(EXTENSIONS)
        if hasattr(plugin, "create_router"):
            self.collections.update(L3_COLLECTIONS)
            self.extensions.update(L3_EXTENSIONS)

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        segments = split_path(request)[1:]  # drop "v2.0"
        method = request.method.decode("ascii", "replace")
        ctx = self.auth.context_for(request)
        if not segments:
            _allow(method, "GET")
            return Reply(200, {"resources": self._index(request)})
        name, rest = segments[0], segments[1:]
        if name == "extensions":
            return self._extensions(method, rest)
        if name == "agents" and self.agents is not None:
            return await self._agents(request, ctx, method, rest)
        collection = self.collections.get(name)
        if collection is None:
            raise exc.HTTPNotFound()
        if not rest:
            if method == "GET":
                return await self._list(request, ctx, collection)
            _allow(method, "GET", "POST")
            return await self._create(request, ctx, collection)
        if len(rest) == 1:
            if not is_uuid_like(rest[0]):
                raise exc.HTTPNotFound()
            item_id = rest[0].lower()
            if method == "GET":
                return await self._show(request, ctx, collection, item_id)
            if method == "PUT":
                return await self._update(request, ctx, collection, item_id)
            _allow(method, "GET", "PUT", "DELETE")
            return await self._delete(ctx, collection, item_id)
        if len(rest) == 2 and is_uuid_like(rest[0]):
            return await self.member_action(request, ctx, collection, rest[0].lower(), rest[1], method)
        raise exc.HTTPNotFound()

    async def member_action(
        self, request: server.Request, ctx: RequestContext, collection: Collection, item_id: str, action: str, method: str
    ) -> Reply:
        """Member actions: ``PUT /v2.0/routers/{id}/add_router_interface`` and ``remove_router_interface``
        (a ``.json`` suffix works, as python-neutronclient 6.2 sends it); the body is not wrapped."""
        if collection.plural != "routers" or action not in ROUTER_ACTIONS:
            raise exc.HTTPNotFound()
        _allow(method, "PUT")
        body = read_json(request, required=False)
        if body is None:
            body = {}  # as Neutron: then "Either subnet_id or port_id must be specified"
        if not isinstance(body, dict):
            raise exc.HTTPBadRequest(detail="Body contains invalid data")
        info = await getattr(self.plugin, action)(ctx, item_id, body)
        return Reply(200, info)

    async def _agents(self, request: server.Request, ctx: RequestContext, method: str, rest: list[str]) -> Reply:
        """GET /v2.0/agents[/{id}]: agents and whether their heartbeat is recent (admin only, as Neutron)."""
        _allow(method, "GET")
        if len(rest) > 1:
            raise exc.HTTPNotFound()
        filters = {k: v for k, v in query_args(request).items() if k in ("host", "agent_type", "binary")}
        if rest:
            filters["id"] = [rest[0]]
        items = await self.agents(filters) if ctx.is_admin else []
        fields = fields_of(query_args(request))
        if rest:
            if not items:
                raise exc.NotFound()
            return Reply(200, {"agent": _strip(items[0], fields)})
        return Reply(200, {"agents": [_strip(i, fields) for i in items]})

    def _index(self, request: server.Request) -> list[dict[str, Any]]:
        root = base_url(request)
        return [
            {"name": c.singular, "collection": c.plural, "links": [{"rel": "self", "href": f"{root}/v2.0/{c.plural}"}]}
            for c in self.collections.values()
        ]

    def _extensions(self, method: str, rest: list[str]) -> Reply:
        _allow(method, "GET")
        if not rest:
            return Reply(200, {"extensions": list(self.extensions.values())})
        if len(rest) == 1 and rest[0] in self.extensions:
            return Reply(200, {"extension": self.extensions[rest[0]]})
        raise exc.HTTPNotFound()

    def _view(self, ctx: RequestContext, collection: Collection, item: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        """What ``ctx`` may see of an item (the policy's ``see`` rules), then only the ``fields`` asked for."""
        return _strip(policy.view(ctx, collection.singular, item), fields or [])

    async def _list(self, request: server.Request, ctx: RequestContext, collection: Collection) -> Reply:
        args = query_args(request)
        query = list_query(args, collection.attributes, self.paging, lambda name: policy.can_see(ctx, collection.singular, name))
        try:
            items = await getattr(self.plugin, f"get_{collection.plural}")(ctx, query)
        except exc.MarkerNotFound:
            raise collection.not_found(**{_id_key(collection): query.marker}) from None
        if query.page_reverse:
            items.reverse()
        fields = fields_of(args)
        result: dict[str, Any] = {collection.plural: [self._view(ctx, collection, i, fields) for i in items]}
        links = pagination_links(base_url(request) + request.path.decode(), args, items, query)
        if links:
            result[f"{collection.plural}_links"] = links
        return Reply(200, result)

    async def _show(self, request: server.Request, ctx: RequestContext, collection: Collection, item_id: str) -> Reply:
        item = await getattr(self.plugin, f"get_{collection.singular}")(ctx, item_id)
        return Reply(200, {collection.singular: self._view(ctx, collection, item, fields_of(query_args(request)))})

    async def _create(self, request: server.Request, ctx: RequestContext, collection: Collection) -> Reply:
        body = read_json(request)
        items, bulk = body_rules.unwrap(body, collection.singular, collection.plural, self.allow_bulk, is_create=True)
        prepared = [body_rules.prepare_create(i, collection.attributes, ctx, collection.singular) for i in items]
        create = getattr(self.plugin, f"create_{collection.singular}")
        if not bulk:
            created = await create(ctx, {collection.singular: prepared[0]})
            return Reply(201, {collection.singular: self._view(ctx, collection, created)})
        done: list[dict[str, Any]] = []
        try:
            for values in prepared:
                done.append(await create(ctx, {collection.singular: values}))
        except BaseException:
            # Bulk creates are all or nothing: undo what went through.
            delete = getattr(self.plugin, f"delete_{collection.singular}")
            for created in reversed(done):
                try:
                    await delete(RequestContext.admin(), created["id"])
                except exc.QuantumException:
                    self.log.warn("bulk rollback: could not delete {id}", id=created["id"])
            raise
        return Reply(201, {collection.plural: [self._view(ctx, collection, i) for i in done]})

    async def _update(self, request: server.Request, ctx: RequestContext, collection: Collection, item_id: str) -> Reply:
        body = read_json(request)
        items, _ = body_rules.unwrap(body, collection.singular, collection.plural, False, is_create=False)
        values = body_rules.prepare_update(items[0], collection.attributes, ctx)
        updated = await getattr(self.plugin, f"update_{collection.singular}")(ctx, item_id, {collection.singular: values})
        return Reply(200, {collection.singular: self._view(ctx, collection, updated)})

    async def _delete(self, ctx: RequestContext, collection: Collection, item_id: str) -> Reply:
        await getattr(self.plugin, f"delete_{collection.singular}")(ctx, item_id)
        return Reply(204)


def _id_key(collection: Collection) -> str:
    return {"network": "net_id", "subnet": "subnet_id", "port": "port_id", "router": "router_id", "floatingip": "floatingip_id"}.get(
        collection.singular, "id"
    )


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise exc.HTTPMethodNotAllowed(method=method, allow=", ".join(allowed))
