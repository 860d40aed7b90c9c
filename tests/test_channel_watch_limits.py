"""Watches stay bounded: paged replay with back-pressure, caps per token and in all, lagging watchers closed; on every backend.

Events are written straight into the store (as another server would commit
them), so a backlog of megabytes takes a moment to build.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from restproxy_testing.channel_support import channel_server, insert_events, open_raw_watch, rss_kib, wait_idle
from restproxy_testing.support import ServerProcess, wait_for
from tests.test_agent_channel import Watch

WATCHERS = 12
BACKLOG = 6000  # events of ~1.1 KB: ~6.6 MB for one host
TOKENS = {f"tok-{i}": {"host": "hx", "kind": "agent"} for i in range(WATCHERS)} | {
    "tok-a": {"host": "ha", "kind": "agent"},
    "tok-b": {"host": "hb", "kind": "agent"},
    "tok-slow": {"host": "hs", "kind": "agent"},
}
CONFIG = "agent_max_watches = 16\nagent_max_watches_per_token = 2\nagent_watch_max_lag = 200\n"


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[ServerProcess]:
    with channel_server(db_url, CONFIG, TOKENS) as server:
        insert_events(db_url, "hx", BACKLOG)
        wait_for("the backlog to be dispatched", lambda: _watermark(server, "tok-0", "hx") >= BACKLOG, timeout=30)
        server.db_url = db_url  # type: ignore[attr-defined]
        yield server


def _watermark(server: ServerProcess, token: str, host: str) -> int:
    return server.request("GET", f"/agent/v1/hosts/{host}/ports", headers={"X-Auth-Token": token})[1]["seq"]


def _read_all(sock: socket.socket, timeout: float = 20.0) -> bytes:
    """Everything until the server ends the stream (EOF or reset)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_unread_replays_do_not_hold_their_backlog_in_memory(server: ServerProcess) -> None:
    pid = server.proc.pid  # type: ignore[union-attr]
    warm = open_raw_watch(server, "hx", 0, "tok-0")
    wait_idle(pid)
    warm.close()
    wait_idle(pid)
    before = rss_kib(pid)
    sockets = [open_raw_watch(server, "hx", 0, f"tok-{i}") for i in range(WATCHERS)]
    try:
        wait_idle(pid)
        grown_mib = (rss_kib(pid) - before) / 1024
        print(f"RSS growth with {WATCHERS} unread watchers of {BACKLOG} events: {grown_mib:.1f} MiB")
        # Holding each backlog (as before the fix) is >= 6.6 MB per watcher: ~80 MB here.
        assert grown_mib < 20, f"{WATCHERS} unread watchers of {BACKLOG} events grew the server by {grown_mib:.0f} MiB"
    finally:
        for s in sockets:
            s.close()


def test_a_paged_replay_delivers_every_event_in_order_then_live_ones(server: ServerProcess) -> None:
    watch = Watch(server, "hx", 0, "tok-1")
    try:
        seqs = [watch.next(timeout=20)[1]["seq"] for _ in range(BACKLOG)]
        assert seqs == sorted(set(seqs)) and len(seqs) == BACKLOG
        insert_events(server.db_url, "hx", 3)  # type: ignore[attr-defined]
        live = [watch.next()[1]["seq"] for _ in range(3)]
        assert live[0] > seqs[-1] and live == sorted(live)
    finally:
        watch.close()


def test_caps_close_the_tokens_oldest_watch_and_refuse_beyond_the_total_with_429(server: ServerProcess) -> None:
    first, second = Watch(server, "ha", 0, "tok-a"), Watch(server, "ha", 0, "tok-a")
    first.next("heartbeat"), second.next("heartbeat")
    third = Watch(server, "ha", 0, "tok-a")  # over this token's 2: the oldest goes
    try:
        assert first.next("closed")[1]["reason"]
        first.thread.join(5)
        assert not first.thread.is_alive()  # the stream ended
        third.next("heartbeat")
        assert second.thread.is_alive() and third.thread.is_alive()
        since = _watermark(server, "tok-0", "hx")
        others = [open_raw_watch(server, "hx", since, f"tok-{i % 7}") for i in range(14)]  # two per token
        try:
            wait_for("16 watches", lambda: _metric(server, "quantum_agent_watchers") >= 16)
            status, answer = server.request("GET", "/agent/v1/hosts/hb/watch?since=0", headers={"X-Auth-Token": "tok-b"})
            assert status == 429 and answer["NeutronError"]["type"] == "HTTPTooManyRequests", answer
        finally:
            for s in others:
                s.close()
        wait_for("the closed watches to go", lambda: _metric(server, "quantum_agent_watchers") <= 2)
        fourth = Watch(server, "hb", 0, "tok-b")  # room again
        fourth.next("heartbeat")
        fourth.close()
    finally:
        for w in (first, second, third):
            w.close()


def test_a_watcher_that_stops_reading_and_falls_behind_is_closed(server: ServerProcess) -> None:
    pid = server.proc.pid  # type: ignore[union-attr]
    stuck = open_raw_watch(server, "hs", _watermark(server, "tok-slow", "hs"), "tok-slow")
    wait_for("the watch", lambda: _metric(server, "quantum_agent_watchers") >= 1)
    insert_events(server.db_url, "hs", 3000)  # type: ignore[attr-defined]
    wait_idle(pid)
    wait_for("the stuck watch to be closed", lambda: _metric(server, "quantum_agent_watchers") == 0, timeout=20)
    data = _read_all(stuck)
    stuck.close()
    lines = [json.loads(line) for line in data.partition(b"\r\n\r\n")[2].split(b"\n") if line.startswith(b"{") and line.endswith(b"}")]
    seqs = [m["seq"] for m in lines if m["type"] == "event"]
    assert len(seqs) < 3000 and seqs == sorted(seqs)  # what it read (a reset may discard it), in order, then it was dropped
    assert "closing its watch" in server.log()


def _metric(server: ServerProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    time.sleep(0)
    raise AssertionError(f"no {name}")
