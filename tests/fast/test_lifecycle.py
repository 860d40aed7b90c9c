"""The orderly shutdown on a Clock: children stop one after the other, in reverse, within one deadline."""

from __future__ import annotations

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from server_plugin.lifecycle import CLEANUP_MARGIN, Deadline, InFlight, OrderedServices


class Step(service.Service):
    """A service that takes ``seconds`` to stop and notes when it began and ended."""

    def __init__(self, name: str, clock: Clock, seconds: float, log: list[tuple[str, str, float]]) -> None:
        self.name, self.clock, self.seconds, self.log = name, clock, seconds, log

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.log.append(("begin", self.name, self.clock.seconds()))
        return deferLater(self.clock, self.seconds, lambda: self.log.append(("end", self.name, self.clock.seconds())))


def test_children_stop_in_reverse_one_after_the_other() -> None:
    clock, log = Clock(), []
    top = OrderedServices(Deadline(clock, 10.0))
    for name, seconds in [("store", 1.0), ("controller", 2.0), ("listener", 0.5)]:
        Step(name, clock, seconds, log).setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    clock.pump([0.25] * 20)
    assert stopped.called
    assert log == [
        ("begin", "listener", 0.0), ("end", "listener", 0.5), ("begin", "controller", 0.5),
        ("end", "controller", 2.5), ("begin", "store", 2.5), ("end", "store", 3.5),
    ]  # fmt: skip


def test_a_step_that_hangs_is_left_at_the_deadline_and_the_rest_still_stop() -> None:
    clock, log = Clock(), []
    top = OrderedServices(Deadline(clock, 3.0))
    Step("store", clock, 0.5, log).setServiceParent(top)
    Step("stuck", clock, 1000.0, log).setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    clock.pump([0.25] * round((3.0 + CLEANUP_MARGIN) / 0.25))
    assert ("begin", "store", 3.0 + CLEANUP_MARGIN) in log
    clock.advance(0.5)
    assert stopped.called


def test_in_flight_waits_for_the_open_requests_within_the_deadline() -> None:
    clock = Clock()
    in_flight = InFlight(Deadline(clock, 5.0))
    make = in_flight.track(lambda: DummyRequest([b""]))
    first, second = make(), make()
    in_flight.startService()
    drained = in_flight.stopService()
    first.finish()
    assert not drained.called and in_flight.open == 1
    clock.advance(1.0)
    second.processingFailed(Failure(ConnectionLost()))  # a request that failed (its client went away) ends too
    assert drained.called and in_flight.open == 0
    make().finish()
    assert in_flight.open == 0
