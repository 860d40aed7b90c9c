"""Client of the server's agent channel: list, watch (resume, reconnect with backoff) and RPC calls.

``ChannelClient`` makes single calls. ``PortWatch`` is a service that keeps a
host in step with the server, in the manner of ``ClientService``: it lists the
host's ports, then holds one streaming watch open from the listed sequence
number; when the stream ends, stalls (no heartbeat for a while) or fails, it
reconnects with backoff and resumes from the last number it saw, so no event
is lost; when the server says the number is too old, it lists again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import treq
from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from restproxy_common.backoff import Policy, backoff_policy

Event = dict[str, Any]
# Reconnects after 0.4 s, 0.8 s ... up to 10 s, plus up to 1 s so that agents spread out after a server restart.
RECONNECT = backoff_policy(initial=0.4, maximum=10.0, factor=2.0, jitter=1.0)


class ChannelError(Exception):
    """The server answered a channel call with an error (status and NeutronError type/message)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("NeutronError", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('type', '')}: {error.get('message', body)}")
        self.status = status
        self.type = error.get("type")


@implementer(IBodyProducer)
class _Body:
    """A request body written in the same reactor turn as the request's headers.

    treq's ``json=`` body is a ``FileBodyProducer``, which writes on a later turn of the reactor (a cooperator
    task): every RPC then left in two TCP segments, the body a turn behind its headers (and, had the first been
    unacknowledged, held back by Nagle's algorithm until it was). An agent's ``update_device_list`` is on a VM boot's
    way to ACTIVE."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ChannelClient:
    """Calls to ``/agent/v1`` of one server (token auth; HTTPS when the URL says so)."""

    def __init__(self, url: str, token: str, host: str, reactor: Any, timeout: float = 10.0, tls_policy: Any = None) -> None:
        self.url = url.rstrip("/")
        self.host = host
        self.reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        kwargs: dict[str, Any] = {"pool": self._pool, "connectTimeout": timeout}
        if tls_policy is not None:
            kwargs["contextFactory"] = tls_policy
        self._http = treq.client.HTTPClient(Agent(reactor, **kwargs))
        self._headers = {"X-Auth-Token": [token], "Accept": ["application/json"]}
        self._post_headers = {**self._headers, "Content-Type": ["application/json"]}

    async def _json(self, response: Any) -> Any:
        body = await treq.content(response)
        data = json.loads(body) if body else None
        if response.code >= 400:
            raise ChannelError(response.code, data)
        return data

    async def call(self, method: str, **kwargs: Any) -> Any:
        body = _Body(json.dumps(kwargs, separators=(",", ":")).encode())
        response = await self._http.post(
            f"{self.url}/agent/v1/rpc/{method}", data=body, headers=self._post_headers, timeout=self.timeout, reactor=self.reactor
        )
        return (await self._json(response))["result"]

    async def list_ports(self) -> tuple[int, list[dict[str, Any]]]:
        seq, ports, _ = await self.list_host()
        return seq, ports

    async def list_host(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """The host's ports and the security groups they use (as of the same ``seq``; no groups from an older server)."""
        response = await self._http.get(f"{self.url}/agent/v1/hosts/{self.host}/ports", headers=self._headers, timeout=self.timeout)
        data = await self._json(response)
        return data["seq"], data["ports"], data.get("security_groups") or []

    async def open_watch(self, since: int) -> Any:
        """The streaming response (unbuffered); read it with ``treq.collect``."""
        response = await self._http.get(
            f"{self.url}/agent/v1/hosts/{self.host}/watch", params={"since": str(since)}, headers=self._headers,
            timeout=self.timeout, unbuffered=True,
        )  # fmt: skip
        if response.code >= 400:
            await self._json(response)
        return response

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


