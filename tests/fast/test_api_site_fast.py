"""The API's Site in memory: a POST's body is not parsed as a form, and each request is one access-log line."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.web import resource, server
from twisted.web.test.requesthelper import DummyChannel

from server_plugin import exceptions as exc
from server_plugin.api.access_log import NAMESPACE, AccessLog
from server_plugin.api.guard import APISite, ConnectionLimits
from server_plugin.api.http import LimitedRequest, read_json

CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)
SECRET = "gAAAAAsecret-token-value"


class Echo(resource.Resource):
    """Answers with what it was given: the query's args and the body as read."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        args = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        return json.dumps({"args": args, "body": request.content.read().decode()}).encode()


def serve(raw: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    site = APISite(Echo(), ConnectionLimits(), AccessLog(events.append))
    site.requestFactory = LimitedRequest  # as make_site's: it notes when the request began
    site.reactor = Clock()
    site.startFactory()
    protocol = site.buildProtocol(CLIENT)
    transport = StringTransport(peerAddress=CLIENT)
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    site.stopFactory()
    return transport.value(), events


def request(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply_body(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def test_a_form_encoded_post_is_not_parsed_into_args() -> None:
    for ctype, body in (
        ("application/x-www-form-urlencoded", b"wait=1&fields=id"),
        ("multipart/form-data; boundary=XX", b'--XX\r\nContent-Disposition: form-data; name="wait"\r\n\r\n1\r\n--XX--\r\n'),
    ):
        raw, _ = serve(request("POST", "/admin/sync?only=query", body, {"Content-Type": ctype}))
        assert reply_body(raw) == {"args": {"only": ["query"]}, "body": body.decode()}


def test_each_request_is_one_access_log_line_with_its_fields() -> None:
    raw, events = serve(request("POST", "/v2.0/ports", b'{"port": {}}', {"User-Agent": "python-neutronclient", "X-Auth-Token": SECRET}))
    assert raw.startswith(b"HTTP/1.1 200 ")
    [event] = events
    length = len(raw.split(b"\r\n\r\n", 1)[1])
    assert event["log_namespace"] == NAMESPACE and event["log_level"] == LogLevel.info
    assert {k: event[k] for k in ("client", "method", "uri", "status", "length", "user_agent")} == {
        "client": "127.0.0.1", "method": "POST", "uri": "/v2.0/ports", "status": 200, "length": length,
        "user_agent": "python-neutronclient",
    }  # fmt: skip
    assert event["elapsed_ms"] >= 0
    text = formatEvent(event)
    assert text == f'127.0.0.1 "POST /v2.0/ports HTTP/1.1" 200 {length} {event["elapsed_ms"]}ms "python-neutronclient"'
    assert SECRET not in text and SECRET not in repr(event)


def test_what_a_client_sends_is_escaped_and_braces_are_literal() -> None:
    target = '/v2.0/networks?name={x}&q="a"\\'
    _, events = serve(request("GET", target, headers={"User-Agent": 'evil"\x01 {agent}'}))
    [event] = events
    text = formatEvent(event)
    assert '"GET /v2.0/networks?name={x}&q=\\"a\\"\\\\ HTTP/1.1"' in text
    assert text.endswith('"evil\\"\\x01 {agent}"') and "\n" not in text
    assert event["uri"] == '/v2.0/networks?name={x}&q=\\"a\\"\\\\'


def test_a_lone_surrogate_is_refused_however_the_body_carries_it_and_plain_text_passes() -> None:
    def read(raw: bytes) -> Any:
        req = LimitedRequest(DummyChannel())
        req.content = io.BytesIO(raw)
        return read_json(req)

    utf16 = b"\xff\xfe" + '{"port": {"name": "\ud800"}}'.encode("utf-16-le", "surrogatepass")  # a surrogate unit
    for raw in (b'{"port": {"name": "\\ud800"}}', utf16, b'{"port": {"name": "\xed\xa0\x80"}}'):
        with pytest.raises(exc.HTTPBadRequest, match="lone surrogate"):
            read(raw)
    assert read(b'{"port": {"name": "caf\\u00e9 \\"x\\"", "n": "\xc3\xa9"}}') == {"port": {"name": 'café "x"', "n": "é"}}
    assert read('{"port": {"name": "é"}}'.encode("utf-16")) == {"port": {"name": "é"}}
