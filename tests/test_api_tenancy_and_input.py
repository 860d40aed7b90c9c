"""Raw HTTP against /v2.0: tenancy, input validation, paths, paging links and token auth.

Every refused request must answer with a NeutronError body and leave the
database as it was; the tests check the latter by listing everything (as
admin) before and after.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from restproxy_testing.support import ServerProcess, uniq

MAX_BODY = 114688  # the default max_request_body_size
NO_KEYSTONE = "Running without keystone AuthN requires that tenant_id is specified"


def as_tenant(tenant: str, *roles: str) -> dict[str, str]:
    headers = {"X-Tenant-Id": tenant}
    if roles:
        headers["X-Roles"] = ",".join(roles)
    return headers


def raw_request(
    server: ServerProcess, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None, chunked: bool = False
) -> tuple[int, dict[str, str], Any]:
    """One request over http.client; returns status, headers (lower-case names) and the decoded body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if chunked:
            conn.putrequest(method, path)
            for name, value in {**all_headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(name, value)
            conn.endheaders()
            assert data is not None
            for start in range(0, len(data), 16384):
                piece = data[start : start + 16384]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=data, headers=all_headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, (json.loads(payload) if payload else None)
    finally:
        conn.close()


def assert_fault(status: int, body: Any, expected_status: int, expected_type: str | None = None) -> dict[str, str]:
    """The reply is ``expected_status`` with a well-formed NeutronError body; returns the error."""
    assert status == expected_status, body
    assert isinstance(body, dict) and list(body) == ["NeutronError"], body
    error = body["NeutronError"]
    assert set(error) == {"type", "message", "detail"}, error
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["detail"], str)
    if expected_type is not None:
        assert error["type"] == expected_type, error
    return error


def snapshot(server: ServerProcess) -> dict[str, list[dict[str, Any]]]:
    """Everything in the database, as the admin lists it."""
    state = {}
    for collection in ("networks", "subnets", "ports"):
        status, body = server.request("GET", f"/v2.0/{collection}?sort_key=id&sort_dir=asc")
        assert status == 200
        state[collection] = body[collection]
    return state


@pytest.fixture
def unchanged(server: ServerProcess) -> Iterator[None]:
    """Fails the test if the database differs after it."""
    before = snapshot(server)
    yield
    assert snapshot(server) == before


