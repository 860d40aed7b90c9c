"""GET /v2.0/ports on a large store: the full list, the first page, a filter, a field selection.

Fills a throw-away database with P ports over P/100 networks (rows written
directly, as bench_topology_sync does), starts a real quantum-server on it
and times, over one keep-alive connection, the median of several requests:

* full: every port (target: 10,000 in under 300 ms), with the response size
  and the server's peak RSS growth over the whole run (bounded memory: a
  streamed list must not grow with the number of ports);
* page: ``?limit=100`` (target: under 10 ms);
* filtered: ``?network_id=<one network>`` (100 ports);
* fields: the full list with ``?fields=id&fields=mac_address``;
* sorted page: ``?limit=100&sort_key=name&sort_dir=desc``.

Each figure also has the server's CPU per request (``*_cpu_ms``: all its
threads, the database's own work excluded unless it is SQLite's), which a
loaded machine disturbs far less than the times.

    .venv/bin/python bench/bench_lists.py --backends sqlite,postgresql --ports 10000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_topology_sync import populate  # noqa: E402
from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402


def _cpu_ms(pid: int) -> float:
    """The CPU time the server's threads have used so far (ns resolution: /proc/PID/task/*/schedstat; the tick-based
    utime would blur a 5 ms page). CPU per request drifts far less than wall time on a shared, loaded machine."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return total / 1e6


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Client:
    def __init__(self, url: str, pid: int) -> None:
        self.pid = pid
        self.cpu: dict[str, float] = {}  # path -> the server's CPU ms per request (mean over the timed runs)
        parsed = urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
        return elapsed, body

    def median_ms(self, path: str, runs: int) -> tuple[float, bytes]:
        self.get(path)  # warm: caches, connection
        times, body = [], b""
        cpu_before = _cpu_ms(self.pid)
        for _ in range(runs):
            elapsed, body = self.get(path)
            times.append(elapsed)
        self.cpu[path] = round((_cpu_ms(self.pid) - cpu_before) / runs, 2)
        return round(statistics.median(times) * 1000, 2), body


def _analyze(url: str) -> None:
    """Table statistics, as a live database has them: PostgreSQL's autovacuum gathers them within a minute or so of a
    bulk load, and until it has, the planner takes 10,000 fresh ports for a few hundred and sorts them all for a
    page (a sequential scan and a top-N sort instead of the primary key: 26 ms, or 19 ms once it had run)."""
    from sqlalchemy import create_engine, text

    if not url.startswith("postgresql"):
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def bench_backend(backend: str, ports: int, runs: int) -> dict[str, Any]:
    with temporary_database(backend) as url:
        populate(url, max(1, ports // 100), ports)
        _analyze(url)
        server = ServerProcess(url).start()
        try:
            pid = server.proc.pid
            client = Client(server.url, pid)
            rss_before = _status_kb(pid, "VmRSS")
            _, nets = client.get("/v2.0/networks?fields=id&limit=1")
            net_id = json.loads(nets)["networks"][0]["id"]
            full_ms, body = client.median_ms("/v2.0/ports", runs)
            listed = len(json.loads(body)["ports"])
            page_ms, page = client.median_ms("/v2.0/ports?limit=100", runs * 4)
            assert len(json.loads(page)["ports"]) == min(100, ports)
            filtered_ms, _ = client.median_ms(f"/v2.0/ports?network_id={net_id}", runs * 4)
            fields_ms, _ = client.median_ms("/v2.0/ports?fields=id&fields=mac_address", runs)
            sorted_ms, _ = client.median_ms("/v2.0/ports?limit=100&sort_key=name&sort_dir=desc", runs * 4)
            return {
                "backend": backend, "ports": listed, "full_ms": full_ms, "full_mb": round(len(body) / 1e6, 2),
                "page_100_ms": page_ms, "filtered_ms": filtered_ms, "fields_ms": fields_ms, "sorted_page_ms": sorted_ms,
                "rss_growth_mb": round((_status_kb(pid, "VmHWM") - rss_before) / 1024, 1),
                "full_cpu_ms": client.cpu["/v2.0/ports"], "page_100_cpu_ms": client.cpu["/v2.0/ports?limit=100"],
                "filtered_cpu_ms": client.cpu[f"/v2.0/ports?network_id={net_id}"],
                "fields_cpu_ms": client.cpu["/v2.0/ports?fields=id&fields=mac_address"],
                "sorted_page_cpu_ms": client.cpu["/v2.0/ports?limit=100&sort_key=name&sort_dir=desc"],
            }  # fmt: skip
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--ports", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5, help="requests per figure (the page figures take 4x as many)")
    parser.add_argument("--backend-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend_child:
        print(json.dumps(bench_backend(args.backend_child, args.ports, args.runs)), flush=True)
        return
    for backend in args.backends.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--backend-child", backend, "--ports", str(args.ports), "--runs", str(args.runs)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
