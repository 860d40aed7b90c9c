"""/agent/v1: the agents' channel over HTTP(S) and JSON.

* ``GET  /agent/v1/hosts/{host}/ports``: the host's desired ports and the
  sequence number they are current to (``{"seq": N, "ports": [...]}``);
* ``GET  /agent/v1/hosts/{host}/watch?since=N``: one long response of
  newline-delimited JSON: ``{"type": "event", "seq", "kind", "object_id",
  "payload"}`` for every event after N, ``{"type": "heartbeat", "seq"}``
  every few seconds, or one ``{"type": "relist"}`` when N is older than what
  the server keeps (the agent must list again);
* ``GET  /agent/v1/dhcp/networks`` and ``GET /agent/v1/dhcp/watch?since=N``
  (``dhcp`` and admin tokens): the same for DHCP agents, whose desired state is
  every network with a DHCP-enabled subnet (``{"seq", "networks": [network
  with "subnets" and "ports"]}``) and whose events are kept under the reserved
  host key ``@dhcp`` (store/dhcp_events.py);
* ``POST /agent/v1/rpc/{method}`` with the arguments as a JSON object:
  ``{"result": ...}``.

Agents authenticate with a token (``X-Auth-Token`` or ``Authorization:
Bearer``) from ``[AGENT] agent_tokens_file``; a token belongs to one host (or
is an admin token) and may only act for it (403 otherwise). What each RPC may
touch is decided in ``authz``; how a watch stays bounded in ``watcher``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from twisted.logger import Logger
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, read_json, split_path
from server_plugin.api.routing import Routes
from server_plugin.channel import inputs
from server_plugin.channel.authz import ADMIN, DHCP, KINDS, Caller
from server_plugin.channel.bus import EventBus
from server_plugin.channel.rpc import AgentRPC
from server_plugin.channel.watcher import message, relist_message
from server_plugin.store.dhcp_events import DHCP_HOST


class AgentTokens:
    """token -> Caller, from a JSON file ``{"tokens": {"<token>": {"host": "...", "kind": "agent|dhcp|admin"}}}``."""

    def __init__(self, tokens: dict[str, dict[str, str]]) -> None:
        self._tokens: dict[bytes, Caller] = {}
        for token, value in tokens.items():
            kind = value.get("kind", "agent")
            if kind not in KINDS:
                raise ValueError(f"agent token kind '{kind}' is not one of {', '.join(KINDS)}")
            if value.get("host") == DHCP_HOST:
                raise ValueError(f"agent token host '{DHCP_HOST}' is reserved (the DHCP agents' event stream)")
            self._tokens[token.encode("utf-8")] = Caller(host=value.get("host", ""), kind=kind)

    @classmethod
    def from_file(cls, path: str) -> AgentTokens:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data.get("tokens", data))

    def caller_for(self, request: server.Request) -> tuple[bytes, Caller]:
        """The token (raw bytes: whatever an agent sends is only ever a right or a wrong token) and who it is; 401 otherwise."""
        token = inputs.token_of(request)
        caller = self._tokens.get(token) if token else None
        if caller is None:
            raise exc.HTTPUnauthorized()
        return token, caller


class AgentChannelAPI(AsyncJSONResource):
    log = Logger()

    def __init__(self, rpc: AgentRPC, bus: EventBus, tokens: AgentTokens) -> None:
        super().__init__()
        self.rpc = rpc
        self.bus = bus
        self.tokens = tokens
        self.routes = (
            Routes()
            .add("v1/rpc/{method}", POST=self._rpc)
            .add("v1/hosts/{host}/ports", GET=self._list)
            .add("v1/hosts/{host}/watch", GET=self._watch)
            .add("v1/dhcp/networks", GET=self._dhcp_list)
            .add("v1/dhcp/watch", GET=self._dhcp_watch)
        )

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        token, caller = self.tokens.caller_for(request)
        route = self.routes.match(request.method.decode("ascii", "replace"), split_path(request)[1:])  # drop "agent"
        reply: Reply = await route.handler(request, token, caller, **route.params)
        return reply

    async def _rpc(self, request: server.Request, token: bytes, caller: Caller, method: str) -> Reply:
        kwargs = read_json(request, required=False)
        result = await self.rpc.call(caller, method, {} if kwargs is None else kwargs)
        return Reply(200, {"result": result})

    async def _list(self, request: server.Request, token: bytes, caller: Caller, host: str) -> Reply:
        host = _host(caller, host)
        seq, state = await self.bus.host_state(host)
        return Reply(200, {"seq": seq, "host": host, **state})

    async def _dhcp_list(self, request: server.Request, token: bytes, caller: Caller) -> Reply:
        _dhcp_caller(caller)
        seq, networks = await self.bus.dhcp_networks()
        return Reply(200, {"seq": seq, "networks": networks})

    async def _dhcp_watch(self, request: server.Request, token: bytes, caller: Caller) -> Reply:
        _dhcp_caller(caller)
        return await self._stream(request, token, DHCP_HOST)

    async def _watch(self, request: server.Request, token: bytes, caller: Caller, host: str) -> Reply:
        return await self._stream(request, token, _host(caller, host))

    async def _stream(self, request: server.Request, token: bytes, host: str) -> Reply:
        since = inputs.int_param(request, "since", default=0)
        if since > self.bus.newest_read:  # (not the watermark: a server that waits on a hole, or just started, is behind)
            raise exc.HTTPBadRequest(detail=f"since {since} is ahead of the server ({self.bus.newest_read}): list again")
        relist = relist_message(since, await self.bus.first_seq())
        ended: list[object] = []  # the response finished, or its connection is gone
        closed = request.notifyFinish()
        closed.addBoth(ended.append)

        def write(data: bytes) -> None:
            if not ended:
                request.write(data)

        def end(abort: bool) -> None:
            if request.producer is not None:
                request.unregisterProducer()
            if not ended:
                request.finish()
            if abort:
                request.transport.abortConnection()  # it does not read: the end would never reach it

        watcher = self.bus.watch(host, since, token, write, end, await self.bus.interest(host)) if relist is None else None
        request.setResponseCode(200)
        request.setHeader("Content-Type", "application/x-ndjson")
        request.setHeader("Cache-Control", "no-cache")
        if watcher is None:
            write(relist or b"")
            request.finish()
            return Reply(0)
        _limit_send_buffers(request.transport, self.bus.send_buffer)
        request.registerProducer(watcher, True)
        self.log.info("agent {host} watching from {since}", host=host, since=since)
        write(message(type="heartbeat", seq=since))
        watcher.catch_up()
        try:
            await closed
        except Exception:
            pass  # the agent went away: that is how a watch ends
        finally:
            watcher.close(None)
            self.log.info("agent {host} stopped watching at {seq}", host=host, seq=watcher.last_sent)
        return Reply(0)


def _dhcp_caller(caller: Caller) -> None:
    if caller.kind not in (DHCP, ADMIN):
        raise exc.PolicyNotAuthorized(action="watch DHCP networks (for dhcp agents only)")


def _host(caller: Caller, host: str) -> str:
    """The host of a ``/v1/hosts/{host}/...`` path: text a host name can be, and the caller's own (403 otherwise)."""
    inputs.check_text(host, "host")
    return caller.check_host(host) or host


def _limit_send_buffers(transport: Any, size: int) -> None:
    """Bound what a watch connection holds unsent: ``size`` bytes in user space (then the watcher pauses; twisted's
    default is 64 KiB) and a few times that in the kernel (which would otherwise grow to megabytes for an agent that
    does not read, each refilled from the store)."""
    while transport is not None:
        if isinstance(getattr(type(transport), "bufferSize", None), int):
            transport.bufferSize = min(transport.bufferSize, size)
            handle = transport.getHandle()
            if isinstance(handle, socket.socket):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * size)  # Linux doubles it
            return
        transport = getattr(transport, "transport", None)  # TLS: the TCP transport under it
