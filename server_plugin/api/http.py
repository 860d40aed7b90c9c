"""twisted.web plumbing shared by the API versions.

``AsyncJSONResource`` runs one coroutine per request, writes its JSON reply,
maps Quantum exceptions to the version's fault body, and cancels the work if
the client goes away. ``LimitedRequest`` stops reading oversized bodies.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http, resource, server
from zope.interface import implementer

from restproxy_common.web import WatchedRequest, client_gone, on_finish
from server_plugin import exceptions as exc
from server_plugin.api import json_codec
from server_plugin.validators import unencodable

_log = Logger()
DEFAULT_MAX_BODY = 114688  # oslo.service's max_request_body_size


@attrs.frozen
class Reply:
    status: int
    body: Any = None  # None -> empty body (204); a Streamed -> written chunk by chunk
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Streamed:
    """A JSON body written as it is produced (chunked encoding): ``chunks()`` yields its bytes in order.

    The reply's status and headers are committed before the first chunk, so a
    handler produces whatever may fail with a client's error (a 404 marker)
    before it answers with a ``Streamed``. A failure after that cuts the
    connection: the client sees a truncated body, never a valid-looking one.
    """

    chunks: Callable[[], AsyncIterator[bytes]]


@implementer(IPushProducer)
class _Pauser:
    """The transport's back-pressure for a streamed body: ``paused`` is a Deferred while its buffer is full."""

    def __init__(self) -> None:
        self.paused: Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self.paused is None:
            self.paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()


async def _pump(request: server.Request, body: Streamed) -> None:
    pauser = _Pauser()
    request.registerProducer(pauser, True)
    try:
        async for data in body.chunks():
            if pauser.stopped or request.finished or client_gone(request):
                return
            request.write(data)
            if pauser.paused is not None:
                await pauser.paused
    except Exception:
        _log.failure("streamed reply to {method} {uri} failed; connection cut", method=request.method, uri=request.uri)
        transport = getattr(request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()
        return
    finally:
        if request.producer is not None and request.channel is not None:
            request.unregisterProducer()
    if not (request.finished or client_gone(request)):
        request.finish()


class LimitedRequest(WatchedRequest):
    """A request that keeps at most ``max_body`` bytes of content (and knows when its client left)."""

    max_body = DEFAULT_MAX_BODY
    too_large = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started_at = time.monotonic()  # the access log's elapsed time

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self.too_large = True
        super().gotLength(length if not self.too_large else 0)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        if self.content.tell() + len(data) > self.max_body:
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


def limited_request_factory(max_body: int) -> type[LimitedRequest]:
    return type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})


def read_json(request: server.Request, required: bool = True) -> Any:
    """The request's JSON body; 400 for an empty or malformed one."""
    if getattr(request, "too_large", False):
        raise exc.HTTPRequestEntityTooLarge()
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        if required:
            raise exc.HTTPBadRequest(detail="Resource body required")
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack ("[[[[..."), which
        # fits well within the size limit.
        raise exc.HTTPBadRequest(detail="Malformed request body: the body is not valid JSON") from None
    if not raw.isascii() or b"\\u" in raw:
        # Only such a body can hold a lone surrogate: in ASCII bytes without a \u escape every
        # character is its own byte (a surrogate is never ASCII, in UTF-8, UTF-16 or UTF-32).
        check_text(body)
    return body


def check_text(body: Any) -> None:
    """Every string of a parsed body, keys included, must be storable text: no lone surrogate anywhere.

    Checked once here so that no attribute, nested dict (binding:profile) or bulk
    item can carry one to a database that cannot encode it. (NUL is refused per
    attribute, with the attribute's name; nested values are stored as escaped JSON.)
    """
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts = [item]
        elif isinstance(item, dict):
            texts = [k for k in item if isinstance(k, str)]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            problem = unencodable(text.replace("\x00", ""))
            if problem:
                raise exc.HTTPBadRequest(detail=f"Malformed request body: a string {problem}")


