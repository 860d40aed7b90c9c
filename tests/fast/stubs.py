"""In-process controllers for the fast tier: the simulator's own resource behind ``StubTreq``, on a ``Clock``."""

from __future__ import annotations

from typing import Any

from treq.testing import RequestTraversalAgent, _SynchronousProducer
from twisted.internet.task import Clock
from twisted.web import resource, server
from twisted.web.iweb import IBodyProducer

from controller_sim.config import SimConfig
from controller_sim.server import SimResource
from controller_sim.simulator import Simulator
from restproxy_testing.inline_store import InlineStore as RealInlineStore
from server_plugin.controller.pool import PoolSettings, ServerPool
from server_plugin.controller.servers import parse_servers


class ByPort(resource.Resource):
    """Several simulators on one StubTreq: a request goes to the one on its URL's port."""

    isLeaf = True

    def __init__(self, sims: dict[int, SimResource]) -> None:
        super().__init__()
        self.sims = sims

    def render(self, request: server.Request) -> Any:
        return self.sims[request.getHost().port].render(request)


class Controllers:
    """Simulators on ports 1, 2, ... and a pool over them, all on one Clock."""

    def __init__(self, count: int = 2, settings: PoolSettings | None = None, **config: Any) -> None:
        self.clock = Clock()
        self.sims = {port: Simulator(SimConfig(**config)) for port in range(1, count + 1)}
        self.agent = RequestTraversalAgent(ByPort({port: SimResource(sim, self.clock) for port, sim in self.sims.items()}))
        # The pool's own request path over an in-memory agent (StubTreq's), the streamed /topology included.
        self.calls: list[tuple[str, int, float]] = []
        servers = parse_servers(",".join(f"127.0.0.1:{port}" for port in self.sims))
        self.pool = ServerPool(
            servers, self.clock, settings or PoolSettings(), observe=lambda *call: self.calls.append(call), agent=self.agent
        )

    def fault(self, port: int, **rule: Any) -> None:
        self.sims[port].faults.add(rule)

    def requests(self, port: int) -> int:
        return self.sims[port].recorder.requests

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock on in small steps, flushing the in-memory connections after each."""
        self.agent.flush()
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            self.agent.flush()
            elapsed += step


def body_producer(data: Any) -> Any:
    """treq's data -> a body: bytes at once (as StubTreq), a producer as it is."""
    return data if IBodyProducer.providedBy(data) else _SynchronousProducer(data)


class InlineStore(RealInlineStore):
    """A real store (SQLite in a temporary file, the real schema) whose units of work run inline: results
    are ready at once, so a Clock alone drives what uses it. The threaded store is tested by the second tier."""

    def __init__(self, path: str) -> None:
        from server_plugin.store import migrate
        from server_plugin.store.db import Store

        store = Store(f"sqlite:///{path}", reactor=Clock())
        migrate.upgrade(store.engine)
        super().__init__(store)

    def close(self) -> None:
        self.store.stop()
