"""Port creates through the API with a controller behind it: the original design vs ours.

For each controller latency (simulator with added latency) and each design, a
quantum-server child process serves the API, and 64 concurrent keep-alive
clients create ports on one network. "original" is the Grizzly plugin's way
to call controllers: a new connection per request and every controller call
behind one global lock. "ours" is the pool as shipped (persistent connections,
per-object ordering, no global lock). Reports ports/s, latency p50/p99 and
server CPU ms per port create (API + store + two controller calls); then per
latency, as JSON lines, ours/original and ours at that latency over ours at the
lowest one.

    .venv/bin/python bench/bench_controller.py --latencies 1,5,20 --clients 64 --seconds 8

``--security-groups``: ``default`` (each port gets its tenant's default group, as a client that names none) or
``none`` (``"security_groups": []``), as bench_api_ports.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_api_ports import _cpu_seconds, _percentile  # noqa: E402
from restproxy_testing.support import free_port, temporary_database  # noqa: E402


def serve(design: str, port: int, db_url: str, controller: str) -> None:
    """Child: run quantum-server with the chosen controller-call design."""
    if os.environ.get("QRP_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["QRP_SWITCH_INTERVAL"]))
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredLock

    from server_plugin.controller.pool import ServerPool
    from server_plugin.controller.service import ControllerService
    from server_plugin.server_tap import Options, makeService

    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(f"[RESTPROXY]\nservers = {controller}\ncontroller_profile = bigswitch\nserver_timeout = 30\n")
    options = Options()
    options.parseOptions(["--config", f.name, "--port", f"tcp:{port}:interface=127.0.0.1", "--sql-connection", db_url])
    top = makeService(options)
    if design == "original":
        mirror = next(s for s in top if isinstance(s, ControllerService)).mirror
        lock = DeferredLock()
        legacy = ServerPool([h.address for h in mirror.pool.health], reactor, mirror.pool.settings, persistent=False)
        plain_request = legacy.request

        async def serialised(*args: Any, **kwargs: Any) -> Any:
            await lock.acquire()
            try:
                return await plain_request(*args, **kwargs)
            finally:
                lock.release()

        legacy.request = serialised  # type: ignore[method-assign]
        mirror.pool = legacy
        mirror.sync.pool = legacy
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    if os.environ.get("QRP_PROFILE"):  # profile the reactor thread (not the store's threads)
        import cProfile

        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, os.environ["QRP_PROFILE"])
        return
    reactor.run()


async def _load(reactor: Any, url: str, net_id: str, clients: int, seconds: float, groups: str) -> tuple[int, list[float], int]:
    import treq
    from twisted.internet import defer
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = clients
    latencies: list[float] = []
    failures = [0]
    deadline = time.perf_counter() + seconds
    port: dict[str, Any] = {"tenant_id": "bench", "network_id": net_id, "device_id": "vm", "binding:host_id": "h"}
    if groups == "none":
        port["security_groups"] = []
    body = json.dumps({"port": port}).encode()

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            resp = await treq.post(url + "/v2.0/ports", data=body, headers={"Content-Type": ["application/json"]}, pool=pool)
            await resp.content()
            latencies.append(time.perf_counter() - start)
            if resp.code != 201:
                failures[0] += 1

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(clients)])
    await pool.closeCachedConnections()
    return len(latencies), latencies, failures[0]


def run_case(design: str, latency_ms: int, clients: int, seconds: float, backend: str, groups: str = "default") -> dict[str, Any]:
    from twisted.internet import defer, reactor

    from controller_sim.testing import SimProcess

    sim = SimProcess(latency_ms=latency_ms).start()
    port = free_port()
    try:
        with temporary_database(backend) as db_url:
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", design, "--port", str(port), "--db", db_url, "--controller", sim.address],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_http(url)
                net_id = _post(url, "/v2.0/networks", {"network": {"tenant_id": "bench", "name": "bench"}})["network"]["id"]
                _post(
                    url, "/v2.0/subnets", {"subnet": {"tenant_id": "bench", "network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16"}}
                )
                cpu_before = _cpu_seconds(child.pid)
                out: dict[str, Any] = {}

                def main() -> None:
                    async def go() -> None:
                        started = time.perf_counter()
                        out["count"], out["lat"], out["failures"] = await _load(reactor, url, net_id, clients, seconds, groups)
                        out["elapsed"] = time.perf_counter() - started

                    defer.Deferred.fromCoroutine(go()).addBoth(lambda r: (out.setdefault("result", r), reactor.stop()))

                reactor.callWhenRunning(main)
                reactor.run()
                cpu = _cpu_seconds(child.pid) - cpu_before
            finally:
                child.terminate()
                child.wait(15)
    finally:
        sim.stop()
    count = max(out.get("count", 0), 1)
    return {
        "design": design, "security_groups": groups, "latency_ms": latency_ms, "clients": clients,
        "ports": out.get("count", 0), "failures": out.get("failures"),
        "ports_per_s": round(count / out["elapsed"], 1), "p50_ms": round(_percentile(out["lat"], 50) * 1000, 1),
        "p99_ms": round(_percentile(out["lat"], 99) * 1000, 1), "server_cpu_ms_per_port": round(cpu * 1000 / count, 3),
    }  # fmt: skip


def _post(url: str, path: str, body: Any) -> Any:
    import urllib.request

    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _wait_http(url: str, timeout: float = 90.0) -> None:
    """Until the server answers (a fresh PostgreSQL database's migrations take long on a loaded machine)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latencies", default="1,5,20")
    parser.add_argument("--designs", default="original,ours")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--security-groups", choices=("default", "none"), default="default")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--controller", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db, args.controller)
        return
    if args.case:
        design, latency = args.case.split(":")
        print(json.dumps(run_case(design, int(latency), args.clients, args.seconds, args.backend, args.security_groups)))
        return
    # "case" labels each row for bench/compare.py (its string cells name a row: the design alone would not).
    header = ["case", "design", "security_groups", "latency_ms", "clients", "ports", "failures", "ports_per_s", "p50_ms", "p99_ms"]
    header.append("server_cpu_ms_per_port")
    rows = []
    for latency in args.latencies.split(","):
        for design in args.designs.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--case",
                f"{design}:{latency}",
                "--clients",
                str(args.clients),
                "--seconds",
                str(args.seconds),
            ]
            cmd += ["--backend", args.backend, "--security-groups", args.security_groups]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            rows[-1]["case"] = f"{design}@{latency}ms"
            print(" | ".join(str(rows[-1][h]) for h in header), flush=True)
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    by = {(r["design"], r["latency_ms"]): r["ports_per_s"] for r in rows}
    lowest = min(r["latency_ms"] for r in rows)
    for latency in sorted({r["latency_ms"] for r in rows}):
        ratios: dict[str, Any] = {"latency": f"{latency}ms"}
        if ("original", latency) in by and ("ours", latency) in by:
            ratios["ours_over_original"] = round(by[("ours", latency)] / max(by[("original", latency)], 0.001), 2)
        if ("ours", latency) in by and ("ours", lowest) in by and latency != lowest:
            ratios[f"ours_over_ours_at_{lowest}ms"] = round(by[("ours", latency)] / max(by[("ours", lowest)], 0.001), 2)
        print(json.dumps(ratios))  # the target's two ratios (issue 15, target 3), one line per latency


if __name__ == "__main__":
    main()
