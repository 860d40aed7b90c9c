"""The API's connections: deadlines for slow clients and limits on headers.

Twisted's own idle timer restarts with every byte, so a client that trickles
one byte now and then holds a connection (and its buffers) for ever. Here:

* the request line and headers must arrive within ``header_timeout`` seconds
  of their first byte;
* the body within ``body_timeout`` seconds of the end of the headers;
* a connection with nothing arriving is closed after ``idle_timeout`` seconds
  (Twisted's timer; it is suspended while a request is being answered);
* at most ``max_header_size`` bytes of request line and headers, and
  ``max_header_count`` headers (Twisted answers 400 beyond that).

A client past a deadline gets ``408`` with a NeutronError body and the
connection is closed (and aborted if it does not go within Twisted's
``abortTimeout``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.http_headers import Headers

from server_plugin.api.access_log import AccessLog

TIMEOUT_BODY = json.dumps(
    {"NeutronError": {"type": "RequestTimeout", "message": "The client did not send the request in time.", "detail": ""}}
).encode()


@attrs.frozen
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_header_size: int = 16384
    max_header_count: int = 100


class GuardedHTTPChannel(http.HTTPChannel):
    """An HTTPChannel with a header deadline and a body deadline per request."""

    log = Logger()
    limits = ConnectionLimits()

    _deadline: Any = None
    _awaiting_headers = True
    _armed_at = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.totalHeadersSize = self.limits.max_header_size
        self.maxHeaders = self.limits.max_header_count

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._armed_at = time.monotonic()
        self._deadline = self.callLater(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        peer = self.transport.getPeer() if self.transport is not None else None
        self.log.info(
            "closing slow client {peer}: {what} not received within {seconds:g} s ({elapsed_ms:.0f} ms)",
            peer=str(peer), what=what, seconds=seconds, elapsed_ms=(time.monotonic() - self._armed_at) * 1000,
        )  # fmt: skip
        head = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(
            TIMEOUT_BODY
        )
        self.transport.write(head + TIMEOUT_BODY)
        self.timeoutConnection()  # loseConnection, then abort if the client does not let go

    def _start_headers(self) -> None:
        if self._awaiting_headers and self._deadline is None and not self._handlingRequest:
            self._arm(self.limits.header_timeout, "request headers")

    def dataReceived(self, data: bytes) -> None:
        self._start_headers()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        self._start_headers()  # a pipelined request, parsed from buffered data
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        self._awaiting_headers = False
        self._arm(self.limits.body_timeout, "request body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()
        self._awaiting_headers = True
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        super().connectionLost(reason)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Twisted's status line and headers as one write (it hands the transport ~25 pieces, each checked and queued)."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)  # the legacy pairs: Twisted sanitizes them
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self.transport.write(b"".join(parts))


class APISite(server.Site):
    """A Site whose connections are GuardedHTTPChannels with this site's limits.

    Bodies are JSON: a POST's form encoding is not parsed into ``request.args``
    (those are the query's alone), which spares each POST Twisted's
    ``email``-package parse of its Content-Type. Each request is logged by
    ``access_log`` (one line; see access_log.py) instead of Twisted's
    combined-log writer.
    """

    def __init__(self, resource: Any, limits: ConnectionLimits, access_log: AccessLog | None = None) -> None:
        super().__init__(resource, timeout=limits.idle_timeout, parsePOSTFormSubmission=False)
        self.channel_class = type("APIChannel", (GuardedHTTPChannel,), {"limits": limits})
        self.access_log = access_log or AccessLog()

    def log(self, request: Any) -> None:  # what Request.finish calls
        self.access_log(request)

    def protocol(self) -> Any:  # what HTTPFactory.buildProtocol calls
        return http._GenericHTTPChannelProtocol(self.channel_class())
