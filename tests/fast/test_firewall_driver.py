"""The firewall driver on a Clock with a recording OpenFlow client: diffs, bundles where atomicity matters, failures,
reconnects, stale cookies. (The real switch is in tests/test_agent_security_groups.py.)"""

from __future__ import annotations

from typing import Any

import attrs
from os_ken.ofproto import ofproto_v1_3 as ofp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from restproxy_agent.firewall import compiler, encode
from restproxy_agent.firewall.driver import OpenFlowFirewall
from restproxy_agent.firewall.flows import Flow, match
from restproxy_agent.openflow import OpenFlowError

MAC = "fa:16:3e:00:00:01"


class Client:
    def __init__(self) -> None:
        self.proto: Any = object()
        self.batches: list[tuple[str, list[Any]]] = []
        self.fail_next = False
        self.stats: list[Any] = []

    def connect(self) -> Deferred[Any]:
        return succeed(self.proto)

    def _record(self, kind: str, msgs: list[Any]) -> Deferred[None]:
        self.batches.append((kind, msgs))
        if self.fail_next:
            self.fail_next = False
            return fail(OpenFlowError("switch refused xid 7: OFPT_ERROR type 5 code 0", 5, 0))
        return succeed(None)

    def send(self, msgs: list[Any]) -> Deferred[None]:
        return self._record("plain", msgs)

    def bundle(self, msgs: list[Any]) -> Deferred[None]:
        return self._record("bundle", msgs)

    async def stream(self, encoders: list[Any], atomic: bool) -> None:
        await self._record("bundle" if atomic else "plain", [make() for make in encoders])

    def flow_stats(self) -> Deferred[list[Any]]:
        return succeed(self.stats)

    def flow_cookies(self) -> Deferred[list[int]]:
        return succeed([s.cookie for s in self.stats])

    def stop(self) -> None:
        pass


@attrs.frozen
class Stat:
    cookie: int


def make() -> tuple[OpenFlowFirewall, Client, Clock]:
    clock, client = Clock(), Client()
    fw = OpenFlowFirewall(clock, "/nonexistent", client=client)  # type: ignore[arg-type]
    d = fw.start()
    clock.advance(0)
    assert d.called
    client.batches.clear()
    return fw, client, clock


def port(**fields: Any) -> dict[str, Any]:
    return {"id": "p1", "mac_address": MAC, "fixed_ips": [{"ip_address": "10.0.0.5"}], "port_security_enabled": True,
            "security_groups": ["g"], **fields}  # fmt: skip


def groups(members: list[str], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": None, "port_range_min": None, "port_range_max": None,
            "remote_ip_prefix": None, "remote_group_id": "g"}  # fmt: skip
    return {"g": {"id": "g", "rules": rules if rules is not None else [rule], "members": members}}


def commands(msgs: list[Any]) -> list[int]:
    return [m.command for m in msgs]


def test_a_new_port_goes_as_plain_adds_in_one_batch_with_its_zone_and_conjunction_flows() -> None:
    fw, client, clock = make()
    done = fw.apply_port(port(), ofport=5, zone=3, groups=groups(["10.0.0.5", "10.0.0.6"]))
    clock.advance(0)
    assert done.called and len(client.batches) == 1
    kind, msgs = client.batches[0]
    assert kind == "plain" and set(commands(msgs)) == {ofp.OFPFC_ADD}
    wanted = [f for owner in ("p1", "zone:3", "conj") for f in fw.desired[owner].values()]
    assert sorted(m.cookie for m in msgs) == sorted(encode.cookie(f) for f in wanted)  # each flow's cookie is its content's
    assert "zone:3" in fw.installed and "conj" in fw.installed and len(fw.installed["zone:3"]) == 2


def test_the_same_port_again_sends_nothing_and_a_member_change_sends_one_flow() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    client.batches.clear()
    d = fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    assert d.result == 0 and client.batches == []
    d = fw.members_changed("g", groups(["10.0.0.5", "10.0.0.6"]))
    clock.advance(0)
    assert d.result == 1 and [(k, commands(m)) for k, m in client.batches] == [("plain", [ofp.OFPFC_ADD])]
    client.batches.clear()
    fw.members_changed("g", groups(["10.0.0.5"]))
    clock.advance(0)
    assert [(k, commands(m)) for k, m in client.batches] == [("bundle", [ofp.OFPFC_DELETE_STRICT])]


