"""What the host-side agents' twistd plugins share (restproxy-agent, restproxy-dhcp-agent): the same command-line
overrides of their INI file, and the same start-up logging."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver
from twisted.python import usage

from restproxy_common.ini import log_ignored


def agent_options(
    ini_name: str, load: Callable[[str | None, dict[str, Any]], Any], error: type[Exception], key: str
) -> type[usage.Options]:
    """``usage.Options`` with ``--config`` (``ini_name``) and the host, server and OVSDB overrides; the loaded config
    goes to ``options[key]``, and a config that ``load`` refuses with ``error`` is a usage error."""

    class Options(usage.Options):
        optParameters = [
            ["config", "c", None, f"Path to {ini_name}."],
            ["host", None, None, "This host's name (overrides [DEFAULT] host)."],
            ["server-url", None, None, "quantum-server URL (overrides [SERVER] server_url)."],
            ["ovsdb", None, None, "OVSDB endpoint, unix:PATH or tcp:HOST:PORT (overrides [OVS] ovsdb_connection)."],
        ]

        def postOptions(self) -> None:
            overrides = {"host": self["host"], "server_url": self["server-url"], "ovsdb_connection": self["ovsdb"]}
            try:
                self[key] = load(self["config"], overrides)
            except error as e:
                raise usage.UsageError(str(e)) from None

    return Options


def start_logging(log_format: str, ignored_options: Any, namespace: str) -> None:
    """JSON lines on stdout if asked (``log_format = json``), and each INI option the agent ignored, once."""
    if log_format == "json":
        globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    log_ignored(Logger(namespace=namespace), ignored_options)
