"""One simulated controller: its profile, fault rules and recorder, behind one object.

The web layer and the admin API share it, so that a fault armed through ``/_sim/faults`` or
a ``forget`` is seen by the very next controller request.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from controller_sim.bigswitch import BigSwitchController
from controller_sim.config import SimConfig
from controller_sim.faults import FaultInjector
from controller_sim.floodlight import FloodlightController
from controller_sim.recorder import Recorder
from controller_sim.replies import Reply
from controller_sim.request import ControllerRequest


class Controller(Protocol):
    profile: str
    needs_sync: bool

    async def handle(self, req: ControllerRequest) -> Reply: ...

    def forget(self, mode: str | None = None) -> None: ...

    def snapshot(self, raw: bool = False) -> dict[str, Any]: ...

    def counts(self) -> dict[str, int]: ...

    def stats(self) -> dict[str, Any]: ...


def make_controller(config: SimConfig) -> Controller:
    if config.profile == "floodlight":
        return FloodlightController()
    return BigSwitchController(config)


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.controller = make_controller(config)
        self.faults = FaultInjector()
        self.recorder = Recorder()
        self.started = time.monotonic()

    def forget(self, mode: str | None = None) -> None:
        self.recorder.forgets += 1
        self.controller.forget(mode)

    def stats(self) -> dict[str, Any]:
        injected = dict(sorted(self.faults.injected.items()))
        return {
            "profile": self.controller.profile,
            "uptime_s": round(time.monotonic() - self.started, 3),
            **self.recorder.counts(),
            "faults_injected": injected,
            "faults_injected_total": self.faults.affected,
            "faults_active": len(self.faults.rules),
            "hung_now": self.faults.hung_now,
            **self.controller.stats(),
        }
