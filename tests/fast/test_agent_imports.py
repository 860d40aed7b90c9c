"""Fast tier: what the agent's start imports (in a fresh interpreter). Its imports were most of the time before its
first reconcile: python-ovs pulled in eventlet (0.2 s) and os-ken's ``ofproto`` package every OpenFlow version's
parser (0.12 s), neither of which the agent uses."""

from __future__ import annotations

import json
import subprocess
import sys

from restproxy_testing.support import ROOT

PROBE = """
import json, sys
import restproxy_agent.agent_tap
loaded = sorted(m for m in sys.modules if m.startswith("os_ken.ofproto.ofproto_v"))
eventlet = "eventlet" in sys.modules
import os_ken.ofproto
from os_ken.ofproto import ofproto_v1_3_parser
print(json.dumps({"loaded": loaded, "eventlet": eventlet, "v13": os_ken.ofproto.get_ofp_module(4)[1] is ofproto_v1_3_parser,
                  "after": len([m for m in sys.modules if m.startswith("os_ken.ofproto.ofproto_v")])}))
"""


def test_the_agent_imports_neither_eventlet_nor_the_other_openflow_versions_and_os_ken_still_works_whole() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["eventlet"] is False
    assert result["loaded"] == ["os_ken.ofproto.ofproto_v1_3", "os_ken.ofproto.ofproto_v1_3_parser"]
    # os-ken's own look-up still answers, with the very modules already loaded (then every version is there, as before)
    assert result["v13"] is True and result["after"] == 10


COLLECTOR_PROBE = """
import gc, json, sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
maker = {p.tapname: p for p in getPlugins(IServiceMaker)}[sys.argv[1]]
before = gc.isenabled()
options = maker.options()
paused = not gc.isenabled()
options.parseOptions(["--config", sys.argv[2]])
maker.makeService(options)
print(json.dumps({"before": before, "paused": paused, "after": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def test_twistd_imports_the_host_agents_without_the_collector_and_resumes_it_in_make_service(tmp_path) -> None:  # noqa: ANN001
    ini = tmp_path / "agent.ini"
    ini.write_text("[SERVER]\ntoken = t\n")
    for tapname in ("restproxy-agent", "restproxy-dhcp-agent"):
        args = [sys.executable, "-c", COLLECTOR_PROBE, tapname, str(ini)]
        out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert (result["before"], result["paused"], result["after"]) == (True, True, True), tapname
        assert result["frozen"] > 50_000, result  # what the imports made: out of the collector's sight
