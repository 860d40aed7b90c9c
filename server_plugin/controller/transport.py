"""The thin request path to the controllers: our own HTTP/1.1 connections, request heads prebuilt per server.

Every port create makes controller calls, so what one call costs the reactor
is paid per port. treq first, then Twisted's Agent (URI parsing, ``Headers``,
``Request``, ``HTTP11ClientProtocol`` and its parsers, the pool's wrappers, a
chain of Deferreds) cost about 650 Python function calls per call. Here
(``ConnectionsClient``) the head of a request (request line, ``Host``, the
common headers, basic auth) is bytes built once per server and path prefix; a
call is one write (head and JSON body) on an idle persistent connection and a
small parser of the answer (Content-Length, chunked, or up to a clean close: a
reset cuts the body and fails the call; at most ``MAX_BODY`` bytes), with
one Deferred: about 170 function calls, pool included. The timeout covers the
whole exchange (connecting, sending, the body of the answer) and aborts the
connection. Bodies from a producer (the streamed ``/topology``) go chunked
with flow control, or with their length.

Connections: per controller, idle ones are reused (the most recently used
first) and more are opened while calls are in flight (HTTP/1.1 without
pipelining: one call per connection at a time); up to
``max_connections_per_server`` stay idle, each at most ``IDLE_TIMEOUT``. A call
that fails on a reused connection before any answer came is sent once more on
a fresh connection only when Twisted's pool would have retried it (GET, HEAD,
OPTIONS, DELETE, TRACE without a body): a POST or PUT is never sent twice,
its failure fails over as any other.

``ControllerClient`` runs the same calls through an ``IAgent``: the fast
tests inject treq's in-memory agent into the pool.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    BrowserLikePolicyForHTTPS,
    PotentialDataLoss,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from server_plugin.controller.servers import ServerAddress


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once (no cooperator task, unlike ``FileBodyProducer``)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: everything was written at once."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class CachedEndpoints:
    """The Agent's endpoints (TCP, or TLS over TCP with ``tls_policy``), made once per controller: the Agent's own
    factory makes a ``HostnameEndpoint`` per call, and its IDNA check of the host cost more than the rest of the call's
    client side. An endpoint only says where to connect, so one serves every connection to its controller."""

    def __init__(self, reactor: Any, tls_policy: Any = None, connect_timeout: float | None = None) -> None:
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._connect_timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            kwargs = {} if self._connect_timeout is None else {"timeout": self._connect_timeout}
            endpoint = HostnameEndpoint(self._reactor, uri.host.decode("ascii"), uri.port, **kwargs)
            if uri.scheme == b"https":
                policy = self._tls_policy if self._tls_policy is not None else BrowserLikePolicyForHTTPS()
                endpoint = wrapClientTLS(policy.creatorForNetloc(uri.host, uri.port), endpoint)
            elif uri.scheme != b"http":
                raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
            self._endpoints[key] = endpoint
        return endpoint


@attrs.frozen
class Reply:
    status: int
    reason: str
    body: bytes


class _ServerURLs:
    """What both clients derive per controller from its address: the URL prefix of each API base and the Host value."""

    def __init__(self, use_ssl: bool) -> None:
        self._scheme = "https" if use_ssl else "http"
        self._prefixes: dict[tuple[ServerAddress, str], str] = {}

    def url(self, server: ServerAddress, path: str, base: str) -> str:
        prefix = self._prefixes.get((server, base))
        if prefix is None:
            prefix = self._prefixes[(server, base)] = f"{self._scheme}://{server.netloc}{base}"
        return prefix + path

    def _host(self, server: ServerAddress) -> bytes:
        """The Host header's value: the netloc, without the port when it is the scheme's default."""
        default_port = 443 if self._scheme == "https" else 80
        return (server.netloc if server.port != default_port else server.netloc.rsplit(":", 1)[0]).encode("ascii")


class ControllerClient(_ServerURLs):
    """HTTP calls to the controllers through one Agent (its pool holds the persistent connections)."""

    def __init__(self, agent: Any, reactor: Any, headers: dict[str, str], use_ssl: bool = False) -> None:
        """``agent``: an ``IAgent`` (``Agent`` over an ``HTTPConnectionPool``; a ``RequestTraversalAgent`` in the fast
        tests); ``headers``: what every call carries."""
        super().__init__(use_ssl)
        self._agent = agent
        self._reactor = reactor
        self._common = [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers.items()]
        self._headers: dict[ServerAddress, Headers] = {}

    def _headers_for(self, server: ServerAddress) -> Headers:
        """The headers of every call to ``server``: built once, never changed (the Agent sends them as they are)."""
        headers = self._headers.get(server)
        if headers is None:
            headers = Headers()
            for name, value in [*self._common, (b"Host", self._host(server))]:
                headers.addRawHeader(name, value)
            self._headers[server] = headers
        return headers

    def request(
        self, server: ServerAddress, method: str, path: str, base: str, body: bytes | IBodyProducer | None, timeout: float
    ) -> Deferred[Reply]:
        """One call; fails as the Agent does (connection refused, lost, TLS), or with CancelledError after ``timeout``."""
        request_target = _request_target(base + path)
        if isinstance(request_target, InvalidRequestTarget):
            return fail(request_target)
        producer = BytesProducer(body) if isinstance(body, bytes) else body
        call = Deferred.fromCoroutine(self._exchange(server, method.encode("ascii"), self.url(server, path, base), producer))
        if timeout and not call.called:
            expiry = self._reactor.callLater(timeout, call.cancel)

            def done(result: Any) -> Any:
                if expiry.active():
                    expiry.cancel()
                return result

            call.addBoth(done)
        return call

    def close(self) -> Deferred[None]:
        """Nothing of its own to close (the injected agent's connections are its owner's)."""
        return succeed(None)

    async def _exchange(self, server: ServerAddress, method: bytes, url: str, producer: IBodyProducer | None) -> Reply:
        response = await self._agent.request(method, url.encode("ascii"), self._headers_for(server), producer)
        content = await _read_body(response)
        phrase = response.phrase
        return Reply(response.code, phrase.decode("latin-1") if isinstance(phrase, bytes) else str(phrase), content)


class _Collector(Protocol):
    """A response's body, whole. A body that ends with its connection, without a length, is whole too (as treq took it)."""

    def __init__(self, finished: Deferred[bytes]) -> None:
        self.finished = finished
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


