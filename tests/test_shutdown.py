"""SIGTERM during a burst of creates (real processes): every answered create is in the store and on the
controller, every accepted one is finished or journaled and repaired at the next start, watchers get a
clean end of stream, and the process exits within the grace time."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.channel_support import TOKENS
from restproxy_testing.support import ServerProcess, temporary_database, wait_for

BURST = 24
TENANT = "t-shutdown"


# (controller latency ms, grace s): calls that end within the grace time (every create answered), and calls
# the grace time cuts short (the process exits on time; those creates are journaled and repaired at the next start).
CASES = {"drained": (400, 6.0), "cut-short": (4000, 1.5)}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[SimProcess, float, str]]:
    latency, grace = CASES[request.param]
    controller = SimProcess(latency_ms=latency).start()  # creates stay in flight long enough to be caught by the SIGTERM
    try:
        yield controller, grace, request.param
    finally:
        controller.stop()


def _server(db_url: str, sim: SimProcess, tmp: str, grace: float) -> ServerProcess:
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": TOKENS}, f)
    config = (
        f"[DEFAULT]\nshutdown_grace_time = {grace}\n"
        f"[RESTPROXY]\nservers = {sim.address}\ncontroller_profile = bigswitch\nserver_timeout = 5\nserver_probe_interval = 0\n"
        f"[AGENT]\nagent_tokens_file = {tokens}\nagent_watch_heartbeat = 1\n"
    )
    return ServerProcess(db_url, config_text=config)


def _create(server: ServerProcess, name: str, results: dict[str, Any], delay: float) -> None:
    time.sleep(delay)
    body = json.dumps({"network": {"name": name, "tenant_id": TENANT}}).encode()
    req = urllib.request.Request(server.url + "/v2.0/networks", data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            results[name] = (resp.status, json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        results[name] = (e.code, None)
    except OSError as e:  # refused after the listener closed, or reset: not answered
        results[name] = (0, str(e))


def _watch(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"GET /agent/v1/hosts/h1/watch?since=0 HTTP/1.1\r\nHost: t\r\nX-Auth-Token: tok-h1\r\n\r\n")
    return s


def _read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_sigterm_during_a_burst_of_creates_loses_nothing(case: tuple[SimProcess, float, str]) -> None:
    sim, grace, name = case
    with temporary_database("sqlite") as db, tempfile.TemporaryDirectory() as tmp:
        server = _server(db, sim, tmp, grace).start()
        try:
            watch = _watch(server)
            wait_for("the watch to start", lambda: "watching from 0" in server.log())
            results: dict[str, Any] = {}
            # A burst spread over a few seconds: the SIGTERM comes after the first answer, with creates in flight.
            threads = [threading.Thread(target=_create, args=(server, f"n{i}", results, i * 0.2)) for i in range(BURST)]
            for thread in threads:
                thread.start()
            wait_for("a first create answered", lambda: any(status == 201 for status, _ in list(results.values())), timeout=15)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            server.proc.wait(grace + 10)
            exited_after = time.monotonic() - signalled
            stream = _read_to_eof(watch)
            for thread in threads:
                thread.join(30)

            assert exited_after < grace + 3, f"exited {exited_after:.1f}s after SIGTERM"
            assert server.proc.returncode in (0, -signal.SIGTERM), server.log()  # twistd re-raises the signal it stopped on
            assert stream.endswith(b"0\r\n\r\n"), stream[-200:]  # the chunked stream ended, not cut
            assert b'"type":"closed"' in stream
            answered = {name: body["network"]["id"] for name, (status, body) in results.items() if status == 201}
            assert all(status in (201, 0, 503) for status, _ in results.values()), results
            assert answered, results  # the SIGTERM came during the burst, not before it
            cut = [name for name, (status, error) in results.items() if status == 0 and "refused" not in str(error)]
            if name == "drained":
                assert cut == [], results  # every create the server had accepted was answered; later ones were refused
            else:
                assert cut, results  # the grace time cut some short
            log = server.log()
            assert "Traceback" not in log, log[max(log.find("Traceback") - 600, 0) :][:4000]

            # After a restart (which repairs the journal) every network the store has is on the controller:
            # the answered ones, and those accepted but cut short by the shutdown.
            server.start()
            _, listed = server.request("GET", f"/v2.0/networks?tenant_id={TENANT}")
            stored = {n["name"]: n["id"] for n in listed["networks"]}
            assert answered.items() <= stored.items()

            def on_controller() -> bool:
                return {n["id"] for n in sim.state()["networks"]} >= set(stored.values())

            wait_for("the journal to be repaired", on_controller, timeout=20)
            # The repair closes its journal entries once the controller's answers are back: a moment after they are in.
            wait_for("the journal to be closed", lambda: server.request("GET", "/admin/pool")[1]["journal"] == [], timeout=10)
        finally:
            server.stop()
