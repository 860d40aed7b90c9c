"""Linux links for VIFs through pyroute2 (netlink): taps, veths into network namespaces, deletion.

Netlink calls block for as long as the kernel works on them (a veth deletion
takes ≈20 ms, RCU), and pyroute2's sync ``IPRoute`` cannot run under Twisted's
asyncio reactor at all (reference/ovs-plumbing-facts.md §4). So the blocking
functions below are only ever called by ``Links``, which runs them in its own
small thread pool and returns Deferreds: the reactor never waits, whatever
reactor it is. Each call opens its own short-lived ``IPRoute`` (≈0.5 ms).

Namespaces without a fork: pyroute2 opens a socket in another namespace by
forking a child (≈80 ms of a VIF's plug on a loaded host). Here the veth is
made by one netlink request with its peer already in the namespace
(``net_ns_fd``) and the peer's MAC and MTU set; what must happen inside the
namespace (offload, up, ``lo`` up, listing its devices, making it) runs in a
``NetnsThread``: a fresh thread that ``setns``-es itself (only that thread
moves) and ends afterwards.

TX checksum offload (facts §5, §7.5): on the userspace (netdev) datapath, TCP
between two veth "VMs" fails because the VM side sends packets with a partial
checksum that the AF_PACKET path forwards as they are; ping hides it. By
default ``create_veth_into_netns`` switches TX checksumming off on the VM side
with pyroute2's ethtool ioctl (``ETHTOOL_STXCSUM``, what ``ethtool -K IF tx
off`` does) inside the namespace, before the peer goes up. A tap is opened by a
hypervisor, whose virtio offloads are its own business, so taps are left
alone. The other fix is OVS-wide: ``other_config:userspace-tso-enable=true``
plus an ovs-vswitchd restart; then pass ``tx_checksum=True``.

Names: ``device_name(port_id)`` is ``tap`` + 11 characters of the port id (14
characters, as nova does; Linux allows 15); ``peer_name(port_id)`` is ``tpi`` +
the same 11.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import queue
import signal
import socket
import struct
import threading
import time
from collections.abc import Collection
from typing import Any

import attrs
from pyroute2 import IPRoute, netns
from pyroute2.ethtool.ioctl import IoctlEthtool
from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from restproxy_agent.netns_policy import NetnsRefused, check_contents, check_name

IFNAMSIZ = 15


def device_name(port_id: str) -> str:
    """The host device of a VIF: ``tap`` + the first 11 characters of the port id."""
    return "tap" + port_id[:11]


def peer_name(port_id: str) -> str:
    """The VM end of a veth VIF: ``tpi`` + the first 11 characters of the port id."""
    return "tpi" + port_id[:11]


class LinkError(Exception):
    """A netlink operation failed; ``code`` is the errno (17 EEXIST, 19 ENODEV, 34 ERANGE for a long name...)."""

    def __init__(self, op: str, name: str, code: int | None, message: str) -> None:
        super().__init__(f"{op} {name}: {message}" + (f" (errno {code})" if code else ""))
        self.op, self.name, self.code = op, name, code


@attrs.frozen
class LinkInfo:
    name: str
    index: int
    kind: str | None
    mac: str | None
    mtu: int | None
    up: bool


def _check_name(name: str) -> None:
    if not name or len(name) > IFNAMSIZ:
        raise LinkError("check", name, errno.ERANGE, f"interface names are 1-{IFNAMSIZ} characters")


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _info(link: Any) -> LinkInfo:
    return LinkInfo(
        name=link.get_attr("IFLA_IFNAME"),
        index=link["index"],
        kind=_kind(link),
        mac=link.get_attr("IFLA_ADDRESS"),
        mtu=link.get_attr("IFLA_MTU"),
        up=bool(link["flags"] & 1),
    )


def _get(ipr: IPRoute, name: str) -> Any | None:
    """The link called ``name`` (one RTM_GETLINK by name), or None."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise LinkError("get", name, e.code, str(e)) from e


