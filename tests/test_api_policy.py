"""The API's policy between tenants, and hostile input, against a real server on each database.

Who may set and see which attribute (server_plugin/policy.py), ids of objects
the caller cannot see answering exactly like unknown ids (store/access.py),
tenant ids, header bytes, lone surrogates and methods. Every refusal is also
checked to leave the database exactly as it was (a digest of all its rows).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing.support import ServerProcess
from tests.hostile import StoreDigest, build, send
from tests.test_api_tenancy_and_input import as_tenant, assert_fault, create, uniq

RANDOM = "3f0b2a5e-1111-4222-8333-944455556666"
BINDING = ("binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details")


@pytest.fixture(scope="module")
def digest(db_url: str) -> Iterator[StoreDigest]:
    d = StoreDigest(db_url)
    yield d
    d.close()


@pytest.fixture
def unchanged(server: ServerProcess, digest: StoreDigest) -> Iterator[None]:
    # agent_events is a log, not state: a create and delete inside a test leave their two events (the DHCP agents'
    # "@dhcp" ones, for any port on a network with DHCP); every table of state must be as it was.
    before = digest.rows()
    before.pop("agent_events")
    yield
    after = digest.rows()
    after.pop("agent_events")
    assert after == before


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> dict[str, Any]:
    """Tenant a: a private network, a shared one, a port bound to a host; tenant b: its own network; an external network."""
    a, b = uniq("pa"), uniq("pb")
    net_a = create(server, "networks", {"name": "a-private", "tenant_id": a})
    sub_a = create(server, "subnets", {"network_id": net_a["id"], "ip_version": 4, "cidr": "10.80.0.0/24", "tenant_id": a})
    bound = {"binding:host_id": "host-a", "binding:profile": {"netns": "ns-a"}}
    port_a = create(server, "ports", {"network_id": net_a["id"], "tenant_id": a, "device_id": "vm-a", **bound})
    shared = create(server, "networks", {"name": "a-shared", "tenant_id": a, "shared": True})
    sub_s = create(server, "subnets", {"network_id": shared["id"], "ip_version": 4, "cidr": "10.81.0.0/24", "tenant_id": a})
    ext = create(server, "networks", {"name": "ext", "tenant_id": "admin-t", "router:external": True})
    create(server, "subnets", {"network_id": ext["id"], "ip_version": 4, "cidr": "10.82.0.0/24", "tenant_id": "admin-t"})
    router_a = create(server, "routers", {"name": "a-router", "tenant_id": a})
    net_b = create(server, "networks", {"name": "b-net", "tenant_id": b})
    sub_b = create(server, "subnets", {"network_id": net_b["id"], "ip_version": 4, "cidr": "10.83.0.0/24", "tenant_id": b})
    port_b = create(server, "ports", {"network_id": net_b["id"], "tenant_id": b})
    router_b = create(server, "routers", {"name": "b-router", "tenant_id": b})
    status, _ = server.request("PUT", f"/v2.0/routers/{router_b['id']}/add_router_interface", {"subnet_id": sub_b["id"]})
    assert status == 200
    return {
        "a": a, "b": b, "net_a": net_a, "sub_a": sub_a, "port_a": port_a, "shared": shared, "sub_s": sub_s, "ext": ext,
        "router_a": router_a, "net_b": net_b, "sub_b": sub_b, "port_b": port_b, "router_b": router_b,
    }  # fmt: skip


# -- 1. binding:* is admin's, to set and to see ------------------------------------------------


def _policy_denied(status: int, body: Any, rule: str) -> None:
    error = assert_fault(status, body, 403, "PolicyNotAuthorized")
    assert error["message"] == f"(rule:{rule}) is disallowed by policy"


def test_binding_is_admin_only_to_set(server: ServerProcess, world: dict[str, Any], unchanged: None) -> None:
    b = as_tenant(world["b"])
    net = world["net_b"]["id"]
    for attr, value in (("binding:host_id", "victim-host"), ("binding:profile", {"netns": "/proc/1/ns/net"})):
        _policy_denied(*server.request("POST", "/v2.0/ports", {"port": {"network_id": net, attr: value}}, b), f"create_port:{attr}")
        bulk = {"ports": [{"network_id": net}, {"network_id": net, attr: value}]}
        _policy_denied(*server.request("POST", "/v2.0/ports", bulk, b), f"create_port:{attr}")
        own = world["port_b"]["id"]
        _policy_denied(*server.request("PUT", f"/v2.0/ports/{own}", {"port": {attr: value}}, b), f"update_port:{attr}")
        # Another tenant's port stays unknown: 404, not 403.
        other = world["port_a"]["id"]
        assert_fault(*server.request("PUT", f"/v2.0/ports/{other}", {"port": {attr: value}}, b), 404, "PortNotFound")
    # A member role is no admin; the admin role is.
    member = as_tenant(world["b"], "member")
    _policy_denied(
        *server.request("PUT", f"/v2.0/ports/{world['port_b']['id']}", {"port": {"binding:host_id": "h"}}, member),
        "update_port:binding:host_id",
    )


def test_binding_default_values_are_not_a_policy_matter(server: ServerProcess, world: dict[str, Any]) -> None:
    """As Neutron: an attribute given with its default value counts as not set."""
    b = as_tenant(world["b"])
    port = create(server, "ports", {"network_id": world["net_b"]["id"], "binding:host_id": "", "binding:profile": {}}, b)
    assert server.request("DELETE", f"/v2.0/ports/{port['id']}", headers=b)[0] == 204


def test_binding_is_admin_only_to_see(server: ServerProcess, world: dict[str, Any]) -> None:
    a, port_id = as_tenant(world["a"]), world["port_a"]["id"]
    status, body = server.request("GET", f"/v2.0/ports/{port_id}", headers=a)
    assert status == 200 and body["port"]["device_id"] == "vm-a"
    assert not set(BINDING) & set(body["port"])
    status, body = server.request("GET", f"/v2.0/ports/{port_id}?fields=id&fields=binding:host_id&fields=binding:profile", headers=a)
    assert (status, body["port"]) == (200, {"id": port_id})
    status, body = server.request("GET", "/v2.0/ports?fields=binding:host_id&fields=id", headers=a)
    assert status == 200 and body["ports"] and all(set(p) == {"id"} for p in body["ports"])
    status, body = server.request("GET", "/v2.0/ports", headers=a)
    assert all(not set(BINDING) & set(p) for p in body["ports"])
    # The replies to a tenant's own create and update do not show them either.
    mine = create(server, "ports", {"network_id": world["net_a"]["id"], "name": "x"}, a)
    assert not set(BINDING) & set(mine)
    status, body = server.request("PUT", f"/v2.0/ports/{mine['id']}", {"port": {"name": "y"}}, a)
    assert status == 200 and not set(BINDING) & set(body["port"])
    server.request("DELETE", f"/v2.0/ports/{mine['id']}", headers=a)
    # The admin sees everything.
    status, body = server.request("GET", f"/v2.0/ports/{port_id}")
    assert body["port"]["binding:host_id"] == "host-a" and body["port"]["binding:profile"] == {"netns": "ns-a"}
    assert body["port"]["binding:vif_type"] == "ovs"


def test_hidden_attributes_cannot_be_filtered_or_sorted_on(server: ServerProcess, world: dict[str, Any]) -> None:
    a = as_tenant(world["a"])
    _, everything = server.request("GET", "/v2.0/ports?fields=id", headers=a)
    for value in ("host-a", "no-such-host"):
        status, body = server.request("GET", f"/v2.0/ports?fields=id&binding:host_id={value}", headers=a)
        assert (status, body) == (200, everything), value  # the filter is not honoured: nothing depends on the value
    assert_fault(*server.request("GET", "/v2.0/ports?sort_key=binding:host_id&sort_dir=asc", headers=a), 400, "HTTPBadRequest")
    status, body = server.request("GET", "/v2.0/ports?binding:host_id=host-a")
    assert status == 200 and [p["id"] for p in body["ports"]] == [world["port_a"]["id"]]
    assert server.request("GET", "/v2.0/ports?sort_key=binding:host_id&sort_dir=asc")[0] == 200


# -- 2. infrastructure device owners -------------------------------------------------------------


def test_network_device_owner_is_for_admin_and_network_owner(server: ServerProcess, world: dict[str, Any], digest: StoreDigest) -> None:
    shared, b = world["shared"]["id"], as_tenant(world["b"])
    # On its own network a tenant is the network's owner; an ordinary owner stays anyone's. (Made before the refusals:
    # a create writes more than the port, e.g. the DHCP agents' events and the tenant's default security group.)
    mine = create(server, "ports", {"network_id": shared, "device_owner": "compute:nova"}, b)
    before = digest.rows()  # agent_events included: a refused bulk creates nothing, so no event either
    for owner in ("network:dhcp", "network:router_interface", "network:router_gateway", "network:floatingip", "network:anything"):
        body = {"port": {"network_id": shared, "device_owner": owner}}
        _policy_denied(*server.request("POST", "/v2.0/ports", body, b), "create_port:device_owner")
    bulk = {"ports": [{"network_id": shared}, {"network_id": shared, "device_owner": "network:dhcp"}]}
    _policy_denied(*server.request("POST", "/v2.0/ports", bulk, b), "create_port:device_owner")
    _policy_denied(
        *server.request("PUT", f"/v2.0/ports/{mine['id']}", {"port": {"device_owner": "network:dhcp"}}, b), "update_port:device_owner"
    )
    _policy_denied(
        *server.request("PUT", f"/v2.0/ports/{mine['id']}", {"port": {"mac_address": "fa:16:3e:81:00:09"}}, b), "update_port:mac_address"
    )
    _policy_denied(
        *server.request("POST", "/v2.0/ports", {"port": {"network_id": shared, "mac_address": "fa:16:3e:81:00:01"}}, b),
        "create_port:mac_address",
    )
    _policy_denied(
        *server.request("POST", "/v2.0/ports", {"port": {"network_id": shared, "fixed_ips": [{"ip_address": "10.81.0.1"}]}}, b),
        "create_port:fixed_ips:ip_address",
    )
    assert digest.rows() == before  # the refusals changed nothing
    assert server.request("DELETE", f"/v2.0/ports/{mine['id']}", headers=b)[0] == 204


def test_network_owner_may_create_infrastructure_ports(server: ServerProcess, world: dict[str, Any]) -> None:
    a = as_tenant(world["a"])
    dhcp = create(server, "ports", {"network_id": world["shared"]["id"], "device_owner": "network:dhcp"}, a)
    assert dhcp["device_owner"] == "network:dhcp"
    assert server.request("DELETE", f"/v2.0/ports/{dhcp['id']}", headers=a)[0] == 204


def test_external_network_is_visible_but_not_a_tenants_to_use(server: ServerProcess, world: dict[str, Any], unchanged: None) -> None:
    b, ext = as_tenant(world["b"]), world["ext"]["id"]
    assert server.request("GET", f"/v2.0/networks/{ext}", headers=b)[0] == 200
    assert_fault(*server.request("POST", "/v2.0/ports", {"port": {"network_id": ext}}, b), 403)
    body = {"subnet": {"network_id": ext, "ip_version": 4, "cidr": "10.89.0.0/24"}}
    assert_fault(*server.request("POST", "/v2.0/subnets", body, b), 403)


# -- 3 and 4. invisible objects answer exactly like unknown ones -----------------------------------


def _same_answer(server: ServerProcess, method: str, path: str, body: Any, hidden: str, headers: dict[str, str]) -> None:
    """The request naming ``hidden`` gets the answer of the request naming an id that does not exist."""
    fill = lambda text, value: text.replace("{id}", value)  # noqa: E731
    answers = []
    for value in (hidden, RANDOM):
        filled_body = json.loads(fill(json.dumps(body), value)) if body is not None else None
        status, reply = server.request(method, fill(path, value), filled_body, headers)
        answers.append((status, json.loads(json.dumps(reply).replace(value, "{id}"))))
    assert answers[0] == answers[1], (method, path, answers)
    assert answers[0][0] in (404, 420), answers[0]  # 420: v1.0's networkNotFound


def _invisible_cases(w: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, hidden id): each names one of tenant a's objects, asked by tenant b."""
    net_a, sub_a, port_a, router_a = w["net_a"]["id"], w["sub_a"]["id"], w["port_a"]["id"], w["router_a"]["id"]
    net_b, router_b, b = w["net_b"]["id"], w["router_b"]["id"], w["b"]
    return [
        # paths
        ("GET", "/v2.0/networks/{id}", None, net_a),
        ("PUT", "/v2.0/subnets/{id}", {"subnet": {"name": "x"}}, sub_a),
        ("DELETE", "/v2.0/ports/{id}", None, port_a),
        ("GET", "/v2.0/routers/{id}", None, router_a),
        ("PUT", "/v2.0/routers/{id}/add_router_interface", {"subnet_id": w["sub_b"]["id"]}, router_a),
        # markers
        ("GET", "/v2.0/ports?marker={id}&sort_key=mac_address&limit=1", None, port_a),
        ("GET", "/v2.0/ports?marker={id}&sort_key=device_id&sort_dir=desc", None, port_a),
        ("GET", "/v2.0/networks?marker={id}&sort_key=name", None, net_a),
        ("GET", "/v2.0/subnets?marker={id}", None, sub_a),
        ("GET", "/v2.0/routers?marker={id}", None, router_a),
        # ids in bodies
        ("POST", "/v2.0/ports", {"port": {"network_id": "{id}"}}, net_a),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": "{id}", "ip_version": 4, "cidr": "10.88.0.0/24"}}, net_a),
        ("POST", "/v2.0/ports", {"port": {"network_id": net_b, "fixed_ips": [{"subnet_id": "{id}"}]}}, sub_a),
        ("POST", "/v2.0/ports", {"ports": [{"network_id": net_b}, {"network_id": net_b, "fixed_ips": [{"subnet_id": "{id}"}]}]}, sub_a),
        ("PUT", f"/v2.0/ports/{w['port_b']['id']}", {"port": {"fixed_ips": [{"subnet_id": "{id}"}]}}, sub_a),
        ("PUT", f"/v2.0/routers/{router_b}/add_router_interface", {"subnet_id": "{id}"}, sub_a),
        ("PUT", f"/v2.0/routers/{router_b}/add_router_interface", {"port_id": "{id}"}, port_a),
        ("PUT", f"/v2.0/routers/{router_b}/remove_router_interface", {"subnet_id": "{id}"}, sub_a),
        ("POST", "/v2.0/routers", {"router": {"external_gateway_info": {"network_id": "{id}"}}}, net_a),
        ("PUT", f"/v2.0/routers/{router_b}", {"router": {"external_gateway_info": {"network_id": "{id}"}}}, net_a),
        ("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": "{id}"}}, net_a),
        ("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": w["ext"]["id"], "port_id": "{id}"}}, port_a),
        # the v1 API
        ("GET", f"/v1.1/tenants/{b}/networks/{{id}}", None, net_a),
        ("PUT", f"/v1.1/tenants/{b}/networks/{{id}}", {"network": {"name": "x"}}, net_a),
        ("POST", f"/v1.1/tenants/{b}/networks/{{id}}/ports", None, net_a),
        ("GET", f"/v1.1/tenants/{b}/networks/{net_b}/ports/{{id}}", None, port_a),
        ("PUT", f"/v1.1/tenants/{b}/networks/{net_b}/ports/{{id}}/attachment", {"attachment": {"id": "vif"}}, port_a),
        ("GET", f"/v1.0/tenants/{b}/networks/{{id}}/detail", None, net_a),
    ]


