"""Does database work block the reactor? Reactor lag while the plugin creates ports.

Runs RestProxyPlugin in-process on a throw-away database, with N concurrent
coroutines creating ports, while a 5 ms LoopingCall records how late each tick
fires. With all SQL in the store's thread pool the lag stays near the tick
granularity; a blocking call on the reactor would show up as lag of the size
of a whole transaction (or a whole burst).

    .venv/bin/python bench/bench_reactor_lag.py --backends sqlite,postgresql --clients 32 --ports 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from restproxy_testing.support import temporary_database  # noqa: E402
from server_plugin.context import RequestContext  # noqa: E402
from server_plugin.plugin import RestProxyPlugin  # noqa: E402
from server_plugin.store import migrate  # noqa: E402
from server_plugin.store.db import Store  # noqa: E402

TICK = 0.005


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


async def _measure(reactor: Any, plugin: RestProxyPlugin, clients: int, total: int) -> dict[str, Any]:
    ctx = RequestContext.admin()
    net = await plugin.create_network(ctx, {"network": {"tenant_id": "bench", "name": "lag"}})
    await plugin.create_subnet(ctx, {"subnet": {"tenant_id": "bench", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/16"}})
    lags: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        lags.append(max(0.0, now - last[0] - TICK))
        last[0] = now

    loop = task.LoopingCall(tick)
    loop.start(TICK, now=True)
    remaining = [total]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await plugin.create_port(ctx, {"port": {"tenant_id": "bench", "network_id": net["id"]}})

    started = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(clients)])
    elapsed = time.perf_counter() - started
    loop.stop()
    return {
        "ports_per_s": round(total / elapsed, 1),
        "ticks": len(lags),
        "lag_p50_ms": round(_percentile(lags, 50) * 1000, 2),
        "lag_p99_ms": round(_percentile(lags, 99) * 1000, 2),
        "lag_max_ms": round(max(lags) * 1000, 2),
    }


def run_backend(backend: str, clients: int, total: int) -> dict[str, Any]:
    from twisted.internet import reactor

    with temporary_database(backend) as url:
        store = Store(url, reactor=reactor)
        migrate.upgrade(store.engine)
        plugin = RestProxyPlugin(store)
        out: dict[str, Any] = {"backend": backend, "clients": clients, "ports": total}

        def done(result: Any) -> None:
            if isinstance(result, dict):
                out.update(result)
            else:
                out["error"] = str(result)
            reactor.stop()

        reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(_measure(reactor, plugin, clients, total)).addBoth(done))
        reactor.run()
        store.stop()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ports", type=int, default=2000)
    parser.add_argument("--backend-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend_child:
        print(json.dumps(run_backend(args.backend_child, args.clients, args.ports)))
        return
    header = ["backend", "clients", "ports", "ports_per_s", "ticks", "lag_p50_ms", "lag_p99_ms", "lag_max_ms"]
    print(" | ".join(header))
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--backend-child", backend, "--clients", str(args.clients), "--ports", str(args.ports)]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(" | ".join(str(row.get(h)) for h in header))


if __name__ == "__main__":
    main()
