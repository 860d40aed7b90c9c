"""The host agent against a private Open vSwitch (userspace datapath), driven through the API.

1. single VIF: N sequential port creates, per VIF kind (``--kinds``: a tap, or
   a veth whose peer goes into a namespace of its own): ms from the POST to
   the port ACTIVE in the API (p50/p99; targets p50 < 25 ms tap, < 50 ms veth),
   and from the agent's log ms from the port-attach event to
   ``update_device_up``. ACTIVE is the moment the server's access log shows
   the agent's device report answered (read every 0.5 ms; the status commits
   before the answer), provided a GET asked right then (and at each later
   report, and every 50 ms besides) says the port is ACTIVE;
   ``post_to_get_active_p50_ms``: until that GET's answer. Polling the API
   with a GET every 2 ms, as before (``--poll-every-ms 2``), kept the
   one-process server busy about half the time with the bench's own reads
   (~2 ms each) while it had the POST's event and the agent's report to
   serve, slowing what it measured, and added up to a poll interval and a
   GET to each figure;
2. burst: B ports in bulk creates (``--bulk-size`` ports each, 100 unless
   told: ``--bulk-size 500`` makes a burst of 500 one POST, target < 3 s);
   seconds until all are ACTIVE in the API (end to end, API included); then
   B ports bound while the agent is down and
   the agent started: ms until it has plugged and reported them all (the
   agent's own burst figure, target < 2 s for 500); and, in the same run, B
   VIFs plugged with one ``ip`` and one ``ovs-vsctl`` process per VIF, as the
   anchors do;
3. restart: R plugged VIFs, agent killed (SIGKILL) and started again; ms until
   it logs that it is in step, and how many it re-plugged (target < 2 s, none).

Burst and restart VIFs are taps (no namespaces), so that hundreds of them are
cheap to make. A phase given 0 is skipped. Each result line carries its
``phase`` (for bench/compare.py).

    .venv/bin/python bench/bench_agent.py --single 50 --burst 500 --restart 1000
    .venv/bin/python bench/compare.py main WORKTREE --bench-from after -- bench/bench_agent.py --single 30 --burst 0 --restart 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing.agent_stack import HOST, AgentProcess  # noqa: E402
from restproxy_testing.ovs_sandbox import OvsSandbox, ovs_unavailable  # noqa: E402
from restproxy_testing.support import ServerProcess  # noqa: E402


def _post(url: str, body: Any) -> tuple[int, Any]:
    """A POST that waits as long as the slowest revision compared needs (ServerProcess.request gives up at 30 s)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:2000]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, tmp: str, bulk_size: int = 100) -> None:
        self.bulk_size = bulk_size
        self.sandbox = self.server = self.agent = None
        try:
            self._start(tmp)
        except BaseException:
            self.stop()  # (a failed start leaves no ovs-vswitchd, server or agent running: they would disturb what runs next)
            raise

    def _start(self, tmp: str) -> None:
        self.sandbox = OvsSandbox().start()
        tokens = os.path.join(tmp, "agents.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {"tok-agent": {"host": HOST}}}, f)
        self.server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[AGENT]\nagent_tokens_file = {tokens}\n").start()
        self.agent = AgentProcess(self.server, self.sandbox, tmp)
        with open(self.agent.config) as f:
            text = f.read().replace("vif_kind = veth", "vif_kind = tap")
        with open(self.agent.config, "w") as f:
            f.write(text)
        self.agent.start()
        self.agent.wait_log("in step after reconcile", timeout=60)
        _, net = self.server.request("POST", "/v2.0/networks", {"network": {"name": "bench", "tenant_id": "t"}})
        self.net_id = net["network"]["id"]
        self.server.request(
            "POST", "/v2.0/subnets", {"subnet": {"network_id": self.net_id, "ip_version": 4, "cidr": "10.0.0.0/16", "tenant_id": "t"}}
        )

    def ports(self, count: int, profile: dict[str, Any] | None = None) -> list[str]:
        ids = []
        for start in range(0, count, self.bulk_size):
            batch = [
                {"network_id": self.net_id, "tenant_id": "t", "binding:host_id": HOST, "device_id": f"vm-{i}", **extra}
                for i in range(start, min(start + self.bulk_size, count))
                for extra in [{"binding:profile": profile} if profile else {}]
            ]
            status, body = _post(self.server.url + "/v2.0/ports", {"ports": batch})  # (a slow revision's bulk takes over 30 s)
            assert status == 201, body
            ids += [p["id"] for p in body["ports"]]
        return ids

    def wait_active(self, ids: list[str], timeout: float = 120.0, poll: float = 0.02) -> float:
        wanted = set(ids)
        started = time.monotonic()
        query = "&".join(f"id={i}" for i in ids) if len(ids) <= 10 else f"network_id={self.net_id}"
        while time.monotonic() - started < timeout:
            _, body = self.server.request("GET", f"/v2.0/ports?status=ACTIVE&fields=id&{query}")
            if wanted <= {p["id"] for p in body["ports"]}:
                return time.monotonic()
            time.sleep(poll)
        raise RuntimeError(f"ports not ACTIVE in {timeout}s:\n{self.agent.log()[-3000:]}")

    def is_active(self, port_id: str) -> bool:
        _, body = self.server.request("GET", f"/v2.0/ports?status=ACTIVE&fields=id&id={port_id}")
        return any(p["id"] == port_id for p in body["ports"])

    def wait_reported_active(self, port_id: str, log_offset: int, timeout: float = 120.0) -> tuple[float, float]:
        """(when the server's access log showed the device report that made ``port_id`` ACTIVE, when a GET said so),
        as ``time.monotonic``: the log is read from ``log_offset`` (bytes) every 0.5 ms, a GET asked after each
        report it shows (and every 50 ms besides), until one says ACTIVE; the report is the last one seen before it.
        """
        started = last_get = time.monotonic()
        reported = None
        with open(self.server.log_path, "rb") as log:
            log.seek(log_offset)
            pending = b""
            while time.monotonic() - started < timeout:
                chunk = log.read()
                report = False
                if chunk:
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    if any(b"POST /agent/v1/rpc/update_device_" in line for line in lines):
                        report, reported = True, time.monotonic()
                if report or time.monotonic() - last_get >= 0.05:
                    last_get = time.monotonic()
                    if self.is_active(port_id):
                        confirmed = time.monotonic()
                        return (reported if reported is not None else confirmed), confirmed
                else:
                    time.sleep(0.0005)
        raise RuntimeError(f"port {port_id} not ACTIVE in {timeout}s:\n{self.agent.log()[-3000:]}")

    def delete_all(self, ids: list[str]) -> None:
        for port_id in ids:
            self.server.request("DELETE", f"/v2.0/ports/{port_id}")

    def stop(self) -> None:
        for part in (self.agent, self.server, self.sandbox):
            if part is not None:
                part.stop()


def single(b: Bench, count: int, kind: str, poll_ms: float = 0.0) -> dict[str, Any]:
    """``count`` ports one after the other, each waited for; then deleted (and a veth's namespace removed).

    ``poll_ms``: poll the API at that interval instead of asking it after each device report (module docstring)."""
    ids, post_to_active, post_to_get = [], [], []
    for i in range(count):
        profile = None
        if kind == "veth":
            netns = b.sandbox.netns_name(f"qrpb{i}")
            b.sandbox.track_netns(netns)
            profile = {"netns": netns}
        log_offset = os.path.getsize(b.server.log_path)
        started = time.monotonic()
        [port_id] = b.ports(1, profile)
        if poll_ms:
            active = confirmed = b.wait_active([port_id], poll=poll_ms / 1000)
        else:
            active, confirmed = b.wait_reported_active(port_id, log_offset)
        post_to_active.append((active - started) * 1000)
        post_to_get.append((confirmed - started) * 1000)
        ids.append(port_id)
    latencies = [int(m) for m in re.findall(r"reported ACTIVE \+(\d+)ms", b.agent.log())[-count:]]
    b.delete_all(ids)
    return {
        "phase": f"single {kind}", "vifs": count,
        "post_to_active_p50_ms": round(_percentile(post_to_active, 50), 1),
        "post_to_active_p99_ms": round(_percentile(post_to_active, 99), 1),
        "post_to_get_active_p50_ms": round(_percentile(post_to_get, 50), 1),
        "event_to_up_p50_ms": _percentile(latencies, 50), "event_to_up_p99_ms": _percentile(latencies, 99),
    }  # fmt: skip


def burst(b: Bench, count: int, anchor: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    ids = b.ports(count)
    created = time.monotonic()
    done = b.wait_active(ids)
    vsctl = _vsctl_burst(b.sandbox, count) if anchor else None
    return {
        "phase": "burst", "vifs": count, "api_create_s": round(created - started, 2), "all_active_s": round(done - started, 2),
        "ovs_vsctl_per_vif_s": vsctl, "ids": ids,
    }  # fmt: skip


def _vsctl_burst(sandbox: OvsSandbox, count: int) -> float:
    """The anchors' way: one ip and one ovs-vsctl process per VIF, waiting for its ofport."""
    names = [f"vsb{i:05d}" for i in range(count)]
    started = time.monotonic()
    for i, name in enumerate(names):
        subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        sandbox.vsctl(
            "--timeout=10", "--", "add-port", "br-e2e", name, "--", "set", "Interface", name,
            f"external_ids:iface-id=bench-{i}", f"external_ids:attached-mac=fa:16:3f:00:{i >> 8:02x}:{i & 255:02x}",
        )  # fmt: skip
    elapsed = time.monotonic() - started
    for name in names:
        sandbox.vsctl("--if-exists", "del-port", name, check=False)
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
    return round(elapsed, 2)


def restart(b: Bench, count: int, existing: list[str]) -> dict[str, Any]:
    ids = existing + b.ports(max(0, count - len(existing)))
    b.wait_active(ids, timeout=300)
    b.agent.kill()
    mark = len(b.agent.log())
    b.agent.start()
    result = _in_step(b, mark)
    result["replugged"] = result.pop("plugged")
    result["unbind_after_restart_ms"] = _unbind(b, ids[:10])
    return result


def _unbind(b: Bench, ids: list[str]) -> int:
    """Every port must still be managed after a restart (issue 10): ms until 10 unbound in-step ports are DOWN."""
    started = time.monotonic()
    for port_id in ids:
        b.server.request("PUT", f"/v2.0/ports/{port_id}", {"port": {"binding:host_id": ""}})
    wanted = set(ids)
    while time.monotonic() - started < 30:
        _, body = b.server.request("GET", f"/v2.0/ports?status=DOWN&fields=id&network_id={b.net_id}")
        if wanted <= {p["id"] for p in body["ports"]}:
            return int((time.monotonic() - started) * 1000)
        time.sleep(0.02)
    raise RuntimeError(f"unbound ports not DOWN after a restart:\n{b.agent.log()[-3000:]}")


def cold_burst(b: Bench, count: int, log_to: str | None = None) -> dict[str, Any]:
    """``count`` ports bound while the agent is down; ms from its start until all are plugged and reported (``log_to``:
    a file for the agent's log of that start, to read where the time went)."""
    b.agent.stop()
    ids = b.ports(count)
    mark = len(b.agent.log())
    started = time.monotonic()
    b.agent.start()
    result = _in_step(b, mark, started=started)
    # The new ports alone (the target: plugged and reported), on the agent's clock from its reconcile's start; and
    # from the process's start, as start_to_in_step_ms less what came after the last of them.
    b.wait_active(ids)
    log = b.agent.log()[mark:]
    if log_to:
        with open(log_to, "w") as f:
            f.write(log)
    wanted = set(ids)
    active = [int(ms) for port_id, ms in re.findall(r"port (\S+) reported ACTIVE \+(\d+)ms", log) if port_id in wanted]
    if len(active) >= len(ids):
        result["new_active_ms"] = max(active)
        result["start_to_new_active_ms"] = result["start_to_in_step_ms"] - (result["in_step_ms"] - max(active))
    return dict(result, ids=ids)


def _in_step(b: Bench, mark: int, timeout: float = 120, started: float | None = None) -> dict[str, Any]:
    """The agent's own figure (``in_step_ms``: from its reconcile's start, after its first list) and, with ``started``,
    ``start_to_in_step_ms``: from the agent process's start (imports, OVSDB, firewall, first list) as seen here."""
    pattern = re.compile(
        r"in step after reconcile \(listed\): (\d+) ports, (\d+) plugged, (\d+) unplugged, (\d+) adjusted, (\d+) errors"
        r"(?:, \d+ refused)? in (\d+)ms"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(b.agent.log()[mark:])
        if match:
            ports, plugged, unplugged, adjusted, errors, ms = map(int, match.groups())
            result = {"ports": ports, "in_step_ms": ms, "plugged": plugged, "unplugged": unplugged, "adjusted": adjusted, "errors": errors}
            if started is not None:
                result["start_to_in_step_ms"] = int((time.monotonic() - started) * 1000)
            return result
        time.sleep(0.01)
    raise RuntimeError("agent did not get in step:\n" + b.agent.log()[mark:][-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=50)
    parser.add_argument("--no-anchor", action="store_true", help="burst: skip the one-ip-and-ovs-vsctl-per-VIF anchor")
    parser.add_argument("--kinds", default="tap,veth", help="VIF kinds for the single phase (tap, veth)")
    parser.add_argument("--poll-every-ms", type=float, default=0.0, help="single: poll the API for ACTIVE (0: ask after each report)")
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--restart", type=int, default=1000)
    parser.add_argument("--cold-log", help="cold burst: write the agent's log of its start to this file")
    parser.add_argument("--bulk-size", type=int, default=100, help="ports per bulk create (500: the burst is one POST)")
    args = parser.parse_args()
    reason = ovs_unavailable("bench_agent")
    if reason:
        sys.exit(f"cannot run: {reason} (scripts/bootstrap.sh installs Open vSwitch)")
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp, args.bulk_size)
        try:
            for kind in args.kinds.split(",") if args.single else []:
                print(json.dumps(single(b, args.single, kind, args.poll_every_ms)), flush=True)
            ids: list[str] = []
            if args.burst:
                burst_result = burst(b, args.burst, anchor=not args.no_anchor)
                ids = burst_result.pop("ids")
                print(json.dumps(burst_result), flush=True)
                cold = cold_burst(b, args.burst, args.cold_log)
                ids += cold.pop("ids")
                print(json.dumps({"phase": "cold burst", "cold_burst": cold}), flush=True)
            if args.restart:
                print(json.dumps(dict(restart(b, args.restart, ids), phase="restart")), flush=True)
        finally:
            b.stop()


if __name__ == "__main__":
    main()
