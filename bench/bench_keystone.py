"""CPU per request that auth_strategy = keystone adds for a cached token, and the cost of an uncached one.

Two measurements:

* in-process: ``KeystoneAuth.context_for`` with a cached token vs ``NoAuth.context_for``
  (CPU time per call; the added cost with nothing else around it);
* end to end: a real Keystone (restproxy_testing/keystone.py, its own venv) and two
  quantum-servers on one SQLite database, noauth and keystone; N keep-alive
  ``GET /v2.0/networks/{id}`` each; server CPU ms per request (from /proc) and the
  latency of the first (uncached) request, one Keystone round trip.

    .venv/bin/python bench/bench_keystone.py --requests 3000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from restproxy_testing import keystone as ks  # noqa: E402
from restproxy_testing.support import ServerProcess, temporary_database  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Request:
    """Just what context_for reads."""

    def __init__(self, headers: dict[str, str]) -> None:
        from twisted.web.http_headers import Headers

        self.method = b"GET"
        self.path = b"/v2.0/networks"
        self.requestHeaders = Headers({k.encode(): [v.encode()] for k, v in headers.items()})


def in_process(calls: int) -> dict[str, float]:
    from twisted.internet.task import Clock

    from server_plugin.api.auth import KeystoneAuth, NoAuth
    from server_plugin.openstack.config import KeystoneAuthConfig
    from server_plugin.openstack.identity import Identity

    clock = Clock()
    clock.advance(time.time())
    conf = KeystoneAuthConfig(auth_url="http://127.0.0.1:1", username="u", password="p", project_name="service")
    auth = KeystoneAuth(conf, clock, http=object())
    token = uuid.uuid4().hex * 4
    auth.cache.put(token, Identity("user", "project", ("member", "reader"), clock.seconds() + 3600), clock.seconds())
    results = {}
    for name, strategy, headers in (
        ("noauth", NoAuth(), {"X-Tenant-Id": "project", "X-Roles": "member,reader"}),
        ("keystone_cached", auth, {"X-Auth-Token": token}),
    ):
        request = _Request(headers)
        started = time.process_time()
        for _ in range(calls):
            strategy.context_for(request)
        results[name] = (time.process_time() - started) / calls * 1e6
    return results


def _serve(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def end_to_end(requests: int) -> dict[str, Any]:
    password = "bench-" + uuid.uuid4().hex[:8]
    keystone = ks.Keystone().setup()
    try:
        keystone.user("neutron", password, "service", roles=("admin", "service"))
        keystone.user("bench", password, "bench-project")
        project = keystone.project("bench-project")
        config = f"""
[DEFAULT]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = {keystone.url}/v3
auth_url = {keystone.url}
username = neutron
password = {password}
project_name = service
token_cache_time = 300
"""
        with temporary_database("sqlite") as url:
            noauth = ServerProcess(url).start()
            secured = ServerProcess(url, config).start()
            try:
                _, body = noauth.request("POST", "/v2.0/networks", {"network": {"name": "bench", "tenant_id": project}})
                path = f"/v2.0/networks/{body['network']['id']}"
                token = keystone.token("bench", password, "bench-project")
                results: dict[str, Any] = {}
                first = http.client.HTTPConnection("127.0.0.1", secured.port, timeout=30)
                started = time.perf_counter()
                assert _serve(first, path, {"X-Auth-Token": token}) == 200
                results["uncached_first_request_ms"] = round((time.perf_counter() - started) * 1000, 2)  # + the service token
                another = keystone.token("bench", password, "bench-project")
                started = time.perf_counter()
                assert _serve(first, path, {"X-Auth-Token": another}) == 200
                results["uncached_request_ms"] = round((time.perf_counter() - started) * 1000, 2)  # one validation
                started = time.perf_counter()
                keystone.request("GET", "/v3/auth/tokens?nocatalog", headers={"X-Auth-Token": another, "X-Subject-Token": another})
                results["keystone_validation_alone_ms"] = round((time.perf_counter() - started) * 1000, 2)
                first.close()
                for name, server, headers in (
                    ("noauth", noauth, {"X-Tenant-Id": project}),
                    ("keystone_cached", secured, {"X-Auth-Token": token}),
                ):
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                    for _ in range(100):  # warm up
                        _serve(conn, path, headers)
                    assert server.proc is not None
                    cpu = _cpu_seconds(server.proc.pid)
                    started = time.perf_counter()
                    for _ in range(requests):
                        assert _serve(conn, path, headers) == 200
                    wall = time.perf_counter() - started
                    results[name] = {
                        "server_cpu_ms_per_request": round((_cpu_seconds(server.proc.pid) - cpu) / requests * 1000, 3),
                        "latency_ms": round(wall / requests * 1000, 3),
                    }
                    conn.close()
                added = results["keystone_cached"]["server_cpu_ms_per_request"] - results["noauth"]["server_cpu_ms_per_request"]
                results["added_cpu_ms_per_request"] = round(added, 3)
                return results
            finally:
                noauth.stop()
                secured.stop()
    finally:
        keystone.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per server (end to end)")
    parser.add_argument("--calls", type=int, default=200000, help="context_for calls (in process)")
    parser.add_argument("--no-e2e", action="store_true", help="only the in-process measurement (no Keystone)")
    args = parser.parse_args()
    micro = in_process(args.calls)
    report: dict[str, Any] = {
        "in_process_us_per_call": {k: round(v, 2) for k, v in micro.items()},
        "in_process_added_us": round(micro["keystone_cached"] - micro["noauth"], 2),
    }
    if not args.no_e2e:
        report["end_to_end"] = end_to_end(args.requests)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
