"""Security groups enforced by a real restproxy-agent in a real Open vSwitch (userspace datapath, conntrack), netns VMs.

The agent (``twistd -n restproxy-agent``) talks to a stand-in agent channel (``restproxy_testing.fake_channel``)
that the tests feed with port and group dicts as the contract describes: no quantum-server needed. Traffic is
real: ping, TCP through ``ip netns exec``, and raw frames sent and counted over AF_PACKET
(``restproxy_testing.frames``). Flows are read back with ``ovs-ofctl`` (tests only).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing.agent_stack import HOST, AgentProcess
from restproxy_testing.fake_channel import FakeChannel
from restproxy_testing.frames import Sniffer, arp_marker, arp_reply, send_frames, udp_frame
from restproxy_testing.ovs_sandbox import NetnsVm, OvsSandbox
from tests.ovs_sandbox import require_ovs

BRIDGE = "br-e2e"


def rule(direction: str, ethertype: str = "IPv4", protocol: str | None = None, pmin: int | None = None, pmax: int | None = None,
         prefix: str | None = None, remote: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": uuid.uuid4().hex, "direction": direction, "ethertype": ethertype, "protocol": protocol, "port_range_min": pmin,
            "port_range_max": pmax, "remote_ip_prefix": prefix, "remote_group_id": remote}  # fmt: skip


EGRESS_ANY = [rule("egress"), rule("egress", "IPv6")]


class Env:
    def __init__(self, sandbox: OvsSandbox, channel: FakeChannel, agent: AgentProcess) -> None:
        self.sandbox, self.channel, self.agent = sandbox, channel, agent
        self.members: dict[str, dict[str, list[str]]] = {}  # group -> member port -> its addresses

    @property
    def mgmt(self) -> str:
        return f"unix:{self.sandbox.run_dir}/{BRIDGE}.mgmt"

    def group(self, group_id: str, rules: list[dict[str, Any]], members: list[str] | None = None) -> int:
        """Send the group whole (``security_group_updated``), with ``members`` (one made-up member port each) or the
        ports that joined it; returns the event's seq."""
        if members is not None:
            self.members[group_id] = {f"member-{address}": [address] for address in members}
        ports = self.members.setdefault(group_id, {})
        members_now = sorted({a for held in ports.values() for a in held})
        g = {"id": group_id, "tenant_id": "t", "rules": rules, "members": members_now, "ports": {k: list(v) for k, v in ports.items()}}
        return self.channel.put_group(g)

    def port(self, net: str, ip: str, groups: list[str], port_security: bool = True, pairs: list[dict[str, str]] | None = None,
             owner: str = "compute:nova", wait: bool = True) -> tuple[dict[str, Any], NetnsVm]:  # fmt: skip
        port_id = str(uuid.uuid4())
        vm = f"sg{port_id[:6]}"
        netns = self.sandbox.netns_name(vm)
        self.sandbox.track_netns(netns)
        mac = "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        port = {
            "id": port_id, "mac_address": mac, "network_id": net, "device_id": vm, "device_owner": owner, "status": "DOWN",
            "admin_state_up": True, "fixed_ips": [{"ip_address": ip, "subnet_id": net + "-s"}], "binding:profile": {"netns": netns},
            "security_groups": sorted(groups), "port_security_enabled": port_security,
            "allowed_address_pairs": [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address", mac)} for p in pairs or []],
        }  # fmt: skip
        for g in groups:  # the server sends the member change (this port's addresses in the group); so do we
            self.members.setdefault(g, {})[port_id] = [ip]
            if g in self.channel.groups:
                self.channel.put_member(g, port_id, [ip])
        self.channel.put_port(port)
        vm_obj = NetnsVm(netns, "tpi" + port_id[:11])
        if wait:
            self.channel.wait_status([port_id], "ACTIVE")
            vm_obj.set_ip(ip + "/24")
        return port, vm_obj

    def flows(self, *filters: str) -> str:
        r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", self.mgmt, *filters], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def flow_table(self) -> dict[str, str]:
        """cookie -> the flow it is on (without its counters); every flow of the agent has a cookie of its own."""
        table: dict[str, str] = {}
        for line in self.flows().splitlines():
            m = re.match(r"\s*cookie=(0x[0-9a-f]+), .*?(table=\d+, .*)", line)
            if m:
                flow = re.sub(r"(n_packets|n_bytes|idle_age|hard_age)=\d+, ", "", m.group(2))
                assert m.group(1) not in table, f"two flows with cookie {m.group(1)}: {table[m.group(1)]} / {flow}"
                table[m.group(1)] = flow
        return table

    def ofport(self, port_id: str) -> int:
        return int(self.sandbox.vsctl("get", "Interface", "tap" + port_id[:11], "ofport"))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    require_ovs()
    sandbox = OvsSandbox().start()
    channel = FakeChannel(HOST).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            agent = AgentProcess(channel, sandbox, tmp).start()  # type: ignore[arg-type]  # (it needs .url)
            try:
                agent.wait_log("in step after reconcile (listed)", timeout=60)
                yield Env(sandbox, channel, agent)
            finally:
                agent.stop()
    finally:
        channel.stop()
        sandbox.stop()
        assert sandbox.leftovers() == []


