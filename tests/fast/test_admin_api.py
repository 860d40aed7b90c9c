"""/admin on StubTreq and a Clock: routes, the pool view, and a waited sync's progress lines each second."""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, succeed
from twisted.web.resource import Resource

from server_plugin.api.admin import AdminAPI
from server_plugin.api.auth import NoAuth
from server_plugin.controller.mirror import ControllerMirror
from tests.fast.stubs import Controllers, InlineStore, body_producer


class Admin:
    """The admin API of a server with one (slow) controller, behind an in-memory HTTP client."""

    def __init__(self, store: InlineStore, with_mirror: bool = True) -> None:
        self.ctl = Controllers(count=1, latency_ms=2500)  # a /topology takes 2.5 s
        mirror = ControllerMirror(store, self.ctl.pool, self.ctl.clock, "bigswitch") if with_mirror else None  # type: ignore[arg-type]
        api = AdminAPI(
            NoAuth(), journal=lambda: succeed([]), clock=self.ctl.clock,
            mirror_status=mirror.status if mirror else None, sync=mirror.sync if mirror else None,
        )  # fmt: skip
        root = Resource()
        root.putChild(b"admin", api)
        self.agent = RequestTraversalAgent(root)
        self.client = treq.client.HTTPClient(self.agent, data_to_body_producer=body_producer)

    def call(self, method: str, path: str, seconds: float = 0.0, **kwargs: Any) -> tuple[int, bytes, dict[str, Any]]:
        out: list[Any] = []

        async def go() -> None:
            response = await self.client.request(method, "http://admin.test/admin/" + path, **kwargs)
            headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
            out.append((response.code, await response.content(), headers))

        Deferred.fromCoroutine(go()).addErrback(out.append)
        self.agent.flush()
        step = 0.05
        for _ in range(round(seconds / step)):
            self.ctl.clock.advance(step)
            self.ctl.agent.flush()
            self.agent.flush()
        assert out, "no answer"
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]  # type: ignore[no-any-return]


def test_pool_shows_the_controllers_sync_and_journal(store: InlineStore) -> None:
    status, body, _ = Admin(store).call("GET", "pool")
    view = json.loads(body)
    assert status == 200 and view["journal"] == [] and view["profile"] == "bigswitch"
    assert [s["server"] for s in view["servers"]] == ["127.0.0.1:1"] and view["sync"]["running"] is False


def test_without_controllers(store: InlineStore) -> None:
    admin = Admin(store, with_mirror=False)
    assert json.loads(admin.call("GET", "pool")[1]) == {"controllers": "none (store only)", "journal": []}
    assert admin.call("POST", "sync")[0] == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"), [("POST", "pool", 405, "GET"), ("GET", "sync", 405, "POST"), ("GET", "nope", 404, None)]
)
def test_routes(store: InlineStore, method: str, path: str, status: int, allow: str | None) -> None:
    got, _, headers = Admin(store).call(method, path)
    assert got == status and headers.get("allow") == allow


def test_a_tenant_is_refused(store: InlineStore) -> None:
    assert Admin(store).call("GET", "pool", headers={"X-Tenant-Id": "t1"})[0] == 403


def test_a_waited_sync_streams_one_progress_line_a_second_then_the_result(store: InlineStore) -> None:
    status, body, headers = Admin(store).call("POST", "sync?wait=1", seconds=3.0)
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert [line.get("running") for line in lines[:-1]] == [True, True, True]  # at 0, 1 and 2 s; done at 2.5 s
    assert lines[-1]["result"] == "ok" and lines[-1]["last"]["result"] == "ok"


def test_a_sync_without_waiting_is_accepted(store: InlineStore) -> None:
    status, body, _ = Admin(store).call("POST", "sync")
    assert status == 202 and json.loads(body)["sync"]["running"] is True
