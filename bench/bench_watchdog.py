"""What the consistency watchdog costs on a big deployment, and how long a Floodlight replay takes.

Fills a throw-away database with N networks (one /24 subnet each) and M attached ports
(bench_topology_sync.populate), then measures, each the median of several runs:

* the server's side of one probe: ``store_fingerprint`` (a few aggregate queries: what a probe
  costs while nothing changed), ``store_digest`` (the expected view's digest streamed from plain rows: only
  after a change), and, for contrast, loading every network with its ports as a sync does;
* Floodlight's side: the size of its network list at that scale, the time to digest it (each
  probe) and to parse it into a view (only on a difference); both in a thread;
* with ``--replay``: an empty Floodlight (the simulator's profile) brought to the store's state by
  the watchdog's replay (TopologySync, network by network), then one whole watchdog check
  (GET of the list, parse, digests) against the loaded controller.

    .venv/bin/python bench/bench_watchdog.py --networks 10000 --ports 100000 [--backend postgresql] [--replay]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_topology_sync import populate  # noqa: E402
from restproxy_testing.support import temporary_database  # noqa: E402


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median milliseconds over ``runs`` calls, and the last result."""
    samples, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def store_costs(url: str, runs: int) -> dict[str, Any]:
    from twisted.internet import reactor

    from server_plugin.controller import views
    from server_plugin.store import mirror_ops
    from server_plugin.store.db import Store

    store = Store(url, reactor)
    try:
        fingerprint_ms, _ = timed(lambda: store.run_sync(views.store_fingerprint, readonly=True), runs)
        digest_ms, summary = timed(lambda: store.run_sync(views.store_digest, readonly=True), runs)
        view_ms, view = timed(lambda: store.run_sync(views.store_floodlight_view, readonly=True), runs)

        def full_pages() -> int:
            after, count = None, 0
            while page := store.run_sync(mirror_ops.topology_page, after, 500, readonly=True):
                count += sum(len(v["ports"]) for v in page)
                after = page[-1]["id"]
            return count

        pages_ms, _ = timed(full_pages, max(1, runs // 2))
    finally:
        store.stop()
    listing = json.dumps(
        [
            {"name": n["name"], "guid": n["id"], "gateway": n["gateway"], "portMac": [{"port": p, "mac": m} for p, m in n["ports"].items()]}
            for n in view.values()
        ]
    ).encode()
    probe_ms, _ = timed(lambda: views._digest_only(listing), runs)
    parse_ms, _ = timed(lambda: views.digest(views.parse_floodlight_list(listing)), runs)
    return {
        "store": str(summary),
        "store_fingerprint_ms": round(fingerprint_ms, 1),
        "store_digest_ms": round(digest_ms, 1),
        "store_full_view_ms": round(view_ms, 1),
        "sync_style_full_read_ms": round(pages_ms, 1),
        "floodlight_list_mb": round(len(listing) / 1e6, 2),
        "floodlight_list_digest_ms (each probe)": round(probe_ms, 1),
        "floodlight_list_parse_and_digest_ms (on a difference)": round(parse_ms, 1),
    }


def replay(url: str, controller: str) -> dict[str, Any]:
    """An empty Floodlight brought to the store's state, then one watchdog check against it (real HTTP)."""
    from twisted.internet import defer, reactor

    from server_plugin.controller import mapping, views
    from server_plugin.controller.ordering import RWLock
    from server_plugin.controller.pool import PoolSettings, ServerPool
    from server_plugin.controller.servers import parse_servers
    from server_plugin.controller.sync import TopologySync
    from server_plugin.store.db import Store

    store = Store(url, reactor=reactor)
    store.start()
    pool = ServerPool(parse_servers(controller), reactor, PoolSettings(timeout=600))
    out: dict[str, Any] = {}

    async def main() -> None:
        sync = TopologySync(store, pool, RWLock(), reactor, lambda: mapping.FLOODLIGHT, page_size=500)
        started, cpu = time.perf_counter(), time.process_time()
        await sync.request("benchmark")
        out["replay_s"] = round(time.perf_counter() - started, 2)
        out["replay_cpu_s_this_process"] = round(time.process_time() - cpu, 2)
        out["replay_calls"] = sync.status()["last"]["requests"]
        started = time.perf_counter()
        _, _, actual_digest = await views.read_floodlight_view(pool, pool.health[0], view=False)
        out["check_list_ms"] = round((time.perf_counter() - started) * 1000, 1)
        fingerprint_started = time.perf_counter()
        await store.run(views.store_fingerprint, readonly=True)
        out["check_fingerprint_ms"] = round((time.perf_counter() - fingerprint_started) * 1000, 1)
        expected_digest = await store.run(views.store_digest, readonly=True)
        out["check_total_uncached_ms"] = round((time.perf_counter() - started) * 1000, 1)
        out["consistent"] = expected_digest == actual_digest
        await pool.close()

    def done(result: Any) -> None:
        if hasattr(result, "getErrorMessage"):
            out["error"] = result.getErrorMessage()
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(main()).addBoth(done))
    reactor.run()
    store.stop()
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=10000)
    parser.add_argument("--ports", type=int, default=100000)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replay", action="store_true", help="also replay to an empty Floodlight simulator and time one check")
    args = parser.parse_args()
    with temporary_database(args.backend) as url:
        started = time.perf_counter()
        populate(url, args.networks, args.ports)
        print(f"populated {args.networks} networks / {args.ports} ports on {args.backend} in {time.perf_counter() - started:.1f}s")
        for key, value in store_costs(url, args.runs).items():
            print(f"  {key}: {value}", flush=True)
        if args.replay:
            from controller_sim.testing import SimProcess

            with SimProcess(profile="floodlight") as sim:
                assert sim.proc is not None
                sim_cpu = _cpu_seconds(sim.proc.pid)
                for key, value in replay(url, sim.address).items():
                    print(f"  {key}: {value}", flush=True)
                print(f"  simulator_cpu_s: {_cpu_seconds(sim.proc.pid) - sim_cpu:.2f}")


if __name__ == "__main__":
    main()
