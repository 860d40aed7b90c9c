"""A reply to a client that went away is dropped, learnt from notifyFinish rather than Twisted's private state."""

from __future__ import annotations

from twisted.internet import error
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from controller_sim import replies
from restproxy_common.web import WatchedRequest, client_gone, on_finish
from server_plugin.api import http as api_http


def _request() -> WatchedRequest:
    request = WatchedRequest(DummyChannel())
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    return request


def test_a_watched_request_notices_the_lost_connection() -> None:
    request = _request()
    assert not client_gone(request)
    request.connectionLost(Failure(error.ConnectionLost()))
    assert client_gone(request)


def test_the_api_and_the_simulator_drop_a_reply_to_a_gone_client() -> None:
    for write in (
        lambda r: api_http.write_reply(r, api_http.Reply(200, {"ok": 1})),
        lambda r: replies.write_reply(r, replies.Reply(200, {"ok": 1})),
    ):
        request = _request()
        request.connectionLost(Failure(error.ConnectionLost()))
        write(request)  # Request.finish would raise on a lost connection
        assert not request.finished and request.channel is None


def test_a_reply_to_a_present_client_is_written() -> None:
    request = _request()
    api_http.write_reply(request, api_http.Reply(200, {"ok": 1}))
    assert request.finished and not client_gone(request)


def test_finish_hooks_run_once_in_order_with_the_loss_if_any() -> None:
    finished, lost = _request(), _request()
    seen: list[tuple[str, object]] = []
    for name, request in (("finished", finished), ("lost", lost)):
        request.on_finish(lambda result, name=name: seen.append((name + " first", result)))
        request.on_finish(lambda result: 1 / 0)  # a broken hook is logged; the others still run
        request.on_finish(lambda result, name=name: seen.append((name + " second", result)))
    finished.finish()
    failure = Failure(error.ConnectionLost())
    lost.connectionLost(failure)
    assert [name for name, _ in seen] == ["finished first", "finished second", "lost first", "lost second"]
    assert seen[0][1] is None and seen[1][1] is None
    assert seen[2][1] is not None and seen[2][1].check(error.ConnectionLost) and seen[3][1] is seen[2][1]
    late: list[object] = []
    finished.on_finish(late.append)  # after the end: at once
    lost.on_finish(late.append)
    assert late[0] is None and late[1] is seen[2][1]


def test_on_finish_works_for_a_plain_request_too() -> None:
    plain = Request(DummyChannel())
    plain.method, plain.clientproto = b"GET", b"HTTP/1.1"
    seen: list[object] = []
    on_finish(plain, seen.append)
    plain.finish()
    assert seen == [None]
