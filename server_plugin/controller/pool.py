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

Connections are persistent (our own HTTP/1.1 connections, transport.py), every request has a timeout, and nothing here holds a lock:
calls run concurrently. Time (timeouts, the 503 backoff, the probes of failed
servers) runs on the injected reactor, and the HTTP agent can be injected too:
a ``Clock`` and treq's ``RequestTraversalAgent`` drive the pool in the fast
tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer

from restproxy_common.backoff import RetrySchedule, backoff_policy
from server_plugin import exceptions as exc
from server_plugin.controller.servers import ServerAddress, ServerHealth
from server_plugin.controller.transport import ConnectionsClient, ControllerClient, InvalidRequestTarget

FAILOVER_CODES = frozenset({0, 301, 302, 303, 400, 401, 403, 404}) | frozenset(range(500, 600))
NX_NETWORK = "NXVNS"

# (server "host:port", HTTP status or 0, seconds): what the pool reports of each call (ServerMetrics.observe_controller_call).
CallObserver = Callable[[str, int, float], None]


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
    retry_503_delay: float = 0.25  # then doubled after each 503 of the same call
    probe_interval: float = 5.0
    failed_probe_interval: float = 1.0  # a failed server is probed this often (capped by probe_interval): found back fast
    max_connections_per_server: int = 64

    def __attrs_post_init__(self) -> None:
        if not self.timeout > 0:  # (0 or less would let a hung controller hold a call forever)
            raise ValueError(f"controller call timeout {self.timeout!r} must be a positive number of seconds")

    def retry_503_policy(self) -> Callable[[int], float]:
        """The delay before retry ``n`` of a call answered 503: ``retry_503_delay * 2**n``."""
        delay = self.retry_503_delay
        return backoff_policy(delay, delay * 2 ** max(self.retry_503 - 1, 0), factor=2.0) if delay > 0 else _no_delay

    def probe_policy(self) -> Callable[[int], float]:
        """The delay before each probe of a failed server: every ``failed_probe_interval`` (capped by ``probe_interval``)."""
        interval = min(self.probe_interval, self.failed_probe_interval)
        return backoff_policy(interval, interval, factor=1.0) if interval > 0 else _no_delay  # (0: no probes at all)


