"""Security groups mirrored to controllers (the simulator checks every body): what goes on the wire, undo, sync.

Big Switch gets ``POST /securitygroups`` with the whole group (its rules) on every change
and ``DELETE /securitygroups/{id}``, as networking-bigswitch sent them, and
``security-groups`` in the topology; Floodlight gets nothing.
"""

from __future__ import annotations

from typing import Any

from controller_sim.testing import SimProcess
from restproxy_testing.support import ServerProcess, wait_for
from tests.test_l3_controller import API_PATHS, TENANT, calls, check, create, last_seq, mutations, ok, stack


def _sg(server: ServerProcess, name: str = "web") -> dict[str, Any]:
    return ok(server, "POST", "/v2.0/security-groups", {"security_group": {"name": name, "tenant_id": TENANT}})["security_group"]


def _rule(server: ServerProcess, sg_id: str, **values: Any) -> dict[str, Any]:
    body = {"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", "tenant_id": TENANT, **values}}
    return ok(server, "POST", "/v2.0/security-group-rules", body)["security_group_rule"]


def _api_groups(server: ServerProcess) -> list[dict[str, Any]]:
    groups = ok(server, "GET", "/v2.0/security-groups")["security_groups"]
    return sorted(({"id": g["id"], "rules": sorted(r["id"] for r in g["security_group_rules"])} for g in groups), key=lambda g: g["id"])


def _sim_groups(sim: SimProcess) -> list[dict[str, Any]]:
    return [{"id": g["id"], "rules": [r["id"] for r in g["security_group_rules"]]} for g in sim.state()["security_groups"]]


def test_calls_and_bodies() -> None:
    with stack() as (server, (sim,)):
        since = last_seq(sim)
        group = _sg(server)
        sent = mutations(sim, since)
        # the tenant's default group first (made on first use), then the group
        assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in sent] == [("POST", "securitygroups"), ("POST", "securitygroups")]
        default = sent[0]["body"]["security-group"]
        assert default["name"] == "default" and default["tenant_id"] == TENANT
        assert {(r["direction"], r["ethertype"], r["remote_group_id"]) for r in default["security_group_rules"]} == {
            ("egress", "IPv4", None), ("egress", "IPv6", None), ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"]),
        }  # fmt: skip
        body = sent[1]["body"]["security-group"]
        assert (body["id"], body["name"], len(body["security_group_rules"])) == (group["id"], "web", 2)
        # a rule re-posts the group with it
        since = last_seq(sim)
        rule = _rule(server, group["id"], protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="192.0.2.0/24")
        [posted] = mutations(sim, since)
        assert posted["path"].endswith("/securitygroups")
        sent_rule = [r for r in posted["body"]["security-group"]["security_group_rules"] if r["id"] == rule["id"]][0]
        assert (sent_rule["protocol"], sent_rule["port_range_min"], sent_rule["remote_ip_prefix"]) == ("tcp", 22, "192.0.2.0/24")
        assert _sim_groups(sim) == _api_groups(server)
        # a rename re-posts it; a rule delete re-posts it without the rule; a delete deletes it
        ok(server, "PUT", f"/v2.0/security-groups/{group['id']}", {"security_group": {"name": "web2"}})
        assert [g for g in sim.state()["security_groups"] if g["id"] == group["id"]][0]["name"] == "web2"
        ok(server, "DELETE", f"/v2.0/security-group-rules/{rule['id']}")
        assert _sim_groups(sim) == _api_groups(server)
        since = last_seq(sim)
        ok(server, "DELETE", f"/v2.0/security-groups/{group['id']}")
        assert calls(sim, since) == [("DELETE", f"/securitygroups/{group['id']}")]
        assert _sim_groups(sim) == _api_groups(server)
        # a port's default group is already known: a port create sends no group
        net = create(server, "network", name="n")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.1.0.0/24")
        since = last_seq(sim)
        create(server, "port", network_id=net["id"], device_id="vm-1")
        assert not [c for c in calls(sim, since) if "securitygroups" in c[1]]


