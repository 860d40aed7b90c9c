"""Security groups mirrored to controllers (the simulator checks every body): what goes on the wire, undo, sync.

Big Switch gets ``POST /securitygroups`` with the whole group (its rules) on every change
and ``DELETE /securitygroups/{id}``, as networking-bigswitch sent them, and
``security-groups`` in the topology; Floodlight gets nothing.
"""

from __future__ import annotations

from typing import Any

from controller_sim.testing import SimProcess
from restproxy_testing.support import ServerProcess, wait_for
from tests.test_l3_controller import API_PATHS, TENANT, calls, create, last_seq, mutations, ok, stack


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
