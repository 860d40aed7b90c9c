"""What makes a burst of new ports cheap, without OVS: port adds share OVSDB transactions, up reports share calls
(and fall back to one call per port with a server that lacks the batched one), and OVSDB messages are decoded by
the standard library's JSON decoder however the reads cut them."""

from __future__ import annotations

import errno
import json
from typing import Any

import ovs.jsonrpc
import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from restproxy_agent.agent import UpReports
from restproxy_agent.bridge import AddPort, BridgeError, IntegrationBridge
from restproxy_agent.channel import ChannelError
from restproxy_agent.ovsdb import OvsdbTimeout, TransactionError, _fast_recv, _fast_recv_wait


class RecordingBridge(IntegrationBridge):
    """``execute`` records each transaction's commands and answers when the test says (``commit``/``refuse``)."""

    def __init__(self) -> None:
        super().__init__(conn=None, name="br-int")  # type: ignore[arg-type]
        self.transactions: list[tuple[list[Any], Deferred[list[Any]]]] = []

    def execute(self, *commands: Any, wait_applied: bool = False, timeout: float | None = 30.0) -> Deferred[list[Any]]:
        d: Deferred[list[Any]] = Deferred()
        self.transactions.append((list(commands), d))
        return d

    def names(self) -> list[list[str]]:
        return [[c.name for c in commands] for commands, _ in self.transactions]

    def commit(self, i: int) -> None:
        commands, d = self.transactions[i]
        d.callback([True] * len(commands))


def _results(ds: list[Deferred[Any]]) -> list[Any]:
    out: list[Any] = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_a_lone_add_goes_at_once_and_adds_made_meanwhile_share_the_next_transaction() -> None:
    bridge = RecordingBridge()
    first = bridge.add_port("tap0", external_ids={"iface-id": "p0"})
    assert bridge.names() == [["tap0"]]  # nothing in flight: no wait
    rest = [bridge.add_port(f"tap{i}", external_ids={"iface-id": f"p{i}"}) for i in range(1, 400)]
    assert bridge.names() == [["tap0"]]  # ...while it is in flight, the others wait for it
    results = _results([first, *rest])
    bridge.commit(0)
    assert bridge.names() == [["tap0"], [f"tap{i}" for i in range(1, 400)]]  # one transaction for 399 ports
    assert results == [True]
    bridge.commit(1)
    assert results == [True] * 400
    assert all(isinstance(c, AddPort) for c in bridge.transactions[1][0])


def test_adds_made_together_share_one_transaction_even_with_none_in_flight() -> None:
    bridge = RecordingBridge()
    with bridge.adds_together():
        ds = [bridge.add_port(f"tap{i}", external_ids={"iface-id": f"p{i}"}) for i in range(300)]
        assert bridge.names() == []  # (held until the end of the block)
    assert bridge.names() == [[f"tap{i}" for i in range(300)]]  # not the first alone and the others after it
    results = _results(ds)
    bridge.commit(0)
    assert results == [True] * 300
    later = _results([bridge.add_port("tap9")])
    assert bridge.names()[-1] == ["tap9"]  # a lone add after it goes at once, as ever
    bridge.commit(1)
    assert later == [True]


def test_adds_made_together_while_a_batch_is_in_flight_wait_for_it() -> None:
    bridge = RecordingBridge()
    bridge.add_port("tap0")
    with bridge.adds_together():
        rest = [bridge.add_port(f"tap{i}") for i in range(1, 5)]
    assert bridge.names() == [["tap0"]]
    results = _results(rest)
    bridge.commit(0)
    assert bridge.names()[1] == ["tap1", "tap2", "tap3", "tap4"]
    bridge.commit(1)
    assert results == [True] * 4


def test_a_failed_batch_is_tried_one_transaction_per_port_and_only_the_bad_one_fails() -> None:
    bridge = RecordingBridge()
    bridge.add_port("tap0")
    results = _results([bridge.add_port(f"tap{i}") for i in range(1, 4)])
    bridge.commit(0)
    _, batch = bridge.transactions[1]
    batch.errback(BridgeError("tap2", "an Interface of this name exists without its Port"))
    assert bridge.names()[2:] == [["tap1"], ["tap2"], ["tap3"]]
    bridge.commit(2)
    bridge.transactions[3][1].errback(TransactionError("constraint violation"))
    bridge.commit(4)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1].value, TransactionError)


def test_a_timed_out_batch_is_not_sent_again() -> None:
    bridge = RecordingBridge()
    bridge.add_port("tap0")
    results = _results([bridge.add_port(f"tap{i}") for i in range(1, 3)])
    bridge.commit(0)
    bridge.transactions[1][1].errback(OvsdbTimeout("not confirmed"))  # it may still commit: no second copy
    assert len(bridge.transactions) == 2
    assert [type(r.value) for r in results] == [OvsdbTimeout, OvsdbTimeout]
    later = _results([bridge.add_port("tap9")])
    assert bridge.names()[-1] == ["tap9"]  # the next add goes at once
    bridge.commit(2)
    assert later == [True]


class Server:
    """The agent channel's report calls, as a server with (or, ``batched=False``, without) update_device_list."""

    def __init__(self, batched: bool, unknown: frozenset[str] = frozenset()) -> None:
        self.batched, self.unknown = batched, unknown
        self.calls: list[tuple[str, Any]] = []

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        if method == "update_device_list":
            self.calls.append((method, kwargs["devices_up"]))
            if not self.batched:
                raise ChannelError(404, {"NeutronError": {"type": "HTTPNotFound", "message": "not found"}})
            return {"devices_up": [], "failed_devices_up": [d for d in kwargs["devices_up"] if d in self.unknown]}
        assert method == "update_device_up", method
        self.calls.append((method, kwargs["device"]))
        return {"device": kwargs["device"], "exists": kwargs["device"] not in self.unknown}


