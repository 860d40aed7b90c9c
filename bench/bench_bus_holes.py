"""Event bus lag under other workers' rollbacks: how far behind its writes one bus falls.

Two stores on one database stand for two API workers. Every 0.25 s (of a Clock that drives the bus) the first
commits ``--per-step`` events and the second rolls one transaction back after it took a number (a hole the first's
bus cannot know is burnt, so it waits ``gap_timeout`` for it). After ``--seconds`` of writes it prints how many of
the committed events the bus had given out, and how many 1 s later. One timer for all holes (reset at each delivery)
passes one hole per 2 s: the lag grows with the run; a timer per hole keeps it near 2 s.

    .venv/bin/python bench/bench_bus_holes.py --backends postgresql,mariadb
    .venv/bin/python bench/compare.py 803e967 WORKTREE --bench-from after -- bench/bench_bus_holes.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.defer import Deferred, maybeDeferred  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from restproxy_testing.support import temporary_database  # noqa: E402
from server_plugin.channel.bus import EventBus  # noqa: E402
from server_plugin.store import agent_events, migrate  # noqa: E402
from server_plugin.store.db import Store  # noqa: E402


class _Inline:
    """The real store, its units of work run in the calling thread (the bus on a Clock drives it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(self, work: Any, *args: Any, readonly: bool = False, **kwargs: Any) -> Deferred[Any]:
        return maybeDeferred(self.store.run_sync, work, *args, readonly=readonly, **kwargs)

    def session_info(self, key: str, value: Any) -> None:
        self.store.session_info(key, value)


def _commit(session: Any, name: str) -> None:
    agent_events.record(session, "h1", agent_events.PORT_UPDATED, name, {"id": name})


def _rolled_back(session: Any) -> None:
    agent_events.record(session, "h1", agent_events.PORT_UPDATED, "undone", {})
    agent_events.flush(session)  # takes a number
    raise LookupError("undone")


def measure(backend: str, seconds: float, per_step: int) -> dict[str, object]:
    with temporary_database(backend) as url:
        mine, other = Store(url, reactor=Clock()), Store(url, reactor=Clock())
        migrate.upgrade(mine.engine)
        clock = Clock()
        bus = EventBus(_Inline(mine), clock, prune_interval=3600)  # type: ignore[arg-type]
        Deferred.fromCoroutine(bus.start())
        written = 0
        try:
            for step in range(int(seconds / 0.25)):
                for i in range(per_step):
                    mine.run_sync(_commit, f"e{step}-{i}")
                    written += 1
                    bus.nudge()
                try:
                    other.run_sync(_rolled_back)
                except LookupError:
                    pass
                clock.advance(0.25)
            at_end = bus.dispatched
            for _ in range(4):
                clock.advance(0.25)
            return {"backend": backend, "written": written, "given_out_at_end": at_end, "given_out_1s_later": bus.dispatched}
        finally:
            Deferred.fromCoroutine(bus.stop())
            mine.stop()
            other.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="postgresql,mariadb")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-step", type=int, default=4)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        print(json.dumps(measure(backend, args.seconds, args.per_step)), flush=True)


if __name__ == "__main__":
    main()
