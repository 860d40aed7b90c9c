"""The database deadlines' socket duplicates: one per connection, not one per call, and let go with the connection."""

from __future__ import annotations

import gc
import os
import socket
import time

from server_plugin.store.deadlines import SocketDeadlines


class Conn:
    """A DBAPI connection as the deadlines see one: ``fileno()`` is its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def peer_sees_eof(peer: socket.socket, timeout: float = 2.0) -> bool:
    peer.settimeout(timeout)
    try:
        return peer.recv(1) == b""
    except TimeoutError:
        return False


def test_many_calls_on_one_connection_keep_one_duplicate() -> None:
    deadlines = SocketDeadlines()
    mine, peer = socket.socketpair()
    conn = Conn(mine)
    before = open_fds()
    for _ in range(50):
        with deadlines.limit(conn, 5.0) as call:
            assert call is not None and not call.cut
    assert open_fds() == before + 1
    deadlines.forget(conn)
    assert open_fds() == before
    for sock in (mine, peer):
        sock.close()


def test_a_closed_connection_lets_its_socket_go() -> None:
    """The duplicate must not keep the socket open once the driver closed it: the server would never see the close."""
    deadlines = SocketDeadlines()
    mine, peer = socket.socketpair()
    conn = Conn(mine)
    with deadlines.limit(conn, 5.0):
        pass
    mine.close()
    assert not peer_sees_eof(peer, 0.2)  # the duplicate holds it while the connection object lives
    del conn
    gc.collect()
    assert peer_sees_eof(peer)  # collected: the duplicate is closed
    peer.close()


def test_a_connection_on_a_new_socket_gets_a_new_duplicate_and_the_cut_reaches_it() -> None:
    deadlines = SocketDeadlines()
    first, first_peer = socket.socketpair()
    conn = Conn(first)
    with deadlines.limit(conn, 5.0):
        pass
    second, second_peer = socket.socketpair()
    conn.sock = second  # the driver connected anew
    first.close()
    started = time.monotonic()
    with deadlines.limit(conn, 0.2) as call:
        assert second.recv(1) == b""  # woken by the cut
    assert call is not None and call.cut and time.monotonic() - started < 2
    assert peer_sees_eof(first_peer)  # the old socket's duplicate was closed when the new one was seen
    for sock in (second, first_peer, second_peer):
        sock.close()


class SlottedConn:
    """A connection object that takes no weak reference: each call has a duplicate of its own."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


def test_a_connection_that_cannot_be_tracked_gets_a_duplicate_per_call_closed_after_it() -> None:
    deadlines = SocketDeadlines()
    mine, peer = socket.socketpair()
    conn = SlottedConn(mine)
    before = open_fds()
    for _ in range(20):
        with deadlines.limit(conn, 5.0):
            pass
    assert open_fds() == before
    with deadlines.limit(conn, 0.2) as call:
        assert mine.recv(1) == b""  # woken by the cut
    assert call is not None and call.cut
    deadline = time.monotonic() + 2
    while open_fds() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() == before  # the cut call's duplicate was closed by the watchdog
    for sock in (mine, peer):
        sock.close()
