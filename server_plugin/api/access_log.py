"""The API's access log: one line per request, written straight to the log observers twistd set up.

Twisted's own access log formats a combined-log line, writes it to the legacy
``log.logfile``, which splits it into lines and emits each as an event whose
format the observer parses again: several layers per request, about as much CPU
as a small request's whole JSON handling. Here the line is built once and handed
to the same observers (``globalLogPublisher``: journald/stdout/``--logfile``,
whatever twistd configured) as one event, with its parts as named fields for
structured observers::

    2026-12-02T01:08:34+0000 [quantum-server.access#info] 127.0.0.1 "POST /v2.0/ports HTTP/1.1" 201 512 3.1ms "python-neutronclient"

client address, request line, status, body bytes sent (``-`` for none), time
from the arrival of the request line to the reply's last byte, and the User-Agent.
Nothing else of the request is logged: no other header (tokens travel in
``X-Auth-Token``), no body. The request line and User-Agent are escaped as
Twisted escapes them (``\\x..``, ``\\"``), so a client cannot forge a line.
"""

from __future__ import annotations

import re
import time
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

NAMESPACE = "quantum-server.access"

_PLAIN = re.compile(rb"[ !#-\[\]-~]*")  # printable ASCII without '"' and '\': written as is


def escape(value: bytes | None) -> str:
    """``value`` as printable ASCII: Twisted's access-log escaping (``repr`` with ``"`` escaped instead of ``'``)."""
    if not value:
        return "-"
    if _PLAIN.fullmatch(value):
        return value.decode("ascii")
    quoted = repr(value)  # b'...', or b"..." when the value has "'" and no '"'
    if quoted[1] == "'":
        return quoted[2:-1].replace('"', '\\"').replace("\\'", "'")
    return quoted[2:-1]


class AccessLog:
    """Writes the access-log line of a finished request (``APISite.log``)."""

    def __init__(self, observer: ILogObserver | None = None) -> None:
        self.logger = Logger(namespace=NAMESPACE, observer=observer or globalLogPublisher)
        self.observer = self.logger.observer

    def __call__(self, request: Any) -> None:
        address = request.getClientAddress()
        client = address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"
        method, uri, proto = escape(request.method), escape(request.uri), escape(request.clientproto)
        length = request.sentLength or 0
        started = getattr(request, "started_at", None)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1) if started is not None else None
        agent = escape(request.requestHeaders.getRawHeaders(b"user-agent", [b""])[-1])
        took = "-" if elapsed_ms is None else f"{elapsed_ms}ms"
        line = f'{client} "{method} {uri} {proto}" {request.code} {length or "-"} {took} "{agent}"'
        if "{" in line or "}" in line:
            line = line.replace("{", "{{").replace("}", "}}")  # the line is the event's (literal) format
        self.observer(
            {
                "log_logger": self.logger,
                "log_level": LogLevel.info,
                "log_namespace": NAMESPACE,
                "log_source": None,
                "log_format": line,
                "log_time": time.time(),
                "client": client,
                "method": method,
                "uri": uri,
                "status": request.code,
                "length": length,
                "elapsed_ms": elapsed_ms,
                "user_agent": agent,
            }
        )
