"""The v1.0 and v1.1 REST API over HTTP, against a real quantum-server on every backend.

Every row of the v1 table (quantum-api-facts section 5) in both versions: status
codes, bodies, fault bodies, the v1.1 filters and tenancy. Each test works in
its own tenant, so they share one server per backend.
"""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any

import pytest

from restproxy_testing.support import ServerProcess

VERSIONS = ("1.0", "1.1")
CODES = {
    "1.0": {"created": 200, "NetworkNotFound": 420, "NetworkInUse": 421, "PortNotFound": 430, "StateInvalid": 431, "PortInUse": 432,
            "AlreadyAttached": 440},
    "1.1": {"created": 202, "NetworkNotFound": 404, "NetworkInUse": 409, "PortNotFound": 404, "StateInvalid": 400, "PortInUse": 409,
            "AlreadyAttached": 409},
}  # fmt: skip
V10_NAMES = {
    "NetworkNotFound": "networkNotFound",
    "NetworkInUse": "networkInUse",
    "PortNotFound": "portNotFound",
    "StateInvalid": "requestedStateInvalid",
    "PortInUse": "portInUse",
    "AlreadyAttached": "alreadyAttached",
}
V11_TYPES = {"StateInvalid": "RequestedStateInvalid"}


class Tenant:
    """Requests to /v{version}/tenants/{tenant} as that tenant (noauth headers)."""

    def __init__(self, server: ServerProcess, version: str, tenant: str | None = None) -> None:
        self.server = server
        self.version = version
        self.id = tenant or f"t-{uuid.uuid4().hex[:10]}"
        self.codes = CODES[version]

    def __call__(
        self, method: str, path: str, body: Any = None, as_tenant: str | None = None, raw: bytes | None = None, admin: bool = False
    ) -> tuple[int, Any]:
        headers = {} if admin else {"X-Tenant-Id": as_tenant or self.id}
        return self.server.request(method, f"/v{self.version}/tenants/{self.id}{path}", body, headers=headers, raw=raw)

    def network(self, name: str = "net") -> str:
        status, body = self("POST", "/networks", {"network": {"name": name}})
        assert status == self.codes["created"], body
        return body["network"]["id"]

    def port(self, net_id: str, state: str | None = None) -> str:
        status, body = self("POST", f"/networks/{net_id}/ports", {"port": {"state": state}} if state else None)
        assert status == self.codes["created"], body
        return body["port"]["id"]

    def plug(self, net_id: str, port_id: str, vif: str) -> None:
        status, body = self("PUT", f"/networks/{net_id}/ports/{port_id}/attachment", {"attachment": {"id": vif}})
        assert status == 204, body

    def assert_fault(self, status: int, body: Any, kind: str, detail: str | None = None) -> None:
        """The version's fault for a v1 exception (420 networkNotFound / 404 QuantumError NetworkNotFound ...)."""
        code = self.codes[kind]
        assert status == code, body
        if self.version == "1.0":
            assert list(body) == [V10_NAMES[kind]]
            fault = body[V10_NAMES[kind]]
            assert fault["code"] == code
        else:
            assert list(body) == ["QuantumError"]
            fault = body["QuantumError"]
            assert fault["type"] == V11_TYPES.get(kind, kind)
        assert fault["message"]
        if detail is not None:
            assert detail in fault["detail"]

    def assert_generic(self, status: int, body: Any, code: int, detail: str | None = None) -> dict[str, Any]:
        """A fault that is not one of v1's own (400, 404, 405, 415)."""
        assert status == code, body
        [fault] = body.values()
        if self.version == "1.0":
            assert fault["code"] == code
        else:
            assert list(body) == ["QuantumError"]
        if detail is not None:
            assert fault["detail"] == detail
        return fault


@pytest.fixture(params=VERSIONS)
def t(request: pytest.FixtureRequest, server: ServerProcess) -> Tenant:
    return Tenant(server, request.param)