def _index(name: str) -> int | None:
    """``name``'s ifindex in the calling thread's namespace (an ioctl: no netlink dump, no RTNL lock), or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _netlink(op: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NetlinkError as e:
        raise LinkError(op, name, e.code, str(e)) from e


# -- blocking operations (run in the Links thread pool) ------------------------------------------------------------
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002


def _add_tap(name: str) -> None:
    """A persistent tap made with the tun driver's ioctls (what pyroute2's ``kind="tuntap"`` does, without its request machinery)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as e:
        raise LinkError("add tap", name, e.errno, e.strerror or str(e)) from e
    finally:
        os.close(fd)


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags (the union padded to 24 bytes)
SIOCSIFMTU, SIOCSIFHWADDR = 0x8922, 0x8924
ARPHRD_ETHER = 1
IFREQ_MTU = struct.Struct("16si20x")  # struct ifreq: the name, then ifr_mtu
IFREQ_HWADDR = struct.Struct("16sH6s16x")  # struct ifreq: the name, then ifr_hwaddr (a sockaddr: family, 6 bytes, padding)


def _set_new_tap(name: str, mac: str | None, mtu: int | None, up: bool) -> None:
    """A tap just made (down): its MAC and MTU, then up if asked, each by one ioctl on a socket (no netlink socket,
    no pyroute2 request: in a burst, building those took more of the GIL than the kernel took making the taps)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            if mac:
                fcntl.ioctl(sock, SIOCSIFHWADDR, IFREQ_HWADDR.pack(name.encode(), ARPHRD_ETHER, bytes.fromhex(mac.replace(":", ""))))
            if mtu:
                fcntl.ioctl(sock, SIOCSIFMTU, IFREQ_MTU.pack(name.encode(), mtu))
            if up:
                _, flags = IFREQ_FLAGS.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, IFREQ_FLAGS.pack(name.encode(), 0)))
                fcntl.ioctl(sock, SIOCSIFFLAGS, IFREQ_FLAGS.pack(name.encode(), flags | IFF_UP))
        except OSError as e:
            raise LinkError("set", name, e.errno or 0, e.strerror or str(e)) from e


def create_tap_sync(name: str, mac: str | None, mtu: int | None, up: bool = True) -> LinkInfo:
    """A persistent tap (as os-vif's ``create_tap``), with the MAC and MTU, up (or ``up=False``: down). An existing tap is updated.

    A new tap costs only ioctls (two to make it persistent, one each for the
    MAC, the MTU and, if asked, up): a burst of 500 taps spends its time in the
    kernel, not in building and decoding netlink requests. An existing one is
    read and set by netlink.
    """
    _check_name(name)
    if _index(name) is None and mac and mtu:
        _add_tap(name)
        index = _index(name)
        if index is None:
            raise LinkError("add tap", name, errno.ENODEV, "made but not found")
        _set_new_tap(name, mac, mtu, up)
        return LinkInfo(name=name, index=index, kind="tun", mac=mac.lower(), mtu=mtu, up=up)
    with IPRoute() as ipr:
        index, link = _index(name), None
        if index is None:
            _add_tap(name)
            index = _index(name)
            if index is None:
                raise LinkError("add tap", name, errno.ENODEV, "made but not found")
        else:
            link = _get(ipr, name)
            if link is None:
                raise LinkError("add tap", name, errno.ENODEV, "vanished while being updated")
            if _kind(link) != "tun":
                raise LinkError("add tap", name, errno.EEXIST, f"exists as a {_kind(link)} device")
        attrs_ = {"state": "up" if up else "down"}
        if mac:
            attrs_["address"] = mac
        if mtu:
            attrs_["mtu"] = mtu
        _netlink("set", name, ipr.link, "set", index=index, **attrs_)
        if mac and mtu:
            return LinkInfo(name=name, index=index, kind="tun", mac=mac.lower(), mtu=mtu, up=up)
        return _info(_get(ipr, name))


def _tx_checksum_off(ifname: str) -> None:
    """``ethtool -K IF tx off`` through pyroute2's ioctl; acts in the calling thread's namespace."""
    eth = IoctlEthtool(ifname)
    try:
        eth.set_offload_flag("tx-checksumming", 0)
    finally:
        eth.close()


def _same_namespace(path: str, other: str) -> bool:
    try:
        a, b = os.stat(path), os.stat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# -- namespaces without a fork --------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int, namespace: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise LinkError("setns", namespace, code, os.strerror(code))


def _enter_or_create(namespace: str, create: bool) -> bool:
    """Move the calling thread into ``namespace`` (made if missing and ``create``); True if it was made here.

    Only this thread moves (network namespaces are per thread on Linux). A new
    namespace is ``unshare(CLONE_NEWNET)`` of this thread bind-mounted at
    /run/netns/NAME as ``ip netns add`` does, with ``/proc/thread-self`` (not
    ``/proc/self``, the main thread's). A mount point seen before its bind
    mount (another thread is making the same namespace) is waited for.
    """
    path = os.path.join(netns.NETNS_RUN_DIR, namespace)
    for attempt in range(200):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if not create:
                raise LinkError("netns", namespace, errno.ENOENT, "no such network namespace") from None
            if _libc.unshare(CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise LinkError("netns add", namespace, code, os.strerror(code)) from None
            try:
                netns._create(namespace, pid="thread-self")  # the mount point (O_EXCL) and its bind mount; no unshare, no fork
                return True
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise LinkError("netns add", namespace, e.errno, str(e)) from e
                continue  # made meanwhile by another thread: join that one (setns below, next round)
        try:
            if _libc.setns(fd, CLONE_NEWNET) == 0:
                return False
            code = ctypes.get_errno()
        finally:
            os.close(fd)
        if code != errno.EINVAL or attempt == 199:  # EINVAL: a bare mount point, its bind mount not yet there
            raise LinkError("setns", namespace, code, os.strerror(code))
        time.sleep(0.005)
    raise AssertionError("unreachable")


class NetnsThread:
    """A short-lived thread inside one network namespace that runs calls for its caller (instead of a forked child).

    pyroute2 forks a child to open a netlink socket in another namespace
    (≈80 ms per VIF on a busy host). ``setns`` on a thread moves only that
    thread, and sockets stay in the namespace they were made in, so a fresh
    thread that enters the namespace, runs ``call(fn, ...)`` there (an
    ``IPRoute()``, an ethtool ioctl) and ends, costs about 0.1 ms and never
    touches the caller's (a pool thread's) namespace. ``fd`` is an open
    descriptor of the namespace (for ``net_ns_fd``); ``created``: it was made now.
    """

    def __init__(self, namespace: str, create: bool = True) -> None:
        self.namespace = namespace
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(create, ready), name=f"netns {namespace}", daemon=True)
        self._thread.start()
        status = ready.get()
        if isinstance(status, BaseException):
            self._thread.join()
            raise status
        self.created: bool = status
        self.fd = os.open(os.path.join(netns.NETNS_RUN_DIR, namespace), os.O_RDONLY)

    def _run(self, create: bool, ready: queue.SimpleQueue[Any]) -> None:
        try:
            ready.put(_enter_or_create(self.namespace, create))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            ready.put(e)
            return
        while (item := self._calls.get()) is not None:
            fn, args, kwargs, answer = item
            try:
                answer.put((True, fn(*args, **kwargs)))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                answer.put((False, e))

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` run inside the namespace; its result, or its exception raised here."""
        answer: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._calls.put((fn, args, kwargs, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()
        os.close(self.fd)

    def __enter__(self) -> NetnsThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_not_host(namespace: str) -> None:
    """An existing namespace must not be the host's own (an alias made with ``ip netns attach NAME 1``)."""
    path = os.path.join(netns.NETNS_RUN_DIR, namespace)
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
        if _same_namespace(path, own):
            raise NetnsRefused(namespace, "it is the host's own network namespace")


def _check_contents_here(namespace: str, ours: Collection[str] | None) -> None:
    """(In the namespace's thread.) It holds only ``lo`` and our VIF ends: see netns_policy."""
    with IPRoute() as ns:
        check_contents(namespace, (link.get_attr("IFLA_IFNAME") or "" for link in ns.get_links()), ours)


def _peer_up_here(peer: str, name: str, namespace: str, settings: dict[str, Any], tx_checksum: bool) -> None:
    """(In the namespace's thread.) The VM end: TX checksum offload off unless asked, MAC/MTU, up; ``lo`` up."""
    index = _index(peer)
    if index is None:
        raise LinkError("add veth", peer, errno.ENODEV, f"{name} exists but its peer is not in namespace {namespace}")
    if not tx_checksum:
        _tx_checksum_off(peer)
    with IPRoute() as ns:
        _netlink("set", peer, ns.link, "set", index=index, state="up", **settings)
        lo = _index("lo")
        if lo is not None:
            ns.link("set", index=lo, state="up")


def create_veth_into_netns_sync(
    name: str,
    peer: str,
    namespace: str,
    mac: str | None,
    mtu: int | None,
    tx_checksum: bool = False,
    up: bool = True,
    ours: Collection[str] | None = None,
) -> LinkInfo:
    """A veth: ``name`` stays here (for OVS), ``peer`` gets the MAC/MTU and goes up inside ``namespace``.

    The namespace name must pass ``netns_policy.check_name``'s syntax (pyroute2
    takes a name with ``/`` for a path to any namespace) and a namespace that
    exists already must be neither the host's own nor hold devices that are not
    ours (``ours``: the VIF ends it may hold besides ``lo``, by default any
    ``tpi...``), else ``NetnsRefused`` before anything is made; a missing one
    is created. The IP is left to the caller. The pair is made by one netlink
    request with the peer already in the namespace and its MAC and MTU set;
    the namespace side (offload, up) runs in a ``NetnsThread``: no process is
    forked. With ``tx_checksum=False`` (default) TX checksum offload is
    switched off on the peer (see the module docstring) before it goes up.
    ``up=False`` leaves the host end down (an administratively down port passes
    no traffic). An existing ``name`` whose peer is already in the namespace
    is updated instead (idempotent); a half-made pair is removed on failure.
    """
    for n in (name, peer):
        _check_name(n)
    check_name(namespace, deny=())
    settings = {k: v for k, v in (("address", mac), ("mtu", mtu)) if v}
    with NetnsThread(namespace) as ns:
        if not ns.created:
            _check_not_host(namespace)
            ns.call(_check_contents_here, namespace, None if ours is None else {*ours, peer})
        with IPRoute() as ipr:
            created = _index(name) is None
            if not created:
                host = _get(ipr, name)
                if host is not None and _kind(host) != "veth":
                    raise LinkError("add veth", name, errno.EEXIST, f"exists as a {_kind(host)} device")
            state = {"state": "up" if up else "down", **({"mtu": mtu} if mtu else {})}
            try:
                if created:
                    stale = _index(peer)  # a peer named like ours, left here by an interrupted attempt
                    if stale is not None:
                        _netlink("del", peer, ipr.link, "del", index=stale)
                    vm_end = {"ifname": peer, "net_ns_fd": ns.fd, **settings}
                    _netlink("add veth", name, ipr.link, "add", ifname=name, kind="veth", peer=vm_end, **state)
                    ns.call(_peer_up_here, peer, name, namespace, settings, tx_checksum)
                else:
                    p = _index(peer)  # left here by an earlier attempt that stopped before the move
                    if p is not None:
                        _netlink("move to " + namespace, peer, ipr.link, "set", index=p, net_ns_fd=ns.fd)
                    ns.call(_peer_up_here, peer, name, namespace, settings, tx_checksum)
                    _netlink("set", name, ipr.link, "set", index=_get(ipr, name)["index"], **state)
            except Exception:
                if created:
                    idx = ipr.link_lookup(ifname=name)
                    if idx:
                        ipr.link("del", index=idx[0])
                raise
            return _info(_get(ipr, name))


def set_link_up_sync(name: str, up: bool) -> bool:
    """Set ``name`` administratively up or down; False if there is no such link.

    Two ioctls (read the flags, write them with IFF_UP changed), as ``ip link set`` amounts to: a new VIF's host
    end goes up on the path to ACTIVE, where an IPRoute socket and a netlink request cost ~10x more.
    """
    _check_name(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            _, flags = IFREQ_FLAGS.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, IFREQ_FLAGS.pack(name.encode(), 0)))
            wanted = flags | IFF_UP if up else flags & ~IFF_UP
            if wanted != flags:
                fcntl.ioctl(sock, SIOCSIFFLAGS, IFREQ_FLAGS.pack(name.encode(), wanted))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return False
            raise LinkError("set", name, e.errno or 0, str(e)) from e
    return True


def delete_link_sync(name: str) -> bool:
    """Delete a link (a veth takes its peer with it). True if it existed, False if it was already gone."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return False
        try:
            ipr.link("del", index=idx[0])
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return False
            raise LinkError("del", name, e.code, str(e)) from e
        return True


def _link_info_here(name: str) -> LinkInfo | None:
    with IPRoute() as ipr:
        link = _get(ipr, name)
        return _info(link) if link is not None else None


def link_info_sync(name: str, namespace: str | None = None) -> LinkInfo | None:
    """``name``'s LinkInfo here or in ``namespace`` (which must exist: it is not created), or None."""
    if not namespace:
        return _link_info_here(name)
    check_name(namespace, deny=())
    with NetnsThread(namespace, create=False) as ns:
        return ns.call(_link_info_here, name)


def list_links_sync(prefix: str = "tap") -> list[str]:
    with IPRoute() as ipr:
        names = (link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        return sorted(n for n in names if n and n.startswith(prefix))


def delete_netns_sync(namespace: str) -> bool:
    check_name(namespace, deny=())
    if namespace not in netns.listnetns():
        return False
    netns.remove(namespace)
    return True


def _default_signal_handlers() -> None:
    """In a forked child: no Python signal handler of the parent's (Twisted's) runs, and none wakes its reactor."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError, RuntimeError):
            pass


_quiet_children = False


def quiet_forked_children() -> None:
    """Make every child this process forks start with default signal handling (once per process).

    pyroute2 forks a short-lived child for namespace work (``IPRoute(netns=...)``,
    ``netns.create``; this module no longer uses either) and stops it with
    SIGTERM. Forked from the agent, that child ran Twisted's SIGTERM handler
    and wrote "Received SIGTERM, shutting down." into the agent's log for
    every VIF plugged into a namespace, and poked the reactor's wakeup pipe.
    With default handlers the SIGTERM just ends it. Children that exec (none
    here) reset their handlers anyway.
    """
    global _quiet_children
    if not _quiet_children:
        os.register_at_fork(after_in_child=_default_signal_handlers)
        _quiet_children = True


class Links:
    """The agent's netlink seam: each method runs the blocking call in a small private thread pool.

    ``stop()`` (also run at reactor shutdown) waits for calls in progress.
    """

    log = Logger()

    def __init__(self, reactor: Any = None, max_threads: int = 2) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name="restproxy-links")
        self._trigger: Any = None

    def start(self) -> None:
        if not self._pool.started:
            quiet_forked_children()
            self._pool.start()
            self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._pool.started:
            self._pool.stop()
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        self.start()
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)

    def create_tap(self, name: str, mac: str | None = None, mtu: int | None = None, up: bool = True) -> defer.Deferred:
        """Fires with the tap's LinkInfo."""
        return self._call(create_tap_sync, name, mac, mtu, up)

    def create_veth_into_netns(
        self,
        name: str,
        peer_name: str,
        netns: str,
        mac: str | None = None,
        mtu: int | None = None,
        tx_checksum: bool = False,
        up: bool = True,
        ours: Collection[str] | None = None,
    ) -> defer.Deferred:
        """Fires with the host end's LinkInfo (see ``create_veth_into_netns_sync``); fails with ``NetnsRefused`` there."""
        return self._call(create_veth_into_netns_sync, name, peer_name, netns, mac, mtu, tx_checksum, up, ours)

    def set_link_up(self, name: str, up: bool) -> defer.Deferred:
        """Fires with True once ``name`` is up (or down), False if it does not exist."""
        return self._call(set_link_up_sync, name, up)

    def delete_link(self, name: str) -> defer.Deferred:
        """Fires with True if the link was deleted, False if it did not exist."""
        return self._call(delete_link_sync, name)

    def link_exists(self, name: str) -> defer.Deferred:
        return self._call(link_info_sync, name).addCallback(lambda info: info is not None)

    def link_info(self, name: str, netns: str | None = None) -> defer.Deferred:
        """Fires with the LinkInfo of ``name`` (in ``netns`` if given), or None."""
        return self._call(link_info_sync, name, netns)

    def list_links(self, prefix: str = "tap") -> defer.Deferred:
        """Fires with the sorted names of the links in this namespace that start with ``prefix``."""
        return self._call(list_links_sync, prefix)

    def delete_netns(self, netns: str) -> defer.Deferred:
        """Fires with True if the namespace existed (devices in it go with it)."""
        return self._call(delete_netns_sync, netns)
