"""Port creates through the v2.0 API with N concurrent clients (no controller yet).

Starts a real quantum-server per backend, creates a network with a /16 subnet,
then runs N concurrent keep-alive clients (treq) each creating ports until the
total is reached. Reports ports/s, latency p50/p99, and server CPU ms per port.

    .venv/bin/python bench/bench_api_ports.py --backends sqlite,postgresql --clients 32 --ports 3000

``--security-groups``: ``default`` (each port gets its tenant's default group, as a
client that names none), ``none`` (``"security_groups": []``), or ``compare`` (both,
each on a fresh database, and how much the default group adds to the CPU per port).

``--api-workers N``: the server runs ``[DEFAULT] api_workers = N`` (N processes on one socket; SQLite
keeps one); the server CPU is the parent's and its workers'. ``--api-workers 1,2`` runs both, one row each,
with their ratio and the most the machine allows: the database's CPU per port (its server processes) and the
whole machine's (``/proc/stat``) bound what any number of workers can reach when all of them share its cores:

    .venv/bin/python bench/bench_api_ports.py --backends postgresql --clients 64 --ports 4000 --api-workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import treq
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _tree_cpu_seconds(pid: int) -> float:
    """The CPU of ``pid`` and of its children (the API workers)."""
    return _cpu_seconds(pid) + sum(_cpu_seconds(c) for c in _children(pid))


_DB_PROCESS_NAMES = {"postgresql": {"postgres"}, "mariadb": {"mariadbd", "mysqld"}}


def _db_cpu_seconds(backend: str) -> float:
    """The CPU of every process of the database server (all its backends), 0 for SQLite (it runs in the server)."""
    names = _DB_PROCESS_NAMES.get(backend)
    if not names:
        return 0.0
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in names:
                        total += _cpu_seconds(int(entry))
            except OSError:  # gone meanwhile
                pass
    return total


def _machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle, summed over its cores (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _wait_workers(server: ServerProcess, workers: int, timeout: float = 60) -> None:
    """Until every worker accepts on the shared socket (the first to answer made ``start`` return)."""
    deadline = time.monotonic() + timeout
    while server.log().count("accepting on the shared socket") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not start:\n{server.log()}")
        time.sleep(0.1)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


async def _run_clients(
    reactor: Any, url: str, net_id: str, clients: int, total: int, groups: str, host: str = ""
) -> tuple[float, list[float], int]:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = clients
    remaining = [total]
    latencies: list[float] = []
    failures = [0]
    port: dict[str, Any] = {"tenant_id": "bench", "network_id": net_id}
    if groups == "none":
        port["security_groups"] = []
    if host:
        port["binding:host_id"] = host  # bound: every new member of the group is an event to the host
    body = json.dumps({"port": port}).encode()

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            resp = await treq.post(url + "/v2.0/ports", data=body, headers={"Content-Type": ["application/json"]}, pool=pool)
            await resp.content()
            latencies.append(time.perf_counter() - start)
            if resp.code != 201:
                failures[0] += 1

    started = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(clients)])
    elapsed = time.perf_counter() - started
    await pool.closeCachedConnections()
    return elapsed, latencies, failures[0]


def bench_backend(backend: str, clients: int, total: int, groups: str = "default", host: str = "", api_workers: int = 1) -> dict[str, Any]:
    with temporary_database(backend) as url:
        server = ServerProcess(url, f"[DEFAULT]\napi_workers = {api_workers}\n").start(timeout=90)
        try:
            if api_workers > 1 and backend != "sqlite":
                _wait_workers(server, api_workers)
            _, net = server.request("POST", "/v2.0/networks", {"network": {"tenant_id": "bench", "name": "bench"}})
            net_id = net["network"]["id"]
            server.request(
                "POST", "/v2.0/subnets", {"subnet": {"tenant_id": "bench", "network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16"}}
            )
            cpu_before = _tree_cpu_seconds(server.proc.pid)
            workers_before = {c: _cpu_seconds(c) for c in _children(server.proc.pid)}
            result: dict[str, Any] = {}

            def main(reactor: Any) -> Any:
                async def go() -> None:
                    result["elapsed"], result["latencies"], result["failures"] = await _run_clients(
                        reactor, server.url, net_id, clients, total, groups, host
                    )

                return defer.Deferred.fromCoroutine(go())

            client_cpu, db_cpu, machine = time.process_time(), _db_cpu_seconds(backend), _machine_busy_seconds()
            _run_reactor(main)
            client_cpu = time.process_time() - client_cpu  # the load client shares the machine's cores with the server
            db_cpu, machine = _db_cpu_seconds(backend) - db_cpu, _machine_busy_seconds() - machine
            cpu = _tree_cpu_seconds(server.proc.pid) - cpu_before
            # how evenly the workers shared the work: the least busy worker's CPU over the busiest's (1.0 = even)
            spent = [_cpu_seconds(c) - before for c, before in workers_before.items()]
            lat = result["latencies"]
            return {
                "backend": backend,
                "security_groups": groups,
                "api_workers": str(api_workers),
                "clients": clients,
                "ports": total,
                "failures": result["failures"],
                "ports_per_s": round(total / result["elapsed"], 1),
                "p50_ms": round(_percentile(lat, 50) * 1000, 2),
                "p99_ms": round(_percentile(lat, 99) * 1000, 2),
                "server_cpu_ms_per_port": round(cpu * 1000 / total, 3),
                "client_cpu_ms_per_port": round(client_cpu * 1000 / total, 3),
                "db_cpu_ms_per_port": round(db_cpu * 1000 / total, 3),
                "machine_cpu_ms_per_port": round(machine * 1000 / total, 3),
                "worker_balance": round(min(spent) / max(spent), 2) if len(spent) > 1 and max(spent) > 0 else 1.0,
            }
        finally:
            server.stop()


def _run_reactor(main: Any) -> None:
    """Run ``main(reactor)`` to completion (a reactor runs once per process: one backend per child)."""
    from twisted.internet import reactor

    done: list[Any] = []

    def finished(result: Any) -> None:
        done.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.maybeDeferred(main, reactor).addBoth(finished))
    reactor.run()
    if done and hasattr(done[0], "raiseException"):
        done[0].raiseException()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ports", type=int, default=3000)
    parser.add_argument("--security-groups", choices=("default", "none", "compare"), default="default")
    parser.add_argument("--host", default="", help="bind every port to this host (binding:host_id)")
    parser.add_argument("--api-workers", default="1", help="[DEFAULT] api_workers; a list (1,2) runs each")
    parser.add_argument("--backend-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend_child:
        row = bench_backend(args.backend_child, args.clients, args.ports, args.security_groups, args.host, int(args.api_workers))
        print(json.dumps(row))
        return
    import subprocess

    rows = []
    modes = ("none", "default") if args.security_groups == "compare" else (args.security_groups,)
    for backend in args.backends.split(","):
        for mode in modes:
            for workers in args.api_workers.split(","):
                out = subprocess.run(
                    [sys.executable, __file__, "--backend-child", backend, "--clients", str(args.clients), "--ports", str(args.ports),
                     "--security-groups", mode, "--host", args.host, "--api-workers", workers],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout  # fmt: skip
                rows.append(json.loads(out.strip().splitlines()[-1]))
    header = ["backend", "security_groups", "api_workers", "clients", "ports", "failures", "ports_per_s", "p50_ms", "p99_ms"]
    header += ["server_cpu_ms_per_port", "client_cpu_ms_per_port", "db_cpu_ms_per_port", "machine_cpu_ms_per_port", "worker_balance"]
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    if args.security_groups == "compare":
        for backend in args.backends.split(","):
            cpu = {r["security_groups"]: r["server_cpu_ms_per_port"] for r in rows if r["backend"] == backend and r["api_workers"] == "1"}
            if "none" in cpu and "default" in cpu:
                print(f"{backend}: the default group adds {100 * (cpu['default'] / cpu['none'] - 1):+.1f}% server CPU per port create")
    workers = args.api_workers.split(",")
    if len(workers) > 1:
        for backend in args.backends.split(","):
            rate = {r["api_workers"]: r["ports_per_s"] for r in rows if r["backend"] == backend}
            base = rate.get(workers[0])
            for n in workers[1:]:
                if base and n in rate:
                    print(f"{backend}: api_workers {n} / {workers[0]}: {rate[n] / base:.2f}x ports/s")
            # the server, its database and the load client share the cores: what all of them spend per port bounds
            # the rate any number of workers can reach on this machine
            machine = {r["api_workers"]: r["machine_cpu_ms_per_port"] for r in rows if r["backend"] == backend}
            if base and machine.get(workers[0]):
                most = (os.cpu_count() or 1) * 1000 / machine[workers[0]]
                print(
                    f"{backend}: {machine[workers[0]]} ms of the machine's CPU per port with {workers[0]} worker(s): its "
                    f"{os.cpu_count()} cores give at most {most:.0f} ports/s, {most / base:.2f}x of {base} ports/s"
                )


if __name__ == "__main__":
    main()
