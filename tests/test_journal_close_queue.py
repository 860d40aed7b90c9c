"""The mirror's closing of confirmed journal entries, on each database (a real store run inline, a Clock, the
controller simulator in memory): on PostgreSQL the next changes close them with their own entry (within
``CLOSE_DELAY``, else a transaction of their own), elsewhere at once; a change that fails leaves none it took
open for good, a refused one leaves none of its own, and a stopping server closes every one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from restproxy_testing.inline_store import InlineStore, migrated_store
from server_plugin.config import ServerConfig
from server_plugin.context import RequestContext
from server_plugin.controller import mirror as mirror_mod
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.controller.service import ControllerService
from server_plugin.exceptions import QuantumException
from server_plugin.plugin import RestProxyPlugin
from server_plugin.store import mirror_ops
from server_plugin.store.db import Store
from tests.fast.stubs import Controllers

ADMIN = RequestContext.admin()


@pytest.fixture(scope="module")
def real_store(db_url: str) -> Iterator[Store]:
    with migrated_store(db_url) as store:
        yield store


@pytest.fixture
def stack(real_store: Store) -> Iterator[Any]:
    inline = InlineStore(real_store)
    ctl = Controllers(count=1)
    mirror = ControllerMirror(inline, ctl.pool, ctl.clock, "bigswitch")  # type: ignore[arg-type]
    plugin = RestProxyPlugin(inline, None, mirror)  # type: ignore[arg-type]
    yield ctl, mirror, plugin, inline
    real_store.run_sync(mirror_ops.clear_up_to, 2**31 - 1)


def _run(ctl: Controllers, d: Deferred[Any], seconds: float = 0.2) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    ctl.advance(seconds, step=0.01)
    assert out, "not done"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _create(ctl: Controllers, plugin: RestProxyPlugin, name: str) -> dict[str, Any]:
    body = {"network": {"name": name, "tenant_id": "t-close", "admin_state_up": True, "shared": False}}
    d = Deferred.fromCoroutine(plugin.create_network(ADMIN, body))
    out: list[Any] = []
    d.addBoth(out.append)
    ctl.agent.flush()
    for _ in range(10):  # the controller answers; no time passes beyond what its answer needs
        ctl.clock.advance(0.0)
        ctl.agent.flush()
    assert out, "not done"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]  # type: ignore[no-any-return]


def _open(inline: InlineStore) -> list[str]:
    return [e["object_id"] for e in inline.run_sync(mirror_ops.pending, readonly=True)]


def test_confirmed_entries_are_closed_by_the_next_change_or_by_the_delay(stack: Any) -> None:
    ctl, mirror, plugin, inline = stack
    first = _create(ctl, plugin, "first")
    if inline.backend == "postgresql":
        assert _open(inline) == [first["id"]]  # confirmed: waits for the next change (or the delay)
        second = _create(ctl, plugin, "second")
        assert _open(inline) == [second["id"]]  # the second change closed the first's entry with its own
        ctl.advance(mirror_mod.CLOSE_DELAY + 0.01, step=0.01)
    assert _open(inline) == []


def test_a_change_that_fails_in_the_store_leaves_the_entries_it_took_to_be_closed(stack: Any) -> None:
    ctl, mirror, plugin, inline = stack
    _create(ctl, plugin, "confirmed")
    missing = Deferred.fromCoroutine(plugin.update_network(ADMIN, "00000000-0000-0000-0000-000000000000", {"network": {"name": "x"}}))
    with pytest.raises(QuantumException):
        _run(ctl, missing, seconds=0.0)
    ctl.advance(mirror_mod.CLOSE_DELAY + 0.01, step=0.01)
    assert _open(inline) == []


def test_a_refused_change_leaves_no_entry(stack: Any) -> None:
    ctl, mirror, plugin, inline = stack
    _create(ctl, plugin, "confirmed")
    ctl.fault(1, status=500)
    with pytest.raises(QuantumException):
        _create(ctl, plugin, "refused")
    ctl.sims[1].faults.clear()
    ctl.advance(mirror_mod.CLOSE_DELAY + 0.01, step=0.01)
    assert _open(inline) == []


def test_a_stopping_server_closes_every_confirmed_entry_at_once(stack: Any) -> None:
    ctl, mirror, plugin, inline = stack
    for i in range(3):
        _create(ctl, plugin, f"n{i}")
    service = ControllerService(mirror, ServerConfig(controller_profile="bigswitch", server_probe_interval=0), ctl.clock)
    stopped = service.stopService()
    ctl.agent.flush()
    ctl.clock.advance(0.0)
    assert stopped.called
    assert _open(inline) == []
