"""Ports that were in step when the agent reconciled stay managed (issue 10 §1), with real parts.

One quantum-server, one ``twistd restproxy-agent`` and a private OVS for the
module. Each scenario binds 100 tap ports, lets them go ACTIVE, then makes the
agent reconcile them all as "in step" (nothing to do: the syncs finish without
waiting for anything, which used to leave every such port frozen): after a
``kill -9`` and restart, after an ovsdb-server restart (OVSDB reconnect) and
after a relist (the server pruned the events the agent had not read). Then,
on a few ports per kind: a new MAC, admin_state_up false and back to true,
unbind, unbind + rebind, delete; each must take effect within EFFECT_S.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.agent_stack import HOST, Stack, agent_stack

COUNT = 100
PER_KIND = 3
EFFECT_S = 5.0  # a tap port goes ACTIVE in ~25 ms here; a frozen port never does
RETENTION = 50  # the server keeps this many events: more while the agent is paused forces a relist
IFF_UP = 0x1


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    server = f"agent_event_retention = {RETENTION}\nagent_event_prune_interval = 0.2\n"
    with agent_stack(server_config=server) as s:
        yield s


_nets = iter(range(80, 99))


def _bind_hundred(stack: Stack, tag: str) -> list[dict[str, Any]]:
    net, _ = stack.network(tag, f"10.{next(_nets)}.0.0/24")
    ports = [stack.vm_port(net, f"{tag}{i}", tap=True) for i in range(COUNT)]
    for port in ports:
        stack.sandbox.track_link(_dev(port))
    stack.wait_status([p["id"] for p in ports], "ACTIVE", timeout=60)
    return ports


def _dev(port: dict[str, Any]) -> str:
    return "tap" + port["id"][:11]


def _link_flags(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return int(f.read().strip(), 16)
    except OSError:
        return None


def _link_mac(name: str) -> str | None:
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            return f.read().strip()
    except OSError:
        return None


class Effects:
    """Acts on ports through the API and waits for what each act must do; keeps the ms each took."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ms: dict[str, list[int]] = {}

    def wait(self, kind: str, started: float, probe: Callable[[dict[str, Any]], Any], port: dict[str, Any]) -> None:
        deadline = started + EFFECT_S
        while not probe(port):
            if time.monotonic() > deadline:
                raise AssertionError(f"{kind} on {port['id']}: no effect within {EFFECT_S}s\n{self.stack.agent.log()[-5000:]}")
            time.sleep(0.02)
        self.ms.setdefault(kind, []).append(int((time.monotonic() - started) * 1000))

    def act(self, kind: str, port: dict[str, Any], probe: Callable[[dict[str, Any]], Any], **values: Any) -> None:
        """PUT ``values`` (or DELETE when there are none) and wait for ``probe(port)``."""
        started = time.monotonic()
        if values:
            self.stack.update(port["id"], **values)
        else:
            self.stack.delete(port["id"])
        self.wait(kind, started, probe, port)

    def status(self, port: dict[str, Any]) -> str | None:
        body = self.stack.port(port["id"])
        return body["status"] if body else None

    def plugged(self, port: dict[str, Any], mac: str | None = None, interfaces: dict[str, dict[str, str]] | None = None) -> bool:
        ids = (interfaces if interfaces is not None else self.stack.interfaces()).get(_dev(port))
        if ids is None or ids.get("iface-id") != port["id"] or _link_flags(_dev(port)) is None:
            return False
        return mac is None or (ids.get("attached-mac") == mac and _link_mac(_dev(port)) == mac)

    def unplugged(self, port: dict[str, Any]) -> bool:
        return _dev(port) not in self.stack.interfaces() and _link_flags(_dev(port)) is None

    def active_with_mac(self, mac: str) -> Callable[[dict[str, Any]], bool]:
        return lambda port: self.plugged(port, mac) and self.status(port) == "ACTIVE"

    def admin_down(self, port: dict[str, Any]) -> bool:
        return self.status(port) == "DOWN" and not (_link_flags(_dev(port)) or 0) & IFF_UP and self.plugged(port)

    def admin_up(self, port: dict[str, Any]) -> bool:
        return self.status(port) == "ACTIVE" and bool((_link_flags(_dev(port)) or 0) & IFF_UP)

    def unbound(self, port: dict[str, Any]) -> bool:
        return self.unplugged(port) and self.status(port) == "DOWN"

    def bound(self, port: dict[str, Any]) -> bool:
        return self.plugged(port) and self.status(port) == "ACTIVE"

    def run_all(self, ports: list[dict[str, Any]]) -> None:
        """Each kind of act on its own PER_KIND ports among ``ports``, one port after another."""
        groups = [ports[i * PER_KIND : (i + 1) * PER_KIND] for i in range(5)]
        for port in groups[0]:
            mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in os.urandom(3))
            self.act("new MAC", port, self.active_with_mac(mac), mac_address=mac)
        for port in groups[1]:
            self.act("admin down", port, self.admin_down, admin_state_up=False)  # on the bridge, passing nothing
            self.act("admin up", port, self.admin_up, admin_state_up=True)
        for port in groups[2]:
            self.act("unbind", port, self.unbound, **{"binding:host_id": ""})
        for port in groups[3]:
            self.act("unbind (to rebind)", port, self.unbound, **{"binding:host_id": ""})
            self.act("rebind", port, self.bound, **{"binding:host_id": HOST})
        for port in groups[4]:
            self.act("delete", port, self.unplugged)
        interfaces = self.stack.interfaces()
        assert all(self.plugged(p, interfaces=interfaces) for p in ports[5 * PER_KIND :])


