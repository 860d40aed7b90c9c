"""KeystoneAuth on a Clock against an in-memory Keystone (StubTreq): the cache, its bounds, the service token's
renewal, one call per token at a time, 401 and 503. The real Keystone is tests/test_keystone_auth.py."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web import resource, server
from twisted.web.http_headers import Headers

from server_plugin.api.auth import KeystoneAuth, KeystoneDown, KeystoneUnauthorized, request_context
from server_plugin.context import RequestContext
from server_plugin.openstack.config import KeystoneAuthConfig
from tests.fast.stubs import body_producer


def stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class FakeKeystone(resource.Resource):
    """POST /v3/auth/tokens (the service user) and GET /v3/auth/tokens (validation), counted."""

    isLeaf = True

    def __init__(self, clock: Clock, service_lifetime: float = 3600) -> None:
        super().__init__()
        self.clock = clock
        self.service_lifetime = service_lifetime
        self.tokens: dict[str, dict[str, Any]] = {}
        self.issued = 0
        self.validations = 0
        self.mode = "up"  # up, error (500), hang (never answers)
        self.hung: list[server.Request] = []

    def user_token(self, token: str, project: str | None, roles: tuple[str, ...] = ("member",), lifetime: float = 3600) -> str:
        self.tokens[token] = {
            "user": {"id": "u-" + token}, "roles": [{"name": r} for r in roles], "expires_at": stamp(self.clock.seconds() + lifetime),
            **({"project": {"id": project}} if project else {}),
        }  # fmt: skip
        return token

    def render(self, request: server.Request) -> Any:
        if self.mode == "hang":
            self.hung.append(request)
            return server.NOT_DONE_YET
        if self.mode == "error":
            request.setResponseCode(500)
            return b"{}"
        if request.method == b"POST":
            self.issued += 1
            token = f"svc-{self.issued}"
            self.user_token(token, "service", ("admin", "service"), self.service_lifetime)
            request.setResponseCode(201)
            request.setHeader("X-Subject-Token", token)
            return json.dumps({"token": self.tokens[token]}).encode()
        self.validations += 1
        if request.getHeader("X-Auth-Token") not in self.tokens:
            request.setResponseCode(401)
            return b"{}"
        found = self.tokens.get(request.getHeader("X-Subject-Token") or "")
        if found is None or found["expires_at"] <= stamp(self.clock.seconds()):
            request.setResponseCode(404)
            return b"{}"
        return json.dumps({"token": found}).encode()


class Request:
    def __init__(self, token: str | None = None, path: bytes = b"/v2.0/networks", method: bytes = b"GET") -> None:
        self.method, self.path = method, path
        self.requestHeaders = Headers({b"X-Auth-Token": [token.encode()]} if token else {})


class Setup:
    def __init__(self, **conf: Any) -> None:
        from treq.client import HTTPClient

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.keystone = FakeKeystone(self.clock, conf.pop("service_lifetime", 3600))
        self.agent = RequestTraversalAgent(self.keystone)
        http = HTTPClient(self.agent, data_to_body_producer=body_producer)
        options = {"auth_url": "http://keystone:5000/v3", "username": "neutron", "password": "secret", "project_name": "service"}
        self.auth = KeystoneAuth(KeystoneAuthConfig(**dict(options, **conf)), self.clock, http=http)

    def context(self, token: str | None, **kw: Any) -> Deferred[RequestContext]:
        d = Deferred.fromCoroutine(request_context(self.auth, Request(token, **kw)))
        self.agent.flush()
        return d


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not answered"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_a_cached_token_asks_keystone_once() -> None:
    s = Setup()
    s.keystone.user_token("tok", "proj-a", ("member", "reader"))
    ctx = result(s.context("tok"))
    assert ctx == RequestContext(tenant_id="proj-a", roles=("member", "reader"), is_admin=False, user_id="u-tok")
    assert isinstance(s.auth.context_for(Request("tok")), RequestContext)  # synchronous from the cache
    assert s.keystone.validations == 1 and s.keystone.issued == 1


def test_admin_role_makes_an_admin_and_unscoped_is_refused() -> None:
    s = Setup()
    s.keystone.user_token("adm", "proj-a", ("admin",))
    s.keystone.user_token("unscoped", None)
    assert result(s.context("adm")).is_admin
    with pytest.raises(KeystoneUnauthorized):
        result(s.context("unscoped"))


def test_unknown_token_401_with_www_authenticate_and_discovery_open() -> None:
    s = Setup(www_authenticate_uri="https://keystone.example/v3")
    for token in ("nope", None):
        with pytest.raises(KeystoneUnauthorized) as refused:
            result(s.context(token))
        assert refused.value.headers == {"WWW-Authenticate": 'Keystone uri="https://keystone.example/v3"'}
        assert refused.value.status == 401
    assert result(s.context(None, path=b"/v2.0")).tenant_id is None
    assert result(s.context(None, path=b"/v2.0/", method=b"HEAD")).tenant_id is None


def test_concurrent_requests_share_one_validation() -> None:
    s = Setup()
    s.keystone.user_token("tok", "p")
    s.keystone.mode = "hang"
    pending = [Deferred.fromCoroutine(request_context(s.auth, Request("tok"))) for _ in range(5)]
    s.agent.flush()
    assert len(s.keystone.hung) == 1  # the service token first: one POST for everyone
    s.keystone.mode = "up"
    s.keystone.hung.clear()
    s.clock.advance(6)  # that POST times out: all five get 503
    for d in pending:
        with pytest.raises(KeystoneDown):
            result(d)
    pending = [Deferred.fromCoroutine(request_context(s.auth, Request("tok"))) for _ in range(5)]
    s.agent.flush()
    assert all(result(d).tenant_id == "p" for d in pending)
    assert s.keystone.validations == 1


def test_revocation_takes_effect_within_token_cache_time() -> None:
    s = Setup(token_cache_time=30)
    s.keystone.user_token("tok", "p")
    result(s.context("tok"))
    del s.keystone.tokens["tok"]  # revoked
    s.clock.advance(29)
    assert result(s.context("tok")).tenant_id == "p"
    s.clock.advance(1)
    with pytest.raises(KeystoneUnauthorized):
        result(s.context("tok"))


def test_cache_never_outlives_the_token() -> None:
    s = Setup(token_cache_time=300)
    s.keystone.user_token("short", "p", lifetime=10)
    result(s.context("short"))
    s.clock.advance(10)
    with pytest.raises(KeystoneUnauthorized):
        result(s.context("short"))
    assert s.keystone.validations == 2


def test_cache_is_bounded() -> None:
    s = Setup(cache_size=2)
    for token in ("a", "b", "c"):
        s.keystone.user_token(token, "p")
        result(s.context(token))
    assert len(s.auth.cache) == 2
    result(s.context("a"))  # evicted: asked again
    assert s.keystone.validations == 4


def test_keystone_down_503_for_uncached_cached_still_served() -> None:
    s = Setup(http_connect_timeout=2)
    s.keystone.user_token("cached", "p")
    s.keystone.user_token("other", "q")
    result(s.context("cached"))
    s.keystone.mode = "error"
    with pytest.raises(KeystoneDown):
        result(s.context("other"))
    s.keystone.mode = "hang"
    d = s.context("other")
    s.clock.advance(2)
    with pytest.raises(KeystoneDown) as down:
        result(d)
    assert down.value.status == 503 and down.value.type == "ServiceUnavailable"
    assert result(s.context("cached")).tenant_id == "p"
    s.keystone.mode = "up"
    assert result(s.context("other")).tenant_id == "q"  # a failure was not cached


def test_service_token_renewed_before_expiry_and_after_refusal() -> None:
    s = Setup(service_lifetime=600, service_token_renew_before=120, token_cache_time=1)
    s.keystone.user_token("tok", "p", lifetime=7200)
    result(s.context("tok"))
    assert s.keystone.issued == 1
    s.clock.advance(470)  # 130 s left: still fresh
    result(s.context("tok"))
    assert s.keystone.issued == 1
    s.clock.advance(20)  # 110 s left: renewed before it expires
    result(s.context("tok"))
    assert s.keystone.issued == 2
    del s.keystone.tokens["svc-2"]  # Keystone no longer takes ours (revoked, keys rotated)
    s.clock.advance(2)
    assert result(s.context("tok")).tenant_id == "p"
    assert s.keystone.issued == 3


def test_password_not_in_repr() -> None:
    conf = KeystoneAuthConfig(auth_url="http://k", username="n", password="very-secret", project_name="s")
    assert "very-secret" not in repr(conf)
