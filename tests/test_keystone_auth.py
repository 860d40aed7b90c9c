"""auth_strategy = keystone against a real Keystone (restproxy_testing/keystone.py): tenancy from the token's
project, admin from its roles, 401 for unknown/expired/revoked tokens, 503 while Keystone is down, and
openstacksdk / python-neutronclient finding the server through Keystone's catalog.

One Keystone per module (tokens live TOKEN_LIFETIME seconds, so that expiry is observable); one server per backend.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from restproxy_testing import keystone as ks
from restproxy_testing.support import ServerProcess, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

TOKEN_LIFETIME = 20  # seconds ([token] expiration of the test Keystone)
CACHE_TIME = 3  # [keystone_authtoken] token_cache_time of the server
PASSWORD = "pw-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def keystone() -> Iterator[ks.Keystone]:
    k = ks.Keystone(token_expiration=TOKEN_LIFETIME).setup()
    try:
        k.user("neutron", PASSWORD, "service", roles=("admin", "service"))
        k.user("alice", PASSWORD, "proj-a")
        k.user("bob", PASSWORD, "proj-b")
        k.user("carol", PASSWORD, "proj-a", roles=("member", "admin"))
        yield k
    finally:
        k.close()


def keystone_config(k: ks.Keystone, cache_time: int = CACHE_TIME) -> str:
    return f"""
