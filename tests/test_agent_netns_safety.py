"""Namespaces the agent refuses (issue 11 §1, agent side) and a log free of false shutdowns (issue 10 §2), with real parts.

A port's ``binding:profile`` ``netns`` names where its veth peer goes, and the
agent acts on it as root: unsafe names, denied names, the host's own
namespace and namespaces holding someone else's devices must be refused
(nothing plugged, status DOWN, one ERROR line, no retry loop). Plugging into
namespaces forked pyroute2 helpers (before issue 15), which used to log Twisted's "Received
SIGTERM, shutting down." into the agent's log for every VIF.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing.ovs_sandbox import link_exists, netns_exists
from tests.agent_stack import HOST, Stack, agent_stack

SHUTDOWN_LINES = re.compile(r"Received SIG\w+|shutting down|Main loop terminated|Server Shut Down", re.IGNORECASE)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with agent_stack(agent_config="netns_deny = qdhcp-*, forbidden-*\n") as s:
        yield s


@pytest.fixture(scope="module")
def net_id(stack: Stack) -> str:
    return stack.network("ns", "10.99.0.0/24")[0]


def _port(stack: Stack, net_id: str, netns: Any, device_id: str = "") -> dict[str, Any]:
    body = {
        "network_id": net_id, "tenant_id": "t", "binding:host_id": HOST, "binding:profile": {"netns": netns}, "device_id": device_id,
    }  # fmt: skip
    status, port = stack.server.request("POST", "/v2.0/ports", {"port": body})
    assert status == 201, port
    return port["port"]


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], check=True, capture_output=True, text=True).stdout


def _refusals(stack: Stack, port_id: str) -> list[str]:
    return [line for line in stack.agent.log().splitlines() if f"port {port_id} not plugged:" in line]


def test_unsafe_denied_host_and_foreign_namespaces_are_refused_once_and_reported_down(stack: Stack, net_id: str) -> None:
    tag = stack.sandbox.tag
    host_alias, busy = f"hostns-{tag}", f"busy-{tag}"
    for ns in (host_alias, busy, f"forbidden-{tag}", f"qdhcp-{tag}", f"ok-{tag}"):
        stack.sandbox.track_netns(ns)  # removed at the end (for the alias: only the name, not the host's namespace)
    _ip("netns", "attach", host_alias, str(os.getpid()))  # a name for the host's namespace (ours; the agent's too)
    _ip("netns", "add", busy)
    _ip("-n", busy, "link", "add", "qr-test0", "type", "bridge")  # someone else's device (a router's, say)
    cases = {
        "../x": "names are 1-64 characters",
        "/proc/1/ns/net": "names are 1-64 characters",
        "..": "names are 1-64 characters",
        "-x": "names are 1-64 characters",
        "n" * 65: "names are 1-64 characters",
        f"forbidden-{tag}": "matches [AGENT] netns_deny pattern 'forbidden-*'",
        f"qdhcp-{tag}": "matches [AGENT] netns_deny pattern 'qdhcp-*'",
        host_alias: "it is the host's own network namespace",
        busy: "it exists and holds devices that are not this VM's VIFs (qr-test0)",
    }
    refused = {netns: _port(stack, net_id, netns) for netns in cases}
    good = _port(stack, net_id, f"ok-{tag}")
    stack.wait_status([good["id"]], "ACTIVE")  # the agent goes on with other ports
    for port in refused.values():
        stack.agent.wait_log(f"port {port['id']} not plugged:", timeout=10)
    time.sleep(2.0)  # longer than the first two retry delays (0.5 s, 1 s): a refusal must not be retried
    for netns, port in refused.items():
        lines = _refusals(stack, port["id"])
        assert len(lines) == 1, lines
        assert "#error]" in lines[0] and cases[netns] in lines[0] and "reported DOWN" in lines[0], lines[0]
        assert stack.port(port["id"])["status"] == "DOWN"
        assert not link_exists("tap" + port["id"][:11]) and not link_exists("tpi" + port["id"][:11])
        assert "tap" + port["id"][:11] not in stack.interfaces()
    for ns in (f"forbidden-{tag}", f"qdhcp-{tag}"):
        assert not netns_exists(ns)  # refused before anything was made
    assert sorted(re.findall(r"^\d+: ([^:@]+)", _ip("-n", busy, "-o", "link"), re.M)) == ["lo", "qr-test0"]  # untouched


def test_an_active_port_moved_to_a_denied_namespace_is_unplugged_and_reported_down(stack: Stack, net_id: str) -> None:
    tag = stack.sandbox.tag
    stack.sandbox.track_netns(f"moved-{tag}")
    port = _port(stack, net_id, f"moved-{tag}")
    stack.wait_status([port["id"]], "ACTIVE")
    stack.update(port["id"], **{"binding:profile": {"netns": f"qdhcp-moved-{tag}"}})
    stack.wait_status([port["id"]], "DOWN", timeout=10)
    assert not link_exists("tap" + port["id"][:11])
    assert len(_refusals(stack, port["id"])) == 1


def test_a_vm_namespace_takes_that_vms_second_nic_but_not_another_vms(stack: Stack, net_id: str) -> None:
    shared = f"shared-{stack.sandbox.tag}"
    stack.sandbox.track_netns(shared)
    first = _port(stack, net_id, shared, device_id="vm-a")
    stack.wait_status([first["id"]], "ACTIVE")
    intruder = _port(stack, net_id, shared, device_id="vm-b")
    second = _port(stack, net_id, shared, device_id="vm-a")
    stack.wait_status([second["id"]], "ACTIVE")
    stack.agent.wait_log(f"port {intruder['id']} not plugged:")
    [line] = _refusals(stack, intruder["id"])
    assert f"holds devices that are not this VM's VIFs (tpi{first['id'][:11]})" in line
    assert stack.port(intruder["id"])["status"] == "DOWN"
    peers = sorted(re.findall(r"^\d+: ([^:@]+)", _ip("-n", shared, "-o", "link"), re.M))
    assert peers == sorted(["lo", "tpi" + first["id"][:11], "tpi" + second["id"][:11]])


def test_plugging_into_namespaces_logs_no_shutdown_but_a_real_sigterm_does(stack: Stack, net_id: str) -> None:
    tag = stack.sandbox.tag
    names = [f"vm{i}-{tag}" for i in range(16)]  # the false line came for about one VIF in three
    for ns in names:
        stack.sandbox.track_netns(ns)
    ports = [_port(stack, net_id, ns) for ns in names]
    stack.wait_status([p["id"] for p in ports], "ACTIVE")
    log = stack.agent.log()
    assert log.count("in netns ") >= 16  # many veths went into namespaces (pyroute2 used to fork for each)
    assert not SHUTDOWN_LINES.search(log), SHUTDOWN_LINES.findall(log)
    stack.agent.stop()  # SIGTERM
    assert stack.agent.proc is not None and stack.agent.proc.returncode is not None
    assert stack.agent.log().count("Received SIGTERM, shutting down.") == 1
