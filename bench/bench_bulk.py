"""One POST of N ports (Neutron bulk: ``{"ports": [...]}``) through the v2.0 API (issue 15, target 5: 500 in under 1 s).

Per backend and controller setting, a real quantum-server (store only, or with
the controller simulator at ``--latency-ms``) gets a network with a /16 subnet,
then ``--rounds`` bulk POSTs of ``--ports`` ports each, one after the other.
Each port is a VM's: a ``device_id`` (so a port and an attachment call per
port with a controller), ``compute:nova`` and ``binding:host_id``, and its
tenant's default security group. Reports the seconds per POST (median and
best), the server CPU per POST, and the simulator's (on a 2-core machine it
competes with the server for the cores).

    .venv/bin/python bench/bench_bulk.py --backends sqlite,postgresql --ports 500 --rounds 3 --controllers none,sim
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_api_ports import _cpu_seconds  # noqa: E402
from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402


def _body(net_id: str, count: int, round_no: int) -> dict[str, Any]:
    return {
        "ports": [
            {"tenant_id": "bench", "network_id": net_id, "name": f"b{round_no}-{i}", "device_id": f"vm-{round_no}-{i}",
             "device_owner": "compute:nova", "binding:host_id": "bench-host"}
            for i in range(count)
        ]
    }  # fmt: skip


def _post(url: str, body: Any) -> tuple[int, Any]:
    """POST with a timeout long enough for the slowest revision compared (ServerProcess.request gives up at 30 s)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:2000]


def bench_backend(backend: str, controller: str, count: int, rounds: int, latency_ms: float) -> dict[str, Any]:
    sim = None
    if controller == "sim":
        from controller_sim.testing import SimProcess

        sim = SimProcess(latency_ms=latency_ms).start()
    try:
        with temporary_database(backend) as url:
            servers = f"servers = {sim.address}\ncontroller_profile = bigswitch\nserver_timeout = 30\n" if sim else "servers =\n"
            config = "[RESTPROXY]\n" + servers
            server = ServerProcess(url, config).start(timeout=90)
            try:
                _, net = server.request("POST", "/v2.0/networks", {"network": {"tenant_id": "bench", "name": "bench"}})
                net_id = net["network"]["id"]
                subnet = {"subnet": {"tenant_id": "bench", "network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16"}}
                server.request("POST", "/v2.0/subnets", subnet)
                server.request("POST", "/v2.0/ports", {"port": {"tenant_id": "bench", "network_id": net_id}})  # makes the default group
                seconds, cpu, sim_cpu = [], [], []
                for round_no in range(rounds):
                    body = _body(net_id, count, round_no)
                    cpu_before = _cpu_seconds(server.proc.pid)
                    sim_before = _cpu_seconds(sim.proc.pid) if sim is not None and sim.proc is not None else 0.0
                    started = time.perf_counter()
                    status, reply = _post(server.url + "/v2.0/ports", body)
                    seconds.append(time.perf_counter() - started)
                    cpu.append(_cpu_seconds(server.proc.pid) - cpu_before)
                    if sim is not None and sim.proc is not None:
                        sim_cpu.append(_cpu_seconds(sim.proc.pid) - sim_before)
                    if status != 201 or len(reply["ports"]) != count:
                        raise RuntimeError(f"bulk create answered {status}: {str(reply)[:500]}")
            finally:
                server.stop()
    finally:
        if sim is not None:
            sim.stop()
    return {
        "backend": backend,
        "controller": controller,
        "ports": count,
        "rounds": rounds,
        "post_s": round(statistics.median(seconds), 3),
        "best_post_s": round(min(seconds), 3),
        "server_cpu_s": round(statistics.median(cpu), 3),
        "server_cpu_ms_per_port": round(statistics.median(cpu) * 1000 / count, 3),
        "sim_cpu_s": round(statistics.median(sim_cpu), 3) if sim_cpu else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--controllers", default="none", help="none (store only), sim (the controller simulator), or both: none,sim")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="the simulator's added latency per request")
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="bulk POSTs per server, one after the other")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, controller = args.child.split(":")
        print(json.dumps(bench_backend(backend, controller, args.ports, args.rounds, args.latency_ms)))
        return
    rows = []
    for backend in args.backends.split(","):
        for controller in args.controllers.split(","):
            child = subprocess.run(
                [sys.executable, __file__, "--child", f"{backend}:{controller}", "--ports", str(args.ports), "--rounds", str(args.rounds),
                 "--latency-ms", str(args.latency_ms)],
                capture_output=True, text=True,
            )  # fmt: skip
            if child.returncode != 0:
                sys.exit(f"{backend}:{controller} failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}")
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    header = ["backend", "controller", "ports", "rounds", "post_s", "best_post_s", "server_cpu_s", "server_cpu_ms_per_port", "sim_cpu_s"]
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))


if __name__ == "__main__":
    main()
