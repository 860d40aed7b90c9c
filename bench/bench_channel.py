"""Agent channel fan-out: N watchers (one per host) in one process, M port events.

A quantum-server (with an admin agent token) serves the channel; this process
opens one watch per host, then creates M ports bound round-robin to the hosts
through the API's bulk create (batches of 10). Latency is measured from the
moment the bulk create was *sent* to the moment each event arrived at its
watcher: an upper bound that includes creating the batch's ports (the events
usually arrive before the API's reply). Reports delivery p50/p99/max, events/s, and
server CPU ms per event.

    .venv/bin/python bench/bench_channel.py --watchers 1000 --events 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_api_ports import _cpu_seconds, _percentile  # noqa: E402
from tests.support import ServerProcess, temporary_database  # noqa: E402

BATCH = 10


async def _run(reactor: Any, url: str, watchers: int, events: int, server_pid: int) -> dict[str, Any]:
    import treq
    from twisted.internet import defer, task
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = watchers + 8
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    headers = {"X-Auth-Token": ["bench-admin"], "Content-Type": ["application/json"]}
    arrivals: dict[str, float] = {}
    connected = [0]

    async def watch(host: str) -> None:
        response = await http.get(f"{url}/agent/v1/hosts/{host}/watch", params={"since": "0"}, headers=headers, unbuffered=True)
        buffer = bytearray()

        def chunk(data: bytes) -> None:
            buffer.extend(data)
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                message = json.loads(line)
                if message["type"] == "event":
                    arrivals[message["object_id"]] = time.perf_counter()
                elif message["type"] == "heartbeat" and not getattr(chunk, "seen", False):
                    chunk.seen = True  # type: ignore[attr-defined]
                    connected[0] += 1

        await treq.collect(response, chunk)

    streams = [defer.Deferred.fromCoroutine(watch(f"host-{i}")) for i in range(watchers)]
    for s in streams:
        s.addErrback(lambda f: None)
    while connected[0] < watchers:
        await task.deferLater(reactor, 0.1)
    response = await http.post(f"{url}/v2.0/networks", json={"network": {"tenant_id": "bench", "name": "fanout"}}, headers=headers)
    net_id = (await response.json())["network"]["id"]
    response = await http.post(
        f"{url}/v2.0/subnets",
        json={"subnet": {"tenant_id": "bench", "network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16"}},
        headers=headers,
    )
    await response.content()
    committed: dict[str, float] = {}
    cpu_before = _cpu_seconds(server_pid)
    started = time.perf_counter()
    for start in range(0, events, BATCH):
        batch = [
            {"tenant_id": "bench", "network_id": net_id, "binding:host_id": f"host-{i % watchers}", "device_id": f"vm-{i}"}
            for i in range(start, min(start + BATCH, events))
        ]
        sent = time.perf_counter()
        response = await http.post(f"{url}/v2.0/ports", json={"ports": batch}, headers=headers)
        body = await response.json()
        for port in body["ports"]:
            committed[port["id"]] = sent
    deadline = time.perf_counter() + 30
    while len(arrivals) < len(committed) and time.perf_counter() < deadline:
        await task.deferLater(reactor, 0.05)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(server_pid) - cpu_before
    latencies = [max(0.0, arrivals[p] - committed[p]) for p in committed if p in arrivals]
    for s in streams:
        s.cancel()
    await pool.closeCachedConnections()
    return {
        "watchers": watchers, "events": len(committed), "delivered": len(latencies), "events_per_s": round(len(committed) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 1), "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1), "server_cpu_ms_per_event": round(cpu * 1000 / max(len(committed), 1), 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--backend", default="sqlite")
    args = parser.parse_args()
    from twisted.internet import defer, reactor

    with tempfile.TemporaryDirectory() as tmp, temporary_database(args.backend) as db:
        tokens = os.path.join(tmp, "agents.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {"bench-admin": {"host": "", "kind": "admin"}}}, f)
        server = ServerProcess(db, config_text=f"[AGENT]\nagent_tokens_file = {tokens}\n").start()
        try:
            out: dict[str, Any] = {}

            def go() -> None:
                d = defer.Deferred.fromCoroutine(_run(reactor, server.url, args.watchers, args.events, server.proc.pid))
                d.addCallback(out.update).addErrback(lambda f: out.setdefault("error", f.getTraceback()))
                d.addBoth(lambda _: reactor.stop())

            reactor.callWhenRunning(go)
            reactor.run()
        finally:
            server.stop()
    print(json.dumps(dict(out, backend=args.backend), indent=1))


if __name__ == "__main__":
    main()