def test_a_rule_change_replaces_the_ports_rules_in_one_bundle() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    client.batches.clear()
    tcp = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
           "remote_ip_prefix": "10.1.0.0/16", "remote_group_id": None}  # fmt: skip
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"], [tcp]))
    clock.advance(0)
    (kind, msgs), *rest = client.batches
    assert kind == "bundle" and not rest
    assert ofp.OFPFC_DELETE_STRICT in commands(msgs) and ofp.OFPFC_ADD in commands(msgs)
    assert commands(msgs).index(ofp.OFPFC_DELETE_STRICT) < commands(msgs).index(ofp.OFPFC_ADD)  # (inside one atomic bundle)


def test_a_refused_bundle_fails_the_caller_and_keeps_what_is_installed() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    before = dict(fw.installed["p1"])
    client.fail_next = True
    d = fw.apply_port(port(fixed_ips=[{"ip_address": "10.0.0.8"}]), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    errors: list[Any] = []
    d.addErrback(errors.append)
    assert errors and errors[0].check(OpenFlowError)
    assert fw.installed["p1"] == before  # the bundle applied nothing
    client.batches.clear()
    fw.apply_port(port(fixed_ips=[{"ip_address": "10.0.0.8"}]), 5, 3, groups(["10.0.0.5"]))  # the agent's retry
    clock.advance(0)
    assert client.batches and client.batches[0][0] == "bundle"


def test_removing_a_port_deletes_its_flows_and_its_zones_member_flows() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    n = len(fw.installed["p1"]) + len(fw.installed["zone:3"])
    client.batches.clear()
    fw.remove_port("p1")
    clock.advance(0)
    (kind, msgs), *_ = client.batches
    assert kind == "bundle" and commands(msgs) == [ofp.OFPFC_DELETE_STRICT] * n
    assert "p1" not in fw.installed and "zone:3" not in fw.installed


def test_a_reconnect_resends_everything() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    total = sum(len(v) for v in fw.desired.values())
    client.batches.clear()
    fw._connections = 1
    fw._connected(client.proto)
    clock.advance(0)
    assert sum(len(m) for _, m in client.batches) == total


def test_stale_flows_are_deleted_by_cookie() -> None:
    fw, client, clock = make()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    client.batches.clear()
    ours = [encode.cookie(f) for flows in fw.installed.values() for f in flows.values()]
    client.stats = [Stat(c) for c in ours] + [Stat(0x12), Stat(0x12), Stat(0)]
    d = fw.remove_stale()
    result: list[int] = []
    Deferred.fromCoroutine(d).addCallback(result.append)  # type: ignore[arg-type]
    assert result == [3]
    (kind, msgs), *_ = client.batches
    assert kind == "plain" and sorted(m.cookie for m in msgs) == [0, 0x12] and all(m.command == ofp.OFPFC_DELETE for m in msgs)


def restarted(flows_on_switch: list[Any]) -> tuple[OpenFlowFirewall, Client, Clock]:
    """A new run's firewall over a switch that holds ``flows_on_switch`` (as their cookies) and OVS's default flow."""
    clock, client = Clock(), Client()
    client.stats = [Stat(encode.cookie(f)) for f in flows_on_switch] + [Stat(0)]
    fw = OpenFlowFirewall(clock, "/nonexistent", client=client)  # type: ignore[arg-type]
    d = fw.start()
    clock.advance(0)
    assert d.called
    return fw, client, clock


def sent(client: Client) -> list[Any]:
    return [m for _, msgs in client.batches for m in msgs]


def test_a_restart_keeps_the_earlier_runs_identical_flows_and_sends_only_what_changed() -> None:
    before, _, clock = make()
    before.apply_port(port(), 5, 3, groups(["10.0.0.5", "10.0.0.6"]))
    before.apply_port(port(id="p2", mac_address="fa:16:3e:00:00:02", fixed_ips=[{"ip_address": "10.0.0.6"}]), 6, 3,
                      groups(["10.0.0.5", "10.0.0.6"]))  # fmt: skip
    clock.advance(0)
    earlier = [f for flows in before.installed.values() for f in flows.values()]
    fw, client, clock = restarted(earlier)
    assert sent(client) == [] and fw.found_at_start == len(earlier)  # (static and drops: already there)
    members = groups(["10.0.0.5", "10.0.0.6", "10.0.0.7"])  # p3 came while the agent was down
    fw.apply_port(port(), 5, 3, members)
    fw.apply_port(port(id="p2", mac_address="fa:16:3e:00:00:02", fixed_ips=[{"ip_address": "10.0.0.6"}]), 7, 3, members)  # new ofport
    fw.apply_port(port(id="p3", mac_address="fa:16:3e:00:00:03", fixed_ips=[{"ip_address": "10.0.0.7"}]), 8, 3, members)
    clock.advance(0)
    on_switch = {encode.cookie(f) for f in earlier}
    wanted = [f for flows in fw.desired.values() for f in flows.values()]
    new = [f for f in wanted if encode.cookie(f) not in on_switch]
    assert new and len(new) < len(wanted) // 2
    assert sorted(m.cookie for m in sent(client) if m.command == ofp.OFPFC_ADD) == sorted(encode.cookie(f) for f in new)
    assert all(encode.cookie(f) not in on_switch for f in fw.desired["p3"].values())  # (p3's all sent)
    assert fw.installed == fw.desired and fw.stats["adopted"] == len(wanted) - len(new)
    client.batches.clear()
    replaced = {f.key for f in new}  # (an ADD replaces the entry of the same key)
    switch = [f for f in earlier if f.key not in replaced] + new
    client.stats = [Stat(encode.cookie(f)) for f in switch]
    result: list[int] = []
    Deferred.fromCoroutine(fw.remove_stale()).addCallback(result.append)  # type: ignore[arg-type]
    clock.advance(0)
    stale = {encode.cookie(f) for f in switch} - {encode.cookie(f) for flows in fw.desired.values() for f in flows.values()}
    assert stale and result == [len(stale)] and sorted(m.cookie for m in sent(client)) == sorted(stale)  # p2's for ofport 6
    assert "drops" in fw.installed and fw.stats["adopted"] > len(wanted) - len(new)  # (the earlier run's, kept)


def test_a_flow_whose_entry_this_run_deleted_is_sent_again_not_adopted() -> None:
    """Before remove_stale a found cookie may no longer be on the switch: the entry was deleted (its port went) or
    replaced since the start. Wanted again, it must be sent."""
    before, _, clock = make()
    before.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    fw, client, clock = restarted([f for flows in before.installed.values() for f in flows.values()])
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    assert sent(client) == []
    fw.remove_port("p1")
    clock.advance(0)
    assert {m.command for m in sent(client)} == {ofp.OFPFC_DELETE_STRICT}
    client.batches.clear()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    again = [f for owner in ("p1", "zone:3") for f in fw.desired[owner].values()]  # (its zone's went with it, conj stayed)
    assert sorted(m.cookie for m in sent(client)) == sorted(encode.cookie(f) for f in again)


def test_a_reconnect_adopts_nothing() -> None:
    before, _, clock = make()
    before.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    fw, client, clock = restarted([f for flows in before.installed.values() for f in flows.values()])
    fw._connected(client.proto)  # (the first connection)
    fw._connected(client.proto)  # ovs-vswitchd restarted: its flows are gone
    clock.advance(0)
    client.batches.clear()
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    assert len(sent(client)) == sum(len(fw.desired[o]) for o in ("p1", "zone:3", "conj"))


def test_remove_stale_keeps_the_flows_of_the_batch_in_flight() -> None:
    """A port's first flows are still going when remove_stale reads the switch: their cookies are not stale, even
    when the port was removed meanwhile (its deletes follow in the next batch)."""
    fw, client, clock = make()
    pending: Deferred[None] = Deferred()
    real = client.stream

    async def slow(encoders: list[Any], atomic: bool) -> None:
        await real(encoders, atomic)
        await pending

    client.stream = slow  # type: ignore[method-assign]
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)
    flying = [m.cookie for m in sent(client)]
    client.batches.clear()
    fw.remove_port("p1")  # (waits for the flying batch)
    client.stats = [Stat(c) for c in flying] + [Stat(0x12)]
    result: list[int] = []
    Deferred.fromCoroutine(fw.remove_stale()).addCallback(result.append)  # type: ignore[arg-type]
    clock.advance(0)
    assert result == [1] and [m.cookie for m in sent(client)] == [0x12]


