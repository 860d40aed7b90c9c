"""The main job end to end, on embedded defaults: API -> quantum-server -> controller + agent -> OVS -> "VMs".

Starts, all private to this run and all removed at the end (also on Ctrl-C or SIGTERM):

- an Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) in a temporary run dir,
- the controller simulator (or, with ``--controllers host:port,...``, real controllers),
  ``--sim-profile floodlight`` makes the simulator answer as Floodlight v0.91,
- ``twistd -n quantum-server`` on SQLite in a temporary directory, with an agent token,
- ``twistd -n restproxy-agent`` for this host,
- ``twistd -n restproxy-dhcp-agent`` for this host (one dnsmasq per network, in qdhcp- namespaces).

Then, through the v2.0 REST API: networks A and B with subnets (the same CIDR), ports A1 and
A2 on A and B1 on B bound to this host, each in a network namespace standing in for a VM. It
shows each port going ACTIVE with the agent's own log lines, each VM booting with DHCP (busybox
udhcpc in its namespace) and the lease it got, A1 <-> A2 ping and TCP, A <-> B isolation (B1's
address is in A's subnet too, so only OVS keeps them apart), the
controller's view, ``restproxy-manage pool-status`` and ``check``; then deletes everything
through the API and tears down.

Isolation comes from local VLAN tags on br-int, unless br-int has an OpenFlow controller:
``--openflow host:port``, or, when the ``--controllers`` are Floodlight (the profile the server
detected), Floodlight's OpenFlow port (6633) on the first controller's host. Floodlight then
decides which MACs reach which (its VirtualNetworkFilter and Forwarding modules must be loaded).
The output says which one isolates. Needs root (network namespaces) and Open vSwitch
(``run-demo.sh`` installs it). Exit status 0 on success.

``--keystone`` also starts a local Keystone (``.venv-keystone``, see scripts/bootstrap.sh) and a
stand-in Nova: the server runs with ``auth_strategy = keystone`` and is registered in the catalog,
every API call carries a Keystone token of the ``demo`` project, and the VMs' ports
(``device_owner = compute:demo``) become Nova's network-vif-plugged / -deleted events.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from restproxy_testing.dhcp_stack import DhcpClient  # noqa: E402
from restproxy_testing.ovs_sandbox import NetnsVm, OvsSandbox, delete_netns, ovs_unavailable  # noqa: E402
from restproxy_testing.support import free_port  # noqa: E402

TENANT = "demo"
TOKEN = "demo-agent-token"
DHCP_TOKEN = "demo-dhcp-token"
BRIDGE = "br-int"
BIN = os.path.dirname(sys.executable)
T0 = time.monotonic()


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== [{time.monotonic() - T0:5.1f}s] {text}")


AUTH: dict[str, str] = {}  # --keystone: the X-Auth-Token every call carries


def http(method: str, url: str, body: Any = None, timeout: float = 15) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **AUTH})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, (json.loads(raw) if raw else None)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


class Child:
    """A child process in its own session (a terminal's Ctrl-C reaches only the demo, which stops it in order)."""

    def __init__(self, name: str, argv: list[str], log_path: str, stdout_pipe: bool = False) -> None:
        self.name, self.log_path = name, log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                start_new_session=True,
            )
        say(f"   started {name} (pid {self.proc.pid})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


FLOODLIGHT_OPENFLOW_PORT = 6633
FLOODLIGHT_OPENFLOW_VERSION = "OpenFlow10"  # Floodlight v0.91 speaks OpenFlow 1.0 only


def openflow_target(openflow: str | None, controllers: str | None, profile: str | None) -> str | None:
    """br-int's OpenFlow controller: ``--openflow`` ("none": no controller), else a Floodlight's OpenFlow port
    on the first REST controller's host when the controllers are real and Floodlight, else none (local VLAN tags)."""
    if openflow:
        return None if openflow == "none" else f"tcp:{openflow}"
    if controllers and profile == "floodlight":
        first = controllers.split(",")[0].strip()
        host = first.rsplit(":", 1)[0]
        return f"tcp:{host}:{FLOODLIGHT_OPENFLOW_PORT}"
    return None


def isolation_line(of_target: str | None) -> str:
    if of_target:
        return f"isolation: OpenFlow controller {of_target} (br-int fail_mode=secure, {FLOODLIGHT_OPENFLOW_VERSION}, out-of-band)"
    return "isolation: local VLAN tags on br-int (one tag per network, set by the agent)"


def agent_config_text(host: str, server_url: str, ovsdb: str, metrics_port: int, of_target: str | None) -> str:
    """restproxy_agent.ini for the demo; with an OpenFlow controller the agent points br-int at it (no VLAN tags)."""
    openflow = f"of_controller = {of_target}\nof_protocols = {FLOODLIGHT_OPENFLOW_VERSION}\n" if of_target else ""
    return (
        f"[DEFAULT]\nhost = {host}\n[SERVER]\nserver_url = {server_url}\ntoken = {TOKEN}\nserver_timeout = 5\n"
        f"[OVS]\nintegration_bridge = {BRIDGE}\novsdb_connection = {ovsdb}\ndatapath_type = netdev\n{openflow}"
        f"[AGENT]\nvif_kind = veth\nreport_interval = 2\nmetrics_port = {metrics_port}\n"
    )


class Demo:
    def __init__(
        self, controllers: str | None, openflow: str | None = None, sim_profile: str = "bigswitch", keystone: bool = False
    ) -> None:
        self.use_keystone = keystone
        self.keystone: Any = None
        self.nova: Any = None
        self.openstack_config = ""
        self.controllers = controllers
        self.real_controllers = controllers is not None
        self.openflow = openflow
        self.sim_profile = sim_profile
        self.profile: str | None = None
        self.of_target: str | None = None
        self.host = socket.gethostname()
        self.tmp = tempfile.mkdtemp(prefix="qrp-demo-")
        tempfile.tempdir = self.tmp  # whatever else asks tempfile for a place lands in here and goes with it
        self.sandbox: OvsSandbox | None = None
        self.sim: Child | None = None
        self.server: Child | None = None
        self.agent: Child | None = None
        self.dhcp: Child | None = None
        self.dhcp_state = os.path.join(self.tmp, "dhcp")
        self.clients: list[DhcpClient] = []
        self.url = ""
        self.created: list[tuple[str, str]] = []  # (collection, id), in creation order
        self.server_config = os.path.join(self.tmp, "restproxy.ini")
        self.db_url = f"sqlite:///{self.tmp}/quantum.sqlite"
        self.agent_metrics_port = free_port()

    # -- start --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        step("starting a private stack")
        say(f"   temp dir {self.tmp}")
        self.sandbox = OvsSandbox(tag="demo" + uuid.uuid4().hex[:4])
        self.sandbox.start()
        say(f"   started Open vSwitch: ovsdb-server (pid {self.sandbox.ovsdb.pid}), ovs-vswitchd (pid {self.sandbox.vswitchd.pid}),")
        say(f"     userspace datapath, run dir {self.sandbox.run_dir}, namespaces *-{self.sandbox.tag}")
        if self.controllers is None:
            self.controllers = self._start_sim()
        else:
            say(f"   using the controllers {self.controllers}")
        if self.use_keystone:
            self._start_keystone()
        self._start_server()
        if self.use_keystone:
            self._show_keystone()
        self.profile = self._wait_profile()
        self.of_target = openflow_target(self.openflow, self.controllers if self.real_controllers else None, self.profile)
        say(f"   controller profile: {self.profile}")
        say(f"   {isolation_line(self.of_target)}")
        self._start_agent()
        self._start_dhcp_agent()

    def _start_sim(self) -> str:
        argv = [sys.executable, "-m", "controller_sim", "--port", "tcp:0:interface=127.0.0.1", "--profile", self.sim_profile]
        self.sim = Child("controller simulator", argv, os.path.join(self.tmp, "sim.log"), stdout_pipe=True)
        assert self.sim.proc.stdout is not None
        line, deadline = b"", time.monotonic() + 20
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or not self.sim.alive():
                raise DemoError(f"the controller simulator did not start:\n{self.sim.log()[-2000:]}")
            if select.select([self.sim.proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(self.sim.proc.stdout.fileno(), 1)
                if not chunk:
                    raise DemoError(f"the controller simulator closed its stdout:\n{self.sim.log()[-2000:]}")
                line += chunk
        port = int(line.decode().split()[-1])
        self.sim_url = f"http://127.0.0.1:{port}"
        say(f"     listening on 127.0.0.1:{port} ({self.sim_profile} profile)")
        return f"127.0.0.1:{port}"

    def _start_keystone(self) -> None:
        """A local Keystone, users for the server, Nova's notifier and the demo project, and a stand-in Nova."""
        from restproxy_testing import keystone as ks
        from restproxy_testing.nova_standin import NovaStandin

        global TENANT
        if not ks.available():
            raise DemoError(f"--keystone needs Keystone in {ks.VENV}: run scripts/bootstrap.sh (ensure_keystone)")
        say("   starting Keystone (SQLite, gunicorn): keystone-manage db_sync, fernet_setup, credential_setup, bootstrap")
        self.keystone = ks.Keystone().setup()
        say(f"     Keystone on {self.keystone.url}/v3 (region RegionOne)")
        password = "demo-" + uuid.uuid4().hex[:8]
        self.keystone.user("neutron", password, "service", roles=("admin", "service"))
        self.keystone.user("nova", password, "service", roles=("admin", "service"))
        self.keystone.user("demo", password, "demo", roles=("member", "admin"))
        TENANT = self.keystone.project("demo")
        self.nova = NovaStandin(self.keystone.url).start()
        self.keystone.endpoint("compute", "nova", self.nova.url + "/v2.1")
        say(f"     users neutron, nova (project service) and demo (project demo {TENANT}); stand-in Nova on {self.nova.url}")
        self.openstack_config = (
            f"notify_nova_on_port_status_changes = true\nsend_events_interval = 1\n"
            f"[keystone_authtoken]\nwww_authenticate_uri = {self.keystone.url}/v3\nauth_url = {self.keystone.url}\n"
            f"auth_type = password\nusername = neutron\npassword = {password}\nproject_name = service\n"
            f"[nova]\nauth_url = {self.keystone.url}/v3\nauth_type = password\nusername = nova\npassword = {password}\n"
            f"project_name = service\nregion_name = RegionOne\n"
        )
        self.demo_password = password

    def _show_keystone(self) -> None:
        self.keystone.endpoint("network", "neutron", self.url)
        say(f"   registered the server in the catalog: openstack endpoint create --region RegionOne network public {self.url}")
        status, _ = http("GET", self.url + "/v2.0/networks")
        say(f"   GET /v2.0/networks without a token -> {status}")
        AUTH["X-Auth-Token"] = self.keystone.token("demo", self.demo_password, "demo")
        status, _ = http("GET", self.url + "/v2.0/networks")
        say(f"   with a token of user demo (project demo) from Keystone -> {status}; every call below carries it")

    def _start_server(self) -> None:
        tokens = os.path.join(self.tmp, "agent-tokens.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {TOKEN: {"host": self.host, "kind": "agent"}, DHCP_TOKEN: {"host": self.host, "kind": "dhcp"}}}, f)
        strategy = "keystone" if self.use_keystone else "noauth"
        with open(self.server_config, "w") as f:
            f.write(
                f"[DEFAULT]\nauth_strategy = {strategy}\n{self.openstack_config}"
                f"[RESTPROXY]\nservers = {self.controllers}\nserver_timeout = 5\n"
                f"[AGENT]\nagent_tokens_file = {tokens}\n"
            )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [
            os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=-", "quantum-server",
            "--config", self.server_config, "--port", f"tcp:{port}:interface=127.0.0.1",
            "--sql-connection", self.db_url, "--state-path", self.tmp,
        ]  # fmt: skip
        self.server = Child("quantum-server", argv, os.path.join(self.tmp, "server.log"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.api("GET", "/", expect=None)[0] == 200:
                    break
            except OSError:
                pass
            if not self.server.alive() or time.monotonic() > deadline:
                raise DemoError(f"quantum-server did not start:\n{self.server.log()[-3000:]}")
            time.sleep(0.1)
        say(f"     API on {self.url} (SQLite in {self.tmp}, controllers {self.controllers})")

    def _wait_profile(self, timeout: float = 15) -> str:
        """The profile the server uses (with controller_profile = auto: once it has detected it)."""
        deadline = time.monotonic() + timeout
        while True:
            _, status = self.api("GET", "/admin/pool")
            if status.get("profile_source") != "pending":
                return status["profile"]
            if time.monotonic() > deadline:
                say(f"   no controller answered GET /capabilities within {timeout:.0f}s; the server assumes {status['profile']}")
                return status["profile"]
            time.sleep(0.1)

    def _start_agent(self) -> None:
        assert self.sandbox is not None
        config = os.path.join(self.tmp, "restproxy_agent.ini")
        with open(config, "w") as f:
            f.write(agent_config_text(self.host, self.url, self.sandbox.endpoint, self.agent_metrics_port, self.of_target))
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=-", "restproxy-agent", "--config", config]
        self.agent = Child(f"restproxy-agent for host {self.host}", argv, os.path.join(self.tmp, "agent.log"))
        deadline = time.monotonic() + 30
        while "ports bound to" not in self.agent.log():
            if not self.agent.alive() or time.monotonic() > deadline:
                raise DemoError(f"restproxy-agent did not start:\n{self.agent.log()[-3000:]}")
            time.sleep(0.1)
        say("     connected to the server's agent channel")

    def _start_dhcp_agent(self) -> None:
        assert self.sandbox is not None
        config = os.path.join(self.tmp, "restproxy_dhcp_agent.ini")
        openflow = f"of_controller = {self.of_target}\nof_protocols = OpenFlow10\n" if self.of_target else ""
        with open(config, "w") as f:
            f.write(
                f"[DEFAULT]\nhost = {self.host}\n[SERVER]\nserver_url = {self.url}\ntoken = {DHCP_TOKEN}\nserver_timeout = 5\n"
                f"[OVS]\nintegration_bridge = {BRIDGE}\novsdb_connection = {self.sandbox.endpoint}\ndatapath_type = netdev\n{openflow}"
                f"[DHCP]\nstate_path = {self.dhcp_state}\ndnsmasq_user = root\ndhcp_lease_duration = 3600\nreport_interval = 2\n"
            )
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=-", "restproxy-dhcp-agent", "--config", config]
        self.dhcp = Child(f"restproxy-dhcp-agent for host {self.host}", argv, os.path.join(self.tmp, "dhcp-agent.log"))
        deadline = time.monotonic() + 30
        while "networks served" not in self.dhcp.log():
            if not self.dhcp.alive() or time.monotonic() > deadline:
                raise DemoError(f"restproxy-dhcp-agent did not start:\n{self.dhcp.log()[-3000:]}")
            time.sleep(0.1)
        say("     connected to the server's agent channel (token kind dhcp)")

    def boot_with_dhcp(self, ports: dict[str, dict[str, Any]]) -> None:
        """udhcpc in each VM's namespace (sends DISCOVER at once); prints each lease as the VM got it."""
        assert self.sandbox is not None and self.dhcp is not None
        started = {}
        for vm, port in ports.items():
            workdir = os.path.join(self.tmp, f"vm-{vm}")
            os.makedirs(workdir, exist_ok=True)
            client = DhcpClient(self.sandbox.netns_name(vm), "tpi" + port["id"][:11], workdir).start(once=True)
            self.clients.append(client)
            started[vm] = (client, time.monotonic())
        for vm, (client, t) in started.items():
            try:
                lease = client.wait_lease(timeout=20, ip=ports[vm]["fixed_ips"][0]["ip_address"])
            except AssertionError as e:
                raise DemoError(f"{vm} got no lease: {e}\n{self.dhcp.log()[-3000:]}") from None
            routes = lease.get("staticroutes", "").split()
            shown = ", ".join(f"{d} via {h}" for d, h in zip(routes[::2], routes[1::2], strict=True)) or "none"
            say(
                f"   {vm} lease ({time.monotonic() - t:.2f}s after udhcpc started): ip {lease['ip']}/{lease.get('mask')} "
                f"router {lease.get('router')} dns {lease.get('dns', 'none')} mtu {lease.get('mtu')} lease {lease.get('lease')}s "
                f"from {lease.get('serverid')}"
            )
            say(f"     routes: {shown}")
        for line in self.dhcp.log().splitlines():
            if "dnsmasq started" in line or "reloaded (SIGHUP)" in line:
                stamp, _, rest = line.partition(" ")
                say(f"     {stamp[11:19]}  {rest.split('] ', 1)[-1]}")

    def show_security_groups(self, vms: dict[str, NetnsVm], ports: dict[str, dict[str, Any]], ip: dict[str, str]) -> None:
        """A2 moves to a group that admits TCP 8080 from A1 only: one connection admitted, one blocked, and why."""
        step("security groups (restproxy-agent's OpenFlow 1.3 flows on br-int, conntrack): one admitted, one blocked")
        a2 = ports["A2"]
        _, body = self.api("POST", "/v2.0/security-groups", {"security_group": {"name": "web", "tenant_id": TENANT}}, expect=201)
        web = body["security_group"]
        rule_body = {
            "security_group_id": web["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 8080, "port_range_max": 8080, "remote_ip_prefix": ip["A1"] + "/32", "tenant_id": TENANT,
        }  # fmt: skip
        _, body = self.api("POST", "/v2.0/security-group-rules", {"security_group_rule": rule_body}, expect=201)
        rule = body["security_group_rule"]
        decided_by = f"rule {rule['id']} of group web: ingress IPv4 tcp 8080 from {rule['remote_ip_prefix']}"
        _, body = self.api("PUT", f"/v2.0/ports/{a2['id']}", {"port": {"security_groups": [web["id"]]}})
        filtered = body["port"]["binding:vif_details"].get("port_filter")
        say(f"   A2's groups: [web] (was [default]); binding:vif_details port_filter {filtered}")
        t, deadline = time.monotonic(), time.monotonic() + 15
        while not vms["A1"].tcp_roundtrip(vms["A2"], ip["A2"], port=8080, timeout=2):
            if time.monotonic() > deadline:
                raise DemoError(f"TCP A1 -> A2:8080 is not admitted by {decided_by}\n{self.agent.log()[-3000:]}")
        say(f"   TCP A1 {ip['A1']} -> A2 {ip['A2']}:8080: admitted ({time.monotonic() - t:.2f}s), by {decided_by}")
        if vms["A1"].tcp_roundtrip(vms["A2"], ip["A2"], port=22, timeout=2):
            raise DemoError("TCP A1 -> A2:22 got through, but no rule of A2's groups admits it")
        say("   TCP A1 -> A2:22: blocked (no answer in 2 s): no ingress rule of A2's group web admits tcp 22, and ingress is")
        say("     denied unless a rule admits it (web's own rules: egress IPv4 and IPv6 to anywhere, Neutron's defaults)")
        last = "(no 'filtered' line for A2 in the agent's log)"
        for line in self.agent.log().splitlines():
            if f"port {a2['id']} filtered" in line:
                last = line.split("] ", 1)[-1]
        say(f"   agent: {last}")

    # -- API ------------------------------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, expect: int | None = 200) -> tuple[int, Any]:
        status, payload = http(method, self.url + path, body)
        if expect is not None and status != expect:
            raise DemoError(f"{method} {path} -> {status} (expected {expect}): {payload}")
        return status, payload

    def network(self, name: str, cidr: str, pool: tuple[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        _, net = self.api("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": TENANT}}, expect=201)
        net = net["network"]
        self.created.append(("networks", net["id"]))
        body = {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr, "tenant_id": TENANT, "name": f"{name}-subnet"}}
        if pool:
            body["subnet"]["allocation_pools"] = [{"start": pool[0], "end": pool[1]}]
        _, subnet = self.api("POST", "/v2.0/subnets", body, expect=201)
        subnet = subnet["subnet"]
        self.created.append(("subnets", subnet["id"]))
        say(f"   network {name} {net['id']}  subnet {cidr} gateway {subnet['gateway_ip']}")
        return net, subnet

    def port(self, net: dict[str, Any], vm: str, ip: str | None = None) -> dict[str, Any]:
        assert self.sandbox is not None
        netns = self.sandbox.netns_name(vm)
        self.sandbox.track_netns(netns)
        body = {
            "port": {
                "network_id": net["id"],
                "tenant_id": TENANT,
                "name": vm,
                "device_id": vm,
                **({"device_owner": "compute:demo"} if self.use_keystone else {}),
                "binding:host_id": self.host,
                "binding:profile": {"netns": netns},
                **({"fixed_ips": [{"ip_address": ip}]} if ip else {}),
            }
        }
        _, port = self.api("POST", "/v2.0/ports", body, expect=201)
        port = port["port"]
        port["_created"] = time.monotonic()
        self.created.append(("ports", port["id"]))
        self.sandbox.track_link("tap" + port["id"][:11])
        ip = port["fixed_ips"][0]["ip_address"]
        say(f"   port {vm}: {port['id']}  mac {port['mac_address']}  ip {ip}  netns {netns}  status {port['status']}")
        return port

    def wait_active(self, ports: dict[str, dict[str, Any]], timeout: float = 30) -> None:
        assert self.agent is not None
        pending, deadline = dict(ports), time.monotonic() + timeout
        while pending:
            for vm, port in list(pending.items()):
                _, body = self.api("GET", f"/v2.0/ports/{port['id']}")
                if body["port"]["status"] == "ACTIVE":
                    seconds = time.monotonic() - port["_created"]
                    say(f"\n   port {vm} ({port['id']}) is ACTIVE, {seconds:.2f}s after its POST; the agent's log for it:")
                    for line in self.agent_lines(port["id"]):
                        say("     " + line)
                    del pending[vm]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"ports not ACTIVE after {timeout:.0f}s: {sorted(pending)}\n{self.agent.log()[-3000:]}")
            if not self.agent.alive():
                raise DemoError(f"restproxy-agent exited:\n{self.agent.log()[-3000:]}")
            time.sleep(0.1)

    # -- the job ----------------------------------------------------------------------------------------------------
    def run(self) -> None:
        assert self.sandbox is not None
        step("creating networks A and B with subnets through the v2.0 API")
        net_a, _ = self.network("A", "10.77.1.0/24")
        # The same CIDR as A: only OVS keeps them apart. B's pool is A's high end, so that B's own ports (its DHCP
        # port) never hold an address of A's VMs: a reply from A's addresses can then only come from network A. B1's
        # address (in A's range, and outside B's pool, so that B's DHCP port cannot take it first) is given.
        net_b, _ = self.network("B", "10.77.1.0/24", pool=("10.77.1.241", "10.77.1.254"))

        step(f"creating ports A1, A2 on A and B1 on B, bound to this host ({self.host}), each in a namespace as a VM")
        ports = {vm: self.port(net, vm, ip) for vm, net, ip in (("A1", net_a, None), ("A2", net_a, None), ("B1", net_b, "10.77.1.240"))}

        step("waiting for the agent to plug them (Open vSwitch) and report them ACTIVE")
        self.wait_active(ports)
        if self.nova is not None:
            self.show_nova_events("network-vif-plugged", ports)

        step("booting the VMs with DHCP (udhcpc in each namespace; restproxy-dhcp-agent runs one dnsmasq per network)")
        self.boot_with_dhcp(ports)

        step(f"traffic between the VMs ({isolation_line(self.of_target)})")
        vms = {vm: NetnsVm(self.sandbox.netns_name(vm), "tpi" + p["id"][:11]) for vm, p in ports.items()}
        ip = {vm: p["fixed_ips"][0]["ip_address"] for vm, p in ports.items()}
        # B1's address is in A's subnet (B has the same CIDR): nothing but OVS's network isolation keeps it from A.
        b1_ip = ip["B1"]
        if vms["A1"].mac() != ports["A1"]["mac_address"]:
            raise DemoError(f"A1's NIC has MAC {vms['A1'].mac()}, the port says {ports['A1']['mac_address']}")
        say(f"   A1 NIC {vms['A1'].ifname} mac {vms['A1'].mac()} = the port's MAC")
        t = time.monotonic()
        if not vms["A1"].ping_until(ip["A2"], deadline=10):
            raise DemoError(f"A1 cannot ping A2 ({ip['A2']})")
        say(f"   ping A1 {ip['A1']} -> A2 {ip['A2']}: ok ({time.monotonic() - t:.2f}s)")
        t = time.monotonic()
        if not vms["A1"].tcp_roundtrip(vms["A2"], ip["A2"]):
            raise DemoError(f"TCP A1 -> A2 ({ip['A2']}) failed")
        say(f"   TCP A1 -> A2 {ip['A2']} (18000 bytes echoed back): ok ({time.monotonic() - t:.2f}s)")
        if vms["B1"].ping(ip["A2"], count=2, wait=1) or vms["A1"].ping(b1_ip, count=2, wait=1):
            raise DemoError("B1 (network B) reaches network A: not isolated")
        by = f"by the OpenFlow controller {self.of_target}" if self.of_target else "by local VLAN tags on br-int"
        say(f"   ping B1 {b1_ip} (network B, address in A's subnet) <-> A1/A2: no reply, A and B are isolated ({by})")
        if self.of_target:
            say("   security groups: not enforced on this host (the OpenFlow controller owns br-int's flows; port_filter false)")
        else:
            self.show_security_groups(vms, ports, ip)

        step("the controller's view")
        if self.sim is not None:
            _, state = http("GET", self.sim_url + "/_sim/state?summary=1")
            counts = state["counts"]
            # Floodlight keeps networks and attached MACs ("hosts"); Big Switch also ports.
            # Each network also has its DHCP port (network:dhcp, plugged by the DHCP agent): 5 ports.
            wanted = {"networks": 2, "hosts": 5} if state["profile"] == "floodlight" else {"networks": 2, "ports": 5, "attachments": 5}
            shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in wanted)
            say(f"   controller simulator ({state['profile']} profile): {shown}")
            if {k: counts.get(k) for k in wanted} != wanted:
                raise DemoError(f"the controller holds {counts}, expected {wanted}")
        self.manage("pool-status", "--url", self.url, "--timeout", "30")
        self.manage("--config", self.server_config, "--sql-connection", self.db_url, "check", first=True)

        step("metrics (Prometheus text format)")
        wanted = (
            ("quantum-server", f"{self.url}/metrics", ("quantum_api_request_seconds_count", "quantum_controller_requests_total")),
            (
                "restproxy-agent",
                f"http://127.0.0.1:{self.agent_metrics_port}/metrics",
                ("restproxy_agent_vifs", "restproxy_agent_plug_seconds"),
            ),
        )
        for who, url, prefixes in wanted:
            status, text = http("GET", url)
            if status != 200 or not isinstance(text, str):
                raise DemoError(f"GET {url} -> {status}")
            say(f"   {who}: GET {url}")
            for line in text.splitlines():
                if line.startswith(prefixes) and "_bucket" not in line and "_created" not in line:
                    say(f"     {line}")

        step("deleting everything through the API")
        self.delete_created(strict=True)
        deadline = time.monotonic() + 15
        taps = ["tap" + p["id"][:11] for p in ports.values()]
        while any(os.path.exists(f"/sys/class/net/{t}") for t in taps) or not all(
            any(" unplugged " in line for line in self.agent_lines(p["id"])) for p in ports.values()
        ):
            if time.monotonic() > deadline:
                raise DemoError(f"the agent did not unplug {taps}")
            time.sleep(0.1)
        say(f"   the agent unplugged {', '.join(taps)}; its log for A1 since the delete:")
        for line in self.agent_lines(ports["A1"]["id"]):
            if " port_detached " in line or " unplugged " in line or " DOWN " in line:
                say("     " + line)
        if self.sim is not None:
            _, state = http("GET", self.sim_url + "/_sim/state?summary=1")
            say("   controller simulator now holds " + ", ".join(f"{v} {k}" for k, v in state["counts"].items()))
        if self.nova is not None:
            self.show_nova_events("network-vif-deleted", ports)

    def show_nova_events(self, name: str, ports: dict[str, dict[str, Any]], timeout: float = 30) -> None:
        """Wait until the stand-in Nova got ``name`` for every port, and show what it got."""
        ids = {p["id"] for p in ports.values()}
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.nova.events() if e["name"] == name and e["tag"] in ids]
            if {e["tag"] for e in got} == ids:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"Nova did not get {name} for {sorted(ids - {e['tag'] for e in got})}")
            time.sleep(0.2)
        say(f"   Nova (stand-in, token checked against Keystone) got {name}:")
        for e in got:
            say(f"     server {e['server_uuid']} port {e['tag']} status {e['status']}")

    def agent_lines(self, port_id: str) -> list[str]:
        """The agent's log lines for one port, as ``HH:MM:SS message`` (twistd prefixes a timestamp and the logger)."""
        out = []
        for line in self.agent.log().splitlines() if self.agent else []:
            if f"port {port_id} " in line:
                stamp, _, rest = line.partition(" ")
                out.append(f"{stamp[11:19]}  {rest.split('] ', 1)[-1]}")
        return out

    def manage(self, *args: str, first: bool = False) -> None:
        argv = [os.path.join(BIN, "restproxy-manage"), *args]
        shown = " ".join(a for a in args if not a.startswith(("--url", "--timeout", "--sql", "--config", "sqlite", "http", "30", "/")))
        say(f"   $ restproxy-manage {shown}")
        env = dict(os.environ, QRP_ADMIN_TOKEN=AUTH["X-Auth-Token"]) if AUTH else None  # --keystone: the demo user is an admin
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, start_new_session=True, env=env)
        for line in (r.stdout + r.stderr).strip().splitlines():
            say("     " + line)
        if r.returncode != 0:
            raise DemoError(f"restproxy-manage {shown} exited with {r.returncode}")

    def delete_created(self, strict: bool) -> None:
        for collection, obj_id in reversed(self.created):
            if collection == "subnets":
                continue  # deleted with their network
            status, body = http("DELETE", f"{self.url}/v2.0/{collection}/{obj_id}", timeout=10)
            if strict:
                say(f"   DELETE /v2.0/{collection}/{obj_id} -> {status}")
                if status not in (204, 404):
                    raise DemoError(f"DELETE /v2.0/{collection}/{obj_id} -> {status}: {body}")
        self.created.clear()

    # -- teardown -----------------------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Stop everything, in order; returns what could not be removed (empty: nothing left behind)."""
        if self.created and self.server is not None and self.server.alive():
            try:
                self.delete_created(strict=False)
            except OSError:
                pass
        for client in self.clients:
            client.stop()
        for child in (self.dhcp, self.agent, self.server, self.sim):
            if child is not None:
                child.stop()
        for extra in (self.nova, self.keystone):
            if extra is not None:
                extra.close()
        self._stop_dnsmasq()
        left: list[str] = []
        if self.sandbox is not None:
            self.sandbox.stop()
            left += self.sandbox.leftovers()
        left += [f"{c.name} pid {c.proc.pid}" for c in (self.dhcp, self.agent, self.server, self.sim) if c is not None and c.alive()]
        left += [f"dnsmasq of network {n}" for n in self._dnsmasq_pids()]
        tempfile.tempdir = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        if os.path.exists(self.tmp):
            left.append(self.tmp)
        return left

    def _dnsmasq_pids(self) -> dict[str, int]:
        """network id -> pid of the dnsmasq the DHCP agent left running (it outlives the agent on purpose)."""
        out = {}
        for net_id in os.listdir(self.dhcp_state) if os.path.isdir(self.dhcp_state) else []:
            pid_file = os.path.join(self.dhcp_state, net_id, "pid")
            try:
                with open(pid_file) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f"--pid-file={pid_file}".encode() in f.read():
                        out[net_id] = pid
            except (OSError, ValueError):
                continue
        return out

    def _stop_dnsmasq(self) -> None:
        """What the DHCP agent had not torn down yet (networks deleted, it does it itself): dnsmasq and qdhcp- namespaces."""
        for pid in self._dnsmasq_pids().values():
            os.kill(pid, signal.SIGKILL)
        for net_id in os.listdir(self.dhcp_state) if os.path.isdir(self.dhcp_state) else []:
            delete_netns(f"qdhcp-{net_id}")

    def dump_logs(self) -> None:
        for child in (self.dhcp, self.agent, self.server, self.sim):
            if child is not None:
                tail = child.log().splitlines()[-15:]
                if tail:
                    say(f"\n--- last lines of the {child.name} log:")
                    for line in tail:
                        say("   " + line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", help="real controllers host:port[,host:port] instead of the simulator")
    parser.add_argument(
        "--openflow",
        metavar="HOST:PORT",
        help="point br-int at this OpenFlow controller (e.g. Floodlight's 127.0.0.1:6633), or 'none' for local VLAN tags; "
        "default: Floodlight's port 6633 when --controllers are Floodlight, else none",
    )
    parser.add_argument("--sim-profile", choices=["bigswitch", "floodlight"], default="bigswitch", help="the simulator's profile")
    parser.add_argument("--keystone", action="store_true", help="a local Keystone and a stand-in Nova (auth_strategy = keystone)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, Open vSwitch); run ./run-demo.sh as root", file=sys.stderr)
        return 2
    reason = ovs_unavailable("the demo")
    if reason:
        print(f"demo: {reason}; ./run-demo.sh installs it", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    demo = Demo(args.controllers, args.openflow, args.sim_profile, args.keystone)
    code = 1
    try:
        demo.start()
        demo.run()
        code = 0
    except Interrupted as e:
        say(f"\ninterrupted ({e}): cleaning up")
        code = 130
    except DemoError as e:
        say(f"\ndemo FAILED: {e}")
        demo.dump_logs()
    except Exception as e:  # noqa: BLE001 - any failure: say it, clean up, exit non-zero
        say(f"\ndemo FAILED: {type(e).__name__}: {e}")
        demo.dump_logs()
    finally:
        # Cleanup must finish: further signals are ignored until it has.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step("tearing down: agent, server, controller simulator, Open vSwitch, namespaces, temp files")
        left = demo.teardown()
        if left:
            say(f"   LEFT BEHIND: {left}")
            code = code or 1
        else:
            say("   nothing left behind")
    say(f"\ndemo {'finished: OK' if code == 0 else 'interrupted' if code == 130 else 'FAILED'} ({time.monotonic() - T0:.1f}s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
