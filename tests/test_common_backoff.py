"""restproxy_common.backoff: the one backoff policy of the retry loops, driven by a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from restproxy_agent.agent import PORT_RETRY
from restproxy_agent.channel import RECONNECT
from restproxy_common.backoff import RetrySchedule, backoff_policy


def test_policy_grows_by_the_factor_up_to_the_maximum_plus_bounded_jitter() -> None:
    policy = backoff_policy(initial=0.5, maximum=30.0, factor=2.0)
    assert [policy(a) for a in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert policy(10_000) == 30.0  # no overflow on a long outage
    jittered = backoff_policy(initial=1.0, maximum=4.0, jitter=0.5, rand=lambda: 1.0)
    assert [jittered(a) for a in range(4)] == [1.5, 2.5, 4.5, 4.5]


def test_the_agents_policies_stay_within_their_bounds() -> None:
    assert 0.5 <= PORT_RETRY(0) <= 0.55 and 30.0 <= PORT_RETRY(50) <= 30.05
    assert 0.4 <= RECONNECT(0) <= 1.4 and 10.0 <= RECONNECT(50) <= 11.0


BAD = [{"initial": 0, "maximum": 1}, {"initial": 2, "maximum": 1}, {"initial": 1, "maximum": 2, "factor": 0.5}]


@pytest.mark.parametrize("kwargs", BAD)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoff_policy(**kwargs)


def test_schedule_keeps_one_retry_per_key_and_a_success_starts_over() -> None:
    clock = Clock()
    fired: list[tuple[float, str]] = []
    schedule: RetrySchedule[str] = RetrySchedule(clock, backoff_policy(initial=1.0, maximum=4.0))

    def retry(key: str) -> None:
        fired.append((clock.seconds(), key))

    assert schedule.failed("p1", retry) == 1.0
    assert schedule.failed("p1", retry) == 2.0  # replaces the pending retry: still one
    assert len(clock.getDelayedCalls()) == 1 and schedule.pending("p1") and schedule.attempts("p1") == 2
    clock.advance(1.5)
    assert fired == []
    clock.advance(0.5)
    assert fired == [(2.0, "p1")] and not schedule.pending("p1")
    assert schedule.failed("p1", retry) == 4.0 and schedule.failed("p1", retry) == 4.0  # capped
    schedule.reset("p1")
    assert clock.getDelayedCalls() == [] and schedule.attempts("p1") == 0
    assert schedule.failed("p1", retry) == 1.0  # from the first delay again


def test_cancel_all_drops_pending_retries() -> None:
    clock = Clock()
    fired: list[str] = []
    schedule: RetrySchedule[str] = RetrySchedule(clock, backoff_policy(initial=1.0, maximum=1.0))
    for key in ("a", "b"):
        schedule.failed(key, fired.append)
    schedule.cancel_all()
    clock.advance(10)
    assert fired == [] and clock.getDelayedCalls() == []
