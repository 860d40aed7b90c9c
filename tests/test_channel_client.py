"""The agent's channel client: PortWatch lists, watches, and resumes across server restarts without losing events."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from restproxy_agent.channel import ChannelClient, ChannelError, PortWatch
from restproxy_testing.support import ServerProcess

# A reconnect waits out the backoff, which grows while a restart lasts, up to 10 s plus 1 s of jitter: on a loaded
# machine a slow restart can reach that step.
RECONNECT_WAIT = 25.0


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, 0.05)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_portwatch_resumes_across_restarts_and_kills() -> None:
    tmp = tempfile.mkdtemp()
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": {"tok": {"host": "h1"}}}, f)
    server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[AGENT]\nagent_tokens_file = {tokens}\nagent_watch_heartbeat = 1\n")
    await deferToThread(server.start)
    listed: list[tuple[int, list[dict[str, Any]]]] = []
    events: list[dict[str, Any]] = []
    client = ChannelClient(server.url, "tok", "h1", reactor, timeout=5)
    watch = PortWatch(client, lambda seq, ports: listed.append((seq, ports)), events.append, reactor, stall_timeout=5)
    try:
        _, net = await deferToThread(server.request, "POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
        net_id = net["network"]["id"]
        await deferToThread(
            server.request,
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24", "tenant_id": "t"}},
        )

        async def port() -> str:
            body = {"port": {"network_id": net_id, "tenant_id": "t", "binding:host_id": "h1", "security_groups": []}}
            status, created = await deferToThread(server.request, "POST", "/v2.0/ports", body)
            assert status == 201
            return created["port"]["id"]

        first = await port()
        watch.startService()
        await _until(lambda: listed and watch.connected)
        assert [p["id"] for p in listed[0][1]] == [first]
        second = await port()
        await _until(lambda: len(events) == 1)
        await deferToThread(server.restart)
        third = await port()  # made while the watch is reconnecting
        await _until(lambda: len(events) == 2, RECONNECT_WAIT)
        await deferToThread(server.restart, True)  # SIGKILL
        fourth = await port()
        await _until(lambda: len(events) == 3, RECONNECT_WAIT)
        assert [e["object_id"] for e in events] == [second, third, fourth]
        assert len(listed) == 1  # resumed, never re-listed
        assert watch.reconnects >= 2
        result = await client.call("update_device_up", device=fourth, host="h1")
        assert result["status"] == "ACTIVE"
        try:
            await client.call("update_device_up", device=fourth, host="h2")
        except ChannelError as e:
            assert e.status == 403
        else:
            raise AssertionError("another host's report was accepted")
    finally:
        await watch.stopService()
        await deferToThread(server.stop)


@pytest_twisted.ensureDeferred
async def test_channel_over_tls_verifies_the_server() -> None:
    from restproxy_common.tls import ControllerTLSPolicy
    from tests.test_controller_tls_profiles import PKI

    tmp = tempfile.mkdtemp()
    pki = PKI(tmp)
    ca, other_ca = pki.ca("a"), pki.ca("b")
    key, cert = pki.leaf("server", "a")
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": {"tok": {"host": "h1"}}}, f)
    server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=f"[AGENT]\nagent_tokens_file = {tokens}\n", tls=(key, cert, ca))
    await deferToThread(server.start)
    try:
        assert server.url.startswith("https://")
        good = ChannelClient(server.url, "tok", "h1", reactor, timeout=5, tls_policy=ControllerTLSPolicy(ca_file=ca))
        seq, ports = await good.list_ports()
        assert (seq, ports) == (0, [])
        await good.close()
        wrong = ChannelClient(server.url, "tok", "h1", reactor, timeout=5, tls_policy=ControllerTLSPolicy(ca_file=other_ca))
        try:
            await wrong.list_ports()
        except Exception as e:
            assert "certificate" in repr(e).lower() or "ssl" in repr(e).lower(), e
        else:
            raise AssertionError("a server signed by an untrusted CA was accepted")
        await wrong.close()
    finally:
        await deferToThread(server.stop)


@pytest_twisted.ensureDeferred
async def test_portwatch_resumes_after_the_server_closes_its_watch() -> None:
    """A watch the server closes (here: a second watch of the same token over the cap) resumes from its last event."""
    from restproxy_testing.channel_support import open_raw_watch

    tmp = tempfile.mkdtemp()
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": {"tok": {"host": "h1"}}}, f)
    config = f"[AGENT]\nagent_tokens_file = {tokens}\nagent_watch_heartbeat = 1\nagent_max_watches_per_token = 1\n"
    server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=config)
    await deferToThread(server.start)
    events: list[dict[str, Any]] = []
    listed: list[Any] = []
    client = ChannelClient(server.url, "tok", "h1", reactor, timeout=5)
    watch = PortWatch(client, lambda seq, ports: listed.append(seq), events.append, reactor, stall_timeout=5)
    try:
        _, net = await deferToThread(server.request, "POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
        body = {"port": {"network_id": net["network"]["id"], "tenant_id": "t", "binding:host_id": "h1", "security_groups": []}}
        watch.startService()
        await _until(lambda: watch.connected)
        await deferToThread(server.request, "POST", "/v2.0/ports", body)
        await _until(lambda: len(events) == 1)
        reconnects = watch.reconnects
        stray = await deferToThread(open_raw_watch, server, "h1", 0, "tok")  # closes the agent's watch
        await _until(lambda: watch.reconnects > reconnects and watch.connected)
        stray.close()
        await deferToThread(server.request, "POST", "/v2.0/ports", body)
        await _until(lambda: len(events) == 2)
        assert [e["seq"] for e in events] == sorted({e["seq"] for e in events}) and len(listed) == 1
    finally:
        await watch.stopService()
        await deferToThread(server.stop)
