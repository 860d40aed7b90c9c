"""The controller request path (transport.ConnectionsClient) against real HTTP servers on 127.0.0.1.

A scripted raw Twisted server answers each request as the test says, byte by byte if it wants:
Content-Length, chunked (split in one-byte packets, with extensions and trailers), bodies ended by
the connection's close, keep-alive then close, interim 1xx answers, garbage, slow and hung answers,
TLS with the test PKI. Then the pool on top of it, against the controller simulator: the same
requests on the wire (headers, basic auth) and the same failover.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from controller_sim.testing import SimProcess
from restproxy_common.tls import ControllerTLSPolicy
from server_plugin.controller import mapping
from server_plugin.controller.pool import PoolSettings, RemoteRestError, ServerPool
from server_plugin.controller.servers import ServerAddress, parse_servers
from server_plugin.controller.transport import BadResponse, ConnectionsClient, InvalidRequestTarget, Reply
from tests.test_controller_tls_profiles import PKI, TLS_ERROR

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class Received:
    """One request as the server read it."""

    def __init__(self, head: bytes, body: bytes, connection: int) -> None:
        lines = head.split(b"\r\n")
        self.method, self.path, self.version = lines[0].split(b" ")
        self.headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
        self.body = body
        self.connection = connection

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, values
        return values[0] if values else None


class ScriptedServer(Factory):
    """Each request is answered by ``answer(request, protocol)``; connections and requests are recorded."""

    def __init__(self, answer: Callable[[Received, ScriptedProtocol], Any]) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.connections: list[ScriptedProtocol] = []
        self.closed: list[int] = []

    def buildProtocol(self, addr: Any) -> ScriptedProtocol:
        protocol = ScriptedProtocol(self, len(self.connections))
        self.connections.append(protocol)
        return protocol


class ScriptedProtocol(Protocol):
    def __init__(self, factory: ScriptedServer, number: int) -> None:
        self.server = factory
        self.number = number
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            request = Received(head, b"", self.number)
            length = request.header(b"Content-Length")
            if length is not None:
                if len(rest) < int(length):
                    return
                request.body, rest = rest[: int(length)], rest[int(length) :]
            elif request.header(b"Transfer-Encoding") == b"chunked":
                body, rest, complete = _dechunk(rest)
                if not complete:
                    return
                request.body = body
            self.buffer = rest
            self.server.requests.append(request)
            self.server.answer(request, self)

    def connectionLost(self, reason: Any = None) -> None:
        self.server.closed.append(self.number)

    def send(self, data: bytes, packet: int = 0) -> None:
        """Write ``data``, in packets of ``packet`` bytes (each in its own reactor turn) when given."""
        if not packet:
            self.transport.write(data)
            return
        for i in range(0, len(data), packet):
            reactor.callLater(0.001 * i, self.transport.write, data[i : i + packet])


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    body = b""
    while True:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return body, data, False
        size = int(line, 16)
        if size == 0:
            if not rest.startswith(b"\r\n"):
                return body, data, False
            return body, rest[2:], True
        if len(rest) < size + 2:
            return body, data, False
        body += rest[:size]
        data = rest[size + 2 :]


@pytest.fixture
def listen() -> Iterator[Callable[..., tuple[ScriptedServer, ServerAddress]]]:
    ports: list[Any] = []

    def start(answer: Callable[[Received, ScriptedProtocol], Any], tls: Any = None) -> tuple[ScriptedServer, ServerAddress]:
        server = ScriptedServer(answer)
        if tls is None:
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, server, tls, interface="127.0.0.1")
        ports.append(port)
        return server, ServerAddress("127.0.0.1", port.getHost().port)

    yield start
    for port in ports:
        port.stopListening()


HEADERS = {"Content-Type": "application/json", "Authorization": "Basic dTpw"}


def client(**kwargs: Any) -> ConnectionsClient:
    return ConnectionsClient(reactor, HEADERS, **kwargs)


async def call(c: ConnectionsClient, server: ServerAddress, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Reply:
    return await c.request(server, method, "/x", "/base", body, timeout)


async def failure_of(d: Any) -> BaseException:
    try:
        await d
    except BaseException as e:  # noqa: B036 (the failure is the result)
        return e
    raise AssertionError("the call succeeded")


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not reached in time"
        await task.deferLater(reactor, 0.01)
        waited += 0.01


# -- framing of answers


@pytest_twisted.ensureDeferred
async def test_the_request_is_exact_and_a_keep_alive_connection_carries_every_call(listen: Any) -> None:
    server, address = listen(lambda request, p: p.send(b"HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n" + b'{"ok": 1}'))
    c = client()
    replies = [await call(c, address, "POST", b'{"a": 1}') for _ in range(3)] + [await call(c, address, "DELETE")]
    assert replies[0] == Reply(201, "Created", b'{"ok": 1}')
    assert {r.connection for r in server.requests} == {0} and server.closed == []
    post, delete = server.requests[0], server.requests[-1]
    assert (post.method, post.path, post.version) == (b"POST", b"/base/x", b"HTTP/1.1")
    assert post.headers == [
        (b"Host", f"127.0.0.1:{address.port}".encode()),
        (b"Content-Type", b"application/json"),
        (b"Authorization", b"Basic dTpw"),
        (b"Content-Length", b"8"),
    ]
    assert post.body == b'{"a": 1}'
    assert delete.method == b"DELETE" and delete.header(b"Content-Length") is None and delete.body == b""
    await c.close()  # closing the client closes its idle connections
    await until(lambda: server.closed == [0])
    assert await call(c, address) == Reply(201, "Created", b'{"ok": 1}')  # a closed client still calls, without keeping
    await until(lambda: server.closed == [0, 1])


@pytest_twisted.ensureDeferred
async def test_chunked_answers_in_one_byte_packets_with_extensions_and_trailers(listen: Any) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, world! :)\r\n0\r\nX-Trailer: t\r\n\r\n"
    server, address = listen(lambda request, p: p.send(answer, packet=1))
    c = client()
    assert await call(c, address) == Reply(200, "OK", b"hello, world! :)")
    assert await call(c, address) == Reply(200, "OK", b"hello, world! :)")
    assert {r.connection for r in server.requests} == {0}  # reused after a chunked body
    big = b"[" + b"1," * 1_000_000 + b"1]"
    server.answer = lambda request, p: p.send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    )
    assert await call(c, address) == Reply(200, "OK", big)
    assert {r.connection for r in server.requests} == {0}
    await c.close()


@pytest_twisted.ensureDeferred
async def test_split_content_length_answers_interim_answers_and_empty_bodies(listen: Any) -> None:
    answers = iter(
        [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + b'{"x": "yz"}\n', 3),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", 0),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 0),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2),
        ]
    )

    def answer(request: Received, p: ScriptedProtocol) -> None:
        data, packet = next(answers)
        p.send(data, packet)

    server, address = listen(answer)
    c = client()
    assert await call(c, address) == Reply(200, "OK", b'{"x": "yz"}\n')
    assert await call(c, address) == Reply(200, "OK", b"[]")
    assert await call(c, address) == Reply(204, "No Content", b"")
    assert await call(c, address) == Reply(404, "Not Found", b"")
    assert {r.connection for r in server.requests} == {0}
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_body_ended_by_the_close_is_whole_and_its_connection_is_not_reused(listen: Any) -> None:
    def answer(request: Received, p: ScriptedProtocol) -> None:
        p.send(b"HTTP/1.1 200 OK\r\n\r\n" + b'{"long": "' + b"x" * 100000 + b'"}')
        p.transport.loseConnection()

    server, address = listen(answer)
    c = client()
    reply = await call(c, address)
    assert reply.status == 200 and reply.body == b'{"long": "' + b"x" * 100000 + b'"}'
    assert (await call(c, address)).body == reply.body
    assert [r.connection for r in server.requests] == [0, 1]
    await c.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        OK + b"HTTP/1.1 200 OK\r\n",  # bytes after the answer: the connection is not trusted again
    ],
)
@pytest_twisted.ensureDeferred
async def test_an_answer_that_ends_its_connection_makes_the_next_call_open_another(listen: Any, answer: bytes) -> None:
    server, address = listen(lambda request, p: p.send(answer))
    c = client()
    assert await call(c, address) == Reply(200, "OK", b"{}")
    assert await call(c, address) == Reply(200, "OK", b"{}")
    assert [r.connection for r in server.requests] == [0, 1]
    await until(lambda: 0 in server.closed)
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_server_that_closes_its_idle_connection_costs_nothing(listen: Any) -> None:
    def answer(request: Received, p: ScriptedProtocol) -> None:
        p.send(OK)
        reactor.callLater(0.05, p.transport.loseConnection)  # its keep-alive timeout, after the answer

    server, address = listen(answer)
    c = client()
    for _ in range(3):
        assert await call(c, address, "POST", b"{}") == Reply(200, "OK", b"{}")
        await until(lambda: len(server.closed) == len(server.requests))
    assert [r.connection for r in server.requests] == [0, 1, 2]
    await c.close()


@pytest.mark.parametrize("method,body,sent", [("GET", None, 2), ("DELETE", None, 2), ("POST", b"{}", 1), ("PUT", b"{}", 1)])
@pytest_twisted.ensureDeferred
async def test_a_reused_connection_closed_under_a_call_resends_only_what_has_no_side_effect(
    listen: Any, method: str, body: bytes | None, sent: int
) -> None:
    """The server takes the call on a kept-alive connection and closes it without answering (its idle
    timeout as the call went out): a GET or DELETE is sent once more on a new connection, as
    Twisted's pool did; a POST or PUT is never sent twice: it fails, the pool fails it over."""

    def answer(request: Received, p: ScriptedProtocol) -> None:
        if len(server.requests) == 2:
            p.transport.loseConnection()
        else:
            p.send(OK)

    server, address = listen(answer)
    c = client()
    assert await call(c, address, method, body) == Reply(200, "OK", b"{}")
    if sent == 2:
        assert await call(c, address, method, body) == Reply(200, "OK", b"{}")
    else:
        error = await failure_of(call(c, address, method, body))
        assert isinstance(error, ResponseNeverReceived)
    assert [(r.method.decode(), r.connection) for r in server.requests] == [(method, 0), (method, 0)] + [(method, 1)] * (sent - 1)
    # A call on a fresh connection that is closed under it is not resent either: the controller is failing.
    server.answer = lambda request, p: p.transport.loseConnection()
    await c.close()
    c = client()
    before = len(server.requests)
    assert isinstance(await failure_of(call(c, address, method, body)), ResponseNeverReceived)
    assert len(server.requests) == before + 1
    await c.close()


