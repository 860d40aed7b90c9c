"""The server starts on every backend and serves the version document and a create/list round trip."""

from restproxy_testing.support import ServerProcess


def test_version_document_lists_v2_as_current(server: ServerProcess) -> None:
    status, body = server.request("GET", "/")
    assert status == 200
    current = [v for v in body["versions"] if v["status"] == "CURRENT"]
    assert [v["id"] for v in current] == ["v2.0"]


def test_network_create_then_list(server: ServerProcess) -> None:
    status, created = server.request("POST", "/v2.0/networks", {"network": {"name": "smoke", "tenant_id": "t-smoke"}})
    assert status == 201
    status, listed = server.request("GET", "/v2.0/networks?name=smoke")
    assert status == 200
    assert [n["id"] for n in listed["networks"]] == [created["network"]["id"]]


def test_values_the_fast_codec_refuses_are_still_answered(server: ServerProcess) -> None:
    """Replies are encoded by orjson, which refuses integers beyond 64 bits; a client's free-form
    ``binding:profile`` may hold one, and gets it back (json encodes it), never a 500."""
    _, net = server.request("POST", "/v2.0/networks", {"network": {"name": "codec", "tenant_id": "t-codec"}})
    profile = {"huge": 2**70, "nested": {"neg": -(2**65)}, "text": "\u00e9\u6f22"}
    body = {"port": {"network_id": net["network"]["id"], "tenant_id": "t-codec", "binding:profile": profile}}
    status, created = server.request("POST", "/v2.0/ports", body)
    assert status == 201, created
    assert created["port"]["binding:profile"] == profile
    status, listed = server.request("GET", f"/v2.0/ports?network_id={net['network']['id']}")
    assert status == 200 and [p["binding:profile"] for p in listed["ports"]] == [profile]