[DEFAULT]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = {k.url}/v3
auth_url = {k.url}
auth_type = password
username = neutron
password = {PASSWORD}
project_name = service
user_domain_name = Default
project_domain_name = Default
token_cache_time = {cache_time}
http_connect_timeout = 10
"""


@pytest.fixture(scope="module")
def server(db_url: str, keystone: ks.Keystone) -> Iterator[ServerProcess]:
    proc = ServerProcess(db_url, keystone_config(keystone)).start()
    try:
        yield proc
    finally:
        print(proc.log()[-6000:])  # shown with a failure
        proc.stop()


def call(server: ServerProcess, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    return server.request(method, path, body, {"X-Auth-Token": token} if token else {})


def token(k: ks.Keystone, user: str) -> str:
    return k.token(user, PASSWORD, {"alice": "proj-a", "bob": "proj-b", "carol": "proj-a", "neutron": "service"}[user])


def test_discovery_is_open_and_the_rest_needs_a_token(server: ServerProcess, keystone: ks.Keystone) -> None:
    assert server.request("GET", "/")[0] == 200
    status, body = server.request("GET", "/v2.0")
    assert status == 200 and {r["collection"] for r in body["resources"]} >= {"networks", "ports"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/v2.0/networks", timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}/v3"'
    status, body = call(server, "GET", "/v2.0/networks", "not-a-token")
    assert status == 401 and body["NeutronError"]["type"] == "HTTPUnauthorized"
    assert call(server, "GET", "/v1.1/tenants/x/networks", "not-a-token")[0] == 401


def test_member_sees_only_its_project_and_admin_sees_all(server: ServerProcess, keystone: ks.Keystone) -> None:
    alice, bob, carol = token(keystone, "alice"), token(keystone, "bob"), token(keystone, "carol")
    proj_a, proj_b = keystone.project("proj-a"), keystone.project("proj-b")
    status, net_a = call(server, "POST", "/v2.0/networks", alice, {"network": {"name": "a"}})
    assert status == 201 and net_a["network"]["tenant_id"] == proj_a
    status, net_b = call(server, "POST", "/v2.0/networks", bob, {"network": {"name": "b"}})
    assert status == 201 and net_b["network"]["tenant_id"] == proj_b
    # a member cannot create in another project
    status, _ = call(server, "POST", "/v2.0/networks", alice, {"network": {"name": "x", "tenant_id": proj_b}})
    assert status in (400, 403)
    ids_a = {n["id"] for n in call(server, "GET", "/v2.0/networks", alice)[1]["networks"]}
    assert net_a["network"]["id"] in ids_a and net_b["network"]["id"] not in ids_a
    ids_admin = {n["id"] for n in call(server, "GET", "/v2.0/networks", carol)[1]["networks"]}
    assert {net_a["network"]["id"], net_b["network"]["id"]} <= ids_admin
    # another project's token is refused the objects (as if they did not exist)
    path = f"/v2.0/networks/{net_a['network']['id']}"
    assert call(server, "GET", path, bob)[0] == 404
    assert call(server, "PUT", path, bob, {"network": {"name": "stolen"}})[0] == 404
    assert call(server, "DELETE", path, bob)[0] == 404
    assert call(server, "GET", path, alice)[1]["network"]["name"] == "a"


def test_revoked_token_is_refused_within_token_cache_time(server: ServerProcess, keystone: ks.Keystone) -> None:
    alice = token(keystone, "alice")
    assert call(server, "GET", "/v2.0/networks", alice)[0] == 200  # now cached
    keystone.revoke(alice)
    revoked_at = time.monotonic()
    wait_for("the revoked token to be refused", lambda: call(server, "GET", "/v2.0/networks", alice)[0] == 401, timeout=CACHE_TIME + 10)
    assert time.monotonic() - revoked_at <= CACHE_TIME + 3  # token_cache_time, plus the load of a CI machine


def test_expired_token_is_refused(server: ServerProcess, keystone: ks.Keystone) -> None:
    bob = token(keystone, "bob")
    assert call(server, "GET", "/v2.0/networks", bob)[0] == 200
    wait_for("the token to expire", lambda: call(server, "GET", "/v2.0/networks", bob)[0] == 401, timeout=TOKEN_LIFETIME + 15)


def test_openstacksdk_finds_the_server_in_the_catalog(server: ServerProcess, keystone: ks.Keystone) -> None:
    import openstack

    keystone.endpoint("network", "neutron", server.url)
    conn = openstack.connect(
        auth_url=keystone.url + "/v3", username="alice", password=PASSWORD, project_name="proj-a",
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne", auth_type="password",
    )  # fmt: skip
    try:
        assert conn.network.get_endpoint().rstrip("/").startswith(server.url)
        net = conn.network.create_network(name="sdk-net")
        assert net.project_id == keystone.project("proj-a")
        assert net.id in {n.id for n in conn.network.networks()}
        conn.network.delete_network(net)
    finally:
        conn.close()


def test_neutronclient_with_a_keystoneauth_session(server: ServerProcess, keystone: ks.Keystone) -> None:
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from neutronclient.v2_0 import client as nc_client

    keystone.endpoint("network", "neutron", server.url)
    auth = v3.Password(
        auth_url=keystone.url + "/v3", username="bob", password=PASSWORD, project_name="proj-b",
        user_domain_name="Default", project_domain_name="Default",
    )  # fmt: skip
    nc = nc_client.Client(session=session.Session(auth=auth), region_name="RegionOne")
    net = nc.create_network({"network": {"name": "nc-net"}})["network"]
    assert net["tenant_id"] == keystone.project("proj-b")
    assert net["id"] in {n["id"] for n in nc.list_networks()["networks"]}
    nc.delete_network(net["id"])


def test_keystone_down_uncached_503_cached_served(db_url: str, keystone: ks.Keystone) -> None:
    server = ServerProcess(db_url, keystone_config(keystone, cache_time=120)).start()
    try:
        cached, uncached = token(keystone, "alice"), token(keystone, "bob")
        assert call(server, "GET", "/v2.0/networks", cached)[0] == 200
        keystone.stop(kill=True)
        try:
            started = time.monotonic()
            status, body = call(server, "GET", "/v2.0/networks", uncached)
            assert status == 503 and body["NeutronError"]["type"] == "ServiceUnavailable"
            assert time.monotonic() - started < 10  # refused at once; http_connect_timeout bounds a silent Keystone
            assert call(server, "GET", "/v2.0/networks", cached)[0] == 200
            assert call(server, "GET", "/v2.0/networks", uncached)[0] == 503  # a failure is not cached
        finally:
            keystone.start()
        wait_for("Keystone to validate again", lambda: call(server, "GET", "/v2.0/networks", uncached)[0] == 200, timeout=30)
        log = server.log()
    finally:
        server.stop()
    assert "Keystone unreachable" in log and "Keystone answers again" in log
    assert uncached not in log and cached not in log and PASSWORD not in log