def _read_body(response: Any) -> Deferred[bytes]:
    """The body of ``response``; cancelling aborts the connection (a call that timed out while the body came)."""

    def abort(_: Deferred[bytes]) -> None:
        abort_connection = getattr(collector.transport, "abortConnection", None)
        if abort_connection is not None:
            abort_connection()

    finished: Deferred[bytes] = Deferred(abort)
    collector = _Collector(finished)
    response.deliverBody(collector)
    return finished


# -- the thin path: our own HTTP/1.1 client over persistent connections


class BadResponse(ValueError):
    """An answer that is not HTTP/1.x as we read it (the connection is closed)."""


class InvalidRequestTarget(ValueError):
    """A path that cannot go into a request line as it is (a space, CR/LF, a control or non-ASCII character): it is
    refused before anything is sent, as Twisted's Agent refused it; the caller's mistake, not the controller's."""


_UNSAFE_TARGET = re.compile(rb"[\x00-\x20\x7f]")  # (what would end the request line or smuggle a header)


def _request_target(text: str) -> bytes | InvalidRequestTarget:
    """``text`` as a request line's target, or why it cannot be one (ids in paths are percent-encoded by
    ``mapping.segment``: this is the last guard, so that nothing a client sent can end the line or add a header)."""
    if text.isascii():
        target = text.encode("ascii")
        if _UNSAFE_TARGET.search(target) is None:
            return target
    return InvalidRequestTarget(f"request path {text[:300]!r} has a space, control or non-ASCII character")


