"""What the controller saw: the last requests and running counts.

Tests assert on the wire, not on the plugin's intentions: which headers came (the exact
``Authorization``, ``Instance-ID``...), how many ``/topology`` PUTs a lost state caused
(exactly one, not a storm), what status each request got. Only controller requests are
recorded; ``/_sim/`` calls are not.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from typing import Any

from twisted.web.http_headers import Headers

from controller_sim import BASE_PATH

LOG_SIZE = 1000
BODY_LIMIT = 16 * 1024  # bodies up to this size are kept for ``?bodies=1``


class Recorder:
    def __init__(self, size: int = LOG_SIZE) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = 0
        self.reset_counts()

    def reset_counts(self) -> None:
        self.requests = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.topology_puts = 0
        self.dropped = 0
        self.client_gone = 0
        self.forgets = 0

    def start(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> dict[str, Any]:
        """Note a request as it arrives (it appears with ``status: null`` until answered).

        ``headers`` are kept as twisted.web parsed them and turned into a dict (lower-case names)
        only when the log is read: most requests of a benchmark are never looked at."""
        self._seq += 1
        self.requests += 1
        self.by_method[method] += 1
        if method == "PUT" and path.rstrip("/") == BASE_PATH + "/topology":
            self.topology_puts += 1
        entry: dict[str, Any] = {
            "seq": self._seq,
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "_headers": headers,
            "body_length": len(body),
            "status": None,
            "fault": None,
            "duration_ms": None,
            "_started": time.monotonic(),
            "_body": body if len(body) <= BODY_LIMIT else None,
        }
        self.entries.append(entry)
        return entry

    def finish(self, entry: dict[str, Any], status: int | None, fault: str | None = None) -> None:
        """Note how a request ended: its status, or None if dropped or the client left."""
        entry["status"] = status
        entry["fault"] = fault or entry["fault"]
        entry["duration_ms"] = round((time.monotonic() - entry["_started"]) * 1000, 3)
        if status is not None:
            self.by_status[str(status)] += 1
        elif fault == "drop":
            self.dropped += 1
        else:
            self.client_gone += 1

    def listing(self, since: int = 0, bodies: bool = False) -> list[dict[str, Any]]:
        out = []
        for entry in self.entries:
            if entry["seq"] <= since:
                continue
            item = {k: v for k, v in entry.items() if not k.startswith("_")}
            item["headers"] = header_dict(entry["_headers"])
            if bodies:
                item["body"] = _decode(entry["_body"])
            out.append(item)
        return out

    def clear(self) -> None:
        self.entries.clear()

    def counts(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_by_method": dict(sorted(self.by_method.items())),
            "responses_by_status": dict(sorted(self.by_status.items())),
            "topology_puts": self.topology_puts,
            "dropped": self.dropped,
            "client_gone": self.client_gone,
            "forgets": self.forgets,
        }


def header_dict(headers: Headers) -> dict[str, str]:
    """Request headers by lower-case name, repeated ones joined with ", "."""
    return {name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values) for name, values in headers.getAllRawHeaders()}


def _decode(body: bytes | None) -> Any:
    """A kept body as JSON when it is JSON, else as text; None when it was too big to keep."""
    if body is None:
        return None
    if not body:
        return ""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")
