"""``./run-demo.sh --keystone``: the demo through a local Keystone and a stand-in Nova, leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import uuid

from restproxy_testing.support import ROOT
from tests.test_demo import TIMEOUT, _leftovers, ovs  # noqa: F401 - ovs is a fixture


def test_demo_with_keystone_and_nova(ovs: None) -> None:  # noqa: F811
    marker = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="qrp-test-demo-ks-") as tmpdir:
        env = dict(os.environ, QRP_DEMO_RUN=marker, TMPDIR=tmpdir, QRP_VENV=os.path.join(ROOT, ".venv"))
        proc = subprocess.Popen(
            [os.path.join(ROOT, "run-demo.sh"), "--keystone"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, out
        for pattern in (
            r"Keystone on http://127\.0\.0\.1:\d+/v3",
            r"GET /v2\.0/networks without a token -> 401",
            r"with a token of user demo \(project demo\) from Keystone -> 200",
            r"port A1 \(\S+\) is ACTIVE",
            r"got network-vif-plugged:\n(\s+server \w+ port \S+ status completed\n){3}",
            r"\$ restproxy-manage pool-status",
            r"got network-vif-deleted:\n(\s+server \w+ port \S+ status completed\n){3}",
            r"nothing left behind",
            r"demo finished: OK",
        ):
            assert re.search(pattern, out), f"{pattern!r} not in the output:\n{out}"
        assert _leftovers(out, tmpdir, marker) == [], out
