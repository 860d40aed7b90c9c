"""What a handler returns, and how it is written on the wire.

Handlers never touch the twisted.web request: they return a :class:`Reply` (or raise
:class:`ApiError`), so that the fault injector, the request log and the two controller
profiles all see answers the same way, and the handlers stay testable without a socket.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.web import server
from twisted.web.http import RESPONSES  # (once: a module attribute of twisted.web.http costs a deprecation lookup)

from restproxy_common.web import client_gone

JSON = "application/json"


@attrs.frozen
class Reply:
    status: int
    body: Any = None  # JSON-able; None -> no body
    headers: dict[str, str] = attrs.field(factory=dict)
    content_type: str = JSON
    # Compact separators, as Java's JSON generators write (Floodlight).
    compact: bool = False


class ApiError(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def reply(self) -> Reply:
        return Reply(self.status, {"error": self.message}, self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def ok(body: Any = None) -> Reply:
    return Reply(200, {"status": "ok"} if body is None else body)


def decode_json(raw: bytes, required: bool = True) -> Any:
    """The body as JSON; 400 naming the problem when it is missing or malformed."""
    if not raw.strip():
        if required:
            raise bad_request("a JSON request body is required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None


def encode(reply: Reply) -> bytes:
    if reply.body is None:
        return b""
    if reply.compact:
        return json.dumps(reply.body, separators=(",", ":")).encode("utf-8")
    return json.dumps(reply.body).encode("utf-8")


def write_reply(request: server.Request, reply: Reply) -> bool:
    """Send ``reply`` unless the client has gone; True if it was sent."""
    if request.finished or client_gone(request):
        return False
    request.setResponseCode(reply.status, RESPONSES.get(reply.status, b"Unknown"))
    for name, value in reply.headers.items():
        request.setHeader(name, value)
    data = encode(reply)
    if data:
        request.setHeader("Content-Type", reply.content_type)
    else:
        request.responseHeaders.removeHeader("content-type")
    request.setHeader("Content-Length", str(len(data)))
    if data and request.method != b"HEAD":
        request.write(data)
    request.finish()
    return True
