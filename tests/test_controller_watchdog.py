"""The consistency watchdog against real simulator processes: a controller that lost its state while
nothing changed is found and given the store's state again, on each profile.

* Floodlight (the simulator's profile answers as v0.91 does: 200 for every unknown path, so
  ``GET /health`` never says anything, attachments to unknown networks accepted, empty after a
  restart): killed and started again with no API traffic, it holds the store's state again within
  10 s of answering, with the default settings; restarted between two probes, too. While it is
  down, ``pool-status`` shows it failed. Drift of every kind (an extra network, a wrong gateway, a
  gateway the store does not have, a wrong MAC, a missing attachment) is repaired with one replay,
  and a consistent controller under steady API traffic is never re-synced (no false alarm).
* Big Switch: a controller that restarted empty and answers ``GET /health`` with 200 is re-synced
  when it answers again after being seen down.
* ``restproxy-manage check`` under ``controller_profile = auto`` detects the profile as the server
  does and reads Floodlight's own network list; a Big Switch controller that offers no read of its
  state is said to be unreadable, plainly; ``pool-status`` and ``sync`` work on every profile.
"""

from __future__ import annotations

import http.server
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor

from controller_sim.testing import SimProcess
from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database, wait_for
from server_plugin.controller import views
from server_plugin.store.db import Store
from tests.test_controller_tls_profiles import create, fl_expected, fl_list, manage, pool_lines, pool_status, update

RECOVERY_TARGET_S = 10.0


@contextmanager
def stack(sim: SimProcess, config: str = "") -> Iterator[ServerProcess]:
    """A server (SQLite) whose pool is ``sim``; ``config`` lines go under [RESTPROXY] (none: every default)."""
    sim.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[RESTPROXY]\nservers = {sim.address}\n{config}").start()
            try:
                yield server
            finally:
                server.stop()
    finally:
        sim.stop()


def populate(server: ServerProcess, networks: int = 3, ports: int = 3) -> list[dict[str, Any]]:
    """Networks with a subnet each (the last without a gateway), ``ports`` attached ports each, and one unattached."""
    nets = []
    for i in range(networks):
        net = create(server, "network", name=f"wd-{i}")
        gateway = {} if i < networks - 1 else {"gateway_ip": None}
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr=f"10.90.{i}.0/24", **gateway)
        for j in range(ports):
            create(server, "port", network_id=net["id"], device_id=f"vm-{i}-{j}")
        create(server, "port", network_id=net["id"])
        nets.append(net)
    return nets


def consistent(server: ServerProcess, sim: SimProcess) -> bool:
    try:
        return fl_list(sim) == fl_expected(server)
    except (OSError, AssertionError):
        return False


def syncs(server: ServerProcess) -> int:
    return pool_status(server)["sync"]["completed"]


def watchdog_checks(server: ServerProcess) -> int:
    """Checks so far (the watchdog starts once the pool is ready, a moment after the API answers)."""
    return pool_status(server).get("watchdog", {}).get("checks", 0)


def wait_failed(server: ServerProcess, address: str, timeout: float = 15.0) -> str:
    """Until ``restproxy-manage pool-status`` shows ``address`` failed; returns its last error."""

    def failed() -> str | None:
        result = manage("pool-status", "--url", server.url)
        _, state, error = pool_lines(result.stdout).get(address, (False, "?", None))
        return error if state == "failed" and result.returncode == 1 else None

    return wait_for(f"{address} failed in pool-status", failed, timeout=timeout)


def recovery_seconds(server: ServerProcess, sim: SimProcess, answered_at: float) -> float:
    wait_for("the controller holds the store's state", lambda: consistent(server, sim), timeout=3 * RECOVERY_TARGET_S)
    return time.monotonic() - answered_at


