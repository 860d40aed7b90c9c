"""The controller pool on StubTreq and a Clock: failover, the 503 backoff, probes of failed servers."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from server_plugin.controller.pool import ControllerLostState, PoolSettings, RemoteRestError
from tests.fast.stubs import Controllers

NET = {"network": {"name": "n", "id": "8d6d6c1e-5b2a-4c4e-9a47-3f4b2f1d0a01", "tenant_id": "t", "state": "UP"}}


def _run(ctl: Controllers, d: Deferred[Any], seconds: float = 0.0) -> Any:
    """Drive the clock until ``d`` fires; its result (or raise its error)."""
    out: list[Any] = []
    d.addBoth(out.append)
    ctl.advance(seconds)
    while not out and ctl.clock.seconds() < 120:
        ctl.advance(0.05)
    assert out, "the call never ended"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _put(ctl: Controllers) -> Deferred[Any]:
    return Deferred.fromCoroutine(ctl.pool.request("POST", "/tenants/t/networks", NET))


def test_a_call_goes_to_the_first_server_and_is_observed() -> None:
    ctl = Controllers()
    response = _run(ctl, _put(ctl))
    assert response.ok and str(response.server) == "127.0.0.1:1"
    assert (ctl.requests(1), ctl.requests(2)) == (1, 0)
    assert [(server, status) for server, status, _ in ctl.calls] == [("127.0.0.1:1", 200)]


@pytest.mark.parametrize("rule", [{"status": 500}, {"status": 404}, {"action": "drop"}])
def test_a_failing_server_fails_over_and_the_next_one_stays_first(rule: dict[str, Any]) -> None:
    ctl = Controllers()
    ctl.fault(1, count=1, **rule)
    assert str(_run(ctl, _put(ctl)).server) == "127.0.0.1:2"
    assert [h.failed for h in ctl.pool.health] == [True, False]
    assert str(_run(ctl, _put(ctl)).server) == "127.0.0.1:2"  # no flapping back to the failed one
    assert ctl.requests(1) == 1


def test_when_every_server_fails_the_first_servers_status_is_reported() -> None:
    ctl = Controllers()
    ctl.fault(1, status=502)
    ctl.fault(2, status=500)
    with pytest.raises(RemoteRestError) as raised:
        _run(ctl, _put(ctl))
    assert raised.value.http_status == 502


def test_a_refusal_is_not_failed_over() -> None:
    ctl = Controllers()
    ctl.fault(1, status=422, count=1)
    with pytest.raises(RemoteRestError) as raised:
        _run(ctl, _put(ctl))
    assert raised.value.http_status == 422 and ctl.requests(2) == 0 and not ctl.pool.health[0].failed


def test_a_conflict_means_lost_state_not_failover() -> None:
    ctl = Controllers()
    ctl.fault(1, status=409, count=1)
    with pytest.raises(ControllerLostState):
        _run(ctl, _put(ctl))
    assert ctl.requests(2) == 0


def test_503_is_retried_on_the_same_server_with_doubling_delays() -> None:
    ctl = Controllers(settings=PoolSettings(retry_503=3, retry_503_delay=1.0, probe_interval=0))
    ctl.fault(1, status=503, count=2)
    d = _put(ctl)
    ctl.advance(0.9)
    assert ctl.requests(1) == 1  # the first retry waits 1 s
    ctl.advance(0.2)
    assert ctl.requests(1) == 2
    ctl.advance(1.8)
    assert ctl.requests(1) == 2  # the second waits 2 s
    response = _run(ctl, d, 0.3)
    assert response.ok and ctl.requests(1) == 3 and ctl.requests(2) == 0


def test_503_after_every_retry_fails_over() -> None:
    ctl = Controllers(settings=PoolSettings(retry_503=2, retry_503_delay=0.5, probe_interval=0))
    ctl.fault(1, status=503)
    response = _run(ctl, _put(ctl))
    assert str(response.server) == "127.0.0.1:2" and ctl.requests(1) == 3
    assert ctl.clock.seconds() >= 0.5 + 1.0


def test_a_call_that_gets_no_answer_times_out_on_the_clock() -> None:
    ctl = Controllers(count=1, settings=PoolSettings(timeout=3.0, probe_interval=0))
    ctl.fault(1, action="hang")
    d = _put(ctl)
    ctl.advance(2.9)
    assert not d.called
    with pytest.raises(RemoteRestError, match="timed out"):
        _run(ctl, d, 0.2)


def test_a_failed_server_is_probed_until_it_answers_then_listeners_hear_it() -> None:
    ctl = Controllers(settings=PoolSettings(probe_interval=5.0, failed_probe_interval=1.0))
    back: list[str] = []
    ctl.pool.back_in_service.append(lambda health: back.append(str(health.address)))
    ctl.pool.start_probing()
    ctl.fault(1, action="drop", count=3)  # the call and the next two probes
    _run(ctl, _put(ctl))
    assert ctl.pool.health[0].failed
    ctl.advance(1.01)
    ctl.advance(1.0)
    assert ctl.pool.health[0].failed and back == [] and ctl.requests(1) == 3
    ctl.advance(1.0)
    assert not ctl.pool.health[0].failed and back == ["127.0.0.1:1"]
    ctl.advance(10.0)
    assert ctl.requests(1) == 4  # no probes of a healthy server


def test_close_cancels_the_pending_probes() -> None:
    ctl = Controllers(settings=PoolSettings(probe_interval=5.0, failed_probe_interval=1.0))
    ctl.pool.start_probing()
    ctl.fault(1, action="drop")
    _run(ctl, _put(ctl))
    _run(ctl, Deferred.fromCoroutine(ctl.pool.close()))
    seen = ctl.requests(1)
    ctl.advance(5.0)
    assert ctl.requests(1) == seen and not ctl.clock.getDelayedCalls()
