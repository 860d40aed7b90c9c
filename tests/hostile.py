"""Test plumbing for hostile requests: exact bytes on a socket, and a digest of the whole database.

``send`` writes a request as given (any method, any header bytes, any body)
and reads the answer; ``StoreDigest`` hashes every row of every table
straight from the database, so "nothing changed" is checked without the API.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any

from sqlalchemy import create_engine, select

from server_plugin.store.models import Base


def build(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None = None) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send(port: int, data: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """One request as raw bytes over a new connection; (status, headers, JSON body or text or None)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    body: Any = None
    if payload:
        try:
            body = json.loads(payload)
        except ValueError:
            body = payload.decode("latin-1")
    return status, headers, body


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


class StoreDigest:
    """A hash of every row of every table of the server's database."""

    def __init__(self, db_url: str) -> None:
        self.engine = create_engine(db_url)
        self.tables = sorted(Base.metadata.tables.values(), key=lambda t: t.name)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.connect() as conn:
            return {t.name: sorted((tuple(map(repr, r)) for r in conn.execute(select(t))), key=repr) for t in self.tables}

    def __call__(self) -> str:
        return hashlib.sha256(repr(self.rows()).encode()).hexdigest()

    def close(self) -> None:
        self.engine.dispose()
