"""Instructions per port create through the plugin and the store (no HTTP), counted by valgrind's callgrind.

On a loaded machine, CPU time per create drifts by tens of percent between runs; the instructions a create
executes do not. Each figure is the difference between two runs of a child process that differ only in the number
of creates measured (after the same warm-up), divided by that difference: start-up, imports, the schema and the
first statements' compilation cancel out. The child runs the real plugin and store (inline in one thread, on a
fresh database) with the security-groups extension, creating ports on one /16 network, with the tenant's default
group or none (``"security_groups": []``), bound to a host (``--host``) or not. The database server's own work
and the kernel's are not counted; the client side of each statement (the driver, SQLAlchemy) is.

    .venv/bin/python bench/bench_create_instructions.py --backends sqlite,postgresql
    .venv/bin/python bench/bench_create_instructions.py --backends postgresql --host h1
    .venv/bin/python bench/compare.py main HEAD --bench-from after -- bench/bench_create_instructions.py --backends sqlite

Prints one JSON line per backend and group mode (``minstr_per_create``: millions of instructions), then per
backend how much the default group adds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(backend: str, groups: str, host: str, warm: int, creates: int, journal: bool = False) -> None:
    """Run in the counted process: warm-up creates, then ``creates`` more."""
    from twisted.internet.defer import ensureDeferred, maybeDeferred
    from twisted.internet.task import Clock

    from restproxy_testing.support import temporary_database
    from server_plugin.context import RequestContext
    from server_plugin.extensions import Extensions
    from server_plugin.plugin import RestProxyPlugin, core_extension
    from server_plugin.sg_plugin import SecurityGroupPlugin, sg_extension
    from server_plugin.store import agent_events, migrate, mirror_ops
    from server_plugin.store.db import Store

    class InlineStore:
        """The real store, its units of work run inline (one thread, nothing else running)."""

        def __init__(self, url: str) -> None:
            self.store = Store(url, reactor=Clock())
            migrate.upgrade(self.store.engine)
            self.backend, self.health = self.store.backend, self.store.health

        def run(self, work: Any, *args: Any, readonly: bool = False, **kwargs: Any) -> Any:
            return maybeDeferred(self.store.run_sync, work, *args, readonly=readonly, **kwargs)

        def run_sync(self, work: Any, *args: Any, readonly: bool = False, **kwargs: Any) -> Any:
            return self.store.run_sync(work, *args, readonly=readonly, **kwargs)

    def done(coro: Any) -> Any:
        result: list[Any] = []
        ensureDeferred(coro).addBoth(result.append)
        if hasattr(result[0], "raiseException"):
            result[0].raiseException()
        return result[0]

    class Journaling:
        """The controller mirror's store transaction (``mirror_ops.journaled``: the journal entry, the events handed to
        the server's event bus), without controllers; entries stay open (the server closes them in batches)."""

        def __init__(self, store: InlineStore) -> None:
            self.store = store
            store.store.session_info(agent_events.SINK, lambda events: None)

        async def run(self, operation: Any) -> Any:
            (outcome, _), _ = await self.store.run(
                mirror_ops.journaled, operation.kind, operation.journal_ids, operation.op, lambda s: (operation.applied(s), None)
            )
            return outcome.reply

    admin = RequestContext.admin()
    with temporary_database(backend) as url:
        store = InlineStore(url)
        core = RestProxyPlugin(store, None, Journaling(store) if journal else None)  # type: ignore[arg-type]
        Extensions(core, [core_extension(core), sg_extension(SecurityGroupPlugin(core))])
        net = done(core.create_network(admin, {"network": {"tenant_id": "bench", "name": "bench"}}))
        subnet = {"tenant_id": "bench", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/16"}
        done(core.create_subnet(admin, {"subnet": subnet}))
        port: dict[str, Any] = {"tenant_id": "bench", "network_id": net["id"]}
        if groups == "none":
            port["security_groups"] = []
        if host:
            port["binding:host_id"] = host
        for _ in range(warm + creates):
            done(core.create_port(admin, {"port": dict(port)}))
        store.store.stop()


def _count(backend: str, groups: str, host: str, warm: int, creates: int, journal: bool = False) -> int:
    args = [sys.executable, os.path.abspath(__file__), "--child", backend, "--security-groups", groups, "--host", host]
    args += ["--journal"] if journal else []
    args += ["--warm", str(warm), "--creates", str(creates)]
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args], capture_output=True, text=True, check=False
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--security-groups", choices=("default", "none", "compare"), default="compare")
    parser.add_argument("--host", default="", help="bind every port to this host (binding:host_id)")
    parser.add_argument("--warm", type=int, default=20, help="creates before the counted ones (caches, compiled statements)")
    parser.add_argument("--creates", type=int, default=100, help="the counted creates: the difference of the two runs")
    parser.add_argument(
        "--journal", action="store_true", help="as the server with controllers: each create journaled, its events numbered for the bus"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.security_groups, args.host, args.warm, args.creates, args.journal)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    modes = ("none", "default") if args.security_groups == "compare" else (args.security_groups,)
    for backend in args.backends.split(","):
        per: dict[str, float] = {}
        for mode in modes:
            started = time.monotonic()
            base = _count(backend, mode, args.host, args.warm, 0, args.journal)
            more = _count(backend, mode, args.host, args.warm, args.creates, args.journal)
            per[mode] = (more - base) / args.creates / 1e6
            row = {"backend": backend, "security_groups": mode, "host": args.host or "-", "journal": "yes" if args.journal else "no"}
            row["minstr_per_create"] = round(per[mode], 3)
            print(json.dumps(dict(row, seconds=round(time.monotonic() - started, 1))), flush=True)
        if len(per) == 2:
            added = {
                "backend": backend,
                "host": args.host or "-",
                "default_group_adds_pct": round((per["default"] / per["none"] - 1) * 100, 1),
            }
            print(json.dumps(added), flush=True)


if __name__ == "__main__":
    main()
