"""A real DHCP agent (``twistd -n restproxy-dhcp-agent``) beside the agent stack, and a real DHCP client in each VM namespace.

The client is busybox ``udhcpc`` with an event script that records the lease
(the variables udhcpc exports) in a file and configures the VM's address and
routes, so a test reads exactly what the VM was offered and checks what it did.
dnsmasq outlives the agent on purpose: ``DhcpAgentProcess.cleanup`` stops every
dnsmasq of its state directory and removes the qdhcp- namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from restproxy_testing.agent_stack import HOST, Stack, TwistdProcess
from restproxy_testing.ovs_sandbox import OvsSandbox, delete_netns, ovs_unavailable

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script for the tests: record the lease, configure the VM's NIC.
out="$LEASE_DIR/$interface.lease"
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    env | grep -E '^(ip|subnet|mask|router|dns|staticroutes|mtu|lease|serverid|hostname|domain)=' > "$out.tmp"
    echo "event=$1" >> "$out.tmp"
    echo "at=$(cat /proc/uptime | cut -d' ' -f1)" >> "$out.tmp"
    mv "$out.tmp" "$out"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ -n "$1" ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
"""


class DhcpClient:
    """``udhcpc`` on ``ifname`` in namespace ``netns``; its lease (as the script recorded it) from ``lease()``."""

    def __init__(self, netns: str, ifname: str, workdir: str) -> None:
        self.netns, self.ifname, self.workdir = netns, ifname, workdir
        self.script = os.path.join(workdir, "udhcpc.script")
        if not os.path.exists(self.script):
            with open(self.script, "w") as f:
                f.write(UDHCPC_SCRIPT)
            os.chmod(self.script, 0o755)
        self.lease_path = os.path.join(workdir, f"{ifname}.lease")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, once: bool = False) -> DhcpClient:
        """DISCOVER at once, then every second; ``once``: quit after the first lease (else keep it and renew)."""
        argv = ["ip", "netns", "exec", self.netns, "busybox", "udhcpc", "-i", self.ifname, "-f", "-s", self.script, "-t", "30", "-T", "1"]
        argv += ["-A", "1", "-O", "mtu", "-O", "staticroutes"] + (["-q", "-n"] if once else [])
        env = dict(os.environ, LEASE_DIR=self.workdir)
        log = open(os.path.join(self.workdir, f"{self.ifname}.udhcpc.log"), "ab")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def lease(self) -> dict[str, str] | None:
        try:
            with open(self.lease_path) as f:
                return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        except OSError:
            return None

    def wait_lease(self, timeout: float = 20.0, ip: str | None = None, **expected: str) -> dict[str, str]:
        """The lease once it has ``ip`` (and the other ``expected`` values)."""
        deadline = time.monotonic() + timeout
        while True:
            lease = self.lease()
            if lease and (ip is None or lease.get("ip") == ip) and all(lease.get(k) == v for k, v in expected.items()):
                return lease
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no lease {ip or ''} {expected} on {self.ifname} in {self.netns} after {timeout}s: {lease}\n{self.log()}"
                )
            time.sleep(0.05)

    def forget(self) -> None:
        if os.path.exists(self.lease_path):
            os.remove(self.lease_path)

    def renew(self) -> None:
        """SIGUSR1: udhcpc renews now (what it does at T1 of the lease)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def log(self) -> str:
        try:
            with open(os.path.join(self.workdir, f"{self.ifname}.udhcpc.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def routes(self) -> str:
        return subprocess.run(["ip", "netns", "exec", self.netns, "ip", "-4", "route"], capture_output=True, text=True).stdout


class DhcpAgentProcess(TwistdProcess):
    plugin = "restproxy-dhcp-agent"

    def __init__(self, stack: Stack, tmp: str, token: str = "tok-dhcp", host: str = HOST, name: str = "dhcp", extra: str = "") -> None:
        super().__init__(os.path.join(tmp, f"{name}.ini"), os.path.join(tmp, f"{name}.log"))
        self.state_path = os.path.join(tmp, f"{name}-state")
        self.namespace_prefix = "qdhcp-" if name == "dhcp" else f"q{name}-"  # two agents on one machine: two namespaces
        with open(self.config, "w") as f:
            f.write(
                f"[DEFAULT]\nhost = {host}\n[SERVER]\nserver_url = {stack.server.url}\ntoken = {token}\nserver_timeout = 5\n"
                f"[OVS]\nintegration_bridge = br-e2e\novsdb_connection = {stack.sandbox.endpoint}\ndatapath_type = netdev\n"
                f"[DHCP]\nstate_path = {self.state_path}\ndnsmasq_user = root\ncheck_interval = 0.5\nreport_interval = 2\n"
                f"dhcp_lease_duration = 600\nnamespace_prefix = {self.namespace_prefix}\n{extra}"
            )

    def dnsmasq_pid(self, net_id: str) -> int | None:
        """The live dnsmasq of the network (by its pid file and /proc), else None."""
        path = os.path.join(self.state_path, net_id, "pid")
        try:
            with open(path) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return pid if f"--pid-file={path}".encode() in f.read() else None
        except (OSError, ValueError):
            return None

    def dnsmasq_log(self, net_id: str) -> str:
        try:
            with open(os.path.join(self.state_path, net_id, "dnsmasq.log")) as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Everything the agent leaves running on purpose: dnsmasq processes and qdhcp- namespaces."""
        self.kill()
        if not os.path.isdir(self.state_path):
            return
        for net_id in os.listdir(self.state_path):
            pid = self.dnsmasq_pid(net_id)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            delete_netns(f"{self.namespace_prefix}{net_id}")