def test_ids_of_invisible_objects_answer_as_unknown_ids(server: ServerProcess, world: dict[str, Any], unchanged: None) -> None:
    b = as_tenant(world["b"])
    for method, path, body, hidden in _invisible_cases(world):
        _same_answer(server, method, path, body, hidden, b)


def test_visible_subnet_of_another_network_is_a_bad_request(server: ServerProcess, world: dict[str, Any], unchanged: None) -> None:
    """The shared network's subnet is b's to see: naming it for b's own network is then an input error (Neutron's 400)."""
    body = {"port": {"network_id": world["net_b"]["id"], "fixed_ips": [{"subnet_id": world["sub_s"]["id"]}]}}
    assert_fault(*server.request("POST", "/v2.0/ports", body, as_tenant(world["b"])), 400, "InvalidInput")


# -- 5. one tenant id rule for v1 and v2 -------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["t" * 256, "t" * 300, "%00", "t%ff"], ids=["256", "300", "nul", "latin1"])
def test_v1_and_v2_refuse_the_same_tenant_ids(server: ServerProcess, tenant: str, unchanged: None) -> None:
    for version in ("1.0", "1.1"):
        status, body = server.request("POST", f"/v1.{version[-1]}/tenants/{tenant}/networks", {"network": {"name": "n"}})
        assert status == 400, (version, body)
    if "%" not in tenant:
        assert_fault(*server.request("POST", "/v2.0/networks", {"network": {"name": "n", "tenant_id": tenant}}), 400, "InvalidInput")
        assert_fault(*server.request("GET", "/v2.0/networks", headers={"X-Tenant-Id": tenant}), 400, "InvalidInput")
    # The longest accepted tenant id is the same in both.
    longest = "t" * 255
    assert server.request("GET", f"/v1.1/tenants/{longest}/networks")[0] == 200