def create(server: ServerProcess, collection: str, attrs: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    singular = collection[:-1]
    status, body = server.request("POST", f"/v2.0/{collection}", {singular: attrs}, headers)
    assert status == 201, body
    return body[singular]


@pytest.fixture(scope="module")
def base(server: ServerProcess) -> dict[str, Any]:
    """A network, subnet and port that the input tests try (and fail) to change."""
    tenant = "input-tenant"
    net = create(server, "networks", {"name": "input-net", "tenant_id": tenant})
    subnet = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.60.0.0/24", "tenant_id": tenant})
    port = create(server, "ports", {"network_id": net["id"], "tenant_id": tenant, "mac_address": "fa:16:3e:60:00:01"})
    return {"tenant": tenant, "network": net, "subnet": subnet, "port": port}


# -- noauth tenancy -------------------------------------------------------------


def test_tenant_header_scopes_creates_and_lists(server: ServerProcess) -> None:
    a = uniq("ta")
    net = create(server, "networks", {"name": "mine"}, as_tenant(a))
    assert net["tenant_id"] == a and net["project_id"] == a
    status, body = server.request("GET", "/v2.0/networks", headers=as_tenant(a))
    assert status == 200
    assert {n["tenant_id"] for n in body["networks"]} == {a}

    via_project = create(server, "networks", {"name": "mine-too"}, {"X-Project-Id": a})
    assert via_project["tenant_id"] == a


def test_other_tenant_objects_are_invisible_and_untouchable(server: ServerProcess) -> None:
    a, b = uniq("ta"), uniq("tb")
    net = create(server, "networks", {"name": "private"}, as_tenant(a))
    subnet = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.61.0.0/24"}, as_tenant(a))
    port = create(server, "ports", {"network_id": net["id"]}, as_tenant(a))
    before = snapshot(server)
    other = as_tenant(b)

    for path, kind in (
        (f"/v2.0/networks/{net['id']}", "NetworkNotFound"),
        (f"/v2.0/subnets/{subnet['id']}", "SubnetNotFound"),
        (f"/v2.0/ports/{port['id']}", "PortNotFound"),
    ):
        assert_fault(*server.request("GET", path, headers=other), 404, kind)
        assert_fault(*server.request("PUT", path, {path.split("/")[2][:-1]: {"name": "stolen"}}, other), 404, kind)
        assert_fault(*server.request("DELETE", path, headers=other), 404, kind)

    for collection, item in (("networks", net), ("subnets", subnet), ("ports", port)):
        status, body = server.request("GET", f"/v2.0/{collection}?id={item['id']}", headers=other)
        assert (status, body[collection]) == (200, [])
        status, body = server.request("GET", f"/v2.0/{collection}?tenant_id={a}", headers=other)
        assert (status, body[collection]) == (200, [])

    # b cannot hang anything off a's private network either.
    assert_fault(
        *server.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.62.0.0/24"}}, other), 404
    )
    assert_fault(*server.request("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, other), 404, "NetworkNotFound")
    assert snapshot(server) == before


def test_non_admin_cannot_create_for_another_tenant(server: ServerProcess, unchanged: None) -> None:
    a, b = uniq("ta"), uniq("tb")
    error = assert_fault(*server.request("POST", "/v2.0/networks", {"network": {"name": "x", "tenant_id": a}}, as_tenant(b)), 403)
    assert "create_network" in error["message"]
    assert_fault(*server.request("POST", "/v2.0/networks", {"network": {"name": "x", "project_id": a}}, as_tenant(b)), 403)
    bulk = {"networks": [{"name": "ok"}, {"name": "not-ok", "tenant_id": a}]}
    assert_fault(*server.request("POST", "/v2.0/networks", bulk, as_tenant(b)), 403)


def test_admin_role_sees_and_acts_for_every_tenant(server: ServerProcess) -> None:
    a, admin_tenant = uniq("ta"), uniq("tadmin")
    net = create(server, "networks", {"name": "a-net"}, as_tenant(a))
    admin = as_tenant(admin_tenant, "member", "admin")
    status, body = server.request("GET", f"/v2.0/networks/{net['id']}", headers=admin)
    assert (status, body["network"]["id"]) == (200, net["id"])
    for_a = create(server, "networks", {"name": "made-by-admin", "tenant_id": a}, admin)
    assert for_a["tenant_id"] == a
    own = create(server, "networks", {"name": "admins-own"}, admin)
    assert own["tenant_id"] == admin_tenant
    status, body = server.request("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed-by-admin"}}, admin)
    assert (status, body["network"]["name"]) == (200, "renamed-by-admin")
    # A member role alone is no admin.
    assert_fault(*server.request("GET", f"/v2.0/networks/{net['id']}", headers=as_tenant(admin_tenant, "member")), 404)


def test_no_tenant_header_is_admin_that_must_name_the_tenant(server: ServerProcess, unchanged: None) -> None:
    for collection, item in (("networks", {"name": "nobody"}), ("ports", {"network_id": str(uuid.uuid4())})):
        error = assert_fault(*server.request("POST", f"/v2.0/{collection}", {collection[:-1]: item}), 400, "HTTPBadRequest")
        assert error["message"] == NO_KEYSTONE
    a = uniq("ta")
    other = create(server, "networks", {"name": "tenant-a"}, as_tenant(a))
    status, body = server.request("GET", f"/v2.0/networks?id={other['id']}")
    assert (status, [n["id"] for n in body["networks"]]) == (200, [other["id"]])
    status, body = server.request("DELETE", f"/v2.0/networks/{other['id']}")
    assert status == 204


def test_mismatched_tenant_and_project_id(server: ServerProcess, unchanged: None) -> None:
    body = {"network": {"name": "x", "tenant_id": "t1", "project_id": "t2"}}
    assert_fault(*server.request("POST", "/v2.0/networks", body), 400)


def test_shared_network_is_visible_and_usable_but_not_changeable(server: ServerProcess) -> None:
    owner, user = uniq("towner"), uniq("tuser")
    net = create(server, "networks", {"name": uniq("shared"), "tenant_id": owner, "shared": True})
    subnet = create(server, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.63.0.0/24", "tenant_id": owner})
    them = as_tenant(user)

    status, body = server.request("GET", "/v2.0/networks?shared=True", headers=them)
    assert status == 200 and net["id"] in [n["id"] for n in body["networks"]]
    status, body = server.request("GET", f"/v2.0/networks/{net['id']}", headers=them)
    assert (status, body["network"]["shared"]) == (200, True)
    status, body = server.request("GET", f"/v2.0/subnets?network_id={net['id']}", headers=them)
    assert (status, [s["id"] for s in body["subnets"]]) == (200, [subnet["id"]])

    port = create(server, "ports", {"network_id": net["id"], "name": "mine"}, them)
    assert port["tenant_id"] == user and port["fixed_ips"][0]["subnet_id"] == subnet["id"]
    status, body = server.request("GET", f"/v2.0/ports/{port['id']}", headers=them)
    assert status == 200
    status, body = server.request("PUT", f"/v2.0/ports/{port['id']}", {"port": {"name": "still-mine"}}, them)
    assert (status, body["port"]["name"]) == (200, "still-mine")

    before = snapshot(server)
    # It is visible, so changing it is forbidden rather than "not found" (as Neutron does).
    assert_fault(*server.request("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "taken"}}, them), 403)
    assert_fault(*server.request("DELETE", f"/v2.0/networks/{net['id']}", headers=them), 403)
    assert_fault(*server.request("PUT", f"/v2.0/subnets/{subnet['id']}", {"subnet": {"name": "taken"}}, them), 403)
    assert_fault(*server.request("DELETE", f"/v2.0/subnets/{subnet['id']}", headers=them), 403)
    # Adding subnets to it is for its owner only.
    body = {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.64.0.0/24"}}
    assert_fault(*server.request("POST", "/v2.0/subnets", body, them), 403)
    # Nor may a tenant pick addresses or MACs on a network it does not own.
    ip_body = {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.63.0.1"}]}}
    assert_fault(*server.request("POST", "/v2.0/ports", ip_body, them), 403)
    mac_body = {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:63:00:01"}}
    assert_fault(*server.request("POST", "/v2.0/ports", mac_body, them), 403)
    move = {"port": {"fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.63.0.1"}]}}
    assert_fault(*server.request("PUT", f"/v2.0/ports/{port['id']}", move, them), 403)
    # While another tenant uses it, the admin cannot unshare it.
    assert_fault(*server.request("PUT", f"/v2.0/networks/{net['id']}", {"network": {"shared": False}}), 409, "InvalidSharedSetting")
    assert snapshot(server) == before

    by_subnet = create(server, "ports", {"network_id": net["id"], "fixed_ips": [{"subnet_id": subnet["id"]}]}, them)
    assert by_subnet["fixed_ips"][0]["subnet_id"] == subnet["id"]


def test_non_admin_cannot_set_shared(server: ServerProcess) -> None:
    a = uniq("ta")
    before = snapshot(server)
    assert_fault(*server.request("POST", "/v2.0/networks", {"network": {"name": "s", "shared": True}}, as_tenant(a)), 403)
    assert snapshot(server) == before
    net = create(server, "networks", {"name": "s"}, as_tenant(a))
    assert_fault(*server.request("PUT", f"/v2.0/networks/{net['id']}", {"network": {"shared": True}}, as_tenant(a)), 403)
    status, body = server.request("GET", f"/v2.0/networks/{net['id']}", headers=as_tenant(a))
    assert (status, body["network"]["shared"]) == (200, False)


# -- bad input --------------------------------------------------------------------

NET = "{network}"
SUB = "{subnet}"
PORT = "{port}"
OTHER = "3f0b2a5e-1111-4222-8333-944455556666"


def _subnet_body(drop: str | None = None, **attrs: Any) -> dict[str, Any]:
    """A valid subnet create on the base network, with ``attrs`` changed and ``drop`` left out."""
    subnet = {"tenant_id": "t", "network_id": NET, "ip_version": 4, "cidr": "10.65.0.0/24", **attrs}
    subnet.pop(drop or "", None)
    return {"subnet": subnet}


def _port_body(**attrs: Any) -> dict[str, Any]:
    """A valid port create on the base network, plus ``attrs``."""
    return {"port": {"tenant_id": "t", "network_id": NET, **attrs}}


# (method, path, body or raw bytes, status, NeutronError type or None)
BAD_REQUESTS: list[tuple[str, str, Any, int, str | None]] = [
    # malformed or missing bodies
    ("POST", "/v2.0/networks", b"{not json", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b"", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b"[]", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b'"network"', 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b"\xff\xfe{}", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b"null", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b"[" * 50000 + b"]" * 50000, 400, "HTTPBadRequest"),  # nested deeper than the parser goes
    ("POST", "/v2.0/networks", b'{"network": ' * 5000 + b"{}" + b"}" * 5000, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", b"{not json", 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", b"", 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": "x"}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": None}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"subnet": {"tenant_id": "t"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t"}, "extra": {}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"networks": []}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"networks": {"tenant_id": "t"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"networks": ["x"]}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"networks": [{"name": "x"}]}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": ["name"]}, 400, "HTTPBadRequest"),
    # wrong types
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "name": 5}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "name": None}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "name": "n" * 256}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "admin_state_up": "maybe"}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "admin_state_up": 2}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "shared": None}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": 42}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "name": "nul\u0000name"}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t\u0000"}}, 400, "InvalidInput"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t" * 256}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"name": "\u0000"}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"device_id": "vm\u0000"}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"admin_state_up": "maybe"}}, 400, "InvalidInput"),
    # lone surrogates: no database can store them, wherever they are in the body
    ("POST", "/v2.0/networks", b'{"network": {"tenant_id": "t", "name": "\\ud800"}}', 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", b'{"networks": [{"tenant_id": "t"}, {"tenant_id": "t", "name": "\\udfff"}]}', 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/ports/{PORT}", b'{"port": {"device_id": "vm\\udbff"}}', 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/ports/{PORT}", b'{"port": {"binding:profile": {"netns": ["\\ud800"]}}}', 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"name": {"a": 1}}}, 400, "InvalidInput"),
    # unknown and read-only attributes
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "colour": "blue"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "id": OTHER}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "status": "DOWN"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "subnets": []}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/networks", {"network": {"tenant_id": "t", "created_at": "2013-01-01T00:00:00Z"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/ports", _port_body(status="ACTIVE"), 400, "HTTPBadRequest"),
    ("POST", "/v2.0/ports", _port_body(**{"binding:vif_type": "ovs"}), 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"colour": "blue"}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"id": OTHER}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"tenant_id": "thief"}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"status": "DOWN"}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/networks/{NET}", {"network": {"subnets": []}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"cidr": "10.65.0.0/24"}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"ip_version": 6}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"network_id": OTHER}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"network_id": OTHER}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"status": "ACTIVE"}}, 400, "HTTPBadRequest"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"tenant_id": "thief"}}, 400, "HTTPBadRequest"),
    # subnets
    ("POST", "/v2.0/subnets", _subnet_body(drop="network_id"), 400, "HTTPBadRequest"),
    ("POST", "/v2.0/subnets", _subnet_body(drop="ip_version"), 400, "HTTPBadRequest"),
    ("POST", "/v2.0/subnets", _subnet_body(drop="cidr"), 400, "HTTPBadRequest"),
    ("POST", "/v2.0/subnets", _subnet_body(network_id="nope"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=5), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version="four"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=True), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=4.5), 400, None),
    (
        "POST",
        "/v2.0/subnets",
        json.dumps(_subnet_body(ip_version=0)).replace('"ip_version": 0', '"ip_version": 1e400').encode(),
        400,
        "InvalidInput",
    ),
    ("POST", "/v2.0/subnets", _subnet_body(cidr="10.65.0.1/24"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr="10.65.0.0"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr="10.65.0.0/33"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr="10.65.0/24"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr=" 10.65.0.0/24"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr=167837696), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=6, cidr="fd00:65::1/64"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=6, cidr="fd00:65::/129"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(ip_version=6), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(cidr="10.60.0.0/25"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(gateway_ip="x"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(gateway_ip="fd00::1"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(enable_dhcp="x"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(allocation_pools={}), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(allocation_pools=[{"start": "10.65.0.9"}]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(allocation_pools=[{"start": "x", "end": "y"}]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(allocation_pools=[{"start": "10.65.0.2", "end": "10.65.0.9", "x": 1}]), 400, None),
    (
        "POST",
        "/v2.0/subnets",
        _subnet_body(allocation_pools=[{"start": "10.65.0.0", "end": "10.65.0.9"}]),
        400,
        "OutOfBoundsAllocationPool",
    ),
    ("POST", "/v2.0/subnets", _subnet_body(allocation_pools=[{"start": "fd00::2", "end": "fd00::9"}]), 400, "InvalidAllocationPool"),
    ("POST", "/v2.0/subnets", _subnet_body(dns_nameservers="8.8.8.8"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(dns_nameservers=["dns"]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(dns_nameservers=["fd00::53"]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(dns_nameservers=[f"10.0.0.{i}" for i in range(6)]), 400, "DNSNameServersExhausted"),
    ("POST", "/v2.0/subnets", _subnet_body(host_routes=[{"destination": "10.0.0.0/8", "nexthop": "x"}]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(host_routes=[{"destination": "10.0.0.1/8", "nexthop": "10.65.0.1"}]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(host_routes="10.0.0.0/8"), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(host_routes=[{"destination": "fd00::/8", "nexthop": "fd00::1"}]), 400, None),
    ("POST", "/v2.0/subnets", _subnet_body(network_id=OTHER), 404, "NetworkNotFound"),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"gateway_ip": "10.60.0.300"}}, 400, None),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"gateway_ip": "10.60.0.5"}}, 409, "GatewayConflictWithAllocationPools"),
    ("PUT", f"/v2.0/subnets/{SUB}", {"subnet": {"dns_nameservers": [f"10.0.0.{i}" for i in range(6)]}}, 400, "DNSNameServersExhausted"),
    (
        "PUT",
        f"/v2.0/subnets/{SUB}",
        {"subnet": {"host_routes": [{"destination": f"10.{i}.0.0/16", "nexthop": "10.60.0.1"} for i in range(21)]}},
        400,
        "HostRoutesExhausted",
    ),
    (
        "PUT",
        f"/v2.0/subnets/{SUB}",
        {"subnet": {"allocation_pools": [{"start": "10.60.0.9", "end": "10.60.0.2"}]}},
        400,
        "InvalidAllocationPool",
    ),
    # ports
    ("POST", "/v2.0/ports", {"port": {"tenant_id": "t"}}, 400, "HTTPBadRequest"),
    ("POST", "/v2.0/ports", _port_body(network_id="nope"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(network_id=OTHER), 404, "NetworkNotFound"),
    ("POST", "/v2.0/ports", _port_body(mac_address="zz:16:3e:00:00:01"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address="fa:16:3e:00:00"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address="00:00:00:00:00:00"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address="ff:ff:ff:ff:ff:ff"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address=" fa:16:3e:00:00:01"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address=42), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(mac_address="fa:16:3e:60:00:01"), 409, "MacAddressInUse"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips="10.60.0.5"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"subnet_id": "nope"}]), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"ip_address": "10.60.0.300"}]), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"ip_address": "10.60.0.255"}]), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"port": 1}]), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"subnet_id": OTHER}]), 404, "SubnetNotFound"),
    ("POST", "/v2.0/ports", _port_body(fixed_ips=[{"ip_address": f"10.60.0.{i}"} for i in range(10, 16)]), 400, None),
    ("POST", "/v2.0/ports", _port_body(device_id=5), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(admin_state_up="up"), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(**{"binding:profile": "x"}), 400, "InvalidInput"),
    ("POST", "/v2.0/ports", _port_body(**{"binding:host_id": ["h"]}), 400, "InvalidInput"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"mac_address": "not-a-mac"}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"fixed_ips": [{"ip_address": "10.99.0.1"}]}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"fixed_ips": {"ip_address": "10.60.0.7"}}}, 400, "InvalidInput"),
    ("PUT", f"/v2.0/ports/{PORT}", {"port": {"device_owner": None}}, 400, "InvalidInput"),
    # bad UUIDs in paths are unknown resources
    ("GET", "/v2.0/networks/not-a-uuid", None, 404, None),
    ("PUT", "/v2.0/networks/not-a-uuid", {"network": {"name": "x"}}, 404, None),
    ("DELETE", "/v2.0/networks/not-a-uuid", None, 404, None),
    ("GET", "/v2.0/subnets/1234", None, 404, None),
    ("DELETE", "/v2.0/ports/3f0b2a5e-1111-4222-8333-94445555666", None, 404, None),
    ("DELETE", "/v2.0/ports/3f0b2a5e-1111-4222-8333-9444555566667", None, 404, None),
    ("GET", "/v2.0/ports/%00", None, 404, None),
    # well-formed but unknown ids
    ("GET", f"/v2.0/networks/{OTHER}", None, 404, "NetworkNotFound"),
    ("PUT", f"/v2.0/subnets/{OTHER}", {"subnet": {"name": "x"}}, 404, "SubnetNotFound"),
    ("DELETE", f"/v2.0/ports/{OTHER}", None, 404, "PortNotFound"),
    # unknown paths
    ("GET", "/v2.0/routerz", None, 404, None),
    ("POST", "/v2.0/routerz", {"routerz": {}}, 404, None),
    ("GET", f"/v2.0/networks/{NET}/ports", None, 404, None),
    ("PUT", f"/v2.0/networks/{NET}/add_router_interface", {"subnet_id": SUB}, 404, None),
    ("GET", f"/v2.0/networks/{NET}/a/b", None, 404, None),
    ("GET", "/v2.0/extensions/no-such-extension", None, 404, None),
    ("GET", "/v3.0/networks", None, 404, None),
    ("GET", "/networks", None, 404, None),
    ("GET", "/v2.0/networks.xml", None, 404, None),
    # wrong methods
    ("DELETE", "/v2.0/networks", None, 405, None),
    ("PUT", "/v2.0/networks", {"network": {"name": "all"}}, 405, None),
    ("PATCH", "/v2.0/networks", {"network": {"name": "all"}}, 405, None),
    ("POST", f"/v2.0/networks/{NET}", {"network": {"name": "x"}}, 405, None),
    ("PATCH", f"/v2.0/ports/{PORT}", {"port": {"name": "x"}}, 405, None),
    ("POST", "/v2.0", {}, 405, None),
    ("DELETE", "/v2.0/extensions", None, 405, None),
    ("POST", "/", {}, 405, None),
    ("DELETE", "/", None, 405, None),
]


