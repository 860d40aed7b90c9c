"""The per-port serialiser (``restproxy_agent.serial``) and the agent's use of it: no reactor, no I/O.

Jobs finish synchronously (their Deferreds have already fired, as for a port
already in step) or later (a Deferred the test fires); requests arrive during
a run; jobs and error handlers raise.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from restproxy_agent.agent import RestProxyAgent
from restproxy_agent.config import AgentConfig
from restproxy_agent.serial import KeyedSerializer


class Jobs:
    """A job that records its calls; ``gates[key]`` (a list of Deferreds) makes the next calls wait, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.errors: list[tuple[str, str, float]] = []
        self.gates: dict[str, list[Deferred[None]]] = {}
        self.fail: dict[str, Exception] = {}
        self.serial: KeyedSerializer[str] = KeyedSerializer(self.job, self.on_error)

    async def job(self, key: str, since: float) -> None:
        self.calls.append((key, since))
        gates = self.gates.get(key)
        if gates:
            await gates.pop(0)
        if key in self.fail:
            raise self.fail[key]

    def on_error(self, key: str, error: Exception, since: float) -> None:
        self.errors.append((key, str(error), since))

    def gate(self, key: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.gates.setdefault(key, []).append(d)
        return d


def test_a_job_that_finishes_at_once_leaves_the_key_free_and_runs_every_time() -> None:
    jobs = Jobs()
    for since in (1.0, 2.0, 3.0):
        jobs.serial.request("p", since)
        assert "p" not in jobs.serial and len(jobs.serial) == 0
    assert jobs.calls == [("p", 1.0), ("p", 2.0), ("p", 3.0)]
    assert jobs.serial.idle("p").called


def test_requests_during_a_run_merge_into_one_more_pass_with_the_earliest_since() -> None:
    jobs = Jobs()
    first = jobs.gate("p")
    jobs.serial.request("p", 1.0)
    assert "p" in jobs.serial
    for since in (5.0, 3.0, 4.0):
        jobs.serial.request("p", since)
    idle = jobs.serial.idle("p")
    assert jobs.calls == [("p", 1.0)] and not idle.called
    first.callback(None)  # the second pass finishes at once
    assert jobs.calls == [("p", 1.0), ("p", 3.0)]
    assert idle.called and "p" not in jobs.serial
    jobs.serial.request("p", 9.0)  # and the key is usable again
    assert jobs.calls[-1] == ("p", 9.0)


def test_a_request_during_an_asynchronous_second_pass_gets_a_third() -> None:
    jobs = Jobs()
    first, second = jobs.gate("p"), jobs.gate("p")
    jobs.serial.request("p", 1.0)
    jobs.serial.request("p", 2.0)
    first.callback(None)
    assert jobs.calls == [("p", 1.0), ("p", 2.0)] and "p" in jobs.serial
    jobs.serial.request("p", 3.0)
    second.callback(None)
    assert jobs.calls == [("p", 1.0), ("p", 2.0), ("p", 3.0)] and "p" not in jobs.serial


def test_keys_run_independently() -> None:
    jobs = Jobs()
    gate_a = jobs.gate("a")
    jobs.serial.request("a", 1.0)
    jobs.serial.request("b", 1.0)  # b finishes at once while a waits
    jobs.serial.request("b", 2.0)
    assert jobs.calls == [("a", 1.0), ("b", 1.0), ("b", 2.0)]
    assert len(jobs.serial) == 1 and "a" in jobs.serial
    gate_a.callback(None)
    assert len(jobs.serial) == 0


def test_errors_go_to_the_handler_and_free_the_key_sync_and_async() -> None:
    jobs = Jobs()
    jobs.fail["p"] = RuntimeError("boom")
    jobs.serial.request("p", 1.0)  # raises at once
    assert jobs.errors == [("p", "boom", 1.0)] and "p" not in jobs.serial
    gate = jobs.gate("p")
    jobs.serial.request("p", 2.0)
    jobs.serial.request("p", 3.0)  # arrives during the failing pass: still runs after it
    gate.errback(RuntimeError("later"))
    assert jobs.errors[1] == ("p", "later", 2.0)
    assert jobs.errors[2] == ("p", "boom", 3.0)
    assert "p" not in jobs.serial
    del jobs.fail["p"]
    jobs.serial.request("p", 4.0)
    assert jobs.calls[-1] == ("p", 4.0) and len(jobs.errors) == 3


def test_a_failing_error_handler_is_logged_and_does_not_wedge_the_key() -> None:
    calls: list[float] = []

    async def job(key: str, since: float) -> None:
        calls.append(since)
        raise ValueError("job")

    def on_error(key: str, error: Exception, since: float) -> None:
        raise KeyError("handler")

    serial: KeyedSerializer[str] = KeyedSerializer(job, on_error)
    with capturedLogs() as events:
        serial.request("p", 1.0)
        serial.request("p", 2.0)
    assert calls == [1.0, 2.0] and "p" not in serial
    assert sum("error handler failed" in e.get("log_format", "") for e in events) == 2


def test_a_job_may_ask_for_its_own_key_again() -> None:
    passes: list[float] = []
    serial: KeyedSerializer[str]

    async def job(key: str, since: float) -> None:
        passes.append(since)
        if len(passes) == 1:
            serial.request(key, 7.0)  # e.g. a change noticed mid-sync

    serial = KeyedSerializer(job, lambda *a: None)
    serial.request("p", 1.0)
    assert passes == [1.0, 7.0] and "p" not in serial


def test_idle_waiters_may_request_again_from_their_callback() -> None:
    jobs = Jobs()
    gate = jobs.gate("p")
    jobs.serial.request("p", 1.0)
    jobs.serial.idle("p").addCallback(lambda _: jobs.serial.request("p", 2.0))
    gate.callback(None)
    assert jobs.calls == [("p", 1.0), ("p", 2.0)] and "p" not in jobs.serial


# -- the agent's schedule() over it -------------------------------------------------------------------------------


class _Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, **kwargs: Any) -> Any:
        self.calls.append((method, kwargs))
        return {}


def test_agent_keeps_syncing_a_port_whose_sync_finished_at_once() -> None:
    """Issue 10: a port in step synced without waiting, and every later event for it was dropped."""
    agent = RestProxyAgent(AgentConfig(token="t"), task.Clock(), conn=object(), client=_Client())  # type: ignore[arg-type]
    synced: list[str] = []

    async def in_step(port_id: str, since: float) -> None:
        synced.append(port_id)

    agent._sync = in_step  # type: ignore[method-assign]
    for _ in range(3):
        agent.schedule("port-1", 0.0)
    assert synced == ["port-1"] * 3


def test_all_idle_waits_for_every_running_key_and_its_extra_passes() -> None:
    jobs = Jobs()
    assert jobs.serial.all_idle().called  # nothing running
    gate_a, gate_b, gate_b2 = jobs.gate("a"), jobs.gate("b"), jobs.gate("b")
    jobs.serial.request("a", 1.0)
    jobs.serial.request("b", 1.0)
    jobs.serial.request("b", 2.0)
    done = jobs.serial.all_idle()
    gate_a.callback(None)
    gate_b.callback(None)
    assert not done.called  # b's second pass is still running
    gate_b2.callback(None)
    assert done.called and len(jobs.serial) == 0