def test_a_member_delta_recomputes_only_its_addresses_and_equals_a_full_recompute() -> None:
    """A member event's addresses (a shared CIDR pair, a /32 spelled two ways): the zone's member flows after the
    delta are those a full recompute gives, and only the flows of those addresses are sent."""
    fw, client, clock = make()
    members = ["10.0.0.5", "10.0.0.6", "10.9.0.0/16"]
    state = groups(members)
    fw.apply_port(port(), 5, 3, state)
    clock.advance(0)
    client.batches.clear()
    state["g"]["members"] = ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.9.0.0/16"]
    d = fw.members_delta("g", ["10.0.0.7"], state)
    clock.advance(0)
    assert d.result == 1 and [(k, commands(m)) for k, m in client.batches] == [("plain", [ofp.OFPFC_ADD])]
    client.batches.clear()
    state["g"]["members"] = ["10.0.0.5", "10.0.0.7", "10.9.0.0/16"]  # 10.0.0.6 gone
    fw.members_delta("g", ["10.0.0.6"], state)
    clock.advance(0)
    assert [(k, commands(m)) for k, m in client.batches] == [("bundle", [ofp.OFPFC_DELETE_STRICT])]
    client.batches.clear()
    # "10.0.0.7/32" leaves while "10.0.0.7" stays: the same match, still wanted: nothing sent
    state["g"]["members"] = ["10.0.0.5", "10.0.0.7", "10.9.0.0/16"]
    fw.members_delta("g", ["10.0.0.7/32"], state)
    clock.advance(0)
    assert client.batches == []
    incremental = dict(fw.desired["zone:3"])
    fw.members_changed("g", state)
    clock.advance(0)
    assert fw.desired["zone:3"] == incremental and client.batches == []