def _fill(text: str, base: dict[str, Any]) -> str:
    return text.replace(NET, base["network"]["id"]).replace(SUB, base["subnet"]["id"]).replace(PORT, base["port"]["id"])


def _fill_body(body: Any, base: dict[str, Any]) -> Any:
    if body is None:
        return body
    if isinstance(body, bytes):
        return body.replace(NET.encode(), base["network"]["id"].encode())
    return json.loads(_fill(json.dumps(body), base))


@pytest.mark.parametrize(("method", "path", "body", "status", "kind"), BAD_REQUESTS, ids=[f"{i:03d}" for i in range(len(BAD_REQUESTS))])
def test_refused_request_has_fault_body_and_changes_nothing(
    server: ServerProcess, base: dict[str, Any], unchanged: None, method: str, path: str, body: Any, status: int, kind: str | None
) -> None:
    body = _fill_body(body, base)
    data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    got_status, headers, got = raw_request(server, method, _fill(path, base), data)
    assert_fault(got_status, got, status, kind)
    assert headers["content-type"].startswith("application/json")
    if status == 405:
        assert headers.get("allow")


def test_admin_update_of_base_objects_still_works(server: ServerProcess, base: dict[str, Any]) -> None:
    """The refusals above are not because the objects cannot be changed at all."""
    status, body = server.request("PUT", f"/v2.0/ports/{base['port']['id']}", {"port": {"device_id": "probe"}})
    assert (status, body["port"]["device_id"]) == (200, "probe")
    status, body = server.request("PUT", f"/v2.0/ports/{base['port']['id']}", {"port": {"device_id": ""}})
    assert status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v2.0/networks?limit=-1",
        "/v2.0/networks?limit=abc",
        "/v2.0/networks?sort_key=nope&sort_dir=asc",
        "/v2.0/networks?sort_key=name&sort_dir=up",
        "/v2.0/networks?sort_key=name&sort_key=id&sort_dir=asc",
        "/v2.0/networks?page_reverse=perhaps&limit=1",
        "/v2.0/networks?admin_state_up=perhaps",
        "/v2.0/networks?name=%00",
        "/v2.0/networks?id=abc&id=%00",
        "/v2.0/subnets?ip_version=four",
        "/v2.0/subnets?ip_version=99999999999999999999",
        "/v2.0/ports?fixed_ips=10.0.0.1",
        "/v2.0/ports?fixed_ips=ip_address%3D%00",
        "/v2.0/ports?mac_address=not-a-mac",
    ],
)
def test_bad_query_parameters_are_400(server: ServerProcess, path: str) -> None:
    assert_fault(*server.request("GET", path), 400)


