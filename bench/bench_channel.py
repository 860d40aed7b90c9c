"""Agent channel fan-out: N watchers (one per host) in one process, M port events.

A quantum-server (with an admin agent token) serves the channel; this process
opens one watch per host, then creates M ports bound round-robin to the hosts
through the API's bulk create (batches of 10). Latency is measured from the
moment the bulk create was *sent* to the moment each event arrived at its
watcher: an upper bound that includes creating the batch's ports (the events
usually arrive before the API's reply). Reports delivery p50/p99/max, events/s, and
server CPU ms per event.

    .venv/bin/python bench/bench_channel.py --watchers 1000 --events 10000

``--replay``: memory under unread replays. ``--retained-mb`` of events (1 KB
payloads) are written into the store for ``--hosts`` hosts; then ``--watchers``
watches (one token each, spread over the hosts) ask for everything from 0 and
never read. Reports the server's RSS growth once it is idle again, and the rate
at which one reading watcher replays its host's whole backlog. ``--server-path``
runs the server from another checkout (the previous code, side by side).

    .venv/bin/python bench/bench_channel.py --replay --watchers 1000 --retained-mb 100
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
from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402

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


def _replay(args: argparse.Namespace) -> dict[str, Any]:
    from restproxy_testing.channel_support import cpu_ticks, insert_events, open_raw_watch, rss_kib, wait_idle

    if args.server_path:
        os.environ["PYTHONPATH"] = args.server_path
    per_host = int(args.retained_mb * 1e6 / 1050 / args.hosts)
    tokens = {f"t{i}": {"host": f"host-{i % args.hosts}", "kind": "agent"} for i in range(args.watchers)}
    config = f"agent_max_watches = {args.watchers + 10}\nagent_event_retention = {per_host * args.hosts + 1}\n"
    with tempfile.TemporaryDirectory() as tmp, temporary_database(args.backend) as db:
        path = os.path.join(tmp, "agents.json")
        with open(path, "w") as f:
            json.dump({"tokens": tokens}, f)
        server = ServerProcess(db, config_text=f"[AGENT]\nagent_tokens_file = {path}\n{config}").start()
        try:
            for h in range(args.hosts):
                insert_events(db, f"host-{h}", per_host)
            pid = server.proc.pid
            _wait_watermark(server, per_host * args.hosts)
            wait_idle(pid, quiet=2.0)
            before, ticks = rss_kib(pid), cpu_ticks(pid)
            started = time.perf_counter()
            sockets = [open_raw_watch(server, f"host-{i % args.hosts}", 0, f"t{i}", rcvbuf=65536) for i in range(args.watchers)]
            wait_idle(pid, quiet=2.0, timeout=600)
            settled = time.perf_counter() - started - 2.0
            after, cpu_s = rss_kib(pid), (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
            for s in sockets:
                s.close()
            wait_idle(pid, quiet=1.0)
            read_s = _read_one_replay(server, per_host)
            return {
                "watchers": args.watchers, "hosts": args.hosts, "retained_events": per_host * args.hosts,
                "retained_mb": round(per_host * args.hosts * 1050 / 1e6, 1), "rss_before_mb": round(before / 1024, 1),
                "rss_after_mb": round(after / 1024, 1), "rss_growth_mb": round((after - before) / 1024, 1),
                "settle_s": round(settled, 1), "server_cpu_s": round(cpu_s, 1), "one_full_replay_s": round(read_s, 2),
                "one_replay_events_per_s": round(per_host / read_s), "server": args.server_path or "this checkout",
            }  # fmt: skip
        finally:
            server.stop()


def _wait_watermark(server: ServerProcess, seq: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, body = server.request("GET", "/agent/v1/hosts/host-0/ports", headers={"X-Auth-Token": "t0"})
        if status == 200 and body["seq"] >= seq:
            return
        time.sleep(0.2)
    raise RuntimeError("events not dispatched in time")


def _read_one_replay(server: ServerProcess, events: int) -> float:
    """Seconds for one reading watcher to receive its host's whole backlog."""
    import urllib.request

    req = urllib.request.Request(f"{server.url}/agent/v1/hosts/host-0/watch?since=0", headers={"X-Auth-Token": "t0"})
    started, seen = time.perf_counter(), 0
    with urllib.request.urlopen(req, timeout=60) as response:
        for line in response:
            if line.startswith(b'{"type":"event"'):
                seen += 1
                if seen == events:
                    break
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--replay", action="store_true", help="measure memory under unread replays (see above)")
    parser.add_argument("--retained-mb", type=float, default=100.0)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--server-path", default="", help="PYTHONPATH for the server (e.g. a checkout of the previous code)")
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(dict(_replay(args), backend=args.backend), indent=1))
        return
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
