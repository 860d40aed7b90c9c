"""The composition root: options, and the service that listens on the given endpoint.

Used by ``twistd -n restproxy-controller-sim ...`` (through the drop-in in
``twisted/plugins/``) and by ``python -m controller_sim``. The endpoint is a Twisted
endpoint string, so TLS is ``ssl:8443:interface=127.0.0.1:privateKey=key.pem:certKey=cert.pem``
and port 0 picks a free port (reported as "listening on PORT").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from controller_sim.config import DEFAULT_PORT, FORGET_MODES, PROFILES, ConfigError, SimConfig, parse_auth, parse_capabilities
from controller_sim.server import make_site
from controller_sim.simulator import Simulator


class Options(usage.Options):
    optParameters = [
        ["port", "p", DEFAULT_PORT, "Listen endpoint (a Twisted endpoint string; tcp:0:... picks a free port)."],
        ["profile", None, "bigswitch", f"Controller to simulate: {' or '.join(PROFILES)}."],
        ["auth", None, None, "user:password: require HTTP Basic authentication on /networkService (not as floodlight, which has none)."],
        ["capabilities", None, None, "Comma-separated list for GET /capabilities (default floatingip,consistency,keep-alive)."],
        ["forget-mode", None, "conflict", f"After a forget: {' or '.join(FORGET_MODES)} (409 until a /topology PUT, or just empty)."],
        ["latency-ms", None, "0", "Milliseconds added to every controller request."],
    ]
    optFlags = [
        ["start-forgotten", None, "Start as right after a forget (a controller restarted empty)."],
    ]

    def postOptions(self) -> None:
        try:
            latency = float(self["latency-ms"])
        except ValueError:
            raise usage.UsageError("--latency-ms must be a number") from None
        try:
            self["sim_config"] = SimConfig(
                profile=self["profile"],
                auth=parse_auth(self["auth"]),
                capabilities=parse_capabilities(self["capabilities"]),
                forget_mode=self["forget-mode"],
                latency_ms=latency,
                start_forgotten=bool(self["start-forgotten"]),
            )
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class SimService(service.Service):
    """Listens on the endpoint when started; reports the port it got (port 0 is allowed)."""

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        simulator: Simulator,
        on_listening: Callable[[int], None] | None = None,
        on_failed: Callable[[Failure], None] | None = None,
        reactor: Any = None,
    ) -> None:
        self.endpoint = endpoint
        self.simulator = simulator
        self.on_listening = on_listening
        self.on_failed = on_failed
        self.listening: IListeningPort | None = None
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        site = make_site(self.simulator, self._reactor)
        d = endpoints.serverFromString(self._reactor, self.endpoint).listen(site)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.listening = port
        number = port.getHost().port
        self.log.info(
            "controller simulator ({profile}) listening on {endpoint} (port {port})",
            profile=self.simulator.config.profile,
            endpoint=self.endpoint,
            port=number,
        )
        if self.on_listening is not None:
            self.on_listening(number)

    def _failed(self, failure: Failure) -> None:
        self.log.failure("cannot listen on {endpoint}", failure, endpoint=self.endpoint)
        if self.on_failed is not None:
            self.on_failed(failure)
        elif self._reactor is not None and self._reactor.running:
            self._reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.listening is not None:
            port, self.listening = self.listening, None
            return port.stopListening()
        return None


def makeService(options: Options, reactor: Any = None) -> SimService:
    config: SimConfig = options["sim_config"]
    return SimService(options["port"], Simulator(config), reactor=reactor)
