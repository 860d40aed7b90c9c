"""The demo's choice of what isolates the VMs: local VLAN tags, or br-int's OpenFlow controller.

With ``--controllers`` that are Floodlight (the profile the server detected), br-int points at
Floodlight's OpenFlow port; ``--openflow`` names one explicitly (or ``none``). The agent config
the demo writes then carries ``of_controller`` and OpenFlow 1.0, which the agent reads (so br-int
fails secure and gets no VLAN tags). The end-to-end run uses the simulator's Floodlight profile,
which speaks no OpenFlow, so the isolation there is still by VLAN tags, and says so.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from types import ModuleType

import pytest

from restproxy_agent import config as agent_config
from restproxy_testing.support import ROOT
from tests.ovs_sandbox import install_ovs


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qrp_demo", os.path.join(ROOT, "scripts", "demo.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _demo()


@pytest.mark.parametrize(
    ("openflow", "controllers", "profile", "target"),
    [
        (None, None, "bigswitch", None),  # the simulator: local VLAN tags
        (None, None, "floodlight", None),  # the simulator's Floodlight profile speaks no OpenFlow
        (None, "10.0.0.5:8080", "floodlight", "tcp:10.0.0.5:6633"),  # real Floodlight: its OpenFlow port
        (None, "10.0.0.5:8080,10.0.0.6:8080", "floodlight", "tcp:10.0.0.5:6633"),
        (None, "[fd00::5]:8080", "floodlight", "tcp:[fd00::5]:6633"),
        (None, "10.0.0.5:8000", "bigswitch", None),
        ("127.0.0.1:6653", "10.0.0.5:8000", "bigswitch", "tcp:127.0.0.1:6653"),  # explicit
        ("none", "10.0.0.5:8080", "floodlight", None),  # explicitly off
    ],
)
def test_openflow_target(openflow: str | None, controllers: str | None, profile: str, target: str | None) -> None:
    assert demo.openflow_target(openflow, controllers, profile) == target


def test_agent_config_carries_the_openflow_controller_and_the_output_says_who_isolates() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "agent.ini")
        for target in ("tcp:127.0.0.1:6633", None):
            with open(path, "w") as f:
                f.write(demo.agent_config_text("host-1", "http://127.0.0.1:9696", "unix:/tmp/db.sock", 9100, target))
            cfg = agent_config.load(path)
            assert cfg.host == "host-1" and cfg.integration_bridge == "br-int" and cfg.metrics_port == 9100
            if target:
                assert (cfg.of_controller, cfg.of_protocols) == ("tcp:127.0.0.1:6633", "OpenFlow10")
            else:
                assert (cfg.of_controller, cfg.of_protocols) == ("", "")
    assert demo.isolation_line("tcp:127.0.0.1:6633").startswith("isolation: OpenFlow controller tcp:127.0.0.1:6633")
    assert demo.isolation_line(None) == "isolation: local VLAN tags on br-int (one tag per network, set by the agent)"


def test_demo_with_the_simulators_floodlight_profile() -> None:
    reason = install_ovs()
    if reason:
        pytest.skip(f"Open vSwitch unavailable: {reason}")
    if os.geteuid() != 0:
        pytest.skip("the demo needs root (network namespaces)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--sim-profile", "floodlight"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "controller profile: floodlight" in out
    assert "isolation: local VLAN tags on br-int" in out and "A and B are isolated (by local VLAN tags on br-int)" in out
    assert "controller simulator (floodlight profile): 2 networks, 5 hosts" in out
    assert "profile: floodlight (detected: GET /capabilities)" in out and "consistent with the store (2 networks, 5 attachments)" in out
    assert "nothing left behind" in out
