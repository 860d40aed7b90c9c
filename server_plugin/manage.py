"""restproxy-manage: operator commands: schema, controller pool status, topology sync, consistency check."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from server_plugin import config as config_mod
from server_plugin.controller.servers import ServerConfigError
from server_plugin.store import migrate
from server_plugin.store.db import Store, migration_engine


def _engine(args: argparse.Namespace):  # noqa: ANN202 - an Engine
    cfg = config_mod.load(args.config, {"sql_connection": args.sql_connection})
    return migration_engine(cfg.database_url, cfg.database_settings())


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = _engine(args)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, args.revision)
    after = migrate.current_revision(engine)
    print(f"schema: {before or '(empty)'} -> {after}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    engine = _engine(args)
    current, head = migrate.current_revision(engine), migrate.head_revision(engine)
    print(f"current: {current or '(empty)'}  head: {head}  {'up to date' if current == head else 'UPGRADE NEEDED'}")
    return 0 if current == head else 1


def _server_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url.rstrip("/")
    cfg = config_mod.load(args.config)
    host = "127.0.0.1" if cfg.bind_host in ("0.0.0.0", "::", "") else cfg.bind_host
    return f"http://{host}:{cfg.bind_port}"


def _admin_request(args: argparse.Namespace, method: str, path: str) -> Any:
    headers = {"Accept": "application/json"}
    token = args.token or os.environ.get("QRP_ADMIN_TOKEN", "")
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(_server_url(args) + path, method=method, headers=headers, data=b"" if method == "POST" else None)
    return urllib.request.urlopen(req, timeout=args.timeout)


def cmd_pool_status(args: argparse.Namespace) -> int:
    with _admin_request(args, "GET", "/admin/pool") as resp:
        status = json.load(resp)
    healthy = isinstance(status.get("controllers"), str) or all(s["state"] == "ok" for s in status["servers"])
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if healthy else 1
    if isinstance(status.get("controllers"), str):
        print(f"controllers: {status['controllers']}")
        return 0
    source = {"detected": " (detected)", "pending": " (not known: no controller has answered GET /capabilities yet; changes are refused)"}
    print(f"profile: {status['profile']}{source.get(status.get('profile_source', ''), '')}")
    for server in status["servers"]:
        mark = "*" if server["active"] else " "
        error = f"  last error: {server['last_error']}" if server["last_error"] else ""
        print(f" {mark} {server['server']:<28} {server['state']:<7} requests={server['requests']} failures={server['failures']}{error}")
    sync = status["sync"]
    last = sync.get("last") or {}
    print(f"sync: running={sync['running']} completed={sync['completed']} failed={sync['failed']} last={last.get('result', 'never')}")
    if last:
        print("      " + ", ".join(f"{k}={v}" for k, v in sorted(last.items()) if k != "result"))
    watchdog = status.get("watchdog")
    if watchdog:
        last = watchdog.get("last") or {}
        seen = f"last check: {last.get('server')} {last.get('result')} ({last.get('ms')} ms)" if last else "no check yet"
        print(f"watchdog: every {watchdog['interval']:g}s, {watchdog['checks']} checks, {watchdog['repairs']} repairs; {seen}")
    if status.get("journal"):
        print(f"unfinished controller calls: {len(status['journal'])}")
    return 0 if healthy else 1


def _bar(networks: int, ports: int, total: tuple[int, int] | None) -> str:
    if not total or not total[0]:
        return f"{networks} networks, {ports} ports"
    done = networks / total[0]
    filled = int(done * 30)
    return f"[{'#' * filled}{'.' * (30 - filled)}] {done:6.1%}  {networks}/{total[0]} networks, {ports} ports"


def cmd_sync(args: argparse.Namespace) -> int:
    total = None
    try:
        with _admin_request(args, "GET", "/admin/pool") as resp:
            last = (json.load(resp).get("sync") or {}).get("last") or {}
            total = (last.get("networks", 0), last.get("ports", 0))
    except (urllib.error.URLError, ValueError):
        pass
    result: dict[str, Any] = {}
    with _admin_request(args, "POST", "/admin/sync?wait=1") as resp:
        for line in resp:
            event = json.loads(line)
            if "progress" in event:
                progress = event["progress"] or {}
                sys.stderr.write("\r" + _bar(progress.get("networks", 0), progress.get("ports", 0), total))
                sys.stderr.flush()
            else:
                result = event
    last = result.get("last") or {}
    if result.get("result") == "ok":  # the last progress line may be a second old: end the bar where the sync ended
        sys.stderr.write("\r" + _bar(last.get("networks", 0), last.get("ports", 0), (last.get("networks", 0), last.get("ports", 0))))
    sys.stderr.write("\n")
    if result.get("result") == "ok":
        if "requests" in last:  # Floodlight: a replay of what differed
            print(
                f"sync ok: {last.get('networks')} networks, {last.get('ports')} attachments in the store; "
                f"{last.get('requests')} calls to {last.get('server')} in {last.get('seconds')}s"
            )
            return 0
        print(f"sync ok: {last.get('networks')} networks, {last.get('ports')} ports, {last.get('bytes')} bytes in {last.get('seconds')}s")
        return 0
    print(f"sync failed: {result.get('error')}")
    return 1


def _run_on_reactor(work: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``work(reactor)`` to its end on the reactor (the controller I/O is the server's own code, which is Twisted)."""
    from twisted.internet import reactor

    outcome: list[Any] = []
    d = ensureDeferred(work(reactor))
    d.addBoth(outcome.append)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.run(installSignalHandlers=False)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def cmd_check(args: argparse.Namespace) -> int:
    from server_plugin.controller.servers import parse_servers

    cfg = config_mod.load(args.config, {"sql_connection": args.sql_connection})
    servers = parse_servers(args.servers or cfg.servers)
    profile = args.profile or (cfg.controller_profile if cfg.controller_profile != "auto" else None)
    return _run_on_reactor(lambda reactor: _check(reactor, cfg, servers, profile, args.max_lines))


