"""A loopback TCP proxy that a test switches between forwarding, refusing and black-holing.

It stands between a server under test and a real database to play the network faults an
operator meets: ``refuse()`` closes the listener and resets every open connection (a
database that is down: connects get ECONNREFUSED); ``blackhole()`` keeps accepting but
forwards nothing, in either direction, also on connections already open (a partition:
connects and queries hang); ``forward()`` heals it (frozen connections carry on where
they stopped, as TCP does after a partition heals).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

Mode = Literal["forward", "refuse", "blackhole"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a host whose database died does.

    ``shutdown(SHUT_RD)`` first wakes a thread blocked on the socket: until that thread
    leaves its system call, ``close()`` alone would release nothing (and send nothing).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class TCPProxy:
    """``127.0.0.1:<port>`` -> ``target``; one thread per direction of each connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "forward"
        self.accepted = 0
        self._cond = threading.Condition()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._listen()

    # -- switching
    def forward(self) -> None:
        with self._cond:
            self.mode = "forward"
            self._cond.notify_all()
        self._listen()

    def blackhole(self) -> None:
        with self._cond:
            self.mode = "blackhole"
            self._cond.notify_all()
        self._listen()

    def refuse(self) -> None:
        with self._cond:
            self.mode = "refuse"
            listener, self._listener = self._listener, None
            open_, self._open = self._open, set()
            self._cond.notify_all()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, so the port really closes
            except OSError:
                pass
            listener.close()
        for sock in open_:
            _reset(sock)

    def close(self) -> None:
        self.refuse()

    # -- plumbing
    def _listen(self) -> None:
        with self._cond:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse()
            with self._cond:
                self.accepted += 1
                self._open.add(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True, name="proxy-conn").start()

    def _wait_forward(self) -> bool:
        """Block while black-holed; False once refused (the connection is gone)."""
        with self._cond:
            while self.mode == "blackhole":
                self._cond.wait()
            return self.mode == "forward"

    def _connect(self, client: socket.socket) -> None:
        if not self._wait_forward():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            return
        with self._cond:
            if client not in self._open:
                upstream.close()
                return
            self._open.add(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            # Hold what was read while black-holed: it goes on after forward(), or nowhere after refuse().
            if not self._wait_forward():
                return
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
