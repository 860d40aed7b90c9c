"""Helpers for the agent channel tests: a server with agent tokens, the store's state, raw events, raw watch sockets."""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, insert

from restproxy_testing.support import ServerProcess

TOKENS = {
    "tok-h1": {"host": "h1", "kind": "agent"},
    "tok-h2": {"host": "h2", "kind": "agent"},
    "tok-dhcp1": {"host": "h1", "kind": "dhcp"},
    "tok-dhcp2": {"host": "h2", "kind": "dhcp"},
    "tok-admin": {"host": "", "kind": "admin"},
}


@contextmanager
def channel_server(db_url: str, extra: str = "", tokens: dict[str, dict[str, str]] | None = None) -> Iterator[ServerProcess]:
    """A quantum-server with the agent channel on (``extra``: more [AGENT] options)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "agents.json")
        with open(path, "w") as f:
            json.dump({"tokens": tokens or TOKENS}, f)
        config = f"[AGENT]\nagent_tokens_file = {path}\nagent_watch_heartbeat = 1\n{extra}"
        server = ServerProcess(db_url, config_text=config).start()
        try:
            yield server
        finally:
            server.stop()


def rpc(server: ServerProcess, method: str, body: Any, token: str) -> tuple[int, Any]:
    return server.request("POST", f"/agent/v1/rpc/{method}", body, headers={"X-Auth-Token": token})


def raw_request(server: ServerProcess, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int, Any]:
    """One HTTP/1.0 request written byte for byte (headers no client library would send); (status, JSON body or None)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head + (b"Content-Length: %d\r\n" % len(body) if body else b"") + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if time.monotonic() > deadline:
                raise TimeoutError("the response did not end (a stream?)")
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), (json.loads(payload) if payload.strip() else None)


def snapshot(server: ServerProcess) -> dict[str, Any]:
    """Everything an RPC could change, as the admin API shows it."""
    state = {}
    for collection in ("networks", "subnets", "ports", "agents"):
        status, body = server.request("GET", f"/v2.0/{collection}")
        assert status == 200, body
        state[collection] = sorted(body[collection], key=lambda item: item["id"])
    return state


def insert_events(db_url: str, host: str, count: int, payload_bytes: int = 1000) -> None:
    """``count`` port events for ``host`` written straight into the store, as another server would commit them."""
    from server_plugin.store.models import AgentEvent

    payload = json.dumps({"id": "p", "filler": "x" * payload_bytes}, sort_keys=True)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for start in range(0, count, 1000):
                rows = [
                    {"host": host, "kind": "port_updated", "object_id": f"p-{i}", "payload": payload, "created_at": now}
                    for i in range(start, min(start + 1000, count))
                ]
                conn.execute(insert(AgentEvent), rows)
    finally:
        engine.dispose()


def open_raw_watch(server: ServerProcess, host: str, since: int, token: str, rcvbuf: int = 4096) -> socket.socket:
    """A watch whose client never reads (a small receive buffer, as a stuck agent's)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"GET /agent/v1/hosts/{host}/watch?since={since} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    return s


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_idle(pid: int, quiet: float = 1.0, timeout: float = 60.0, busy: float = 0.05) -> None:
    """Until the process has used under ``busy`` of a core for ``quiet`` seconds (its work is done), or ``timeout``."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        start = cpu_ticks(pid)
        time.sleep(quiet)
        if cpu_ticks(pid) - start <= busy * quiet * hz:
            return