_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})  # retried as Twisted's pool retries them
_MAX_HEAD = 65536  # a status line and headers longer than this are garbage
MAX_BODY = 64 * 1024 * 1024  # an answer's body larger than this is refused (a /topology or network list answer included)
IDLE_TIMEOUT = 240.0  # an idle connection is closed after this long (Twisted's pool's cachedConnectionTimeout)


class _Call:
    """One request on its way: the bytes to send, where it is (connecting, on a connection) and its result."""

    __slots__ = ("deferred", "method", "data", "producer", "retry", "connecting", "connection", "expiry", "cancelled")

    def __init__(self, method: bytes, data: bytes, producer: IBodyProducer | None, has_body: bool = False) -> None:
        self.deferred: Deferred[Reply] = Deferred(self._cancelled)
        self.method = method
        self.data = data  # the head, and the body when it is bytes
        self.producer = producer
        # Twisted's pool retries on a fresh connection a call that failed on a reused one before any answer came,
        # only for a method without side effects and without a body: a POST or PUT (or a DELETE with a body) is
        # never sent twice.
        self.retry = not has_body and producer is None and method in _IDEMPOTENT
        self.connecting: Deferred[Any] | None = None
        self.connection: _Connection | None = None
        self.expiry: Any = None
        self.cancelled = False

    def _cancelled(self, _: Deferred[Reply]) -> None:
        """Timed out (or cancelled): stop connecting, or abort the connection (its answer may never come); the
        call fails with CancelledError, whatever the connection attempt's own cancellation says."""
        self.cancelled = True
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()  # (cancelled by its caller: its timeout must not stay scheduled)
        if self.connecting is not None:
            self.connecting.cancel()
        elif self.connection is not None:
            self.connection.abort()

    def finish(self, reply: Reply) -> None:
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.deferred.callback(reply)

    def fail(self, failure: Failure) -> None:
        if not self.deferred.called and not self.cancelled:
            if self.expiry is not None and self.expiry.active():
                self.expiry.cancel()
            self.deferred.errback(failure)


# Parser states of a connection.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(7)


class _BodyConsumer:
    """What a streaming body producer writes to: the connection, each write as one chunk (or as it is, with a length)."""

    def __init__(self, transport: Any, chunked: bool) -> None:
        self.transport = transport
        self.chunked = chunked
        self.written = 0

    def write(self, data: bytes) -> None:
        if data:
            self.written += len(data)
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()


