"""Keystone v3 over treq, from the reactor: the server's own token, and other tokens' validation.

``ServiceToken`` is a password-authenticated token for one of the server's users
(``[keystone_authtoken]`` to validate tokens, ``[nova]`` to call Nova), fetched
when first needed and renewed before it expires; concurrent callers share one
fetch. ``validate`` asks ``GET /v3/auth/tokens`` (X-Auth-Token: ours,
X-Subject-Token: theirs) who a token is. Every call is bounded by ``timeout``:
an unreachable Keystone is ``KeystoneUnavailable``, never a hang. Tokens and
passwords are never logged.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs
import treq
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, RequestTransmissionFailed, ResponseNeverReceived

from restproxy_common.tls import ControllerTLSPolicy


class InvalidToken(Exception):
    """Keystone says the token is not valid (unknown, expired, revoked) or it names no project."""


class KeystoneUnavailable(Exception):
    """Keystone did not answer in time, refused the connection, or answered with a server error."""


@attrs.frozen
class Identity:
    """Who a token is, as the API needs it."""

    user_id: str
    project_id: str | None
    roles: tuple[str, ...]
    expires_at: float  # epoch seconds
    catalog: tuple[dict[str, Any], ...] = attrs.field(default=(), repr=False, eq=False)


@attrs.frozen
class Credentials:
    auth_url: str
    username: str
    password: str = attrs.field(repr=False)
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    user_domain_id: str = ""
    project_domain_id: str = ""

    @classmethod
    def of(cls, conf: Any) -> Credentials:
        """From a ``[keystone_authtoken]`` or ``[nova]`` section."""
        return cls(
            conf.auth_url, conf.username, conf.password, conf.project_name, conf.user_domain_name or "Default",
            conf.project_domain_name or "Default", conf.user_domain_id, conf.project_domain_id,
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        user_domain = {"id": self.user_domain_id} if self.user_domain_id else {"name": self.user_domain_name}
        project_domain = {"id": self.project_domain_id} if self.project_domain_id else {"name": self.project_domain_name}
        user = {"name": self.username, "domain": user_domain, "password": self.password}
        return {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": {"name": self.project_name, "domain": project_domain}},
            }
        }


def tokens_url(auth_url: str) -> str:
    """``http://keystone:5000``, ``.../v3`` or ``.../identity/v3/`` -> ``.../v3/auth/tokens``."""
    base = auth_url.rstrip("/")
    if base.endswith("/v3"):
        base = base[: -len("/v3")]
    return base + "/v3/auth/tokens"