async def _check(reactor: Any, cfg: config_mod.ServerConfig, servers: list[Any], profile: str | None, max_lines: int) -> int:
    """Each controller against the store; the profile detected as the server detects it (controller/views.py)."""
    from server_plugin import consistency
    from server_plugin.controller import mapping, views
    from server_plugin.controller.service import build_pool

    pool = build_pool(cfg, servers, reactor)
    store = Store(cfg.database_url, reactor, settings=cfg.database_settings())
    try:
        if profile is None:
            profile, _ = await views.read_capabilities(pool)
            if profile is None:
                print("profile: cannot detect it: no controller answered GET /capabilities (is one up? or give --profile)")
                return 2
            print(f"profile: {profile} (detected: GET /capabilities)")
        # (the store's paged reads, in a thread: the reactor serves the controller calls)
        expected = await threads.deferToThread(consistency.expected_state, store, profile)
        expected_l3 = await threads.deferToThread(consistency.expected_l3, store, profile)
        worst = 0
        for health in pool.health:
            try:
                state = await consistency.read_state(pool, health, profile)
            except consistency.CannotRead as e:
                print(f"{health.address}: {e}")
                worst = max(worst, 2)
                continue
            problems = consistency.compare(expected, state["networks"], profile) + consistency.compare_l3(expected_l3, state)
            ports = sum(len(n.get("ports", {})) for n in expected.values())
            counts = f"{len(expected)} networks, {ports} {'attachments' if profile == mapping.FLOODLIGHT else 'ports'}"
            if expected_l3["routers"] or expected_l3["floatingips"]:
                counts += f", {len(expected_l3['routers'])} routers, {len(expected_l3['floatingips'])} floating IPs"
            if expected_l3["security_groups"]:
                groups = len(expected_l3["security_groups"])
                counts += f", {groups} security group{'s' if groups != 1 else ''}"
            if problems:
                print(f"{health.address}: {len(problems)} difference(s) from the store ({counts}):")
                for line in problems[:max_lines]:
                    print(f"  {line}")
                worst = max(worst, 1)
            else:
                print(f"{health.address}: consistent with the store ({counts})")
        return worst
    finally:
        store.stop()
        await pool.close()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="restproxy-manage", description=__doc__)
    top.add_argument("--config", "-c", help="path to restproxy.ini")
    top.add_argument("--sql-connection", help="database URL (overrides the config file)")
    sub = top.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    db.add_parser("current", help="show the schema revision").set_defaults(func=cmd_db_current)
    for name, func, text in (
        ("pool-status", cmd_pool_status, "controller pool health and the last sync (asks the running server)"),
        ("sync", cmd_sync, "send the whole topology to the controllers now, with a progress bar"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--url", help="quantum-server URL (default: from bind_host/bind_port)")
        cmd.add_argument("--token", help="admin token (auth_strategy = token or keystone; or QRP_ADMIN_TOKEN)")
        cmd.add_argument("--timeout", type=float, default=900.0)
        cmd.add_argument("--json", action="store_true", help="raw JSON")
        cmd.set_defaults(func=func)
    check = sub.add_parser(
        "check",
        help="compare the store with what each controller holds (exit 0: consistent, 1: differences, 2: cannot read or detect)",
    )
    check.add_argument("--servers", help="controllers to check (default: [RESTPROXY] servers)")
    check.add_argument("--profile", choices=["bigswitch", "floodlight"], help="default: [RESTPROXY] controller_profile; auto detects it")
    check.add_argument("--max-lines", type=int, default=50)
    check.set_defaults(func=cmd_check)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (config_mod.ConfigError, ServerConfigError) as e:
        print(f"restproxy-manage: {e}", file=sys.stderr)
        return 2
    except urllib.error.URLError as e:
        print(f"restproxy-manage: cannot reach the server: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