# -- the store's side, on every backend -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_view_digest_and_fingerprint_agree_on_every_backend(backend: str) -> None:
    from bench.bench_topology_sync import populate

    with temporary_database(backend) as url:
        populate(url, 30, 240)
        store = Store(url, global_reactor)
        try:
            fingerprint = store.run_sync(views.store_fingerprint, readonly=True)
            streamed = store.run_sync(views.store_digest, readonly=True)
            view = store.run_sync(views.store_floodlight_view, readonly=True)
            paged: dict[str, Any] = {}
            after = None
            while page := store.run_sync(views.store_floodlight_page, after, 7, readonly=True):
                paged.update(page)
                after = next(reversed(page))
        finally:
            store.stop()
    assert paged == view and len(view) == 30
    assert streamed == views.digest(view) and streamed.counts == (30, 240) == (fingerprint[0], fingerprint[4])
    net = next(iter(view.values()))
    assert net["gateway"].endswith(".1") and all(mac == mac.upper() for mac in net["ports"].values()) and len(net["ports"]) == 8


# -- Floodlight ------------------------------------------------------------------------------------


def test_simulated_floodlight_behaves_as_the_real_one_when_restarted() -> None:
    """The facts the watchdog is built on: nothing but the network list tells that Floodlight lost its state."""
    with SimProcess(profile="floodlight", forget_mode="conflict", auth="admin:secret") as sim:
        assert sim.controller("GET", "tenants/t/networks") == (200, [])  # no authentication at all
        sim.controller("PUT", "tenants/t/networks/n1", {"network": {"name": "n1", "gateway": "10.0.0.1"}})
        sim.restart(kill=True)  # comes back "forgotten", as a Floodlight restart
        assert sim.controller("GET", "tenants/any/networks") == (200, [])
        for method, path in (("GET", "health"), ("GET", "capabilities"), ("PUT", "topology"), ("POST", "tenants/t/networks/n1/ports")):
            assert sim.controller(method, path, {} if method != "GET" else None) == (200, {"status": "ok"}), (method, path)
        attach = {"attachment": {"id": "vm-1", "mac": "fa:16:3e:00:00:01"}}
        assert sim.controller("PUT", "tenants/t/networks/n1/ports/p1/attachment", attach) == (200, {"status": "ok"})
        assert sim.controller("GET", "tenants/t/networks")[1] == []  # accepted, yet no network shows it
        sim.forget(mode="conflict")
        assert sim.controller("GET", "health")[0] == 200  # never a 409, whatever the forget mode
        assert sim.stats()["responses_by_status"].get("409", 0) == 0


def test_floodlight_restarted_with_no_traffic_holds_the_store_again_within_10_s() -> None:
    """Default settings (server_probe_interval = 5, server_timeout = 10): the issue's scenario, measured."""
    sim = SimProcess(profile="floodlight")
    with stack(sim) as server:
        populate(server)
        assert consistent(server, sim)
        before = syncs(server)

        # Down: the next probe is refused, and pool-status shows it failed (exit status 1).
        sim.kill()
        error = wait_failed(server, sim.address)
        assert "refused" in error.lower(), error

        # Back, empty. Nothing but the watchdog talks to the server from here on.
        sim.start()
        answered = time.monotonic()
        assert fl_list(sim) == []
        seen_down = recovery_seconds(server, sim, answered)
        print(f"\nFloodlight seen down, REST answering -> consistent: {seen_down:.2f}s")
        assert seen_down < RECOVERY_TARGET_S
        assert pool_lines(manage("pool-status", "--url", server.url).stdout)[sim.address][1] == "ok"

        # Restarted just after a check, so that the next one finds it answering (never seen down): the digest finds it.
        checks = watchdog_checks(server)
        wait_for("a watchdog check", lambda: watchdog_checks(server) > checks, timeout=10)
        sim.restart(kill=True)
        answered = time.monotonic()
        assert fl_list(sim) == []
        between = recovery_seconds(server, sim, answered)
        print(f"Floodlight restarted between probes, REST answering -> consistent: {between:.2f}s")
        assert between < RECOVERY_TARGET_S

        assert syncs(server) == before + 2
        log = server.log()
        assert log.count("differs from the store") >= 1 and "missing on the controller" in log
        assert sim.stats()["topology_puts"] == 0  # replayed network by network: Floodlight ignores /topology
        result = manage("-c", server.config_path, "--sql-connection", server.db_url, "check")  # auto: detects Floodlight
        assert result.returncode == 0, result.stdout + result.stderr
        assert "profile: floodlight (detected" in result.stdout and "consistent with the store" in result.stdout


