"""Pure pieces of the controller pool: server list parsing, ordering locks, body mapping."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from server_plugin.controller import mapping
from server_plugin.controller.ordering import KeyedLocks, RWLock
from server_plugin.controller.servers import ServerAddress, ServerConfigError, parse_servers


def test_parse_servers_keeps_order_and_ipv6() -> None:
    assert parse_servers("a:1, b.example:8800,[::1]:8443") == [
        ServerAddress("a", 1),
        ServerAddress("b.example", 8800),
        ServerAddress("::1", 8443),
    ]
    assert str(ServerAddress("::1", 8443)) == "[::1]:8443"


@pytest.mark.parametrize("text", ["", " , ", "hostonly", "a:b", "a:0", "a:70000", "[::1]8443", "::1:8443", ":80"])
def test_parse_servers_refuses_malformed(text: str) -> None:
    with pytest.raises(ServerConfigError):
        parse_servers(text)


def test_rwlock_readers_share_writers_exclude_in_fifo_order() -> None:
    lock = RWLock()
    events: list[str] = []
    r1 = lock.acquire(False).addCallback(lambda _: events.append("r1"))
    r2 = lock.acquire(False).addCallback(lambda _: events.append("r2"))
    w = lock.acquire(True).addCallback(lambda _: events.append("w"))
    r3 = lock.acquire(False).addCallback(lambda _: events.append("r3"))
    assert events == ["r1", "r2"]  # the writer waits; the later reader queues behind it
    lock.release(False)
    assert events == ["r1", "r2"]
    lock.release(False)
    assert events == ["r1", "r2", "w"]
    lock.release(True)
    assert events == ["r1", "r2", "w", "r3"]
    lock.release(False)
    assert lock.idle
    for d in (r1, r2, w, r3):
        assert d.called


def test_rwlock_cancelled_waiter_does_not_block_others() -> None:
    lock = RWLock()
    lock.acquire(True)
    waiting = lock.acquire(True)
    waiting.addErrback(lambda f: None)
    reader = lock.acquire(False)
    waiting.cancel()
    lock.release(True)
    assert reader.called


def test_keyed_locks_order_one_key_and_free_idle_keys() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    gate: Deferred[None] = Deferred()

    async def first() -> None:
        async with locks.hold(exclusive=[("port", "p")], shared=[("network", "n")]):
            order.append("first-in")
            await gate
            order.append("first-out")

    async def second() -> None:
        async with locks.hold(exclusive=[("port", "p")], shared=[("network", "n")]):
            order.append("second")

    async def other_port() -> None:
        async with locks.hold(exclusive=[("port", "q")], shared=[("network", "n")]):
            order.append("other")

    d1, d2, d3 = ensureDeferred(first()), ensureDeferred(second()), ensureDeferred(other_port())
    assert order == ["first-in", "other"]  # another port of the same network is not held up
    gate.callback(None)
    assert order == ["first-in", "other", "first-out", "second"]
    assert d1.called and d2.called and d3.called
    assert len(locks) == 0


def test_network_exclusive_waits_for_port_calls_on_it() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    gate: Deferred[None] = Deferred()

    async def port_call() -> None:
        async with locks.hold(exclusive=[("port", "p")], shared=[("network", "n")]):
            await gate
            order.append("port")

    async def network_delete() -> None:
        async with locks.hold(exclusive=[("network", "n")]):
            order.append("network")

    ensureDeferred(port_call())
    ensureDeferred(network_delete())
    assert order == []
    gate.callback(None)
    assert order == ["port", "network"]


def test_bigswitch_network_body_maps_state_subnets_and_gateway() -> None:
    view = {
        "id": "n1", "name": "net", "tenant_id": "t", "project_id": "t", "admin_state_up": False, "status": "ACTIVE",
        "shared": False, "subnets": [{"id": "s1", "gateway_ip": None, "admin_state_up": True}, {"id": "s2", "gateway_ip": "10.0.0.1"}],
    }  # fmt: skip
    body = mapping.network_payload(mapping.BIGSWITCH, view)
    assert body["state"] == "DOWN" and "admin_state_up" not in body and "status" not in body
    assert body["gateway"] == "10.0.0.1"
    assert [s["id"] for s in body["subnets"]] == ["s1", "s2"] and body["subnets"][0]["state"] == "UP"
    assert body["router:external"] is False


def test_floodlight_network_body_has_no_nested_ids() -> None:
    view = {"id": "n1", "name": "", "tenant_id": "t", "admin_state_up": True, "subnets": [{"id": "s1", "gateway_ip": "10.0.0.1"}]}
    assert mapping.network_payload(mapping.FLOODLIGHT, view) == {"id": "n1", "name": "n1", "gateway": "10.0.0.1"}
