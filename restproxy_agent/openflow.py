"""An OpenFlow 1.3 client of one bridge's management socket (``<rundir>/<bridge>.mgmt``), in the reactor.

ovs-vswitchd answers OpenFlow on that unix socket as on a controller connection, so the agent programs
br-int's flows without a process per change (no ``ovs-ofctl``). Messages are built and parsed by os-ken's
ofproto parser. What it offers:

- ``connect()``: HELLO (version 1.3 must be common, else ``OpenFlowError``), then ready; ECHO_REQUESTs are
  answered as they come.
- ``send(msgs)``: the messages, then a BARRIER_REQUEST; fires when the BARRIER_REPLY arrives, or fails with
  ``OpenFlowError`` on the first OFPT_ERROR for one of the batch's xids (ovs-vswitchd handles messages in order,
  so errors of a batch arrive before its barrier reply).
- ``bundle(msgs)``: the same inside an ONF bundle (EXT-230, OpenFlow 1.3's form of 1.4 bundles), atomic and
  ordered: all of it applies or none of it does.
- ``flow_stats(...)``: the installed flows (multipart replies gathered until the last one); ``flow_cookies()``: just
  their cookies (read off the replies without parsing the flows).

``OpenFlowClient`` reconnects with backoff if the connection drops (ovs-vswitchd restarted: its flows are gone)
and calls ``on_connect`` each time it is ready again, so the owner can reinstall everything. Besides that
connection it keeps ``lanes - 1`` more to the same socket, over which a large batch of plain (non-atomic) flow
mods is spread: ovs-vswitchd handles at most 50 messages per connection per main-loop turn, and on the userspace
datapath a turn costs time in proportion to the bridge's ports (34,000 flow mods with 1,000 ports on the bridge:
~8-16 s over one connection, ~1.5-3 s over eight).
"""

from __future__ import annotations

import contextlib
import itertools
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from restproxy_agent.firewall.encode import DP
from restproxy_common.backoff import backoff_policy

HEADER = struct.Struct("!BBHI")
BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
CHUNK = 1000  # flow mods encoded per reactor turn by ``OpenFlowClient.stream``
LANES = 8  # connections to the management socket that a large plain batch is spread over
LANE_MIN = 400  # plain batches from this size go over every lane (ovs-vswitchd takes 50 a turn from each connection)
RECONNECT = backoff_policy(initial=0.2, maximum=5.0, factor=2.0, jitter=0.1)