def header(request: server.Request, name: str) -> str | None:
    """A request header as text, or None if absent. Every header the API reads comes through here.

    The value must be UTF-8 (ASCII in practice): anything else is a 400, never
    a UnicodeDecodeError. Surrounding whitespace is dropped; empty is absent.
    """
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    try:
        value = values[-1].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise exc.HTTPBadRequest(detail=f"Invalid {name} header: not UTF-8") from None
    problem = unencodable(value)
    if problem:
        raise exc.HTTPBadRequest(detail=f"Invalid {name} header: it {problem}")
    return value or None


def split_path(request: server.Request) -> list[str]:
    """Path segments, without empty ones and with a ``.json`` suffix removed."""
    path = request.path.decode("utf-8", "replace")
    if path.endswith(".json"):
        path = path[: -len(".json")]
    return [seg for seg in path.split("/") if seg]


def query_args(request: server.Request) -> dict[str, list[str]]:
    args: dict[str, list[str]] = {}
    for key, values in (request.args or {}).items():
        args[key.decode("utf-8", "replace")] = [v.decode("utf-8", "replace") for v in values]
    return args


Handler = Callable[[server.Request], Any]


class AsyncJSONResource(resource.Resource):
    """Leaf resource: ``handle(request)`` is a coroutine returning a Reply."""

    isLeaf = True
    log = Logger()

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        raise NotImplementedError

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        raise NotImplementedError

    async def handle(self, request: server.Request) -> Reply:
        raise NotImplementedError

    def render(self, request: server.Request) -> Any:
        d = Deferred.fromCoroutine(self._respond(request))
        on_finish(request, lambda lost: d.cancel() if lost is not None else None)
        return server.NOT_DONE_YET

    async def _respond(self, request: server.Request) -> None:
        try:
            reply = await self.handle(request)
        except CancelledError:
            return
        except exc.QuantumException as e:
            if e.status >= 500 and not getattr(e, "logged", False):  # a database outage is logged once, by the store
                self.log.error("{method} {uri}: {error}", method=request.method, uri=request.uri, error=e.msg)
            status, body = self.fault(request, e)
            headers = dict(getattr(e, "headers", None) or {})  # e.g. WWW-Authenticate of a Keystone 401
            if "allow" in e.kwargs:
                headers["Allow"] = e.kwargs["allow"]
            reply = Reply(status, body, headers)
        except Exception:
            self.log.failure("unhandled error in {method} {uri}", method=request.method, uri=request.uri)
            status, body = self.internal_error(request)
            reply = Reply(status, body)
        write_reply(request, reply)


class MethodGuard(resource.Resource):
    """Wraps a plain twisted.web leaf so that a method it lacks is a JSON 405, not Twisted's HTML 405/501 page."""

    isLeaf = True

    def __init__(self, inner: resource.Resource, fault: Callable[[exc.QuantumException], tuple[int, Any]]) -> None:
        super().__init__()
        self.inner = inner
        self.fault = fault

    def render(self, request: server.Request) -> Any:
        try:
            return self.inner.render(request)
        except resource.UnsupportedMethod as e:
            allowed = ", ".join(m.decode("ascii", "replace") for m in e.allowedMethods)
            error = exc.HTTPMethodNotAllowed(method=request.method.decode("ascii", "replace"), allow=allowed)
            status, body = self.fault(error)
            write_reply(request, Reply(status, body, {"Allow": allowed}))
            return server.NOT_DONE_YET


def write_reply(request: server.Request, reply: Reply) -> None:
    if request.finished or client_gone(request):
        return  # a reply to a client that went away is dropped
    request.setResponseCode(reply.status, http.RESPONSES.get(reply.status, b"Unknown"))
    for name, value in reply.headers.items():
        request.setHeader(name, value)
    if reply.body is None or reply.status == 204:
        request.responseHeaders.removeHeader("content-type")
        request.finish()
        return
    if isinstance(reply.body, Streamed):
        request.setHeader("Content-Type", "application/json")
        ensureDeferred(_pump(request, reply.body))
        return
    if isinstance(reply.body, bytes):  # already encoded (e.g. the Prometheus text); headers say what it is
        data = reply.body
    else:
        data = json_codec.dumps(reply.body)
        request.setHeader("Content-Type", "application/json")
    request.setHeader("Content-Length", str(len(data)))
    request.write(data)
    request.finish()
