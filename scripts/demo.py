"""A round trip through quantum-server on embedded defaults (SQLite, noauth).

Starts ``twistd -n quantum-server`` on 127.0.0.1 with a temporary state
directory, creates a network, a subnet and two ports, lists them, shows a
typed conflict, deletes everything and stops the server. Nothing is left
behind, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENANT = "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, (json.loads(raw) if raw else None)


def step(text: str) -> None:
    print(f"\n== {text}")


def show(method: str, path: str, status: int, body: Any, keys: tuple[str, ...] = ()) -> None:
    print(f"   {method} {path} -> {status}")
    if body and keys:
        for item in body.values() if isinstance(body, dict) else []:
            items = item if isinstance(item, list) else [item]
            for entry in items:
                if isinstance(entry, dict):
                    print("     " + ", ".join(f"{k}={entry.get(k)}" for k in keys))


def run(api: Api) -> None:
    step("create a network, a subnet and two ports")
    status, net = api.call("POST", "/v2.0/networks", {"network": {"name": "demo-net", "tenant_id": TENANT}})
    show("POST", "/v2.0/networks", status, net, ("id", "name", "status"))
    net_id = net["network"]["id"]
    status, subnet = api.call(
        "POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24", "tenant_id": TENANT}}
    )
    show("POST", "/v2.0/subnets", status, subnet, ("cidr", "gateway_ip", "allocation_pools"))
    ports = []
    for vm in ("vm-a", "vm-b"):
        status, port = api.call(
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": net_id, "device_id": vm, "binding:host_id": socket.gethostname(), "tenant_id": TENANT}},
        )
        show("POST", "/v2.0/ports", status, port, ("device_id", "mac_address", "fixed_ips", "status"))
        ports.append(port["port"])

    step("list them back (filters and fields)")
    path = f"/v2.0/ports?network_id={net_id}&fields=id&fields=mac_address&fields=fixed_ips"
    status, listed = api.call("GET", path)
    show("GET", path, status, listed, ("id", "mac_address", "fixed_ips"))

    step("conflicts are answered from the local store")
    taken = ports[0]["fixed_ips"][0]["ip_address"]
    status, err = api.call(
        "POST", "/v2.0/ports", {"port": {"network_id": net_id, "tenant_id": TENANT, "fixed_ips": [{"ip_address": taken}]}}
    )
    print(f"   POST /v2.0/ports with fixed IP {taken} -> {status} {json.dumps(err)}")
    status, err = api.call("DELETE", f"/v2.0/networks/{net_id}")
    print(f"   DELETE /v2.0/networks/{net_id} -> {status} {err['NeutronError']['type']}")

    step("clean up")
    for port in ports:
        status, _ = api.call("DELETE", f"/v2.0/ports/{port['id']}")
        print(f"   DELETE /v2.0/ports/{port['id']} -> {status}")
    status, _ = api.call("DELETE", f"/v2.0/networks/{net_id}")
    print(f"   DELETE /v2.0/networks/{net_id} -> {status}")
    status, left = api.call("GET", "/v2.0/networks")
    print(f"   networks left: {len(left['networks'])}")


def main() -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="qrp-demo-") as state:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        log_path = os.path.join(state, "server.log")
        config_path = os.path.join(state, "restproxy.ini")
        with open(config_path, "w") as f:
            f.write("[DEFAULT]\nauth_strategy = noauth\n[RESTPROXY]\nservers =\n")
        args = [
            twistd, "-n", "--pidfile=", "--logfile", log_path, "quantum-server",
            "--config", config_path,
            "--port", f"tcp:{port}:interface=127.0.0.1", "--state-path", state,
        ]  # fmt: skip
        print(f"starting quantum-server on 127.0.0.1:{port} (SQLite in {state})")
        server = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL)
        api = Api(f"http://127.0.0.1:{port}")
        try:
            for _ in range(100):
                try:
                    if api.call("GET", "/")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError("server did not start")
            run(api)
            print("\ndemo finished: OK")
            return 0
        except KeyboardInterrupt:
            print("\ninterrupted: cleaning up")
            return 130
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            with open(log_path) as f:
                tail = f.read().splitlines()[-8:]
            print("\nlast server log lines:\n   " + "\n   ".join(tail))


if __name__ == "__main__":
    sys.exit(main())