def _no_delay(attempt: int) -> float:
    return 0.0


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
        observe: CallObserver | None = None,
        agent: Any = None,
    ) -> None:
        """``observe`` is told of every call (the server's metrics); ``agent`` (an ``IAgent``, e.g. treq's
        ``RequestTraversalAgent``) replaces the Agent over the persistent connections."""
        self.reactor = reactor
        self.settings = settings or PoolSettings()
        self.health = [ServerHealth(address) for address in servers]
        self._observe = observe or _ignore
        self._client: ConnectionsClient | ControllerClient
        if agent is None:
            self._client = ConnectionsClient(
                reactor, self._base_headers(), self.settings.use_ssl, tls_policy, self.settings.timeout,
                self.settings.max_connections_per_server, persistent,
            )  # fmt: skip
        else:
            self._client = ControllerClient(agent, reactor, self._base_headers(), self.settings.use_ssl)
        self._retry_503 = self.settings.retry_503_policy()
        self._probes: RetrySchedule[ServerAddress] = RetrySchedule(reactor, self.settings.probe_policy())
        self._probing = False
        self._probes_running: set[Deferred[None]] = set()
        # Called with a server that answers again after it failed (the watchdog checks what it lost).
        self.back_in_service: list[Callable[[ServerHealth], None]] = []

    def _base_headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "QuantumProxy-Agent": "QuantumRestProxy",
            "Instance-ID": self.settings.neutron_id,
            "Orchestration-Service-ID": "Quantum v2.0",
        }
        if self.settings.auth:
            token = base64.b64encode(self.settings.auth.encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return headers

    # -- lifecycle
    def start_probing(self) -> None:
        """Probe failed servers every second or so, so they come back without waiting for a failover."""
        if not self._probing and self.settings.probe_interval > 0:
            self._probing = True
            for health in self.health:
                if health.failed:
                    self._schedule_probe(health)

    async def close(self) -> None:
        """Stop probing (a probe under way is cancelled) and close the idle connections."""
        self._probing = False
        self._probes.cancel_all()
        for probe in list(self._probes_running):
            probe.cancel()
        await self._client.close()

    # -- calls
    def url(self, server: ServerAddress, path: str, base: str = BASE_URI) -> str:
        return self._client.url(server, path, base)

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
        for attempt in range(self.settings.retry_503 + 1):
            response = await self._send(health.address, method, path, body, timeout)
            if response.status != 503 or attempt == self.settings.retry_503:
                return response
            delay = self._retry_503(attempt)
            self.log.info(
                "controller {server} busy (503) on {method} {path}; retry {attempt} in {delay:.2f}s",
                server=str(health.address), method=method, path=path, attempt=attempt + 1, delay=delay,
            )  # fmt: skip
            await task.deferLater(self.reactor, delay)
        raise AssertionError("unreachable")

    async def _send(
        self, server: ServerAddress, method: str, path: str, body: Any, timeout: float | None, base: str = BASE_URI
    ) -> ControllerResponse:
        data: Any = None
        if IBodyProducer.providedBy(body):
            data = body
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
        started = self.reactor.seconds()
        try:
            reply = await self._client.request(server, method, path, base, data, timeout or self.settings.timeout)
            result = ControllerResponse(reply.status, reply.reason, reply.body, server)
        except InvalidRequestTarget as e:
            # Nothing was sent: the path is at fault, not the controller (not marked failed, not failed over).
            raise RemoteRestError(f"{method} {_snippet(path.encode('utf-8', 'replace'))}: {e}") from e
        except CancelledError:
            result = ControllerResponse(0, "timed out", b"", server)
        except Exception as e:  # connection refused/lost, TLS failure, DNS: all "no answer"
            result = ControllerResponse(0, _describe(e), b"", server)
        self._observe(str(server), result.status, self.reactor.seconds() - started)
        return result

    # -- health
    def _mark_ok(self, health: ServerHealth) -> None:
        health.requests += 1
        health.last_success_at = self.reactor.seconds()
        if health.failed:
            health.failed = False
            self._probes.reset(health.address)
            self.log.info("controller {server} is back in service", server=str(health.address))

    def _mark_failed(self, health: ServerHealth, response: ControllerResponse, method: str, path: str) -> None:
        health.requests += 1
        health.failures += 1
        health.last_error = f"{response.status} {response.reason}"
        health.last_error_status = response.status
        health.last_error_at = self.reactor.seconds()
        if not health.failed:
            health.failed = True
            self._schedule_probe(health)
        self.log.warn(
            "controller {server} failed {method} {path}: {error}; failing over",
            server=str(health.address), method=method, path=path, error=health.last_error,
        )  # fmt: skip

    def _schedule_probe(self, health: ServerHealth) -> None:
        if self._probing:
            self._probes.failed(health.address, lambda _: self._start_probe(health))

    def _start_probe(self, health: ServerHealth) -> None:
        probe = Deferred.fromCoroutine(self._probe(health))
        self._probes_running.add(probe)
        probe.addErrback(self._probe_crashed, health)
        probe.addBoth(lambda _: self._probes_running.discard(probe))

    def _probe_crashed(self, failure: Failure, health: ServerHealth) -> None:
        if not failure.check(CancelledError):
            self.log.failure("probe of {server} failed", failure, server=str(health.address))

    async def _probe(self, health: ServerHealth) -> None:
        """``GET /health`` on a failed server: any answer but a failure (a 409 included: it asks for
        a sync) puts it back, and so does any answer at all from one that had stopped answering (a
        controller without ``/health`` answers 404); the watchdog then looks at what it holds.
        Otherwise it is probed again later."""
        if not health.failed:
            return  # a call found it back meanwhile
        response = await self._send(health.address, "GET", "/health", None, None)
        answers_again = response.status != 0 and health.last_error_status == 0
        if response.status not in FAILOVER_CODES or response.lost_state or answers_again:
            self._mark_ok(health)
            for listener in self.back_in_service:
                listener(health)
        elif health.failed:
            self._schedule_probe(health)

    @property
    def active(self) -> ServerHealth | None:
        ordered = sorted(self.health, key=lambda h: h.failed)
        return ordered[0] if ordered and not ordered[0].failed else None

    def status(self) -> list[dict[str, object]]:
        active = self.active
        return [dict(h.as_dict(), active=h is active) for h in self.health]


def _ignore(server: str, status: int, seconds: float) -> None:
    """The observer of a pool nobody watches (restproxy-manage check, benchmarks)."""


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