@pytest.mark.parametrize(
    "answer,cause",
    [
        (b"garbage\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header without a colon"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n", "chunk not ended by CRLF"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000, "status line and headers too long"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_garbage_fails_the_call_and_closes_the_connection(listen: Any, answer: bytes, cause: str) -> None:
    server, address = listen(lambda request, p: p.send(answer))
    c = client()
    error = await failure_of(call(c, address))
    assert isinstance(error, ResponseFailed) and not isinstance(error, ResponseNeverReceived)
    [reason] = error.reasons
    assert reason.check(BadResponse) and reason.value.args[0] == cause
    await until(lambda: server.closed == [0])
    await c.close()


@pytest_twisted.ensureDeferred
async def test_bytes_on_an_idle_connection_retire_it(listen: Any) -> None:
    def answer(request: Received, p: ScriptedProtocol) -> None:
        p.send(OK)
        reactor.callLater(0.02, p.transport.write, b"HTTP/1.1 200 OK\r\n")  # nobody asked

    server, address = listen(answer)
    c = client()
    assert await call(c, address) == Reply(200, "OK", b"{}")
    await until(lambda: server.closed == [0])
    assert await call(c, address) == Reply(200, "OK", b"{}")
    assert [r.connection for r in server.requests] == [0, 1]
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_lost_in_the_body_fails_the_call(listen: Any) -> None:
    def answer(request: Received, p: ScriptedProtocol) -> None:
        p.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        p.transport.loseConnection()

    _, address = listen(answer)
    c = client()
    error = await failure_of(call(c, address))
    assert isinstance(error, ResponseFailed) and not isinstance(error, ResponseNeverReceived)
    assert isinstance(await failure_of(call(c, address, "POST", b"{}")), ResponseFailed)


# -- time


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"])
@pytest_twisted.ensureDeferred
async def test_the_timeout_covers_the_whole_exchange_and_aborts_the_connection(listen: Any, partial: bytes) -> None:
    server, address = listen(lambda request, p: p.send(partial))
    c = client()
    started = reactor.seconds()
    assert isinstance(await failure_of(call(c, address, "POST", b"{}", timeout=0.3)), CancelledError)
    assert 0.25 < reactor.seconds() - started < 2
    await until(lambda: server.closed == [0])
    # A slow answer within the timeout is fine.
    server.answer = lambda request, p: reactor.callLater(0.2, p.send, OK)
    assert await call(c, address, timeout=2) == Reply(200, "OK", b"{}")
    await c.close()


@pytest_twisted.ensureDeferred
async def test_connection_refused_and_connect_timeout() -> None:
    c = client(connect_timeout=0.3)
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    address = ServerAddress("127.0.0.1", port.getHost().port)
    await port.stopListening()
    assert isinstance(await failure_of(call(c, address)), ConnectionRefusedError)
    # An address that never answers (TEST-NET-1): the call's timeout ends the connection attempt.
    started = reactor.seconds()
    error = await failure_of(call(c, ServerAddress("192.0.2.1", 9), timeout=0.3))
    assert isinstance(error, CancelledError)
    assert reactor.seconds() - started < 2


# -- connections


@pytest_twisted.ensureDeferred
async def test_concurrent_calls_open_connections_and_at_most_max_idle_stay(listen: Any) -> None:
    waiting: list[ScriptedProtocol] = []

    def answer(request: Received, p: ScriptedProtocol) -> None:
        waiting.append(p)
        if len(waiting) == 4:
            for q in waiting:
                q.send(OK)

    server, address = listen(answer)
    c = client(max_idle=2)
    replies = await defer.gatherResults([Deferred.fromCoroutine(call(c, address)) for _ in range(4)])
    assert replies == [Reply(200, "OK", b"{}")] * 4
    assert len(server.connections) == 4
    await until(lambda: len(server.closed) == 2)  # two idle ones kept
    server.answer = lambda request, p: p.send(OK)
    await call(c, address)
    assert len(server.connections) == 4 and server.requests[-1].connection not in server.closed
    await c.close()
    await until(lambda: len(server.closed) == 4)


@pytest_twisted.ensureDeferred
async def test_close_lets_a_call_in_flight_end_then_closes_its_connection(listen: Any) -> None:
    server, address = listen(lambda request, p: reactor.callLater(0.2, p.send, OK))
    c = client()
    in_flight = Deferred.fromCoroutine(call(c, address))
    await task.deferLater(reactor, 0.05)
    await c.close()
    assert await in_flight == Reply(200, "OK", b"{}")
    await until(lambda: server.closed == [0])


@pytest_twisted.ensureDeferred
async def test_not_persistent_asks_for_close_and_never_reuses(listen: Any) -> None:
    server, address = listen(lambda request, p: p.send(OK))
    c = client(persistent=False)
    for _ in range(2):
        assert await call(c, address) == Reply(200, "OK", b"{}")
    assert [r.connection for r in server.requests] == [0, 1]
    assert server.requests[0].header(b"Connection") == b"close"
    await until(lambda: server.closed == [0, 1])


@implementer(IBodyProducer)
class Pieces:
    """A body written in pieces over several reactor turns (as the /topology sync writes it)."""

    def __init__(self, pieces: list[bytes], length: int = UNKNOWN_LENGTH, fail: bool = False) -> None:
        self.pieces = pieces
        self.length = length
        self.fail = fail
        self.stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        async def produce() -> None:
            for piece in self.pieces:
                await task.deferLater(reactor, 0.01)
                if self.stopped:
                    raise CancelledError()
                consumer.write(piece)
            if self.fail:
                raise ValueError("the store went away")

        return Deferred.fromCoroutine(produce())

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


@pytest_twisted.ensureDeferred
async def test_a_streamed_body_goes_chunked_or_with_its_length(listen: Any) -> None:
    server, address = listen(lambda request, p: p.send(OK))
    c = client()
    assert await call(c, address, "PUT", Pieces([b'{"networks":[', b"", b"1,2", b"]}"])) == Reply(200, "OK", b"{}")
    assert await call(c, address, "PUT", Pieces([b"[1,", b"2]"], length=5)) == Reply(200, "OK", b"{}")
    chunked, sized = server.requests
    assert chunked.header(b"Transfer-Encoding") == b"chunked" and chunked.body == b'{"networks":[1,2]}'
    assert sized.header(b"Content-Length") == b"5" and sized.body == b"[1,2]"
    assert sized.connection == chunked.connection == 0
    # A producer that fails: the call fails and the half-sent request's connection is dropped.
    error = await failure_of(call(c, address, "PUT", Pieces([b"[1"], fail=True)))
    assert isinstance(error, RequestTransmissionFailed) and error.reasons[0].check(ValueError)
    await until(lambda: server.closed == [0])
    # Timed out while streaming: the producer is stopped and the connection aborted.
    slow = Pieces([b"["] * 100)
    assert isinstance(await failure_of(call(c, address, "PUT", slow, timeout=0.2)), CancelledError)
    await until(lambda: slow.stopped and server.closed == [0, 1])
    await c.close()


# -- TLS


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="restproxy-pki-") as tmp:
        p = PKI(tmp)
        yield {"ca": p.ca("a"), "other_ca": p.ca("b"), "good": p.leaf("good", "a")}


def _tls_server_options(key: str, cert: str) -> Any:
    with open(key, "rb") as k, open(cert, "rb") as c:
        return ssl.PrivateCertificate.loadPEM(k.read() + c.read()).options()


@pytest_twisted.ensureDeferred
async def test_tls_with_a_ca_file_or_a_pinned_certificate_and_kept_alive(listen: Any, pki: dict[str, Any]) -> None:
    server, address = listen(lambda request, p: p.send(OK), tls=_tls_server_options(*pki["good"]))
    trusted = client(use_ssl=True, tls_policy=ControllerTLSPolicy(ca_file=pki["ca"]))
    assert [await call(trusted, address) for _ in range(2)] == [Reply(200, "OK", b"{}")] * 2
    assert [r.connection for r in server.requests] == [0, 0]
    await trusted.close()
    pinned = client(use_ssl=True, tls_policy=ControllerTLSPolicy(pinned={address.netloc: pki["good"][1]}))
    assert await call(pinned, address) == Reply(200, "OK", b"{}")
    await pinned.close()
    untrusted = client(use_ssl=True, tls_policy=ControllerTLSPolicy(ca_file=pki["other_ca"]))
    error = await failure_of(call(untrusted, address, "POST", b"{}"))
    assert isinstance(error, ResponseNeverReceived) and TLS_ERROR.search(str(error.reasons[0].value))
    assert len(server.requests) == 3  # the untrusted connection sent nothing
    await untrusted.close()


# -- the pool on top, against the simulator


@pytest.fixture(scope="module")
def sims() -> Iterator[list[SimProcess]]:
    started = [SimProcess(auth="u:p").start(), SimProcess(auth="u:p").start()]
    yield started
    for sim in started:
        sim.stop()


def _network(net_id: str) -> dict[str, Any]:
    return {"network": mapping.network_payload(mapping.BIGSWITCH, {"id": net_id, "name": net_id, "tenant_id": "t"})}


@pytest_twisted.ensureDeferred
async def test_the_pool_against_the_simulator_sends_basic_auth_and_fails_over(sims: list[SimProcess], listen: Any) -> None:
    first, second = sims
    await deferToThread(first.clear_faults)
    pool = ServerPool(parse_servers(f"{first.address},{second.address}"), reactor, PoolSettings(auth="u:p", timeout=1, probe_interval=0))
    try:
        response = await pool.request("POST", "/tenants/t/networks", _network("n"))
        assert response.ok and response.server == parse_servers(first.address)[0]
        [recorded] = [r for r in await deferToThread(first.requests) if r["method"] == "POST"]
        headers = {k.lower(): v for k, v in recorded["headers"].items()}
        assert headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
        assert headers["content-type"] == "application/json" and headers["instance-id"] == "Quantum-restproxy"
        # A hung controller: the call times out (the whole exchange), the pool fails over to the second one.
        await deferToThread(first.fault, action="hang")
        response = await pool.request("POST", "/tenants/t/networks", _network("n2"))
        assert response.ok and response.server == parse_servers(second.address)[0]
        assert [s["last_error"] for s in pool.status()] == ["0 timed out", None]
        # Garbage from the only server left: a failure (status 0), as a refused connection is.
        garbage, address = listen(lambda request, p: p.send(b"garbage\r\n\r\n"))
        only = ServerPool([address], reactor, PoolSettings(timeout=1, probe_interval=0))
        with pytest.raises(RemoteRestError) as raised:
            await only.request("POST", "/tenants/t/networks", {})
        assert raised.value.http_status == 0 and "not an HTTP/1.x status line" in raised.value.reason
        assert len(garbage.requests) == 1  # a POST is not sent twice
        await only.close()
    finally:
        await deferToThread(first.clear_faults)
        await pool.close()


# -- review findings (each failed before its fix)


@pytest_twisted.ensureDeferred
async def test_crlf_in_a_path_is_refused_not_sent(listen: Any) -> None:
    """A tenant id is any string <= 255 chars; Twisted's Agent refused CR/LF/space in a URI (ValueError): so do we,
    sending nothing (the path builders percent-encode ids: this is the last guard)."""
    server, address = listen(lambda request, p: p.send(OK))
    c = client()
    path = "/tenants/t HTTP/1.1\r\nX-Injected: 1\r\n\r\nDELETE /base/tenants/victim/networks/n1/x"
    for bad in (path, "/tenants/t\x00/networks", "/tenants/t\x7f", "/tenants/\u00e9t\u00e9", "/tenants/a\tb"):
        error = await failure_of(c.request(address, "GET", bad, "/base", None, 2.0))
        assert isinstance(error, InvalidRequestTarget) and isinstance(error, ValueError), repr(error)
    assert await c.request(address, "GET", "/tenants/t%20%0D%0A/networks", "/base", None, 2.0) == Reply(200, "OK", b"{}")
    await task.deferLater(reactor, 0.1)
    assert [(r.method, r.path) for r in server.requests] == [(b"GET", b"/base/tenants/t%20%0D%0A/networks")]
    await c.close()


@pytest_twisted.ensureDeferred
async def test_an_invalid_path_fails_the_pool_call_without_failing_the_controller(sims: list[SimProcess]) -> None:
    first, second = sims
    before = [len(await deferToThread(sim.requests)) for sim in sims]
    pool = ServerPool(parse_servers(f"{first.address},{second.address}"), reactor, PoolSettings(auth="u:p", timeout=1, probe_interval=0))
    try:
        with pytest.raises(RemoteRestError) as raised:
            await pool.request("POST", "/tenants/t x\r\nX: 1/networks", _network("n"))
        assert "space, control or non-ASCII" in raised.value.reason
        with pytest.raises(RemoteRestError):
            await pool.call(pool.health[0], "GET", "/tenants/\u00e9/networks")
        assert [(h.failed, h.requests) for h in pool.health] == [(False, 0), (False, 0)]
        assert [len(await deferToThread(sim.requests)) for sim in sims] == before  # nothing sent
    finally:
        await pool.close()


def test_path_builders_percent_encode_every_id() -> None:
    from server_plugin.controller import l3_mapping, sg_mapping  # noqa: F401 (they build paths with mapping's)

    uuid = "0c6e8a4e-3f6b-4c8e-9a3e-7d1f0e2b5a61"
    assert mapping.port_path(uuid, "n-1_2.3~", uuid) == f"/tenants/{uuid}/networks/n-1_2.3~/ports/{uuid}"  # unchanged
    t = "a b\r\n/?#%\u00e9"
    e = "a%20b%0D%0A%2F%3F%23%25%C3%A9"
    assert mapping.network_path(t, t) == f"/tenants/{e}/networks/{e}"
    assert mapping.attachment_path(t, t, t) == f"/tenants/{e}/networks/{e}/ports/{e}/attachment"
    assert mapping.interface_path(t, t, t) == f"/tenants/{e}/routers/{e}/interfaces/{e}"
    assert mapping.floatingip_path(t, t) == f"/tenants/{e}/floatingips/{e}"
    assert sg_mapping.security_group_path(t) == f"/securitygroups/{e}"
    assert mapping.network_path("..", ".") == "/tenants/%2E%2E/networks/%2E"  # (no dot segment a server would remove)
    assert mapping.network_path("...", "a.b") == "/tenants/.../networks/a.b"


@pytest_twisted.ensureDeferred
async def test_a_cancelled_call_leaves_no_timeout_pending(listen: Any) -> None:
    """pool.close() cancels a probe in flight: its timeout DelayedCall must not stay for `timeout` seconds."""
    server, address = listen(lambda request, p: None)  # hung
    c = client()
    d = c.request(address, "GET", "/health", "/base", None, 30.0)
    await until(lambda: len(server.requests) == 1)
    d.cancel()
    assert isinstance(await failure_of(d), CancelledError)
    pending = [dc for dc in reactor.getDelayedCalls() if dc.active() and getattr(dc.func, "__self__", None) is d]
    for dc in pending:
        dc.cancel()
    await c.close()
    assert not pending, "the 30 s expiry of a cancelled call is still scheduled"


class Early(ScriptedProtocol):
    """Answers ``answer`` as soon as the request starts coming (before its body is all sent), then resets if asked."""

    def __init__(self, server: ScriptedServer, answer: bytes, reset: bool = False) -> None:
        super().__init__(server, 0)
        self.answer, self.reset = answer, reset
        self.answered = False
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(self.answer)
            if self.reset:
                _reset(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


def _reset(p: ScriptedProtocol) -> None:
    """Close with a reset (RST: Twisted's abortConnection), as a controller that crashed or a middlebox that dropped
    the connection (a loseConnection shuts the socket down first: a FIN, a clean end)."""
    reactor.callLater(0.05, p.transport.abortConnection)


@pytest_twisted.ensureDeferred
async def test_a_close_delimited_body_cut_by_a_reset_is_not_a_whole_answer(listen: Any) -> None:
    """A body without a length ends with a clean close (FIN); a reset (dropped mid-answer) truncates it."""

    def answer(request: Received, p: ScriptedProtocol) -> None:
        p.send(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"networks": [')
        _reset(p)

    server, address = listen(answer)
    c = client()
    error = await failure_of(c.request(address, "GET", "/topology", "/base", None, 2.0))
    assert isinstance(error, ResponseFailed) and not isinstance(error, ResponseNeverReceived), repr(error)
    # Answering (without a length) while a streamed body still goes out, then reset: the producer is stopped too.
    server.buildProtocol = lambda addr: Early(server, b"HTTP/1.1 200 OK\r\n\r\n[", reset=True)  # type: ignore[method-assign]
    slow = Pieces([b"["] * 100)
    error = await failure_of(call(c, address, "PUT", slow, timeout=5))
    assert isinstance(error, ResponseFailed) and slow.stopped
    await c.close()


@pytest.mark.parametrize(
    "answer,body",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * 1024 + 1), b""),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024 + b"\r\n401\r\n", b""),
        (b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 2049),
    ],
)
@pytest_twisted.ensureDeferred
async def test_an_answer_larger_than_max_body_fails_and_aborts(listen: Any, answer: bytes, body: bytes) -> None:
    server, address = listen(lambda request, p: p.send(answer + body, packet=700 if body else 0))
    c = client(max_body=2048)
    error = await failure_of(call(c, address))
    assert isinstance(error, ResponseFailed) and error.reasons[0].check(BadResponse)
    assert error.reasons[0].value.args[0] == "answer too large"
    await until(lambda: server.closed == [0])
    # At the limit, it is taken.
    server.answer = lambda request, p: p.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"y" * 2048)
    assert (await call(c, address)).body == b"y" * 2048
    await c.close()