# -- 10. header bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"X-Tenant-Id", b"caf\xe9"),
        (b"X-Project-Id", b"\xff\xfe"),
        (b"X-Roles", b"adm\xefn"),
        (b"X-Tenant-Id", b"\xed\xa0\x80"),  # an encoded surrogate: not UTF-8 either
    ],
    ids=["tenant", "project", "roles", "surrogate"],
)
def test_undecodable_headers_are_400(server: ServerProcess, name: bytes, value: bytes, unchanged: None) -> None:
    for method, path, body in (
        (b"GET", b"/v2.0/networks?limit=1", None),
        (b"POST", b"/v2.0/networks", b'{"network": {"name": "h", "tenant_id": "t"}}'),
        (b"GET", b"/v1.1/tenants/t/networks", None),
        (b"GET", b"/admin/pool", None),
    ):
        headers = [(name, value), (b"Content-Type", b"application/json")]
        if name == b"Host":
            data = build(method, path, headers[1:], body).replace(b"Host: 127.0.0.1", b"Host: " + value)
        else:
            data = build(method, path, headers, body)
        status, _, reply = send(server.port, data)
        if path.startswith(b"/v1"):
            assert status == 400 and reply["QuantumError"]["type"] in ("HTTPBadRequest", "InvalidInput"), reply
        else:
            assert_fault(status, reply, 400)