class OpenFlowError(Exception):
    """The switch refused a message (OFPT_ERROR: type/code), or the connection failed or closed."""

    def __init__(self, message: str, type_: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.type, self.code = type_, code


class _Batch:
    def __init__(self, xids: set[int]) -> None:
        self.xids = xids
        self.done: defer.Deferred[None] = defer.Deferred()
        self.error: OpenFlowError | None = None


class OpenFlowProtocol(protocol.Protocol):
    """One OpenFlow 1.3 connection: framing, handshake, echo, barrier-completed batches, multipart replies."""

    log = Logger()

    def __init__(self) -> None:
        self._buf = bytearray()
        self._xids = itertools.count(1)
        self._bundles = itertools.count(1)
        self.ready: defer.Deferred[OpenFlowProtocol] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._batches: dict[int, _Batch] = {}  # barrier xid -> batch
        self._owner: dict[int, _Batch] = {}  # message xid -> batch
        self._stats: dict[int, tuple[defer.Deferred[list[Any]], list[Any]]] = {}
        self._cookies: dict[int, tuple[defer.Deferred[list[int]], list[int]]] = {}  # flow_cookies requests
        self._open: set[_Batch] = set()  # batches begun and not finished
        self.connected_ok = False

    # -- framing
    def connectionMade(self) -> None:
        hello = parser.OFPHello(DP, elements=[parser.OFPHelloElemVersionBitmap([ofp.OFP_VERSION])])
        self._write(hello)

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= HEADER.size:
            version, msg_type, length, xid = HEADER.unpack_from(self._buf)
            if length < HEADER.size:
                self.transport.loseConnection()
                return
            if len(self._buf) < length:
                return
            raw = bytes(self._buf[:length])
            del self._buf[:length]
            self._received(version, msg_type, length, xid, raw)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        error = OpenFlowError(f"OpenFlow connection lost: {reason.getErrorMessage()}")
        if not self.ready.called:
            self.ready.errback(error)
        for batch in [*self._batches.values(), *self._open]:
            if not batch.done.called:
                batch.done.errback(error)
        for d, _ in [*self._stats.values(), *self._cookies.values()]:
            if not d.called:
                d.errback(error)
        self._batches.clear()
        self._cookies.clear()
        self._open.clear()
        self._owner.clear()
        self._stats.clear()
        if not self.lost.called:
            self.lost.callback(None)

    def _write(self, msg: Any) -> int:
        if msg.xid is None:
            msg.set_xid(next(self._xids))
        msg.serialize()
        self.transport.write(bytes(msg.buf))
        return msg.xid

    # -- incoming
    def _received(self, version: int, msg_type: int, length: int, xid: int, raw: bytes) -> None:
        if msg_type == ofp.OFPT_HELLO:
            self._hello(version, raw)
            return
        if version != ofp.OFP_VERSION:
            return
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self._write(_echo_reply(xid, raw))
            return
        if msg_type == ofp.OFPT_BARRIER_REPLY:
            batch = self._batches.pop(xid, None)
            if batch is not None:
                for x in batch.xids:
                    self._owner.pop(x, None)
                if batch.error is not None:
                    batch.done.errback(batch.error)
                else:
                    batch.done.callback(None)
            return
        if msg_type == ofp.OFPT_ERROR:
            msg = ofproto_parser.msg(DP, version, msg_type, length, xid, raw)
            error = OpenFlowError(f"switch refused xid {xid}: OFPT_ERROR type {msg.type} code {msg.code}", msg.type, msg.code)
            batch = self._owner.get(xid)
            if batch is not None and batch.error is None:
                batch.error = error
            elif xid in self._stats or xid in self._cookies:
                d, _ = self._stats.pop(xid, None) or self._cookies.pop(xid)
                d.errback(error)
            elif batch is None:
                self.log.warn("OpenFlow: {error}", error=str(error))
            return
        if msg_type == ofp.OFPT_MULTIPART_REPLY and xid in self._cookies:
            d, acc = self._cookies[xid]
            acc.extend(_flow_cookies(raw))
            if not MULTIPART_FLAGS.unpack_from(raw, HEADER.size)[1] & ofp.OFPMPF_REPLY_MORE:
                del self._cookies[xid]
                d.callback(acc)
            return
        if msg_type == ofp.OFPT_MULTIPART_REPLY and xid in self._stats:
            msg = ofproto_parser.msg(DP, version, msg_type, length, xid, raw)
            d, acc = self._stats[xid]
            acc.extend(msg.body)
            if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                del self._stats[xid]
                d.callback(acc)
            return
        # bundle replies, port status and the like: nothing to do (a bundle's outcome comes with its barrier)

    def _hello(self, version: int, raw: bytes) -> None:
        versions = {version}
        try:
            msg = ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_HELLO, len(raw), 0, raw) if version == ofp.OFP_VERSION else None
            for element in getattr(msg, "elements", None) or []:
                versions |= set(getattr(element, "versions", []))
        except Exception:
            pass
        if version < ofp.OFP_VERSION and ofp.OFP_VERSION not in versions:
            if not self.ready.called:
                self.ready.errback(OpenFlowError(f"the switch speaks OpenFlow version {version}, not 1.3 (bridge protocols?)"))
            self.transport.loseConnection()
            return
        self.connected_ok = True
        if not self.ready.called:
            self.ready.callback(self)

    # -- outgoing
    def begin(self) -> _Batch:
        """A batch: messages written with ``write`` (over several reactor turns if need be), closed by ``finish``."""
        batch = _Batch(set())
        self._open.add(batch)
        return batch

    def write(self, batch: _Batch, msgs: list[Any]) -> None:
        if not self.connected_ok or self.transport is None:
            raise OpenFlowError("OpenFlow connection is not ready")
        chunks = []
        for msg in msgs:
            msg.set_xid(next(self._xids))
            msg.serialize()
            chunks.append(bytes(msg.buf))
            batch.xids.add(msg.xid)
            self._owner[msg.xid] = batch
        self.transport.write(b"".join(chunks))

    def finish(self, batch: _Batch) -> defer.Deferred[None]:
        """A barrier after the batch: fires on its reply, fails on an error for any of the batch's messages."""
        self._open.discard(batch)
        if batch.done.called:
            return batch.done  # (the connection was lost meanwhile)
        barrier = parser.OFPBarrierRequest(DP)
        barrier.set_xid(next(self._xids))
        barrier.serialize()
        self._batches[barrier.xid] = batch
        self.transport.write(bytes(barrier.buf))
        return batch.done

    def bundle_open(self, batch: _Batch) -> int:
        """Open an ONF bundle (atomic, ordered) in ``batch``; returns its id for ``bundle_add``/``bundle_ctrl``."""
        bundle_id = next(self._bundles) & 0xFFFFFFFF
        self.write(batch, [parser.ONFBundleCtrlMsg(DP, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, BUNDLE_FLAGS, [])])
        return bundle_id

    @staticmethod
    def bundle_add(bundle_id: int, msgs: list[Any]) -> list[Any]:
        return [parser.ONFBundleAddMsg(DP, bundle_id, BUNDLE_FLAGS, m, []) for m in msgs]

    def bundle_ctrl(self, batch: _Batch, bundle_id: int, kind: int) -> None:
        """ONF_BCT_COMMIT_REQUEST or ONF_BCT_DISCARD_REQUEST for ``bundle_id``."""
        self.write(batch, [parser.ONFBundleCtrlMsg(DP, bundle_id, kind, BUNDLE_FLAGS, [])])

    def send(self, msgs: list[Any]) -> defer.Deferred[None]:
        """``msgs`` then a barrier; fires on the barrier reply, fails on an error for any of them."""
        batch = self.begin()
        try:
            self.write(batch, msgs)
        except OpenFlowError as e:
            self._open.discard(batch)
            return defer.fail(e)
        return self.finish(batch)

    def flow_stats(self, table_id: int = ofp.OFPTT_ALL, cookie: int = 0, cookie_mask: int = 0) -> defer.Deferred[list[Any]]:
        """The flows installed (OFPFlowStats bodies), all tables by default."""
        return self._flow_stats_request(self._stats, table_id, cookie, cookie_mask)

    def flow_cookies(self) -> defer.Deferred[list[int]]:
        """The cookie of every installed flow, read straight off the flow stats replies: parsing each flow with os-ken
        (match, instructions) took ~0.2 ms a flow, seconds of the reactor after a restart, for the cookie alone."""
        return self._flow_stats_request(self._cookies, ofp.OFPTT_ALL, 0, 0)

    def _flow_stats_request(self, pending: dict[int, Any], table_id: int, cookie: int, cookie_mask: int) -> defer.Deferred[Any]:
        """Send a flow stats request; its replies are gathered under its xid in ``pending`` (parsed flows or cookies)."""
        if not self.connected_ok:
            return defer.fail(OpenFlowError("OpenFlow connection is not ready"))
        req = parser.OFPFlowStatsRequest(DP, 0, table_id, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, cookie_mask, parser.OFPMatch())
        d: defer.Deferred[Any] = defer.Deferred()
        req.set_xid(next(self._xids))
        pending[req.xid] = (d, [])
        req.serialize()
        self.transport.write(bytes(req.buf))
        return d