@pytest.mark.parametrize("batched", [True, False])
def test_up_reports_with_and_without_update_device_list(batched: bool) -> None:
    clock, server = Clock(), Server(batched, unknown=frozenset({"p3"}))
    reports = UpReports(server, "host-1", clock)  # type: ignore[arg-type]
    results = _results([reports.up(f"p{i}") for i in range(45)])
    clock.advance(0)
    assert len(results) == 45
    assert [r for r in results if r is not None][0].getErrorMessage() == "server refused update_device_up for p3"
    assert sum(r is None for r in results) == 44
    singles = [device for method, device in server.calls if method == "update_device_up"]
    if batched:
        assert server.calls == [("update_device_list", [f"p{i}" for i in range(45)])]
    else:  # asked once, then one update_device_up per port, for this batch and the next
        assert singles == [f"p{i}" for i in range(45)]
        _results([reports.up("p50")])
        clock.advance(0)
        assert server.calls[-1] == ("update_device_up", "p50")
        assert [method for method, _ in server.calls].count("update_device_list") == 1


def test_up_reports_other_errors_fail_the_batch() -> None:
    clock = Clock()

    class Broken:
        async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
            raise ChannelError(503, {"NeutronError": {"type": "ServiceUnavailable", "message": "later"}})

    reports = UpReports(Broken(), "host-1", clock)  # type: ignore[arg-type]
    results = _results([reports.up("p1"), reports.up("p2")])
    clock.advance(0)
    assert [r.value.status for r in results] == [503, 503]
    assert reports.batched  # (only a 404 means an older server)


# -- OVSDB messages --------------------------------------------------------------------------------------------
class Stream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = [c for c in chunks if c]
        self.waited = 0

    def recv(self, n: int) -> tuple[int, bytes]:
        return (0, self.chunks.pop(0)) if self.chunks else (errno.EAGAIN, b"")

    def recv_wait(self, poller: Any) -> None:
        self.waited += 1


class Rpc:
    def __init__(self, chunks: list[bytes]) -> None:
        self.status = 0
        self.received_bytes = 0
        self.stream = Stream(chunks)

    def error(self, code: int) -> None:
        self.status = self.status or code


REPLY = json.dumps({"id": 1, "result": [{"uuid": ["uuid", "0" * 8]}, {"details": '}é{ [\\"x'}], "error": None}, ensure_ascii=False)
UPDATE = json.dumps({"method": "update3", "params": ["m", "0", {"Port": {"u": {"insert": {"name": "tap0", "tag": 1}}}}], "id": None})
STREAM = (REPLY + "\n" + UPDATE + REPLY).encode()


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None}


def _drain(rpc: Rpc, calls: int = 10) -> list[Any]:
    messages = []
    for _ in range(calls):
        code, msg = _fast_recv(rpc)
        if msg is not None:
            messages.append(msg.to_json())
        else:
            assert code == errno.EAGAIN
    return messages


def test_ovsdb_messages_decoded_however_the_reads_cut_them() -> None:
    expected = [json.loads(REPLY), json.loads(UPDATE), json.loads(REPLY)]
    for cut in range(len(STREAM)):  # every cut, a multi-byte character's middle included
        for cut2 in range(cut, len(STREAM), 23):
            rpc = Rpc([STREAM[:cut], STREAM[cut:cut2], STREAM[cut2:]])
            assert [_plain(m) for m in _drain(rpc)] == [_plain(e) for e in expected]
            assert rpc.status == 0


def test_ovsdb_incomplete_message_waits_for_more_and_garbage_is_an_error() -> None:
    rpc = Rpc([REPLY.encode()[:20]])
    assert _drain(rpc, 3) == []
    woken: list[str] = []

    class Poller:
        def immediate_wake(self) -> None:
            woken.append("now")

    _fast_recv_wait(rpc, Poller())
    assert woken == [] and rpc.stream.waited == 1  # tried already: waits for the socket, no busy loop
    rpc.stream.chunks.append(REPLY.encode()[20:])
    assert len(_drain(rpc, 2)) == 1

    bad = Rpc([b'{"id": 1, "result": [}', b"x" * 10])
    _drain(bad, 3)
    assert bad.status == 0  # (undecodable so far: it may be incomplete)
    eof = Rpc([])
    eof.stream.recv = lambda n: (0, b"")  # type: ignore[method-assign]
    assert _fast_recv(eof) == (ovs.jsonrpc.EOF, None)


def test_ovsdb_not_a_message_is_a_protocol_error() -> None:
    rpc = Rpc([b'{"neither": "request nor reply"}'])
    code, msg = _fast_recv(rpc)
    assert msg is None and code == errno.EPROTO == rpc.status


def test_add_ports_fail_fast_when_the_connection_is_closed() -> None:
    class Closed(RecordingBridge):
        def execute(self, *commands: Any, wait_applied: bool = False, timeout: float | None = 30.0) -> Deferred[list[Any]]:
            self.transactions.append((list(commands), succeed([])))
            return fail(OvsdbTimeout("closed")) if len(commands) > 1 else fail(RuntimeError("closed"))

    bridge = Closed()
    results = _results([bridge.add_port("tap0"), bridge.add_port("tap1")])
    assert isinstance(results[0].value, RuntimeError) and isinstance(results[1].value, RuntimeError)
