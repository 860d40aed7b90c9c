"""The agent's firewall decisions on a Clock with in-memory doubles: a new VIF is down (or on the dead VLAN) until its
flows are confirmed for the ofport it got, and only then up and ACTIVE (``FilterSafety`` checks every state in between);
group events re-filter exactly the ports that use the group; stale flows go after the first reconcile."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock

from restproxy_agent.agent import RestProxyAgent
from restproxy_agent.config import AgentConfig
from restproxy_agent.firewall.flows import DEAD_VLAN
from tests.fast.agent_doubles import FakeBridge, FakeChannel, FakeConn, FakeFirewall, FakeLinks, FilterSafety, Gates, Log

MAC = "fa:16:3e:00:00:01"
WINDOW = 0.02


class Host:
    def __init__(self) -> None:
        self.clock, self.log, self.gates = Clock(), Log(), Gates()
        self.bridge, self.links, self.channel = FakeBridge(self.log, self.gates), FakeLinks(self.log, self.gates), FakeChannel(self.log)
        self.firewall = FakeFirewall(self.log, self.gates)
        cfg = AgentConfig(host="h1", vif_kind="tap", report_interval=30.0)
        self.agent = RestProxyAgent(
            cfg, self.clock, conn=FakeConn(), client=self.channel, bridge=self.bridge, links=self.links,  # type: ignore[arg-type]
            firewall=self.firewall,
        )  # fmt: skip

    def start(self, ports: list[dict[str, Any]], groups: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.agent.startService()
        self.agent.watch.on_groups([dict(g) for g in groups])
        self.channel.answer_list(1, ports)
        self.clock.advance(WINDOW)

    def watch(self, *port_ids: str) -> FilterSafety:
        return FilterSafety(self.log, self.bridge, self.links, self.firewall, *port_ids)

    def event(self, kind: str, object_id: str, payload: dict[str, Any], seq: int = 2) -> None:
        self.agent.watch.on_event({"type": "event", "kind": kind, "object_id": object_id, "payload": payload, "seq": seq})
        self.clock.advance(WINDOW)


def port(port_id: str, groups: tuple[str, ...] = ("g1",), **fields: Any) -> dict[str, Any]:
    return {
        "id": port_id, "mac_address": MAC, "network_id": "net1", "device_id": "vm-" + port_id, "status": "DOWN",
        "security_groups": list(groups), "port_security_enabled": True, "fixed_ips": [{"ip_address": "10.0.0.5"}], **fields,
    }  # fmt: skip


def group(group_id: str, members: list[str], remote: str | None = None) -> dict[str, Any]:
    rules = [{"id": "r-" + group_id, "direction": "ingress", "ethertype": "IPv4", "protocol": None,
              "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": remote}]  # fmt: skip
    return {"id": group_id, "tenant_id": "t", "rules": rules, "members": members}


@pytest.fixture
def host() -> Iterator[Host]:
    previous = signal.getsignal(signal.SIGUSR1)
    h = Host()
    try:
        yield h
    finally:
        if h.agent.running:
            h.agent.stopService()
        signal.signal(signal.SIGUSR1, previous)


def test_a_new_port_is_plugged_down_and_goes_up_and_active_once_filtered_for_the_ofport_it_asked_for(host: Host) -> None:
    safety = host.watch("p1")
    host.start([port("p1")], [group("g1", ["10.0.0.5"])])
    actions = host.log.actions("p1")
    # its flows go in while its device is made down and its OVS port added with its real tag; then up, then ACTIVE
    assert sorted(actions[:3]) == ["add_port", "create_tap", "filter"] and actions[3:] == ["link_up", "report_up"]
    assert safety.violations == []
    assert host.bridge.tags == [("p1", 1)]
    _, ofport, zone, groups = host.firewall.applied["p1"]
    assert ofport == 32768 and zone == 1 and set(groups) == {"g1"}
    assert host.bridge.requests == {"tap" + "p1": 32768}
    assert host.bridge.ports["tapp1"].ofport == 32768 and host.firewall.confirmed["p1"] == 32768
    assert host.links.up["tapp1"] is True and host.agent.reported_up == {"p1"}


def test_the_port_stays_down_and_not_active_while_its_flows_are_not_confirmed(host: Host) -> None:
    safety = host.watch("p1")
    host.gates.hold("filter")
    host.start([port("p1")], [group("g1", [])])
    host.clock.advance(5.0)
    # on the bridge with its real tag and the ofport it asked for, but its host end down: it passes nothing
    assert sorted(host.log.actions("p1")) == ["add_port", "create_tap", "filter"]
    assert host.bridge.ports["tapp1"].ofport == 32768 and host.bridge.tags == [("p1", 1)]
    assert host.links.up["tapp1"] is False and host.agent.reported_up == set()
    host.gates.release("filter")
    host.clock.advance(WINDOW)
    assert host.log.actions("p1")[-2:] == ["link_up", "report_up"] and host.agent.reported_up == {"p1"}
    assert safety.violations == []


def test_in_a_burst_the_ovs_port_waits_for_its_flows_and_the_port_is_down_until_they_are_confirmed(host: Host) -> None:
    safety = host.watch("p1")
    host.firewall.burst = True  # a large batch of flows in flight: a port added now would slow it down
    host.gates.hold("filter")
    host.start([port("p1")], [group("g1", [])])
    assert sorted(host.log.actions("p1")) == ["create_tap", "filter"] and host.links.up["tapp1"] is False
    host.gates.release("filter")
    host.clock.advance(WINDOW)
    assert host.log.actions("p1")[2:] == ["add_port", "link_up", "report_up"]
    assert host.bridge.ports["tapp1"].ofport == 32768 and safety.violations == []


def test_refused_flows_keep_the_port_down_and_not_active_and_it_is_retried(host: Host) -> None:
    safety = host.watch("p1")
    host.gates.fail("filter", 1)
    host.start([port("p1")], [group("g1", [])])
    assert sorted(host.log.actions("p1")) == ["add_port", "create_tap", "filter"] and host.agent.failures
    assert host.links.up["tapp1"] is False and host.agent.reported_up == set()
    host.clock.advance(1.0)
    host.clock.advance(WINDOW)
    # the retry filters the VIF it has (not a new one) for the ofport it got, then opens it and reports it ACTIVE
    assert host.log.actions("p1")[3:] == ["filter", "link_up", "report_up"] and not host.agent.failures
    assert host.firewall.applied["p1"][1] == 32768 == host.bridge.ports["tapp1"].ofport  # the same ofport on the retry
    assert safety.violations == []


def test_ports_ask_for_distinct_free_ofports(host: Host) -> None:
    host.bridge.requests["tapother"] = 32769  # taken by an interface that asked for it
    host.start([port("a"), port("b")], [group("g1", [])])
    assert sorted(host.firewall.applied[p][1] for p in ("a", "b")) == [32768, 32770]


def test_a_port_that_gets_another_ofport_goes_dead_until_filtered_for_it(host: Host) -> None:
    safety = host.watch("p1")
    host.bridge.refuse_requests = True
    host.start([port("p1")], [group("g1", [])])
    got = host.bridge.ports["tapp1"].ofport
    assert got != 32768
    # still down: dead VLAN, filtered for the ofport it got, its tag back, and only then up and ACTIVE
    assert host.log.actions("p1")[-6:] == ["add_port", "set_tag", "filter", "set_tag", "link_up", "report_up"]
    assert host.bridge.tags == [("p1", 1), ("p1", DEAD_VLAN), ("p1", 1)]
    assert host.firewall.applied["p1"][1] == got == host.firewall.confirmed["p1"]
    assert safety.violations == []


def test_a_member_change_updates_member_flows_only_and_a_rule_change_refilters_the_groups_ports(host: Host) -> None:
    ports = [port("a", ("g1",)), port("b", ("g2",)), port("c", ("g3",))]
    groups = [group("g1", ["10.0.0.1"]), group("g2", ["10.0.0.2"], remote="g1"), group("g3", ["10.0.0.3"])]
    host.start(ports, groups)
    del host.log[:]
    host.event("security_group_updated", "g1", group("g1", ["10.0.0.1", "10.0.0.9"]))
    assert host.log == [("members", "g1")]  # one change of the zones' member flows; no port recompiled
    assert host.firewall.groups["g1"]["members"] == ["10.0.0.1", "10.0.0.9"]
    del host.log[:]
    new_rules = group("g2", ["10.0.0.2"], remote="g3")
    host.event("security_group_updated", "g2", new_rules, seq=3)
    assert host.log == [("filter", "b")]  # the ports in g2, with g2's new rules
    assert host.firewall.applied["b"][3]["g2"]["rules"] == new_rules["rules"]
    del host.log[:]
    host.event("security_group_deleted", "g3", {"id": "g3"}, seq=4)
    assert sorted(host.log) == [("filter", "c"), ("members", "g3")] and "g3" not in host.firewall.applied["c"][3]


def test_an_unbound_port_loses_its_flows_before_its_vif(host: Host) -> None:
    host.start([port("p1")], [group("g1", [])])
    del host.log[:]
    host.event("port_detached", "p1", {"id": "p1"})
    assert host.log[:2] == [("unfilter", "p1"), ("delete_port", "p1")]


def test_stale_flows_are_removed_once_after_the_first_reconcile(host: Host) -> None:
    host.bridge.put("p1", MAC, "vm-p1")
    host.start([port("p1", status="ACTIVE")], [group("g1", [])])
    assert host.log.actions("p1") == ["filter"]  # in step: only its flows (this run's cookie), no re-plug, no link change
    assert host.firewall.stale_removed == 1
    host.agent.reconcile("again")
    host.clock.advance(WINDOW)
    assert host.firewall.stale_removed == 1


def test_a_reconcile_whose_syncs_a_stop_ended_removes_no_flows(host: Host) -> None:
    """The syncs of a reconcile end (failed or cut short) because the agent stopped: not in step, so the earlier run's
    flows stay (the next start's reconcile deletes them once every port's flows are in)."""
    host.gates.hold("create_tap")
    host.start([port("p1")], [group("g1", [])])
    assert host.log.actions("p1") == ["filter", "create_tap"]
    host.agent.stopService()
    host.gates.release("create_tap")
    host.clock.advance(10)
    assert host.firewall.stale_removed == 0


def test_report_state_says_which_firewall(host: Host) -> None:
    calls: list[dict[str, Any]] = []
    original = host.channel.call

    async def call(method: str, **kwargs: Any) -> Any:
        if method == "report_state":
            calls.append(kwargs["agent_state"])
        return await original(method, **kwargs)

    host.channel.call = call  # type: ignore[method-assign]
    host.start([], [])
    assert calls and calls[0]["configurations"]["firewall"] == "openflow"


def test_with_an_openflow_controller_nothing_is_filtered_and_firewall_none_is_reported() -> None:
    cfg = AgentConfig(host="h1", vif_kind="tap", of_controller="tcp:127.0.0.1:6633")
    agent = RestProxyAgent(cfg, Clock(), conn=FakeConn(), client=FakeChannel(Log()), bridge=FakeBridge(Log(), Gates()),  # type: ignore[arg-type]
                           links=FakeLinks(Log(), Gates()))  # type: ignore[arg-type]  # fmt: skip
    assert agent.firewall.enabled is False and agent.firewall.name == "none"
    noop = AgentConfig(host="h1", firewall_driver="noop")
    assert RestProxyAgent(noop, Clock(), conn=FakeConn(), client=FakeChannel(Log())).firewall.name == "none"  # type: ignore[arg-type]


def test_non_vif_ports_get_their_flows_but_not_the_bridge_local_port(host: Host) -> None:
    host.bridge.others = [(3, 5), (4, None), (65534, None)]
    host.start([], [])
    assert host.firewall.infra == [(3, 5), (4, None)]  # 65534 is OVSDB's LOCAL: a static flow covers it


def test_a_member_event_changes_the_groups_members_once_per_address(host: Host) -> None:
    """Two ports share an address (a pair): it leaves the members only when neither has it; the same event twice
    changes nothing; an event for a group the host does not have is ignored."""
    g1 = dict(group("g1", ["10.0.0.1", "10.0.0.9"]), ports={"x": ["10.0.0.1", "10.0.0.9"], "y": ["10.0.0.9"]})
    host.start([port("a", ("g2",))], [g1, group("g2", [], remote="g1")])
    del host.log[:]
    host.event("security_group_member", "g1", {"id": "g1", "port_id": "x", "addresses": ["10.0.0.1"]}, seq=3)
    assert host.log == [] and host.agent.groups["g1"]["members"] == ["10.0.0.1", "10.0.0.9"]  # y still has .9
    host.event("security_group_member", "g1", {"id": "g1", "port_id": "y", "addresses": []}, seq=4)
    assert host.log == [("member_delta", "g1", ("10.0.0.9",))] and host.agent.groups["g1"]["members"] == ["10.0.0.1"]
    host.event("security_group_member", "g1", {"id": "g1", "port_id": "y", "addresses": []}, seq=5)
    host.event("security_group_member", "g1", {"id": "g1", "port_id": "z", "addresses": ["10.0.0.1", "10.0.0.2"]}, seq=6)
    assert host.log[1:] == [("member_delta", "g1", ("10.0.0.2",))]
    assert host.agent.groups["g1"]["ports"] == {"x": ["10.0.0.1"], "z": ["10.0.0.1", "10.0.0.2"]}
    host.event("security_group_member", "g9", {"id": "g9", "port_id": "z", "addresses": ["10.0.0.3"]}, seq=7)
    assert len(host.log) == 2 and "g9" not in host.agent.groups
    # the whole group again (a rule change): its ports start the counts anew
    host.event("security_group_updated", "g1", dict(g1, members=["10.0.0.4"], ports={"w": ["10.0.0.4"]}), seq=8)
    host.event("security_group_member", "g1", {"id": "g1", "port_id": "w", "addresses": []}, seq=9)
    assert host.log[-1] == ("member_delta", "g1", ("10.0.0.4",)) and host.agent.groups["g1"]["members"] == []


def test_in_a_burst_ports_held_together_fail_alone_and_stay_down_until_filtered(host: Host) -> None:
    """Ports held for one batch of flows go on together: one whose OVS port add fails is retried alone (the others go
    up and ACTIVE); flows refused for the whole batch leave every port on the bridge down until a retry filters it."""
    ids = ("p1", "p2", "p3")
    safety = host.watch(*ids)
    host.firewall.burst = True
    host.gates.hold("filter")
    host.start([port(p, mac_address=f"fa:16:3e:00:00:0{i}") for i, p in enumerate(ids, 1)], [group("g1", [])])
    assert all("add_port" not in host.log.actions(p) for p in ids)
    host.gates.fail("add_port", 1)
    host.gates.release("filter")
    host.clock.advance(WINDOW)
    assert sorted(host.log.actions(p)[-1] for p in ids) == ["add_port", "report_up", "report_up"]
    for _ in range(5):
        host.clock.advance(1.0)
    assert all(host.log.actions(p)[-1] == "report_up" for p in ids) and host.agent._held == []
    assert safety.violations == []

    more = ("p4", "p5")
    safety = host.watch(*more)
    host.gates.hold("filter")
    for i, p in enumerate(more, 4):
        host.event("port_attached", p, port(p, mac_address=f"fa:16:3e:00:00:0{i}"), seq=i)
    for d in host.gates.held.pop("filter"):
        d.errback(RuntimeError("bundle refused"))
    host.clock.advance(WINDOW)
    assert all(host.log.actions(p)[-1] == "add_port" for p in more) and not any(host.links.up[f"tap{p}"] for p in more)
    host.firewall.burst = False
    for _ in range(5):
        host.clock.advance(1.0)
    assert all(host.log.actions(p)[-2:] == ["link_up", "report_up"] for p in more)
    assert safety.violations == []


def _ofport_changed(host: Host, port_id: str, ofport: list[int]) -> None:
    """OVSDB's Interface update for ``port_id``'s VIF: its ofport column changed to ``ofport``."""
    row = SimpleNamespace(external_ids={"iface-id": port_id, "attached-mac": MAC}, ofport=ofport)
    host.agent._ovsdb_event("update", row, SimpleNamespace(_data={"ofport": []}))
    host.clock.advance(WINDOW)


def test_a_vif_getting_the_ofport_it_is_filtered_for_is_not_synced_again_but_another_ofport_refilters_it(host: Host) -> None:
    host.start([port("p1")], [group("g1", [])])
    assert host.log.actions("p1").count("filter") == 1 and host.firewall.applied["p1"][1] == 32768
    _ofport_changed(host, "p1", [32768])  # the ofport it asked for, as OVS reports it: nothing to redo
    assert host.log.actions("p1").count("filter") == 1
    # a restarted ovs-vswitchd numbered it anew: its flows are for another port
    host.bridge.ports["tapp1"] = attrs.evolve(host.bridge.ports["tapp1"], ofport=7)
    _ofport_changed(host, "p1", [7])
    assert host.log.actions("p1").count("filter") == 2 and host.firewall.applied["p1"][1] == 7
    _ofport_changed(host, "p1", [])  # (gone: synced, as before)
    assert host.log.actions("p1").count("filter") == 3


def test_a_vif_deleted_outside_the_agent_and_added_again_with_the_same_ofport_is_synced(host: Host) -> None:
    """Deleted behind the agent's back (``ovs-vsctl del-port``) and added again by hand: OVS gives a name back the
    ofport it had (and the agent's ``ofport_request``), so the new VIF reports the very ofport the old one's flows were
    for; it is still another VIF (its external_ids as its creator set them) and its sync must run."""
    host.start([port("p1")], [group("g1", [])])
    assert host.log.actions("p1").count("filter") == 1
    old = host.bridge.ports.pop("tapp1")
    host.agent._ovsdb_event("delete", SimpleNamespace(external_ids=dict(old.external_ids), ofport=[old.ofport]), None)
    ids = {"iface-id": "p1", "attached-mac": MAC}  # (only what the hand-made add set: no owner, no vm-uuid)
    host.bridge.ports["tapp1"] = attrs.evolve(old, external_ids=ids)
    host.agent._ovsdb_event("create", SimpleNamespace(external_ids=ids, ofport=[]), None)
    _ofport_changed(host, "p1", [old.ofport])
    assert host.log.actions("p1").count("filter") == 2
    assert host.bridge.ports["tapp1"].external_ids == old.external_ids  # (adjusted in place)