MULTIPART_FLAGS = struct.Struct("!HH")  # ofp_multipart_reply after the header: type, flags (then 4 bytes of padding)
FLOW_STATS_HEAD = struct.Struct("!H")  # ofp_flow_stats: its length first ...
FLOW_STATS_COOKIE = struct.Struct("!Q")  # ... and its cookie 24 bytes in (length, table, pad, duration x2, priority,
FLOW_STATS_COOKIE_AT = 24  # idle and hard timeouts, flags, 4 bytes of padding)


def _flow_cookies(raw: bytes) -> list[int]:
    """The cookies of the ``ofp_flow_stats`` entries of one OFPMP_FLOW reply."""
    cookies, at = [], HEADER.size + 8
    while at + FLOW_STATS_COOKIE_AT + 8 <= len(raw):
        (length,) = FLOW_STATS_HEAD.unpack_from(raw, at)
        if length < FLOW_STATS_COOKIE_AT + 8:
            break
        cookies.append(FLOW_STATS_COOKIE.unpack_from(raw, at + FLOW_STATS_COOKIE_AT)[0])
        at += length
    return cookies


def _close(proto: OpenFlowProtocol, batch: _Batch) -> defer.Deferred[None]:
    """``batch``'s barrier, whatever became of its connection (a lost one has failed the batch already)."""
    try:
        return proto.finish(batch)
    except Exception as e:  # (a transport gone without connectionLost yet)
        proto._open.discard(batch)
        return defer.fail(e)


def _echo_reply(xid: int, raw: bytes) -> Any:
    reply = parser.OFPEchoReply(DP, data=raw[HEADER.size :])
    reply.set_xid(xid)
    return reply