def _clean_up(stack: Stack, ports: list[dict[str, Any]]) -> None:
    for port in ports:
        stack.server.request("DELETE", f"/v2.0/ports/{port['id']}")
    deadline = time.monotonic() + 30
    while any(_link_flags(_dev(p)) is not None for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)


def _in_step(stack: Stack, mark: int, reason: str) -> None:
    tail = stack.agent.wait_log(f"in step after reconcile ({reason})", mark)
    line = next(line for line in tail.splitlines() if f"in step after reconcile ({reason})" in line)
    # Every port was in step: none needed anything, so every sync finished without waiting.
    assert f"{COUNT} ports, 0 plugged, 0 unplugged, 0 adjusted, 0 errors" in line, line


def _report(scenario: str, effects: Effects) -> None:
    summary = {kind: f"max {max(ms)} ms" for kind, ms in effects.ms.items()}
    print(f"\n{scenario}: {json.dumps(summary)}")


def test_after_kill_9_and_restart_in_step_ports_stay_managed(stack: Stack) -> None:
    ports = _bind_hundred(stack, "k")
    stack.agent.kill()
    mark = stack.agent.mark()
    stack.agent.start()
    _in_step(stack, mark, "listed")
    effects = Effects(stack)
    effects.run_all(ports)
    _report("after kill -9", effects)
    _clean_up(stack, ports)


def test_after_an_ovsdb_reconnect_in_step_ports_stay_managed(stack: Stack) -> None:
    ports = _bind_hundred(stack, "o")
    mark = stack.agent.mark()
    stack.sandbox.restart_ovsdb()
    _in_step(stack, mark, "OVSDB reconnected")
    effects = Effects(stack)
    effects.run_all(ports)
    _report("after OVSDB reconnect", effects)
    _clean_up(stack, ports)


def test_after_a_relist_in_step_ports_stay_managed(stack: Stack) -> None:
    ports = _bind_hundred(stack, "r")
    seq = _watching_from(stack)
    stack.agent.pause()
    try:
        stack.server.restart()  # drops the agent's watch; the paused agent sees it only when resumed
        _, net = stack.server.request("POST", "/v2.0/networks", {"network": {"name": "elsewhere", "tenant_id": "t"}})
        others = [{"network_id": net["network"]["id"], "tenant_id": "t", "binding:host_id": "other-host"}] * (RETENTION + 10)
        status, _ = stack.server.request("POST", "/v2.0/ports", {"ports": others})
        assert status == 201
        _wait_pruned(stack, seq)
        mark = stack.agent.mark()
    finally:
        stack.agent.resume()
    tail = stack.agent.wait_log("server asks for a full list", mark)
    assert "agent channel: server asks for a full list" in tail
    _in_step(stack, mark, "listed")
    effects = Effects(stack)
    effects.run_all(ports)
    _report("after relist", effects)
    _clean_up(stack, ports)


def _watching_from(stack: Stack) -> int:
    """The sequence number the agent's watch has reached (its SIGUSR1 status line)."""
    mark = stack.agent.mark()
    assert stack.agent.proc is not None
    stack.agent.proc.send_signal(signal.SIGUSR1)
    tail = stack.agent.wait_log("agent status: {", mark, timeout=10)
    line = next(line for line in tail.splitlines() if "agent status: {" in line)
    return int(json.loads(line[line.index("{") :])["seq"])


def _wait_pruned(stack: Stack, seq: int) -> None:
    """Until a watch from ``seq`` is answered with a relist (the server pruned what the agent had not read)."""
    url = f"{stack.server.url}/agent/v1/hosts/{HOST}/watch?since={seq}"
    deadline = time.monotonic() + 15
    while True:
        req = urllib.request.Request(url, headers={"X-Auth-Token": "tok-agent"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            first = json.loads(resp.readline())
        if first.get("type") == "relist":
            return
        assert time.monotonic() < deadline, f"the server still replays from {seq}"
        time.sleep(0.2)
