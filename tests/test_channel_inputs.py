"""Bad input on the agent channel: 400 or 401 with a NeutronError body, never a 500, and nothing changed; on every backend.

Covers the token header (any bytes), every numeric query parameter (``since``),
and RPC bodies: malformed JSON, non-objects, wrong types, lone surrogates, NUL,
non-finite numbers and over-long strings in each argument of each method.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing.channel_support import channel_server, raw_request, rpc, snapshot
from restproxy_testing.support import ServerProcess

NET, SUBNET, DHCP_PORT = "@net", "@subnet", "@dhcp-port"  # filled in from the fixture's objects
# A valid body per method (its string arguments are the ones spoiled below); what they name exists and is the caller's,
# so that only the spoilt value can be refused.
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "get_device_details": ("tok-h1", {"device": "tapabcdef0123", "host": "h1"}),
    "update_device_up": ("tok-h1", {"device": "tapabcdef0123", "host": "h1"}),
    "update_device_down": ("tok-h1", {"device": "tapabcdef0123", "host": "h1"}),
    "update_device_list": ("tok-h1", {"devices_up": ["tapabcdef0123"], "devices_down": ["tapabcdef0124"], "host": "h1"}),
    "get_devices_for_host": ("tok-h1", {"host": "h1"}),
    "report_state": ("tok-h1", {"agent_state": {"agent_type": "OVS agent", "binary": "b", "topic": "N/A", "configurations": {}}}),
    "get_active_networks": ("tok-dhcp1", {"host": "h1"}),
    "get_active_networks_info": ("tok-dhcp1", {"host": "h1"}),
    "get_network_info": ("tok-dhcp1", {"network_id": NET, "host": "h1"}),
    "get_dhcp_port": ("tok-dhcp1", {"network_id": NET, "device_id": "dhcp-1", "host": "h1"}),
    "create_dhcp_port": ("tok-dhcp1", {"port": {"port": {"network_id": NET, "name": "d"}}, "host": "h1"}),
    "update_dhcp_port": ("tok-dhcp1", {"port_id": DHCP_PORT, "port": {"port": {"name": "d"}}, "host": "h1"}),
    "release_dhcp_port": ("tok-dhcp1", {"network_id": NET, "device_id": "dhcp-1", "host": "h1"}),
    "release_port_fixed_ip": ("tok-dhcp1", {"network_id": NET, "device_id": "dhcp-1", "subnet_id": SUBNET, "host": "h1"}),
    "update_lease_expiration": ("tok-dhcp1", {"network_id": NET, "ip_address": "10.0.0.5", "host": "h1"}),
}


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[ServerProcess]:
    with channel_server(db_url) as server:
        status, net = server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": "t"}})
        net_id = net["network"]["id"]
        body = {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24", "tenant_id": "t"}}
        subnet_id = server.request("POST", "/v2.0/subnets", body)[1]["subnet"]["id"]
        port = rpc(server, "get_dhcp_port", {"network_id": net_id, "device_id": "dhcp-1"}, "tok-dhcp1")[1]["result"]
        server.names = {NET: net_id, SUBNET: subnet_id, DHCP_PORT: port["id"]}  # type: ignore[attr-defined]
        yield server


def _body(server: ServerProcess, method: str) -> tuple[str, Any]:
    token, body = BODIES[method]
    text = json.dumps(body)
    for name, value in server.names.items():  # type: ignore[attr-defined]
        text = text.replace(name, value)
    return token, json.loads(text)


def _strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every string (and list of strings) in a body."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _replace(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(body) if isinstance(body, list) else dict(body)
    copy[path[0]] = _replace(body[path[0]], path[1:], new)
    return copy


SURROGATE = "\ud800"
# Spoilt values, as JSON text (a lone surrogate, NaN and 1e999 cannot come from json.dumps of a valid value).
SPOILERS = {
    "lone surrogate": '"a\\ud800b"',
    "NUL": '"a\\u0000b"',
    "NaN": "NaN",
    "infinity": "1e999",
    "number": "5",
    "list": "[]",
    "object": "{}",
    "too long": json.dumps("x" * 300),
}


def _post(server: ServerProcess, method: str, token: str, raw: bytes) -> tuple[int, Any]:
    return server.request("POST", f"/agent/v1/rpc/{method}", raw=raw, headers={"X-Auth-Token": token})


@pytest.mark.parametrize("method", sorted(BODIES))
def test_every_spoilt_argument_of_every_method_is_a_400(server: ServerProcess, method: str) -> None:
    token, body = _body(server, method)
    before = snapshot(server)
    marker = "\x01spoil\x01"
    for path in _strings(body):
        for name, spoiler in SPOILERS.items():
            text = json.dumps(_replace(body, path, marker)).replace(json.dumps(marker), spoiler)
            status, answer = _post(server, method, token, text.encode())
            assert status == 400 and answer["NeutronError"]["type"] in ("InvalidInput", "HTTPBadRequest", "BadRequest"), (
                path, name, status, answer,
            )  # fmt: skip
    for raw in (b"{nope", b"[]", b'"x"', b"5", b"[" * 5000, b'{"device": "\xff\xfe"}', b'{"host": "\xed\xa0\x80"}'):
        status, answer = _post(server, method, token, raw)
        assert status == 400 and "NeutronError" in answer, (raw[:20], status, answer)
    assert snapshot(server) == before


@pytest.mark.parametrize(
    "since",
    ["%C2%B2", "%D9%A3", "x", "-1", "+1", "%201", "1.0", "0x1", "1e3", "9" * 5000, str(2**63), "", "1&since=0", "%00", "%FF", "1%00"],
)
def test_since_is_ascii_digits_within_int64(server: ServerProcess, since: str) -> None:
    head = f"GET /agent/v1/hosts/h1/watch?since={since} HTTP/1.0\r\nX-Auth-Token: tok-h1\r\n".encode()
    status, answer = raw_request(server, head, timeout=3)  # an accepted watch would stream (and time out here)
    assert status == 400 and answer["NeutronError"]["type"] == "HTTPBadRequest", answer


@pytest.mark.parametrize(
    "header",
    [
        b"X-Auth-Token: \xff\xfe",
        b"X-Auth-Token: tok-h1\xc3",
        b"Authorization: Bearer \xff",
        b"Authorization: \xff tok-h1",
        b"X-Auth-Token: \x80",
    ],
)
@pytest.mark.parametrize(
    "path", [b"GET /agent/v1/hosts/h1/ports", b"GET /agent/v1/hosts/h1/watch?since=0", b"POST /agent/v1/rpc/report_state"]
)
def test_a_token_header_that_is_not_utf8_is_a_401(server: ServerProcess, header: bytes, path: bytes) -> None:
    status, answer = raw_request(server, path + b" HTTP/1.0\r\nHost: t\r\n" + header + b"\r\n", b"{}" if path.startswith(b"POST") else b"")
    assert status == 401 and answer["NeutronError"]["type"] == "HTTPUnauthorized", answer


def test_the_agent_state_is_checked_before_it_is_stored(server: ServerProcess) -> None:
    good = {"agent_type": "OVS agent", "binary": "b"}
    for state in (
        dict(good, agent_type="x" * 300), dict(good, topic=5), dict(good, start_flag="yes"), dict(good, configurations=[]),
        dict(good, binary=""), {"agent_type": "x"},
    ):  # fmt: skip
        status, answer = rpc(server, "report_state", {"agent_state": state}, "tok-h1")
        assert status == 400, (state, answer)
    assert server.request("GET", "/v2.0/agents")[1]["agents"] == []


@pytest.mark.parametrize("host", ["x" * 300])  # (the path is not percent-decoded: "%00" is just a name)
@pytest.mark.parametrize("what", ["ports", "watch?since=0"])
def test_a_host_in_the_path_longer_than_a_column_is_a_400(server: ServerProcess, host: str, what: str) -> None:
    head = f"GET /agent/v1/hosts/{host}/{what} HTTP/1.0\r\nX-Auth-Token: tok-admin\r\n".encode()
    status, answer = raw_request(server, head, timeout=3)
    assert status == 400 and answer["NeutronError"]["type"] == "InvalidInput", answer
