"""The agent end to end: API -> server -> channel -> restproxy-agent -> OVS (userspace) -> netns VMs.

A private ovsdb-server/ovs-vswitchd, a quantum-server on SQLite and a
``twistd -n restproxy-agent`` process, all started and removed by the tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ovs_sandbox import NetnsVm, OvsSandbox, install_ovs
from tests.support import ROOT, ServerProcess

HOST = "e2e-host"


class AgentProcess:
    def __init__(self, server: ServerProcess, sandbox: OvsSandbox, tmp: str) -> None:
        self.config = os.path.join(tmp, "agent.ini")
        self.log_path = os.path.join(tmp, "agent.log")
        with open(self.config, "w") as f:
            f.write(
                f"[DEFAULT]\nhost = {HOST}\n[SERVER]\nserver_url = {server.url}\ntoken = tok-agent\nserver_timeout = 5\n"
                f"[OVS]\nintegration_bridge = br-e2e\novsdb_connection = {sandbox.endpoint}\ndatapath_type = netdev\n"
                f"[AGENT]\nvif_kind = veth\nreport_interval = 2\nstatus_file = {tmp}/status.json\n"
            )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        args = [twistd, "-n", "--pidfile=", "--logfile=-", "restproxy-agent", "--config", self.config]
        with open(self.log_path, "ab") as log:  # not twistd's log file: it rotates at 1 MB
            self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""


class Stack:
    def __init__(self, sandbox: OvsSandbox, tmp: str) -> None:
        tokens = os.path.join(tmp, "agents.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {"tok-agent": {"host": HOST}}}, f)
        self.sandbox = sandbox
        self.server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[AGENT]\nagent_tokens_file = {tokens}\n").start()
        self.agent = AgentProcess(self.server, sandbox, tmp).start()

    def network(self, name: str, cidr: str) -> tuple[str, str]:
        _, net = self.server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": "t"}})
        net_id = net["network"]["id"]
        _, subnet = self.server.request(
            "POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "tenant_id": "t"}}
        )
        return net_id, subnet["subnet"]["id"]

    def vm_port(self, net_id: str, vm: str, tap: bool = False, **extra: Any) -> dict[str, Any]:
        """A port for VM ``vm``: a veth into its own namespace, or (``tap``) a tap as a hypervisor would open."""
        if tap:
            profile: dict[str, Any] = {"vif_type": "tap"}
        else:
            netns = self.sandbox.netns_name(vm)
            self.sandbox.track_netns(netns)
            profile = {"netns": netns}
        body = {"network_id": net_id, "tenant_id": "t", "device_id": vm, "binding:host_id": HOST, "binding:profile": profile}
        status, port = self.server.request("POST", "/v2.0/ports", {"port": dict(body, **extra)})
        assert status == 201, port
        return port["port"]

    def vm(self, port: dict[str, Any], vm: str) -> NetnsVm:
        vm_obj = NetnsVm(self.sandbox.netns_name(vm), "tpi" + port["id"][:11])
        vm_obj.set_ip(port["fixed_ips"][0]["ip_address"] + "/24")
        return vm_obj

    def wait_status(self, port_ids: list[str], status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {p: self.server.request("GET", f"/v2.0/ports/{p}")[1]["port"]["status"] for p in port_ids}
            if all(s == status for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"ports not {status}: {states}\n{self.agent.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


@pytest.fixture
def stack() -> Iterator[Stack]:
    reason = install_ovs()
    if reason:
        pytest.skip(f"Open vSwitch unavailable: {reason}")
    sandbox = OvsSandbox().start()
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(sandbox, tmp)
        try:
            yield s
        finally:
            s.stop()
            sandbox.stop()
            assert sandbox.leftovers() == []


def test_two_vms_talk_a_third_on_another_network_cannot(stack: Stack) -> None:
    net_a, _ = stack.network("a", "10.70.0.0/24")
    net_b, _ = stack.network("b", "10.70.0.0/24")  # same addresses, other network: isolation must come from OVS
    a1, a2 = stack.vm_port(net_a, "a1"), stack.vm_port(net_a, "a2")
    b1 = stack.vm_port(net_b, "b1", fixed_ips=[{"ip_address": "10.70.0.200"}])  # in A's range, unlike A1/A2
    stack.wait_status([a1["id"], a2["id"], b1["id"]], "ACTIVE")
    vm_a1, vm_a2, vm_b1 = stack.vm(a1, "a1"), stack.vm(a2, "a2"), stack.vm(b1, "b1")
    assert vm_a1.mac() == a1["mac_address"]
    a2_ip = a2["fixed_ips"][0]["ip_address"]
    assert vm_a1.ping_until(a2_ip, deadline=10)
    assert vm_a1.tcp_roundtrip(vm_a2, a2_ip)
    assert b1["fixed_ips"][0]["ip_address"] not in (a1["fixed_ips"][0]["ip_address"], a2_ip)
    assert not vm_b1.ping(a2_ip, count=2, wait=1)
    log = stack.agent.log()
    for line in (
        f"port {a1['id']} device tap{a1['id'][:11]} created",
        f"port {a1['id']} device tap{a1['id'][:11]} ofport",
        f"port {a1['id']} reported ACTIVE",
    ):
        assert line in log, line
    # Unbinding unplugs and reports DOWN; deleting removes the device.
    stack.server.request("PUT", f"/v2.0/ports/{a2['id']}", {"port": {"binding:host_id": ""}})
    stack.wait_status([a2["id"]], "DOWN")
    assert not _link_exists("tap" + a2["id"][:11])
    stack.server.request("DELETE", f"/v2.0/ports/{a1['id']}")
    deadline = time.monotonic() + 10
    while _link_exists("tap" + a1["id"][:11]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _link_exists("tap" + a1["id"][:11])
    assert f"iface-id={a1['id']}" not in stack.sandbox.vsctl("--columns=external_ids", "list", "Interface").replace('"', "")


def test_agent_kill_and_restart_with_100_vifs_does_not_replug(stack: Stack) -> None:
    net, _ = stack.network("many", "10.71.0.0/24")
    ports = [stack.vm_port(net, f"m{i}", tap=True) for i in range(100)]
    for port in ports:
        stack.sandbox.track_link("tap" + port["id"][:11])
    stack.wait_status([p["id"] for p in ports], "ACTIVE", timeout=60)
    before = _interfaces(stack.sandbox)
    stack.agent.kill()
    log_before = len(stack.agent.log())
    stack.agent.start()
    deadline = time.monotonic() + 30
    while "in step after reconcile (listed)" not in stack.agent.log()[log_before:] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # let any (wrong) re-plug show up in the log and in OVS
    after_log = stack.agent.log()[log_before:]
    assert "in step after reconcile (listed): 100 ports, 0 plugged, 0 unplugged, 0 adjusted, 0 errors" in after_log
    assert not re.search(r"device tap\S+ (created|unplugged)", after_log)
    assert _interfaces(stack.sandbox) == before  # same rows, names and ofports: nothing was re-plugged


def test_ovsdb_restart_mid_burst_ends_all_active_without_duplicates(stack: Stack) -> None:
    net, _ = stack.network("burst", "10.72.0.0/24")
    ports = [stack.vm_port(net, f"r{i}", tap=True) for i in range(40)]
    stack.sandbox.restart_ovsdb()
    ports += [stack.vm_port(net, f"s{i}", tap=True) for i in range(40)]
    for port in ports:
        stack.sandbox.track_link("tap" + port["id"][:11])
    stack.wait_status([p["id"] for p in ports], "ACTIVE", timeout=60)
    ids = [line for line in stack.sandbox.vsctl("--bare", "--columns=external_ids", "list", "Interface").splitlines() if "iface-id" in line]
    iface_ids = sorted(part.split("=", 1)[1] for line in ids for part in line.split() if part.startswith("iface-id="))
    assert iface_ids == sorted(p["id"] for p in ports)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _interfaces(sandbox: OvsSandbox) -> str:
    return sandbox.vsctl("--bare", "--columns=_uuid,name,ofport", "list", "Interface")
