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


def test_floodlight_keeps_only_ipv4_gateways() -> None:
    from server_plugin.controller.mapping import FLOODLIGHT, floodlight_gateway, network_payload

    assert floodlight_gateway("10.0.0.1") == "10.0.0.1"
    assert [floodlight_gateway(g) for g in (None, "", "0.0.0.0", "2001:db8::1", "999.1.1.1")] == [None] * 5
    v6_first = {"id": "n", "name": "", "subnets": [{"gateway_ip": "2001:db8::1"}, {"gateway_ip": "10.0.0.1"}]}
    assert network_payload(FLOODLIGHT, v6_first) == {"id": "n", "name": "n", "gateway": ""}


def test_floodlight_view_digest_is_order_free_and_sees_every_field() -> None:
    import json

    from server_plugin.controller import views

    networks = [
        {
            "name": "a",
            "guid": "g1",
            "gateway": None,
            "portMac": [{"port": "p1", "mac": "fa:16:3e:00:00:01"}, {"port": "p2", "mac": "FA:16:3E:00:00:02"}],
        },
        {"name": "b", "guid": "g2", "gateway": "10.0.0.1", "portMac": []},
    ]
    body = json.dumps(networks).encode()
    view = views.parse_floodlight_list(body)
    assert view["g1"]["ports"] == {"p1": "FA:16:3E:00:00:01", "p2": "FA:16:3E:00:00:02"}
    reordered = [dict(networks[1]), dict(networks[0], portMac=networks[0]["portMac"][::-1])]
    first = views.digest(view)
    assert first == views.digest(views.parse_floodlight_list(json.dumps(reordered).encode())) == views._digest_only(body)[1]
    assert first.counts == (2, 2) and str(first) == "2 networks, 2 attachments"
    for changed in (
        [dict(networks[0], name="a2"), networks[1]],
        [networks[0], dict(networks[1], gateway="10.0.0.2")],
        [dict(networks[0], portMac=[{"port": "p1", "mac": "fa:16:3e:00:00:09"}, networks[0]["portMac"][1]]), networks[1]],
        [dict(networks[0], portMac=[{"port": "p3", "mac": "fa:16:3e:00:00:01"}, networks[0]["portMac"][1]]), networks[1]],
        [dict(networks[0], guid="g3"), networks[1]],
    ):
        assert views.digest(views.parse_floodlight_list(json.dumps(changed).encode())).value != first.value, changed
    for bad in (b"{not json", b'{"status": "ok"}', b'[{"name": "x"}]'):
        with pytest.raises(views.NotFloodlight):
            views.parse_floodlight_list(bad)
