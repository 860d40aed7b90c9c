"""A real quantum-server and a real ``twistd -n restproxy-agent`` on a private OVS sandbox, for the agent's end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from restproxy_testing.ovs_sandbox import NetnsVm, OvsSandbox, ovs_unavailable
from restproxy_testing.support import ROOT, ServerProcess

HOST = "e2e-host"


class TwistdProcess:
    """A ``twistd -n <plugin> --config <config>`` child with its output in ``log_path``: start, kill -9, SIGTERM,
    SIGSTOP/SIGCONT, and waits on its log."""

    plugin = ""

    def __init__(self, config: str, log_path: str) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        args = [twistd, "-n", "--pidfile=", "--logfile=-", self.plugin, "--config", self.config]
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

    def pause(self) -> None:
        """SIGSTOP: the process reads nothing (its connections stay open) until ``resume``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def mark(self) -> int:
        return len(self.log())

    def wait_log(self, text: str, mark: int = 0, timeout: float = 30.0) -> str:
        """Wait until ``text`` appears in the log after ``mark``; returns the log after ``mark``."""
        deadline = time.monotonic() + timeout
        while True:
            tail = self.log()[mark:]
            if text in tail:
                return tail
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.plugin} log has no {text!r} after {timeout}s:\n{tail[-5000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""


class AgentProcess(TwistdProcess):
    plugin = "restproxy-agent"

    def __init__(self, server: ServerProcess, sandbox: OvsSandbox, tmp: str, extra: str = "") -> None:
        super().__init__(os.path.join(tmp, "agent.ini"), os.path.join(tmp, "agent.log"))
        with open(self.config, "w") as f:
            f.write(
                f"[DEFAULT]\nhost = {HOST}\n[SERVER]\nserver_url = {server.url}\ntoken = tok-agent\nserver_timeout = 5\n"
                f"[OVS]\nintegration_bridge = br-e2e\novsdb_connection = {sandbox.endpoint}\ndatapath_type = netdev\n"
                f"[AGENT]\nvif_kind = veth\nreport_interval = 2\nstatus_file = {tmp}/status.json\n{extra}"
            )


class Stack:
    def __init__(
        self, sandbox: OvsSandbox, tmp: str, server_config: str = "", agent_config: str = "", extra_tokens: dict[str, Any] | None = None
    ) -> None:
        """``server_config``: more lines for the server's [AGENT] section; ``agent_config``: for the agent's [AGENT];
        ``extra_tokens``: more agent tokens (e.g. a DHCP agent's)."""
        tokens = os.path.join(tmp, "agents.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {"tok-agent": {"host": HOST}, **(extra_tokens or {})}}, f)
        self.sandbox = sandbox
        config = f"[AGENT]\nagent_tokens_file = {tokens}\n{server_config}"
        self.server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=config).start()
        self.agent = AgentProcess(self.server, sandbox, tmp, agent_config).start()

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

    def port(self, port_id: str) -> dict[str, Any] | None:
        status, body = self.server.request("GET", f"/v2.0/ports/{port_id}")
        return body["port"] if status == 200 else None

    def update(self, port_id: str, **values: Any) -> dict[str, Any]:
        status, body = self.server.request("PUT", f"/v2.0/ports/{port_id}", {"port": values})
        assert status == 200, body
        return body["port"]

    def delete(self, port_id: str) -> None:
        status, body = self.server.request("DELETE", f"/v2.0/ports/{port_id}")
        assert status == 204, body

    def interfaces(self) -> dict[str, dict[str, str]]:
        """OVS Interface name -> external_ids, from the sandbox's database."""
        out = self.sandbox.vsctl("--format=json", "--columns=name,external_ids", "list", "Interface")
        rows = json.loads(out)["data"]
        return {name: dict(ids[1]) for name, ids in rows}

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


@contextmanager
def agent_stack(server_config: str = "", agent_config: str = "") -> Iterator[Stack]:
    """Sandbox + server + agent, all removed afterwards (and the sandbox checked for leftovers)."""
    reason = ovs_unavailable()
    if reason:
        raise RuntimeError(reason)
    sandbox = OvsSandbox().start()
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(sandbox, tmp, server_config, agent_config)
        try:
            yield s
        finally:
            s.stop()
            sandbox.stop()
            assert sandbox.leftovers() == []
