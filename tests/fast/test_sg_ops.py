"""Fast tier: security groups through the plugin over a real SQLite store run inline (no server, no threads).

Which hosts hear of which group in the operation's transaction (member changes: once, for every host agent),
the channel list's groups, and the pure Big Switch mapping.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from server_plugin.context import RequestContext
from server_plugin.controller import sg_mapping
from server_plugin.controller.mirror import ControllerMirror
from server_plugin.exceptions import QuantumException
from server_plugin.extensions import Extensions
from server_plugin.ops.base import Profile
from server_plugin.plugin import RestProxyPlugin, core_extension
from server_plugin.sg_plugin import SecurityGroupPlugin, sg_extension
from server_plugin.store import agent_events
from server_plugin.store.models import AgentEvent
from tests.fast.stubs import Controllers, InlineStore

ADMIN = RequestContext.admin()


def done(coro: Any) -> Any:
    """The result of a coroutine that finishes at once (the store runs inline)."""
    result: list[Any] = []
    ensureDeferred(coro).addBoth(result.append)
    assert result, "did not finish inline"
    if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


def _plugins(store: InlineStore) -> tuple[RestProxyPlugin, SecurityGroupPlugin]:
    core = RestProxyPlugin(store)  # type: ignore[arg-type]
    sg = SecurityGroupPlugin(core)
    Extensions(core, [core_extension(core), sg_extension(sg)])
    return core, sg


def _events(store: InlineStore, after: int = 0) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The host agents' events after ``after`` (not the DHCP agents' ``@dhcp`` ones)."""

    def read(session: Any) -> list[Any]:
        rows = session.execute(
            select(AgentEvent.host, AgentEvent.kind, AgentEvent.object_id, AgentEvent.payload).where(
                AgentEvent.seq > after, AgentEvent.host != "@dhcp"
            )
        )
        return [(h, k, o, json.loads(p)) for h, k, o, p in rows]

    return store.run_sync(read, readonly=True)


def _last(store: InlineStore) -> int:
    return store.run_sync(agent_events.last_seq, readonly=True)


def test_members_and_rules_reach_the_hosts_concerned(store: InlineStore) -> None:
    core, sg = _plugins(store)
    net = done(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))
    done(core.create_subnet(ADMIN, {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}))

    def port(host: str, **extra: Any) -> dict[str, Any]:
        return done(core.create_port(ADMIN, {"port": {"tenant_id": "t", "network_id": net["id"], "binding:host_id": host, **extra}}))

    first = port("h1")
    [default_id] = first["security_groups"]
    events = _events(store)
    # the new member for every host agent, then the group (with its new member) to h1, which did not have it, then the port
    assert [(h, k, o) for h, k, o, _ in events] == [
        ("@hosts", "security_group_member", default_id),
        ("h1", "security_group_updated", default_id),
        ("h1", "port_attached", first["id"]),
    ]
    assert events[1][3]["members"] == [first["fixed_ips"][0]["ip_address"]]
    mark = _last(store)
    second = port("h2")
    events = _events(store, mark)
    # the new member (this port's addresses) once, for every host; h2 did not have the group: whole, the port included.
    # h1 had it: nothing of its own.
    assert [(h, k, o) for h, k, o, _ in events] == [
        ("@hosts", "security_group_member", default_id),
        ("h2", "security_group_updated", default_id),
        ("h2", "port_attached", second["id"]),
    ]
    second_ip = second["fixed_ips"][0]["ip_address"]
    [member] = [p for h, k, _, p in events if k == "security_group_member"]
    assert member == {"id": default_id, "port_id": second["id"], "addresses": [second_ip]}
    [whole] = [p for h, k, _, p in events if k == "security_group_updated"]
    assert whole["ports"] == {first["id"]: [first["fixed_ips"][0]["ip_address"]], second["id"]: [second_ip]}
    # a group nobody's port is in: its rules go nowhere; a port of h3 without groups hears of none
    lonely = done(sg.create_security_group(ADMIN, {"security_group": {"tenant_id": "t", "name": "x"}}))
    mark = _last(store)
    rule = {"security_group_id": lonely["id"], "direction": "ingress", "tenant_id": "t", "protocol": "tcp", "ethertype": "IPv4"}
    done(sg.create_security_group_rule(ADMIN, {"security_group_rule": rule}))
    port("h3", security_groups=[])
    assert [(h, k) for h, k, _, _ in _events(store, mark)] == [("h3", "port_attached")]
    # the channel list: h1's groups with both members
    state = store.run_sync(agent_events.host_state, "h1", tuple(core.host_views), readonly=True)
    [group] = state["security_groups"]
    assert group["id"] == default_id and len(group["members"]) == 2
    assert store.run_sync(agent_events.host_state, "h3", tuple(core.host_views), readonly=True)["security_groups"] == []
    # a member leaves: the other host hears of it
    mark = _last(store)
    done(core.delete_port(ADMIN, second["id"]))
    told = [(h, k, p) for h, k, o, p in _events(store, mark) if o == default_id]
    assert told == [("@hosts", "security_group_member", {"id": default_id, "port_id": second["id"], "addresses": []})]