@pytest.mark.parametrize("marker", [OTHER, "not-a-uuid", "%00"])
def test_unknown_marker_is_404(server: ServerProcess, marker: str) -> None:
    assert_fault(*server.request("GET", f"/v2.0/networks?limit=1&marker={marker}"), 404, "NetworkNotFound")


def test_huge_limit_means_everything(server: ServerProcess) -> None:
    tenant = uniq("tlimit")
    ids = sorted(create(server, "networks", {"name": "l", "tenant_id": tenant})["id"] for _ in range(2))
    status, body = server.request("GET", f"/v2.0/networks?tenant_id={tenant}&sort_key=id&limit=99999999999999999999")
    assert status == 200 and [n["id"] for n in body["networks"]] == ids
    assert [link["rel"] for link in body["networks_links"]] == ["previous"]


def test_overlong_tenant_header_is_400(server: ServerProcess, unchanged: None) -> None:
    assert_fault(*server.request("POST", "/v2.0/networks", {"network": {"name": "long"}}, as_tenant("t" * 300)), 400, "InvalidInput")


@pytest.mark.parametrize("host", ["@dhcp", "@hosts", "@anything"])
def test_a_host_name_the_agent_channel_reserves_is_400(server: ServerProcess, base: dict[str, Any], unchanged: None, host: str) -> None:
    """Names starting with "@" key the DHCP agents' and every host agent's event streams: a port bound to one would
    send its events there."""
    port = {"network_id": base["network"]["id"], "tenant_id": base["tenant"], "binding:host_id": host}
    assert_fault(*server.request("POST", "/v2.0/ports", {"port": port}), 400, "InvalidInput")
    assert_fault(*server.request("PUT", f"/v2.0/ports/{base['port']['id']}", {"port": {"binding:host_id": host}}), 400, "InvalidInput")


