"""/agent/v1: the agents' channel over HTTP(S) and JSON.

* ``GET  /agent/v1/hosts/{host}/ports``: the host's desired ports and the
  sequence number they are current to (``{"seq": N, "ports": [...]}``);
* ``GET  /agent/v1/hosts/{host}/watch?since=N``: one long response of
  newline-delimited JSON: ``{"type": "event", "seq", "kind", "object_id",
  "payload"}`` for every event after N, ``{"type": "heartbeat", "seq"}``
  every few seconds, or one ``{"type": "relist"}`` when N is older than what
  the server keeps (the agent must list again);
* ``POST /agent/v1/rpc/{method}`` with the arguments as a JSON object:
  ``{"result": ...}``.

Agents authenticate with a token (``X-Auth-Token`` or ``Authorization:
Bearer``) from ``[AGENT] agent_tokens_file``; a token belongs to one host (or
is an admin token) and may only act for it (403 otherwise).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import server

from server_plugin import exceptions as exc
from server_plugin.api.faults import neutron_fault, neutron_internal_error
from server_plugin.api.http import AsyncJSONResource, Reply, query_args, read_json, split_path
from server_plugin.channel.bus import Event, EventBus
from server_plugin.channel.rpc import AgentRPC, Caller
from server_plugin.store import agent_events


class AgentTokens:
    """token -> Caller, from a JSON file ``{"tokens": {"<token>": {"host": "...", "kind": "agent|dhcp|admin"}}}``."""

    def __init__(self, tokens: dict[str, dict[str, str]]) -> None:
        self._tokens = {t: Caller(host=v.get("host", ""), kind=v.get("kind", "agent")) for t, v in tokens.items()}

    @classmethod
    def from_file(cls, path: str) -> AgentTokens:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data.get("tokens", data))

    def caller_for(self, request: server.Request) -> Caller:
        token = (request.getHeader("X-Auth-Token") or "").strip()
        auth = (request.getHeader("Authorization") or "").strip()
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        caller = self._tokens.get(token) if token else None
        if caller is None:
            raise exc.HTTPUnauthorized()
        return caller


class AgentChannelAPI(AsyncJSONResource):
    log = Logger()

    def __init__(self, rpc: AgentRPC, bus: EventBus, tokens: AgentTokens, reactor: Any = None, heartbeat: float = 10.0) -> None:
        super().__init__()
        self.rpc = rpc
        self.bus = bus
        self.tokens = tokens
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.heartbeat = heartbeat

    def fault(self, request: server.Request, error: exc.QuantumException) -> tuple[int, Any]:
        return neutron_fault(error)

    def internal_error(self, request: server.Request) -> tuple[int, Any]:
        return neutron_internal_error()

    async def handle(self, request: server.Request) -> Reply:
        segments = split_path(request)[1:]  # drop "agent"
        method = request.method.decode("ascii", "replace")
        caller = self.tokens.caller_for(request)
        if len(segments) == 3 and segments[:2] == ["v1", "rpc"]:
            if method != "POST":
                raise exc.HTTPMethodNotAllowed(method=method, allow="POST")
            kwargs = read_json(request, required=False) or {}
            result = await self.rpc.call(caller, segments[2], kwargs)
            return Reply(200, {"result": result})
        if len(segments) == 4 and segments[:2] == ["v1", "hosts"]:
            if method != "GET":
                raise exc.HTTPMethodNotAllowed(method=method, allow="GET")
            host = caller.check_host(segments[2])
            if segments[3] == "ports":
                return await self._list(host)
            if segments[3] == "watch":
                await self._watch(request, host)
                return Reply(0)
        raise exc.HTTPNotFound()

    async def _list(self, host: str) -> Reply:
        seq = self.bus.watermark  # every event <= seq is already in the ports read below
        ports = await self.rpc.store.run(agent_events.host_ports, host, readonly=True)
        return Reply(200, {"seq": seq, "host": host, "ports": ports})

    async def _watch(self, request: server.Request, host: str) -> None:
        since_text = (query_args(request).get("since") or ["0"])[-1]
        if not since_text.isdigit():
            raise exc.HTTPBadRequest(detail=f"since must be a sequence number, not '{since_text}'")
        since = int(since_text)
        if since > self.bus.watermark:
            raise exc.HTTPBadRequest(detail=f"since {since} is ahead of the server ({self.bus.watermark}): list again")
        request.setResponseCode(200)
        request.setHeader("Content-Type", "application/x-ndjson")
        request.setHeader("Cache-Control", "no-cache")

        def send(message: Event | dict[str, Any]) -> None:
            if not request.finished and not request._disconnected:
                request.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")

        def send_event(event: Event) -> None:
            send(
                {"type": "event", "seq": event["seq"], "kind": event["kind"], "object_id": event["object_id"], "payload": event["payload"]}
            )

        closed: Deferred[None] = request.notifyFinish()
        ended: list[Any] = []
        closed.addBoth(ended.append)
        watcher = await self.bus.watch(host, since, send_event)
        if watcher is None:
            send({"type": "relist", "reason": f"events after {since} are no longer kept"})
            request.finish()
            return
        self.log.info("agent {host} watching from {since}", host=host, since=since)
        send({"type": "heartbeat", "seq": watcher.last_sent})
        heartbeat = task.LoopingCall(lambda: send({"type": "heartbeat", "seq": max(watcher.last_sent, self.bus.watermark)}))
        heartbeat.clock = self.reactor
        heartbeat.start(self.heartbeat, now=False)
        try:
            await closed
        except Exception:
            pass  # the agent went away: that is how a watch ends
        finally:
            heartbeat.stop()
            self.bus.unwatch(watcher)
            self.log.info("agent {host} stopped watching at {seq}", host=host, seq=watcher.last_sent)
