"""Lists longer than one chunk (issue 15): streamed 1,000 ports at a time, and the same ports, order and links as paging gives.

The ports are written straight into the server's database (2,345 of them,
some with two fixed IPs in a stated order): creating them through the API
would take most of a minute here. Every streamed answer is checked against
the same list read through ``limit=100`` pages, which are not streamed.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlalchemy import create_engine, insert

from restproxy_testing.support import ServerProcess
from server_plugin.store.models import (
    Agent,
    AllowedAddressPair,
    IPAllocation,
    Network,
    Port,
    SecurityGroup,
    SecurityGroupPortBinding,
    Subnet,
)

PORTS = 2345


def _fill(db_url: str) -> None:
    engine = create_engine(db_url)
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    nets, subnets, ports, ips = [], [], [], []
    for n in range(3):
        net_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
        tenant = f"tenant{n % 2}"
        nets.append({"id": net_id, "tenant_id": tenant, "name": f"n{n}", "description": "", "admin_state_up": True, "status": "ACTIVE",
                     "shared": False, "created_at": now, "updated_at": now})  # fmt: skip
        subnets.append({"id": subnet_id, "tenant_id": tenant, "network_id": net_id, "name": "", "description": "", "ip_version": 4,
                        "cidr": f"10.{n}.0.0/16", "gateway_ip": f"10.{n}.0.1", "enable_dhcp": True,
                        "created_at": now, "updated_at": now})  # fmt: skip
        for i in range(n, PORTS, 3):
            port_id = str(uuid.uuid4())
            ports.append({"id": port_id, "tenant_id": tenant, "network_id": net_id, "name": f"p{i % 97:02d}", "description": "",
                          "mac_address": f"fa:16:3e:{n:02x}:{i >> 8:02x}:{i & 255:02x}", "admin_state_up": i % 5 != 0,
                          "status": "ACTIVE" if i % 2 else "DOWN", "device_id": f"vm-{i}", "device_owner": "compute:nova",
                          "binding_host_id": f"host-{i % 4}" if i % 3 else "", "binding_profile": '{"netns": "x"}' if i % 7 == 0 else "{}",
                          "created_at": now + datetime.timedelta(seconds=i), "updated_at": now})  # fmt: skip
            addresses = [f"10.{n}.{i >> 8}.{i & 255}"] + ([f"10.{n}.{200 + (i >> 8)}.{i & 255}"] if i % 4 == 0 else [])
            for position, address in reversed(list(enumerate(addresses))):  # inserted out of order: position decides
                ips.append({"subnet_id": subnet_id, "ip_address": address, "network_id": net_id, "port_id": port_id, "position": position})
    # Security groups (two on every 5th port, bound in the reverse of their id order), allowed address pairs (on
    # every 11th port, two of them, inserted against their position) and an agent that filters on host-1.
    groups = sorted(str(uuid.uuid4()) for _ in range(2))
    sg_rows = [
        {"id": g, "tenant_id": "tenant0", "name": f"g{i}", "description": "", "created_at": now, "updated_at": now}
        for i, g in enumerate(groups)
    ]
    bindings, pairs = [], []
    for i, port in enumerate(ports):
        if i % 5 == 0:
            bindings += [{"port_id": port["id"], "security_group_id": g, "host": port["binding_host_id"]} for g in reversed(groups)]
        if i % 11 == 0:
            pairs += [
                {"port_id": port["id"], "mac_address": "fa:16:3e:00:00:02", "ip_address": "10.9.0.0/24", "position": 1},
                {"port_id": port["id"], "mac_address": port["mac_address"], "ip_address": "10.8.0.7", "position": 0},
            ]
    agent = {"id": str(uuid.uuid4()), "agent_type": "Open vSwitch agent", "binary": "restproxy-agent", "topic": "N/A", "host": "host-1",
             "admin_state_up": True, "configurations": json.dumps({"firewall": "openflow"}, sort_keys=True),
             "created_at": now, "started_at": now, "heartbeat_timestamp": now}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(Network), nets)
        conn.execute(insert(Subnet), subnets)
        conn.execute(insert(Port), ports)
        conn.execute(insert(IPAllocation), ips)
        conn.execute(insert(SecurityGroup), sg_rows)
        conn.execute(insert(SecurityGroupPortBinding), bindings)
        conn.execute(insert(AllowedAddressPair), pairs)
        conn.execute(insert(Agent), [agent])
    engine.dispose()


@pytest.fixture(scope="module")
def filled(server: ServerProcess, db_url: str) -> Iterator[ServerProcess]:
    _fill(db_url)
    yield server


def _get(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    url = urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body) if body else None
    finally:
        conn.close()


def _paged(server: ServerProcess, query: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The whole list through ``limit=100`` pages and their next links (not streamed)."""
    items: list[dict[str, Any]] = []
    path = f"/v2.0/ports?limit=100{'&' + query if query else ''}"
    while True:
        status, _, body = _get(server, path, headers)
        assert status == 200, body
        items += body["ports"]
        following = [link["href"] for link in body.get("ports_links", []) if link["rel"] == "next"]
        if len(body["ports"]) < 100 or not following:
            return items
        path = following[0][len(server.url) :]


def test_a_full_list_is_streamed_and_holds_what_paging_holds(filled: ServerProcess) -> None:
    status, headers, body = _get(filled, "/v2.0/ports")
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert list(body) == ["ports"]
    assert len(body["ports"]) == PORTS
    assert body["ports"] == _paged(filled, "")
    ids = [p["id"] for p in body["ports"]]
    assert ids == sorted(ids)
    two = [p for p in body["ports"] if len(p["fixed_ips"]) == 2]
    assert two and all(int(p["fixed_ips"][0]["ip_address"].split(".")[2]) < 200 for p in two)  # position order
    assert {json.dumps(p["binding:profile"]) for p in body["ports"]} == {"{}", '{"netns": "x"}'}