def raw_request(server: ServerProcess, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """(status, headers, decoded body) without urllib's header rewriting."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, (json.loads(data) if data else None)
    finally:
        conn.close()


# -- networks ---------------------------------------------------------------


def test_create_network_status_and_body(t: Tenant) -> None:
    status, body = t("POST", "/networks", {"network": {"name": "blue"}})
    assert status == (200 if t.version == "1.0" else 202)
    assert list(body["network"]) == ["id"]
    # Visible in v2 as a network of the tenant.
    status, v2 = t.server.request("GET", f"/v2.0/networks/{body['network']['id']}")
    assert status == 200 and v2["network"]["tenant_id"] == t.id and v2["network"]["name"] == "blue"


def test_list_networks_and_detail(t: Tenant) -> None:
    a, b = t.network("a"), t.network("b")
    status, body = t("GET", "/networks")
    assert status == 200
    assert sorted(body["networks"], key=lambda n: n["id"]) == sorted([{"id": a}, {"id": b}], key=lambda n: n["id"])
    status, body = t("GET", "/networks/detail")
    assert status == 200
    extra = {"op-status": "UP"} if t.version == "1.1" else {}
    expected = [{"id": a, "name": "a", **extra}, {"id": b, "name": "b", **extra}]
    assert sorted(body["networks"], key=lambda n: n["id"]) == sorted(expected, key=lambda n: n["id"])


def test_json_suffix_is_accepted(t: Tenant) -> None:
    net = t.network("suffixed")
    status, body = t("GET", "/networks.json")
    assert status == 200 and body["networks"] == [{"id": net}]
    status, body = t("GET", f"/networks/{net}.json")
    assert status == 200 and body["network"]["name"] == "suffixed"


def test_show_network(t: Tenant) -> None:
    net = t.network("shown")
    status, body = t("GET", f"/networks/{net}")
    assert status == 200
    assert body == {"network": {"id": net, "name": "shown", **({"op-status": "UP"} if t.version == "1.1" else {})}}
    status, body = t("GET", f"/networks/{net.upper()}")
    assert status == 200 and body["network"]["id"] == net


def test_show_network_detail_has_ports_and_attachments(t: Tenant) -> None:
    net = t.network("d")
    plugged, empty = t.port(net, "ACTIVE"), t.port(net)
    t.plug(net, plugged, "vif-detail")
    status, body = t("GET", f"/networks/{net}/detail")
    assert status == 200
    extra = {"op-status": "DOWN"} if t.version == "1.1" else {}
    ports = sorted(body["network"].pop("ports"), key=lambda p: p["id"])
    expected = [
        {"id": plugged, "state": "ACTIVE", "attachment": {"id": "vif-detail"}, **extra},
        {"id": empty, "state": "DOWN", **extra},
    ]
    assert ports == sorted(expected, key=lambda p: p["id"])
    assert body["network"] == {"id": net, "name": "d", **({"op-status": "UP"} if t.version == "1.1" else {})}


def test_unknown_network_is_network_not_found(t: Tenant) -> None:
    missing = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/networks/{missing}"),
        ("GET", f"/networks/{missing}/detail"),
        ("DELETE", f"/networks/{missing}"),
        ("GET", f"/networks/{missing}/ports"),
        ("GET", f"/networks/{missing}/ports/detail"),
        ("POST", f"/networks/{missing}/ports"),
        ("GET", f"/networks/{missing}/ports/{uuid.uuid4()}"),
        ("GET", f"/networks/{missing}/ports/not-a-uuid/attachment"),
        ("GET", "/networks/not-a-uuid"),
    ):
        status, body = t(method, path)
        t.assert_fault(status, body, "NetworkNotFound")
    status, body = t("PUT", f"/networks/{missing}", {"network": {"name": "x"}})
    t.assert_fault(status, body, "NetworkNotFound", detail=f"Network {missing} could not be found")


def test_update_network(t: Tenant) -> None:
    net = t.network("before")
    status, body = t("PUT", f"/networks/{net}", {"network": {"name": "after"}})
    assert status == 204 and body is None
    assert t("GET", f"/networks/{net}")[1]["network"]["name"] == "after"


def test_create_and_update_network_body_errors(t: Tenant) -> None:
    net = t.network("keep")
    for method, path in (("POST", "/networks"), ("PUT", f"/networks/{net}")):
        for bad in ({"net": {"name": "x"}}, {"network": {}}, ["network"]):
            status, body = t(method, path, bad)
            t.assert_generic(status, body, 400, "Unable to find 'network' in request body")
        status, body = t(method, path, {"network": {"label": "x"}})
        t.assert_generic(status, body, 400, "Failed to parse request. Parameter: name not specified")
        status, body = t(method, path, raw=b"{not json")
        t.assert_generic(status, body, 400)
        status, body = t(method, path, {"network": {"name": ["not", "a", "string"]}})
        t.assert_generic(status, body, 400)
    status, body = t("POST", "/networks")
    t.assert_generic(status, body, 400, "Unable to find 'network' in request body")
    # Nothing was created or renamed.
    assert t("GET", "/networks/detail")[1]["networks"][0]["name"] == "keep"
    assert len(t("GET", "/networks")[1]["networks"]) == 1


def test_delete_network(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    status, body = t("DELETE", f"/networks/{net}")
    assert status == 204 and body is None
    t.assert_fault(*t("GET", f"/networks/{net}"), "NetworkNotFound")
    assert t.server.request("GET", f"/v2.0/ports/{port}")[0] == 404


def test_delete_network_with_attachment_is_in_use(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    t.plug(net, port, "vif-inuse")
    status, body = t("DELETE", f"/networks/{net}")
    t.assert_fault(status, body, "NetworkInUse", detail=net)
    assert t("GET", f"/networks/{net}")[0] == 200
    assert t("DELETE", f"/networks/{net}/ports/{port}/attachment")[0] == 204
    assert t("DELETE", f"/networks/{net}")[0] == 204


# -- ports ------------------------------------------------------------------


def test_create_port_default_and_explicit_state(t: Tenant) -> None:
    net = t.network()
    status, body = t("POST", f"/networks/{net}/ports")
    assert status == t.codes["created"] and list(body["port"]) == ["id"]
    down = body["port"]["id"]
    active = t.port(net, "ACTIVE")
    assert t("GET", f"/networks/{net}/ports/{down}")[1]["port"]["state"] == "DOWN"
    assert t("GET", f"/networks/{net}/ports/{active}")[1]["port"]["state"] == "ACTIVE"
    # A v2 port with an allocated MAC, admin state as the v1 state.
    status, v2 = t.server.request("GET", f"/v2.0/ports/{active}")
    assert status == 200 and v2["port"]["admin_state_up"] is True and v2["port"]["mac_address"]
    assert v2["port"]["network_id"] == net and v2["port"]["tenant_id"] == t.id


def test_create_port_errors(t: Tenant) -> None:
    net = t.network()
    status, body = t("POST", f"/networks/{net}/ports", {"port": {"state": "SIDEWAYS"}})
    t.assert_fault(status, body, "StateInvalid", detail="Unsupported port state: SIDEWAYS")
    status, body = t("POST", f"/networks/{net}/ports", {"prot": {"state": "ACTIVE"}})
    t.assert_generic(status, body, 400, "Unable to find 'port' in request body")
    assert t("GET", f"/networks/{net}/ports")[1] == {"ports": []}


def test_list_ports_and_detail(t: Tenant) -> None:
    net = t.network()
    a, b = t.port(net, "ACTIVE"), t.port(net)
    t.plug(net, a, "vif-list")
    status, body = t("GET", f"/networks/{net}/ports")
    assert status == 200 and sorted(p["id"] for p in body["ports"]) == sorted([a, b])
    assert all(list(p) == ["id"] for p in body["ports"])
    status, body = t("GET", f"/networks/{net}/ports/detail")
    extra = {"op-status": "DOWN"} if t.version == "1.1" else {}
    assert status == 200
    assert sorted(body["ports"], key=lambda p: p["id"]) == sorted(
        [{"id": a, "state": "ACTIVE", **extra}, {"id": b, "state": "DOWN", **extra}], key=lambda p: p["id"]
    )


def test_show_port_and_detail(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    extra = {"op-status": "DOWN"} if t.version == "1.1" else {}
    assert t("GET", f"/networks/{net}/ports/{port}") == (200, {"port": {"id": port, "state": "DOWN", **extra}})
    assert t("GET", f"/networks/{net}/ports/{port.upper()}") == (200, {"port": {"id": port, "state": "DOWN", **extra}})
    assert t("GET", f"/networks/{net}/ports/{port}/detail") == (200, {"port": {"id": port, "state": "DOWN", **extra}})
    t.plug(net, port, "vif-show")
    assert t("GET", f"/networks/{net}/ports/{port}") == (200, {"port": {"id": port, "state": "DOWN", **extra}})
    status, body = t("GET", f"/networks/{net}/ports/{port}/detail")
    assert (status, body) == (200, {"port": {"id": port, "state": "DOWN", "attachment": {"id": "vif-show"}, **extra}})


def test_unknown_port_is_port_not_found(t: Tenant) -> None:
    net, other = t.network(), t.network("other")
    port = t.port(other)
    for pid in (str(uuid.uuid4()), port, "not-a-uuid"):
        base = f"/networks/{net}/ports/{pid}"
        for method, path, body in (
            ("GET", base, None),
            ("GET", base + "/detail", None),
            ("PUT", base, {"port": {"state": "ACTIVE"}}),
            ("DELETE", base, None),
            ("GET", base + "/attachment", None),
            ("PUT", base + "/attachment", {"attachment": {"id": "vif"}}),
            ("DELETE", base + "/attachment", None),
        ):
            status, fault = t(method, path, body)
            t.assert_fault(status, fault, "PortNotFound", detail=f"Port {pid} could not be found on network {net}")
    # The port on the other network is untouched.
    assert t("GET", f"/networks/{other}/ports/{port}")[1]["port"]["state"] == "DOWN"


def test_update_port_state(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    status, body = t("PUT", f"/networks/{net}/ports/{port}", {"port": {"state": "ACTIVE"}})
    assert status == 204 and body is None
    assert t("GET", f"/networks/{net}/ports/{port}")[1]["port"]["state"] == "ACTIVE"
    status, body = t("PUT", f"/networks/{net}/ports/{port}", {"port": {"state": "UP"}})
    t.assert_fault(status, body, "StateInvalid")
    status, body = t("PUT", f"/networks/{net}/ports/{port}", {"port": {"name": "x"}})
    t.assert_generic(status, body, 400, "Failed to parse request. Parameter: state not specified")
    status, body = t("PUT", f"/networks/{net}/ports/{port}")
    t.assert_generic(status, body, 400, "Unable to find 'port' in request body")
    assert t("GET", f"/networks/{net}/ports/{port}")[1]["port"]["state"] == "ACTIVE"


def test_delete_port(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    t.plug(net, port, "vif-del")
    status, body = t("DELETE", f"/networks/{net}/ports/{port}")
    t.assert_fault(status, body, "PortInUse", detail="vif-del")
    assert t("DELETE", f"/networks/{net}/ports/{port}/attachment")[0] == 204
    status, body = t("DELETE", f"/networks/{net}/ports/{port}")
    assert status == 204 and body is None
    t.assert_fault(*t("GET", f"/networks/{net}/ports/{port}"), "PortNotFound")


# -- attachments --------------------------------------------------------------


def test_attachment_show_plug_unplug(t: Tenant) -> None:
    net = t.network()
    port = t.port(net)
    path = f"/networks/{net}/ports/{port}/attachment"
    assert t("GET", path) == (200, {"attachment": {}})
    status, body = t("PUT", path, {"attachment": {"id": "vif-att"}})
    assert status == 204 and body is None
    assert t("GET", path) == (200, {"attachment": {"id": "vif-att"}})
    # The attachment is the v2 port's device_id.
    assert t.server.request("GET", f"/v2.0/ports/{port}")[1]["port"]["device_id"] == "vif-att"
    assert t("DELETE", path) == (204, None)
    assert t("GET", path) == (200, {"attachment": {}})
    assert t("DELETE", path) == (204, None)  # unplugging an empty port is a no-op


def test_attachment_errors(t: Tenant) -> None:
    net = t.network()
    first, second = t.port(net), t.port(net)
    t.plug(net, first, "vif-one")
    status, body = t("PUT", f"/networks/{net}/ports/{first}/attachment", {"attachment": {"id": "vif-two"}})
    t.assert_fault(status, body, "PortInUse", detail="vif-one")
    status, body = t("PUT", f"/networks/{net}/ports/{second}/attachment", {"attachment": {"id": "vif-one"}})
    t.assert_fault(status, body, "AlreadyAttached", detail=first)
    status, body = t("PUT", f"/networks/{net}/ports/{second}/attachment", {"attachment": {"name": "vif"}})
    t.assert_generic(status, body, 400, "Failed to parse request. Parameter: id not specified")
    status, body = t("PUT", f"/networks/{net}/ports/{second}/attachment", {"vif": {"id": "vif"}})
    t.assert_generic(status, body, 400, "Unable to find 'attachment' in request body")
    assert t("GET", f"/networks/{net}/ports/{second}/attachment") == (200, {"attachment": {}})
    assert t("GET", f"/networks/{net}/ports/{first}/attachment") == (200, {"attachment": {"id": "vif-one"}})


# -- paths, methods, formats ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["", "/networks/{net}/ports/{port}/bogus", "/networks/{net}/ports/{port}/attachment/extra", "/networks/{net}/things"],
)
def test_unknown_paths_are_404(t: Tenant, path: str) -> None:
    net = t.network()
    port = t.port(net)
    status, body = t("GET", path.format(net=net, port=port))
    fault = t.assert_generic(status, body, 404)
    if t.version == "1.0":
        assert list(body) == ["itemNotFound"]
    else:
        assert fault["type"] == "HTTPNotFound"
    for path in ("", "/tenants", "/networks"):
        status, _ = t.server.request("GET", f"/v{t.version}{path}")
        assert status == 404


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/networks", "GET, POST"),
        ("DELETE", "/networks/detail", "GET"),
        ("POST", "/networks/{net}", "GET, PUT, DELETE"),
        ("PUT", "/networks/{net}/detail", "GET"),
        ("DELETE", "/networks/{net}/ports", "GET, POST"),
        ("POST", "/networks/{net}/ports/detail", "GET"),
        ("POST", "/networks/{net}/ports/{port}", "GET, PUT, DELETE"),
        ("DELETE", "/networks/{net}/ports/{port}/detail", "GET"),
        ("POST", "/networks/{net}/ports/{port}/attachment", "GET, PUT, DELETE"),
    ],
)
def test_wrong_methods_are_405(t: Tenant, method: str, path: str, allow: str) -> None:
    net = t.network()
    port = t.port(net)
    full = f"/v{t.version}/tenants/{t.id}" + path.format(net=net, port=port)
    status, headers, body = raw_request(t.server, method, full, b"{}", {"X-Tenant-Id": t.id, "Content-Type": "application/json"})
    assert status == 405
    assert headers["Allow"] == allow
    assert t.assert_generic(status, body, 405)["detail"] == f"The method {method} is not allowed for this resource."


def test_xml_is_refused(t: Tenant) -> None:
    status, _, body = raw_request(t.server, "GET", f"/v{t.version}/tenants/{t.id}/networks.xml", headers={"X-Tenant-Id": t.id})
    t.assert_generic(status, body, 415)
    xml = b"<network><name>x</name></network>"
    headers = {"X-Tenant-Id": t.id, "Content-Type": "application/xml"}
    status, _, body = raw_request(t.server, "POST", f"/v{t.version}/tenants/{t.id}/networks", xml, headers)
    t.assert_generic(status, body, 415)
    assert t("GET", "/networks")[1] == {"networks": []}


# -- tenancy ------------------------------------------------------------------


def test_another_tenant_sees_nothing(t: Tenant) -> None:
    net = t.network("private")
    port = t.port(net)
    intruder = t.id + "-intruder"
    for method, path, body in (
        ("GET", "/networks", None),
        ("GET", "/networks/detail", None),
        ("POST", "/networks", {"network": {"name": "planted"}}),
        ("GET", f"/networks/{net}", None),
        ("PUT", f"/networks/{net}", {"network": {"name": "stolen"}}),
        ("DELETE", f"/networks/{net}", None),
        ("GET", f"/networks/{net}/ports", None),
        ("POST", f"/networks/{net}/ports", None),
        ("GET", f"/networks/{net}/ports/{port}", None),
        ("DELETE", f"/networks/{net}/ports/{port}", None),
        ("PUT", f"/networks/{net}/ports/{port}/attachment", {"attachment": {"id": "evil"}}),
    ):
        status, fault = t(method, path, body, as_tenant=intruder)
        t.assert_fault(status, fault, "NetworkNotFound")
    # Nothing changed for the owner.
    assert t("GET", "/networks/detail")[1]["networks"][0]["name"] == "private"
    assert t("GET", f"/networks/{net}/ports")[1] == {"ports": [{"id": port}]}
    assert t("GET", f"/networks/{net}/ports/{port}/attachment")[1] == {"attachment": {}}
    # The intruder's own tenant has no networks either (nothing was planted).
    assert Tenant(t.server, t.version, intruder)("GET", "/networks") == (200, {"networks": []})


def test_tenant_networks_are_separate(t: Tenant) -> None:
    mine = t.network("mine")
    other = Tenant(t.server, t.version)
    theirs = other.network("theirs")
    assert t("GET", "/networks")[1] == {"networks": [{"id": mine}]}
    assert other("GET", "/networks")[1] == {"networks": [{"id": theirs}]}
    # Even with the right credentials, a network is only reachable under its own tenant.
    t.assert_fault(*other("GET", f"/networks/{mine}"), "NetworkNotFound")


def test_admin_may_act_for_any_tenant(t: Tenant) -> None:
    net = t.network("seen")
    assert t("GET", f"/networks/{net}", admin=True)[1]["network"]["name"] == "seen"
    status, _, body = raw_request(
        t.server, "GET", f"/v{t.version}/tenants/{t.id}/networks", headers={"X-Tenant-Id": "ops", "X-Roles": "admin"}
    )
    assert status == 200 and body == {"networks": [{"id": net}]}


# -- filters ------------------------------------------------------------------


def test_network_filters_in_v11(server: ServerProcess) -> None:
    t = Tenant(server, "1.1")
    empty = t.network("empty")
    plugged = t.network("plugged")
    port = t.port(plugged, "ACTIVE")
    t.plug(plugged, port, "vif-filter")

    def ids(query: str) -> set[str]:
        status, body = t("GET", f"/networks?{query}")
        assert status == 200
        return {n["id"] for n in body["networks"]}

    assert ids("") == {empty, plugged}
    assert ids("name=empty") == {empty}
    assert ids("op-status=UP") == {empty, plugged}
    assert ids("op-status=DOWN") == set()
    assert ids("has-attachment=true") == {plugged}
    assert ids("has-attachment=false") == {empty}
    assert ids("attachment=vif-filter") == {plugged}
    assert ids("port-state=ACTIVE") == {plugged}
    assert ids("port-op-status=DOWN") == {plugged}
    assert ids("port-op-status=UP") == set()
    assert ids(f"port={port}") == {plugged}
    assert ids("name=plugged&has-attachment=false") == set()
    status, body = t("GET", "/networks/detail?name=plugged")
    assert body == {"networks": [{"id": plugged, "name": "plugged", "op-status": "UP"}]}


def test_port_filters_in_v11(server: ServerProcess) -> None:
    t = Tenant(server, "1.1")
    net = t.network()
    active, down = t.port(net, "ACTIVE"), t.port(net)
    t.plug(net, active, "vif-pf")

    def ids(query: str) -> set[str]:
        status, body = t("GET", f"/networks/{net}/ports?{query}")
        assert status == 200
        return {p["id"] for p in body["ports"]}

    assert ids("") == {active, down}
    assert ids("state=ACTIVE") == {active}
    assert ids("state=DOWN") == {down}
    assert ids("op-status=DOWN") == {active, down}
    assert ids("op-status=UP") == set()
    assert ids("has-attachment=true") == {active}
    assert ids("has-attachment=false") == {down}
    assert ids("attachment=vif-pf") == {active}
    assert ids("attachment=vif-pf&state=DOWN") == set()
    status, body = t("GET", f"/networks/{net}/ports/detail?state=DOWN")
    assert body == {"ports": [{"id": down, "state": "DOWN", "op-status": "DOWN"}]}


def test_v10_ignores_filters(server: ServerProcess) -> None:
    t = Tenant(server, "1.0")
    a, b = t.network("a"), t.network("b")
    assert {n["id"] for n in t("GET", "/networks?name=a")[1]["networks"]} == {a, b}
    port = t.port(a)
    assert t("GET", f"/networks/{a}/ports?state=ACTIVE")[1] == {"ports": [{"id": port}]}


def test_v1_and_v2_share_objects(server: ServerProcess) -> None:
    t = Tenant(server, "1.1")
    status, v2net = server.request("POST", "/v2.0/networks", {"network": {"name": "from-v2", "tenant_id": t.id}})
    assert status == 201
    net = v2net["network"]["id"]
    status, v2port = server.request("POST", "/v2.0/ports", {"port": {"network_id": net, "tenant_id": t.id, "device_id": "vm-1"}})
    assert status == 201
    port = v2port["port"]["id"]
    assert t("GET", f"/networks/{net}")[1]["network"]["name"] == "from-v2"
    # A v2 port is admin up by default (v1 ACTIVE) and its device_id is the v1 attachment.
    assert t("GET", f"/networks/{net}/ports/{port}/detail")[1]["port"] == {
        "id": port,
        "state": "ACTIVE",
        "op-status": "DOWN",
        "attachment": {"id": "vm-1"},
    }