def test_unknown_filters_are_ignored(server: ServerProcess, base: dict[str, Any]) -> None:
    status, body = server.request("GET", f"/v2.0/networks?id={base['network']['id']}&no_such_column=1")
    assert (status, [n["id"] for n in body["networks"]]) == (200, [base["network"]["id"]])


# -- oversized bodies --------------------------------------------------------------


def _network_body_of_size(size: int) -> bytes:
    head, tail = b'{"network": {"tenant_id": "big", "name": "', b'"}}'
    return head + b"n" * (size - len(head) - len(tail)) + tail


def test_body_at_the_limit_is_read(server: ServerProcess, unchanged: None) -> None:
    data = _network_body_of_size(MAX_BODY)
    assert len(data) == MAX_BODY
    # Read and validated: refused for its name, not its size.
    status, _, body = raw_request(server, "POST", "/v2.0/networks", data)
    assert_fault(status, body, 400, "InvalidInput")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(server: ServerProcess, base: dict[str, Any], unchanged: None, chunked: bool) -> None:
    data = _network_body_of_size(MAX_BODY + 1)
    status, _, body = raw_request(server, "POST", "/v2.0/networks", data, chunked=chunked)
    assert_fault(status, body, 413)
    big_update = json.dumps({"network": {"name": "x" * (MAX_BODY * 2)}}).encode()
    status, _, body = raw_request(server, "PUT", f"/v2.0/networks/{base['network']['id']}", big_update, chunked=chunked)
    assert_fault(status, body, 413)
    # The connection-level refusal leaves the server healthy.
    assert server.request("GET", "/v2.0/networks?limit=1")[0] == 200


