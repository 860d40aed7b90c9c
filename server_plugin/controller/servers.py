"""The controllers of a pool: parsing ``[RESTPROXY] servers`` and each server's health."""

from __future__ import annotations

import attrs


class ServerConfigError(ValueError):
    """``servers`` is empty or malformed; the message says which entry."""


@attrs.frozen
class ServerAddress:
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.netloc


def parse_servers(text: str) -> list[ServerAddress]:
    """``host:port[,host:port]*``; IPv6 as ``[addr]:port``. Order is kept (it is the preference)."""
    entries = [e.strip() for e in (text or "").split(",") if e.strip()]
    if not entries:
        raise ServerConfigError("Servers not defined. Aborting plugin")
    servers = []
    for entry in entries:
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ServerConfigError(f"Syntax error in server config: '{entry}' (IPv6 is [addr]:port)")
            port_text = rest[1:]
        else:
            host, sep, port_text = entry.rpartition(":")
            if not sep or not host or ":" in host:
                raise ServerConfigError(f"Syntax error in server config: '{entry}' (expected host:port)")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ServerConfigError(f"Syntax error in server config: '{entry}' (bad port)")
        servers.append(ServerAddress(host, int(port_text)))
    return servers


@attrs.define
class ServerHealth:
    """What the pool knows about one controller (shown by the status endpoint)."""

    address: ServerAddress
    failed: bool = False
    last_error: str | None = None
    last_error_status: int | None = None  # 0: no answer at all (refused, timed out, TLS)
    last_error_at: float | None = None
    last_success_at: float | None = None
    requests: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "server": str(self.address),
            "state": "failed" if self.failed else "ok",
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
            "requests": self.requests,
            "failures": self.failures,
        }
