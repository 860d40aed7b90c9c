"""``api_workers = N``: N processes serve one listening socket, supervised by the parent.

The parent (the ``twistd quantum-server`` the operator started) migrates the schema once, binds the
listening socket itself, and starts N workers with ``reactor.spawnProcess`` (an argv list, no shell):
each is the same ``twistd -n quantum-server`` with ``--listen-fd 3``, its fd 3 being the parent's
socket (``childFDs``). A worker adopts it (``reactor.adoptStreamPort``) instead of binding, and is
otherwise the whole server of today: its own store threads, controller pool, agent channel, metrics.
The kernel hands each new connection to one of the workers that accept on the shared socket, so
while one worker restarts the others keep accepting, and a connection waiting in the backlog is
never lost (the socket stays open in the parent and the other workers).

The workers coordinate through the database exactly as several servers on one database do (see the
README's "api_workers" section for what is shared and what each worker keeps to itself).

The parent restarts a worker that exits (after 1 s, doubling to 30 s while it keeps dying within
10 s of its start), and on SIGTERM sends SIGTERM to every worker and waits for them: each runs the
orderly shutdown of lifecycle.py (stop accepting, let the requests in flight end) within
``shutdown_grace_time``; one still there a few seconds past it is killed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure

from server_plugin.lifecycle import CLEANUP_MARGIN

log = Logger(namespace="server_plugin.workers")
WORKER_FD = 3  # the listening socket's number in each worker
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 10.0  # seconds: a worker that lived this long restarts after RESTART_DELAY again
BACKLOG = 1024


def parse_listen(description: str) -> tuple[str, int, str]:
    """(host, port, kind) of a ``tcp:PORT[:interface=HOST]`` or ``ssl:PORT[:interface=HOST]:...`` description."""
    parts: list[str] = []
    current, escaped = "", False
    for ch in description:
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    kind = parts[0]
    if kind not in ("tcp", "ssl") or len(parts) < 2:
        raise ValueError(f"api_workers needs a tcp: or ssl: listen endpoint, not {description!r}")
    host = "0.0.0.0"
    port: int | None = None
    for part in parts[1:]:
        if part.startswith("interface="):
            host = part.split("=", 1)[1]
        elif part.startswith("port="):
            port = int(part.split("=", 1)[1])
        elif "=" not in part and port is None:
            port = int(part)
    if port is None:
        raise ValueError(f"no port in {description!r}")
    return host, port, kind


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket that every worker accepts on (the parent never accepts on it)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def adopt(reactor: Any, fd: int, factory: Any) -> Any:
    """Listen on the inherited socket ``fd`` (a worker): the reactor's own port, on a dup of ``fd``."""
    family = socket.socket(fileno=os.dup(fd)).family  # the dup is closed with this socket object
    port = reactor.adoptStreamPort(fd, family, factory)
    os.close(fd)  # the reactor holds its own dup
    one_at_a_time(port)
    return port


def one_at_a_time(port: Any) -> None:
    """Accept one connection per wake-up, not up to 100: every worker wakes when a connection waits, and the
    one whose reactor is free first takes it, so persistent connections spread over the workers by load
    (Twisted's default lets the first worker awake take a whole burst of clients for itself)."""
    read = port.doRead

    def doRead() -> Any:
        port.numberAccepts = 1
        return read()

    port.doRead = doRead


class AdoptedPort(service.Service):
    """Serves ``factory`` on an inherited listening socket; stopping stops accepting (the socket stays with the others)."""

    def __init__(self, reactor: Any, fd: int, factory: Any) -> None:
        self.reactor = reactor
        self.fd = fd
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        self.port = adopt(self.reactor, self.fd, self.factory)
        log.info("worker {pid} accepting on the shared socket {address}", pid=os.getpid(), address=self.port.getHost())

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None


