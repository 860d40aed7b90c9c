"""Store and controller stay consistent through crashes and through a storm of faults.

1. A server killed between its store commit and the controller's answer (the
   call hangs on the simulator) leaves a journal entry; the next server on the
   same database logs it, runs exactly one topology sync, empties the journal,
   and the controller then holds what the store holds. For a delete, the object
   is still there on both sides (the client never got an answer).
2. Chaos: concurrent clients run 1,000+ mixed mutations while the controller
   answers 500/503/409, drops connections, hangs or answers too late, and
   forgets its state now and then. Clients only ever see 2xx, 4xx or a 500
   RemoteRestError, every 2xx is in the store, every 500 left no trace, and once
   the faults are cleared the controller converges on the store by itself.

In between, the rules one fault at a time (each found by the two above): a
409 whose re-sync fails is refused and undone; an undo whose old address was
taken meanwhile still ends in a clean 500; a DELETE that meets a lost state
re-syncs and runs again, and asks for one more sync if the state is still lost.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import attrs
import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.support import BACKENDS, ROOT, ServerProcess, temporary_database

TENANT = "t-consistency"
API_PATHS = r"^/networkService/v1\.1/"


# -- helpers ------------------------------------------------------------------------------------


def _config(sims: list[SimProcess], **options: Any) -> str:
    lines = [f"servers = {','.join(s.address for s in sims)}", "server_probe_interval = 0", "controller_profile = bigswitch"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "[RESTPROXY]\n" + "\n".join(lines) + "\n"


def _check(db_url: str, sim: SimProcess) -> tuple[int, str]:
    """``restproxy-manage check`` against one simulator: (exit code, output)."""
    command = ["--sql-connection", db_url, "check", "--servers", sim.address, "--profile", "bigswitch"]
    result = subprocess.run([sys.executable, "-m", "server_plugin.manage", *command], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return result.returncode, result.stdout + result.stderr


def _wait_consistent(db_url: str, sim: SimProcess, timeout: float) -> float:
    """Poll the check until it passes; returns how long that took."""
    started = time.monotonic()
    while True:
        code, output = _check(db_url, sim)
        if code == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"store and controller still differ after {timeout:.0f}s:\n{output}")
        time.sleep(0.25)


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _pool(server: ServerProcess) -> dict[str, Any]:
    status, body = server.request("GET", "/admin/pool")
    assert status == 200, body
    return body


def _ok(server: ServerProcess, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, reply = server.request(method, path, body)
    assert status == expect, (method, path, status, reply)
    return reply


def _sim_network(sim: SimProcess, net_id: str) -> dict[str, Any] | None:
    return next((n for n in sim.state()["networks"] if n["id"] == net_id), None)


def _sim_port(sim: SimProcess, net_id: str, port_id: str) -> dict[str, Any] | None:
    net = _sim_network(sim, net_id)
    return None if net is None else next((p for p in net["ports"] if p["id"] == port_id), None)


# -- 1. a crash between the store and the controller ---------------------------------------------


@attrs.define
class CrashCase:
    """One mutation interrupted by a SIGKILL while its controller call hangs."""

    setup: Callable[[ServerProcess], dict[str, Any]]
    request: Callable[[dict[str, Any]], tuple[str, str, Any]]
    hang: Callable[[dict[str, Any]], dict[str, Any]]  # the fault rule that holds the call
    journaled: tuple[str, str]  # (op, kind) of the entry left behind
    object_id: Callable[[ServerProcess, dict[str, Any]], str]
    diverged: bool  # whether store and controller differ while the server is down
    verify: Callable[[ServerProcess, SimProcess, dict[str, Any], str], None]


def _setup_network(server: ServerProcess, with_port: str | None = None) -> dict[str, Any]:
    net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "crash-net", "tenant_id": TENANT}}, 201)["network"]
    subnet = {"network_id": net["id"], "ip_version": 4, "cidr": "10.7.0.0/24", "tenant_id": TENANT}
    _ok(server, "POST", "/v2.0/subnets", {"subnet": subnet}, 201)
    ctx = {"net": net}
    if with_port is not None:
        port = {"network_id": net["id"], "tenant_id": TENANT, "name": "crash-port", "device_id": with_port}
        ctx["port"] = _ok(server, "POST", "/v2.0/ports", {"port": port}, 201)["port"]
    return ctx


def _port_body(net_id: str, **values: Any) -> dict[str, Any]:
    return dict(values, network_id=net_id, tenant_id=TENANT)


def _find(server: ServerProcess, collection: str, name: str) -> str:
    items = _ok(server, "GET", f"/v2.0/{collection}?name={name}")[collection]
    assert len(items) == 1, items
    return items[0]["id"]


def _verify_created_network(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    assert _ok(server, "GET", f"/v2.0/networks/{object_id}")["network"]["name"] == "crash-created"
    held = _sim_network(sim, object_id)
    assert held is not None and held["name"] == "crash-created"


def _verify_created_port(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    port = _ok(server, "GET", f"/v2.0/ports/{object_id}")["port"]
    held = _sim_port(sim, ctx["net"]["id"], object_id)
    assert held is not None and held["attachment"] == {"id": "vm-crash", "mac": port["mac_address"]}


def _verify_updated_network(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    assert _ok(server, "GET", f"/v2.0/networks/{object_id}")["network"]["name"] == "renamed-before-crash"
    held = _sim_network(sim, object_id)
    assert held is not None and held["name"] == "renamed-before-crash"


def _verify_moved_port(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    assert _ok(server, "GET", f"/v2.0/ports/{object_id}")["port"]["device_id"] == "vm-b"
    held = _sim_port(sim, ctx["net"]["id"], object_id)
    assert held is not None and held["attachment"] == {"id": "vm-b", "mac": ctx["port"]["mac_address"]}


def _verify_network_kept(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    # The client never got an answer: the delete did not happen, on either side.
    assert _ok(server, "GET", f"/v2.0/networks/{object_id}")["network"]["name"] == "crash-net"
    assert _sim_network(sim, object_id) is not None


def _verify_port_kept(server: ServerProcess, sim: SimProcess, ctx: dict[str, Any], object_id: str) -> None:
    assert _ok(server, "GET", f"/v2.0/ports/{object_id}")["port"]["device_id"] == "vm-a"
    held = _sim_port(sim, ctx["net"]["id"], object_id)
    # The attachment DELETE had gone through before the port DELETE hung: the repair plugs it back.
    assert held is not None and held["attachment"] == {"id": "vm-a", "mac": ctx["port"]["mac_address"]}


CRASH_CASES = {
    "create_network": CrashCase(
        setup=lambda server: {},
        request=lambda ctx: ("POST", "/v2.0/networks", {"network": {"name": "crash-created", "tenant_id": TENANT}}),
        hang=lambda ctx: {"methods": ["POST"], "path_regex": r"/networks$"},
        journaled=("create", "network"),
        object_id=lambda server, ctx: _find(server, "networks", "crash-created"),
        diverged=True,
        verify=_verify_created_network,
    ),
    "create_plugged_port": CrashCase(  # the port POST lands, the attachment PUT hangs
        setup=lambda server: _setup_network(server),
        request=lambda ctx: ("POST", "/v2.0/ports", {"port": _port_body(ctx["net"]["id"], name="crash-created", device_id="vm-crash")}),
        hang=lambda ctx: {"methods": ["PUT"], "path_regex": r"/attachment$"},
        journaled=("create", "port"),
        object_id=lambda server, ctx: _find(server, "ports", "crash-created"),
        diverged=True,
        verify=_verify_created_port,
    ),
    "update_network": CrashCase(
        setup=lambda server: _setup_network(server),
        request=lambda ctx: ("PUT", f"/v2.0/networks/{ctx['net']['id']}", {"network": {"name": "renamed-before-crash"}}),
        hang=lambda ctx: {"methods": ["PUT"], "path_regex": f"/networks/{ctx['net']['id']}$"},
        journaled=("update", "network"),
        object_id=lambda server, ctx: ctx["net"]["id"],
        diverged=True,
        verify=_verify_updated_network,
    ),
    "move_port": CrashCase(  # the old attachment is deleted, the new one hangs
        setup=lambda server: _setup_network(server, with_port="vm-a"),
        request=lambda ctx: ("PUT", f"/v2.0/ports/{ctx['port']['id']}", {"port": {"device_id": "vm-b"}}),
        hang=lambda ctx: {"methods": ["PUT"], "path_regex": r"/attachment$"},
        journaled=("update", "port"),
        object_id=lambda server, ctx: ctx["port"]["id"],
        diverged=True,
        verify=_verify_moved_port,
    ),
    "delete_network": CrashCase(
        setup=lambda server: _setup_network(server),
        request=lambda ctx: ("DELETE", f"/v2.0/networks/{ctx['net']['id']}", None),
        hang=lambda ctx: {"methods": ["DELETE"], "path_regex": f"/networks/{ctx['net']['id']}$"},
        journaled=("delete", "network"),
        object_id=lambda server, ctx: ctx["net"]["id"],
        diverged=False,  # nothing reached the controller
        verify=_verify_network_kept,
    ),
    "delete_plugged_port": CrashCase(  # the attachment DELETE lands, the port DELETE hangs
        setup=lambda server: _setup_network(server, with_port="vm-a"),
        request=lambda ctx: ("DELETE", f"/v2.0/ports/{ctx['port']['id']}", None),
        hang=lambda ctx: {"methods": ["DELETE"], "path_regex": f"/ports/{ctx['port']['id']}$"},
        journaled=("delete", "port"),
        object_id=lambda server, ctx: ctx["port"]["id"],
        diverged=True,
        verify=_verify_port_kept,
    ),
}


@pytest.mark.parametrize("case", list(CRASH_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_between_store_and_controller_is_repaired_at_restart(backend: str, case: str) -> None:
    spec = CRASH_CASES[case]
    with ExitStack() as stack:
        db_url = stack.enter_context(temporary_database(backend))
        sim = SimProcess().start()
        stack.callback(sim.stop)
        config = _config([sim], server_timeout=60)  # the kill comes long before the pool would give up
        first = ServerProcess(db_url, config_text=config).start()
        stack.callback(first.stop)
        ctx = spec.setup(first)
        assert _check(db_url, sim)[0] == 0
        sim.fault(action="hang", **spec.hang(ctx))

        outcome: dict[str, Any] = {}

        def client() -> None:
            try:
                outcome["reply"] = first.request(*spec.request(ctx))
            except OSError as e:  # the server dies under the request
                outcome["error"] = e

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        # The store transaction (change + journal entry) has committed; the controller holds the call.
        # (The setup's entries are closed in batches: wait until only the hung call's is left.)
        journal = _wait_for(
            lambda: sim.stats()["hung_now"] == 1 and len(open_ := _pool(first)["journal"]) == 1 and open_, 15, "the hung controller call"
        )
        assert [(e["op"], e["kind"]) for e in journal] == [spec.journaled]
        object_id = spec.object_id(first, ctx)
        assert journal[0]["object_id"] == object_id

        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)
        thread.join(35)
        assert not thread.is_alive() and "reply" not in outcome, outcome  # the client never got an answer
        _wait_for(lambda: sim.stats()["hung_now"] == 0, 10, "the simulator to notice the dead client")
        sim.clear_faults()
        assert sim.stats()["topology_puts"] == 0
        code, output = _check(db_url, sim)
        assert code == (1 if spec.diverged else 0), output

        second = ServerProcess(db_url, config_text=config).start()
        stack.callback(second.stop)
        status = _wait_for(
            lambda: (s := _pool(second))["sync"]["completed"] + s["sync"]["failed"] >= 1 and s["journal"] == [] and s,
            20,
            "the repair sync and an empty journal",
        )
        op, kind = spec.journaled
        assert f"unfinished controller call from before restart: {op} {kind} {object_id}" in second.log()
        sync = status["sync"]
        assert (sync["completed"], sync["failed"]) == (1, 0), sync
        assert sync["last"]["reasons"] == ["1 unfinished controller call(s) from before restart"]
        assert sim.stats()["topology_puts"] == 1
        code, output = _check(db_url, sim)
        assert code == 0, output
        spec.verify(second, sim, ctx, object_id)


# -- the rules, one fault at a time ----------------------------------------------------------------


@contextmanager
def _one_controller(**options: Any) -> Iterator[tuple[ServerProcess, SimProcess, str]]:
    with ExitStack() as stack:
        db_url = stack.enter_context(temporary_database("sqlite"))
        sim = SimProcess().start()
        stack.callback(sim.stop)
        server = ServerProcess(db_url, config_text=_config([sim], **options)).start()
        stack.callback(server.stop)
        yield server, sim, db_url


def _everything(server: ServerProcess) -> dict[str, Any]:
    return {c: sorted(_ok(server, "GET", f"/v2.0/{c}")[c], key=lambda x: x["id"]) for c in ("networks", "subnets", "ports")}


def _empty_journal(server: ServerProcess) -> None:
    _wait_for(lambda: _pool(server)["journal"] == [], 5, "an empty journal")  # confirmed entries are closed in batches


@pytest.mark.parametrize("mutation", ["create_network", "update_network", "create_subnet", "create_port", "update_port"])
def test_a_conflict_whose_resync_fails_is_refused_and_leaves_no_trace(mutation: str) -> None:
    """409 -> the sync that should carry the change fails -> 500, and the store is as it was."""
    with _one_controller(server_timeout=2, sync_timeout=2) as (server, sim, db_url):
        net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "net", "tenant_id": TENANT}}, 201)["network"]
        subnet = {"network_id": net["id"], "ip_version": 4, "cidr": "10.5.0.0/24", "tenant_id": TENANT}
        _ok(server, "POST", "/v2.0/subnets", {"subnet": subnet}, 201)
        port = _ok(server, "POST", "/v2.0/ports", {"port": _port_body(net["id"], device_id="vm-1")}, 201)["port"]
        # Timestamps have a resolution of one second: from the next one on, a leaked update shows.
        _wait_for(lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > port["updated_at"], 3, "the next second")
        before = _everything(server)
        sim.forget()  # every mutation is 409 until a /topology PUT...
        sim.fault(action="status", status=500, methods=["PUT"], path_regex=r"/topology$")  # ...which fails
        method, path, body = {
            "create_network": ("POST", "/v2.0/networks", {"network": {"name": "new", "tenant_id": TENANT}}),
            "update_network": ("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed"}}),
            "create_subnet": ("POST", "/v2.0/subnets", {"subnet": dict(subnet, cidr="10.6.0.0/24")}),
            "create_port": ("POST", "/v2.0/ports", {"port": _port_body(net["id"], device_id="vm-2")}),
            "update_port": ("PUT", f"/v2.0/ports/{port['id']}", {"port": {"device_id": "vm-3"}}),
        }[mutation]
        status, reply = server.request(method, path, body)
        assert status == 500 and reply["NeutronError"]["type"] == "RemoteRestError", reply
        assert "re-sync failed" in reply["NeutronError"]["message"]
        assert _everything(server) == before
        _empty_journal(server)
        sim.clear_faults()
        _wait_consistent(db_url, sim, timeout=20)  # the failed sync is retried in the background


def test_a_refused_readdress_whose_old_address_was_taken_meanwhile_is_a_clean_500() -> None:
    """The undo cannot give the port back an address another port took during the call: it must not fail for that."""
    with _one_controller(server_timeout=2) as (server, sim, db_url):
        net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "net", "tenant_id": TENANT}}, 201)["network"]
        subnet = {"network_id": net["id"], "ip_version": 4, "cidr": "10.8.0.0/24", "tenant_id": TENANT}
        subnet_id = _ok(server, "POST", "/v2.0/subnets", {"subnet": subnet}, 201)["subnet"]["id"]
        fixed = {"fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.8.0.10"}]}
        port = _ok(server, "POST", "/v2.0/ports", {"port": _port_body(net["id"], name="p", **fixed)}, 201)["port"]
        sim.fault(action="hang", methods=["PUT"], path_regex=f"/ports/{port['id']}$")
        outcome: dict[str, Any] = {}
        readdress = {"port": {"name": "moved", "fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.8.0.20"}]}}
        thread = threading.Thread(target=lambda: outcome.update(reply=server.request("PUT", f"/v2.0/ports/{port['id']}", readdress)))
        thread.start()
        _wait_for(lambda: sim.stats()["hung_now"] == 1, 10, "the hung port update")
        # The store has released 10.8.0.10 already: another port may take it while the call is out.
        other = _ok(server, "POST", "/v2.0/ports", {"port": _port_body(net["id"], name="q", **fixed)}, 201)["port"]
        thread.join(30)
        status, reply = outcome["reply"]
        assert status == 500 and reply["NeutronError"]["type"] == "RemoteRestError", reply
        now = _ok(server, "GET", f"/v2.0/ports/{port['id']}")["port"]
        # Everything is undone but the address that is someone else's now (restore_port: "taken back if still free").
        assert {k: v for k, v in now.items() if k != "fixed_ips"} == {k: v for k, v in port.items() if k != "fixed_ips"}
        assert now["fixed_ips"] == []
        assert _ok(server, "GET", f"/v2.0/ports/{other['id']}")["port"]["fixed_ips"] == fixed["fixed_ips"]
        _empty_journal(server)
        sim.clear_faults()
        _wait_consistent(db_url, sim, timeout=20)


@pytest.mark.parametrize("kind", ["network", "port"])
def test_a_delete_that_meets_a_lost_state_resyncs_and_runs_again(kind: str) -> None:
    """409 on a DELETE is a lost state as on any call: one sync, then the delete again from its checks."""
    with _one_controller(server_timeout=2) as (server, sim, db_url):
        net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "net", "tenant_id": TENANT}}, 201)["network"]
        target = net
        if kind == "port":
            target = _ok(server, "POST", "/v2.0/ports", {"port": _port_body(net["id"], device_id="vm-1")}, 201)["port"]
        sim.forget()
        status, reply = server.request("DELETE", f"/v2.0/{kind}s/{target['id']}")
        assert status == 204, reply
        assert server.request("GET", f"/v2.0/{kind}s/{target['id']}")[0] == 404
        assert sim.stats()["topology_puts"] == 1
        _empty_journal(server)
        assert _check(db_url, sim)[0] == 0


def test_a_delete_still_meeting_a_lost_state_after_the_sync_is_refused_and_asks_for_another() -> None:
    with _one_controller(server_timeout=2) as (server, sim, db_url):
        net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "net", "tenant_id": TENANT}}, 201)["network"]
        sim.fault(action="status", status=409, count=2, methods=["DELETE"])  # before and after the sync
        status, reply = server.request("DELETE", f"/v2.0/networks/{net['id']}")
        assert status == 500 and "still lost its state after a sync" in reply["NeutronError"]["message"], reply
        assert _ok(server, "GET", f"/v2.0/networks/{net['id']}")["network"]["name"] == "net"
        # The controller said once more that it needs a sync: it gets one without waiting for the next call.
        _wait_for(lambda: sim.stats()["topology_puts"] == 2, 10, "the second sync")
        _empty_journal(server)
        assert _check(db_url, sim)[0] == 0


# -- 2. chaos ----------------------------------------------------------------------------------

CHAOS_BACKENDS = [b for b in BACKENDS if b in ("sqlite", "postgresql")]
CHAOS_OPS = int(os.environ.get("QRP_CHAOS_OPS", "1200"))
CHAOS_THREADS = int(os.environ.get("QRP_CHAOS_THREADS", "12"))
CHAOS_SEED = int(os.environ.get("QRP_CHAOS_SEED", "1729"))

# On the primary controller, for every API request (first matching non-delay rule decides).
CHAOS_FAULTS: list[dict[str, Any]] = [
    {"action": "status", "status": 500, "fraction": 0.05},
    {"action": "status", "status": 503, "fraction": 0.06},
    {"action": "status", "status": 409, "fraction": 0.04},
    {"action": "drop", "fraction": 0.04},
    {"action": "hang", "fraction": 0.02},  # the server gives up after server_timeout
    {"action": "delay", "latency_ms": 1300, "fraction": 0.02},  # an answer that comes too late
    {"action": "delay", "latency_ms": 30, "fraction": 0.2},  # slow but in time
]


class Tally:
    """Thread-safe counters and the list of things that must not happen."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = 0
        self.lock = threading.Lock()
        self.outcomes: Counter[tuple[str, int]] = Counter()
        self.problems: list[str] = []
        self.slowest = 0.0

    def more(self) -> bool:
        return self.started < self.total

    def begin(self) -> None:
        with self.lock:
            self.started += 1

    def record(self, op: str, status: int, seconds: float) -> None:
        with self.lock:
            self.outcomes[(op, status)] += 1
            self.slowest = max(self.slowest, seconds)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class ChaosClient:
    """One client thread: mutates only objects it created, and knows exactly what the store should hold for them."""

    def __init__(self, server: ServerProcess, index: int, shared: dict[str, Any], tally: Tally) -> None:
        self.server = server
        self.index = index
        self.shared = shared
        self.tally = tally
        self.rng = random.Random(f"{CHAOS_SEED}-{index}")
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.failed_creates: list[tuple[str, str]] = []  # (collection, unique name) of creates answered 500
        self.serial = 0
        self.subnet_serial = 0

    # -- one request, judged
    def call(self, op: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; ServerProcess.request gives up after 30 s, so a hang shows up as "no answer"."""
        self.tally.begin()
        started = time.monotonic()
        try:
            status, reply = self.server.request(method, path, body)
        except OSError as e:
            self.tally.problem(f"{op} {method} {path}: no answer after {time.monotonic() - started:.1f}s ({e})")
            return 0, None
        seconds = time.monotonic() - started
        self.tally.record(op, status, seconds)
        error_type = (reply or {}).get("NeutronError", {}).get("type") if isinstance(reply, dict) else None
        if status >= 500 and not (status == 500 and error_type == "RemoteRestError"):
            self.tally.problem(f"{op} {method} {path}: {status} {reply}")
        elif 400 <= status < 500 and not (op == "readdress_port" and status == 409 and error_type == "IpAddressInUse"):
            # Every other request is valid for the objects as this client knows them.
            self.tally.problem(f"{op} {method} {path}: unexpected {status} {reply}")
        return status, reply

    def name(self, kind: str) -> str:
        self.serial += 1
        return f"c{self.index}-{kind}-{self.serial}"

    def run(self) -> None:
        ops: list[tuple[Callable[[], None], float]] = [
            (self.create_network, 3.0 if len(self.networks) < 3 else 0.5),
            (self.update_network, 2.0),
            (self.delete_network, 1.0),
            (self.create_subnet, 2.0),
            (self.update_subnet, 1.5),
            (self.delete_subnet, 1.0),
            (self.create_port, 5.0 if len(self.ports) < 6 else 1.0),
            (self.update_port, 2.0),
            (self.plug_port, 2.0),
            (self.unplug_port, 1.5),
            (self.move_port, 2.0),
            (self.readdress_port, 2.0),
            (self.delete_port, 2.0),
        ]
        while self.tally.more():
            weights = [w for _, w in ops]
            op = self.rng.choices([o for o, _ in ops], weights)[0]
            op()
            ops[0] = (self.create_network, 3.0 if len(self.networks) < 3 else 0.5)
            ops[6] = (self.create_port, 5.0 if len(self.ports) < 6 else 1.0)

    # -- networks
    def create_network(self) -> None:
        name = self.name("net")
        body = {"network": {"name": name, "tenant_id": TENANT, "admin_state_up": self.rng.random() < 0.8}}
        status, reply = self.call("create_network", "POST", "/v2.0/networks", body)
        if status == 201:
            self.networks[reply["network"]["id"]] = reply["network"]
        elif status == 500:
            self.failed_creates.append(("networks", name))

    def _pick(self, items: dict[str, Any], where: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any] | None:
        candidates = [v for _, v in sorted(items.items()) if where(v)]
        return self.rng.choice(candidates) if candidates else None

    def update_network(self) -> None:
        net = self._pick(self.networks)
        if net is None:
            return self.create_network()
        body = {"network": {"name": self.name("renamed"), "admin_state_up": self.rng.random() < 0.7}}
        status, reply = self.call("update_network", "PUT", f"/v2.0/networks/{net['id']}", body)
        if status == 200:
            self.networks[net["id"]] = reply["network"]

    def delete_network(self) -> None:
        net = self._pick(self.networks, lambda n: not any(p["network_id"] == n["id"] for p in self.ports.values()))
        if net is None:
            return
        status, _ = self.call("delete_network", "DELETE", f"/v2.0/networks/{net['id']}")
        if status == 204:
            del self.networks[net["id"]]
            for subnet_id in [s for s, v in self.subnets.items() if v["network_id"] == net["id"]]:
                del self.subnets[subnet_id]

    def _refresh_network(self, net_id: str) -> None:
        """A subnet change also stamps its network: take the network as the store has it now."""
        status, reply = self.server.request("GET", f"/v2.0/networks/{net_id}")
        assert status == 200, reply
        self.networks[net_id] = reply["network"]

    # -- subnets
    def create_subnet(self) -> None:
        net = self._pick(self.networks, lambda n: sum(s["network_id"] == n["id"] for s in self.subnets.values()) < 2)
        if net is None:
            return self.create_network()
        name = self.name("subnet")
        self.subnet_serial += 1  # unique per client: never an overlap on one network
        cidr = f"10.{self.index + 1}.{self.subnet_serial % 256}.0/24"
        body = {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr, "tenant_id": TENANT, "name": name}}
        status, reply = self.call("create_subnet", "POST", "/v2.0/subnets", body)
        if status == 201:
            self.subnets[reply["subnet"]["id"]] = reply["subnet"]
            self._refresh_network(net["id"])
        elif status == 500:
            self.failed_creates.append(("subnets", name))

    def update_subnet(self) -> None:
        subnet = self._pick(self.subnets)
        if subnet is None:
            return self.create_subnet()
        dns = [f"10.53.0.{self.rng.randint(1, 9)}"]
        body = {"subnet": {"name": self.name("renamed"), "dns_nameservers": dns, "enable_dhcp": self.rng.random() < 0.5}}
        status, reply = self.call("update_subnet", "PUT", f"/v2.0/subnets/{subnet['id']}", body)
        if status == 200:
            self.subnets[subnet["id"]] = reply["subnet"]

    def delete_subnet(self) -> None:
        in_use = {ip["subnet_id"] for p in self.ports.values() for ip in p["fixed_ips"]}
        subnet = self._pick(self.subnets, lambda s: s["id"] not in in_use)
        if subnet is None:
            return
        status, _ = self.call("delete_subnet", "DELETE", f"/v2.0/subnets/{subnet['id']}")
        if status == 204:
            del self.subnets[subnet["id"]]
            self._refresh_network(subnet["network_id"])

    # -- ports
    def create_port(self) -> None:
        nets = [*sorted(self.networks), self.shared["network"]["id"]]
        net_id = self.rng.choice(nets)
        name = self.name("port")
        values: dict[str, Any] = {"network_id": net_id, "tenant_id": TENANT, "name": name}
        if self.rng.random() < 0.5:
            values["device_id"] = self.name("vm")
        status, reply = self.call("create_port", "POST", "/v2.0/ports", {"port": values})
        if status == 201:
            self.ports[reply["port"]["id"]] = reply["port"]
        elif status == 500:
            self.failed_creates.append(("ports", name))

    def _update_port(self, op: str, port: dict[str, Any] | None, values: dict[str, Any]) -> None:
        if port is None:
            return self.create_port()
        status, reply = self.call(op, "PUT", f"/v2.0/ports/{port['id']}", {"port": values})
        if status == 200:
            self.ports[port["id"]] = reply["port"]

    def update_port(self) -> None:
        self._update_port("update_port", self._pick(self.ports), {"name": self.name("renamed"), "admin_state_up": self.rng.random() < 0.7})

    def plug_port(self) -> None:
        port = self._pick(self.ports, lambda p: not p["device_id"])
        self._update_port("plug_port", port, {"device_id": self.name("vm"), "binding:host_id": f"host-{self.rng.randint(1, 3)}"})

    def unplug_port(self) -> None:
        self._update_port("unplug_port", self._pick(self.ports, lambda p: bool(p["device_id"])), {"device_id": ""})

    def move_port(self) -> None:
        self._update_port("move_port", self._pick(self.ports, lambda p: bool(p["device_id"])), {"device_id": self.name("vm")})

    def readdress_port(self) -> None:
        """A port on the shared network gets an address from this client's own slice (others pick at random in a /16)."""
        shared_net, shared_subnet = self.shared["network"]["id"], self.shared["subnet"]["id"]
        port = self._pick(self.ports, lambda p: p["network_id"] == shared_net)
        address = f"10.200.{self.index + 1}.{self.rng.randint(2, 12)}"
        self._update_port("readdress_port", port, {"fixed_ips": [{"subnet_id": shared_subnet, "ip_address": address}]})

    def delete_port(self) -> None:
        port = self._pick(self.ports)
        if port is None:
            return
        status, _ = self.call("delete_port", "DELETE", f"/v2.0/ports/{port['id']}")
        if status == 204:
            del self.ports[port["id"]]


def _compare_store(server: ServerProcess, clients: list[ChaosClient], shared: dict[str, Any]) -> list[str]:
    """Everything the clients were told exists, exactly as they were told; nothing else."""
    problems = []
    store = {c: {i["id"]: i for i in _ok(server, "GET", f"/v2.0/{c}")[c]} for c in ("networks", "subnets", "ports")}
    expected: dict[str, dict[str, Any]] = {
        "networks": {shared["network"]["id"]: None},
        "subnets": {shared["subnet"]["id"]: shared["subnet"]},
        "ports": {},
    }
    for client in clients:
        expected["networks"].update(client.networks)
        expected["subnets"].update(client.subnets)
        expected["ports"].update(client.ports)
        for collection, name in client.failed_creates:
            if any(item["name"] == name for item in store[collection].values()):
                problems.append(f"{collection}: {name} was answered 500 but is in the store")
    for collection, want in expected.items():
        have = store[collection]
        for item_id in sorted(set(want) - set(have)):
            problems.append(f"{collection}: {item_id} ({want[item_id] and want[item_id]['name']}) was answered 2xx but is not in the store")
        for item_id in sorted(set(have) - set(want)):
            problems.append(f"{collection}: {item_id} ({have[item_id]['name']}) is in the store but no client was told it exists")
        for item_id in sorted(set(want) & set(have)):
            if want[item_id] is not None and have[item_id] != want[item_id]:
                diff = {k: (want[item_id].get(k), have[item_id].get(k)) for k in sorted(set(want[item_id]) | set(have[item_id]))}
                diff = {k: v for k, v in diff.items() if v[0] != v[1]}
                problems.append(f"{collection}: {item_id} differs from its last 2xx answer (answered, stored): {diff}")
    return problems


@contextmanager
def _chaos_stack(backend: str) -> Iterator[tuple[ServerProcess, SimProcess, SimProcess, str]]:
    with ExitStack() as stack:
        db_url = stack.enter_context(temporary_database(backend))
        primary, standby = SimProcess().start(), SimProcess().start()
        stack.callback(primary.stop)
        stack.callback(standby.stop)
        config = _config([primary, standby], server_timeout=1, sync_timeout=5)
        server = ServerProcess(db_url, config_text=config).start()
        stack.callback(server.stop)
        yield server, primary, standby, db_url


@pytest.mark.parametrize("backend", CHAOS_BACKENDS)
def test_chaos_clients_see_only_clean_answers_and_the_controller_converges(backend: str) -> None:
    started = time.monotonic()
    with _chaos_stack(backend) as (server, primary, standby, db_url):
        shared_net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "chaos-shared", "tenant_id": TENANT}}, 201)["network"]
        body = {"subnet": {"network_id": shared_net["id"], "ip_version": 4, "cidr": "10.200.0.0/16", "tenant_id": TENANT}}
        shared = {"network": shared_net, "subnet": _ok(server, "POST", "/v2.0/subnets", body, 201)["subnet"]}
        # The standby is down for the whole run: every failover reaches it and fails there too.
        standby.fault(action="status", status=500, path_regex=API_PATHS)
        for i, rule in enumerate(CHAOS_FAULTS):
            primary.fault(**rule, seed=CHAOS_SEED + i, path_regex=API_PATHS)

        tally = Tally(CHAOS_OPS)
        clients = [ChaosClient(server, i, shared, tally) for i in range(CHAOS_THREADS)]
        stop_forgetting = threading.Event()
        forgets = [0]

        def forgetter() -> None:
            # The controller loses its state now and then; never in the last quarter, so that
            # traffic always follows a forget and finds it out (only a call's 409 reveals it:
            # the pool's probes, off here anyway, look only at servers that failed).
            rng = random.Random(f"{CHAOS_SEED}-forget")
            while not stop_forgetting.wait(rng.uniform(1.0, 2.5)) and tally.started < 0.75 * tally.total:
                primary.forget()
                forgets[0] += 1

        def guarded(client: ChaosClient) -> None:
            try:
                client.run()
            except Exception as e:  # an assertion in a helper: report it, not a silent thread death
                tally.problem(f"client {client.index} crashed: {e!r}")

        threads = [threading.Thread(target=guarded, args=(c,), daemon=True) for c in clients]
        threads.append(threading.Thread(target=forgetter, daemon=True))
        chaos_started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads[:-1]:
            t.join(240)
        stop_forgetting.set()
        threads[-1].join(10)
        chaos_seconds = time.monotonic() - chaos_started
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        stats = primary.stats()
        primary.clear_faults()

        converge_seconds = _wait_consistent(db_url, primary, timeout=90)
        # No call is in flight any more: every journal entry must have been closed (or undone).
        deadline = time.monotonic() + 10
        while (pool := _pool(server))["journal"] and time.monotonic() < deadline:
            time.sleep(0.1)
        store_problems = _compare_store(server, clients, shared)

        statuses = Counter(status for (_, status), n in tally.outcomes.items() for _ in range(n))
        summary = {
            "backend": backend,
            "ops": sum(tally.outcomes.values()),
            "statuses": dict(sorted(statuses.items())),
            "faults_injected": stats["faults_injected"],
            "controller_requests": stats["requests"],
            "responses_by_status": stats["responses_by_status"],
            "forgets": forgets[0],
            "topology_puts": primary.stats()["topology_puts"],
            "syncs": {k: pool["sync"][k] for k in ("completed", "failed")},
            "standby_requests": standby.stats()["requests"],
            "slowest_request_s": round(tally.slowest, 2),
            "chaos_s": round(chaos_seconds, 1),
            "converge_s": round(converge_seconds, 2),
            "total_s": round(time.monotonic() - started, 1),
        }
        print(f"\nchaos summary: {summary}")
        for title, lines in (("client problems", tally.problems), ("store problems", store_problems), ("journal", pool["journal"])):
            if lines:
                print(f"{title} ({len(lines)}):\n  " + "\n  ".join(map(str, lines[:15])))
        assert tally.problems == [], "\n".join(tally.problems[:40])
        assert store_problems == [], "\n".join(store_problems[:40])
        assert pool["journal"] == [], pool["journal"]
        assert summary["ops"] >= CHAOS_OPS
        # The run was chaotic: every kind of fault fired, and the pool refused some changes.
        assert all(stats["faults_injected"].get(kind, 0) > 0 for kind in ("status", "drop", "hang", "latency")), stats
        assert forgets[0] > 0 and stats["responses_by_status"].get("409", 0) > 0
        assert statuses[500] > 0 and statuses[201] > 0 and statuses[200] > 0 and statuses[204] > 0
        assert summary["standby_requests"] > 0