def test_undecodable_host_is_400_where_links_are_made(server: ServerProcess) -> None:
    for path in (b"/", b"/v2.0", b"/v2.0/networks?limit=1"):
        status, _, reply = send(server.port, build(b"GET", path, []).replace(b"Host: 127.0.0.1", b"Host: h\xf6st"))
        assert_fault(status, reply, 400)


def test_undecodable_content_type_is_400_on_v1(server: ServerProcess, unchanged: None) -> None:
    data = build(b"POST", b"/v1.1/tenants/t/networks", [(b"Content-Type", b"application/j\xa7on")], b'{"network": {"name": "x"}}')
    status, _, reply = send(server.port, data)
    assert status == 400 and reply["QuantumError"]["type"] == "HTTPBadRequest"


@pytest.fixture(scope="module")
def token_server(db_url: str) -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens.json")
        with open(path, "w") as f:
            json.dump({"tok-a": {"tenant_id": "a", "roles": ["member"]}, "tok-admin": {"tenant_id": "x", "roles": ["admin"]}}, f)
        proc = ServerProcess(db_url, f"[DEFAULT]\nauth_strategy = token\napi_tokens_file = {path}\n").start()
        try:
            yield proc
        finally:
            proc.stop()


@pytest.mark.parametrize("token", [b"\xff\xfe\xfd", b"tok-\xe9", b"\xed\xa0\x80"], ids=["binary", "latin1", "surrogate"])
def test_undecodable_token_is_401(token_server: ServerProcess, token: bytes, unchanged: None) -> None:
    for path in (b"/v2.0/networks", b"/v1.1/tenants/a/networks", b"/admin/pool", b"/metrics"):
        status, _, reply = send(token_server.port, build(b"GET", path, [(b"X-Auth-Token", token)]))
        assert status == 401, (path, reply)
    status, _, reply = send(token_server.port, build(b"GET", b"/metrics", [(b"X-Auth-Token", b"tok-a")]))
    assert_fault(status, reply, 403)
    status, _, reply = send(token_server.port, build(b"GET", b"/metrics", [(b"X-Auth-Token", b"tok-admin")]))
    assert status == 200 and "quantum_api_request_seconds" in reply


