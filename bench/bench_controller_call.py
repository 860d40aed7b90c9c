"""What one controller call costs the reactor: function calls (cProfile) and CPU per call, against a simulator.

A ``ServerPool`` on the real reactor sends ``--calls`` PUTs (a port's attachment-sized JSON body) to a
``controller_sim`` child on 127.0.0.1, ``--concurrency`` at a time over the pool's persistent
connections; the simulator runs in its own process, so the CPU measured here (this process) is the
client side only: the pool, the transport and the reactor. Prints one JSON line.
With ``--instructions``, the client runs twice under valgrind's callgrind (``--calls`` and twice as many,
after the same warm-up; start-up cancels out in the difference) and prints instructions per call, which a
loaded machine does not change.

    .venv/bin/python bench/bench_controller_call.py --calls 2000 --concurrency 8
    .venv/bin/python bench/bench_controller_call.py --calls 300 --concurrency 1 --instructions
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _run(reactor: Any, pool: Any, calls: int, concurrency: int) -> None:
    from twisted.internet import defer

    body = {"attachment": {"id": "vm-1", "mac": "fa:16:3e:00:00:01"}}
    remaining = [calls]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            response = await pool.request("PUT", "/tenants/t/networks/n/ports/p/attachment", body, ignore_codes=[404])
            assert response.status in (200, 404), response

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="count function calls with cProfile (slower)")
    parser.add_argument("--instructions", action="store_true", help="count instructions per call with callgrind")
    parser.add_argument("--controller", help="host:port of a running simulator (default: start one)")
    args = parser.parse_args()
    from controller_sim.testing import SimProcess

    sim = None if args.controller else SimProcess().start()
    address = args.controller or sim.address  # type: ignore[union-attr]
    try:
        if args.instructions:
            counts = [_instructions(address, calls, args.concurrency) for calls in (args.calls, 2 * args.calls)]
            per_call = (counts[1] - counts[0]) / args.calls
            print(json.dumps({"calls": args.calls, "concurrency": args.concurrency, "kinstr_per_call": round(per_call / 1000, 1)}))
            return
        _measure(args, address)
    finally:
        if sim is not None:
            sim.stop()


def _instructions(address: str, calls: int, concurrency: int) -> int:
    me = [sys.executable, os.path.abspath(__file__), "--controller", address, "--calls", str(calls), "--concurrency", str(concurrency)]
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *me], capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return int(found.group(1))


def _measure(args: Any, address: str) -> None:
    from twisted.internet import defer, reactor

    from server_plugin.controller.pool import PoolSettings, ServerPool
    from server_plugin.controller.servers import parse_servers

    out: dict[str, Any] = {"calls": args.calls, "concurrency": args.concurrency}
    pool = ServerPool(parse_servers(address), reactor, PoolSettings(timeout=30))

    async def go() -> None:
        await _run(reactor, pool, 200, args.concurrency)  # warm up: connections open, caches filled
        profiler = cProfile.Profile() if args.profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await _run(reactor, pool, args.calls, args.concurrency)
        if profiler is not None:
            profiler.disable()
            stats = pstats.Stats(profiler)
            out["function_calls_per_call"] = round(stats.total_calls / args.calls, 1)  # type: ignore[attr-defined]
            if os.environ.get("QRP_PROFILE_OUT"):
                stats.dump_stats(os.environ["QRP_PROFILE_OUT"])
        else:
            out["cpu_us_per_call"] = round((time.process_time() - cpu) * 1e6 / args.calls, 1)
            out["wall_us_per_call"] = round((time.perf_counter() - wall) * 1e6 / args.calls, 1)
        await pool.close()

    defer.Deferred.fromCoroutine(go()).addBoth(lambda r: (out.setdefault("error", r) if r is not None else None, reactor.stop()))
    reactor.run()
    if "error" in out:
        out["error"].raiseException()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
