"""``api_workers = 2``: two real worker processes behind one socket, on PostgreSQL and MariaDB; SQLite keeps one.

The server is a real ``twistd quantum-server`` (the parent) with its workers; clients are plain HTTP
clients opening a new connection per request, so each request is accepted afresh from the shared socket.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from restproxy_agent.channel import ChannelClient, PortWatch
from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database

MULTI = [b for b in BACKENDS if b != "sqlite"]
WORKER_HEADER = "X-Restproxy-Worker"


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _get(server: ServerProcess, path: str = "/v2.0/networks") -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader(WORKER_HEADER)
    finally:
        conn.close()


def _wait_children(server: ServerProcess, count: int, timeout: float = 60) -> set[int]:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(server.proc.pid)
        if len(kids) == count:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"expected {count} workers, have {_children(server.proc.pid)}:\n{server.log()}")


def _pids_answering(server: ServerProcess, want: set[int], timeout: float = 60) -> set[int]:
    """Concurrent clients until every pid of ``want`` has answered (the kernel favours one idle accepter)."""
    seen: set[int] = set()
    errors: list[object] = []
    deadline = time.monotonic() + timeout

    def loop() -> None:
        while not want <= seen and time.monotonic() < deadline:
            try:
                status, pid = _get(server)
                assert status == 200
                seen.add(int(pid or 0))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return seen


@pytest.fixture(params=MULTI)
def workers2(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with temporary_database(request.param) as url:
        server = ServerProcess(url, "[DEFAULT]\napi_workers = 2\nshutdown_grace_time = 10\n").start(timeout=90)
        try:
            yield server
        finally:
            server.stop()


def test_two_workers_serve_one_port(workers2: ServerProcess) -> None:
    kids = _wait_children(workers2, 2)
    assert _pids_answering(workers2, kids) == kids
    # a write through one worker is read through the other (one database)
    status, body = workers2.request("POST", "/v2.0/networks", {"network": {"tenant_id": "t1", "name": "shared"}})
    assert status == 201
    net_id = body["network"]["id"]
    for _ in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", workers2.port, timeout=30)
        conn.request("GET", f"/v2.0/networks/{net_id}", headers={"Connection": "close"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["network"]["name"] == "shared"
        conn.close()


def _client_loop(server: ServerProcess, stop: threading.Event, results: list[tuple[int, str | None]], errors: list[object]) -> None:
    while not stop.is_set():
        try:
            results.append(_get(server))
        except Exception as e:  # noqa: BLE001 - every error is a lost request
            errors.append(e)


def test_kill_one_worker_loses_no_request(workers2: ServerProcess) -> None:
    kids = _wait_children(workers2, 2)
    stop, results, errors = threading.Event(), [], []
    clients = [threading.Thread(target=_client_loop, args=(workers2, stop, results, errors)) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(1.0)
        victim = min(kids)
        # SIGTERM: the worker stops accepting, ends its requests in flight, exits; the other keeps accepting.
        os.kill(victim, signal.SIGTERM)
        replaced = _wait_replacement(workers2, kids, victim)
        time.sleep(0.5)
        before = len(results)
        assert before > 0
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert not errors, errors[:5]
    assert all(status == 200 for status, _ in results)
    assert _pids_answering(workers2, replaced) == replaced


def test_kill_9_between_requests_loses_none(workers2: ServerProcess) -> None:
    """A worker killed with SIGKILL: connections queued on the shared socket go to the other one."""
    kids = _wait_children(workers2, 2)
    victim = max(kids)
    pids: list[str | None] = []
    for i in range(200):
        if i == 20:
            os.kill(victim, signal.SIGKILL)
        status, pid = _get(workers2)  # raises on a refused or reset connection
        assert status == 200
        pids.append(pid)
    assert str(victim) not in pids[21:]
    replaced = _wait_replacement(workers2, kids, victim)
    assert victim not in replaced
    assert "restarting in" in workers2.log()


def _wait_replacement(server: ServerProcess, kids: set[int], victim: int, timeout: float = 60) -> set[int]:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _children(server.proc.pid)
        if len(now) == 2 and victim not in now:
            return now
        time.sleep(0.1)
    raise AssertionError(f"worker {victim} not replaced: {_children(server.proc.pid)}\n{server.log()}")


def test_sigterm_stops_all_workers(workers2: ServerProcess) -> None:
    assert workers2.proc is not None
    kids = _wait_children(workers2, 2)
    assert _pids_answering(workers2, kids) == kids  # both running (a worker still starting would die at once)
    workers2.proc.send_signal(signal.SIGTERM)
    assert workers2.proc.wait(40) in (0, -signal.SIGTERM)  # twistd ends with the signal it stopped for
    for pid in kids:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    log = workers2.log()
    assert "all API workers stopped" in log
    assert log.count("Main loop terminated") >= 3, log  # the parent and both workers


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif("sqlite" not in BACKENDS, reason="sqlite not in QRP_TEST_BACKENDS")
def test_sqlite_keeps_one_worker() -> None:
    with temporary_database("sqlite") as url:
        server = ServerProcess(url, "[DEFAULT]\napi_workers = 4\n").start()
        try:
            assert server.proc is not None
            assert _children(server.proc.pid) == set()  # serves itself, no workers
            status, pid = _get(server)
            assert status == 200 and pid is None
            assert "SQLite keeps one API worker" in server.log()
        finally:
            server.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("backend", MULTI)
async def test_agent_watch_and_channel_with_two_workers(backend: str) -> None:
    """Ports made through either worker reach a watch on either, in order and once, across a SIGKILL of a worker."""
    tmp = tempfile.mkdtemp(prefix="qrp-workers-")
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": {"tok": {"host": "h1"}}}, f)
    config = f"[DEFAULT]\napi_workers = 2\n[AGENT]\nagent_tokens_file = {tokens}\nagent_watch_heartbeat = 1\n"
    with temporary_database(backend) as url:
        server = ServerProcess(url, config_text=config)
        await deferToThread(server.start, 90)
        kids = await deferToThread(_wait_children, server, 2)
        await deferToThread(_pids_answering, server, kids)
        listed: list[tuple[int, list[dict[str, Any]]]] = []
        events: list[dict[str, Any]] = []
        client = ChannelClient(server.url, "tok", "h1", reactor, timeout=5)
        watch = PortWatch(client, lambda seq, ports: listed.append((seq, ports)), events.append, reactor, stall_timeout=5)
        try:
            _, net = await deferToThread(server.request, "POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
            net_id = net["network"]["id"]
            subnet = {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24", "tenant_id": "t"}}
            await deferToThread(server.request, "POST", "/v2.0/subnets", subnet)

            def ports(count: int) -> list[tuple[str, str]]:
                """``count`` ports made by concurrent clients (so through both workers): (id, worker pid)."""
                made: list[tuple[str, str]] = []

                def one() -> None:
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                    body = json.dumps({"port": {"network_id": net_id, "tenant_id": "t", "binding:host_id": "h1"}})
                    conn.request("POST", "/v2.0/ports", body=body, headers={"Content-Type": "application/json", "Connection": "close"})
                    resp = conn.getresponse()
                    assert resp.status == 201
                    made.append((json.loads(resp.read())["port"]["id"], resp.getheader(WORKER_HEADER) or ""))
                    conn.close()

                threads = [threading.Thread(target=one) for _ in range(count)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert len(made) == count
                return made

            first = await deferToThread(ports, 1)
            watch.startService()
            await _until(lambda: listed and watch.connected)
            assert [p["id"] for p in listed[0][1]] == [first[0][0]]
            batch = await deferToThread(ports, 12)
            seen = lambda: {e["object_id"] for e in events}  # noqa: E731 - a port's create, and its group's member updates
            await _until(lambda: {p for p, _ in batch} <= seen())
            assert len({pid for _, pid in batch}) == 2, batch  # made through both workers
            os.kill(max(kids), signal.SIGKILL)  # the watch's worker or the other: either way nothing is lost
            after = await deferToThread(ports, 6)
            await _until(lambda: {p for p, _ in after} <= seen(), timeout=60)
            seqs = [e["seq"] for e in events]
            assert seqs == sorted(set(seqs)), seqs  # in order, each once
            assert len(listed) == 1  # resumed, never re-listed
            result = await client.call("update_device_up", device=after[-1][0], host="h1")
            assert result["status"] == "ACTIVE"
        finally:
            await watch.stopService()
            await deferToThread(server.stop)


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time: {predicate.__doc__ or ''}")
        await task.deferLater(reactor, 0.05)


@pytest.mark.parametrize("backend", MULTI[:1])
def test_two_workers_serve_https(backend: str, tmp_path: Any) -> None:
    """use_ssl: each worker wraps the adopted socket in TLS (a client verifies the server against its CA)."""
    from tests.test_controller_tls_profiles import PKI

    pki = PKI(str(tmp_path))
    ca = pki.ca("a")
    key, cert = pki.leaf("server", "a")
    with temporary_database(backend) as url:
        server = ServerProcess(url, "[DEFAULT]\napi_workers = 2\n", tls=(key, cert, ca)).start(timeout=90)
        try:
            assert server.url.startswith("https://")
            _wait_children(server, 2)
            status, body = server.request("GET", "/v2.0/networks")
            assert status == 200 and body == {"networks": []}
        finally:
            server.stop()


def test_workers_stop_when_the_parent_is_killed(workers2: ServerProcess) -> None:
    """A parent killed with SIGKILL leaves no worker holding the port: they see their stdin close and stop."""
    assert workers2.proc is not None
    kids = _wait_children(workers2, 2)
    assert _pids_answering(workers2, kids) == kids
    workers2.proc.kill()
    workers2.proc.wait(10)
    deadline = time.monotonic() + 40
    while any(os.path.exists(f"/proc/{pid}") and not _zombie(pid) for pid in kids):
        assert time.monotonic() < deadline, f"workers still running:\n{workers2.log()}"
        time.sleep(0.1)
    assert workers2.log().count("the parent is gone; stopping") == 2