def test_bigswitch_mapping_posts_the_whole_group_and_floodlight_gets_nothing() -> None:
    group = {"id": "g", "tenant_id": "t", "name": "web", "description": "", "created_at": "x", "security_group_rules": [
        {"id": "r", "security_group_id": "g", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
         "port_range_max": 22, "remote_ip_prefix": None, "remote_group_id": None, "tenant_id": "t", "created_at": "x"},
    ]}  # fmt: skip
    bsn, fl = Profile("bigswitch"), Profile("floodlight")
    [post] = sg_mapping.security_group_calls(bsn, None, group)
    assert (post.method, post.path) == ("POST", "/securitygroups")
    body = post.body["security-group"]
    assert "created_at" not in body and body["security_group_rules"][0]["port_range_min"] == 22
    assert [(c.method, c.path) for c in sg_mapping.security_group_calls(bsn, group, group)] == [("POST", "/securitygroups")]
    assert [(c.method, c.path, c.ignore) for c in sg_mapping.security_group_calls(bsn, group, None)] == [
        ("DELETE", "/securitygroups/g", (404,))
    ]
    assert sg_mapping.security_group_calls(fl, None, group) == [] and sg_mapping.security_group_calls(fl, group, None) == []


def test_a_port_moving_hosts_takes_its_groups_along(store: InlineStore) -> None:
    core, _ = _plugins(store)
    net = done(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))
    done(core.create_subnet(ADMIN, {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}))
    body = {"port": {"tenant_id": "t", "network_id": net["id"], "binding:host_id": "h1"}}
    moving = done(core.create_port(ADMIN, body))
    [group_id] = moving["security_groups"]
    mark = _last(store)
    done(core.update_port(ADMIN, moving["id"], {"port": {"binding:host_id": "h4"}}))
    kinds = [(h, k) for h, k, _, _ in _events(store, mark)]
    assert ("h4", "security_group_updated") in kinds and ("h4", "port_attached") in kinds and ("h1", "port_detached") in kinds
    assert kinds.index(("h4", "security_group_updated")) < kinds.index(("h4", "port_attached"))
    # a new member on h5: every host hears of the member (h4 has the group: it applies it); h5 gets the group whole
    mark = _last(store)
    done(core.create_port(ADMIN, {"port": dict(body["port"], **{"binding:host_id": "h5"})}))
    told = [(h, k) for h, k, o, _ in _events(store, mark) if o == group_id]
    assert told == [("@hosts", "security_group_member"), ("h5", "security_group_updated")]
    # back on h1, where the group's last port had left: h1 wants it again and gets it whole (what it had may be stale)
    mark = _last(store)
    done(core.update_port(ADMIN, moving["id"], {"port": {"binding:host_id": "h1"}}))
    assert [(h, k) for h, k, o, _ in _events(store, mark) if o == group_id] == [("h1", "security_group_updated")]


def test_a_default_group_deleted_by_another_server_is_looked_up_again(store: InlineStore) -> None:
    core, _ = _plugins(store)
    other_core, other = _plugins(store)  # a second server on the same database
    net = done(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))
    done(core.create_subnet(ADMIN, {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}))
    body = {"port": {"tenant_id": "t", "network_id": net["id"]}}
    first = done(core.create_port(ADMIN, body))
    [old_default] = first["security_groups"]
    done(core.delete_port(ADMIN, first["id"]))
    done(other.delete_security_group(ADMIN, old_default))  # this server's cache still names it
    second = done(core.create_port(ADMIN, body))
    [new_default] = second["security_groups"]
    assert new_default != old_default
    assert done(other_core.get_port(ADMIN, second["id"]))["security_groups"] == [new_default]


