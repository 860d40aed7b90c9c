"""Nova's port events against a stand-in Nova (restproxy_testing/nova_standin.py) whose tokens the real Keystone
checks, and whose URL the server finds in Keystone's catalog: plugged on ACTIVE (the agent's update_device_up),
unplugged on unbind (the agent's update_device_down), deleted on delete, batching, retry while Nova is down,
no loss across a kill -9, and two servers on one database sending each event once.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from restproxy_testing import keystone as ks
from restproxy_testing.nova_standin import NovaStandin
from restproxy_testing.support import ServerProcess, wait_for

PASSWORD = "pw-" + uuid.uuid4().hex[:8]
AGENT_TOKEN = "tok-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def keystone() -> Iterator[ks.Keystone]:
    k = ks.Keystone().setup()
    try:
        k.user("nova-notifier", PASSWORD, "service", roles=("admin", "service"))
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def nova(keystone: ks.Keystone) -> Iterator[NovaStandin]:
    standin = NovaStandin(keystone.url).start()
    keystone.endpoint("compute", "nova", standin.url + "/v2.1")
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture(scope="module")
def tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="qrp-nova-test-") as d:
        yield d


def nova_config(k: ks.Keystone, tmp: str) -> str:
    tokens = os.path.join(tmp, "agents.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": {AGENT_TOKEN: {"host": "h1", "kind": "agent"}}}, f)
    return f"""
