"""restproxy-manage: operator commands (database schema for now)."""

from __future__ import annotations

import argparse
import sys

from server_plugin import config as config_mod
from server_plugin.store import migrate
from server_plugin.store.db import make_engine


def _engine(args: argparse.Namespace):  # noqa: ANN202 - an Engine
    cfg = config_mod.load(args.config, {"sql_connection": args.sql_connection})
    return make_engine(cfg.database_url)


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
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except config_mod.ConfigError as e:
        print(f"restproxy-manage: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