class _Connection(Protocol):
    """One persistent HTTP/1.1 connection to a controller, one call at a time (no pipelining).

    The answer is read with its Content-Length, chunked, or up to the connection's close (then the connection is not
    reused); 1xx answers are skipped. Anything that does not parse fails the call and closes the connection."""

    def __init__(self, owner: _ServerConnections) -> None:
        self.owner = owner
        self.call: _Call | None = None
        self.state = _IDLE
        self.buffer = b""
        self.reused = False  # it carried a call before this one
        self.producing = False  # a streaming body is being written
        self.keep = False  # the answer allows another call after it
        self.idle_since = 0.0
        self.status = 0
        self.reason = b""
        self.remaining = 0
        self.size = 0  # bytes of the answer's body so far (chunked or up to the close), against ``owner.max_body``
        self.parts: list[bytes] = []
        self.received = False  # any byte of an answer to the current call
        self.closed: Deferred[None] | None = None  # fired once the connection is gone (close() waits for it)

    # -- sending
    def start(self, call: _Call) -> None:
        self.call = call
        call.connection = self
        call.connecting = None
        self.state = _HEAD
        self.received = False
        if call.producer is None:
            self.transport.write(call.data)
            return
        producer = call.producer
        chunked = producer.length is UNKNOWN_LENGTH
        self.transport.write(call.data)
        consumer = _BodyConsumer(self.transport, chunked)
        self.producing = True
        self.transport.registerProducer(producer, True)
        produced = maybeDeferred(producer.startProducing, consumer)
        produced.addCallbacks(self._produced, self._production_failed, (call, consumer), None, (call,))

    def _produced(self, _: Any, call: _Call, consumer: _BodyConsumer) -> None:
        if self.call is not call or not self.producing:
            return  # the call ended (answered early, timed out, connection lost): the rest is not sent
        self.producing = False
        self.transport.unregisterProducer()
        length = call.producer.length if call.producer is not None else UNKNOWN_LENGTH
        if consumer.chunked:
            self.transport.write(b"0\r\n\r\n")
        elif consumer.written != length:
            self._fail(Failure(RequestTransmissionFailed([Failure(ValueError(f"body of {consumer.written} bytes, {length} announced"))])))

    def _production_failed(self, failure: Failure, call: _Call) -> None:
        if self.call is not call or not self.producing:
            return None  # (stopped because the call ended: nothing to report)
        self.producing = False
        self._fail(Failure(RequestTransmissionFailed([failure])))
        return None

    def abort(self) -> None:
        self.keep = False
        if self.transport is not None:
            self.transport.abortConnection()

    # -- receiving
    def dataReceived(self, data: bytes) -> None:
        if self.call is None:
            # Bytes nobody asked for, on an idle connection: it is not fit for the next call.
            self.owner.forget(self)
            self.transport.abortConnection()
            return
        self.received = True
        buffer = self.buffer + data if self.buffer else data
        state = self.state
        try:
            while True:
                if state == _LENGTH:
                    if len(buffer) < self.remaining:
                        self.parts.append(buffer)
                        self.remaining -= len(buffer)
                        buffer = b""
                        break
                    self.parts.append(buffer[: self.remaining])
                    buffer = buffer[self.remaining :]
                    self._answered(buffer)
                    return
                if state == _HEAD:
                    # The head ends with an empty line; its lines may end with a bare LF (as Twisted's parser took them).
                    end = buffer.find(b"\n\r\n")
                    bare = buffer.find(b"\n\n", 0, end + 1 if end >= 0 else len(buffer))
                    if bare >= 0:
                        head, buffer = buffer[:bare], buffer[bare + 2 :]
                    elif end >= 0:
                        head, buffer = buffer[:end], buffer[end + 3 :]
                    else:
                        if len(buffer) > _MAX_HEAD:
                            raise BadResponse("status line and headers too long", buffer[:80])
                        break
                    state = self._head(head)
                    if state == _IDLE:
                        self._answered(buffer)
                        return
                elif state == _CHUNK_SIZE:
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        if len(buffer) > 1024:
                            raise BadResponse("chunk size line too long", buffer[:80])
                        break
                    size_text = buffer[:end].split(b";", 1)[0].strip()
                    if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                        raise BadResponse("bad chunk size", buffer[:end])
                    self.remaining = int(size_text, 16)
                    self.size += self.remaining
                    if self.size > self.owner.max_body:
                        raise BadResponse("answer too large", self.size)
                    buffer = buffer[end + 2 :]
                    state = _CHUNK_DATA if self.remaining else _TRAILERS
                elif state == _CHUNK_DATA:
                    if self.remaining:  # (taken as it comes: a large chunk is not copied again with each packet)
                        if len(buffer) <= self.remaining:
                            self.parts.append(buffer)
                            self.remaining -= len(buffer)
                            buffer = b""
                            break
                        self.parts.append(buffer[: self.remaining])
                        buffer = buffer[self.remaining :]
                        self.remaining = 0
                    if len(buffer) < 2:
                        break
                    if buffer[:2] != b"\r\n":
                        raise BadResponse("chunk not ended by CRLF", buffer[:2])
                    buffer = buffer[2:]
                    state = _CHUNK_SIZE
                elif state == _TRAILERS:
                    end = buffer.find(b"\n")
                    if end < 0:
                        if len(buffer) > _MAX_HEAD:
                            raise BadResponse("trailers too long", buffer[:80])
                        break
                    line, buffer = buffer[:end], buffer[end + 1 :]
                    if not line or line == b"\r":
                        self._answered(buffer)
                        return
                else:  # _UNTIL_CLOSE
                    self.size += len(buffer)
                    if self.size > self.owner.max_body:
                        raise BadResponse("answer too large", self.size)
                    self.parts.append(buffer)
                    buffer = b""
                    break
        except BadResponse as e:
            self.buffer = b""
            self._fail(Failure(ResponseFailed([Failure(e)])))
            return
        self.state = state
        self.buffer = buffer

    def _head(self, head: bytes) -> int:
        """Parse a status line and headers; the state the body is read in (``_IDLE``: no body).

        Transfer-Encoding as RFC 9112 6.1/6.3 says: the codings of every such header, in order; chunked only when the
        last is "chunked", else the body ends with the close; it wins over a Content-Length, and an answer with both
        ends its connection (the two framings may disagree, bytes of one would be read as the next answer)."""
        lines = head.rstrip(b"\r").replace(b"\r\n", b"\n").split(b"\n")  # (CRLF or bare LF line ends)
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise BadResponse("not an HTTP/1.x status line", lines[0][:80])
        status = int(parts[1])
        length: int | None = None
        codings: list[bytes] = []
        close = parts[0] != b"HTTP/1.1"  # (an HTTP/1.0 answer ends its connection, as Twisted takes it)
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadResponse("header without a colon", line[:80])
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise BadResponse("bad Content-Length", value[:80])
                length = int(value)
            elif name == b"transfer-encoding":
                codings.extend(c for c in (coding.strip().lower() for coding in value.split(b",")) if c)
            elif name == b"connection":
                close = close or b"close" in value.lower()
        if 100 <= status < 200:
            return _HEAD  # an interim answer (100 Continue): the real one follows
        self.status = status
        self.reason = parts[2] if len(parts) > 2 else b""
        self.parts = []
        self.keep = self.owner.persistent and not close
        self.size = 0
        if codings and length is not None:
            self.keep = False
        if status in (204, 304) or self.call is not None and self.call.method == b"HEAD":
            return _IDLE
        if codings:
            if codings[-1] == b"chunked":
                return _CHUNK_SIZE
            self.keep = False
            return _UNTIL_CLOSE
        if length is not None:
            if length > self.owner.max_body:
                raise BadResponse("answer too large", length)
            self.remaining = length
            return _LENGTH if length else _IDLE
        self.keep = False
        return _UNTIL_CLOSE

    def _answered(self, rest: bytes) -> None:
        """A whole answer: the connection goes back to the pool (or is closed), then the call has its reply."""
        call = self.call
        assert call is not None
        self.call = None
        self.state = _IDLE
        self.buffer = b""
        call.connection = None
        reply = Reply(self.status, self.reason.decode("latin-1"), b"".join(self.parts))
        self.parts = []
        abort = False
        if self.producing:
            # Answered before its body was all sent: stop sending; the connection cannot go on, and is aborted (a
            # clean close would first flush what is buffered of the body, and the server may read it as a request).
            self.producing = False
            self.keep = False
            abort = True
            self.transport.unregisterProducer()
            if call.producer is not None:
                call.producer.stopProducing()
        if abort:
            self.transport.abortConnection()
        elif rest or not self.keep:
            self.transport.loseConnection()  # (bytes after the answer: garbage)
        else:
            self.reused = True
            self.owner.release(self)
        if not call.deferred.called:
            call.finish(reply)

    def _fail(self, failure: Failure) -> None:
        call = self.call
        self.call = None
        self.state = _IDLE
        self.keep = False
        if self.producing and call is not None and call.producer is not None:
            self.producing = False
            call.producer.stopProducing()
        if self.transport is not None:
            self.transport.abortConnection()
        if call is not None:
            call.connection = None
            call.fail(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.owner.forget(self)
        if self.closed is not None:
            self.closed.callback(None)
        call = self.call
        if call is None:
            return
        self.call = None
        call.connection = None
        producing, self.producing = self.producing, False
        if self.state == _UNTIL_CLOSE:
            # No length: a clean close ends the body (as Twisted and treq take it); a reset or any other loss cut it.
            self.state = _IDLE
            self.buffer = b""
            if producing and call.producer is not None:
                call.producer.stopProducing()
            if not call.deferred.called:
                if reason.check(ConnectionDone):
                    call.finish(Reply(self.status, self.reason.decode("latin-1"), b"".join(self.parts)))
                else:
                    call.fail(Failure(ResponseFailed([reason, Failure(PotentialDataLoss())])))
            self.parts = []
            return
        if producing and call.producer is not None:
            call.producer.stopProducing()
        if call.deferred.called:
            return  # timed out: it was aborted
        if not self.received:
            if self.reused and call.retry:
                # The controller closed the idle connection as the call went out: no answer can have come, and the
                # call may be sent again (no side effect, no body): once, on a fresh connection.
                call.retry = False
                self.owner.connect(call)
                return
            error: Exception = (RequestTransmissionFailed if producing else ResponseNeverReceived)([reason])
        else:
            error = ResponseFailed([reason])
        call.fail(Failure(error))


class _ConnectionFactory(Factory):
    def __init__(self, owner: _ServerConnections) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self.owner)


