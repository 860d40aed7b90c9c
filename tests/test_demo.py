"""The main job: ``./run-demo.sh`` end to end, and interrupted mid-run; nothing may be left behind either way.

Every process the demo starts inherits a marker in its environment (``QRP_DEMO_RUN``), so the
leftover check finds exactly this run's processes even with other test runs on the host; the
namespaces, devices and directories to look for are the ones the demo printed.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from restproxy_testing.support import ROOT
from tests.ovs_sandbox import require_ovs

TIMEOUT = 1200  # the demo waits its turn for the host's OVS sandbox lock while other test runs hold it


@pytest.fixture
def ovs() -> None:
    require_ovs("the demo")


def _start(tmpdir: str, marker: str) -> subprocess.Popen[str]:
    env = dict(os.environ, QRP_DEMO_RUN=marker, TMPDIR=tmpdir, QRP_VENV=os.path.join(ROOT, ".venv"))
    return subprocess.Popen(
        [os.path.join(ROOT, "run-demo.sh")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _marked_processes(marker: str) -> list[str]:
    needle = f"QRP_DEMO_RUN={marker}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {cmdline}")
        except OSError:
            continue
    return found


def _leftovers(output: str, tmpdir: str, marker: str) -> list[str]:
    left = _marked_processes(marker)
    tag = re.search(r"namespaces \*-(\S+)", output)
    assert tag, output
    if os.path.isdir("/run/netns"):
        left += [f"netns {n}" for n in os.listdir("/run/netns") if n.endswith("-" + tag.group(1))]
    for port_id in re.findall(r"port \w+: ([0-9a-f-]{36})", output):
        left += [f"link {d}" for d in ("tap" + port_id[:11], "tpi" + port_id[:11]) if os.path.exists(f"/sys/class/net/{d}")]
    for path in re.findall(r"(?:temp dir|run dir) (/\S+?),?(?:\s|$)", output):
        if os.path.exists(path):
            left.append(path)
    left += [f"{tmpdir}/{name}" for name in os.listdir(tmpdir)]
    return left


def test_demo_runs_end_to_end_and_leaves_nothing(ovs: None) -> None:
    marker = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="qrp-test-demo-") as tmpdir:
        proc = _start(tmpdir, marker)
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, out
        for pattern in (
            r"port A1 \(\S+\) is ACTIVE",
            r"port A2 \(\S+\) is ACTIVE",
            r"port B1 \(\S+\) is ACTIVE",
            r"reported ACTIVE \+\d+ms",
            r"device tap\S+ ofport \d+",
            r"ping A1 \S+ -> A2 \S+: ok",
            r"TCP A1 -> A2 \S+ .*: ok",
            r"A and B are isolated",
            r"TCP A1 \S+ -> A2 \S+:8080: admitted \(\S+\), by rule \S+ of group web: ingress IPv4 tcp 8080 from 10\.77\.1\.\d+/32",
            r"TCP A1 -> A2:22: blocked",
            r"agent: port \S+ filtered: ofport \d+, zone \d+, groups \S+, port security True",
            r"A1 lease \(\S+ after udhcpc started\): ip 10\.77\.1\.\d+/24 router 10\.77\.1\.1 .* mtu 1500",
            r"B1 lease \(\S+ after udhcpc started\): ip 10\.77\.1\.240/24",
            r"routes: 169\.254\.169\.254/32 via 10\.77\.1\.\d+, 0\.0\.0\.0/0 via 10\.77\.1\.1",
            r"dnsmasq started: pid \d+, netns qdhcp-",
            r"controller simulator \(bigswitch profile\): 2 networks, 5 ports, 5 attachments",
            r"\$ restproxy-manage pool-status",
            r"consistent with the store \(2 networks, 5 ports, 2 security groups\)",  # web and the default group
            r'quantum_api_request_seconds_count\{method="POST",status="2xx"\}',
            r"restproxy_agent_vifs 5\.0",  # the two DHCP ports are on br-int too
            r"nothing left behind",
            r"demo finished: OK",
        ):
            assert re.search(pattern, out), f"{pattern!r} not in the output:\n{out}"
        assert _leftovers(out, tmpdir, marker) == [], out


def test_demo_interrupted_after_first_active_leaves_nothing(ovs: None) -> None:
    marker = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="qrp-test-demo-") as tmpdir:
        proc = _start(tmpdir, marker)
        assert proc.stdout is not None
        out, deadline = "", time.monotonic() + TIMEOUT
        try:
            while "is ACTIVE" not in out:
                assert time.monotonic() < deadline and proc.poll() is None, out
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    line = proc.stdout.readline()
                    out += line
            # run-demo.sh execs the python script: the pid is the demo's.
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=120)
            out += rest
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 130, out
        assert "interrupted (SIGINT): cleaning up" in out, out
        assert "nothing left behind" in out, out
        assert "demo finished" not in out
        assert _leftovers(out, tmpdir, marker) == [], out
