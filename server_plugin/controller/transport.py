"""The thin request path to the controllers: prebuilt URL prefixes and headers, straight onto Twisted's Agent.

Every port create makes two controller calls, so what one call costs the
reactor is paid twice per port. treq re-parses each URL (hyperlink, IDNA),
rebuilds the headers from a dict, wraps the Agent in cookie, redirect and
gzip agents and runs a cookie jar over every response; none of it is needed
here (the controllers set no cookies, redirects fail over, bodies are plain
JSON), and in a profile at 64 clients it was about a quarter of the reactor's
time. Here each server gets its URL prefix and its headers (``Host``
included, so the Agent copies nothing) once; a call is the Agent's request
over the pool's persistent connections, a body written in one go, and the
response read whole. The timeout covers the whole exchange, the body too.

Connections: one ``HTTPConnectionPool`` keeps up to
``max_connections_per_server`` idle persistent connections per controller
and opens more while that many calls are in flight (HTTP/1.1 without
pipelining: one call per connection at a time); at 20 ms of controller
latency and 64 API clients a handful of connections carry the load.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import URI, BrowserLikePolicyForHTTPS, PotentialDataLoss, ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
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


class ControllerClient:
    """HTTP calls to the controllers through one Agent (its pool holds the persistent connections)."""

    def __init__(self, agent: Any, reactor: Any, headers: dict[str, str], use_ssl: bool = False) -> None:
        """``agent``: an ``IAgent`` (``Agent`` over an ``HTTPConnectionPool``; a ``RequestTraversalAgent`` in the fast
        tests); ``headers``: what every call carries."""
        self._agent = agent
        self._reactor = reactor
        self._common = [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers.items()]
        self._scheme = "https" if use_ssl else "http"
        self._headers: dict[ServerAddress, Headers] = {}
        self._prefixes: dict[tuple[ServerAddress, str], str] = {}

    def url(self, server: ServerAddress, path: str, base: str) -> str:
        prefix = self._prefixes.get((server, base))
        if prefix is None:
            prefix = self._prefixes[(server, base)] = f"{self._scheme}://{server.netloc}{base}"
        return prefix + path

    def _headers_for(self, server: ServerAddress) -> Headers:
        """The headers of every call to ``server``: built once, never changed (the Agent sends them as they are)."""
        headers = self._headers.get(server)
        if headers is None:
            default_port = 443 if self._scheme == "https" else 80
            host = server.netloc if server.port != default_port else server.netloc.rsplit(":", 1)[0]
            headers = Headers()
            for name, value in [*self._common, (b"Host", host.encode("ascii"))]:
                headers.addRawHeader(name, value)
            self._headers[server] = headers
        return headers

    def request(
        self, server: ServerAddress, method: str, path: str, base: str, body: bytes | IBodyProducer | None, timeout: float
    ) -> Deferred[Reply]:
        """One call; fails as the Agent does (connection refused, lost, TLS), or with CancelledError after ``timeout``."""
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
