"""The pool of redundant controllers: one REST call, failed over between servers.

Semantics of the original plugin (facts §3), done without its bugs: 2xx is
success; connection errors, timeouts, 301-303, 400/401/403/404 and 5xx fail
over to the next server; 503 is first retried on the same server with
backoff; the server that worked stays first until it fails (a per-server
``failed`` flag, never a mutated shared list); when every server failed the
caller gets RemoteRestError with the *first* server's status and reason. A
409, or a 404 naming a network the controller must know (``NXVNS``), means the
controller lost its state: that is not failed over but reported as
ControllerLostState, so that the caller re-syncs it.

Connections are persistent (treq over one HTTPConnectionPool), every request
has a timeout, and nothing here holds a lock: calls run concurrently.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import treq
from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer

from server_plugin import exceptions as exc
from server_plugin import metrics
from server_plugin.controller.servers import ServerAddress, ServerHealth

FAILOVER_CODES = frozenset({0, 301, 302, 303, 400, 401, 403, 404}) | frozenset(range(500, 600))
NX_NETWORK = "NXVNS"


class RemoteRestError(exc.QuantumException):
    status = 500
    message = "Error in REST call to remote network controller: %(reason)s"

    def __init__(self, reason: str, http_status: int = 0) -> None:
        super().__init__(reason=reason)
        self.reason = reason
        self.http_status = http_status


@attrs.frozen
class ControllerResponse:
    status: int  # 0: no HTTP answer (connection error, timeout, TLS failure)
    reason: str
    body: bytes = b""
    server: ServerAddress | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, UnicodeDecodeError):
            return None  # a 2xx with a bad body is still a success

    @property
    def lost_state(self) -> bool:
        return self.status == 409 or (self.status == 404 and NX_NETWORK.encode() in self.body)


class ControllerLostState(Exception):
    """The controller answered but no longer has the state it must have."""

    def __init__(self, response: ControllerResponse) -> None:
        super().__init__(f"{response.server} lost its state ({response.status} {response.reason})")
        self.response = response


@attrs.frozen
class PoolSettings:
    auth: str = ""  # "user:password" for HTTP Basic; empty: no header
    use_ssl: bool = False
    timeout: float = 10.0
    neutron_id: str = "Quantum-restproxy"
    retry_503: int = 3
    retry_503_delay: float = 0.25
    probe_interval: float = 5.0
    failed_probe_interval: float = 1.0  # a failed server is probed this often (capped by probe_interval): found back fast
    max_connections_per_server: int = 64


BASE_URI = "/networkService/v1.1"


class ServerPool:
    """Sends REST calls to the first healthy controller, failing over in order."""

    log = Logger()

    def __init__(
        self,
        servers: Iterable[ServerAddress],
        reactor: Any,
        settings: PoolSettings | None = None,
        tls_policy: Any = None,
        persistent: bool = True,
    ) -> None:
        self.reactor = reactor
        self.settings = settings or PoolSettings()
        self.health = [ServerHealth(address) for address in servers]
        self._connections = HTTPConnectionPool(reactor, persistent=persistent)
        self._connections.maxPersistentPerHost = self.settings.max_connections_per_server
        agent_kwargs: dict[str, Any] = {"pool": self._connections, "connectTimeout": self.settings.timeout}
        if tls_policy is not None:
            agent_kwargs["contextFactory"] = tls_policy
        self._client = treq.client.HTTPClient(Agent(reactor, **agent_kwargs))
        self._headers = self._base_headers()
        self._probe: task.LoopingCall | None = None
        # Called with a server that answers again after it failed (the watchdog checks what it lost).
        self.back_in_service: list[Callable[[ServerHealth], None]] = []

    def _base_headers(self) -> dict[str, list[str]]:
        headers = {
            "Content-Type": ["application/json"],
            "Accept": ["application/json"],
            "QuantumProxy-Agent": ["QuantumRestProxy"],
            "Instance-ID": [self.settings.neutron_id],
            "Orchestration-Service-ID": ["Quantum v2.0"],
        }
        if self.settings.auth:
            token = base64.b64encode(self.settings.auth.encode()).decode("ascii")
            headers["Authorization"] = [f"Basic {token}"]
        return headers

    # -- lifecycle
    def start_probing(self) -> None:
        """Probe failed servers every second or so, so they come back without waiting for a failover."""
        if self._probe is None and self.settings.probe_interval > 0:
            self._probe = task.LoopingCall(self._probe_failed)
            self._probe.clock = self.reactor
            interval = min(self.settings.probe_interval, self.settings.failed_probe_interval)
            self._probe.start(interval, now=False).addErrback(lambda f: self.log.failure("controller probe loop stopped", f))

    async def close(self) -> None:
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        self._probe = None
        await self._connections.closeCachedConnections()

    # -- calls
    def url(self, server: ServerAddress, path: str, base: str = BASE_URI) -> str:
        scheme = "https" if self.settings.use_ssl else "http"
        return f"{scheme}://{server.netloc}{base}{path}"

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        ignore_codes: Iterable[int] = (),
        timeout: float | None = None,
    ) -> ControllerResponse:
        """One call, failed over between servers; raises RemoteRestError or ControllerLostState."""
        ignore = set(ignore_codes)
        first_failure: ControllerResponse | None = None
        for health in sorted(self.health, key=lambda h: h.failed):
            response = await self._call_with_retries(health, method, path, body, timeout)
            if response.ok or response.status in ignore:
                self._mark_ok(health)
                return response
            if response.lost_state and not (method == "DELETE" and response.status == 404):
                # (A DELETE's 404 NXVNS means the object is gone already; its 409 asks for a sync as any call's.)
                self._mark_ok(health)
                raise ControllerLostState(response)
            if response.status not in FAILOVER_CODES:
                # The server answered and is healthy; it refused this request.
                self._mark_ok(health)
                raise RemoteRestError(f"{response.status} {response.reason}: {_snippet(response.body)}", response.status)
            self._mark_failed(health, response, method, path)
            first_failure = first_failure or response
        assert first_failure is not None, "a pool always has at least one server"
        raise RemoteRestError(f"{first_failure.status} {first_failure.reason}", first_failure.status)

    async def request_server(
        self, health: ServerHealth, method: str, path: str, body: Any = None, timeout: float | None = None, base: str = BASE_URI
    ) -> ControllerResponse:
        """One call to one given server (syncs, capability checks); ``base=""`` for a path outside the API."""
        return await self._send(health.address, method, path, body, timeout, base)

    async def call(
        self, health: ServerHealth, method: str, path: str, body: Any = None, timeout: float | None = None, probe: bool = False
    ) -> ControllerResponse:
        """One call to one given server that counts for its health: no answer, or an answer the pool fails
        over on, marks it failed (``pool-status`` shows it); any other answer marks it ok. A ``probe`` only
        asks whether it answers: any HTTP answer (a 404 from a controller without ``/health``) is ok."""
        response = await self._send(health.address, method, path, body, timeout)
        failed = response.status == 0 if probe else response.status in FAILOVER_CODES and not response.lost_state
        if failed:
            self._mark_failed(health, response, method, path)
        else:
            self._mark_ok(health)
        return response

    async def _call_with_retries(
        self, health: ServerHealth, method: str, path: str, body: Any, timeout: float | None
    ) -> ControllerResponse:
        delay = self.settings.retry_503_delay
        for attempt in range(self.settings.retry_503 + 1):
            response = await self._send(health.address, method, path, body, timeout)
            if response.status != 503 or attempt == self.settings.retry_503:
                return response
            self.log.info(
                "controller {server} busy (503) on {method} {path}; retry {attempt} in {delay:.2f}s",
                server=str(health.address), method=method, path=path, attempt=attempt + 1, delay=delay,
            )  # fmt: skip
            await task.deferLater(self.reactor, delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def _send(
        self, server: ServerAddress, method: str, path: str, body: Any, timeout: float | None, base: str = BASE_URI
    ) -> ControllerResponse:
        data: Any = None
        if IBodyProducer.providedBy(body):
            data = body
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
        started = time.monotonic()
        try:
            response = await self._client.request(
                method,
                self.url(server, path, base),
                headers=self._headers,
                data=data,
                timeout=timeout if timeout is not None else self.settings.timeout,
                allow_redirects=False,
            )
            content = await treq.content(response)
            reason = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) else str(response.phrase)
            result = ControllerResponse(response.code, reason, content, server)
        except CancelledError:
            result = ControllerResponse(0, "timed out", b"", server)
        except Exception as e:  # connection refused/lost, TLS failure, DNS: all "no answer"
            result = ControllerResponse(0, _describe(e), b"", server)
        metrics.observe_controller_call(str(server), result.status, time.monotonic() - started)
        return result

    # -- health
    def _mark_ok(self, health: ServerHealth) -> None:
        health.requests += 1
        health.last_success_at = time.time()
        if health.failed:
            health.failed = False
            self.log.info("controller {server} is back in service", server=str(health.address))

    def _mark_failed(self, health: ServerHealth, response: ControllerResponse, method: str, path: str) -> None:
        health.requests += 1
        health.failures += 1
        health.last_error = f"{response.status} {response.reason}"
        health.last_error_status = response.status
        health.last_error_at = time.time()
        if not health.failed:
            health.failed = True
        self.log.warn(
            "controller {server} failed {method} {path}: {error}; failing over",
            server=str(health.address), method=method, path=path, error=health.last_error,
        )  # fmt: skip

    async def _probe_failed(self) -> None:
        """``GET /health`` on each failed server: any answer but a failure (a 409 included: it asks for
        a sync) puts it back, and so does any answer at all from one that had stopped answering (a
        controller without ``/health`` answers 404); the watchdog then looks at what it holds."""
        for health in [h for h in self.health if h.failed]:
            response = await self._send(health.address, "GET", "/health", None, None)
            answers_again = response.status != 0 and health.last_error_status == 0
            if response.status not in FAILOVER_CODES or response.lost_state or answers_again:
                self._mark_ok(health)
                for listener in self.back_in_service:
                    listener(health)

    @property
    def active(self) -> ServerHealth | None:
        ordered = sorted(self.health, key=lambda h: h.failed)
        return ordered[0] if ordered and not ordered[0].failed else None

    def status(self) -> list[dict[str, object]]:
        active = self.active
        return [dict(h.as_dict(), active=h is active) for h in self.health]


def _describe(error: Exception) -> str:
    """A short cause for logs and the status endpoint ("timed out", "Connection refused", ...)."""
    causes: list[BaseException] = [error]
    if getattr(error, "reasons", None):  # twisted ResponseFailed / RequestTransmissionFailed wrap Failures
        causes = [r.value for r in error.reasons]
    if any(isinstance(c, CancelledError) for c in causes):
        return "timed out"
    return "; ".join(str(c) or type(c).__name__ for c in causes)[:200]


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")
