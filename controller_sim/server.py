"""The twisted.web side: one leaf resource that routes ``/_sim/`` to the admin API and
everything else through faults, latency and authentication to the controller profile.

The order for a controller request is that of a real network path: the request is recorded,
then the fault rules decide (latency first, then drop/hang/status), then HTTP Basic
authentication is checked, then the profile answers. A client that disconnects while its
request is delayed or hung cancels the wait; a request that reached the profile is always
carried through (a ``/topology`` the client gave up on is still applied, as a real
controller would), only its answer is not written.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from controller_sim import ADMIN_PREFIX
from controller_sim.admin import AdminAPI
from controller_sim.replies import Reply, write_reply
from controller_sim.request import ControllerRequest
from controller_sim.simulator import Simulator
from restproxy_common.web import WatchedRequest, client_gone, on_finish

REALM = "controller-sim"


class _Watch:
    """Tracks one request's connection so that waits end when the client goes away."""

    def __init__(self, request: server.Request) -> None:
        self.gone = client_gone(request)
        self._waiting: Deferred[Any] | None = None
        on_finish(request, self._ended)  # (the request's own Deferred: none of ours per request)

    def _ended(self, failure: Failure | None) -> None:
        if failure is None:
            return  # answered
        self.gone = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def wait(self, d: Deferred[Any]) -> None:
        if self.gone:
            d.cancel()
            raise CancelledError()
        self._waiting = d
        try:
            await d
        finally:
            self._waiting = None


def _abort(request: server.Request) -> None:
    """Close the connection at once, without an answer."""
    transport = getattr(request.channel, "transport", None)
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    (abort or transport.loseConnection)()


class SimResource(resource.Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, sim: Simulator, reactor: Any = None) -> None:
        super().__init__()
        self.sim = sim
        self.admin = AdminAPI(sim)
        self.reactor = reactor or global_reactor

    def render(self, request: server.Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            d = Deferred.fromCoroutine(self._admin(request, path))
        else:
            d = Deferred.fromCoroutine(self._controller(request, path))
        d.addErrback(self._crashed, request)
        return server.NOT_DONE_YET

    def _crashed(self, failure: Failure, request: server.Request) -> None:
        self.log.failure("unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri)
        write_reply(request, Reply(500, {"error": "internal error in the simulator"}))

    @staticmethod
    def _body(request: server.Request) -> bytes:
        if request.content is None:
            return b""
        request.content.seek(0)
        return request.content.read()

    async def _admin(self, request: server.Request, path: str) -> None:
        segments = [s for s in path[len(ADMIN_PREFIX) :].split("/") if s]
        query = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs] for k, vs in (request.args or {}).items()}
        reply = self.admin.handle(request.method.decode("ascii", "replace"), segments, query, self._body(request))
        write_reply(request, reply)

    def _authorized(self, request: server.Request) -> bool:
        auth = self.sim.config.auth
        if auth is None or self.sim.controller.profile == "floodlight":
            return True  # Floodlight has no authentication: it ignores the Authorization header
        expected = b"Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
        got = request.getHeader(b"authorization")
        return got is not None and hmac.compare_digest(got, expected)

    async def _controller(self, request: server.Request, path: str) -> None:
        sim = self.sim
        method = request.method.decode("ascii", "replace")
        body = self._body(request)
        query = request.uri.decode("utf-8", "replace").partition("?")[2]
        entry = sim.recorder.start(method, path, query, request.requestHeaders, body)
        watch = _Watch(request)
        decision = sim.faults.decide(method, path)
        rule = decision.rule
        try:
            latency = sim.config.latency_ms + decision.latency_ms
            if latency > 0:
                await watch.wait(deferLater(self.reactor, latency / 1000.0, lambda: None))
            if rule is not None and rule.action == "drop":
                sim.recorder.finish(entry, None, "drop")
                _abort(request)
                return
            if rule is not None and rule.action == "hang":
                entry["fault"] = "hang"
                await watch.wait(sim.faults.wait_released(rule))
        except CancelledError:
            sim.recorder.finish(entry, None, entry["fault"])
            return
        if rule is not None and rule.action == "status":
            assert rule.status is not None
            self._send(request, entry, Reply(rule.status, rule.reply_body(), dict(rule.headers)), "status")
            return
        if not self._authorized(request):
            reply = Reply(401, {"error": "authentication required"}, {"WWW-Authenticate": f'Basic realm="{REALM}"'})
            self._send(request, entry, reply)
            return
        content_type = ", ".join(v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"content-type", ()))
        reply = await sim.controller.handle(ControllerRequest(method, path, {"content-type": content_type}, body))
        self._send(request, entry, reply)

    def _send(self, request: server.Request, entry: dict[str, Any], reply: Reply, fault: str | None = None) -> None:
        sent = write_reply(request, reply)
        self.sim.recorder.finish(entry, reply.status if sent else None, fault)


class QuietSite(server.Site):
    """No access log: every request is in ``/_sim/requests`` already, and a benchmark's
    100,000 requests should not cost 100,000 log lines."""

    requestFactory = WatchedRequest

    def log(self, request: server.Request) -> None:
        pass


def make_site(sim: Simulator, reactor: Any = None) -> server.Site:
    site = QuietSite(SimResource(sim, reactor))
    site.displayTracebacks = False
    site.noisy = False
    return site