class _ServerConnections:
    """The connections to one controller: idle ones reused (the most recently used first), more opened while calls are
    in flight; up to ``max_idle`` kept idle, each for at most ``IDLE_TIMEOUT`` seconds."""

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint, max_idle: int, persistent: bool, max_body: int = MAX_BODY) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.max_idle = max_idle
        self.persistent = persistent
        self.max_body = max_body
        self.idle: list[_Connection] = []
        self.factory = _ConnectionFactory(self)
        self.closed = False
        self._sweep: Any = None

    def send(self, call: _Call) -> None:
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is not None and not connection.transport.disconnecting:
                connection.start(call)
                return
        self.connect(call)

    def connect(self, call: _Call) -> None:
        connecting = call.connecting = self.endpoint.connect(self.factory)
        connecting.addCallbacks(self._connected, self._not_connected, (call,), None, (call,))

    def _connected(self, connection: _Connection, call: _Call) -> None:
        call.connecting = None
        if call.deferred.called:  # it timed out meanwhile; the connection serves the next call
            self.release(connection)
        else:
            connection.start(call)

    def _not_connected(self, failure: Failure, call: _Call) -> None:
        call.connecting = None
        call.fail(failure)  # (refused, unreachable, timed out connecting; nothing if the call was cancelled)

    def release(self, connection: _Connection) -> None:
        if self.closed or not self.persistent or self.max_idle <= 0:
            connection.transport.loseConnection()
            return
        if len(self.idle) >= self.max_idle:
            self.idle.pop(0).transport.loseConnection()  # the one idle longest
        connection.idle_since = self.reactor.seconds()
        self.idle.append(connection)
        if self._sweep is None:
            self._sweep = self.reactor.callLater(IDLE_TIMEOUT, self._close_stale)

    def _close_stale(self) -> None:
        self._sweep = None
        horizon = self.reactor.seconds() - IDLE_TIMEOUT
        while self.idle and self.idle[0].idle_since <= horizon:
            self.idle.pop(0).transport.loseConnection()
        if self.idle:
            self._sweep = self.reactor.callLater(self.idle[0].idle_since + IDLE_TIMEOUT - self.reactor.seconds(), self._close_stale)

    def forget(self, connection: _Connection) -> None:
        """``connection`` is gone (closed by either side)."""
        if connection.call is None and connection in self.idle:
            self.idle.remove(connection)

    def close(self) -> list[Deferred[None]]:
        """Close the idle connections (fired when they are gone); the ones carrying a call are closed when it ends."""
        self.closed = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        idle, self.idle = self.idle, []
        gone = []
        for connection in idle:
            connection.closed = Deferred()
            gone.append(connection.closed)
            connection.transport.abortConnection()
        return gone


