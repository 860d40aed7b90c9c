"""/admin: the controller pool's health and on-demand syncs, for operators (admin only).

``GET /admin/pool``: each controller (active or failed, last error, counts),
the profile, the sync state (running, progress, last result) and unfinished
journal entries. ``POST /admin/sync``: start a topology sync (joins one that
has not started yet); with ``?wait=1`` the reply streams one JSON line per
second with the progress, then the result.

It sees only what it shows: the journal reader, the mirror's status and its
sync (both None without controllers), and a clock for the progress lines.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin.api.auth import request_context
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, query_args, split_path
from server_plugin.api.routing import Routes
from server_plugin.controller.sync import TopologySync

PROGRESS_INTERVAL = 1.0  # seconds between two progress lines of POST /admin/sync?wait=1


class AdminAPI(AsyncJSONResource):
    def __init__(
        self,
        auth: Any,
        journal: Callable[[], Awaitable[list[dict[str, Any]]]],
        clock: IReactorTime,
        mirror_status: Callable[[], dict[str, Any]] | None = None,
        sync: TopologySync | None = None,
    ) -> None:
        super().__init__()
        self.auth = auth
        self.journal = journal
        self.clock = clock
        self.mirror_status = mirror_status
        self.sync = sync
        self.routes = Routes().add("pool", GET=self._pool).add("sync", POST=self._sync)

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        ctx = await request_context(self.auth, request)
        if not ctx.is_admin:
            raise exc.PolicyNotAuthorized(action="admin")
        route = self.routes.match(request.method.decode("ascii", "replace"), split_path(request)[1:])
        result: Reply = await route.handler(request)
        return result

    async def _pool(self, request: server.Request) -> Reply:
        journal = await self.journal()
        if self.sync is not None:
            await self.sync.refresh()  # the sync may run in another worker or server: the database knows
        if self.mirror_status is None:
            return Reply(200, {"controllers": "none (store only)", "journal": journal})
        return Reply(200, dict(self.mirror_status(), journal=journal))

    async def _sync(self, request: server.Request) -> Reply:
        if self.sync is None:
            raise exc.HTTPBadRequest(detail="no controllers configured")
        done = self.sync.request("on demand (admin API)")
        if query_args(request).get("wait", ["0"])[-1] in ("1", "true", "True"):
            await self._stream_progress(request, self.sync, done)
            return Reply(0)
        done.addErrback(lambda _: None)
        return Reply(202, {"sync": self.sync.status()})

    async def _stream_progress(self, request: server.Request, sync: TopologySync, done: Deferred[None]) -> None:
        """Newline-delimited JSON: the progress at once and then each second, then {"result": ...}."""
        request.setResponseCode(200)
        request.setHeader("Content-Type", "application/x-ndjson")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the operator went away: stop writing

        def progress() -> None:
            if not gone:
                status = sync.status()  # the shared part as last read: a run in another process shows its progress
                request.write(json.dumps({"progress": status["progress"], "running": status["running"]}).encode() + b"\n")
                sync.refresh().addErrback(lambda _: None)

        ticks = task.LoopingCall(progress)
        ticks.clock = self.clock
        ticks.start(PROGRESS_INTERVAL, now=True)
        outcome: Failure | None = None
        try:
            await done
        except CancelledError:
            raise  # the request was cancelled (its connection closed): nothing more to write
        except Exception:
            outcome = Failure()
        finally:
            ticks.stop()
        if gone:
            return
        result = {"result": "ok"} if outcome is None else {"result": "failed", "error": outcome.getErrorMessage()}
        result["last"] = sync.status()["last"]
        request.write(json.dumps(result).encode() + b"\n")
        request.finish()