class PortWatch(service.Service):
    """Keeps ``on_list`` / ``on_event`` fed with the host's desired ports, across any reconnect."""

    log = Logger()

    def __init__(
        self,
        client: ChannelClient,
        on_list: Callable[[int, list[dict[str, Any]]], Any],
        on_event: Callable[[Event], Any],
        reactor: Any,
        stall_timeout: float = 35.0,
        retry_policy: Policy = RECONNECT,
        on_groups: Callable[[list[dict[str, Any]]], Any] | None = None,
    ) -> None:
        """``on_groups(groups)``: the listed security groups, called just before ``on_list`` (if the client lists them)."""
        self.client = client
        self.on_groups = on_groups
        self.on_list = on_list
        self.on_event = on_event
        self.reactor = reactor
        self.stall_timeout = stall_timeout
        self.retry_policy = retry_policy
        self.seq: int | None = None  # None: must list first
        self.connected = False
        self.reconnects = 0
        self._loop: Deferred[None] | None = None
        self._current: Deferred[Any] | None = None
        self._first: Deferred[Any] | None = None  # the first list, asked for ahead (``prefetch``)

    def prefetch(self) -> None:
        """Ask for the first list now, before ``startService``: the server answers it while the caller gets the rest
        of its start done (the agent: its OVSDB replica and its firewall), and the watch's first list is this one,
        handed over as ``startService`` would have had it (its failure, too: then retried with the backoff)."""
        if self.seq is None and self._first is None:
            self._first = ensureDeferred(self._list()).addErrback(_Outcome)

    def startService(self) -> None:
        super().startService()
        self._loop = ensureDeferred(self._run())

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._current is not None:
            self._current.cancel()
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
        loop, self._loop = self._loop, None
        d = loop if loop is not None else Deferred()
        if loop is None:
            d.callback(None)
        return d.addBoth(lambda _: ensureDeferred(self.client.close()))

    async def _run(self) -> None:
        failures = 0
        while self.running:
            try:
                if self.seq is None:
                    first, self._first = self._first, None
                    listed = await self._track(first if first is not None else ensureDeferred(self._list()))
                    if isinstance(listed, _Outcome):
                        listed.failure.raiseException()
                    seq, ports, groups = listed
                    if groups is not None:
                        assert self.on_groups is not None
                        self.on_groups(groups)
                    self.on_list(seq, ports)
                    self.seq = seq
                await self._watch_once()
                failures = 0
            except CancelledError:
                if not self.running:
                    return
            except Exception as e:
                if not self.running:
                    return
                if self.connected:
                    failures = 0  # the watch was up: this is a new outage, its backoff starts again from the first step
                failures += 1
                delay = self.retry_policy(failures - 1)  # attempt 0: the first retry
                self.log.warn("agent channel: {error}; reconnecting in {delay:.1f}s", error=str(e) or type(e).__name__, delay=delay)
                await self._track(task.deferLater(self.reactor, delay))
            finally:
                self.connected = False
            self.reconnects += 1

    async def _list(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]] | None]:
        """(seq, ports, the security groups they use: None from a client that cannot list them)."""
        if self.on_groups is not None and hasattr(self.client, "list_host"):
            return await self.client.list_host()
        seq, ports = await self.client.list_ports()
        return seq, ports, None

    def _track(self, d: Any) -> Deferred[Any]:
        self._current = Deferred.fromCoroutine(d) if not isinstance(d, Deferred) else d
        return self._current

    async def _watch_once(self) -> None:
        """One watch stream until it ends; events, heartbeats and relist handled as they come."""
        assert self.seq is not None
        response = await self._track(ensureDeferred(self.client.open_watch(self.seq)))
        self.connected = True
        self.log.info("agent channel: watching from {seq}", seq=self.seq)
        buffer = bytearray()
        relist: list[bool] = []
        stalled = self.reactor.callLater(self.stall_timeout, lambda: self._current and self._current.cancel())

        def chunk(data: bytes) -> None:
            buffer.extend(data)
            end = buffer.rfind(b"\n")
            if end < 0:
                return
            lines = bytes(buffer[:end]).split(b"\n")  # (split once: a burst's chunk holds hundreds of events)
            del buffer[: end + 1]
            for line in lines:
                if line.strip():
                    self._message(json.loads(line), relist)
                    if stalled.active():
                        stalled.reset(self.stall_timeout)

        try:
            await self._track(treq.collect(response, chunk))
        finally:
            if stalled.active():
                stalled.cancel()
        if relist:
            self.seq = None

    def _message(self, message: dict[str, Any], relist: list[bool]) -> None:
        kind = message.get("type")
        if kind == "event":
            try:
                self.on_event(message)
            finally:
                self.seq = message["seq"]
        elif kind == "heartbeat":
            self.seq = max(self.seq or 0, int(message.get("seq", 0)))
        elif kind == "relist":
            self.log.info("agent channel: server asks for a full list ({reason})", reason=message.get("reason"))
            relist.append(True)


class _Outcome:
    """A prefetched list's failure, held as a result until the watch takes it (no unhandled error meanwhile)."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
