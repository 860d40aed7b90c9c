"""Who may import whom: the agent needs nothing of the server, and no product path needs the test suite.

Checked on the source (every import statement, also inside functions), so that a new import
breaks this test rather than a compute host that runs only the agent.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from restproxy_testing.support import ROOT

NOT_TESTS = (
    "server_plugin", "restproxy_agent", "restproxy_dhcp", "restproxy_common", "restproxy_testing", "controller_sim", "scripts", "bench",
)  # fmt: skip
PRODUCT = ("server_plugin", "restproxy_agent", "restproxy_dhcp", "restproxy_common", "controller_sim")
FORBIDDEN = {
    # importer package: packages it must not import
    **{name: ("tests",) for name in NOT_TESTS},
    **{name: ("tests", "restproxy_testing") for name in PRODUCT},
    "restproxy_agent": ("tests", "restproxy_testing", "server_plugin", "controller_sim", "restproxy_dhcp"),
    # the DHCP agent reuses the host agent's plumbing and channel client, and nothing of the server
    "restproxy_dhcp": ("tests", "restproxy_testing", "server_plugin", "controller_sim"),
    "restproxy_common": ("tests", "restproxy_testing", "server_plugin", "restproxy_agent", "controller_sim"),
}


def imported_modules(path: str) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in the file at ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def python_files(package: str) -> list[str]:
    out = []
    for base, dirs, files in os.walk(os.path.join(ROOT, package)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return sorted(out)


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    bad = []
    for path in python_files(package):
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert python_files(package), f"no Python files under {package}/"
    assert violations(package) == []


def test_the_check_sees_imports_inside_functions(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef f():\n    from tests.support import ROOT\n    import server_plugin.metrics as m\n")
    assert imported_modules(str(path)) == [(1, "os"), (4, "tests.support"), (5, "server_plugin.metrics")]


AGENT_PROCESS = """
import json, os, sys, tempfile
from prometheus_client import REGISTRY, generate_latest
from restproxy_agent import agent_tap
path = os.path.join(tempfile.mkdtemp(), "agent.ini")
with open(path, "w") as f:
    f.write("[SERVER]\\nserver_url = https://127.0.0.1:9\\ntoken = t\\n[AGENT]\\nmetrics_port = 9\\n")
options = agent_tap.Options()
options.parseOptions(["--config", path])
agent_tap.makeService(options)
print(json.dumps({
    "server_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("server_plugin", "controller_sim", "tests")),
    "global_registry_has_agent_metrics": b"restproxy_agent_" in generate_latest(REGISTRY),
}))
"""


def test_an_agent_process_loads_nothing_of_the_server() -> None:
    """A fresh interpreter builds the agent's service (HTTPS to the server, metrics on): no server module is loaded."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", AGENT_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"server_modules": [], "global_registry_has_agent_metrics": False}


DHCP_AGENT_PROCESS = """
import json, os, sys, tempfile
from restproxy_dhcp import tap
path = os.path.join(tempfile.mkdtemp(), "dhcp.ini")
with open(path, "w") as f:
    f.write("[SERVER]\\nserver_url = https://127.0.0.1:9\\ntoken = t\\n[DHCP]\\nstate_path = dhcp\\n")
options = tap.Options()
options.parseOptions(["--config", path])
service = tap.makeService(options)
print(json.dumps({
    "server_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("server_plugin", "controller_sim", "tests")),
    "state_path": service.cfg.state_path == os.path.join(os.path.dirname(path), "dhcp"),
}))
"""


def test_a_dhcp_agent_process_loads_nothing_of_the_server() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", DHCP_AGENT_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"server_modules": [], "state_path": True}


def test_the_demo_without_open_vswitch_fails_clearly_and_installs_nothing(tmp_path) -> None:  # noqa: ANN001
    """Installing OVS is the bootstrap's job: the demo itself only says what is missing (no apt-get on its path)."""
    env = dict(os.environ, PYTHONPATH=ROOT, PATH=str(tmp_path))  # no ovs-vsctl, no apt-get, no ip
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "demo.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    if os.geteuid() == 0:
        assert "Open vSwitch is not installed" in result.stderr and "./run-demo.sh installs it" in result.stderr
        assert "ovsdb-server" in result.stderr