@pytest.mark.parametrize(
    "answer,close,body,reused",
    [
        # chunked not last: the body ends with the close (RFC 9112 6.3), whatever the Content-Length says
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 2\r\n\r\n{}xyz", True, b"{}xyz", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n2\r\n{}", True, b"2\r\n{}", False),
        # chunked last (over several headers): chunked, but with a Content-Length the connection is not reused
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", False, b"{}", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n", False, b"{}", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n{}", True, b"{}", False),  # not "chunked": read to the close
    ],
)
@pytest_twisted.ensureDeferred
async def test_transfer_encoding_framing_and_reuse(listen: Any, answer: bytes, close: bool, body: bytes, reused: bool) -> None:
    """RFC 9112 6.1/6.3: Transfer-Encoding wins over Content-Length, chunked not last reads to the close, and the
    connection must not carry another call (the two framings may disagree: bytes would bleed into it)."""
    answers = [answer, OK]

    def respond(request: Received, p: ScriptedProtocol) -> None:
        p.send(answers.pop(0))
        if close and not answers[1:]:
            reactor.callLater(0.05, p.transport.loseConnection)

    server, address = listen(respond)
    c = client()
    assert await c.request(address, "GET", "/a", "/base", None, 2.0) == Reply(200, "OK", body)
    assert await c.request(address, "GET", "/b", "/base", None, 2.0) == Reply(200, "OK", b"{}")
    await c.close()
    assert (server.requests[1].connection == server.requests[0].connection) is reused