def test_a_host_gets_only_the_groups_it_did_not_have(store: InlineStore) -> None:
    """A port of B (whose rules name A) moves to h2, which has a port in A: h2 gets B whole, not A again; h1 (which
    still wants A) hears nothing, since A's members did not change."""
    core, sg = _plugins(store)
    net = done(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))
    done(core.create_subnet(ADMIN, {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}))
    a = done(sg.create_security_group(ADMIN, {"security_group": {"tenant_id": "t", "name": "a"}}))
    b = done(sg.create_security_group(ADMIN, {"security_group": {"tenant_id": "t", "name": "b"}}))
    rule = {"security_group_id": b["id"], "direction": "ingress", "tenant_id": "t", "ethertype": "IPv4", "remote_group_id": a["id"]}
    done(sg.create_security_group_rule(ADMIN, {"security_group_rule": rule}))
    body = {"tenant_id": "t", "network_id": net["id"]}
    done(core.create_port(ADMIN, {"port": dict(body, **{"binding:host_id": "h1", "security_groups": [a["id"]]})}))
    done(core.create_port(ADMIN, {"port": dict(body, **{"binding:host_id": "h2", "security_groups": [a["id"]]})}))
    moving = done(core.create_port(ADMIN, {"port": dict(body, **{"binding:host_id": "h1", "security_groups": [b["id"]]})}))
    mark = _last(store)
    done(core.update_port(ADMIN, moving["id"], {"port": {"binding:host_id": "h2"}}))
    told = [(h, k, o) for h, k, o, _ in _events(store, mark) if o in (a["id"], b["id"])]
    assert told == [("h2", "security_group_updated", b["id"])]


def _mirrored(store: InlineStore, **sim: Any) -> tuple[RestProxyPlugin, Controllers, list[str]]:
    """The plugins over a mirror on a simulator (``sim``: its config), and the kinds of the operations the mirror runs."""
    ctl = Controllers(count=1, **sim)
    mirror = ControllerMirror(store, ctl.pool, ctl.clock, "bigswitch")  # type: ignore[arg-type]
    core = RestProxyPlugin(store, None, mirror)  # type: ignore[arg-type]
    Extensions(core, [core_extension(core), sg_extension(SecurityGroupPlugin(core))])
    kinds: list[str] = []
    run = mirror.run

    async def counted(operation: Any) -> Any:
        kinds.append(operation.kind)
        return await run(operation)

    mirror.run = counted  # type: ignore[method-assign]
    return core, ctl, kinds


def _settle(ctl: Controllers, ds: list[Deferred[Any]]) -> list[Any]:
    out: list[Any] = [None] * len(ds)
    for i, d in enumerate(ds):
        d.addBoth(lambda r, i=i: out.__setitem__(i, r))
    ctl.advance(2.0)
    assert all(r is not None for r in out), "not done"
    return out


def test_concurrent_first_ports_of_a_tenant_make_its_default_group_once(store: InlineStore) -> None:
    """The ports that arrive while the default group is being made wait for that one operation, not one each in turn."""
    core, ctl, kinds = _mirrored(store, latency_ms=20)
    [net] = _settle(ctl, [Deferred.fromCoroutine(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))])
    subnet = {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}
    _settle(ctl, [Deferred.fromCoroutine(core.create_subnet(ADMIN, subnet))])
    del kinds[:]
    body = {"port": {"tenant_id": "t", "network_id": net["id"]}}
    ports = _settle(ctl, [Deferred.fromCoroutine(core.create_port(ADMIN, body)) for _ in range(8)])
    assert kinds.count("security_group") == 1 and kinds.count("port") == 8
    assert {tuple(p["security_groups"]) for p in ports} == {(ports[0]["security_groups"][0],)}
    posts = [r for r in ctl.sims[1].recorder.listing() if r["path"].endswith("/securitygroups")]
    assert len(posts) == 1


def test_a_refused_default_group_is_made_by_the_next_waiting_port(store: InlineStore) -> None:
    """The first port's group is refused (the port too); the ports that waited for it make it once more, once."""
    core, ctl, kinds = _mirrored(store, latency_ms=20)
    [net] = _settle(ctl, [Deferred.fromCoroutine(core.create_network(ADMIN, {"network": {"tenant_id": "t", "name": "n"}}))])
    subnet = {"subnet": {"tenant_id": "t", "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}
    _settle(ctl, [Deferred.fromCoroutine(core.create_subnet(ADMIN, subnet))])
    ctl.fault(1, status=500, count=1, path_regex="securitygroups")
    del kinds[:]
    body = {"port": {"tenant_id": "t", "network_id": net["id"]}}
    first, *rest = _settle(ctl, [Deferred.fromCoroutine(core.create_port(ADMIN, body)) for _ in range(5)])
    assert isinstance(first, Failure) and first.check(QuantumException)
    assert not any(isinstance(p, Failure) for p in rest)
    assert len({tuple(p["security_groups"]) for p in rest}) == 1
    assert kinds.count("security_group") == 2 and kinds.count("port") == 4
