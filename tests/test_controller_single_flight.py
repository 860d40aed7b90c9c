"""The topology sync and the lost-state watchdog run once for every process on one database.

Real ``twistd quantum-server`` processes (``api_workers = 2``, and two servers on one database) on
PostgreSQL and MariaDB, against a real controller simulator whose ``PUT /topology`` requests are
counted: a controller restarted empty is re-synced exactly once, and a sync holder killed with
``-9`` in the middle of its ``PUT /topology`` is taken over by another process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database, wait_for
from tests.test_controller_tls_profiles import create

MULTI = [b for b in BACKENDS if b != "sqlite"]
pytestmark = pytest.mark.skipif(not MULTI, reason="needs PostgreSQL or MariaDB (QRP_TEST_BACKENDS)")

PROBE = 1  # server_probe_interval: the watchdog ticks every second
SETTLE = 4 * PROBE + 2  # long enough for any second sync (every process's watchdog tick, probes, retries) to happen


def config(workers: int, lease: float = 3.0) -> str:
    return f"[DEFAULT]\napi_workers = {workers}\nshutdown_grace_time = 5\n[RESTPROXY]\nservers = {{servers}}\n" + (
        f"server_timeout = 5\nserver_probe_interval = {PROBE}\nsync_lease = {lease}\n"
    )


@contextmanager
def servers_on_one_database(backend: str, sim: SimProcess, count: int, workers: int) -> Iterator[list[ServerProcess]]:
    """``count`` servers of ``workers`` workers each, on one new database and the simulator ``sim``."""
    with temporary_database(backend) as url, ExitStack() as stack:
        procs = []
        for _ in range(count):
            server = ServerProcess(url, config(workers).replace("{servers}", sim.address)).start(timeout=90)
            stack.callback(server.stop)
            procs.append(server)
        yield procs


def admin_pool(server: ServerProcess) -> dict[str, Any]:
    status, body = server.request("GET", "/admin/pool")
    assert status == 200, body
    return body


def populate(server: ServerProcess, networks: int = 2) -> None:
    for i in range(networks):
        net = create(server, "network", name=f"sf-{i}")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr=f"10.77.{i}.0/24")
        create(server, "port", network_id=net["id"], device_id=f"vm-{i}")


def holds_store(sim: SimProcess, networks: int) -> bool:
    counts = sim.state()["counts"]
    return bool(counts["networks"] == networks and counts["ports"] == networks)


def puts(sim: SimProcess) -> int:
    return int(sim.stats()["topology_puts"])


def watchdogs_ready(servers: list[ServerProcess]) -> None:
    """Until some process holds the watchdog lease and has checked (the pool starts a moment after the API)."""
    wait_for("a watchdog check", lambda: any(admin_pool(s).get("watchdog", {}).get("checks", 0) for s in servers), timeout=30)


def forgotten_is_resynced_once(servers: list[ServerProcess], sim: SimProcess, how: str) -> None:
    populate(servers[0])
    watchdogs_ready(servers)
    time.sleep(SETTLE)  # start-up syncs (none expected) are over
    before = puts(sim)
    if how == "forget":
        sim.forget("conflict")  # GET /health answers 409 until a PUT /topology
    else:
        sim.kill()  # every process sees it down (the traffic below and the watchdog), then it comes back empty
        for server in servers:
            for _ in range(3):
                assert server.request("GET", "/v2.0/networks")[0] == 200
        time.sleep(2 * PROBE + 0.5)
        sim.restart(forgotten=True)
        before = 0  # a new simulator process counts from zero
    wait_for("the controller holds the store again", lambda: holds_store(sim, 2), timeout=30)
    time.sleep(SETTLE)
    logs = "".join(s.log() for s in servers)
    assert puts(sim) - before == 1, f"{puts(sim) - before} PUT /topology:\n{logs}"
    # Through every server (and any of its workers), /admin/pool shows that sync.
    for server in servers:
        for _ in range(4):
            sync = admin_pool(server)["sync"]
            assert sync["last"]["result"] == "ok" and not sync["running"], sync


@pytest.mark.parametrize("backend", MULTI)
@pytest.mark.parametrize("how", ["forget", "restart"])
def test_two_workers_resync_a_controller_that_lost_its_state_exactly_once(backend: str, how: str) -> None:
    with SimProcess() as sim, servers_on_one_database(backend, sim, count=1, workers=2) as servers:
        forgotten_is_resynced_once(servers, sim, how)


@pytest.mark.parametrize("backend", MULTI)
@pytest.mark.parametrize("how", ["forget", "restart"])
def test_two_servers_on_one_database_resync_a_controller_that_lost_its_state_exactly_once(backend: str, how: str) -> None:
    with SimProcess() as sim, servers_on_one_database(backend, sim, count=2, workers=1) as servers:
        forgotten_is_resynced_once(servers, sim, how)


@pytest.mark.parametrize("backend", MULTI)
def test_a_sync_holder_killed_mid_sync_is_taken_over(backend: str) -> None:
    with SimProcess() as sim, servers_on_one_database(backend, sim, count=2, workers=1) as (first, second):
        populate(first)
        watchdogs_ready([first, second])
        before = puts(sim)
        sim.fault(methods=["PUT"], path_regex="/topology", action="hang", count=1)  # the holder's PUT never ends
        status, _ = first.request("POST", "/admin/sync")
        assert status == 202
        wait_for("the first server's PUT /topology", lambda: puts(sim) > before, timeout=15)
        running = second.request("GET", "/admin/pool")[1]["sync"]
        assert running["running"] and running["holder"] and str(first.proc.pid) in running["holder"], running  # type: ignore[union-attr]
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        killed = time.monotonic()
        sim.clear_faults()
        sim.forget("silent")  # whatever the dead run's PUT did, the next one must land
        wait_for("the second server's run", lambda: puts(sim) > before + 1, timeout=30)
        wait_for("the controller holds the store again", lambda: holds_store(sim, 2), timeout=30)
        took = time.monotonic() - killed
        print(f"\nsync holder killed -> taken over and landed: {took:.1f}s (sync_lease 3 s)")

        def recorded() -> dict[str, Any] | None:  # (the run is recorded a moment after its PUT lands)
            sync = admin_pool(second)["sync"]
            return sync if not sync["running"] and sync["generations"]["done"] >= sync["generations"]["requested"] else None

        sync = wait_for("the takeover's run recorded as done", recorded, timeout=10)
        assert sync["last"]["result"] == "ok", sync
        assert "running it here" in second.log() or "topology sync done" in second.log()
        time.sleep(SETTLE)
        assert puts(sim) == before + 2  # the killed one's and the takeover's: no more