@pytest_twisted.ensureDeferred
async def test_an_early_answer_to_a_streamed_body_aborts_the_connection(listen: Any) -> None:
    """An answer (a 413, a 401) while the body still goes out: the rest is not sent and not flushed either."""
    server, address = listen(lambda request, p: None)
    early = Early(server, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    server.buildProtocol = lambda addr: early  # type: ignore[method-assign]
    c = client()
    slow = Pieces([b"["] * 100)
    assert await call(c, address, "PUT", slow) == Reply(413, "Too Large", b"")
    assert slow.stopped
    await until(lambda: early.lost is not None)
    assert early.lost.check(ConnectionLost) is not None, early.lost  # a reset, not a clean close
    await c.close()


@pytest_twisted.ensureDeferred
async def test_header_lines_ending_in_a_bare_lf_are_taken(listen: Any) -> None:
    answers = [
        b"HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\n{}",
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\n\r\n[1]",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\n\n\r\n[2]",  # (the head ends at the first empty line)
        b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1\r\nz\r\n0\r\nT: 1\n\n",
    ]
    server, address = listen(lambda request, p: p.send(answers.pop(0), packet=1))
    c = client()
    assert await call(c, address) == Reply(200, "OK", b"{}")
    assert await call(c, address) == Reply(201, "Created", b"[1]")
    assert await call(c, address) == Reply(200, "OK", b"\r\n[2]")
    assert await call(c, address) == Reply(200, "OK", b"z")
    assert {r.connection for r in server.requests} == {0}
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_delete_with_a_body_is_not_resent_on_a_stale_connection(listen: Any) -> None:
    def answer(request: Received, p: ScriptedProtocol) -> None:
        if len(server.requests) == 2:
            p.transport.loseConnection()
        else:
            p.send(OK)

    server, address = listen(answer)
    c = client()
    assert await call(c, address, "DELETE", b'{"a": 1}') == Reply(200, "OK", b"{}")
    assert isinstance(await failure_of(call(c, address, "DELETE", b'{"a": 1}')), ResponseNeverReceived)
    assert len(server.requests) == 2
    await c.close()


def test_a_controller_timeout_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        PoolSettings(timeout=0)


def test_a_hostile_tenant_id_goes_to_the_controller_escaped_in_one_request_per_call() -> None:
    """The API end to end: a tenant id is any string up to 255 characters, and goes into controller paths.
    Escaped, each call is one request on the path it means; nothing is smuggled, no controller looks failed,
    and the controller (which decodes the path) holds the objects under the tenant as the client named it."""
    from urllib.parse import quote

    from restproxy_testing.support import ServerProcess, temporary_database

    tenant = "t x\r\nX-Injected: 1\r\n\r\nDELETE /networkService/v1.1/tenants/victim/networks/n1 HTTP/1.1/?q=1#f%41\u00e9\u4e2d"
    escaped = quote(tenant, safe="")
    assert "%0D%0A" in escaped and "/" not in escaped and " " not in escaped
    sims = [SimProcess().start(), SimProcess().start()]
    try:
        with temporary_database("sqlite") as db_url:
            text = f"[RESTPROXY]\nservers = {sims[0].address},{sims[1].address}\nserver_timeout = 5\nserver_probe_interval = 0\n"
            server = ServerProcess(db_url, config_text=text).start()
            try:
                since = len(sims[0].requests())
                status, net = server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": tenant}})
                assert status == 201, net
                net_id = net["network"]["id"]
                status, port = server.request(
                    "POST", "/v2.0/ports", {"port": {"network_id": net_id, "tenant_id": tenant, "device_id": "vm-1"}}
                )
                assert status == 201, port
                port_id = port["port"]["id"]
                [held] = sims[0].state()["networks"]
                assert (held["id"], held["tenant_id"], [p["id"] for p in held["ports"]]) == (net_id, tenant, [port_id])
                assert server.request("DELETE", f"/v2.0/ports/{port_id}")[0] == 204
                assert server.request("DELETE", f"/v2.0/networks/{net_id}")[0] == 204
                base = f"/networkService/v1.1/tenants/{escaped}/networks"
                calls = [(r["method"], r["path"]) for r in sims[0].requests(since) if "/tenants/" in r["path"] or r["method"] != "GET"]
                assert calls == [
                    ("POST", base),
                    ("POST", "/networkService/v1.1/securitygroups"),  # (the tenant's default group, made with its first port)
                    ("POST", f"{base}/{net_id}/ports"),
                    ("PUT", f"{base}/{net_id}/ports/{port_id}/attachment"),
                    ("DELETE", f"{base}/{net_id}/ports/{port_id}/attachment"),
                    ("DELETE", f"{base}/{net_id}/ports/{port_id}"),
                    ("DELETE", f"{base}/{net_id}"),
                ], calls
                assert sims[1].requests() == [] or all(r["method"] == "GET" for r in sims[1].requests())
                status, pool = server.request("GET", "/admin/pool")
                assert [(s["state"], s["last_error"]) for s in pool["servers"]] == [("ok", None), ("ok", None)], pool
            finally:
                server.stop()
    finally:
        for sim in sims:
            sim.stop()
