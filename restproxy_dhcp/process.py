"""dnsmasq processes that outlive the agent: start, find again (adopt), check, reload, stop.

A dnsmasq is started with ``reactor.spawnProcess`` and an argv list:
``setsid ip netns exec qdhcp-<net> dnsmasq --keep-in-foreground ...``
(``setsid`` gives it its own session, so a signal to the agent's process
group or terminal does not reach it; ``ip netns exec`` enters the namespace
and execs dnsmasq in the same process, so the pid we get is dnsmasq's). Its
stdio is /dev/null and it logs to a file: nothing ties it to the agent, and
``kill -9`` of the agent leaves DHCP running. The pid goes to the network's
pid file; a restarted agent finds the process by that file and checks
``/proc/<pid>/cmdline`` names the same pid file (a recycled pid never
matches).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol, task
from twisted.logger import Logger


def write_atomic(path: str, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename; False (nothing written) if it is already so.

    dnsmasq (reloading on SIGHUP) sees the old file or the new one, never half of one. No fsync: the files
    are rebuilt from the server's state at every start, and a reactor must not wait for a disk.
    """
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def cmdline(pid: int) -> list[str]:
    """The process's argv ([] if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def running_pid(pid_file: str) -> int | None:
    """The pid in ``pid_file`` if that process is a live dnsmasq started with this pid file."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    return pid if f"--pid-file={pid_file}" in cmdline(pid) else None


class _Exit(protocol.ProcessProtocol):
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self.on_exit = on_exit
        self.pid = 0

    def connectionMade(self) -> None:
        self.pid = int(getattr(self.transport, "pid", 0) or 0)

    def processEnded(self, reason: Any) -> None:
        self.on_exit(self.pid)


class Launcher:
    """Starts and signals dnsmasq processes; ``on_exit(pid)`` hears of the children it started ending."""

    log = Logger()

    def __init__(self, reactor: Any, on_exit: Callable[[int], None]) -> None:
        self.reactor = reactor
        self.on_exit = on_exit
        self.setsid = shutil.which("setsid") or "/usr/bin/setsid"
        self.ip = shutil.which("ip") or "/usr/sbin/ip"

    def start(self, netns: str, args: list[str], pid_file: str) -> int:
        """Start ``args`` (dnsmasq's argv) in ``netns``; its pid is written to ``pid_file`` at once."""
        argv = [self.setsid, self.ip, "netns", "exec", netns, *args]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        null = os.open(os.devnull, os.O_RDWR)
        try:
            transport = self.reactor.spawnProcess(_Exit(self.on_exit), argv[0], argv, env=env, childFDs={0: null, 1: null, 2: null})
        finally:
            os.close(null)
        if not transport.pid:
            raise RuntimeError(f"dnsmasq for {netns} exited at once")
        pid = int(transport.pid)
        write_atomic(pid_file, f"{pid}\n")
        return pid

    def signal(self, pid: int, sig: int) -> bool:
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    async def stop(self, pid: int, pid_file: str, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
        if not self.signal(pid, signal.SIGTERM):
            return
        waited = 0.0
        while waited < grace:
            await task.deferLater(self.reactor, 0.02, lambda: None)
            waited += 0.02
            if f"--pid-file={pid_file}" not in cmdline(pid):
                return
        self.signal(pid, signal.SIGKILL)
        for _ in range(100):
            if f"--pid-file={pid_file}" not in cmdline(pid):
                return
            await task.deferLater(self.reactor, 0.02, lambda: None)
