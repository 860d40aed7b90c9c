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
