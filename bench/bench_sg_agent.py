"""Security groups on the host: a real restproxy-agent programming a private Open vSwitch (userspace datapath).

The agent is fed port and group dicts by a stand-in agent channel (``restproxy_testing.fake_channel``), so the
figures are the agent's and OVS's alone. Setup: P ports (taps) on one network, G groups of R rules each, including
two remote-group rules per group (ingress IPv4 from its own members and from the next group's), ports spread over
the groups round-robin (P/G members each).

Reported:
- flows per port (from ``ovs-ofctl dump-flows``, tests' tool only) and in total;
- cold start: agent started with P ports bound and none plugged: seconds to plugged + filtered + ACTIVE;
- restart (kill -9): seconds until every port's flows are reinstalled (this run's cookie) and the stale ones removed;
- member change: a group's members change (one address added); ms until the flows of every affected port are
  confirmed by the switch (barrier), from the event's arrival in the agent, p50 / max over N changes;
- plug -> filtered: for single new ports on the loaded bridge, ms from the port_attached event to ACTIVE and the
  part spent on security groups, p50 / p99: for an agent that plugs a VIF down while its flows go in, ofport known
  -> flows confirmed -> host end up; for one that installs the flows before the OVS port is added, the plug's wait
  for them; for one that plugs VIFs in the dead VLAN first, ofport known -> flows confirmed -> real tag set.
  Compare with ``--firewall noop`` for the total.

    .venv/bin/python bench/bench_sg_agent.py --ports 500 --groups 5 --rules 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.agent_stack import HOST, AgentProcess  # noqa: E402
from restproxy_testing.fake_channel import FakeChannel  # noqa: E402
from restproxy_testing.ovs_sandbox import OvsSandbox, ovs_unavailable  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rule(direction: str, **fields: Any) -> dict[str, Any]:
    base = {"id": uuid.uuid4().hex, "direction": direction, "ethertype": "IPv4", "protocol": None, "port_range_min": None,
            "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}  # fmt: skip
    return {**base, **fields}


def group_rules(index: int, groups: int, count: int) -> list[dict[str, Any]]:
    gid, nxt = f"g{index}", f"g{(index + 1) % groups}"
    rules = [rule("egress"), rule("egress", ethertype="IPv6"), rule("ingress", remote_group_id=gid), rule("ingress", remote_group_id=nxt)]
    i = 0
    while len(rules) < count:
        kind = i % 4
        if kind == 0:
            rules.append(
                rule("ingress", protocol="tcp", port_range_min=1000 + i, port_range_max=1000 + i, remote_ip_prefix=f"192.168.{i}.0/24")
            )
        elif kind == 1:
            rules.append(
                rule("ingress", protocol="udp", port_range_min=5000, port_range_max=5000 + 16 * i, remote_ip_prefix="172.16.0.0/12")
            )
        elif kind == 2:
            rules.append(rule("ingress", protocol="icmp", port_range_min=8, port_range_max=0, remote_ip_prefix=f"10.{i}.0.0/16"))
        else:
            rules.append(
                rule("ingress", ethertype="IPv6", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix=f"fd00:{i}::/64")
            )
        i += 1
    return rules


class Bench:
    def __init__(self, tmp: str, ports: int, groups: int, rules: int, firewall: str = "openflow") -> None:
        self.sandbox = OvsSandbox().start()
        self.channel = FakeChannel(HOST).start()
        self.agent = AgentProcess(self.channel, self.sandbox, tmp)  # type: ignore[arg-type]
        with open(self.agent.config) as f:
            text = f.read().replace("vif_kind = veth", "vif_kind = tap").replace("report_interval = 2", "report_interval = 30")
            text += f"firewall_driver = {firewall}\n"
        with open(self.agent.config, "w") as f:
            f.write(text)
        self.ngroups, self.nrules = groups, rules
        self.ports: list[dict[str, Any]] = []
        self.members: dict[str, list[str]] = {f"g{i}": [] for i in range(groups)}
        for i in range(ports):
            self.ports.append(self.port(i))
        for i in range(groups):
            gid = f"g{i}"
            self.channel.groups[gid] = {
                "id": gid,
                "tenant_id": "t",
                "rules": group_rules(i, groups, rules),
                "members": sorted(self.members[gid]),
            }
        for p in self.ports:
            self.channel.ports[p["id"]] = p
            self.sandbox.track_link("tap" + p["id"][:11])

    def port(self, i: int) -> dict[str, Any]:
        port_id = str(uuid.uuid4())
        ip = f"10.0.{i // 250}.{i % 250 + 2}"
        gid = f"g{i % self.ngroups}"
        self.members[gid].append(ip)
        return {
            "id": port_id, "mac_address": "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3)), "network_id": "net",
            "device_id": f"vm-{i}", "device_owner": "compute:nova", "status": "DOWN", "admin_state_up": True,
            "fixed_ips": [{"ip_address": ip, "subnet_id": "s"}], "binding:profile": {"vif_type": "tap"}, "security_groups": [gid],
            "port_security_enabled": True, "allowed_address_pairs": [],
        }  # fmt: skip

    def flows(self) -> str:
        argv = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{self.sandbox.run_dir}/br-e2e.mgmt"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout

    def stop(self) -> None:
        self.agent.stop()
        self.channel.stop()
        self.sandbox.stop()


def _ms(text: str, pattern: str) -> int:
    m = re.search(pattern, text)
    assert m, pattern
    return int(m.group(1))


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp, args.ports, args.groups, args.rules, args.firewall)
        noop = args.firewall == "noop"
        try:
            ids = [p["id"] for p in b.ports]
            t0 = time.monotonic()
            b.agent.start()
            b.channel.wait_status(ids, "ACTIVE", timeout=600)
            cold = time.monotonic() - t0
            if noop:
                print(f"firewall_driver noop: cold start (plug + ACTIVE, {args.ports} ports): {cold:.2f} s")
                print(json.dumps({"cold_start_s": round(cold, 3)}))
                single(b, args, noop=True)
                return
            b.agent.wait_log("removed", timeout=300)
            text = b.flows()
            total = len(re.findall(r"cookie=", text))
            per_port = [int(m) for m in re.findall(r"filtered: .*?, (\d+) flows", b.agent.log())]
            print(f"ports {args.ports}, groups {args.groups} x {args.rules} rules, {args.ports // args.groups} members per group")
            print(f"flows: {total} in OVS; per port p50 {pct(per_port, 50):.0f} (min {min(per_port)}, max {max(per_port)})")
            print(f"cold start (plug + filter + ACTIVE, {args.ports} ports): {cold:.2f} s")
            print(json.dumps({"flows_per_port": pct(per_port, 50), "cold_start_s": round(cold, 3)}))

            # restart
            b.agent.kill()
            mark = b.agent.mark()
            t0 = time.monotonic()
            b.agent.start()
            tail = b.agent.wait_log("removed", mark, timeout=600)
            restart = time.monotonic() - t0
            m = re.search(r"in step after reconcile \(listed\): .*? in (\d+)ms", tail)
            stale = re.search(r"removed (\d+) stale flows", tail)
            removed = stale.group(1) if stale else "?"
            print(f"restart (kill -9): all flows reinstalled and {removed} stale removed {restart:.2f} s after start"
                  f" (reconcile {m.group(1) if m else '?'} ms)")  # fmt: skip
            print(json.dumps({"restart_s": round(restart, 3)}))
            time.sleep(1.0)

            # member changes
            seen: list[float] = []
            inside: list[float] = []
            for n in range(args.changes):
                gid = f"g{n % args.groups}"
                members = sorted([*b.channel.groups[gid]["members"], f"10.9.{n // 250}.{n % 250 + 1}"])
                mark = b.agent.mark()
                sent = time.monotonic()
                seq = b.channel.put_group({**b.channel.groups[gid], "members": members})
                line = f"security group {gid} members applied (#{seq}):"
                while line not in b.agent.log()[mark:] and time.monotonic() - sent < 30:
                    time.sleep(0.001)
                seen.append((time.monotonic() - sent) * 1000)
                inside.append(_ms(b.agent.log()[mark:], re.escape(line) + r" \d+ flow mods \+(\d+)ms"))
                time.sleep(0.2)
            users = sum(1 for p in b.ports if p["security_groups"][0] in (gid, f"g{(int(gid[1:]) - 1) % args.groups}"))
            print(f"member change ({args.changes} changes; each group is the remote group of {users} ports' rules): "
                  f"in the switch (barrier) p50 {pct(inside, 50):.0f} ms, max {max(inside):.0f} ms after the event reached the agent; "
                  f"p50 {pct(seen, 50):.0f} ms, max {max(seen):.0f} ms send -> agent log (polling incl.)")  # fmt: skip
            print(json.dumps({"member_change_ms": {"p50": pct(inside, 50)}}))

            single(b, args)
        finally:
            b.stop()


def single(b: Bench, args: argparse.Namespace, noop: bool = False) -> None:
    """Single new ports on the loaded bridge: plug -> ACTIVE, and (openflow) the part security groups take."""
    active, sg, enc, conf = [], [], [], []
    for i in range(args.single):
        p = b.port(args.ports + i)
        b.sandbox.track_link("tap" + p["id"][:11])
        mark = b.agent.mark()
        b.channel.put_port(p)
        b.channel.wait_status([p["id"]], "ACTIVE", timeout=30)
        tail = b.agent.wait_log(f"port {p['id']} reported ACTIVE", mark)
        active.append(_ms(tail, rf"port {p['id']} reported ACTIVE \+(\d+)ms"))
        if noop:
            continue
        waited = re.search(rf"port {p['id']} OVS port \S+ added to .*?, waited (\d+)ms for its flows", tail)
        opened = re.search(rf"port {p['id']} device \S+ up: filtered for ofport \d+ .*? \+(\d+)ms", tail)
        if opened:  # plugged down while its flows go in, up once they are: ofport known -> host end up
            sg.append(int(opened.group(1)) - _ms(tail, rf"port {p['id']} device \S+ ofport \d+ \+(\d+)ms"))
        elif waited:  # flows installed while the device is made, before the OVS port: only the wait for them adds
            sg.append(int(waited.group(1)))
        else:  # plugged dead, filtered, then tagged: all of ofport -> tag set
            ofport = _ms(tail, rf"port {p['id']} device \S+ ofport \d+ \+(\d+)ms")
            tagged = _ms(tail, rf"port {p['id']} device \S+ tag \d+ \(filtered\) \+(\d+)ms")
            sg.append(tagged - ofport)
        enc.append(_ms(tail, rf"port {p['id']} filtered: .*?encoded in (\d+)ms"))
        conf.append(_ms(tail, rf"port {p['id']} filtered: .*?confirmed in (\d+)ms"))
    if noop:
        print(f"plug -> ACTIVE without security groups ({args.single} single ports, {args.ports} already there): "
              f"p50 {pct(active, 50)} ms, p99 {pct(active, 99)} ms")  # fmt: skip
        print(json.dumps({"plug_active_ms": {"p50": pct(active, 50), "p99": pct(active, 99)}}))
        return
    print(f"plug -> ACTIVE ({args.single} single ports, {args.ports} already there): "
          f"p50 {pct(active, 50)} ms, p99 {pct(active, 99)} ms; "
          f"of which security groups (waited for the flows): p50 {pct(sg, 50)} ms, p99 {pct(sg, 99)} ms "
          f"(encoding the port's flows p50 {pct(enc, 50)} ms; written -> barrier reply p50 {pct(conf, 50)} ms)")  # fmt: skip
    print(json.dumps({"plug_active_ms": {"p50": pct(active, 50), "p99": pct(active, 99)}, "sg_ms": {"p50": pct(sg, 50), "p99": pct(sg, 99)},
                      "encode_ms_p50": pct(enc, 50), "barrier_ms_p50": pct(conf, 50)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--single", type=int, default=30)
    parser.add_argument("--firewall", choices=["openflow", "noop"], default="openflow", help="noop: the same without security groups")
    args = parser.parse_args()
    reason = ovs_unavailable("the benchmark")
    if reason:
        sys.exit(reason)
    run(args)


if __name__ == "__main__":
    main()
