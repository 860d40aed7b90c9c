"""``GET /metrics`` on quantum-server: the Prometheus text with API, controller, sync and agent-channel metrics."""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.request

from controller_sim.testing import SimProcess
from restproxy_testing.support import ServerProcess


def _scrape(server: ServerProcess) -> tuple[str, str]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in:\n{text}")


def test_metrics_endpoint_counts_api_requests_controller_calls_and_watchers() -> None:
    with tempfile.TemporaryDirectory() as tmp, SimProcess() as sim:
        tokens = os.path.join(tmp, "agents.json")
        with open(tokens, "w") as f:
            json.dump({"tokens": {"tok": {"host": "h1"}}}, f)
        server = ServerProcess(
            f"sqlite:///{tmp}/q.sqlite", config_text=f"[AGENT]\nagent_tokens_file = {tokens}\n", controllers=sim.address
        ).start()
        try:
            status, net = server.request("POST", "/v2.0/networks", {"network": {"name": "m", "tenant_id": "t"}})
            assert status == 201
            assert server.request("GET", "/v2.0/networks/nope")[0] == 404
            assert server.request("DELETE", f"/v2.0/networks/{net['network']['id']}")[0] == 204
            content_type, text = _scrape(server)
            assert content_type.startswith("text/plain")
            assert _value(text, "quantum_api_request_seconds_count", method="POST", status="2xx") >= 1
            assert _value(text, "quantum_api_request_seconds_count", method="GET", status="4xx") >= 1
            assert _value(text, "quantum_api_request_seconds_bucket", method="DELETE", status="2xx", le="+Inf") >= 1
            assert _value(text, "quantum_controller_requests_total", server=sim.address, outcome="2xx") >= 2
            assert _value(text, "quantum_controller_request_seconds_count", server=sim.address) >= 2
            assert _value(text, "quantum_topology_syncs_total", result="ok") == 0
            assert _value(text, "quantum_topology_sync_running") == 0
            assert _value(text, "quantum_agent_watchers") == 0
            # A controller that refuses connections: its calls are counted as errors.
            sim.stop()
            assert server.request("POST", "/v2.0/networks", {"network": {"name": "x", "tenant_id": "t"}})[0] == 500
            _, text = _scrape(server)
            assert _value(text, "quantum_controller_requests_total", server=sim.address, outcome="error") >= 1
            assert _value(text, "quantum_api_request_seconds_count", method="POST", status="5xx") >= 1
        finally:
            server.stop()


def test_server_and_agent_metrics_live_in_their_own_registries() -> None:
    """Each instance has its registry: two servers in one process do not collide, nothing lands in the global one."""
    from prometheus_client import REGISTRY, generate_latest

    from restproxy_agent.metrics import AgentMetrics
    from server_plugin.metrics import ServerMetrics

    first, second, agent = ServerMetrics(), ServerMetrics(), AgentMetrics()
    first.observe_controller_call("c:1", 200, 0.01)
    agent.plug_seconds.observe(0.2)
    assert _value(first.resource().text().decode(), "quantum_controller_requests_total", server="c:1", outcome="2xx") == 1
    assert b'server="c:1"' not in second.resource().text()
    assert b"process_cpu_seconds_total" in second.resource().text()
    assert b"restproxy_agent_plug_seconds_count 1.0" in generate_latest(agent.registry)
    assert b"quantum_" not in generate_latest(REGISTRY) and b"restproxy_agent_" not in generate_latest(REGISTRY)
