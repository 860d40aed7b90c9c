"""Security groups on the agent channel (SG_CONTRACT.md): the list's groups, the events and who gets them, port_filter.

A real server (SQLite) with agent tokens for h1 and h2; watches read by threads.
"""

from __future__ import annotations

import queue
import uuid
from typing import Any

from restproxy_agent.firewall.members import GroupMembers
from restproxy_testing.support import ServerProcess
from tests.test_agent_channel import Watch, _agent, channel_server


def _ok(server: ServerProcess, method: str, path: str, body: Any = None, tenant: str | None = None) -> Any:
    status, reply = server.request(method, path, body, headers={"X-Tenant-Id": tenant} if tenant else None)
    assert status < 300, (status, reply)
    return reply


def _setup(server: ServerProcess, tenant: str) -> str:
    net = _ok(server, "POST", "/v2.0/networks", {"network": {"name": "n"}}, tenant)["network"]
    _ok(server, "POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"}}, tenant)
    return net["id"]


def _port(server: ServerProcess, net_id: str, tenant: str, host: str, **extra: Any) -> dict[str, Any]:
    body = {"port": {"network_id": net_id, "tenant_id": tenant, "binding:host_id": host, "device_id": uuid.uuid4().hex, **extra}}
    return _ok(server, "POST", "/v2.0/ports", body)["port"]


def _group(server: ServerProcess, tenant: str) -> dict[str, Any]:
    return _ok(server, "POST", "/v2.0/security-groups", {"security_group": {"name": uuid.uuid4().hex[:6]}}, tenant)["security_group"]


def _rule(server: ServerProcess, tenant: str, sg_id: str, **values: Any) -> dict[str, Any]:
    body = {"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", **values}}
    return _ok(server, "POST", "/v2.0/security-group-rules", body, tenant)["security_group_rule"]


def _list(server: ServerProcess, host: str) -> dict[str, Any]:
    status, reply = _agent(server, "GET", f"/agent/v1/hosts/{host}/ports", token=f"tok-{host}")
    assert status == 200, reply
    return reply