# -- 11. lone surrogates ------------------------------------------------------------------------------

S = "\\ud800"  # as it appears in the JSON text
SURROGATE_REQUESTS = [
    ("POST", "/v2.0/networks", f'{{"network": {{"name": "{S}", "tenant_id": "t"}}}}'),
    ("POST", "/v2.0/networks", f'{{"network": {{"name": "x", "tenant_id": "t{S}"}}}}'),
    ("POST", "/v2.0/networks", f'{{"networks": [{{"name": "ok", "tenant_id": "t"}}, {{"name": "a{S}b", "tenant_id": "t"}}]}}'),
    ("POST", "/v2.0/networks", f'{{"network": {{"na{S}me": "x", "tenant_id": "t"}}}}'),
    ("PUT", "/v2.0/networks/{net}", '{"network": {"name": "\\udfff"}}'),
    ("POST", "/v2.0/ports", f'{{"port": {{"network_id": "{{net}}", "tenant_id": "t", "device_id": "vm{S}"}}}}'),
    ("POST", "/v2.0/ports", f'{{"port": {{"network_id": "{{net}}", "tenant_id": "t", "binding:profile": {{"netns": "{S}"}}}}}}'),
    ("POST", "/v2.0/ports", f'{{"port": {{"network_id": "{{net}}", "tenant_id": "t", "binding:profile": {{"{S}": 1}}}}}}'),
    ("PUT", "/v2.0/ports/{port}", f'{{"port": {{"binding:profile": {{"a": [{{"b": "{S}"}}]}}}}}}'),
    ("PUT", "/v2.0/ports/{port}", f'{{"port": {{"device_owner": "compute:{S}"}}}}'),
    ("POST", "/v2.0/routers", f'{{"router": {{"name": "{S}", "tenant_id": "t"}}}}'),
    ("POST", "/v1.1/tenants/t/networks", f'{{"network": {{"name": "{S}"}}}}'),
    ("PUT", "/v1.0/tenants/t/networks/{net}/ports/{port}/attachment", f'{{"attachment": {{"id": "vif{S}"}}}}'),
]


