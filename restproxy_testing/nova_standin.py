"""A stand-in for Nova's ``POST /v2.1/os-server-external-events``, with tokens checked by the real Keystone.

Run as a child (``NovaStandin``): ``python -m restproxy_testing.nova_standin PORT KEYSTONE_URL``.
Each request's X-Auth-Token is validated with ``GET /v3/auth/tokens`` (the token
validating itself); an unknown token gets 401, one without the ``admin`` or
``service`` role 403 (Nova's policy for external events). Accepted batches are
recorded and served at ``GET /recorded``: ``[{"events": [...], "user_id": ...}]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from restproxy_testing.support import ROOT, free_port


def main(port: int, keystone_url: str) -> None:
    import treq
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.web import resource, server

    batches: list[dict[str, Any]] = []

    async def who(token: str) -> dict[str, Any] | None:
        response = await treq.get(
            keystone_url + "/v3/auth/tokens?nocatalog", headers={"X-Auth-Token": token, "X-Subject-Token": token}, timeout=10
        )
        body = await treq.json_content(response) if response.code == 200 else None
        return body["token"] if body else None

    class Events(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader("Content-Type", "application/json")
            return json.dumps(batches).encode()

        def render_POST(self, request: Any) -> Any:
            ensureDeferred(self._post(request))
            return server.NOT_DONE_YET

        async def _post(self, request: Any) -> None:
            status, reply = await self._answer(request)
            request.setResponseCode(status)
            request.setHeader("Content-Type", "application/json")
            request.write(json.dumps(reply).encode())
            request.finish()

        async def _answer(self, request: Any) -> tuple[int, Any]:
            if request.path != b"/v2.1/os-server-external-events":
                return 404, {"itemNotFound": {"code": 404, "message": "no such path"}}
            token = (request.getHeader("X-Auth-Token") or "").strip()
            identity = await who(token) if token else None
            if identity is None:
                return 401, {"error": {"code": 401, "message": "The request you have made requires authentication."}}
            roles = {r["name"] for r in identity.get("roles", ())}
            if not roles & {"admin", "service"}:
                return 403, {"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:os-server-external-events:create"}}
            events = json.loads(request.content.read())["events"]
            batches.append({"events": events, "user_id": identity["user"]["id"], "at": time.time()})
            return 200, {"events": [dict(e, code=200) for e in events]}

    site = server.Site(Events())
    reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run()


class NovaStandin:
    """The stand-in as a child process on 127.0.0.1; ``stop``/``start`` keep its port (recorded batches are per run)."""

    def __init__(self, keystone_url: str) -> None:
        self.keystone_url = keystone_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="qrp-nova-")
        self.log_path = os.path.join(self._tmp.name, "nova.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.earlier: list[dict[str, Any]] = []  # batches recorded by the runs before a restart

    def start(self, timeout: float = 20) -> NovaStandin:
        args = [sys.executable, "-m", "restproxy_testing.nova_standin", str(self.port), self.keystone_url]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._recorded()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nova stand-in did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.earlier.extend(self._recorded())
            except OSError:
                pass
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def _recorded(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/recorded", timeout=10) as response:
            return list(json.loads(response.read()))

    def batches(self) -> list[dict[str, Any]]:
        """Every batch accepted so far, across restarts."""
        return self.earlier + (self._recorded() if self.proc else [])

    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches() for e in b["events"]]


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