[DEFAULT]
notify_nova_on_port_status_changes = true
send_events_interval = 0.5
[nova]
auth_url = {k.url}/v3
auth_type = password
username = nova-notifier
password = {PASSWORD}
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
endpoint_type = internal
timeout = 10
[AGENT]
agent_tokens_file = {tokens}
"""


@pytest.fixture(scope="module")
def server(db_url: str, keystone: ks.Keystone, nova: NovaStandin, tmp: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(db_url, nova_config(keystone, tmp)).start()
    try:
        yield proc
    finally:
        print(proc.log()[-6000:])  # shown with a failure
        proc.stop()


@pytest.fixture(scope="module")
def net(server: ServerProcess) -> str:
    _, body = server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
    net_id = body["network"]["id"]
    server.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.9.0.0/16", "tenant_id": "t"}})
    return str(net_id)


def vm_port(server: ServerProcess, net: str, owner: str = "compute:nova") -> tuple[str, str]:
    """A port of a new VM bound to host h1: (port id, server uuid)."""
    vm = str(uuid.uuid4())
    body = {"network_id": net, "tenant_id": "t", "device_id": vm, "device_owner": owner, "binding:host_id": "h1"}
    status, port = server.request("POST", "/v2.0/ports", {"port": body})
    assert status == 201, port
    return port["port"]["id"], vm


def rpc(server: ServerProcess, method: str, **kwargs: Any) -> Any:
    status, body = server.request("POST", f"/agent/v1/rpc/{method}", dict(kwargs, host="h1"), {"X-Auth-Token": AGENT_TOKEN})
    assert status == 200, body
    return body


def events_of(nova: NovaStandin, port_id: str) -> list[dict[str, Any]]:
    return [e for e in nova.events() if e["tag"] == port_id]


def wait_event(nova: NovaStandin, port_id: str, name: str, timeout: float = 45) -> dict[str, Any]:
    found = wait_for(f"{name} for {port_id}", lambda: [e for e in events_of(nova, port_id) if e["name"] == name], timeout=timeout)
    return dict(found[0])


def pending(server: ServerProcess) -> list[Any]:
    engine = create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT tag, name, attempts FROM nova_events")))
    finally:
        engine.dispose()


def test_plugged_on_active_with_a_token_keystone_accepts(server: ServerProcess, nova: NovaStandin, keystone: ks.Keystone, net: str) -> None:
    port_id, vm = vm_port(server, net)
    other_id, _ = vm_port(server, net, owner="network:dhcp")
    rpc(server, "update_device_up", device="tap" + port_id[:11])
    rpc(server, "update_device_up", device=other_id)
    event = wait_event(nova, port_id, "network-vif-plugged")
    assert event == {"name": "network-vif-plugged", "server_uuid": vm, "tag": port_id, "status": "completed"}
    batch = next(b for b in nova.batches() if event in b["events"])
    assert batch["user_id"] == keystone.admin("GET", "/v3/users?name=nova-notifier")["users"][0]["id"]
    rpc(server, "update_device_up", device=port_id)  # ACTIVE again: no new event
    wait_for("the journal to empty", lambda: not pending(server))
    assert events_of(nova, port_id) == [event] and events_of(nova, other_id) == []
    assert f"nova event network-vif-plugged (completed) for port {port_id} of server {vm}: 200" in server.log()
    assert server.log().count(f"for port {port_id} of server") == 1  # logged once
    assert PASSWORD not in server.log()


def test_unplugged_on_unbind_and_deleted_on_delete(server: ServerProcess, nova: NovaStandin, net: str) -> None:
    port_id, vm = vm_port(server, net)
    rpc(server, "update_device_up", device=port_id)
    wait_event(nova, port_id, "network-vif-plugged")
    status, _ = server.request("PUT", f"/v2.0/ports/{port_id}", {"port": {"binding:host_id": ""}})
    assert status == 200
    rpc(server, "update_device_down", device=port_id)  # the agent unplugs the unbound port and says so
    event = wait_event(nova, port_id, "network-vif-unplugged")
    assert event == {"name": "network-vif-unplugged", "server_uuid": vm, "tag": port_id, "status": "completed"}
    assert server.request("DELETE", f"/v2.0/ports/{port_id}")[0] == 204
    event = wait_event(nova, port_id, "network-vif-deleted")
    assert event == {"name": "network-vif-deleted", "server_uuid": vm, "tag": port_id, "status": "completed"}
    assert [e["name"] for e in events_of(nova, port_id)] == ["network-vif-plugged", "network-vif-unplugged", "network-vif-deleted"]


def test_events_are_batched(server: ServerProcess, nova: NovaStandin, net: str) -> None:
    ports = [vm_port(server, net)[0] for _ in range(6)]
    rpc(server, "update_device_list", devices_up=ports, devices_down=[])  # one transaction: one batch
    wait_for("all six events", lambda: all(events_of(nova, p) for p in ports))
    batches = [b for b in nova.batches() if any(e["tag"] in ports for e in b["events"])]
    assert len(batches) == 1 and sorted(e["tag"] for e in batches[0]["events"]) == sorted(ports)


def test_retried_while_nova_is_down_and_kept_across_kill_9(server: ServerProcess, nova: NovaStandin, net: str) -> None:
    port_id, vm = vm_port(server, net)
    nova.stop()
    try:
        rpc(server, "update_device_up", device=port_id)
        wait_for("a failed attempt", lambda: any(row[0] == port_id and row[2] >= 1 for row in pending(server)), timeout=20)
        assert "Nova unreachable" in server.log()
        server.restart(kill=True)  # the event is in the store, not in the dead server's memory
        later_id, _ = vm_port(server, net)
        rpc(server, "update_device_up", device=later_id)
        wait_for("the new server's failed attempt", lambda: any(row[0] == later_id and row[2] >= 1 for row in pending(server)), timeout=20)
    finally:
        nova.start()
    event = wait_event(nova, port_id, "network-vif-plugged", timeout=90)  # backoff: at most RETRY_MAX (60 s) away
    assert event["server_uuid"] == vm
    wait_event(nova, later_id, "network-vif-plugged", timeout=90)
    wait_for("the journal to empty", lambda: not pending(server))
    assert len(events_of(nova, port_id)) == 1 and len(events_of(nova, later_id)) == 1


def test_two_servers_on_one_database_send_each_event_once(
    server: ServerProcess, nova: NovaStandin, keystone: ks.Keystone, net: str, tmp: str
) -> None:
    other = ServerProcess(server.db_url, nova_config(keystone, tmp)).start()
    try:
        ports = []
        for i in range(8):
            port_id, _ = vm_port(server if i % 2 else other, net)
            rpc(server if i % 2 else other, "update_device_up", device=port_id)
            ports.append(port_id)
        wait_for("all eight events", lambda: all(events_of(nova, p) for p in ports), timeout=30)
        wait_for("the journal to empty", lambda: not pending(server))
        assert all(len(events_of(nova, p)) == 1 for p in ports)
    finally:
        other.stop()