@pytest.mark.parametrize(("method", "path", "text"), SURROGATE_REQUESTS, ids=[f"{i:02d}" for i in range(len(SURROGATE_REQUESTS))])
def test_lone_surrogates_are_400(server: ServerProcess, world: dict[str, Any], method: str, path: str, text: str, unchanged: None) -> None:
    ids = {"{net}": world["net_a"]["id"], "{port}": world["port_a"]["id"]}
    for key, value in ids.items():
        path, text = path.replace(key, value), text.replace(key, value)
    tenant = [(b"X-Tenant-Id", world["a"].encode())] if "/v1." not in path else []
    data = build(method.encode(), path.encode(), [(b"Content-Type", b"application/json"), *tenant], text.encode())
    status, _, reply = send(server.port, data)
    assert status == 400, reply


# -- 12. methods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/metrics", "/", "/v2.0", "/v2.0/networks", "/admin/pool", "/v1.1/tenants/t/networks", "/v1.0/tenants/t/networks"]
)
def test_unknown_methods_get_json_405(server: ServerProcess, path: str, unchanged: None) -> None:
    for method in (b"PATCH", b"OPTIONS", b"TRACE", b"DELETE", b"CONNECT", b"PROPFIND", b"BREW"):
        status, headers, reply = send(server.port, build(method, path.encode(), []))
        assert status == 405, (method, path, reply)
        assert headers["content-type"].startswith("application/json") and isinstance(reply, dict), reply
        assert headers.get("allow"), headers