def test_floodlight_drift_of_every_kind_is_repaired_by_one_replay_and_stays_repaired() -> None:
    sim = SimProcess(profile="floodlight")
    with stack(sim, "server_probe_interval = 1\n") as server:
        nets = populate(server, networks=3, ports=2)
        wait_for("the first check", lambda: pool_status(server).get("watchdog", {}).get("last", {}).get("result") == "consistent")
        before = syncs(server)
        # The server's cheap digest of the store equals the digest of Floodlight's list.
        store = Store(server.db_url, global_reactor)
        try:
            store_digest = store.run_sync(views.store_digest, readonly=True)
        finally:
            store.stop()
        status, body = sim.controller("GET", "tenants/whatever/networks")
        assert store_digest == views.digest(views.parse_floodlight_list(json.dumps(body).encode()))
        assert str(store_digest) == "3 networks, 6 attachments"

        expected = fl_expected(server)
        by_id = {n["guid"]: n for n in expected}
        first, second, no_gateway = (by_id[n["id"]] for n in nets)
        sim.controller("PUT", "tenants/x/networks/stray", {"network": {"name": "stray", "gateway": "10.99.0.1"}})
        sim.controller("PUT", f"tenants/x/networks/{first['guid']}", {"network": {"name": "renamed", "gateway": "10.99.9.9"}})
        sim.controller("PUT", f"tenants/x/networks/{no_gateway['guid']}", {"network": {"name": no_gateway["name"], "gateway": "10.98.0.1"}})
        moved = second["portMac"][0]["port"]
        sim.controller("PUT", f"tenants/x/networks/{second['guid']}/ports/{moved}/attachment", {"attachment": {"mac": "fa:16:3e:ee:ee:ee"}})
        sim.controller("DELETE", f"tenants/x/networks/{second['guid']}/ports/{second['portMac'][1]['port']}/attachment")
        assert fl_list(sim) != expected

        wait_for("the drift repaired", lambda: fl_list(sim) == expected, timeout=10)
        assert syncs(server) == before + 1
        last = pool_status(server)["sync"]["last"]
        assert last["result"] == "ok" and last["networks"] == 3 and last["ports"] == 6
        # Only what differed was sent: the stray network (named, deleted), the renamed one, the gateway that
        # a PUT cannot clear (deleted and put again with its two attachments), the wrong MAC (out, in), the missing one.
        assert last["requests"] == 2 + 1 + 5 + 2 + 1, last
        assert sim.stats()["java_exceptions"] == 0
        time.sleep(3.5)  # three more checks: nothing to repair, nothing sent
        assert syncs(server) == before + 1
        assert pool_status(server)["watchdog"]["last"]["result"] == "consistent"

        # Same counts, another gateway: only the digest tells.
        sim.controller("PUT", f"tenants/x/networks/{second['guid']}", {"network": {"name": second["name"], "gateway": "10.97.0.1"}})
        wait_for("the gateway repaired", lambda: fl_list(sim) == expected, timeout=10)
        assert syncs(server) == before + 2 and pool_status(server)["sync"]["last"]["requests"] == 1


def test_a_consistent_floodlight_under_steady_traffic_is_never_resynced() -> None:
    """Changes in flight between the two reads make the digests differ for a moment: no false alarm."""
    sim = SimProcess(profile="floodlight", latency_ms=20)
    with stack(sim, "server_probe_interval = 1\n") as server:
        nets = populate(server, networks=2, ports=1)
        # First subnet IPv6: Floodlight keeps no gateway for it, and the store's view says the same.
        v6 = create(server, "network", name="v6-first")
        create(server, "subnet", network_id=v6["id"], ip_version=6, cidr="2001:db8:9::/64")
        time.sleep(1.05)  # created_at has whole seconds: the IPv6 subnet must be the first one
        create(server, "subnet", network_id=v6["id"], ip_version=4, cidr="10.92.0.0/24")
        create(server, "port", network_id=v6["id"], device_id="vm-v6")
        assert {n["guid"]: n["gateway"] for n in fl_list(sim)}[v6["id"]] is None
        checks_before = watchdog_checks(server)
        deadline = time.monotonic() + 5
        i = 0
        while time.monotonic() < deadline:
            port = create(server, "port", network_id=nets[i % 2]["id"], device_id=f"busy-{i}")
            update(server, "network", nets[i % 2]["id"], name=f"busy-{i}")
            update(server, "port", port["id"], device_id="")
            i += 1
        status = pool_status(server)
        assert status["watchdog"]["checks"] >= checks_before + 3
        # (the log's end on failure: which check asked for the sync, and why)
        assert status["sync"]["completed"] == 0 and status["watchdog"]["repairs"] == 0, (status, server.log()[-6000:])
        assert "differs from the store" not in server.log()
        assert consistent(server, sim)