def dnsmasq_processes() -> list[tuple[int, str]]:
    """(pid, cmdline) of every dnsmasq on the host."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0].decode(errors="replace")) == "dnsmasq":
                out.append((int(entry), " ".join(a.decode(errors="replace") for a in argv)))
    return out


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


class DhcpStack:
    """Sandbox, server, host agent (``stack``) and one or more DHCP agents; VMs boot with udhcpc."""

    def __init__(self, stack: Stack, tmp: str) -> None:
        self.stack, self.tmp = stack, tmp
        self.agents: list[DhcpAgentProcess] = []
        self.clients: list[DhcpClient] = []

    def agent(self, **kwargs: Any) -> DhcpAgentProcess:
        agent = DhcpAgentProcess(self.stack, self.tmp, **kwargs).start()
        self.agents.append(agent)
        return agent

    def network(self, name: str, cidr: str, **subnet: Any) -> tuple[str, dict[str, Any]]:
        server = self.stack.server
        status, net = server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": "t"}})
        assert status == 201, net
        body = {"network_id": net["network"]["id"], "ip_version": 4, "cidr": cidr, "tenant_id": "t", **subnet}
        status, sub = server.request("POST", "/v2.0/subnets", {"subnet": body})
        assert status == 201, sub
        return net["network"]["id"], sub["subnet"]

    def boot(self, net_id: str, vm: str, once: bool = False, **port: Any) -> tuple[dict[str, Any], DhcpClient]:
        """A port for ``vm`` (veth into its namespace, plugged by the host agent), then udhcpc as soon as the link is there."""
        port = self.stack.vm_port(net_id, vm, **port)
        netns, ifname = self.stack.sandbox.netns_name(vm), "tpi" + port["id"][:11]
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "show", ifname], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{ifname} never appeared in {netns}:\n{self.stack.agent.log()[-3000:]}")
            time.sleep(0.02)
        workdir = os.path.join(self.tmp, f"vm-{vm}")
        os.makedirs(workdir, exist_ok=True)
        client = DhcpClient(netns, ifname, workdir).start(once=once)
        self.clients.append(client)
        return port, client

    def agents_report(self) -> list[dict[str, Any]]:
        status, body = self.stack.server.request("GET", "/v2.0/agents")
        assert status == 200, body
        return body["agents"]

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        for agent in self.agents:
            agent.stop()
            agent.cleanup()


@contextmanager
def dhcp_stack(server_config: str = "", hosts: tuple[str, ...] = (HOST, "net-2")) -> Iterator[DhcpStack]:
    """The agent stack (sandbox, server, host agent) with a ``dhcp`` token per host in ``hosts``
    (``tok-dhcp`` for the first, ``tok-dhcp-<host>`` for the others)."""
    import tempfile

    from restproxy_testing.agent_stack import Stack

    reason = ovs_unavailable()
    if reason:
        raise RuntimeError(reason)
    sandbox = OvsSandbox().start()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        tokens = {"tok-dhcp" if i == 0 else f"tok-dhcp-{h}": {"host": h, "kind": "dhcp"} for i, h in enumerate(hosts)}
        stack = Stack(sandbox, tmp, server_config, extra_tokens=tokens)
        dhcp = DhcpStack(stack, tmp)
        try:
            yield dhcp
        finally:
            dhcp.close()
            stack.stop()
            sandbox.stop()
            assert sandbox.leftovers() == []


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
