"""Fast tier: PortWatch's reconnect backoff starts again after a watch that was up breaks.

Before, the failure count only reset when a stream ended cleanly, so an agent
whose server restarted (a few refused connects, then a good watch) and was
later killed again waited the grown backoff (up to 10 s) for the second outage.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from restproxy_agent.channel import PortWatch


class OpenStream:
    """A watch response that stays open until ``lose`` (as a server killed mid-stream)."""

    length = UNKNOWN_LENGTH

    def __init__(self) -> None:
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(None)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionLost("server killed")))


class ScriptedClient:
    """``open_watch`` answers from a script: an exception to raise, or a stream to return."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.opened = 0

    def list_ports(self) -> Deferred[tuple[int, list[dict[str, Any]]]]:
        return succeed((1, []))

    def open_watch(self, since: int) -> Deferred[Any]:
        self.opened += 1
        step = self.script.pop(0)
        return fail(step) if isinstance(step, Exception) else succeed(step)

    async def close(self) -> None:
        """Nothing held."""


def test_backoff_restarts_after_a_watch_that_was_up() -> None:
    clock = Clock()
    first, second = OpenStream(), OpenStream()
    refused = ConnectionRefusedError("down")
    client = ScriptedClient([refused, refused, refused, first, refused, second])
    attempts: list[int] = []

    def policy(attempt: int) -> float:
        attempts.append(attempt)
        return 1.0

    watch = PortWatch(client, lambda seq, ports: None, lambda event: None, clock, stall_timeout=1000, retry_policy=policy)  # type: ignore[arg-type]
    watch.startService()
    clock.pump([1.0, 1.0, 1.0])  # three refusals, each waited out
    assert watch.connected and attempts == [0, 1, 2]
    first.lose()  # the server dies under an open watch
    assert attempts == [0, 1, 2, 0]  # the new outage waits the first step, not the fourth
    clock.advance(1.0)
    assert attempts == [0, 1, 2, 0, 1]  # and grows again while it lasts
    clock.advance(1.0)
    assert watch.connected and client.opened == 6
    watch.stopService()