def test_auto_profile_is_detected_when_a_controller_first_answers_after_the_server_started() -> None:
    sim = SimProcess(profile="floodlight").start()
    address = sim.address
    sim.kill()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[RESTPROXY]\nservers = {address}\n").start()
            try:
                wait_failed(server, address)
                status = pool_status(server)
                assert (status["profile"], status["profile_source"]) == ("bigswitch", "pending")
                assert "not known: no controller has answered" in manage("pool-status", "--url", server.url).stdout
                sim.start()
                wait_for("the profile detected", lambda: pool_status(server)["profile_source"] == "detected", timeout=10)
                assert pool_status(server)["profile"] == "floodlight"
                populate(server, networks=1, ports=1)  # Floodlight bodies: no subnet id taken for a network
                assert consistent(server, sim)
            finally:
                server.stop()
    finally:
        sim.stop()


def test_changes_are_refused_while_the_auto_profile_is_not_known() -> None:
    """Bodies for the wrong profile corrupt a Floodlight: until one controller has said which it is, nothing is sent."""
    with SimProcess(profile="floodlight") as sim, tempfile.TemporaryDirectory() as tmp:
        sim.fault(action="status", status=500, path_regex="/capabilities$")
        config = f"[RESTPROXY]\nservers = {sim.address}\nserver_probe_interval = 1\n"
        server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=config).start()
        try:
            assert pool_status(server)["profile_source"] == "pending"
            status, body = server.request("POST", "/v2.0/networks", {"network": {"name": "early", "tenant_id": "t"}})
            assert status == 500 and "not known yet" in json.dumps(body), body
            assert server.request("GET", "/v2.0/networks")[1]["networks"] == [] and fl_list(sim) == []
            sim.clear_faults()
            wait_for("the profile detected", lambda: pool_status(server)["profile_source"] == "detected", timeout=10)
            populate(server, networks=1, ports=1)
            assert consistent(server, sim)
        finally:
            server.stop()


# -- Big Switch ------------------------------------------------------------------------------------


def test_bigswitch_restarted_empty_answering_200_is_resynced_when_back() -> None:
    """A Big Switch controller offers no read of its state: one seen down is re-synced when it answers again."""
    sim = SimProcess(forget_mode="silent")  # after a restart: empty, and GET /health answers 200
    with stack(sim) as server:
        net = create(server, "network", name="bsn")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.91.0.0/24")
        create(server, "port", network_id=net["id"], device_id="vm-1")
        sim.kill()
        wait_failed(server, sim.address)
        sim.restart(forgotten=True)
        answered = time.monotonic()
        assert sim.state()["counts"]["networks"] == 0 and sim.controller("GET", "health")[0] == 200
        wait_for("the store's state on the controller", lambda: (c := sim.state()["counts"])["networks"] == 1 and c["ports"] == 1)
        elapsed = time.monotonic() - answered
        print(f"\nBig Switch seen down, answering -> re-synced: {elapsed:.2f}s")
        assert elapsed < RECOVERY_TARGET_S
        assert sim.stats()["topology_puts"] == 1
        assert "answers again; re-syncing it" in server.log()


def test_a_bigswitch_controller_without_health_is_not_marked_failed_and_is_resynced_when_back() -> None:
    """The probe asks whether it answers: a 404 to ``GET /health`` (a controller older than Icehouse's) is
    an answer. When it stops answering it is failed; when it answers again (404 included), re-synced."""
    _OlderBigSwitch.seen = []
    with tempfile.TemporaryDirectory() as tmp:
        with bigswitch_without_reads(_OlderBigSwitch) as address:
            config = f"[RESTPROXY]\nservers = {address}\nserver_probe_interval = 1\n"
            server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=config).start()
            try:
                wait_for("three checks", lambda: watchdog_checks(server) >= 3, timeout=10)
                status = pool_status(server)
                assert status["profile"] == "bigswitch" and status["servers"][0]["state"] == "ok", status
                assert status["watchdog"]["last"]["result"] == "404 Not Found"
            except BaseException:
                server.stop()
                raise
        try:
            wait_failed(server, address)
            with bigswitch_without_reads(_OlderBigSwitch, port=int(address.rsplit(":", 1)[1])):
                wait_for("back in service", lambda: pool_status(server)["servers"][0]["state"] == "ok", timeout=10)
                wait_for("a re-sync", lambda: ("PUT", "/networkService/v1.1/topology") in _OlderBigSwitch.seen, timeout=10)
        finally:
            server.stop()


