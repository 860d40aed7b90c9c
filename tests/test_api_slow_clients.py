"""Slow and oversized clients against a real server: deadlines for headers and bodies, an idle limit, header caps.

The server runs with short limits (1 s for headers and bodies, 2 s idle) so
that the test sees them fire; the database does not matter here (SQLite).
"""

from __future__ import annotations

import http.client
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from restproxy_testing.support import ServerProcess
from tests.hostile import build, parse_response, send

HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT = 1.0, 1.0, 2.0
CONFIG = f"""[DEFAULT]
api_header_timeout = {HEADER_TIMEOUT}
api_body_timeout = {BODY_TIMEOUT}
api_idle_timeout = {IDLE_TIMEOUT}
max_header_size = 4096
max_header_count = 20
metrics_access = open
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = ServerProcess(f"sqlite:///{tmp}/q.sqlite", CONFIG).start()
        try:
            yield proc
        finally:
            proc.stop()


class Trickler:
    """A connection that sends ``data`` one byte per ``interval``, and notes when the server closed it."""

    def __init__(self, port: int, data: bytes, prefix: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(prefix)
        self.sock.setblocking(False)
        self.data = data
        self.sent = 0
        self.started = time.monotonic()
        self.closed_at: float | None = None
        self.received = b""

    def step(self) -> None:
        if self.closed_at is not None:
            return
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed_at = time.monotonic()
                    return
                self.received += chunk
        except BlockingIOError:
            pass
        except OSError:
            self.closed_at = time.monotonic()
            return
        if self.sent < len(self.data):
            try:
                self.sock.send(self.data[self.sent : self.sent + 1])
                self.sent += 1
            except OSError:
                self.closed_at = time.monotonic()

    def close(self) -> None:
        self.sock.close()


def _trickle(server: ServerProcess, data: bytes, count: int, seconds: float, prefix: bytes = b"") -> tuple[list[Trickler], list[float]]:
    """``count`` connections sending ``prefix`` and then trickling ``data`` for ``seconds``, with normal requests
    in between; returns them and the normal requests' latencies."""
    slow = [Trickler(server.port, data, prefix) for _ in range(count)]
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(t.closed_at is None for t in slow):
        for t in slow:
            t.step()
        started = time.monotonic()
        status, body = server.request("GET", "/v2.0/networks")
        assert status == 200, body
        latencies.append(time.monotonic() - started)
        time.sleep(0.2)
    return slow, latencies


def _assert_timed_out(slow: list[Trickler], limit: float) -> None:
    for t in slow:
        assert t.closed_at is not None, "a slow connection was never closed"
        assert t.closed_at - t.started < limit + 1.5, t.closed_at - t.started
        status, _, body = parse_response(t.received)
        assert status == 408 and body["NeutronError"]["type"] == "RequestTimeout", t.received
        t.close()


def test_trickled_headers_are_cut_at_the_deadline_while_others_are_served(slow_server: ServerProcess) -> None:
    # One byte per step: the idle timer alone would never fire.
    data = b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    slow, latencies = _trickle(slow_server, data, count=60, seconds=HEADER_TIMEOUT + 3)
    _assert_timed_out(slow, HEADER_TIMEOUT)
    assert len(latencies) >= 5 and max(latencies) < 2.0, latencies  # served all along (2 s: a loaded CI machine)


def test_trickled_body_is_cut_at_the_deadline(slow_server: ServerProcess) -> None:
    head = b'POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n{"network": '
    slow, latencies = _trickle(slow_server, b" " * 300, count=20, seconds=BODY_TIMEOUT + 3, prefix=head)
    _assert_timed_out(slow, BODY_TIMEOUT)
    assert latencies and max(latencies) < 2.0
    status, body = slow_server.request("GET", "/v2.0/networks")
    assert status == 200 and body["networks"] == []  # nothing half-created


def test_silent_and_idle_connections_are_closed(slow_server: ServerProcess) -> None:
    silent = socket.create_connection(("127.0.0.1", slow_server.port), timeout=IDLE_TIMEOUT + 5)
    started = time.monotonic()
    assert silent.recv(100) == b""
    assert IDLE_TIMEOUT - 0.5 < time.monotonic() - started < IDLE_TIMEOUT + 2
    silent.close()
    # A kept-alive connection serves several requests, then goes after being idle.
    conn = http.client.HTTPConnection("127.0.0.1", slow_server.port, timeout=IDLE_TIMEOUT + 5)
    for _ in range(3):
        conn.request("GET", "/v2.0/networks")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        time.sleep(HEADER_TIMEOUT * 0.8)  # pauses between requests are no header deadline
    started = time.monotonic()
    assert conn.sock.recv(100) == b""
    assert time.monotonic() - started < IDLE_TIMEOUT + 1
    conn.close()


def test_header_caps(slow_server: ServerProcess) -> None:
    many = [(b"X-H%d" % i, b"v") for i in range(30)]
    assert send(slow_server.port, build(b"GET", b"/v2.0/networks", many))[0] == 400
    big = [(b"X-Big", b"a" * 5000)]
    assert send(slow_server.port, build(b"GET", b"/v2.0/networks", big))[0] == 400
    long_line = b"/v2.0/networks?name=" + b"a" * 5000
    assert send(slow_server.port, build(b"GET", long_line, []))[0] == 400
    assert slow_server.request("GET", "/v2.0/networks")[0] == 200


def test_metrics_access_open_serves_any_tenant(slow_server: ServerProcess) -> None:
    status, headers, body = send(slow_server.port, build(b"GET", b"/metrics", [(b"X-Tenant-Id", b"someone")]))
    assert status == 200 and "quantum_api_request_seconds" in body