# -- .json suffix (python-neutronclient < 6.3) --------------------------------------


def test_json_suffix_on_collection_and_member_paths(server: ServerProcess) -> None:
    tenant = uniq("tjson")
    status, body = server.request("POST", "/v2.0/networks.json", {"network": {"name": "j", "tenant_id": tenant}})
    assert status == 201
    net_id = body["network"]["id"]
    status, body = server.request("GET", f"/v2.0/networks/{net_id}.json")
    assert (status, body["network"]["id"]) == (200, net_id)
    status, body = server.request("PUT", f"/v2.0/networks/{net_id}.json", {"network": {"name": "j2"}})
    assert (status, body["network"]["name"]) == (200, "j2")
    status, body = server.request("GET", f"/v2.0/networks.json?tenant_id={tenant}")
    assert (status, [n["id"] for n in body["networks"]]) == (200, [net_id])
    status, body = server.request(
        "POST", "/v2.0/subnets.json", {"subnet": {"network_id": net_id, "tenant_id": tenant, "ip_version": 4, "cidr": "10.66.0.0/24"}}
    )
    assert status == 201
    subnet_id = body["subnet"]["id"]
    status, body = server.request("POST", "/v2.0/ports.json", {"port": {"network_id": net_id, "tenant_id": tenant}})
    assert status == 201
    port_id = body["port"]["id"]
    status, headers, body = raw_request(server, "DELETE", f"/v2.0/ports/{port_id}.json")
    assert (status, body) == (204, None) and "content-type" not in headers
    assert server.request("DELETE", f"/v2.0/subnets/{subnet_id}.json") == (204, None)
    assert server.request("DELETE", f"/v2.0/networks/{net_id}.json") == (204, None)
    assert_fault(*server.request("GET", f"/v2.0/networks/{net_id}.json"), 404, "NetworkNotFound")
    status, body = server.request("GET", "/v2.0.json")
    assert status == 200 and {r["collection"] for r in body["resources"]} >= {"networks", "subnets", "ports"}


