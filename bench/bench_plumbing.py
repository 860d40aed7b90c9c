"""Plugging veth VIFs into OVS: the agent's IDL path against one ``ovs-vsctl`` process per VIF.

Runs a private OVS sandbox (tests/ovs_sandbox.py: userspace datapath, needs
root and Open vSwitch installed). For each N and mode it creates N veth pairs
with pyroute2 (host end to be plugged, both ends up), plugs them all, waits
until every port has an ofport, then unplugs them (OVS first, then the veths).

Modes:
  vsctl           one ``ovs-vsctl --timeout=120 -- --if-exists del-port -- add-port -- set Interface``
                  process per VIF, in turn (how nova/os-vif used to do it; it waits for ovs-vswitchd)
  idl-pipelined   IntegrationBridge.add_port: one transaction per VIF, all in flight at once,
                  each followed by wait_ofport (what the agent does)
  idl-sequential  the same, each VIF awaited before the next
  idl-batch       all VIFs in one transaction

"ofport latency" is from issuing a VIF's plug to seeing its ofport > 0 (for
vsctl: the process's run time, which includes its wait for ovs-vswitchd).
"reactor stall" is the worst lateness of a 5 ms LoopingCall during the OVS
phase (vsctl runs its processes from a thread, so its stall is not the IDL's).

    .venv/bin/python bench/bench_plumbing.py --counts 200,500 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyroute2 import IPRoute  # noqa: E402
from twisted.internet import defer, task, threads  # noqa: E402

from restproxy_agent.bridge import AddPort, IntegrationBridge, vif_external_ids  # noqa: E402
from restproxy_agent.links import Links  # noqa: E402
from restproxy_agent.ovsdb import OvsdbConnection  # noqa: E402
from restproxy_testing.ovs_sandbox import OvsSandbox, ovs_unavailable  # noqa: E402

MODES = ["vsctl", "idl-pipelined", "idl-sequential", "idl-batch"]
TICK = 0.005


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def _vifs(n: int) -> list[dict[str, str]]:
    return [
        {
            "dev": f"tapb{i:05d}",
            "peer": f"tpb{i:05d}",
            "port_id": f"{i:08x}-0000-4000-8000-000000000000",
            "mac": f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "vm": f"{i:08x}-1111-4000-8000-000000000000",
        }
        for i in range(n)
    ]


def _create_veths(vifs: list[dict[str, str]], quiet: bool, peer_down: bool) -> None:
    with IPRoute() as ipr:
        for v in vifs:
            ipr.link("add", ifname=v["dev"], kind="veth", peer={"ifname": v["peer"]})
            for name in (v["dev"],) if peer_down else (v["peer"], v["dev"]):
                if quiet:  # no IPv6 chatter (DAD, RS, MLD) for OVS to flood to every other port
                    with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                        f.write("1")
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


class _Lag:
    def __init__(self, reactor: Any) -> None:
        self.worst, self._last = 0.0, time.perf_counter()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - TICK)
        self._last = now

    def __enter__(self) -> _Lag:
        self._last = time.perf_counter()
        self._loop.start(TICK, now=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.stop()


async def _plug_vsctl(sb: OvsSandbox, br: str, vifs: list[dict[str, str]]) -> list[float]:
    def run() -> list[float]:
        lat = []
        for v in vifs:
            t0 = time.perf_counter()
            ids = vif_external_ids(v["port_id"], v["mac"], v["vm"])
            argv = ["ovs-vsctl", f"--db={sb.endpoint}", "--timeout=120", "--", "--if-exists", "del-port", v["dev"]]
            argv += ["--", "add-port", br, v["dev"], "--", "set", "Interface", v["dev"]]
            argv += [f"external-ids:{k}={val}" for k, val in ids.items()]
            subprocess.run(argv, check=True, capture_output=True, env=sb.env)
            lat.append(time.perf_counter() - t0)
        return lat

    return await threads.deferToThread(run)


async def _plug_idl(bridge: IntegrationBridge, vifs: list[dict[str, str]], mode: str) -> list[float]:
    lat: list[float] = []

    async def one(v: dict[str, str]) -> None:
        t0 = time.perf_counter()
        await bridge.add_port(v["dev"], "system", vif_external_ids(v["port_id"], v["mac"], v["vm"]))
        await bridge.wait_ofport(v["dev"], timeout=60)
        lat.append(time.perf_counter() - t0)

    if mode == "idl-pipelined":
        await defer.gatherResults([defer.ensureDeferred(one(v)) for v in vifs], consumeErrors=True)
    elif mode == "idl-sequential":
        for v in vifs:
            await one(v)
    else:
        t0 = time.perf_counter()
        cmds = [AddPort(bridge.name, v["dev"], "", vif_external_ids(v["port_id"], v["mac"], v["vm"])) for v in vifs]
        await bridge.execute(*cmds, timeout=120)

        async def ofport(v: dict[str, str]) -> None:
            await bridge.wait_ofport(v["dev"], timeout=60)
            lat.append(time.perf_counter() - t0)

        await defer.gatherResults([defer.ensureDeferred(ofport(v)) for v in vifs], consumeErrors=True)
    return lat


async def _run_one(
    reactor: Any, sb: OvsSandbox, conn: OvsdbConnection, links: Links, n: int, mode: str, opts: tuple[bool, bool]
) -> dict[str, Any]:
    bridge = IntegrationBridge(conn, f"br-{sb.tag}")
    vifs = _vifs(n)
    t_start = time.perf_counter()
    await threads.deferToThread(_create_veths, vifs, *opts)
    t_veth = time.perf_counter()
    with _Lag(reactor) as lag:
        lat = await (_plug_vsctl(sb, bridge.name, vifs) if mode == "vsctl" else _plug_idl(bridge, vifs, mode))
    t_plugged = time.perf_counter()
    plugged = bridge.ports_with_iface_ids()
    ofports = [plugged[v["port_id"]].ofport for v in vifs]
    assert all(o and o > 0 for o in ofports), "some VIF has no ofport"
    # Unplug: OVS (pipelined, until ovs-vswitchd applied it), then the veths (in the Links thread pool).
    if mode == "vsctl":
        await threads.deferToThread(
            lambda: [subprocess.run(["ovs-vsctl", f"--db={sb.endpoint}", "del-port", v["dev"]], check=True, env=sb.env) for v in vifs]
        )
    else:
        await defer.gatherResults([bridge.delete_port(v["dev"], wait_applied=True) for v in vifs])
    t_unplugged_ovs = time.perf_counter()
    await defer.gatherResults([links.delete_link(v["dev"]) for v in vifs])
    t_end = time.perf_counter()
    assert not bridge.ports_with_iface_ids()
    return {
        "n": n,
        "mode": mode,
        "veth_s": t_veth - t_start,
        "ovs_plug_s": t_plugged - t_veth,
        "plug_total_s": t_plugged - t_start,
        "ofport_ms_p50": _pct(lat, 50) * 1000,
        "ofport_ms_p99": _pct(lat, 99) * 1000,
        "ofport_ms_max": max(lat) * 1000,
        "reactor_stall_ms": lag.worst * 1000,
        "unplug_ovs_s": t_unplugged_ovs - t_plugged,
        "unplug_veth_s": t_end - t_unplugged_ovs,
    }


async def _main(reactor: Any, counts: list[int], modes: list[str], rounds: int, opts: tuple[bool, bool]) -> list[dict[str, Any]]:
    sb = OvsSandbox().start()
    links = Links(reactor)
    conn = OvsdbConnection(sb.endpoint, reactor=reactor)
    results = []
    try:
        await conn.connect()
        await IntegrationBridge(conn).ensure_bridge(f"br-{sb.tag}", datapath_type="netdev")
        for n in counts:
            for mode in modes:
                runs = [await _run_one(reactor, sb, conn, links, n, mode, opts) for _ in range(rounds)]
                med = {k: (statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k]) for k in runs[0]}
                results.append(med)
                print(
                    f"N={n:4d} {mode:15s} plug {med['plug_total_s']:6.2f}s (veth {med['veth_s']:.2f}s + OVS {med['ovs_plug_s']:.2f}s)"
                    f"  ofport p50/p99/max {med['ofport_ms_p50']:7.1f}/{med['ofport_ms_p99']:7.1f}/{med['ofport_ms_max']:7.1f} ms"
                    f"  stall {med['reactor_stall_ms']:5.1f} ms  unplug OVS {med['unplug_ovs_s']:.2f}s veth {med['unplug_veth_s']:.2f}s",
                    flush=True,
                )
    finally:
        conn.close()
        links.stop()
        sb.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="200,500", help="comma-separated VIF counts")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES}")
    parser.add_argument("--rounds", type=int, default=1, help="runs per (count, mode); the median is reported")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--peer-down", action="store_true", help="leave the VM ends down (no carrier, no traffic)")
    parser.add_argument("--chatty", action="store_true", help="leave IPv6 on in the veths: every VIF's DAD/RS/MLD gets flooded")
    args = parser.parse_args()
    reason = ovs_unavailable("bench_plumbing")
    if reason:
        sys.exit(f"cannot run: {reason} (scripts/bootstrap.sh installs Open vSwitch)")
    counts = [int(c) for c in args.counts.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]

    async def run(reactor: Any) -> None:
        out = await _main(reactor, counts, modes, args.rounds, (not args.chatty, args.peer_down))
        by = {(r["n"], r["mode"]): r for r in out}
        for n in counts:
            base, ours = by.get((n, "vsctl")), by.get((n, "idl-pipelined"))
            if base and ours:
                ratio = base["plug_total_s"] / ours["plug_total_s"]
                print(f"N={n}: ovs-vsctl per VIF / IDL pipelined = {ratio:.1f}x (plug until every ofport is assigned)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))  # exits the process


if __name__ == "__main__":
    main()
