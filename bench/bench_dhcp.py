"""The DHCP agent against a private Open vSwitch (userspace datapath), real dnsmasq and real DHCP clients, driven through the API.

1. leases: N networks (one /24 each) served by a running DHCP agent, then P ports
   created through the API (round robin over the networks), each a veth into its
   own namespace plugged by the host agent; as soon as a port is ACTIVE (its link
   is up in the VM) busybox udhcpc starts in its namespace (DISCOVER at once,
   then every second). Reported: port create -> lease, and ACTIVE -> lease, p50
   and p99 (target: ACTIVE -> lease p50 under 1 s);
2. start: the DHCP agent stopped, networks added up to S in all, everything it
   ran removed (dnsmasq, namespaces, state) and the agent started: seconds until
   every network's dnsmasq is up, first with the new networks' DHCP ports to
   create, then again with every DHCP port existing (a rebooted host) (target:
   100 networks under 10 s); then ``kill -9`` and a restart: seconds until it
   has adopted them all and is in step, and how many dnsmasq it started (none
   expected).

    .venv/bin/python bench/bench_dhcp.py --networks 20 --ports 200 --start-networks 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.dhcp_stack import DhcpClient, DhcpStack, dhcp_stack, dnsmasq_processes  # noqa: E402


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _uptime() -> float:
    """The clock udhcpc's script stamps its lease with (``/proc/uptime``)."""
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _networks(d: DhcpStack, start: int, count: int) -> list[str]:
    ids = []
    for i in range(start, start + count):
        net_id, _ = d.network(f"bench-{i}", f"10.{100 + i // 250}.{i % 250}.0/24")
        ids.append(net_id)
    return ids


def _all_up(d: DhcpStack, ids: list[str], timeout: float) -> float:
    agent = d.agents[0]
    t0 = time.monotonic()
    while not all(agent.dnsmasq_pid(n) for n in ids):
        if time.monotonic() - t0 > timeout:
            down = [n for n in ids if not agent.dnsmasq_pid(n)]
            raise SystemExit(f"{len(down)} of {len(ids)} dnsmasq not up after {timeout}s:\n{agent.log()[-4000:]}")
        time.sleep(0.02)
    return time.monotonic() - t0


def leases(d: DhcpStack, networks: int, ports: int) -> tuple[list[str], dict[str, Any]]:
    agent = d.agent()
    t = time.monotonic()
    ids = _networks(d, 0, networks)
    _all_up(d, ids, 120)
    ready = time.monotonic() - t
    server = d.stack.server
    created: dict[str, tuple[float, str]] = {}  # port id -> (create uptime, vm)
    active: dict[str, float] = {}
    clients: dict[str, DhcpClient] = {}
    done = threading.Event()

    def watch() -> None:
        """Poll the port list; start udhcpc in a VM as soon as its port is ACTIVE (its link is up)."""
        while not done.is_set():
            _, body = server.request("GET", "/v2.0/ports?fields=id&fields=status&fields=device_owner")
            now = _uptime()
            for p in body["ports"]:
                if p["status"] == "ACTIVE" and p["id"] in created and p["id"] not in active:
                    active[p["id"]] = now
                    vm = created[p["id"]][1]
                    workdir = os.path.join(d.tmp, f"vm-{vm}")
                    os.makedirs(workdir, exist_ok=True)
                    clients[p["id"]] = DhcpClient(d.stack.sandbox.netns_name(vm), "tpi" + p["id"][:11], workdir).start(once=True)
            if len(active) == ports:
                return
            time.sleep(0.02)

    poller = threading.Thread(target=watch, daemon=True)
    poller.start()
    t = time.monotonic()
    for i in range(ports):
        vm = f"dv{i}"
        at = _uptime()
        port = d.stack.vm_port(ids[i % networks], vm)
        created[port["id"]] = (at, vm)
    create_s = time.monotonic() - t
    poller.join(timeout=300)
    done.set()
    deadline = time.monotonic() + 120
    got: dict[str, float] = {}
    while len(got) < ports and time.monotonic() < deadline:
        for port_id, client in clients.items():
            lease = client.lease() if port_id not in got else None
            if lease and "at" in lease:
                got[port_id] = float(lease["at"])
        time.sleep(0.05)
    for client in clients.values():
        client.stop()
    d.clients.extend(clients.values())
    if len(got) < ports:
        raise SystemExit(f"only {len(got)} of {ports} VMs got a lease:\n{agent.log()[-3000:]}")
    from_create = [got[p] - created[p][0] for p in got]
    from_active = [got[p] - active[p] for p in got]
    return ids, {
        "networks": networks, "ports": ports, "dnsmasq_ready_s": round(ready, 2), "create_s": round(create_s, 2),
        "create_to_lease_p50_s": round(_percentile(from_create, 50), 3), "create_to_lease_p99_s": round(_percentile(from_create, 99), 3),
        "active_to_lease_p50_s": round(_percentile(from_active, 50), 3), "active_to_lease_p99_s": round(_percentile(from_active, 99), 3),
        "active_to_lease_max_s": round(max(from_active), 3),
    }  # fmt: skip


def _cold(d: DhcpStack, ids: list[str]) -> tuple[float, list[int]]:
    """Start the agent with nothing of it running (no dnsmasq, namespaces, state): seconds until every dnsmasq is up."""
    agent = d.agents[0]
    agent.stop()
    agent.cleanup()
    shutil.rmtree(agent.state_path, ignore_errors=True)
    time.sleep(5)  # the kernel frees the deleted namespaces in the background (a rebooted host has none to free)
    mark = agent.mark()
    agent.start()
    seconds = _all_up(d, ids, 300)
    steps = [int(m) for m in re.findall(r"dnsmasq started: .* \+(\d+)ms", agent.log()[mark:])]
    return seconds, steps


def start(d: DhcpStack, ids: list[str], total: int) -> dict[str, Any]:
    agent = d.agents[0]
    agent.stop()
    ids = ids + _networks(d, len(ids), total - len(ids))  # created while the agent is down: their DHCP ports too
    first, steps = _cold(d, ids)
    again, steps_again = _cold(d, ids)  # the DHCP ports exist now (a host rebooted: nothing of the agent's runs)
    mark = agent.mark()
    agent.kill()
    before = {pid for pid, cmd in dnsmasq_processes() if agent.state_path in cmd}
    t = time.monotonic()
    agent.start()
    agent.wait_log("in step after reconcile (listed)", mark, timeout=120)
    adopt = time.monotonic() - t
    tail = agent.log()[mark:]
    after = {pid for pid, cmd in dnsmasq_processes() if agent.state_path in cmd}
    return {
        "start_networks": total, "first_start_all_dnsmasq_up_s": round(first, 2),
        "network_step_p50_ms": int(_percentile(steps, 50)) if steps else None,
        "cold_start_ports_exist_all_dnsmasq_up_s": round(again, 2),
        "network_step_p50_ms_ports_exist": int(_percentile(steps_again, 50)) if steps_again else None,
        "restart_adopt_in_step_s": round(adopt, 2), "adopted": tail.count(" adopted ("),
        "started_after_restart": tail.count("dnsmasq started"), "same_processes": before == after,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--ports", type=int, default=200)
    parser.add_argument("--start-networks", type=int, default=100)
    args = parser.parse_args()
    with dhcp_stack() as d:
        if args.ports:
            ids, result = leases(d, args.networks, args.ports)
            print(json.dumps(result), flush=True)
        else:
            d.agent()
            ids = []
        print(json.dumps(start(d, ids, args.start_networks)), flush=True)


if __name__ == "__main__":
    main()
