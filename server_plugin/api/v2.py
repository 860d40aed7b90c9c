"""The Quantum v2.0 REST API: /v2.0/{collection}[/{id}[/{action}]] over the registered extensions.

The routes are one table (api/routing.py) built from the extension registry
(server_plugin/extensions.py): each collection's handler is the plugin of the
extension that serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin import policy
from server_plugin.api import body as body_rules
from server_plugin.api import json_codec
from server_plugin.api.auth import request_context
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, Streamed, header, query_args, read_json, split_path
from server_plugin.api.listing import PagingOptions, fields_of, list_query, pagination_links, paging_links
from server_plugin.api.routing import Routes
from server_plugin.context import RequestContext
from server_plugin.extensions import Collection, Extensions, Served
from server_plugin.store.listing import ListQuery
from server_plugin.store.port_list import CHUNK as STREAM_CHUNK  # items per chunk of a streamed list
from server_plugin.store.views import strip_fields


def base_url(request: server.Request) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = header(request, "Host") or f"{request.getHost().host}:{request.getHost().port}"
    return f"{scheme}://{host}"


class _Prefetched:
    """A read started ahead of its use; its failure is kept, not left unhandled, if the reply is abandoned (client gone)."""

    def __init__(self, d: Deferred[Any]) -> None:
        self._done = d.addBoth(self._keep)
        self._outcome: Any = None

    def _keep(self, outcome: Any) -> None:
        self._outcome = outcome

    async def result(self) -> Any:
        await self._done
        if isinstance(self._outcome, Failure):
            self._outcome.raiseException()
        return self._outcome


class V2API(AsyncJSONResource):
    """Everything under /v2.0: the collections of the registered extensions, their actions, /extensions, /agents."""

    def __init__(
        self, extensions: Extensions, auth: Any, paging: PagingOptions | None = None, allow_bulk: bool = True, agents: Any = None
    ) -> None:
        super().__init__()
        self.agents = agents  # async (filters) -> list of agents, from the agent channel
        self.registry = extensions
        self.auth = auth
        self.paging = paging or PagingOptions()
        self.allow_bulk = allow_bulk
        self.routes = self._routes()

    @property
    def collections(self) -> dict[str, Collection]:
        return {plural: served.collection for plural, served in self.registry.collections.items()}

    @property
    def extensions(self) -> dict[str, dict[str, Any]]:
        return self.registry.descriptors

    def _routes(self) -> Routes:
        routes = Routes().add("", GET=self._index).add("extensions", GET=self._extensions).add("extensions/{alias}", GET=self._extension)
        if self.agents is not None:
            routes.add("agents", GET=self._agents).add("agents/{id}", GET=self._agents)
        for plural, served in self.registry.collections.items():
            routes.add(plural, GET=partial(self._list, served), POST=partial(self._create, served))
            member = {"GET": self._show, "PUT": self._update, "DELETE": self._delete}
            routes.add(f"{plural}/{{id:uuid}}", **{method: partial(handler, served) for method, handler in member.items()})
            for action in served.collection.actions:
                routes.add(f"{plural}/{{id:uuid}}/{action}", PUT=partial(self._action, served, action))
        return routes

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        segments = split_path(request)[1:]  # drop "v2.0"
        method = request.method.decode("ascii", "replace")
        ctx = await request_context(self.auth, request)
        match = self.routes.match(method, segments)
        return await match.handler(request, ctx, **match.params)

    async def _action(self, served: Served, action: str, request: server.Request, ctx: RequestContext, id: str) -> Reply:
        """Member actions: ``PUT /v2.0/routers/{id}/add_router_interface`` and ``remove_router_interface``
        (a ``.json`` suffix works, as python-neutronclient 6.2 sends it); the body is not wrapped."""
        body = read_json(request, required=False)
        if body is None:
            body = {}  # as Neutron: then "Either subnet_id or port_id must be specified"
        if not isinstance(body, dict):
            raise exc.HTTPBadRequest(detail="Body contains invalid data")
        info = await getattr(served.handler, action)(ctx, id.lower(), body)
        return Reply(200, info)

    async def _agents(self, request: server.Request, ctx: RequestContext, id: str | None = None) -> Reply:
        """GET /v2.0/agents[/{id}]: agents and whether their heartbeat is recent (admin only, as Neutron)."""
        filters = {k: v for k, v in query_args(request).items() if k in ("host", "agent_type", "binary")}
        if id is not None:
            filters["id"] = [id]
        items = await self.agents(filters) if ctx.is_admin else []
        fields = fields_of(query_args(request))
        if id is not None:
            if not items:
                raise exc.NotFound()
            return Reply(200, {"agent": strip_fields(items[0], fields)})
        return Reply(200, {"agents": [strip_fields(i, fields) for i in items]})

    async def _index(self, request: server.Request, ctx: RequestContext) -> Reply:
        root = base_url(request)
        resources = [
            {"name": c.singular, "collection": c.plural, "links": [{"rel": "self", "href": f"{root}/v2.0/{c.plural}"}]}
            for c in self.collections.values()
        ]
        return Reply(200, {"resources": resources})

    async def _extensions(self, request: server.Request, ctx: RequestContext) -> Reply:
        return Reply(200, {"extensions": list(self.extensions.values())})

    async def _extension(self, request: server.Request, ctx: RequestContext, alias: str) -> Reply:
        if alias not in self.extensions:
            raise exc.HTTPNotFound()
        return Reply(200, {"extension": self.extensions[alias]})

    def _view(self, ctx: RequestContext, collection: Collection, item: dict[str, Any], fields: list[str] | None = None) -> dict[str, Any]:
        """What ``ctx`` may see of an item (the policy's ``see`` rules), then only the ``fields`` asked for."""
        return strip_fields(policy.view(ctx, collection.singular, item), fields or [])

    async def _list(self, served: Served, request: server.Request, ctx: RequestContext) -> Reply:
        collection = served.collection
        args = query_args(request)
        query = list_query(args, collection.attributes, self.paging, lambda name: policy.can_see(ctx, collection.singular, name))
        chunked = getattr(served.handler, f"get_{collection.key}_chunk", None)
        if chunked is not None and not query.page_reverse:  # a page too: its first chunk is an ordinary reply
            return await self._streamed_list(served, request, ctx, args, query, chunked)
        try:
            items = await getattr(served.handler, f"get_{collection.key}")(ctx, query)
        except exc.MarkerNotFound:
            raise collection.not_found(**{collection.id_key: query.marker}) from None
        if query.page_reverse:
            items.reverse()
        return self._list_reply(served, request, ctx, args, query, items)

    def _list_reply(
        self, served: Served, request: server.Request, ctx: RequestContext, args: dict[str, list[str]], query: ListQuery, items: list[Any]
    ) -> Reply:
        collection, fields = served.collection, fields_of(args)
        result: dict[str, Any] = {collection.key: policy.list_view(ctx, collection.singular, fields)(items)}
        links = pagination_links(base_url(request) + request.path.decode(), args, items, query)
        if links:
            result[f"{collection.key}_links"] = links
        return Reply(200, result)

    async def _streamed_list(
        self, served: Served, request: server.Request, ctx: RequestContext, args: dict[str, list[str]], query: ListQuery, chunked: Any
    ) -> Reply:
        """A long list (issue 15): read, viewed and written ``STREAM_CHUNK`` items at a time, one transaction each.

        The bytes are those ``json_codec.dumps`` gives for the whole reply (same
        order, links last); only the framing differs (chunked,
        no Content-Length). A list that fits in its first chunk is an ordinary reply.
        """
        collection, fields = served.collection, fields_of(args)
        try:
            items, after = await chunked(ctx, query)
        except exc.MarkerNotFound:
            raise collection.not_found(**{collection.id_key: query.marker}) from None

        def done(count: int, last: list[Any]) -> bool:
            return len(last) < STREAM_CHUNK or bool(query.limit and count >= query.limit)

        if done(len(items), items):
            return self._list_reply(served, request, ctx, args, query, items)
        first_items, first_after, base = items, after, base_url(request) + request.path.decode()

        viewed = policy.list_view(ctx, collection.singular, fields)

        async def chunks() -> AsyncIterator[bytes]:
            items, after, count, sep = first_items, first_after, 0, b""
            first_id = items[0]["id"]
            yield b"{" + json_codec.dumps(collection.key) + b":["
            while True:
                count, last_id = count + len(items), items[-1]["id"]
                more = not done(count, items)
                if more:  # the next chunk is read in the store's thread while this one is viewed and encoded
                    rest = attrs.evolve(query, limit=query.limit - count) if query.limit else query
                    following = _Prefetched(ensureDeferred(chunked(ctx, rest, after)))
                yield sep + json_codec.dumps(viewed(items))[1:-1]
                sep = b","
                if not more:
                    break
                items, after = await following.result()
                if not items:
                    break
            links = paging_links(base, args, query, count, first_id, last_id)
            yield b"]" + (b"," + json_codec.dumps(collection.key + "_links") + b":" + json_codec.dumps(links) if links else b"") + b"}"

        return Reply(200, Streamed(chunks))

    async def _show(self, served: Served, request: server.Request, ctx: RequestContext, id: str) -> Reply:
        collection = served.collection
        item = await getattr(served.handler, f"get_{collection.singular}")(ctx, id.lower())
        return Reply(200, {collection.singular: self._view(ctx, collection, item, fields_of(query_args(request)))})

    async def _create(self, served: Served, request: server.Request, ctx: RequestContext) -> Reply:
        collection = served.collection
        body = read_json(request)
        items, bulk = body_rules.unwrap(body, collection.singular, collection.key, self.allow_bulk, is_create=True)
        prepared = [body_rules.prepare_create(i, collection.attributes, ctx, collection.singular) for i in items]
        create = getattr(served.handler, f"create_{collection.singular}")
        check_bulk = getattr(served.handler, f"check_bulk_{collection.singular}", None)
        if bulk and check_bulk is not None:
            await check_bulk(ctx, prepared)  # what only the whole request can refuse (duplicates within it)
        if not bulk:
            created = await create(ctx, {collection.singular: prepared[0]})
            return Reply(201, {collection.singular: self._view(ctx, collection, created)})
        create_bulk = getattr(served.handler, f"create_{collection.singular}_bulk", None)
        if create_bulk is not None and prepared:
            # One operation for the whole request (nothing to undo one by one): ports.
            done = await create_bulk(ctx, prepared)
            return Reply(201, {collection.key: [self._view(ctx, collection, i) for i in done]})
        done: list[dict[str, Any]] = []
        try:
            for values in prepared:
                done.append(await create(ctx, {collection.singular: values}))
        except BaseException:
            # Bulk creates are all or nothing: undo what went through.
            delete = getattr(served.handler, f"delete_{collection.singular}")
            for created in reversed(done):
                try:
                    await delete(RequestContext.admin(), created["id"])
                except exc.QuantumException:
                    self.log.warn("bulk rollback: could not delete {id}", id=created["id"])
            raise
        return Reply(201, {collection.key: [self._view(ctx, collection, i) for i in done]})

    async def _update(self, served: Served, request: server.Request, ctx: RequestContext, id: str) -> Reply:
        collection = served.collection
        body = read_json(request)
        items, _ = body_rules.unwrap(body, collection.singular, collection.key, False, is_create=False)
        values = body_rules.prepare_update(items[0], collection.attributes, ctx)
        updated = await getattr(served.handler, f"update_{collection.singular}")(ctx, id.lower(), {collection.singular: values})
        return Reply(200, {collection.singular: self._view(ctx, collection, updated)})

    async def _delete(self, served: Served, request: server.Request, ctx: RequestContext, id: str) -> Reply:
        await getattr(served.handler, f"delete_{served.collection.singular}")(ctx, id.lower())
        return Reply(204)
