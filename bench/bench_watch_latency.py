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
import queue
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.channel_support import channel_server  # noqa: E402
from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402


class Watch:
    """A watch stream read by a thread: each line with the time it arrived."""

    def __init__(self, server: ServerProcess, host: str, since: int, token: str) -> None:
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        req = urllib.request.Request(f"{server.url}/agent/v1/hosts/{host}/watch?since={since}", headers={"X-Auth-Token": token})
        self.response = urllib.request.urlopen(req, timeout=30)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response:
                self.lines.put((time.monotonic(), json.loads(line)))
        except (OSError, ValueError, AttributeError):
            pass  # closed (http.client raises AttributeError on a closed chunked stream)

    def next(self, kind: str = "event") -> tuple[float, dict[str, Any]]:
        while True:
            at, message = self.lines.get(timeout=10)
            if message["type"] == kind:
                return at, message

    def close(self) -> None:
        self.response.close()


def _net(server: ServerProcess) -> str:
    _, net = server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
    net_id: str = net["network"]["id"]
    subnet = {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16", "tenant_id": "t"}
    server.request("POST", "/v2.0/subnets", {"subnet": subnet})
    return net_id


def _bound_port(server: ServerProcess, net_id: str) -> None:
    body = {"port": {"network_id": net_id, "tenant_id": "t", "binding:host_id": "h1", "device_id": "vm", "security_groups": []}}
    status, port = server.request("POST", "/v2.0/ports", body)
    assert status == 201, port


def measure(backend: str, ports: int, warmup: int) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(temporary_database(backend))
        server = stack.enter_context(channel_server(url))
        net_id = _net(server)
        _, listed = server.request("GET", "/agent/v1/hosts/h1/ports", headers={"X-Auth-Token": "tok-h1"})
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
