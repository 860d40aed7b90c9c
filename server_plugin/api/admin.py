"""/admin: the controller pool's health and on-demand syncs, for operators (admin only).

``GET /admin/pool``: each controller (active or failed, last error, counts),
the profile, the sync state (running, progress, last result) and unfinished
journal entries. ``POST /admin/sync``: start a topology sync (joins one that
has not started yet); with ``?wait=1`` the reply streams one JSON line per
second with the progress, then the result.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, query_args, split_path
from server_plugin.store import mirror_ops


class AdminAPI(AsyncJSONResource):
    def __init__(self, plugin: Any, auth: Any, reactor: Any = None) -> None:
        super().__init__()
        self.plugin = plugin
        self.auth = auth
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        ctx = self.auth.context_for(request)
        if not ctx.is_admin:
            raise exc.PolicyNotAuthorized(action="admin")
        segments = split_path(request)[1:]
        method = request.method.decode("ascii", "replace")
        mirror = self.plugin.mirror
        if segments == ["pool"] and method == "GET":
            journal = await self.plugin.store.run(mirror_ops.pending, readonly=True)
            if mirror is None:
                return Reply(200, {"controllers": "none (store only)", "journal": journal})
            return Reply(200, dict(mirror.status(), journal=journal))
        if segments == ["sync"] and method == "POST":
            if mirror is None:
                raise exc.HTTPBadRequest(detail="no controllers configured")
            done = mirror.sync.request("on demand (admin API)")
            if query_args(request).get("wait", ["0"])[-1] in ("1", "true", "True"):
                await self._stream_progress(request, done)
                return Reply(0)
            done.addErrback(lambda _: None)
            return Reply(202, {"sync": mirror.sync.status()})
        if segments in (["pool"], ["sync"]):
            raise exc.HTTPMethodNotAllowed(method=method, allow="GET" if segments == ["pool"] else "POST")
        raise exc.HTTPNotFound()

    async def _stream_progress(self, request: server.Request, done: Deferred[None]) -> None:
        """Newline-delimited JSON: progress each second, then {"result": ...}."""
        sync = self.plugin.mirror.sync
        request.setResponseCode(200)
        request.setHeader("Content-Type", "application/x-ndjson")
        finished: list[Any] = []
        done.addBoth(finished.append)
        last_line = 0.0
        while not finished:
            now = self.reactor.seconds()
            if now - last_line >= 1.0:
                request.write(json.dumps({"progress": sync.progress, "running": sync.running is not None}).encode() + b"\n")
                last_line = now
            await task.deferLater(self.reactor, 0.05)
        outcome = finished[0]
        result = {"result": "ok"} if outcome is None else {"result": "failed", "error": outcome.getErrorMessage()}
        result["last"] = sync.status()["last"]
        request.write(json.dumps(result).encode() + b"\n")
        request.finish()