class SlowClient(Client):
    """Holds every batch in flight until ``gate`` fires (None: completes at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: Deferred[None] | None = None

    async def stream(self, encoders: list[Any], atomic: bool) -> None:
        self.batches.append(("bundle" if atomic else "plain", [m() for m in encoders]))
        if self.gate is not None:
            await self.gate


def slow() -> tuple[OpenFlowFirewall, SlowClient, Clock]:
    fw, _, clock = make()
    client = SlowClient()
    fw.client = client  # type: ignore[assignment]
    return fw, client, clock


def test_a_port_removed_while_its_first_flows_are_in_flight_has_them_deleted_after() -> None:
    """(e.g. a VIF plug that fails while its filter batch is in flight): the removal goes in the next batch."""
    fw, client, clock = slow()
    client.gate = Deferred()
    added = fw.apply_port(port(), 5, 3, groups(["10.0.0.5"]))
    clock.advance(0)  # the adds in flight; 'installed' has no p1 yet, as 'desired' is about to have
    removed = fw.remove_port("p1")
    assert not removed.called  # not answered before the flying adds are in and deleted again
    gate, client.gate = client.gate, None
    gate.callback(None)
    clock.advance(0)
    assert added.called and removed.called and removed.result > 0
    assert "p1" not in fw.installed and "zone:3" not in fw.installed and fw.installed == fw.desired
    kind, msgs = client.batches[1]
    p1 = len(client.batches[0][1]) - 2  # the first batch: p1's flows + its zone's one member flow + one conjunction flow
    assert kind == "bundle" and commands(msgs).count(ofp.OFPFC_DELETE_STRICT) >= p1
    assert any(m.table_id == 0 for m in msgs)  # p1's table-0 flow goes too
    assert fw._dirty == {} and not fw._flying and not fw._scheduled


def test_infra_changed_and_reverted_while_in_flight_ends_on_the_last_tag() -> None:
    fw, client, clock = slow()
    fw.set_infra([(9, 100)])
    clock.advance(0)
    first = dict(fw.installed["infra"])
    client.gate = Deferred()
    fw.set_infra([(9, 200)])
    clock.advance(0)  # tag 200 in flight (a bundle: the entry is replaced)
    back = fw.set_infra([(9, 100)])  # back to 100, which 'installed' (not yet updated) shows
    assert not back.called
    gate, client.gate = client.gate, None
    gate.callback(None)
    clock.advance(0)
    assert back.called and back.result > 0 and len(client.batches) == 3
    assert fw.installed["infra"] == fw.desired["infra"] == first
    assert fw._dirty == {} and not fw._scheduled


def test_a_change_to_what_the_flying_batch_installs_is_answered_after_it_without_a_bundle() -> None:
    fw, client, clock = slow()
    client.gate = Deferred()
    fw.set_infra([(9, 100)])
    clock.advance(0)
    waiting = fw.flushed("infra")  # in flight: not in the switch yet
    again = fw.set_infra([(9, 100)])  # what is in flight: nothing more to send, but not in the switch yet either
    assert not again.called and not waiting.called
    gate, client.gate = client.gate, None
    gate.callback(None)
    clock.advance(0)
    assert again.result == 0 and waiting.called and len(client.batches) == 1
    assert fw.set_infra([(9, 100)]).result == 0  # nothing pending: answered at once


def test_the_shared_server_drops_go_in_at_start_on_a_switch_without_an_earlier_runs_flows() -> None:
    fw, client, clock = make()  # (no flows in the switch)
    assert set(fw.installed["drops"]) == {f.key for f in compiler.server_drops()}
    assert not set(fw.installed["static"]) & set(fw.installed["drops"])
    d = fw.remove_stale()
    Deferred.fromCoroutine(d)  # type: ignore[arg-type]
    assert client.batches == []  # nothing more to install, nothing stale


def test_over_an_earlier_runs_flows_the_server_drops_wait_for_every_port_then_go_before_the_stale_delete() -> None:
    """An upgrade: the old release's router port has no priority-91 RA exception until its resync; drops installed at
    start would cut its RAs until then. They go in remove_stale (called once every port's flows are in), before the
    earlier run's flows are deleted (a restart of this release keeps the earlier run's drops until then)."""
    clock, client = Clock(), Client()
    client.stats = [Stat(0x12), Stat(0)]
    fw = OpenFlowFirewall(clock, "/nonexistent", client=client)  # type: ignore[arg-type]
    started = fw.start()
    clock.advance(0)
    assert started.called and "drops" not in fw.desired and "drops" not in fw.installed
    drops = {f.key for f in compiler.server_drops()}
    bodies = {encode.add(f).body for f in compiler.server_drops()}
    assert not bodies & {m.body for _, msgs in client.batches for m in msgs}
    client.batches.clear()
    router = port(device_owner="network:router_interface", fixed_ips=[{"ip_address": "fd00::1"}])
    fw.apply_port(router, 5, 3, groups([]))
    clock.advance(0)
    client.batches.clear()
    result: list[int] = []
    Deferred.fromCoroutine(fw.remove_stale()).addCallback(result.append)  # type: ignore[arg-type]
    clock.advance(0)
    assert result == [2]
    (kind, adds), (_, deletes) = client.batches
    assert kind == "plain" and [m.body for m in adds if m.body in bodies] == [m.body for m in adds] and len(adds) == 3
    assert sorted(m.cookie for m in deletes) == [0, 0x12] and set(fw.installed["drops"]) == drops


def test_flows_adopted_in_a_failed_batch_are_still_deleted_when_no_longer_wanted() -> None:
    """A batch that adopted flows and failed left them on the switch (a bundle applies nothing, a plain batch only
    adds): they are installed all the same, so that once remove_stale kept them (still wanted then) and they are no
    longer wanted, they are deleted, not left on the switch for good (an allow rule that was removed would stay)."""
    rules = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
              "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None}]  # fmt: skip
    before, _, clock = make()
    before.apply_port(port(), 5, 3, groups(["10.0.0.5"], rules))
    clock.advance(0)
    earlier = [f for flows in before.installed.values() for f in flows.values()]
    ssh = [f for f in before.installed["p1"].values() if f.match and dict(f.match).get("tcp_dst") == 22]
    assert ssh
    fw, client, clock = restarted(earlier)
    client.fail_next = True
    failed: list[Any] = []
    http = dict(rules[0], port_range_min=80, port_range_max=80)  # a rule came while the agent was down: sent
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"], [*rules, http])).addErrback(failed.append)
    clock.advance(0)
    assert failed and sent(client)  # (the batch went, adopting the rest, and failed)
    client.batches.clear()
    client.stats = [Stat(encode.cookie(f)) for f in earlier]
    Deferred.fromCoroutine(fw.remove_stale())  # type: ignore[arg-type]
    clock.advance(0)
    assert sent(client) == []  # (every flow on the switch is still wanted)
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"], [http]))  # the ssh rule removed
    clock.advance(0)
    deleted = {(m.table_id, m.priority) for m in sent(client) if m.command == ofp.OFPFC_DELETE_STRICT}
    assert {(f.table, f.priority) for f in ssh} <= deleted, "the removed rule's adopted flow stays on the switch"


def test_an_entry_one_owner_deletes_is_sent_for_the_owner_that_takes_it_in_the_same_batch() -> None:
    """Within one batch the deletes go before the adds: an entry that an owner gives up while another takes it (the
    same flow: a VIF's ofport taken by the next one) is deleted, so the taker must send it, not adopt it, whichever
    owner comes first in the batch."""
    f = Flow(0, 100, match(in_port=9), (("normal",),))
    fw, client, clock = restarted([f])
    fw.set_owner("b", [f])
    clock.advance(0)
    assert fw.installed["b"] == {f.key: f}
    client.batches.clear()
    fw.set_owner("a", [f])
    fw.set_owner("b", [])
    clock.advance(0)
    assert [m.command for m in sent(client)] == [ofp.OFPFC_DELETE_STRICT, ofp.OFPFC_ADD]
    assert fw.installed == {**fw.installed, "a": {f.key: f}} and "b" not in fw.installed


def test_a_failed_plain_batch_fails_its_callers_with_the_switchs_error() -> None:
    fw, client, clock = make()
    client.fail_next = True
    failed: list[Any] = []
    fw.apply_port(port(), 5, 3, groups(["10.0.0.5"])).addErrback(failed.append)
    clock.advance(0)
    assert client.batches[0][0] == "plain" and len(failed) == 1 and failed[0].check(OpenFlowError)


def test_no_batch_goes_while_remove_stales_deletes_are_out() -> None:
    """remove_stale's deletes (by cookie, over the main connection) are confirmed before the next batch goes: a batch
    spread over the other lanes could otherwise be applied first, and a flow wanted again meanwhile (a port whose sync
    failed before its flows were wanted, retried) is the stale flow's content, its cookie: the delete would take it."""
    f = Flow(0, 100, match(in_port=9), (("normal",),))
    fw, client, clock = restarted([f])
    client.batches.clear()
    deleting: Deferred[None] = Deferred()
    client.send = lambda msgs: (client.batches.append(("plain", msgs)), deleting)[1]  # type: ignore[method-assign]
    client.stats = [Stat(encode.cookie(f))]
    result: list[int] = []
    Deferred.fromCoroutine(fw.remove_stale()).addCallback(result.append)  # type: ignore[arg-type]
    clock.advance(0)
    assert [m.cookie for m in client.batches[-1][1]] == [encode.cookie(f)] and not result  # (after the drops' batch)
    n = len(client.batches)
    fw.set_owner("p9", [f])  # wanted again while the delete is out
    clock.advance(0)
    assert len(client.batches) == n
    deleting.callback(None)
    clock.advance(0)
    assert result == [1] and [(m.command, m.cookie) for m in client.batches[n][1]] == [(ofp.OFPFC_ADD, encode.cookie(f))]


def test_streaming_is_a_large_batch_in_flight_or_a_small_one_with_a_large_one_behind_it() -> None:
    """New OVS ports wait (``streaming``) while ovs-vswitchd works through many flow mods; with nothing in flight it
    is idle, and they go at once even with many flows about to be sent."""
    fw, client, clock = make()
    held: list[Deferred[None]] = []
    real = client.stream

    async def slow(encoders: list[Any], atomic: bool) -> None:
        await real(encoders, atomic)
        d: Deferred[None] = Deferred()
        held.append(d)
        await d

    client.stream = slow  # type: ignore[method-assign]

    def ports(first: int, count: int) -> None:
        for n in range(first, first + count):
            mac, ip = f"fa:16:3e:00:{n >> 8:02x}:{n & 255:02x}", f"10.0.{n >> 8}.{n & 255}"
            fw.apply_port(port(id=f"q{n}", mac_address=mac, fixed_ips=[{"ip_address": ip}]), 10 + n, 3, groups([ip]))

    ports(0, 150)
    assert not fw.streaming()  # (prepared, not sent: the switch is idle)
    clock.advance(0)
    assert fw._in_flight_mods >= 1000 and fw.streaming()
    held.pop().callback(None)
    clock.advance(0)
    assert not fw.streaming()
    ports(150, 2)  # a small batch in flight ...
    clock.advance(0)
    assert fw._in_flight_mods < 1000 and not fw.streaming()
    ports(152, 150)  # ... and a large one waiting behind it
    assert fw.streaming()
    held.pop().callback(None)
    clock.advance(0)
    assert fw._in_flight_mods >= 1000 and fw.streaming()