def test_listed_ports_are_what_their_own_reads_show(filled: ServerProcess) -> None:
    """A list's fixed IPs, security groups, allowed address pairs and port_filter (the database writes them as JSON
    text for a list) are those a port's own GET shows, in the same order; a reversed page (read the other way) too."""
    _, _, body = _get(filled, "/v2.0/ports")
    listed = body["ports"]
    with_groups = [p for p in listed if p["security_groups"]]
    with_pairs = [p for p in listed if p["allowed_address_pairs"]]
    filtered = [p for p in listed if p["binding:vif_details"].get("port_filter")]
    assert len(with_groups) == len(range(0, PORTS, 5)) and len(with_pairs) == len(range(0, PORTS, 11))
    assert filtered and {p["binding:host_id"] for p in filtered} == {"host-1"}
    assert all(p["security_groups"] == sorted(p["security_groups"]) and len(p["security_groups"]) == 2 for p in with_groups)
    assert all([pair["ip_address"] for pair in p["allowed_address_pairs"]] == ["10.8.0.7", "10.9.0.0/24"] for p in with_pairs)
    two_ips = [p for p in listed if len(p["fixed_ips"]) == 2]
    sample = with_groups[:3] + with_pairs[:3] + filtered[:3] + two_ips[:3] + [p for p in listed if not p["security_groups"]][:3]
    for port in sample:
        status, _, own = _get(filled, f"/v2.0/ports/{port['id']}")
        assert status == 200 and own["port"] == port
    status, _, page = _get(filled, f"/v2.0/ports?limit=50&page_reverse=True&marker={listed[300]['id']}")
    assert status == 200 and page["ports"] == listed[250:300]


def test_a_long_sorted_page_has_the_links_and_items_of_paging(filled: ServerProcess) -> None:
    query = "sort_key=name&sort_dir=desc&sort_key=created_at&sort_dir=asc"
    everything = _paged(filled, query)
    status, headers, body = _get(filled, f"/v2.0/ports?limit=1300&{query}")
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body["ports"] == everything[:1300]
    [following] = [link["href"] for link in body["ports_links"] if link["rel"] == "next"]
    [previous] = [link["href"] for link in body["ports_links"] if link["rel"] == "previous"]
    assert f"marker={everything[1299]['id']}" in following and f"marker={everything[0]['id']}" in previous
    _, _, rest = _get(filled, following[len(filled.url) :])
    assert rest["ports"] == everything[1300:2600] and len(rest["ports"]) == PORTS - 1300
    assert [link["rel"] for link in rest["ports_links"]] == ["previous"]  # the last page: no next link, as Neutron


def test_a_marker_a_filter_and_fields_in_a_streamed_list(filled: ServerProcess) -> None:
    everything = _paged(filled, "")
    status, _, body = _get(filled, f"/v2.0/ports?marker={everything[99]['id']}&fields=id&fields=fixed_ips")
    assert status == 200 and body["ports"] == [{"id": p["id"], "fixed_ips": p["fixed_ips"]} for p in everything[100:]]
    status, _, body = _get(filled, "/v2.0/ports?admin_state_up=true&status=ACTIVE")
    assert body["ports"] == [p for p in everything if p["admin_state_up"] and p["status"] == "ACTIVE"]
    status, _, body = _get(filled, f"/v2.0/ports?marker={uuid.uuid4()}")
    assert status == 404 and body["NeutronError"]["type"] == "PortNotFound"


def test_a_tenant_streams_only_its_own_ports(filled: ServerProcess) -> None:
    headers = {"X-Tenant-Id": "tenant0"}
    status, _, body = _get(filled, "/v2.0/ports", headers)
    assert status == 200
    mine = body["ports"]
    assert len(mine) > 1000 and {p["tenant_id"] for p in mine} == {"tenant0"}
    assert mine == _paged(filled, "", headers)
    _, _, others = _get(filled, "/v2.0/ports", {"X-Tenant-Id": "tenant1"})
    assert len(mine) + len(others["ports"]) == PORTS


def _dechunked(response: bytes) -> bytes:
    """The body of a raw HTTP/1.1 response in chunked transfer encoding."""
    rest, body = response.split(b"\r\n\r\n", 1)[1], b""
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return body
        body, rest = body + rest[:size], rest[size + 2 :]


def test_a_client_that_stops_reading_or_leaves_mid_list_harms_nobody(filled: ServerProcess) -> None:
    """Back-pressure and a client gone mid-stream: the server keeps serving, logs no failure, holds no store thread."""
    url = urlparse(filled.url)
    stalled = socket.create_connection((url.hostname, url.port), timeout=30)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /v2.0/ports HTTP/1.1\r\nHost: x\r\n\r\n")
    leaver = socket.create_connection((url.hostname, url.port), timeout=30)
    leaver.sendall(b"GET /v2.0/ports HTTP/1.1\r\nHost: x\r\n\r\n")
    assert leaver.recv(2048).startswith(b"HTTP/1.1 200")
    leaver.close()
    for _ in range(20):  # more lists than the store has threads, while one client is stalled mid-list
        status, _, body = _get(filled, "/v2.0/ports")
        assert status == 200 and len(body["ports"]) == PORTS
    received = b""
    while not received.endswith(b"0\r\n\r\n"):
        data = stalled.recv(65536)
        assert data, "the stalled client's list was cut"
        received += data
    stalled.close()
    assert len(json.loads(_dechunked(received))["ports"]) == PORTS
    assert "Traceback" not in filled.log() and "failed; connection cut" not in filled.log()
