"""One port at a time: from sending its create (bound to a host) to its event arriving at that host's watch.

A quantum-server with the agent channel serves one watch (as an agent's); this process creates ``--ports``
ports one after the other (the first ``--warmup`` are not counted) and reports the p50/p90 of the time from
sending each POST to its ``port_attached`` line arriving, per backend. No agent, no OVS: only the server's path
from the API through the store and the event bus to the watch.

    .venv/bin/python bench/bench_watch_latency.py --backends sqlite,postgresql,mariadb
    .venv/bin/python bench/compare.py main WORKTREE --bench-from after --repeat 3 -- bench/bench_watch_latency.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.support import temporary_database  # noqa: E402
from tests.test_agent_channel import Watch, _agent, _bound_port, _net, channel_server  # noqa: E402


def measure(backend: str, ports: int, warmup: int) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        url = None if backend == "sqlite" else stack.enter_context(temporary_database(backend))
        server = stack.enter_context(channel_server(url))
        net_id = _net(server)
        _, listed = _agent(server, "GET", "/agent/v1/hosts/h1/ports")
        watch = Watch(server, "h1", listed["seq"], "tok-h1")
        try:
            watch.next("heartbeat")
            latencies = []
            for _ in range(warmup + ports):
                started = time.monotonic()
                _bound_port(server, net_id)
                at, event = watch.next()
                assert event["kind"] == "port_attached", event
                latencies.append((at - started) * 1000)
        finally:
            watch.close()
    counted = sorted(latencies[warmup:])
    return {
        "backend": backend,
        "post_to_event_p50_ms": round(statistics.median(counted), 2),
        "post_to_event_p90_ms": round(counted[int(len(counted) * 0.9)], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    parser.add_argument("--ports", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        print(json.dumps(measure(backend, args.ports, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
