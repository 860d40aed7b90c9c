"""A stand-in for the server's agent channel, for driving a real restproxy-agent with port and group dicts directly.

It serves what the agent uses (``GET /agent/v1/hosts/{host}/ports`` with ``security_groups``, the streaming
``/watch`` with heartbeats, ``POST /agent/v1/rpc/{method}``), holds the desired state the test sets
(``put_port``, ``put_group``, ...: each one an event on the watch, in order, as the contract says) and records
what the agent reported. ``on_up`` runs in the request's thread when the agent reports ports ACTIVE, before the
reply: a test can look at the switch at that exact moment. Test support only (threads, the stdlib HTTP server).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class FakeChannel:
    def __init__(self, host: str) -> None:
        self.host = host
        self.seq = 0
        self.ports: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}
        self.states: list[dict[str, Any]] = []  # report_state payloads
        self.on_up: Callable[[list[str]], None] | None = None
        self.cond = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeChannel:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.seq += 1  # wakes the watches; they end
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- desired state (each change is an event)
    def _event(self, kind: str, object_id: str, payload: dict[str, Any]) -> int:
        with self.cond:
            self.seq += 1
            self.events.append({"type": "event", "seq": self.seq, "kind": kind, "object_id": object_id, "payload": copy.deepcopy(payload)})
            self.cond.notify_all()
            return self.seq

    def put_port(self, port: dict[str, Any]) -> int:
        kind = "port_updated" if port["id"] in self.ports else "port_attached"
        self.ports[port["id"]] = copy.deepcopy(port)
        return self._event(kind, port["id"], port)

    def delete_port(self, port_id: str) -> int:
        port = self.ports.pop(port_id)
        return self._event("port_detached", port_id, port)

    def put_group(self, group: dict[str, Any]) -> int:
        self.groups[group["id"]] = copy.deepcopy(group)
        return self._event("security_group_updated", group["id"], group)

    def put_member(self, group_id: str, port_id: str, addresses: list[str]) -> int:
        """One port's addresses in a group (``[]``: it left), as the server sends a member change (SG_CONTRACT.md)."""
        group = self.groups[group_id]
        ports = group.setdefault("ports", {})
        if addresses:
            ports[port_id] = sorted(set(addresses))
        else:
            ports.pop(port_id, None)
        group["members"] = sorted({a for held in ports.values() for a in held})
        return self._event("security_group_member", group_id, {"id": group_id, "port_id": port_id, "addresses": sorted(set(addresses))})

    def delete_group(self, group_id: str) -> int:
        self.groups.pop(group_id, None)
        return self._event("security_group_deleted", group_id, {"id": group_id})

    def wait_status(self, port_ids: list[str], status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.cond:
                states = {p: self.status.get(p) for p in port_ids}
                if all(s == status for s in states.values()):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"ports not {status}: {states}")
                self.cond.wait(min(left, 0.2))

    # -- HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        channel = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, body: Any, code: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path.endswith("/ports"):
                    with channel.cond:
                        body = {"seq": channel.seq, "host": channel.host, "ports": copy.deepcopy(list(channel.ports.values())),
                                "security_groups": copy.deepcopy(list(channel.groups.values()))}  # fmt: skip
                    self._json(body)
                elif url.path.endswith("/watch"):
                    self._watch(int(parse_qs(url.query).get("since", ["0"])[0]))
                else:
                    self._json({"NeutronError": {"type": "HTTPNotFound", "message": self.path}}, 404)

            def _watch(self, since: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                sent = since
                try:
                    while True:
                        with channel.cond:
                            pending = [e for e in channel.events if e["seq"] > sent]
                            if not pending:
                                channel.cond.wait(1.0)
                                pending = [e for e in channel.events if e["seq"] > sent]
                        for e in pending:
                            self.wfile.write(json.dumps(e).encode() + b"\n")
                            sent = e["seq"]
                        if not pending:
                            self.wfile.write(json.dumps({"type": "heartbeat", "seq": sent}).encode() + b"\n")
                        self.wfile.flush()
                except OSError:
                    return

            def do_POST(self) -> None:
                method = urlparse(self.path).path.rsplit("/", 1)[1]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if method == "update_device_list":
                    ups = list(body.get("devices_up", []))
                    if channel.on_up is not None:
                        channel.on_up(ups)
                    with channel.cond:
                        for p in ups:
                            channel.status[p] = "ACTIVE"
                        channel.cond.notify_all()
                    self._json({"result": {"devices_up": ups, "failed_devices_up": []}})
                elif method == "update_device_down":
                    with channel.cond:
                        channel.status[body["device"]] = "DOWN"
                        channel.cond.notify_all()
                    self._json({"result": {"device": body["device"], "exists": True}})
                elif method == "report_state":
                    channel.states.append(body.get("agent_state", {}))
                    self._json({"result": {}})
                else:
                    self._json({"result": {}})

        return Handler