# -- restproxy-manage under each profile -------------------------------------------------------------


class _BigSwitchWithoutReads(http.server.BaseHTTPRequestHandler):
    """A controller that, like a real Big Switch one, lists capabilities and offers no read of its state
    (``health = False``: an older one, without ``/health`` either). It accepts every change."""

    health = True
    seen: list[tuple[str, str]] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(("PUT", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding") == "chunked":
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                self.rfile.read(size + 2)
            self.rfile.readline()
        self._reply(200, b'{"status": "ok"}')

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/networkService/v1.1/capabilities":
            body, status = (b'["consistency"]' if self.health else b"[]"), 200
        elif self.path == "/networkService/v1.1/health" and self.health:
            body, status = b'{"status": "ok"}', 200
        else:
            body, status = b'{"error": "not found"}', 404
        self._reply(status, body)

    def log_message(self, *args: Any) -> None:
        pass


class _OlderBigSwitch(_BigSwitchWithoutReads):
    health = False


@contextmanager
def bigswitch_without_reads(handler: type[_BigSwitchWithoutReads] = _BigSwitchWithoutReads, port: int = 0) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_manage_commands_under_each_profile() -> None:
    floodlight, bigswitch = SimProcess(profile="floodlight"), SimProcess()
    with stack(floodlight) as server, bigswitch:
        populate(server, networks=2, ports=1)
        base = ("-c", server.config_path, "--sql-connection", server.db_url)

        # auto (the config's default): check detects each profile the way the server does.
        result = manage(*base, "check")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == "profile: floodlight (detected: GET /capabilities)"
        assert f"{floodlight.address}: consistent with the store (2 networks, 2 attachments)" in result.stdout
        result = manage(*base, "check", "--servers", bigswitch.address)
        assert result.returncode == 1 and "profile: bigswitch (detected" in result.stdout  # read through the simulator
        assert "network " in result.stdout and "missing on the controller" in result.stdout
        with bigswitch_without_reads() as address:
            result = manage(*base, "check", "--servers", address)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "a Big Switch controller offers no way to read its state" in result.stdout
        down = f"127.0.0.1:{_closed_port()}"
        result = manage(*base, "check", "--servers", down)
        assert result.returncode == 2 and "cannot detect it: no controller answered GET /capabilities" in result.stdout

        # Forced profiles.
        result = manage(*base, "check", "--profile", "floodlight")
        assert result.returncode == 0 and "profile:" not in result.stdout, result.stdout
        result = manage(*base, "check", "--profile", "floodlight", "--servers", down)
        assert result.returncode == 2 and "cannot read its network list: 0" in result.stdout, result.stdout
        result = manage(*base, "check", "--profile", "floodlight", "--servers", bigswitch.address)
        assert result.returncode == 2 and "is it Floodlight?" in result.stdout, result.stdout

        # pool-status and sync on Floodlight.
        result = manage("pool-status", "--url", server.url)
        assert result.returncode == 0 and result.stdout.startswith("profile: floodlight (detected)\n"), result.stdout
        assert "watchdog: every 5s" in result.stdout
        floodlight.restart()
        result = manage("sync", "--url", server.url)
        assert result.returncode == 0, result.stdout + result.stderr
        # 4 calls (2 networks, 2 attachments), or none if the watchdog got there first
        assert re.match(r"sync ok: 2 networks, 2 attachments in the store; [40] calls to ", result.stdout), result.stdout
        assert consistent(server, floodlight)
        result = manage("sync", "--url", server.url)
        assert "; 0 calls to" in result.stdout, result.stdout


def _closed_port() -> int:
    from restproxy_testing.support import free_port

    return free_port()