def test_metrics_are_for_admins_by_default(server: ServerProcess, world: dict[str, Any]) -> None:
    status, _, reply = send(server.port, build(b"GET", b"/metrics", [(b"X-Tenant-Id", world["b"].encode())]))
    assert_fault(status, reply, 403, "PolicyNotAuthorized")
    status, headers, reply = send(server.port, build(b"GET", b"/metrics", []))
    assert status == 200 and headers["content-type"].startswith("text/plain") and "quantum_api_request_seconds" in reply
    status, _, _ = send(server.port, build(b"GET", b"/metrics", [(b"X-Tenant-Id", b"ops"), (b"X-Roles", b"admin")]))
    assert status == 200


def test_tenant_cannot_set_other_admin_only_attributes(server: ServerProcess, world: dict[str, Any], unchanged: None) -> None:
    b = as_tenant(world["b"])
    ext = world["ext"]["id"]
    gateway = {"network_id": ext, "enable_snat": False}
    _policy_denied(
        *server.request("POST", "/v2.0/routers", {"router": {"external_gateway_info": gateway}}, b),
        "create_router:external_gateway_info:enable_snat",
    )
    _policy_denied(
        *server.request("PUT", f"/v2.0/routers/{world['router_b']['id']}", {"router": {"external_gateway_info": gateway}}, b),
        "update_router:external_gateway_info:enable_snat",
    )
    _policy_denied(
        *server.request("POST", "/v2.0/floatingips", {"floatingip": {"floating_network_id": ext, "floating_ip_address": "10.82.0.9"}}, b),
        "create_floatingip:floating_ip_address",
    )
    _policy_denied(*server.request("POST", "/v2.0/networks", {"network": {"router:external": True}}, b), "create_network:router:external")
    _policy_denied(
        *server.request("PUT", f"/v2.0/networks/{world['net_b']['id']}", {"network": {"shared": False}}, b), "update_network:shared"
    )


def test_policy_table_names_every_binding_attribute() -> None:
    from server_plugin import policy
    from server_plugin.attributes import PORTS

    for name in PORTS:
        if name.startswith("binding:"):
            assert not policy.attribute_policy("port", name).see.allows(_tenant_ctx(), None, None), name


def _tenant_ctx() -> Any:
    from server_plugin.context import RequestContext

    return RequestContext(tenant_id=str(uuid.uuid4()))


def test_plain_leaf_resources_answer_unknown_methods_with_json_405() -> None:
    """The root wraps any leaf that is not one of ours, so that no route can fall back to Twisted's HTML 405/501."""
    from twisted.web.test.requesthelper import DummyRequest

    from server_plugin.api.faults import neutron_fault
    from server_plugin.api.http import MethodGuard
    from server_plugin.metrics import MetricsResource

    request = DummyRequest([b"metrics"])
    request.method = b"PATCH"
    MethodGuard(MetricsResource(), neutron_fault).render(request)
    assert request.responseCode == 405 and request.finished
    assert sorted(request.responseHeaders.getRawHeaders(b"allow")[0].split(b", ")) == [b"GET", b"HEAD"]
    assert json.loads(b"".join(request.written))["NeutronError"]["type"] == "HTTPMethodNotAllowed"