class ParentWatch(service.Service):
    """A worker stops (orderly) when its parent is gone: its stdin, a pipe from the parent, reads end-of-file.
    Without this a parent killed with SIGKILL would leave its workers serving, holding the port."""

    def __init__(self, reactor: Any, fd: int = 0) -> None:
        self.reactor = reactor
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "parent-watch"

    def doRead(self) -> Any:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError as e:
            return Failure(e)
        if not data:
            return CONNECTION_DONE
        return None

    def connectionLost(self, reason: Failure) -> None:
        if self.running:
            log.warn("worker {pid}: the parent is gone; stopping", pid=os.getpid())
            self.reactor.stop()

    def startService(self) -> None:
        super().startService()
        self.reactor.addReader(self)

    def stopService(self) -> None:
        super().stopService()
        self.reactor.removeReader(self)


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started_at = 0.0
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class WorkerSupervisor(service.Service):
    """Starts ``count`` workers on one listening socket, restarts the ones that die, stops them all on SIGTERM."""

    def __init__(self, reactor: Any, argv: list[str], sock: socket.socket, count: int, grace: float, prepare: Any = None) -> None:
        self.reactor = reactor
        self.argv = argv
        self.sock = sock
        self.count = count
        self.grace = grace
        self.prepare = prepare
        self.workers: dict[int, Any] = {}  # index -> IProcessTransport
        self.protocols: dict[int, _Worker] = {}
        self.delays: dict[int, float] = {}
        self.restarts = 0
        self._pending: dict[int, Any] = {}

    def startService(self) -> None:
        if self.prepare is not None:
            self.prepare()  # the schema, migrated once here rather than by N workers at once
        super().startService()
        log.info("starting {count} API workers on {address}", count=self.count, address=self.sock.getsockname())
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if not self.running:
            return
        proto = _Worker(self, index)
        proto.started_at = self.reactor.seconds()
        transport = self.reactor.spawnProcess(
            proto, self.argv[0], self.argv, env=os.environ.copy(), childFDs={0: "w", 1: 1, 2: 2, WORKER_FD: self.sock.fileno()}
        )
        self.workers[index] = transport
        self.protocols[index] = proto
        proto.pid = transport.pid
        log.info("API worker {index} started: pid {pid}", index=index, pid=transport.pid)

    def ended(self, proto: _Worker, reason: Failure) -> None:
        index = proto.index
        pid = proto.pid
        self.workers.pop(index, None)
        if not self.running:
            log.info("API worker {index} (pid {pid}) stopped", index=index, pid=pid)
            return
        lived = self.reactor.seconds() - proto.started_at
        delay = RESTART_DELAY if lived >= STABLE_AFTER else min(self.delays.get(index, RESTART_DELAY / 2) * 2, RESTART_DELAY_MAX)
        self.delays[index] = delay
        how = "exited" if reason.check(ProcessDone) else str(reason.value)
        log.warn(
            "API worker {index} (pid {pid}) ended after {lived:.1f} s ({how}): restarting in {delay:.1f} s",
            index=index, pid=pid, lived=lived, how=how, delay=delay,
        )  # fmt: skip
        self.restarts += 1
        self._pending[index] = self.reactor.callLater(delay, self._spawn, index)

    def pids(self) -> list[int]:
        return [t.pid for t in self.workers.values() if t.pid is not None]

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits = [p.ended for i, p in self.protocols.items() if i in self.workers]
        for transport in list(self.workers.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:
                pass
        done: Deferred[Any] = DeferredList(waits)
        killer = self.reactor.callLater(self.grace + 2 * CLEANUP_MARGIN, self._kill_all)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()
            self.sock.close()
            log.info("all API workers stopped")

        done.addCallback(finished)
        return done

    def _kill_all(self) -> None:
        for transport in list(self.workers.values()):
            log.warn("API worker pid {pid} still running past the grace time: killed", pid=transport.pid)
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass


def worker_argv(options: Any) -> list[str]:
    """The worker's command line: this twistd, in the foreground, with the parent's options and ``--listen-fd``."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    argv = [sys.executable, twistd, "-n", "--pidfile=", "--logfile=-", "quantum-server", "--listen-fd", str(WORKER_FD)]
    for key in ("config", "port", "sql-connection", "state-path"):
        if options[key]:
            argv += [f"--{key}", options[key]]
    return argv


__all__ = ["AdoptedPort", "WorkerSupervisor", "adopt", "bind_socket", "parse_listen", "worker_argv"]
