"""Turning a request's headers into a RequestContext.

``noauth``: the tenant comes from X-Tenant-Id / X-Project-Id (or, with no
tenant header, the request is an admin one, as Quantum without Keystone);
X-Roles containing ``admin`` makes it admin. ``token``: X-Auth-Token is looked
up in a tokens file (JSON: ``{"<token>": {"tenant_id": ..., "roles": [...]}}``);
unknown or missing tokens are refused with 401. ``keystone``: X-Auth-Token is
validated by Keystone (``KeystoneAuth``, with keystonemiddleware's options).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from server_plugin import exceptions as exc
from server_plugin.api.http import header as _header
from server_plugin.context import RequestContext
from server_plugin.openstack import identity
from server_plugin.openstack.token_cache import MISS, TokenCache
from server_plugin.validators import ValidationError, tenant_id


def _roles(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(r.strip().lower() for r in text.split(",") if r.strip())


class NoAuth:
    """Trust the identity headers (behind a trusted proxy, or for development)."""

    def context_for(self, request: IRequest) -> RequestContext:
        tenant = _header(request, "X-Tenant-Id") or _header(request, "X-Project-Id")
        roles = _roles(_header(request, "X-Roles"))
        if tenant is not None:
            try:
                tenant_id(tenant)
            except ValidationError as e:
                raise exc.InvalidInput(error_message=f"Invalid input for tenant_id. Reason: {e}") from None
        if tenant is None:
            return RequestContext(tenant_id=None, roles=roles or ("admin",), is_admin=True)
        return RequestContext(tenant_id=tenant, roles=roles, is_admin="admin" in roles)


class TokenAuth:
    """Static tokens from a file: token -> tenant and roles."""

    def __init__(self, tokens: dict[str, dict[str, Any]]) -> None:
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: str) -> TokenAuth:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tokens = data.get("tokens", data)
        if not isinstance(tokens, dict):
            raise ValueError(f"{path}: expected a JSON object of token -> {{tenant_id, roles}}")
        return cls(tokens)

    def context_for(self, request: IRequest) -> RequestContext:
        try:
            token = _header(request, "X-Auth-Token")
        except exc.HTTPBadRequest:
            raise exc.HTTPUnauthorized() from None  # a token that is not text matches none
        entry = self._tokens.get(token) if token else None
        if entry is None:
            raise exc.HTTPUnauthorized()
        roles = tuple(str(r).lower() for r in entry.get("roles", ()))
        return RequestContext(tenant_id=entry.get("tenant_id"), roles=roles, is_admin="admin" in roles)


class KeystoneUnauthorized(exc.HTTPUnauthorized):
    """401 with ``WWW-Authenticate: Keystone uri="..."`` (what keystonemiddleware answers), typed as HTTPUnauthorized."""

    message = "The request you have made requires authentication."

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.headers = {"WWW-Authenticate": f'Keystone uri="{uri}"'}

    @property
    def type(self) -> str:
        return "HTTPUnauthorized"


class KeystoneDown(exc.ServiceUnavailable):
    """Keystone cannot say who an uncached token is: 503, logged once per outage by KeystoneAuth (not per request)."""

    message = "The Keystone service is temporarily unavailable."
    logged = True

    @property
    def type(self) -> str:
        return "ServiceUnavailable"


class KeystoneAuth:
    """``auth_strategy = keystone``: X-Auth-Token validated by Keystone v3, as keystonemiddleware's auth_token does.

    A cached token is answered synchronously (a RequestContext); otherwise ``context_for``
    returns a Deferred (callers use ``request_context``). Concurrent requests with the
    same uncached token share one Keystone call. ``GET /v2.0`` (the resource list) stays
    open, as in Neutron; ``GET /`` never asks for a context.
    """

    log = Logger()

    def __init__(self, conf: Any, clock: Any, http: Any = None) -> None:
        self.conf = conf
        self.clock = clock
        self.uri = conf.public_uri
        http = http if http is not None else identity.http_client(clock, conf.cafile, conf.insecure)
        credentials = identity.Credentials.of(conf)
        self.service = identity.ServiceToken(http, clock, credentials, conf.http_connect_timeout, conf.service_token_renew_before)
        self.cache = TokenCache(conf.cache_size, conf.token_cache_time)
        self.service_roles = conf.roles_for_service
        self._waiters: dict[str, list[Deferred[Any]]] = {}
        self._down_since: float | None = None
        if conf.memcached_servers:
            self.log.info("[keystone_authtoken] memcached_servers is not used: tokens are cached in this process")

    def context_for(self, request: IRequest) -> RequestContext | Deferred[RequestContext]:
        if request.method in (b"GET", b"HEAD") and request.path.rstrip(b"/") in (b"/v2.0", b"/v2.0.json", b""):
            return RequestContext(tenant_id=None)  # discovery: no identity needed, none given
        try:
            token = _header(request, "X-Auth-Token")
            service_token = _header(request, "X-Service-Token")
        except exc.HTTPBadRequest:
            raise KeystoneUnauthorized(self.uri) from None
        if not token:
            raise KeystoneUnauthorized(self.uri)
        now = self.clock.seconds()
        found = self.cache.get(token, now)
        if service_token is None and found is not MISS:
            return self._context(found)
        return ensureDeferred(self._uncached(token, service_token))

    def _context(self, who: Any) -> RequestContext:
        if who is None or who.project_id is None:
            raise KeystoneUnauthorized(self.uri)  # refused, or unscoped: Neutron needs a project
        return RequestContext(tenant_id=who.project_id, roles=who.roles, is_admin="admin" in who.roles, user_id=who.user_id)

    async def _uncached(self, token: str, service_token: str | None) -> RequestContext:
        who = await self._lookup(token)
        if service_token is not None:
            service = await self._lookup(service_token)
            if service is None:
                raise KeystoneUnauthorized(self.uri)
            if self.conf.service_token_roles_required and not set(self.service_roles) & set(service.roles):
                self.log.warn("X-Service-Token of user {user} lacks the roles {roles}", user=service.user_id, roles=self.service_roles)
                raise KeystoneUnauthorized(self.uri)
        return self._context(who)

    async def _lookup(self, token: str) -> Any:
        """The cached or validated Identity of ``token`` (None: refused); one Keystone call per token at a time."""
        found = self.cache.get(token, self.clock.seconds())
        if found is not MISS:
            return found
        waiter: Deferred[Any] = Deferred()
        waiters = self._waiters.setdefault(token, [])
        waiters.append(waiter)
        if len(waiters) == 1:
            ensureDeferred(self._validate(token)).addBoth(self._deliver, token)
        return await waiter

    def _deliver(self, result: Any, token: str) -> None:
        for waiter in self._waiters.pop(token, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _validate(self, token: str) -> Any:
        started = self.clock.seconds()
        try:
            who = await identity.validate(self.service, token)
        except identity.InvalidToken:
            self._up()
            self.cache.put(token, None, self.clock.seconds())
            return None
        except identity.KeystoneUnavailable as e:
            if self._down_since is None:
                self._down_since = started
                self.log.error("Keystone unreachable at {url}: {reason}; uncached tokens get 503", url=self.service.url, reason=str(e))
            raise KeystoneDown() from None
        self._up()
        self.cache.put(token, who, self.clock.seconds(), who.expires_at)
        self.log.debug(
            "token of user {user} project {project} validated in {ms} ms",
            user=who.user_id, project=who.project_id, ms=int((self.clock.seconds() - started) * 1000),
        )  # fmt: skip
        return who

    def _up(self) -> None:
        if self._down_since is not None:
            self.log.info("Keystone answers again after {seconds} s", seconds=int(self.clock.seconds() - self._down_since))
            self._down_since = None


async def request_context(auth: Any, request: IRequest) -> RequestContext:
    """``auth.context_for(request)``, awaited when the strategy must ask someone (keystone, for an uncached token)."""
    ctx = auth.context_for(request)
    if isinstance(ctx, RequestContext):
        return ctx
    result: RequestContext = await ctx
    return result