def _tcp_listen(vm: NetnsVm, ip: str, port: int, seconds: float) -> subprocess.Popen:
    code = (
        "import socket,sys,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('{ip}',{port}));s.listen(8);s.settimeout({seconds})\nprint('listening',flush=True)\n"
        "while True:\n    try:\n        c,_=s.accept()\n    except Exception:\n        break\n"
        "    c.settimeout(30)\n    while True:\n        d=c.recv(100)\n        if not d: break\n        c.sendall(d)\n"
    )
    p = subprocess.Popen(["ip", "netns", "exec", vm.name, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "listening"
    return p


def _tcp_connects(vm: NetnsVm, ip: str, port: int, timeout: float = 2.0) -> bool:
    code = f"import socket\nc=socket.create_connection(('{ip}',{port}),timeout={timeout})\nc.sendall(b'x');assert c.recv(1)==b'x'"
    return vm.exec(sys.executable, "-c", code, check=False, timeout=timeout + 10).returncode == 0


def test_a_new_port_is_filtered_before_it_is_reported_active(env: Env) -> None:
    env.group("fa", EGRESS_ANY)
    seen: list[tuple[str, str, str]] = []

    def on_up(port_ids: list[str]) -> None:
        for pid in port_ids:
            ofport = env.ofport(pid)
            seen.append((pid, env.flows(f"table=0,in_port={ofport}"), env.sandbox.vsctl("get", "Port", "tap" + pid[:11], "tag")))

    env.channel.on_up = on_up
    try:
        port, _ = env.port("net-fa", "10.80.0.5", ["fa"])
    finally:
        env.channel.on_up = None
    (pid, flows, tag), *_ = [s for s in seen if s[0] == port["id"]]
    assert "goto_table:71" in flows  # its egress pipeline is in at the moment it is reported ACTIVE
    assert tag != "4095" and int(tag) > 0  # and it has left the dead VLAN
    log = env.agent.log()
    assert log.index(f"port {pid} filtered") < log.index(f"port {pid} reported ACTIVE")
    # it went onto the bridge with its host end down (passing nothing), and up only once its flows were confirmed
    # for the ofport it asked for (and got)
    assert f"port {pid} device tap{pid[:11]} created (veth, peer tpi{pid[:11]} in netns" in log
    assert ", down until it is filtered)" in log[log.index(f"port {pid} device tap{pid[:11]} created") :].splitlines()[0]
    assert log.index(f"port {pid} filtered") < log.index(f"port {pid} device tap{pid[:11]} up: filtered for ofport")
    assert log.index(f"port {pid} device tap{pid[:11]} up: filtered") < log.index(f"port {pid} reported ACTIVE")
    ofport = env.ofport(pid)
    assert ofport >= 32768 and env.sandbox.vsctl("get", "Interface", "tap" + pid[:11], "ofport_request") == str(ofport)


def _link_up(device: str) -> bool:
    with open(f"/sys/class/net/{device}/flags") as f:
        return bool(int(f.read(), 16) & 0x1)  # IFF_UP


def test_flows_the_switch_refuses_leave_the_new_port_down_and_not_active_until_they_are_in(env: Env) -> None:
    """A new port's flow mods refused by ovs-vswitchd (table 0 full): its host end stays down, passing nothing, it is
    not reported ACTIVE, and the sync is retried; once the switch takes the flows it goes up and ACTIVE, and talks."""
    env.group("rf", [*EGRESS_ANY, rule("ingress", remote="rf"), rule("ingress", "IPv6", remote="rf")])
    _, peer = env.port("net-rf", "10.91.0.5", ["rf"])
    in_table_0 = len(re.findall(r"cookie=", env.flows("table=0")))
    # OVSDB's Flow_Table: table 0 takes no flow beyond those it has (OFPFMFC_TABLE_FULL)
    env.sandbox.vsctl("--", "--id=@ft", "create", "Flow_Table", f"flow_limit={in_table_0}", "overflow_policy=refuse",
                      "--", "set", "Bridge", BRIDGE, "flow_tables:0=@ft")  # fmt: skip
    try:
        mark = env.agent.mark()
        port, vm = env.port("net-rf", "10.91.0.6", ["rf"], wait=False)
        pid, device = port["id"], "tap" + port["id"][:11]
        env.agent.wait_log(f"port {pid} ERROR", mark)
        assert int(env.sandbox.vsctl("get", "Interface", device, "ofport")) > 0  # on the bridge, with its real tag
        assert env.sandbox.vsctl("get", "Port", device, "tag") not in ("[]", "4095")
        assert not _link_up(device)  # and down: nothing passes either way
        assert env.channel.status.get(pid) != "ACTIVE"
        assert "flow mods failed" in env.agent.log()[mark:]
        assert f"port {pid} reported ACTIVE" not in env.agent.log()[mark:]
    finally:
        env.sandbox.vsctl("clear", "Bridge", BRIDGE, "flow_tables")
    env.channel.wait_status([pid], "ACTIVE", timeout=60)
    log = env.agent.wait_log(f"port {pid} reported ACTIVE", mark)
    assert _link_up(device)
    assert log.index(f"port {pid} filtered") < log.index(f"port {pid} reported ACTIVE")
    assert "goto_table:71" in env.flows(f"table=0,in_port={env.ofport(pid)}")
    vm.set_ip("10.91.0.6/24")
    assert vm.ping_until("10.91.0.5", deadline=10)
    assert peer.ping_until("10.91.0.6", deadline=10)


def test_default_group_members_talk_and_others_are_blocked(env: Env) -> None:
    env.group("def", [*EGRESS_ANY, rule("ingress", remote="def"), rule("ingress", "IPv6", remote="def")])
    env.group("oth", EGRESS_ANY)
    a_port, a = env.port("net-d", "10.81.0.5", ["def"])
    b_port, b = env.port("net-d", "10.81.0.6", ["def"])
    _, c = env.port("net-d", "10.81.0.7", ["oth"])
    assert a.ping_until("10.81.0.6", deadline=10) and b.ping("10.81.0.5")
    assert a.tcp_roundtrip(b, "10.81.0.6")
    assert not c.ping("10.81.0.5", count=3, wait=1)  # not a member: no ingress to a
    assert not a.ping("10.81.0.7", count=3, wait=1)  # c's group admits no ingress at all
    assert "ct(table=72,zone=NXM_NX_REG6[0..15])" in env.flows(f"table=71,reg5={env.ofport(a_port['id'])}")


def test_tcp_22_from_one_cidr_admits_exactly_that_and_deleting_the_rule_closes_new_connections(env: Env) -> None:
    ssh = rule("ingress", protocol="tcp", pmin=22, pmax=22, prefix="10.82.0.0/28")
    env.group("ssh", [*EGRESS_ANY, ssh])
    _, a = env.port("net-s", "10.82.0.5", ["ssh"])  # inside 10.82.0.0/28
    _, b = env.port("net-s", "10.82.0.6", ["ssh"])
    _, c = env.port("net-s", "10.82.0.100", ["ssh"])  # outside it
    servers = [_tcp_listen(b, "10.82.0.6", port, 60) for port in (22, 23)]
    try:
        assert _tcp_connects(a, "10.82.0.6", 22)
        assert not _tcp_connects(c, "10.82.0.6", 22)  # other source
        assert not _tcp_connects(a, "10.82.0.6", 23)  # other port
        assert not a.ping("10.82.0.6", count=2, wait=1)  # other protocol
        # An established connection, then the rule goes.
        code = (
            "import socket,sys\nc=socket.create_connection(('10.82.0.6',22),timeout=5)\nc.sendall(b'1');assert c.recv(1)==b'1'\n"
            "print('up',flush=True);sys.stdin.readline()\nc.sendall(b'2');print(c.recv(1).decode(),flush=True)"
        )
        held = subprocess.Popen(
            ["ip", "netns", "exec", a.name, sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert held.stdout is not None and held.stdout.readline().strip() == "up"
        seq = env.group("ssh", EGRESS_ANY)
        env.agent.wait_log(f"security group ssh updated #{seq}")
        time.sleep(0.5)
        assert not _tcp_connects(a, "10.82.0.6", 22)  # new connections: refused by the flows
        # The established one keeps flowing: conntrack still has it (+est), and the agent does not flush conntrack.
        out, _ = held.communicate("go\n", timeout=20)
        assert out.strip().endswith("2")
    finally:
        for s in servers:
            s.kill()
            s.wait()


def test_remote_group_membership_change_takes_effect(env: Env) -> None:
    env.group("web", [*EGRESS_ANY, rule("ingress", remote="clients")])
    env.group("clients", EGRESS_ANY)
    env.group("nobody", EGRESS_ANY)
    _, web = env.port("net-r", "10.83.0.5", ["web"])
    _, client = env.port("net-r", "10.83.0.6", ["clients"])
    c_port, c = env.port("net-r", "10.83.0.7", ["nobody"])
    assert client.ping_until("10.83.0.5", deadline=10)
    assert not c.ping("10.83.0.5", count=2, wait=1)
    t0 = time.monotonic()
    env.group("clients", EGRESS_ANY, members=["10.83.0.6", "10.83.0.7"])  # c's address joins the remote group
    assert c.ping_until("10.83.0.5", deadline=10)
    print(f"member added -> first ping through: {(time.monotonic() - t0) * 1000:.0f} ms")
    assert "nw_src=10.83.0.7" in env.flows("table=82")
    seq = env.group("clients", EGRESS_ANY, members=["10.83.0.6"])  # and leaves it
    env.agent.wait_log(f"security group clients updated #{seq}")
    time.sleep(0.3)
    assert "nw_src=10.83.0.7" not in env.flows("table=82")
    assert not c.ping("10.83.0.5", count=2, wait=1)  # a new ping is a new ICMP id: a new connection, refused
    assert client.ping("10.83.0.5")


def test_member_events_join_and_leave_a_remote_group_and_a_shared_address_stays_while_a_member_has_it(env: Env) -> None:
    """The server's member events (one port's addresses in a group): an address two members share (an allowed
    pair) is admitted until neither has it."""
    env.group("web2", [*EGRESS_ANY, rule("ingress", remote="clients2")])
    env.group("clients2", EGRESS_ANY, members=[])
    env.group("nobody2", EGRESS_ANY)
    _, web = env.port("net-m", "10.84.0.5", ["web2"])
    _, c = env.port("net-m", "10.84.0.7", ["nobody2"])
    assert not c.ping("10.84.0.5", count=2, wait=1)
    t0 = time.monotonic()
    env.channel.put_member("clients2", "member-a", ["10.84.0.7"])  # a member elsewhere with c's address (a pair)
    assert c.ping_until("10.84.0.5", deadline=10)
    print(f"member event -> first ping through: {(time.monotonic() - t0) * 1000:.0f} ms")
    seq = env.channel.put_member("clients2", "member-b", ["10.84.0.7", "10.84.0.99"])  # a second one shares it
    env.agent.wait_log(f"security group clients2 member member-b #{seq}")
    seq = env.channel.put_member("clients2", "member-a", [])  # the first leaves: member-b still has the address
    env.agent.wait_log(f"security group clients2 member member-a #{seq}")
    time.sleep(0.3)
    assert "nw_src=10.84.0.7" in env.flows("table=82") and "nw_src=10.84.0.99" in env.flows("table=82")
    assert c.ping("10.84.0.5")
    seq = env.channel.put_member("clients2", "member-b", [])  # and now nobody has it
    env.agent.wait_log(f"security group clients2 member member-b #{seq}")
    time.sleep(0.3)
    assert "nw_src=10.84.0.7" not in env.flows("table=82") and "nw_src=10.84.0.99" not in env.flows("table=82")
    assert not c.ping("10.84.0.5", count=2, wait=1)  # a new ping is a new connection: refused


def test_spoofed_mac_spoofed_ip_and_arp_for_another_ip_are_dropped_and_an_allowed_pair_is_admitted(env: Env) -> None:
    env.group("open", [*EGRESS_ANY, rule("ingress"), rule("ingress", "IPv6")])
    v_port, victim = env.port("net-x", "10.84.0.5", ["open"])
    a_port, attacker = env.port("net-x", "10.84.0.6", ["open"], pairs=[{"ip_address": "10.84.0.200"}])
    am, vm_mac = a_port["mac_address"], v_port["mac_address"]
    frames = {
        "legit": udp_frame(am, vm_mac, "10.84.0.6", "10.84.0.5", b"LEGIT-0001"),
        "pair": udp_frame(am, vm_mac, "10.84.0.200", "10.84.0.5", b"PAIR-00002"),
        "spoof_ip": udp_frame(am, vm_mac, "10.84.0.77", "10.84.0.5", b"SPOOFIP003"),
        "spoof_mac": udp_frame("fa:16:3e:66:66:66", vm_mac, "10.84.0.6", "10.84.0.5", b"SPOOFMAC04"),
        "arp_own": arp_reply(am, "10.84.0.6", vm_mac, "10.84.0.5"),
        "arp_other": arp_reply(am, "10.84.0.99", vm_mac, "10.84.0.5"),
    }
    markers = [b"LEGIT-0001", b"PAIR-00002", b"SPOOFIP003", b"SPOOFMAC04", arp_marker(am, "10.84.0.6"), arp_marker(am, "10.84.0.99")]
    sniffer = Sniffer(victim, markers, seconds=3)
    send_frames(attacker, list(frames.values()), seconds=1.0, interval=0.1)
    legit, pair, spoof_ip, spoof_mac, arp_own, arp_other = sniffer.counts()
    assert legit > 0 and pair > 0 and arp_own > 0  # the sniffer sees what is allowed
    assert (spoof_ip, spoof_mac, arp_other) == (0, 0, 0)


def test_port_security_disabled_lets_everything_through(env: Env) -> None:
    env.group("closed", EGRESS_ANY)
    _, closed = env.port("net-p", "10.85.0.5", ["closed"])
    o_port, open_vm = env.port("net-p", "10.85.0.6", [], port_security=False)
    _, other = env.port("net-p", "10.85.0.7", [], port_security=False)
    assert other.ping_until("10.85.0.6", deadline=10)  # no groups, no port security: ingress is open
    assert not other.ping("10.85.0.5", count=2, wait=1)  # a filtered port on the same network still is filtered
    sniffer = Sniffer(other, [b"NOPS-SPOOF"], seconds=2)
    send_frames(open_vm, [udp_frame("fa:16:3e:77:77:77", "ff:ff:ff:ff:ff:ff", "10.85.0.99", "10.85.0.255", b"NOPS-SPOOF")], 0.5, 0.1)
    assert sniffer.counts()[0] > 0  # spoofed source MAC and IP leave a port without port security
    assert "goto_table:71" not in env.flows(f"table=0,in_port={env.ofport(o_port['id'])}")


def test_two_tenants_on_one_network_are_isolated_by_their_groups(env: Env) -> None:
    env.group("ta", [*EGRESS_ANY, rule("ingress", remote="ta")])
    env.group("tb", [*EGRESS_ANY, rule("ingress", remote="tb")])
    _, a1 = env.port("net-shared", "10.86.0.11", ["ta"])
    _, a2 = env.port("net-shared", "10.86.0.12", ["ta"])
    _, b1 = env.port("net-shared", "10.86.0.21", ["tb"])
    _, b2 = env.port("net-shared", "10.86.0.22", ["tb"])
    assert a1.ping_until("10.86.0.12", deadline=10) and b1.ping_until("10.86.0.22", deadline=10)
    assert not a1.ping("10.86.0.21", count=2, wait=1) and not b1.ping("10.86.0.11", count=2, wait=1)
    assert not a2.ping("10.86.0.22", count=2, wait=1) and not b2.ping("10.86.0.12", count=2, wait=1)


def _ping_loss(proc: subprocess.Popen) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=120)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_agent_restart_loses_no_ping_and_lets_no_spoofed_frame_through(env: Env, how: str) -> None:
    env.group("rs", [*EGRESS_ANY, rule("ingress", remote="rs")])
    v_port, victim = env.port("net-rs", "10.87.0.5", ["rs"])
    _, pinger = env.port("net-rs", "10.87.0.6", ["rs"])
    a_port, attacker = env.port("net-rs", "10.87.0.7", ["rs"])
    assert pinger.ping_until("10.87.0.5", deadline=10)
    old = env.flow_table()
    assert len(old) > 20
    planted = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", env.mgmt, "cookie=0x5eed,table=99,priority=1,actions=drop"],
                             capture_output=True, text=True, timeout=30)  # an older release's leftover  # fmt: skip
    assert planted.returncode == 0, planted.stderr
    am, vmac = a_port["mac_address"], v_port["mac_address"]
    spoofed = [
        udp_frame(am, vmac, "10.87.0.66", "10.87.0.5", b"RS-SPOOFIP"),
        udp_frame("fa:16:3e:55:55:55", vmac, "10.87.0.7", "10.87.0.5", b"RS-SPOOFMC"),
        arp_reply(am, "10.87.0.6", vmac, "10.87.0.5"),
    ]
    control = udp_frame(am, vmac, "10.87.0.7", "10.87.0.5", b"RS-CONTROL")
    sniffer = Sniffer(victim, [b"RS-SPOOFIP", b"RS-SPOOFMC", arp_marker(am, "10.87.0.6"), b"RS-CONTROL"], seconds=9)
    ping = subprocess.Popen(["ip", "netns", "exec", pinger.name, "ping", "-n", "-i", "0.02", "-c", "300", "-W", "1", "10.87.0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    flood = send_frames(attacker, [*spoofed, control], seconds=7.0, interval=0.01, wait=False)
    time.sleep(1.0)
    mark = env.agent.mark()
    if how == "kill -9":
        env.agent.kill()
    else:
        env.agent.stop()
    env.agent.start()
    tail = env.agent.wait_log("removed", mark, timeout=60)
    sent, received = _ping_loss(ping)
    flood.communicate(timeout=30)
    spoof_ip, spoof_mac, arp_other, control_seen = sniffer.counts()
    through = spoof_ip + spoof_mac + arp_other
    print(f"restart ({how}): ping {received}/{sent} received, {sent - received} lost; spoofed frames through: {through}")
    assert (spoof_ip, spoof_mac, arp_other) == (0, 0, 0)
    assert control_seen > 0
    assert sent - received == 0, f"{sent - received} pings lost"
    # The new run kept the earlier run's flows as they were (the same content under the same cookies: none sent again)
    # and removed the leftover.
    assert env.flow_table() == old
    kept = re.search(r"removed 1 stale flows \(cookies 0x5eed\) of \d+; (\d+) flows of the earlier run kept", tail)
    assert kept and int(kept.group(1)) == len(old), tail[-2000:]


def test_report_state_says_openflow(env: Env) -> None:
    deadline = time.monotonic() + 10
    while not env.channel.states and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.channel.states[-1]["configurations"]["firewall"] == "openflow"


def test_non_vif_ports_keep_working(env: Env) -> None:
    """An internal port (no iface-id) on br-int, in a namespace, with a tag: reaches a VIF whose group admits it."""
    env.group("infra", [*EGRESS_ANY, rule("ingress", prefix="10.88.0.0/24")])
    v_port, vm = env.port("net-i", "10.88.0.5", ["infra"])
    tag = env.sandbox.vsctl("get", "Port", "tap" + v_port["id"][:11], "tag")
    name = "sgint" + uuid.uuid4().hex[:6]
    ns = env.sandbox.netns_name("sgint")
    env.sandbox.track_netns(ns)
    env.sandbox.track_link(name)
    env.sandbox.vsctl("add-port", BRIDGE, name, f"tag={tag}", "--", "set", "Interface", name, "type=internal")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "set", name, "netns", ns], check=True)
    infra = NetnsVm(ns, name)
    infra.set_ip("10.88.0.9/24")
    ofport = int(env.sandbox.vsctl("get", "Interface", name, "ofport"))
    ok = infra.ping_until("10.88.0.5", deadline=10)
    assert ok, f"{env.flows(f'table=0,in_port={ofport}')}\n{env.agent.log()[-3000:]}"
    assert os.path.exists(f"/run/netns/{ns}")


def test_port_updates_take_effect_and_a_detached_port_leaves_no_flows(env: Env) -> None:
    env.group("shut", EGRESS_ANY)
    env.group("wide", [*EGRESS_ANY, rule("ingress")])
    s_port, server = env.port("net-u", "10.89.0.5", ["shut"])
    c_port, client = env.port("net-u", "10.89.0.6", ["wide"])
    assert not client.ping("10.89.0.5", count=2, wait=1)
    updated = dict(s_port, security_groups=["wide"])  # port_updated: its groups
    seq = env.channel.put_port(updated)
    env.agent.wait_log(f"port {s_port['id']} event port_updated #{seq}")
    assert client.ping_until("10.89.0.5", deadline=10)
    # an allowed address pair added by port_updated: the client may now send from 10.89.0.77
    sniffer = Sniffer(server, [b"PAIR-LATER"], seconds=4)
    frame = udp_frame(c_port["mac_address"], s_port["mac_address"], "10.89.0.77", "10.89.0.5", b"PAIR-LATER")
    send_frames(client, [frame] * 3)  # three frames, once: dropped (10.89.0.77 is not the client's)
    seq = env.channel.put_port(dict(c_port, allowed_address_pairs=[{"ip_address": "10.89.0.77", "mac_address": c_port["mac_address"]}]))
    env.agent.wait_log(f"port {c_port['id']} event port_updated #{seq}")
    time.sleep(0.5)
    send_frames(client, [frame] * 3)  # the same three, now admitted
    assert sniffer.counts()[0] == 3
    ofport = env.ofport(c_port["id"])
    env.channel.delete_port(c_port["id"])
    env.channel.wait_status([c_port["id"]], "DOWN")
    assert f"reg5=0x{ofport:x}," not in env.flows() and f"in_port={ofport} " not in env.flows()


def test_an_ovs_vswitchd_restart_gets_every_flow_back(env: Env) -> None:
    """ovs-vswitchd forgets all flows when it restarts; fail_mode=secure drops meanwhile; the agent reconnects and resends."""
    env.group("vs", [*EGRESS_ANY, rule("ingress", remote="vs")])
    _, a = env.port("net-vs", "10.90.0.5", ["vs"])
    _, b = env.port("net-vs", "10.90.0.6", ["vs"])
    _, c = env.port("net-vs", "10.90.0.7", [])
    assert a.ping_until("10.90.0.6", deadline=10)
    mark = env.agent.mark()
    env.sandbox.restart_vswitchd()
    env.agent.wait_log("OpenFlow reconnected", mark, timeout=30)
    assert a.ping_until("10.90.0.6", deadline=20)
    assert not c.ping("10.90.0.5", count=2, wait=1)  # and still filtered
