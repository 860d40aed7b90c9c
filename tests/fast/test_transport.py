"""Fast tier: the thin controller request path's parts that the pool tests do not reach (controller/transport.py)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import URI, PotentialDataLoss, ResponseDone
from twisted.web.error import SchemeNotSupported

from server_plugin.controller.transport import CachedEndpoints, _Collector


def test_one_endpoint_per_controller_and_tls_for_https() -> None:
    from twisted.internet import reactor  # endpoints are only made here, never connected

    endpoints = CachedEndpoints(reactor, connect_timeout=3.0)
    first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8000/networkService/v1.1/a"))
    assert endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8000/networkService/v1.1/b")) is first
    assert isinstance(first, HostnameEndpoint)
    assert endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8001/")) is not first
    tls = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8443/"))
    assert not isinstance(tls, HostnameEndpoint)  # TCP wrapped in TLS
    with pytest.raises(SchemeNotSupported):
        endpoints.endpointForURI(URI.fromBytes(b"ftp://127.0.0.1:21/"))


def _collected(*parts: bytes, end: Failure) -> list[Any]:
    finished: Deferred[bytes] = Deferred()
    out: list[Any] = []
    finished.addBoth(out.append)
    collector = _Collector(finished)
    for part in parts:
        collector.dataReceived(part)
    collector.connectionLost(end)
    return out


def test_a_body_is_whole_at_its_end_or_when_its_connection_ends_it() -> None:
    assert _collected(b'{"a": ', b"1}", end=Failure(ResponseDone())) == [b'{"a": 1}']
    # No Content-Length, ended by the connection's close (as treq took it): whole too.
    assert _collected(b"[]", end=Failure(PotentialDataLoss())) == [b"[]"]
    [lost] = _collected(b'{"a"', end=Failure(ConnectionLost()))
    assert isinstance(lost, Failure) and lost.check(ConnectionLost)