def test_json_suffix_paging_links(server: ServerProcess) -> None:
    tenant = uniq("tjson")
    ids = {create(server, "networks", {"name": f"p{i}", "tenant_id": tenant})["id"] for i in range(3)}
    path, seen = f"/v2.0/networks.json?tenant_id={tenant}&limit=1", []
    for _ in range(10):
        status, body = server.request("GET", path)
        assert status == 200
        seen.extend(n["id"] for n in body["networks"])
        following = [link["href"] for link in body.get("networks_links", []) if link["rel"] == "next"]
        if not following:
            break
        parts = urlsplit(following[0])
        assert parts.path == "/v2.0/networks.json"
        path = f"{parts.path}?{parts.query}"
    assert sorted(seen) == sorted(ids)


# -- pagination links ---------------------------------------------------------------


def _links(body: dict[str, Any], collection: str = "networks") -> dict[str, tuple[str, dict[str, list[str]]]]:
    out = {}
    for link in body.get(f"{collection}_links", []):
        assert set(link) == {"rel", "href"}
        parts = urlsplit(link["href"])
        out[link["rel"]] = (f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query))
    return out


def test_pagination_links_shape(server: ServerProcess) -> None:
    tenant = uniq("tpage")
    ids = sorted(create(server, "networks", {"name": f"pl{i}", "tenant_id": tenant})["id"] for i in range(3))
    base_query = f"tenant_id={tenant}&sort_key=id&sort_dir=asc"
    collection_url = f"{server.url}/v2.0/networks"

    status, first = server.request("GET", f"/v2.0/networks?{base_query}&limit=2")
    assert status == 200
    assert [n["id"] for n in first["networks"]] == ids[:2]
    links = _links(first)
    assert set(links) == {"next", "previous"}
    next_url, next_q = links["next"]
    assert next_url == collection_url
    assert next_q == {"tenant_id": [tenant], "sort_key": ["id"], "sort_dir": ["asc"], "limit": ["2"], "marker": [ids[1]]}
    prev_url, prev_q = links["previous"]
    assert prev_url == collection_url
    assert prev_q["marker"] == [ids[0]] and prev_q["page_reverse"] == ["True"] and prev_q["limit"] == ["2"]

    status, second = server.request("GET", f"/v2.0/networks?{urlsplit(first['networks_links'][0]['href']).query}")
    assert status == 200 and [n["id"] for n in second["networks"]] == ids[2:]
    links = _links(second)
    assert set(links) == {"previous"}  # a short forward page has no next
    assert links["previous"][1]["marker"] == [ids[2]]

    back_href = next(link["href"] for link in second["networks_links"] if link["rel"] == "previous")
    status, back = server.request("GET", f"/v2.0/networks?{urlsplit(back_href).query}")
    assert status == 200 and [n["id"] for n in back["networks"]] == ids[:2]
    assert set(_links(back)) == {"next", "previous"}

    status, reverse = server.request("GET", f"/v2.0/networks?{base_query}&limit=2&page_reverse=True&marker={ids[1]}")
    assert status == 200 and [n["id"] for n in reverse["networks"]] == ids[:1]
    assert set(_links(reverse)) == {"next"}  # a short reverse page has no previous

    status, everything = server.request("GET", f"/v2.0/networks?{base_query}")
    assert status == 200 and [n["id"] for n in everything["networks"]] == ids and "networks_links" not in everything
    status, unlimited = server.request("GET", f"/v2.0/networks?{base_query}&limit=0")
    assert status == 200 and [n["id"] for n in unlimited["networks"]] == ids and "networks_links" not in unlimited


def test_pagination_with_fields_and_sorting(server: ServerProcess) -> None:
    tenant = uniq("tpage")
    for name in ("b", "a", "c"):
        create(server, "networks", {"name": name, "tenant_id": tenant})
    status, body = server.request("GET", f"/v2.0/networks?tenant_id={tenant}&sort_key=name&sort_dir=desc&limit=2&fields=name")
    assert status == 200 and body["networks"] == [{"name": "c"}, {"name": "b"}]
    _, next_query = _links(body)["next"]
    assert next_query["fields"] == ["name"] and next_query["sort_key"] == ["name"] and next_query["sort_dir"] == ["desc"]
    href = next(link["href"] for link in body["networks_links"] if link["rel"] == "next")
    status, rest = server.request("GET", f"/v2.0/networks?{urlsplit(href).query}")
    assert status == 200 and rest["networks"] == [{"name": "a"}]