def parse_time(text: str) -> float:
    """Keystone's ``2026-12-01T19:45:00.000000Z`` as epoch seconds."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def identity_of(body: Any) -> Identity:
    """The token document of a Keystone answer; InvalidToken if it is not one."""
    try:
        token = body["token"]
        project = token.get("project") or {}
        roles = tuple(str(r["name"]).lower() for r in token.get("roles") or ())
        return Identity(
            user_id=str(token["user"]["id"]), project_id=project.get("id"), roles=roles, expires_at=parse_time(token["expires_at"]),
            catalog=tuple(token.get("catalog") or ()),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidToken("not a token document") from None


def http_client(reactor: Any, cafile: str = "", insecure: bool = False) -> treq.client.HTTPClient:
    """treq over persistent connections, verifying HTTPS against ``cafile`` (or the system's CAs) unless ``insecure``."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    pool.cachedConnectionTimeout = 60  # idle connections are closed before a usual server-side keep-alive limit ends most
    policy = ControllerTLSPolicy(cafile, no_validation=insecure)
    return treq.client.HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


async def bounded_call(http: Any, clock: Any, timeout: float, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """One bounded HTTP call: (status, parsed JSON body or None, response headers)."""

    async def call() -> tuple[int, Any, Any]:
        response = await http.request(method, url, **kwargs)
        raw = await treq.content(response)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return response.code, body, response.headers

    started = clock.seconds()
    for attempt in range(2):
        d = ensureDeferred(call())
        d.addTimeout(max(timeout - (clock.seconds() - started), 0.001), clock)
        try:
            return await d
        except (ResponseNeverReceived, RequestTransmissionFailed) as e:
            # A kept-alive connection the server had just closed: once more on a new one, within the same time.
            if attempt == 0 and clock.seconds() - started < timeout:
                continue
            error: Exception = e
        except Exception as e:  # timeout, refused, reset, DNS: all "unreachable" to the caller
            error = e
        break
    raise KeystoneUnavailable(f"{method} {url.split('?')[0]}: {type(error).__name__}")


class ServiceToken:
    """The server's own token for ``credentials``; renewed ``renew_before`` seconds before it expires."""

    log = Logger()

    def __init__(self, http: Any, clock: Any, credentials: Credentials, timeout: float = 5.0, renew_before: float = 300.0) -> None:
        self.http = http
        self.clock = clock
        self.credentials = credentials
        self.timeout = timeout
        self.renew_before = renew_before
        self.url = tokens_url(credentials.auth_url)
        self._token: str | None = None
        self._identity: Identity | None = None
        self._fetched_at = 0.0
        self._waiters: list[Deferred[str]] = []

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def fresh(self) -> str | None:
        """The token if it is not due for renewal (no I/O), else None."""
        if self._token is None or self._identity is None:
            return None
        lifetime = self._identity.expires_at - self._fetched_at
        margin = min(self.renew_before, lifetime / 2)
        return self._token if self.clock.seconds() < self._identity.expires_at - margin else None

    async def get(self) -> str:
        token = self.fresh()
        if token is not None:
            return token
        waiter: Deferred[str] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:  # the first caller fetches; the others wait for the same answer
            ensureDeferred(self._fetch()).addBoth(self._deliver)
        return await waiter

    def _deliver(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def invalidate(self) -> None:
        """Keystone refused our token (revoked, keys rotated): the next ``get`` fetches a new one."""
        self._token = None

    async def _fetch(self) -> str:
        started = self.clock.seconds()
        status, body, headers = await bounded_call(
            self.http, self.clock, self.timeout, "POST", self.url, json=self.credentials.body(), headers={"Accept": "application/json"}
        )
        if status >= 500:
            raise KeystoneUnavailable(f"POST {self.url}: {status}")
        token = (headers.getRawHeaders("X-Subject-Token") or [None])[0]
        if status != 201 or token is None:
            self.log.error(
                "Keystone refused the credentials of user {user} (project {project}) at {url}: {status}",
                user=self.credentials.username, project=self.credentials.project_name, url=self.url, status=status,
            )  # fmt: skip
            raise KeystoneUnavailable(f"service credentials refused ({status})")
        identity = identity_of(body)
        self._token, self._identity, self._fetched_at = token, identity, started
        self.log.info(
            "service token for user {user} (project {project}) valid for {seconds} s",
            user=self.credentials.username, project=self.credentials.project_name, seconds=int(identity.expires_at - started),
        )  # fmt: skip
        return str(token)


async def validate(service: ServiceToken, token: str) -> Identity:
    """Who ``token`` is: ``GET /v3/auth/tokens`` with our token; one retry with a new one if Keystone refuses ours."""
    for attempt in range(2):
        ours = await service.get()
        status, body, _ = await bounded_call(
            service.http, service.clock, service.timeout, "GET", service.url + "?nocatalog",
            headers={"X-Auth-Token": ours, "X-Subject-Token": token, "Accept": "application/json"},
        )  # fmt: skip
        if status == 200:
            return identity_of(body)
        if status == 404:
            raise InvalidToken("Keystone does not know the token (expired, revoked or never issued)")
        if status in (401, 403) and attempt == 0:
            service.invalidate()  # ours was revoked or the keys rotated: fetch a new one, once
            continue
        if status == 400:
            raise InvalidToken("Keystone refused the token as malformed")
        raise KeystoneUnavailable(f"GET {service.url}: {status}")
    raise KeystoneUnavailable("Keystone refused the service token twice")
