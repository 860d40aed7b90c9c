"""Sends the journaled port events to Nova (``POST /v2.1/os-server-external-events``), as Neutron's notifier.

Every ``send_events_interval`` seconds the sender claims a batch from the store
(store/nova_events.py), posts it with a ``[nova]`` user's token, and deletes what
Nova answered for. Nova down (refused, timeout, 5xx) or Keystone down: the batch is
released with backoff and stays in the store, so it survives a restart and any
server sharing the database may send it. Nova's endpoint is the catalog's
``compute`` service (``endpoint_type``, ``region_name``) or ``endpoint_override``.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from restproxy_common.backoff import backoff_policy
from server_plugin.openstack import identity
from server_plugin.store import nova_events

BATCH_SIZE = 100
RETRY_MAX = 60.0  # seconds: the longest wait between two attempts of one batch
NOVA_API_VERSION = "2.1"


class NovaUnavailable(Exception):
    pass


def catalog_url(catalog: Any, service_type: str, interface: str, region: str = "") -> str | None:
    """The ``interface`` URL of ``service_type`` in a v3 catalog (in ``region`` if given)."""
    interface = interface.removesuffix("URL")
    for entry in catalog or ():
        if entry.get("type") != service_type:
            continue
        for endpoint in entry.get("endpoints") or ():
            if endpoint.get("interface") != interface:
                continue
            if region and region not in (endpoint.get("region_id"), endpoint.get("region")):
                continue
            return str(endpoint["url"])
    return None


class NovaNotifier(service.Service):
    """The sender: one batch in flight at a time; ``send_now`` for tests and shutdown."""

    log = Logger()

    def __init__(self, store: Any, conf: Any, interval: float, clock: Any, http: Any = None) -> None:
        self.store = store
        self.conf = conf
        self.interval = interval
        self.clock = clock
        self.http = http if http is not None else identity.http_client(clock, conf.cafile, conf.insecure)
        self.token = identity.ServiceToken(self.http, clock, identity.Credentials.of(conf), conf.timeout)
        self.lease = 2 * conf.timeout + 5  # a claim outlives the two calls of one attempt (token, events)
        self.policy = backoff_policy(initial=max(interval, 1.0), maximum=RETRY_MAX, jitter=min(interval, 1.0))
        self._loop: LoopingCall | None = None
        self._sending: Deferred[Any] | None = None
        self._down_since: float | None = None
        self.sent = 0

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.send_now)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(lambda f: self.log.failure("nova event sender stopped", f))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._sending if self._sending is not None else succeed(None)

    def send_now(self) -> Deferred[Any]:
        """Send one batch unless one is in flight; never fails (failures are logged and retried)."""
        if self._sending is not None:
            return self._sending
        self._sending = ensureDeferred(self._send_batch())
        self._sending.addErrback(lambda f: self.log.failure("sending Nova events failed", f))
        self._sending.addBoth(self._done)
        return self._sending

    def _done(self, result: Any) -> None:
        self._sending = None

    async def _send_batch(self) -> None:
        batch = uuid.uuid4().hex
        try:
            events = await self.store.run(nova_events.claim, batch, self.lease, BATCH_SIZE)
        except Exception as e:  # the database is down: the store logs it; the next tick tries again
            self.log.debug("cannot claim Nova events: {error}", error=str(e))
            return
        if not events:
            return
        try:
            codes = await self._post(events)
        except (NovaUnavailable, identity.KeystoneUnavailable) as e:
            delay = self.policy(min(e["attempts"] for e in events))
            if self._down_since is None:
                self._down_since = self.clock.seconds()
                self.log.warn(
                    "Nova unreachable: {reason}; {count} event(s) kept, retried in {delay:.1f} s",
                    reason=str(e), count=len(events), delay=delay,
                )  # fmt: skip
            await self.store.run(nova_events.release, batch, delay)
            return
        if self._down_since is not None:
            self.log.info("Nova answers again after {seconds} s", seconds=int(self.clock.seconds() - self._down_since))
            self._down_since = None
        for item, code in zip(events, codes, strict=True):
            self.log.info(
                "nova event {name} ({status}) for port {port} of server {server}: {code}",
                name=item["name"], status=item["status"], port=item["tag"], server=item["server_uuid"], code=code,
            )  # fmt: skip
        self.sent += await self.store.run(nova_events.delivered, batch, [e["id"] for e in events])

    async def endpoint(self) -> str:
        if self.conf.endpoint_override:
            return str(self.conf.endpoint_override).rstrip("/")
        await self.token.get()
        who = self.token.identity
        url = catalog_url(who.catalog if who else (), "compute", self.conf.endpoint_type, self.conf.region_name)
        if url is None:
            raise NovaUnavailable(f"no {self.conf.endpoint_type} compute endpoint in the catalog")
        return url.rstrip("/")

    async def _post(self, events: list[dict[str, Any]]) -> list[int]:
        """Post ``events``; Nova's code per event (200, or 404/422 for an unknown or unfit server: not retried)."""
        body = {"events": [{k: e[k] for k in ("name", "server_uuid", "tag", "status")} for e in events]}
        for attempt in range(2):
            url = await self.endpoint() + "/os-server-external-events"
            headers = {
                "X-Auth-Token": await self.token.get(), "Accept": "application/json",
                "X-OpenStack-Nova-API-Version": NOVA_API_VERSION, "OpenStack-API-Version": f"compute {NOVA_API_VERSION}",
            }  # fmt: skip
            try:
                answer = await identity.bounded_call(self.http, self.clock, self.conf.timeout, "POST", url, json=body, headers=headers)
            except identity.KeystoneUnavailable as e:  # _call's "unreachable"
                raise NovaUnavailable(str(e)) from None
            status, reply, _ = answer
            if status in (401, 403) and attempt == 0:
                self.token.invalidate()
                continue
            if status >= 500 or status in (401, 403):
                raise NovaUnavailable(f"POST {url}: {status}")
            if status in (200, 207):
                answered = (reply or {}).get("events") or []
                return [int(a.get("code", 200)) if isinstance(a, dict) else 200 for a in answered] + [200] * (len(events) - len(answered))
            # 400 (Nova refuses the batch) or 404 (no server of the batch exists): sending again will not help
            self.log.warn("Nova refused {count} event(s) with {status}: dropped", count=len(events), status=status)
            return [status] * len(events)
        raise NovaUnavailable("Nova refused our token twice")