def test_paging_sorted_by_a_column_with_nulls(server: ServerProcess) -> None:
    """Subnets without a gateway sort first on every backend, and paging neither skips nor fails on them."""
    tenant = uniq("tnull")
    net = create(server, "networks", {"name": "nulls", "tenant_id": tenant})
    gateways = [None, "10.67.1.1", None, "10.67.3.1", "10.67.4.1"]
    for i, gateway in enumerate(gateways):
        create(
            server,
            "subnets",
            {"network_id": net["id"], "tenant_id": tenant, "ip_version": 4, "cidr": f"10.67.{i}.0/24", "gateway_ip": gateway},
        )
    for direction, expected in (
        ("asc", [None, None, "10.67.1.1", "10.67.3.1", "10.67.4.1"]),
        ("desc", ["10.67.4.1", "10.67.3.1", "10.67.1.1", None, None]),
    ):
        status, body = server.request("GET", f"/v2.0/subnets?network_id={net['id']}&sort_key=gateway_ip&sort_dir={direction}")
        assert status == 200 and [s["gateway_ip"] for s in body["subnets"]] == expected
        path, seen = f"/v2.0/subnets?network_id={net['id']}&sort_key=gateway_ip&sort_dir={direction}&limit=1", []
        for _ in range(10):
            status, body = server.request("GET", path)
            assert status == 200, body
            seen.extend(s["gateway_ip"] for s in body["subnets"])
            following = [link["href"] for link in body["subnets_links"] if link["rel"] == "next"]
            if not following:
                break
            path = following[0][len(server.url) :]
        assert seen == expected


# -- token auth -----------------------------------------------------------------------

TOKENS = {"tok-a": {"tenant_id": "a", "roles": ["member"]}, "tok-admin": {"tenant_id": "admin-t", "roles": ["admin"]}}


@pytest.fixture(scope="module")
def token_server(db_url: str) -> Iterator[ServerProcess]:
    """A second server on the same database, with auth_strategy = token."""
    with tempfile.TemporaryDirectory() as tmp:
        tokens_path = os.path.join(tmp, "tokens.json")
        with open(tokens_path, "w") as f:
            json.dump(TOKENS, f)
        proc = ServerProcess(db_url, f"[DEFAULT]\nauth_strategy = token\napi_tokens_file = {tokens_path}\n").start()
        try:
            yield proc
        finally:
            proc.stop()


def _tok(token: str, **extra: str) -> dict[str, str]:
    return {"X-Auth-Token": token, **extra}


def test_token_auth_refuses_missing_and_unknown_tokens(token_server: ServerProcess, unchanged: None) -> None:
    status, body = token_server.request("GET", "/")
    assert status == 200 and body["versions"]
    for headers in ({}, _tok("nope"), _tok(""), {"X-Tenant-Id": "a", "X-Roles": "admin"}):
        assert_fault(*token_server.request("GET", "/v2.0/networks", headers=headers), 401)
        assert_fault(*token_server.request("POST", "/v2.0/networks", {"network": {"name": "x", "tenant_id": "a"}}, headers), 401)
        assert_fault(*token_server.request("GET", "/v2.0", headers=headers), 401)
    status, headers, body = raw_request(token_server, "GET", "/v2.0/ports", headers=_tok("tok-unknown"))
    assert_fault(status, body, 401)
    assert headers["content-type"].startswith("application/json")


def test_token_scopes_the_request(token_server: ServerProcess) -> None:
    name = uniq("tok")
    status, body = token_server.request("POST", "/v2.0/networks", {"network": {"name": name}}, _tok("tok-a"))
    assert status == 201 and body["network"]["tenant_id"] == "a"
    mine = body["network"]["id"]
    status, body = token_server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": "b"}}, _tok("tok-admin"))
    assert status == 201 and body["network"]["tenant_id"] == "b"
    theirs = body["network"]["id"]

    status, body = token_server.request("GET", f"/v2.0/networks?name={name}", headers=_tok("tok-a"))
    assert (status, [n["id"] for n in body["networks"]]) == (200, [mine])
    assert_fault(*token_server.request("GET", f"/v2.0/networks/{theirs}", headers=_tok("tok-a")), 404, "NetworkNotFound")
    status, body = token_server.request("GET", f"/v2.0/networks?name={name}", headers=_tok("tok-admin"))
    assert (status, sorted(n["id"] for n in body["networks"])) == (200, sorted([mine, theirs]))

    # Identity headers do not override the token.
    spoof = _tok("tok-a", **{"X-Tenant-Id": "admin-t", "X-Roles": "admin"})
    assert_fault(*token_server.request("GET", f"/v2.0/networks/{theirs}", headers=spoof), 404)
    assert_fault(*token_server.request("POST", "/v2.0/networks", {"network": {"name": name, "tenant_id": "b"}}, spoof), 403)
    assert_fault(*token_server.request("POST", "/v2.0/networks", {"network": {"name": name, "shared": True}}, spoof), 403)
    status, body = token_server.request("GET", f"/v2.0/networks?name={name}", headers=_tok("tok-admin"))
    assert len(body["networks"]) == 2