def test_controller_refusal_undoes_the_change() -> None:
    with stack() as (server, (sim,)):
        group = _sg(server)
        net = create(server, "network", name="n", tenant="t-other")
        create(server, "subnet", tenant="t-other", network_id=net["id"], ip_version=4, cidr="10.2.0.0/24")
        before = _api_groups(server)
        sim.fault(action="status", status=500, path_regex=API_PATHS)
        status, reply = server.request("POST", "/v2.0/security-groups", {"security_group": {"name": "x", "tenant_id": TENANT}})
        assert status == 500 and reply["NeutronError"]["type"] == "RemoteRestError"
        body = {"security_group_rule": {"security_group_id": group["id"], "direction": "ingress", "tenant_id": TENANT, "protocol": "udp"}}
        assert server.request("POST", "/v2.0/security-group-rules", body)[0] == 500
        assert server.request("PUT", f"/v2.0/security-groups/{group['id']}", {"security_group": {"name": "no"}})[0] == 500
        assert server.request("DELETE", f"/v2.0/security-groups/{group['id']}")[0] == 500
        assert _api_groups(server) == before
        assert ok(server, "GET", f"/v2.0/security-groups/{group['id']}")["security_group"]["name"] == "web"
        # a new tenant's first port needs its default group: refused, no port and no group
        assert server.request("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "tenant_id": "t-other"}})[0] == 500
        assert ok(server, "GET", "/v2.0/ports?tenant_id=t-other")["ports"] == []
        assert ok(server, "GET", "/v2.0/security-groups?tenant_id=t-other")["security_groups"] == []
        sim.clear_faults()
        assert _sim_groups(sim) == _api_groups(server)


def test_topology_sync_carries_the_groups() -> None:
    with stack() as (server, (sim,)):
        group = _sg(server)
        _rule(server, group["id"], protocol="icmp")
        other = _sg(server, "other")
        _rule(server, group["id"], remote_group_id=other["id"])
        sim.restart(kill=True)
        assert sim.state()["security_groups"] == []
        # the next change meets a 409 and brings a topology sync, which carries every group
        ok(server, "PUT", f"/v2.0/security-groups/{other['id']}", {"security_group": {"description": "again"}})
        assert sim.stats()["topology_puts"] == 1
        wait_for("groups synced", lambda: _sim_groups(sim) == _api_groups(server))


def test_floodlight_gets_no_security_groups() -> None:
    with stack(profile="floodlight") as (server, (sim,)):
        wait_for("profile detection", lambda: server.request("GET", "/admin/pool")[1]["profile"] == "floodlight")
        group = _sg(server)
        _rule(server, group["id"], protocol="tcp")
        net = create(server, "network", name="n")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.1.0.0/24")
        create(server, "port", network_id=net["id"], device_id="vm-1", security_groups=[group["id"]])
        ok(server, "DELETE", f"/v2.0/security-groups/{_sg(server, 'z')['id']}")
        assert not [r for r in mutations(sim) if "securitygroup" in r["path"]]
        assert sim.stats()["java_exceptions"] == 0


def _port_groups_sent(sim: SimProcess, since: int) -> list[tuple[str, list[str]]]:
    return [(r["method"], r["body"]["port"]["security_groups"]) for r in mutations(sim, since) if "port" in (r["body"] or {})]


def test_port_bodies_carry_their_groups_and_check_compares_groups_with_the_controller() -> None:
    """networking-bigswitch's port dicts carried ``security_groups``; ``restproxy-manage check`` compares the groups
    (with their rules) and each port's groups with what the controller holds (the simulator's state)."""
    with stack() as (server, (sim,)):
        web = _sg(server)
        _rule(server, web["id"], protocol="tcp", port_range_min=80, port_range_max=80)
        default = [g for g in ok(server, "GET", "/v2.0/security-groups")["security_groups"] if g["name"] == "default"][0]
        net = create(server, "network", name="n")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.2.0.0/24")
        since = last_seq(sim)
        port = create(server, "port", network_id=net["id"], device_id="vm-1")
        assert _port_groups_sent(sim, since) == [("POST", [default["id"]])]
        since = last_seq(sim)
        ok(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": [web["id"], default["id"]]}})
        assert _port_groups_sent(sim, since) == [("PUT", sorted([web["id"], default["id"]]))]
        [held] = [p for n in sim.state()["networks"] for p in n["ports"] if p["id"] == port["id"]]
        assert held["security_groups"] == sorted([web["id"], default["id"]])
        result = check(server, sim)
        assert result.returncode == 0 and "consistent with the store" in result.stdout and "2 security groups)" in result.stdout, result
        # the controller loses a group, and a rule of another: both are named
        assert sim.controller("DELETE", f"securitygroups/{web['id']}")[0] == 200
        rules = [r for r in default["security_group_rules"] if r["direction"] == "egress"]
        changed = dict(default, security_group_rules=[r for r in default["security_group_rules"] if r not in rules[:1]])
        assert sim.controller("POST", "securitygroups", {"security-group": changed})[0] in (200, 201)
        result = check(server, sim)
        assert result.returncode == 1, result
        assert f"security group {web['id']}: missing on the controller" in result.stdout, result.stdout
        assert f"security group {default['id']}: security_group_rules is" in result.stdout, result.stdout
        # a port whose groups differ on the controller
        sim.controller("PUT", f"tenants/{TENANT}/networks/{net['id']}/ports/{port['id']}", {"port": dict(held, security_groups=[])})
        assert f"port {port['id']}" in check(server, sim).stdout
        # a sync sends the groups and every port's groups: consistent again
        assert server.request("POST", "/admin/sync")[0] == 202
        wait_for("consistent after the sync", lambda: check(server, sim).returncode == 0, timeout=30)
        [held] = [p for n in sim.state()["networks"] for p in n["ports"] if p["id"] == port["id"]]
        assert held["security_groups"] == sorted([web["id"], default["id"]])
