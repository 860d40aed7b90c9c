"""Topology sync of a large store: streamed (as shipped) vs building the whole body in memory.

Fills a throw-away database with N networks (one /24 subnet each) and M ports
spread over them, then, in a fresh child process per variant, sends the whole
topology to a controller simulator with ``PUT /topology``:

* streamed: TopologySync / TopologyProducer (pages read, mapped and serialised
  in the store's threads, written with back-pressure);
* in-memory: every page read first, one dict, one ``json.dumps``, one PUT.

Reports seconds, bytes, and peak RSS growth of the sending process.

    .venv/bin/python bench/bench_topology_sync.py --networks 10000 --ports 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.support import temporary_database  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def populate(url: str, networks: int, ports: int) -> None:
    """Bulk rows through SQLAlchemy Core (the API would take minutes for 100k ports)."""
    from sqlalchemy import insert

    from server_plugin.store import migrate
    from server_plugin.store.db import make_engine
    from server_plugin.store.models import AllocationPool, IPAllocation, Network, Port, Subnet, utcnow

    engine = make_engine(url)
    migrate.upgrade(engine)
    now = utcnow()
    per_net = max(1, ports // networks)
    with engine.begin() as conn:
        for start in range(0, networks, 1000):
            net_rows, subnet_rows, pool_rows, port_rows, alloc_rows = [], [], [], [], []
            for i in range(start, min(start + 1000, networks)):
                net_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
                a, b = divmod(i, 250)
                cidr_base = f"10.{a % 250}.{b}."
                net_rows.append({"id": net_id, "tenant_id": f"t{i % 50}", "name": f"net-{i}", "description": "", "admin_state_up": True,
                                 "status": "ACTIVE", "shared": False, "created_at": now, "updated_at": now})  # fmt: skip
                subnet_rows.append({"id": subnet_id, "tenant_id": f"t{i % 50}", "network_id": net_id, "name": "", "description": "",
                                    "ip_version": 4, "cidr": cidr_base + "0/24", "gateway_ip": cidr_base + "1", "enable_dhcp": True,
                                    "created_at": now, "updated_at": now})  # fmt: skip
                pool_rows.append({"subnet_id": subnet_id, "first_ip": cidr_base + "2", "last_ip": cidr_base + "254", "position": 0})
                for j in range(per_net):
                    port_id = str(uuid.uuid4())
                    mac = f"fa:16:3e:{(i >> 8) & 255:02x}:{i & 255:02x}:{j:02x}"
                    port_rows.append({"id": port_id, "tenant_id": f"t{i % 50}", "network_id": net_id, "name": f"p{j}", "description": "",
                                      "mac_address": mac, "admin_state_up": True, "status": "ACTIVE", "device_id": f"vm-{i}-{j}",
                                      "device_owner": "compute:nova", "binding_host_id": f"host-{i % 100}", "binding_profile": "{}",
                                      "created_at": now, "updated_at": now})  # fmt: skip
                    alloc_rows.append({"subnet_id": subnet_id, "ip_address": cidr_base + str(j + 2), "network_id": net_id,
                                       "port_id": port_id, "position": 0})  # fmt: skip
            conn.execute(insert(Network), net_rows)
            conn.execute(insert(Subnet), subnet_rows)
            conn.execute(insert(AllocationPool), pool_rows)
            conn.execute(insert(Port), port_rows)
            conn.execute(insert(IPAllocation), alloc_rows)
    engine.dispose()


def send(variant: str, url: str, controller: str) -> dict[str, Any]:
    """Child: one sync, measured."""
    from twisted.internet import defer, reactor

    from server_plugin.controller import mapping
    from server_plugin.controller.ordering import RWLock
    from server_plugin.controller.pool import PoolSettings, ServerPool
    from server_plugin.controller.servers import parse_servers
    from server_plugin.controller.sync import TopologySync
    from server_plugin.store import mirror_ops
    from server_plugin.store.db import Store

    store = Store(url, reactor=reactor)
    store.start()
    pool = ServerPool(parse_servers(controller), reactor, PoolSettings(timeout=600))
    base_rss = _rss_mb()
    out: dict[str, Any] = {"variant": variant}

    async def streamed() -> None:
        sync = TopologySync(store, pool, RWLock(), reactor, lambda: mapping.BIGSWITCH)
        await sync.request("benchmark")
        last = sync.status()["last"]
        out.update(networks=last["networks"], ports=last["ports"], bytes=last["bytes"])

    async def in_memory() -> None:
        networks: list[dict[str, Any]] = []
        after = None
        while True:
            page = await store.run(mirror_ops.topology_page, after, 500, readonly=True)
            if not page:
                break
            networks.extend(mapping.topology_network(mapping.BIGSWITCH, v) for v in page)
            after = page[-1]["id"]
        body = json.dumps({"networks": networks, "routers": []}).encode()
        response = await pool.request("PUT", "/topology", _Raw(body), timeout=600)
        assert response.ok, response
        out.update(networks=len(networks), ports=sum(len(n["ports"]) for n in networks), bytes=len(body))

    async def main() -> None:
        started = time.perf_counter()
        await (streamed() if variant == "streamed" else in_memory())
        out["seconds"] = round(time.perf_counter() - started, 2)
        await pool.close()

    def done(result: Any) -> None:
        if isinstance(result, Exception) or hasattr(result, "getErrorMessage"):
            out["error"] = str(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(main()).addBoth(done))
    reactor.run()
    store.stop()
    out["peak_rss_growth_mb"] = round(_peak_mb() - base_rss, 1)
    return out


class _Raw:
    """A whole body already in memory (the in-memory variant's one big buffer)."""

    def __init__(self, data: bytes) -> None:
        import io

        from twisted.web.client import FileBodyProducer

        self._producer = FileBodyProducer(io.BytesIO(data))
        self.length = len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def main() -> None:
    from twisted.web.iweb import IBodyProducer
    from zope.interface import classImplements

    classImplements(_Raw, IBodyProducer)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=10000)
    parser.add_argument("--ports", type=int, default=100000)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--variants", default="streamed,in-memory")
    parser.add_argument("--send", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--controller", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        print(json.dumps(send(args.send, args.url, args.controller)))
        return
    from controller_sim.testing import SimProcess

    with temporary_database(args.backend) as url, SimProcess() as sim:
        started = time.perf_counter()
        populate(url, args.networks, args.ports)
        print(
            f"populated {args.networks} networks / {args.ports} ports on {args.backend} in {time.perf_counter() - started:.1f}s", flush=True
        )
        header = ["variant", "networks", "ports", "bytes", "seconds", "peak_rss_growth_mb"]
        print(" | ".join(header))
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--send", variant, "--url", url, "--controller", sim.address]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            print(" | ".join(str(row.get(h)) for h in header), row.get("error", ""), flush=True)
            stats = sim.stats()["last_topology"]
            print(f"  controller received: {stats}", flush=True)


if __name__ == "__main__":
    main()