def _events(watch: Watch, until_object: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Events up to and including the first about ``until_object``."""
    seen = []
    while True:
        _, message = watch.next(timeout=timeout)
        seen.append(message)
        if message["object_id"] == until_object:
            return seen


def test_list_carries_the_hosts_groups_with_rules_and_members() -> None:
    with channel_server() as server:
        net = _setup(server, "t")
        port = _port(server, net, "t", "h1")
        remote = _group(server, "t")
        default_id = port["security_groups"][0]
        _rule(server, "t", default_id, protocol="6", port_range_min=22, port_range_max=22, remote_group_id=remote["id"])
        listed = _list(server, "h1")
        assert [p["id"] for p in listed["ports"]] == [port["id"]]
        entry = listed["ports"][0]
        assert entry["security_groups"] == [default_id] and entry["port_security_enabled"] is True
        assert entry["allowed_address_pairs"] == []
        groups = {g["id"]: g for g in listed["security_groups"]}
        assert set(groups) == {default_id, remote["id"]}
        default = groups[default_id]
        assert default["tenant_id"] == "t" and default["members"] == [port["fixed_ips"][0]["ip_address"]]
        assert set(default["rules"][0]) == {
            "id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id",
        }  # fmt: skip
        ssh = [r for r in default["rules"] if r["port_range_min"] == 22]
        assert ssh and ssh[0]["protocol"] == "tcp" and ssh[0]["remote_group_id"] == remote["id"]  # 6 is named tcp
        assert groups[remote["id"]]["members"] == []
        assert _list(server, "h2")["security_groups"] == []


def test_events_reach_the_hosts_concerned_only() -> None:
    with channel_server() as server:
        net = _setup(server, "t")
        a, b = _group(server, "t"), _group(server, "t")
        p1 = _port(server, net, "t", "h1", security_groups=[a["id"]])
        _port(server, net, "t", "h2", security_groups=[b["id"]])
        seq = _list(server, "h1")["seq"]
        w1, w2 = Watch(server, "h1", seq, "tok-h1"), Watch(server, "h2", seq, "tok-h2")
        try:
            # a rule of A: h1 hears of A, h2 (only B) does not
            made = _rule(server, "t", a["id"], protocol="icmp")
            event = _events(w1, a["id"])[-1]
            assert event["kind"] == "security_group_updated"
            assert made["id"] in [r["id"] for r in event["payload"]["rules"]]
            assert event["payload"]["members"] == [p1["fixed_ips"][0]["ip_address"]]
            # a member of A appears on h2: h1 (which has A) gets the new member, h2 (which had not) all of A
            p3 = _port(server, net, "t", "h2", security_groups=[a["id"]])
            both = sorted([p1["fixed_ips"][0]["ip_address"], p3["fixed_ips"][0]["ip_address"]])
            member = _events(w1, a["id"])[-1]
            assert member["kind"] == "security_group_member"
            assert member["payload"] == {"id": a["id"], "port_id": p3["id"], "addresses": [p3["fixed_ips"][0]["ip_address"]]}
            on_h2 = _events(w2, a["id"])
            assert [e["object_id"] for e in on_h2].count(a["id"]) == 1  # nothing about A's rule before it
            assert on_h2[-1]["kind"] == "security_group_updated" and on_h2[-1]["payload"]["members"] == both
            _events(w2, p3["id"])  # then the port itself
            # B names A as remote: B's host (h2) hears B; A's rules did not change, h1 hears nothing of B
            _rule(server, "t", b["id"], remote_group_id=a["id"])
            assert _events(w2, b["id"])[-1]["kind"] == "security_group_updated"
            # a pair on p1 is a member change of A for both hosts
            pairs = {"port": {"allowed_address_pairs": [{"ip_address": "10.9.9.0/24"}]}}
            _ok(server, "PUT", f"/v2.0/ports/{p1['id']}", pairs)
            # (B's new rule names A: A went to its interested hosts then too, unchanged)
            first = _events(w1, p1["id"])
            assert first[-1]["kind"] == "port_updated"  # the port update itself (a watched key), after its groups
            assert {e["object_id"] for e in first[:-1]} == {a["id"]}, "h1 heard of B"
            assert first[-2]["kind"] == "security_group_member" and "10.9.9.0/24" in first[-2]["payload"]["addresses"]
            while "10.9.9.0/24" not in _events(w2, a["id"])[-1]["payload"].get("addresses", ()):
                pass  # h2 hears of A too (once for B's rule naming it, then with the pair); a timeout fails
            # delete a group that B's rule names: h2 (a port in B) hears A... A has ports: refused; use a new group C
            c = _group(server, "t")
            _rule(server, "t", b["id"], remote_group_id=c["id"])
            _events(w2, c["id"])
            _ok(server, "DELETE", f"/v2.0/security-groups/{c['id']}", tenant="t")
            gone = _events(w2, c["id"])
            assert gone[-1]["kind"] == "security_group_deleted" and gone[-1]["payload"] == {"id": c["id"]}
            after = _events(w2, b["id"])[-1]
            assert c["id"] not in [r["remote_group_id"] for r in after["payload"]["rules"]]
            # h1 heard nothing of B or C
            try:
                while True:
                    _, message = w1.lines.get(timeout=1.0)
                    assert message.get("object_id") not in (b["id"], c["id"]), message
            except queue.Empty:
                pass
        finally:
            w1.close()
            w2.close()


def test_port_filter_follows_the_hosts_agent() -> None:
    with channel_server() as server:
        net = _setup(server, "t")
        state = {"agent_type": "Open vSwitch agent", "binary": "restproxy-agent", "configurations": {"firewall": "openflow"}}
        assert _agent(server, "POST", "/agent/v1/rpc/report_state", {"agent_state": state})[0] == 200
        none = dict(state, configurations={"firewall": "none"})
        assert _agent(server, "POST", "/agent/v1/rpc/report_state", {"agent_state": none}, token="tok-h2")[0] == 200
        filtered, unfiltered = _port(server, net, "t", "h1"), _port(server, net, "t", "h2")
        assert filtered["binding:vif_details"] == {"port_filter": True, "ovs_hybrid_plug": False}
        assert unfiltered["binding:vif_details"] == {"port_filter": False, "ovs_hybrid_plug": False}
        assert _ok(server, "GET", f"/v2.0/ports/{filtered['id']}")["port"]["binding:vif_details"]["port_filter"] is True
        off = {"port": {"security_groups": [], "port_security_enabled": False}}
        assert _ok(server, "PUT", f"/v2.0/ports/{filtered['id']}", off)["port"]["binding:vif_details"]["port_filter"] is False


def _drain(watch: Watch, quiet: float = 1.5) -> list[dict[str, Any]]:
    """Every event until none came for ``quiet`` seconds (other lines, such as heartbeats, do not count)."""
    seen = []
    try:
        while True:
            seen.append(watch.next(timeout=quiet)[1])
    except queue.Empty:
        return seen


def _replay(groups: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A host's groups after its list and then its events, applied as the agent applies them."""
    state = {g["id"]: g for g in groups}
    members = GroupMembers()
    for e in events:
        if e["kind"] == "security_group_updated":
            state[e["object_id"]] = e["payload"]
            members.reset(e["object_id"])
        elif e["kind"] == "security_group_deleted":
            state.pop(e["object_id"], None)
        elif e["kind"] == "security_group_member" and e["object_id"] in state:
            # (a watch resumed later carries the member events of the groups its host wants by then, from ``since``:
            # those before the group came whole are ignored, as the agent does)
            members.apply(state[e["object_id"]], e["payload"]["port_id"], e["payload"]["addresses"])
    return {g: {"members": v["members"], "ports": v["ports"]} for g, v in state.items()}


def test_member_changes_are_per_port_events_and_the_group_goes_whole_once_per_host(db_url: str) -> None:
    """Create, a second port on a host, an address change, shared pair addresses, a group change, a delete: each is
    one member event, which reaches the hosts that have the group; a host gets the whole group only when it first wants it; the
    list then the events, applied in order, give the list of the end (on every database)."""
    with channel_server(db_url) as server:
        net = _setup(server, "t")
        a, b = _group(server, "t"), _group(server, "t")
        p1 = _port(server, net, "t", "h1", security_groups=[a["id"]])
        caught_up = Watch(server, "h1", 0, "tok-h1")
        try:
            _events(caught_up, p1["id"])  # the lists' seq (what the server has sent) is past p1's events: none comes again
        finally:
            caught_up.close()
        start = {h: _list(server, h) for h in ("h1", "h2")}
        w1 = Watch(server, "h1", start["h1"]["seq"], "tok-h1")
        w2 = Watch(server, "h2", start["h2"]["seq"], "tok-h2")
        try:
            shared = {"ip_address": "10.0.0.200"}
            p2 = _port(server, net, "t", "h2", security_groups=[a["id"]], allowed_address_pairs=[shared])
            ip2 = p2["fixed_ips"][0]["ip_address"]
            on_h1, on_h2 = _events(w1, a["id"]), _events(w2, p2["id"])
            assert on_h1[-1]["kind"] == "security_group_member", on_h1
            assert on_h1[-1]["payload"] == {"id": a["id"], "port_id": p2["id"], "addresses": sorted([ip2, "10.0.0.200"])}
            [whole] = [e for e in on_h2 if e["object_id"] == a["id"]]
            assert whole["kind"] == "security_group_updated" and set(whole["payload"]["ports"]) == {p1["id"], p2["id"]}
            # a second port of A on h2: a member event for both hosts, no whole group again
            p3 = _port(server, net, "t", "h2", security_groups=[a["id"]])
            assert _events(w1, a["id"])[-1]["payload"]["port_id"] == p3["id"]
            on_h2 = _events(w2, p3["id"])
            assert [e["kind"] for e in on_h2 if e["object_id"] == a["id"]] == ["security_group_member"]
            assert on_h2[0]["payload"] == {"id": a["id"], "port_id": p3["id"], "addresses": [p3["fixed_ips"][0]["ip_address"]]}
            # a new fixed IP: that port's addresses, once
            subnet = p3["fixed_ips"][0]["subnet_id"]
            readdressed = {"port": {"fixed_ips": [{"subnet_id": subnet, "ip_address": "10.0.0.77"}]}}
            moved = _ok(server, "PUT", f"/v2.0/ports/{p3['id']}", readdressed)
            assert moved["port"]["fixed_ips"][0]["ip_address"] == "10.0.0.77"
            ip_change = _events(w1, a["id"])[-1]
            assert ip_change["payload"] == {"id": a["id"], "port_id": p3["id"], "addresses": ["10.0.0.77"]}
            # p1 takes p2's pair address too; then p2 drops it: the address stays a member (p1 has it)
            _ok(server, "PUT", f"/v2.0/ports/{p1['id']}", {"port": {"allowed_address_pairs": [shared]}})
            taken = _events(w1, a["id"])[-1]
            assert taken["payload"] == {
                "id": a["id"],
                "port_id": p1["id"],
                "addresses": sorted([p1["fixed_ips"][0]["ip_address"], "10.0.0.200"]),
            }
            _ok(server, "PUT", f"/v2.0/ports/{p2['id']}", {"port": {"allowed_address_pairs": []}})
            dropped = _events(w1, a["id"])
            assert dropped[-1]["payload"] == {"id": a["id"], "port_id": p2["id"], "addresses": [ip2]}
            # p3 leaves A for B: a member event of A ([]); h2 has no port in B yet: the whole of B
            _ok(server, "PUT", f"/v2.0/ports/{p3['id']}", {"port": {"security_groups": [b["id"]]}})
            left = _events(w1, a["id"])[-1]
            assert left["kind"] == "security_group_member" and left["payload"]["addresses"] == []
            # p2 goes: a member event of A ([]) to h1
            _ok(server, "DELETE", f"/v2.0/ports/{p2['id']}")
            gone = _events(w1, a["id"])[-1]
            assert gone["payload"] == {"id": a["id"], "port_id": p2["id"], "addresses": []}
        finally:
            w1.close()
            w2.close()
        # each host's whole stream since its list, in order, applied to that list: the list of now
        for host in ("h1", "h2"):
            watch = Watch(server, host, start[host]["seq"], f"tok-{host}")
            try:
                events = _drain(watch)
            finally:
                watch.close()
            kinds = [(e["kind"], e["object_id"]) for e in events]
            assert kinds.count(("security_group_updated", a["id"])) == (1 if host == "h2" else 0), (host, kinds)
            assert (("security_group_updated", b["id"]) in kinds) == (host == "h2"), (host, kinds)
            end = {g["id"]: {"members": g["members"], "ports": g["ports"]} for g in _list(server, host)["security_groups"]}
            replayed = _replay(start[host]["security_groups"], events)
            assert {g: replayed[g] for g in end} == end, host
            if host == "h1":
                assert "10.0.0.200" in end[a["id"]]["members"] and p2["id"] not in end[a["id"]]["ports"]  # p1 still has it
