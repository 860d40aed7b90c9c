"""The tests' side of the OVS sandbox: install Open vSwitch when missing, and the module-scoped fixture.

The sandbox itself is ``restproxy_testing.ovs_sandbox`` (it installs nothing). Here, a
missing Open vSwitch is installed with apt-get, and a host where that is impossible fails
the test with the reason: a host without OVS must fail CI, never pass it by skipping the
agent's tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from restproxy_testing.ovs_sandbox import OVS_PACKAGES, OvsSandbox, missing_binaries, ovs_unavailable


def install_ovs() -> str | None:
    """Install Open vSwitch if it is missing, without starting the system service. Returns why it can't, or None."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return f"Open vSwitch is not installed ({', '.join(missing_binaries())} missing) and we are not root"
    if shutil.which("apt-get") is None:
        return "Open vSwitch is not installed and apt-get is not available"
    policy, added = "/usr/sbin/policy-rc.d", False
    if not os.path.exists(policy):  # keep the package scripts from starting the system OVS
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        added = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        cmd = ["apt-get", "install", "-y", "-q", *OVS_PACKAGES]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return f"apt-get install {' '.join(OVS_PACKAGES)} failed: {r.stderr.strip()[-400:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get install failed: {e}"
    finally:
        if added:
            os.unlink(policy)
    missing = missing_binaries()
    return f"still missing after install: {', '.join(missing)}" if missing else None


def require_ovs(what: str = "the OVS sandbox") -> None:
    """Install Open vSwitch if needed; a missing OVS or root fails the test (CI must not pass without these tests)."""
    reason = install_ovs()
    if reason:
        pytest.fail(f"Open vSwitch unavailable: {reason}", pytrace=False)
    reason = ovs_unavailable(what)
    if reason:
        pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="module")
def ovs_sandbox() -> Iterator[OvsSandbox]:
    """A started OvsSandbox shared by one test module; fails (never skips) if Open vSwitch can't be had."""
    require_ovs()
    sandbox = OvsSandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
    leftovers = sandbox.leftovers()
    assert not leftovers, f"the OVS sandbox left things behind: {leftovers}"