class ConnectionsClient(_ServerURLs):
    """HTTP calls to the controllers over our own persistent connections: the request head is prebuilt per server
    and path prefix, a call is one write and a parse of the answer (``ControllerClient`` runs the same calls
    through an Agent: an injected one in the fast tests)."""

    def __init__(
        self,
        reactor: Any,
        headers: dict[str, str],
        use_ssl: bool = False,
        tls_policy: Any = None,
        connect_timeout: float | None = None,
        max_idle: int = 64,
        persistent: bool = True,
        max_body: int = MAX_BODY,
    ) -> None:
        """``max_body``: the largest answer body taken (a larger one fails the call with BadResponse, connection
        aborted)."""
        super().__init__(use_ssl)
        self._reactor = reactor
        self._max_body = max_body
        self._common = b"".join(b"%s: %s\r\n" % (name.encode("ascii"), value.encode("latin-1")) for name, value in headers.items())
        self._endpoints = CachedEndpoints(reactor, tls_policy, connect_timeout)
        self._max_idle = max_idle
        self._persistent = persistent
        self._servers: dict[ServerAddress, _ServerConnections] = {}
        self._heads: dict[tuple[ServerAddress, str], tuple[_ServerConnections, bytes]] = {}

    def _target(self, server: ServerAddress, base: str) -> tuple[_ServerConnections, bytes]:
        """The server's connections and the headers of every call to it (``Host`` and the common ones), built once."""
        connections = self._servers.get(server)
        if connections is None:
            uri = URI.fromBytes(self.url(server, "", "").encode("ascii"))
            endpoint = self._endpoints.endpointForURI(uri)
            connections = self._servers[server] = _ServerConnections(
                self._reactor, endpoint, self._max_idle, self._persistent, self._max_body
            )
        headers = b"Host: %s\r\n%s" % (self._host(server), self._common)
        if not self._persistent:
            headers = b"Connection: close\r\n" + headers
        target = self._heads[(server, base)] = (connections, headers)
        return target

    def request(
        self, server: ServerAddress, method: str, path: str, base: str, body: bytes | IBodyProducer | None, timeout: float
    ) -> Deferred[Reply]:
        """One call; fails as the Agent does (connection refused, lost, TLS), or with CancelledError after ``timeout``;
        with InvalidRequestTarget, sending nothing, when ``base + path`` cannot go into a request line."""
        request_target = _request_target(base + path)
        if isinstance(request_target, InvalidRequestTarget):
            return fail(request_target)
        target = self._heads.get((server, base)) or self._target(server, base)
        connections, headers = target
        verb = method.encode("ascii")
        line = b"%s %s HTTP/1.1\r\n" % (verb, request_target)
        if body is None:
            call = _Call(verb, line + headers + b"\r\n", None)
        elif isinstance(body, bytes):
            call = _Call(verb, b"%s%sContent-Length: %d\r\n\r\n%s" % (line, headers, len(body), body), None, True)
        else:
            framing = b"Transfer-Encoding: chunked\r\n" if body.length is UNKNOWN_LENGTH else b"Content-Length: %d\r\n" % body.length
            call = _Call(verb, line + headers + framing + b"\r\n", body)
        if timeout:
            call.expiry = self._reactor.callLater(timeout, call.deferred.cancel)
        connections.send(call)
        return call.deferred

    def close(self) -> Deferred[None]:
        """Close the idle connections (fires once they are closed); a connection carrying a call is closed when its
        answer has come, as Twisted's pool left them."""
        gone = [closed for connections in self._servers.values() for closed in connections.close()]
        return gatherResults(gone).addCallback(lambda _: None)