class OpenFlowClient:
    """Keeps one ``OpenFlowProtocol`` to ``path`` connected; ``on_connect(proto)`` runs after every (re)connect."""

    log = Logger()

    def __init__(self, reactor: Any, path: str, on_connect: Callable[[OpenFlowProtocol], Any] | None = None, lanes: int = LANES) -> None:
        self.reactor, self.path, self.on_connect = reactor, path, on_connect
        self.proto: OpenFlowProtocol | None = None
        self.lanes = lanes
        self._extra: list[OpenFlowProtocol] = []  # the other lanes' connections that are ready
        self._stopping = False
        self._attempts = 0
        self._first: defer.Deferred[OpenFlowProtocol] = defer.Deferred()
        self._retry: Any = None

    def connect(self) -> defer.Deferred[OpenFlowProtocol]:
        """Fires once the first connection is ready (keeps retrying until then)."""
        self._attempt()
        return self._first

    def _attempt(self) -> None:
        self._retry = None
        if self._stopping:
            return
        d = connectProtocol(UNIXClientEndpoint(self.reactor, self.path, timeout=5), OpenFlowProtocol())
        d.addCallback(lambda p: p.ready)
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, proto: OpenFlowProtocol) -> Any:
        self._attempts = 0
        self.proto = proto
        self.log.info("OpenFlow 1.3 connected to {path}", path=self.path)
        proto.lost.addCallback(lambda _: self._lost(proto))
        self._open_lanes()
        d = defer.maybeDeferred(self.on_connect, proto) if self.on_connect is not None else defer.succeed(None)
        d.addErrback(lambda f: self.log.failure("OpenFlow on_connect failed", f))

        def first(result: Any) -> Any:
            if not self._first.called:
                self._first.callback(proto)
            return result

        return d.addBoth(first)

    def _open_lanes(self) -> None:
        """The extra lanes, (re)opened with every connection of the main one. Best effort: a lane that fails or drops
        is left out (until the next reconnect), and a batch then goes over the lanes that remain."""
        for _ in range(self.lanes - 1 - len(self._extra)):
            d = connectProtocol(UNIXClientEndpoint(self.reactor, self.path, timeout=5), OpenFlowProtocol())
            d.addCallback(lambda p: p.ready)
            d.addCallbacks(self._lane_ready, lambda f: self.log.warn("OpenFlow lane to {path}: {error}", path=self.path,
                                                                     error=f.getErrorMessage()))  # fmt: skip

    def _lane_ready(self, proto: OpenFlowProtocol) -> None:
        if self._stopping or len(self._extra) >= self.lanes - 1:
            proto.transport.loseConnection()
            return
        self._extra.append(proto)
        proto.lost.addCallback(lambda _: self._extra.remove(proto) if proto in self._extra else None)

    def _failed(self, f: Failure) -> None:
        if self._stopping:
            return
        delay = RECONNECT(self._attempts)
        self._attempts += 1
        self.log.warn("OpenFlow {path}: {error}; retrying in {delay:.1f}s", path=self.path, error=f.getErrorMessage(), delay=delay)
        self._retry = self.reactor.callLater(delay, self._attempt)

    def _lost(self, proto: OpenFlowProtocol) -> None:
        if self.proto is proto:
            self.proto = None
        if not self._stopping:
            self.log.warn("OpenFlow connection to {path} lost; reconnecting", path=self.path)
            self._retry = self.reactor.callLater(RECONNECT(0), self._attempt)

    def stop(self) -> None:
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for proto in [self.proto, *self._extra]:
            if proto is not None and proto.transport is not None:
                proto.transport.loseConnection()

    def _need(self) -> OpenFlowProtocol:
        if self.proto is None:
            raise OpenFlowError(f"not connected to {self.path}")
        return self.proto

    def send(self, msgs: list[Any]) -> defer.Deferred[None]:
        return defer.maybeDeferred(lambda: self._need().send(msgs))

    def bundle(self, msgs: list[Any]) -> defer.Deferred[float]:
        """``msgs`` applied atomically (see ``stream``)."""
        return defer.ensureDeferred(self.stream([lambda m=m: m for m in msgs], atomic=True))

    def flow_stats(self, **kwargs: Any) -> defer.Deferred[list[Any]]:
        return defer.maybeDeferred(lambda: self._need().flow_stats(**kwargs))

    def flow_cookies(self) -> defer.Deferred[list[int]]:
        return defer.maybeDeferred(lambda: self._need().flow_cookies())

    async def stream(self, encoders: Sequence[Callable[[], Any]], atomic: bool, chunk: int = CHUNK) -> float:
        """The messages ``encoders`` make, encoded and written ``chunk`` at a time with a reactor turn in between (a
        restart's tens of thousands of flow mods never block the reactor for long), then a barrier. Returns (the
        seconds spent encoding) when the barrier reply is in; raises ``OpenFlowError`` as ``send`` does.

        Not ``atomic`` and at least ``LANE_MIN`` messages: the chunks go round-robin over every lane, each lane's part
        closed by its own barrier; it returns once every lane's barrier reply is in (the messages of one stream must
        not depend on their order: new entries, as ``OpenFlowFirewall`` sends plain). Should any be refused or a lane
        drop, it raises once all have answered (the others' messages may have applied, as in a plain batch).

        ``atomic``: inside one ONF bundle (atomic, ordered), over the main connection. A message the switch refuses
        while it is being added is simply left out of the bundle (EXT-230; ovs-vswitchd's ``handle_bundle_add`` frees
        the refused entry and keeps the bundle open), so a commit written with the adds would apply the rest: the
        commit waits for a barrier after the adds, and with any error the bundle is discarded, never committed, and
        nothing of it applies. (A new port's flows need no bundle, see ``OpenFlowFirewall``: one round trip.)
        """
        proto = self._need()
        if not atomic and len(encoders) >= LANE_MIN and self._extra:
            return await self._spread(proto, encoders, chunk)
        batch = proto.begin()
        encoding = 0.0
        bundle_id: int | None = None
        try:
            bundle_id = proto.bundle_open(batch) if atomic else None
            for start in range(0, len(encoders), chunk):
                if start:
                    await task.deferLater(self.reactor, 0, lambda: None)
                since = time.perf_counter()
                msgs = [make() for make in encoders[start : start + chunk]]
                proto.write(batch, proto.bundle_add(bundle_id, msgs) if bundle_id is not None else msgs)
                encoding += time.perf_counter() - since
        except BaseException:
            if bundle_id is not None and proto.connected_ok:  # (never committed: it would apply nothing anyway)
                with contextlib.suppress(Exception):
                    proto.bundle_ctrl(batch, bundle_id, ofp.ONF_BCT_DISCARD_REQUEST)
            await _close(proto, batch).addErrback(lambda _: None)  # (no batch left open, whatever the error)
            raise
        if bundle_id is None:
            await proto.finish(batch)
            return encoding
        try:
            await proto.finish(batch)
        except OpenFlowError:
            if proto.connected_ok:
                ending = proto.begin()
                proto.bundle_ctrl(ending, bundle_id, ofp.ONF_BCT_DISCARD_REQUEST)
                proto.finish(ending).addErrback(lambda _: None)
            raise
        commit = proto.begin()
        proto.bundle_ctrl(commit, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST)
        await proto.finish(commit)
        return encoding

    async def _spread(self, main: OpenFlowProtocol, encoders: Sequence[Callable[[], Any]], chunk: int) -> float:
        """A plain batch over every lane (see ``stream``)."""
        lanes = [main, *self._extra]
        batches = [(p, p.begin()) for p in lanes]
        chunk = min(chunk, -(-len(encoders) // len(lanes)))  # (every lane gets a part, however small the batch)
        encoding = 0.0
        try:
            for n, start in enumerate(range(0, len(encoders), chunk)):
                if start:
                    await task.deferLater(self.reactor, 0, lambda: None)
                since = time.perf_counter()
                msgs = [make() for make in encoders[start : start + chunk]]
                proto, batch = batches[n % len(batches)]
                if batch.done.called:  # (that lane dropped meanwhile: the batch fails below)
                    continue
                proto.write(batch, msgs)
                encoding += time.perf_counter() - since
        except BaseException:
            # Every lane's part closed by its barrier and answered before the error goes up: the caller's next batch
            # (the delete bundle of a retry) must not overtake adds still queued on another lane (orphan flows).
            await defer.DeferredList([_close(p, b) for p, b in batches], consumeErrors=True)
            raise
        results = await defer.DeferredList([p.finish(b) for p, b in batches], consumeErrors=True)
        for ok, result in results:
            if not ok:
                error = result.value
                raise error if isinstance(error, OpenFlowError) else OpenFlowError(str(error))
        return encoding
