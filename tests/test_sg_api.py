"""Security groups, port security and allowed address pairs through the v2.0 API (a started server, all three databases).

Behaviour and errors as Neutron's (neutron/db/securitygroups_db.py, neutron-lib's
exceptions): the per-tenant default group made on first use with its four rules,
rule validation, duplicates, groups in use, the port attributes, and tenancy.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from restproxy_testing.support import ServerProcess, uniq


def call(server: ServerProcess, method: str, path: str, body: Any = None, tenant: str | None = None) -> tuple[int, Any]:
    return server.request(method, path, body, headers={"X-Tenant-Id": tenant} if tenant else None)


def ok(server: ServerProcess, method: str, path: str, body: Any = None, tenant: str | None = None) -> Any:
    status, reply = call(server, method, path, body, tenant)
    assert status < 300, (status, reply)
    return reply


def fails(server: ServerProcess, method: str, path: str, body: Any = None, tenant: str | None = None) -> tuple[int, str, str]:
    status, reply = call(server, method, path, body, tenant)
    assert status >= 400, reply
    return status, reply["NeutronError"]["type"], reply["NeutronError"]["message"]


_cidrs = iter(range(1, 250))


def network(server: ServerProcess, tenant: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    net = ok(server, "POST", "/v2.0/networks", {"network": {"name": uniq("n"), **extra}}, tenant)["network"]
    cidr = f"10.{next(_cidrs)}.0.0/24"
    subnet = ok(server, "POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}}, tenant)["subnet"]
    return net, subnet


def group(server: ServerProcess, tenant: str, name: str | None = None) -> dict[str, Any]:
    return ok(server, "POST", "/v2.0/security-groups", {"security_group": {"name": name or uniq("sg")}}, tenant)["security_group"]


def rule(server: ServerProcess, tenant: str, sg_id: str, **values: Any) -> dict[str, Any]:
    body = {"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", **values}}
    return ok(server, "POST", "/v2.0/security-group-rules", body, tenant)["security_group_rule"]


def rule_fails(server: ServerProcess, tenant: str, sg_id: str, **values: Any) -> tuple[int, str, str]:
    body = {"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", **values}}
    return fails(server, "POST", "/v2.0/security-group-rules", body, tenant)


def default_group(server: ServerProcess, tenant: str) -> dict[str, Any]:
    groups = ok(server, "GET", "/v2.0/security-groups?name=default", tenant=tenant)["security_groups"]
    assert len(groups) == 1
    return groups[0]


def shape(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["direction"], r["ethertype"], r["protocol"], r["remote_group_id"], r["remote_ip_prefix"])


def test_default_group_made_on_first_list_with_neutron_rules(server: ServerProcess) -> None:
    tenant = uniq("t")
    groups = ok(server, "GET", "/v2.0/security-groups", tenant=tenant)["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    default = groups[0]
    assert default["tenant_id"] == tenant
    assert sorted(shape(r) for r in default["security_group_rules"]) == sorted(
        [
            ("egress", "IPv4", None, None, None),
            ("egress", "IPv6", None, None, None),
            ("ingress", "IPv4", None, default["id"], None),
            ("ingress", "IPv6", None, default["id"], None),
        ]
    )
    # listed again: still one
    assert len(ok(server, "GET", "/v2.0/security-groups", tenant=tenant)["security_groups"]) == 1


def test_default_group_cannot_be_renamed_or_removed_by_its_tenant(server: ServerProcess) -> None:
    tenant = uniq("t")
    default = default_group(server, tenant)
    status, kind, _ = fails(server, "PUT", f"/v2.0/security-groups/{default['id']}", {"security_group": {"name": "x"}}, tenant)
    assert (status, kind) == (409, "SecurityGroupCannotUpdateDefault")
    # its description may change
    updated = ok(server, "PUT", f"/v2.0/security-groups/{default['id']}", {"security_group": {"description": "mine"}}, tenant)
    assert updated["security_group"]["description"] == "mine"
    status, kind, _ = fails(server, "DELETE", f"/v2.0/security-groups/{default['id']}", tenant=tenant)
    assert (status, kind) == (409, "SecurityGroupCannotRemoveDefault")
    status, kind, _ = fails(server, "POST", "/v2.0/security-groups", {"security_group": {"name": "default"}}, tenant)
    assert (status, kind) == (409, "SecurityGroupDefaultAlreadyExists")
    # an admin may remove it; the next use makes a new one
    ok(server, "DELETE", f"/v2.0/security-groups/{default['id']}")
    again = default_group(server, tenant)
    assert again["id"] != default["id"]


def test_group_create_show_update_list_fields_paging_delete(server: ServerProcess) -> None:
    tenant = uniq("t")
    sg = group(server, tenant, "web")
    assert sorted(shape(r) for r in sg["security_group_rules"]) == [
        ("egress", "IPv4", None, None, None),
        ("egress", "IPv6", None, None, None),
    ]
    shown = ok(server, "GET", f"/v2.0/security-groups/{sg['id']}", tenant=tenant)["security_group"]
    assert shown["id"] == sg["id"] and shown["name"] == "web"
    renamed = ok(server, "PUT", f"/v2.0/security-groups/{sg['id']}", {"security_group": {"name": "web2", "description": "d"}}, tenant)
    assert renamed["security_group"]["name"] == "web2"
    listed = ok(server, "GET", "/v2.0/security-groups?name=web2&fields=id&fields=name", tenant=tenant)["security_groups"]
    assert listed == [{"id": sg["id"], "name": "web2"}]
    for _ in range(3):
        group(server, tenant)
    page = ok(server, "GET", "/v2.0/security-groups?limit=2", tenant=tenant)
    assert len(page["security_groups"]) == 2 and page["security_groups_links"][0]["rel"] == "next"
    ok(server, "DELETE", f"/v2.0/security-groups/{sg['id']}", tenant=tenant)
    status, kind, _ = fails(server, "GET", f"/v2.0/security-groups/{sg['id']}", tenant=tenant)
    assert (status, kind) == (404, "SecurityGroupNotFound")


def test_tenants_see_and_steer_only_their_own_groups(server: ServerProcess) -> None:
    alice, bob = uniq("a"), uniq("b")
    sg = group(server, alice)
    assert sg["id"] not in [g["id"] for g in ok(server, "GET", "/v2.0/security-groups", tenant=bob)["security_groups"]]
    assert fails(server, "GET", f"/v2.0/security-groups/{sg['id']}", tenant=bob)[:2] == (404, "SecurityGroupNotFound")
    assert fails(server, "DELETE", f"/v2.0/security-groups/{sg['id']}", tenant=bob)[:2] == (404, "SecurityGroupNotFound")
    assert rule_fails(server, bob, sg["id"], protocol="tcp")[:2] == (404, "SecurityGroupNotFound")
    # rules of alice's group are hers to read
    rule_id = sg["security_group_rules"][0]["id"]
    assert fails(server, "GET", f"/v2.0/security-group-rules/{rule_id}", tenant=bob)[:2] == (404, "SecurityGroupRuleNotFound")
    assert ok(server, "GET", f"/v2.0/security-group-rules/{rule_id}", tenant=alice)["security_group_rule"]["id"] == rule_id
    # a remote group of another tenant is unknown
    mine = group(server, bob)
    assert rule_fails(server, bob, mine["id"], remote_group_id=sg["id"])[:2] == (404, "SecurityGroupNotFound")
    # the admin sees both
    ids = [g["id"] for g in ok(server, "GET", "/v2.0/security-groups")["security_groups"]]
    assert sg["id"] in ids and mine["id"] in ids


def test_rules_validation_as_neutron(server: ServerProcess) -> None:
    tenant = uniq("t")
    sg = group(server, tenant)["id"]
    other = group(server, tenant)["id"]
    ssh = rule(server, tenant, sg, protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="192.0.2.0/24")
    assert (ssh["protocol"], ssh["port_range_min"], ssh["port_range_max"], ssh["ethertype"]) == ("tcp", 22, 22, "IPv4")
    status, kind, message = rule_fails(
        server, tenant, sg, protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="192.0.2.0/24"
    )
    assert (status, kind) == (409, "SecurityGroupRuleExists") and ssh["id"] in message
    # the same rule by protocol number is the same rule
    assert rule_fails(server, tenant, sg, protocol="6", port_range_min=22, port_range_max=22, remote_ip_prefix="192.0.2.0/24")[1] == (
        "SecurityGroupRuleExists"
    )
    assert rule(server, tenant, sg, protocol="47")["protocol"] == "47"
    assert rule(server, tenant, sg, protocol="any", ethertype="IPv6")["protocol"] is None
    icmp = rule(server, tenant, sg, protocol="icmp", port_range_min=8, port_range_max=0)
    assert (icmp["port_range_min"], icmp["port_range_max"]) == (8, 0)
    cases = [
        ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, (400, "SecurityGroupInvalidPortRange")),
        ({"protocol": "tcp", "port_range_min": 70000}, (400, "SecurityGroupInvalidPortValue")),
        ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 10}, (400, "SecurityGroupInvalidPortValue")),
        ({"protocol": "icmp", "port_range_min": 256}, (400, "SecurityGroupInvalidIcmpValue")),
        ({"protocol": "icmp", "port_range_max": 3}, (400, "SecurityGroupMissingIcmpType")),
        ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, (400, "SecurityGroupInvalidProtocolForPort")),
        ({"port_range_min": 1, "port_range_max": 2}, (400, "SecurityGroupProtocolRequiredWithPorts")),
        ({"protocol": "bogus"}, (400, "SecurityGroupRuleInvalidProtocol")),
        ({"protocol": "256"}, (400, "SecurityGroupRuleInvalidProtocol")),
        ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": other}, (400, "SecurityGroupRemoteGroupAndRemoteIpPrefix")),
        ({"remote_ip_prefix": "fd00::/64", "ethertype": "IPv4"}, (400, "SecurityGroupRuleParameterConflict")),
        ({"protocol": "icmpv6", "ethertype": "IPv4"}, (400, "SecurityGroupEthertypeConflictWithProtocol")),
        ({"ethertype": "IPv5"}, (400, "SecurityGroupRuleInvalidEtherType")),
        ({"direction": "sideways"}, (400, "SecurityGroupRuleInvalidDirection")),
        ({"remote_ip_prefix": "nonsense"}, (400, "InvalidInput")),
        ({"remote_group_id": str(uuid.uuid4())}, (404, "SecurityGroupNotFound")),
    ]
    for values, expected in cases:
        assert rule_fails(server, tenant, sg, **values)[:2] == expected, values
    assert rule_fails(server, tenant, str(uuid.uuid4()))[:2] == (404, "SecurityGroupNotFound")
    # filters
    listed = ok(server, "GET", f"/v2.0/security-group-rules?security_group_id={sg}&protocol=tcp", tenant=tenant)["security_group_rules"]
    assert [r["id"] for r in listed] == [ssh["id"]]
    ok(server, "DELETE", f"/v2.0/security-group-rules/{ssh['id']}", tenant=tenant)
    assert fails(server, "DELETE", f"/v2.0/security-group-rules/{ssh['id']}", tenant=tenant)[:2] == (404, "SecurityGroupRuleNotFound")


def test_bulk_rule_create_is_all_or_nothing(server: ServerProcess) -> None:
    tenant = uniq("t")
    sg = group(server, tenant)["id"]
    rules = [
        {"security_group_id": sg, "direction": "ingress", "protocol": "tcp", "port_range_min": p, "port_range_max": p} for p in (80, 443)
    ]
    created = ok(server, "POST", "/v2.0/security-group-rules", {"security_group_rules": rules}, tenant)["security_group_rules"]
    assert sorted(r["port_range_min"] for r in created) == [80, 443]
    twice = [{**rules[0], "port_range_min": 22, "port_range_max": 22}] * 2
    assert fails(server, "POST", "/v2.0/security-group-rules", {"security_group_rules": twice}, tenant)[:2] == (
        409,
        "DuplicateSecurityGroupRuleInPost",
    )
    bad = [{**rules[0], "port_range_min": 8080, "port_range_max": 8080}, {**rules[0], "protocol": "bogus"}]
    assert fails(server, "POST", "/v2.0/security-group-rules", {"security_group_rules": bad}, tenant)[0] == 400
    listed = ok(server, "GET", f"/v2.0/security-group-rules?security_group_id={sg}&port_range_min=8080", tenant=tenant)
    assert listed["security_group_rules"] == []


def test_remote_group_rules_go_with_their_remote_group(server: ServerProcess) -> None:
    tenant = uniq("t")
    sg, remote = group(server, tenant)["id"], group(server, tenant)["id"]
    made = rule(server, tenant, sg, remote_group_id=remote)
    ok(server, "DELETE", f"/v2.0/security-groups/{remote}", tenant=tenant)
    assert fails(server, "GET", f"/v2.0/security-group-rules/{made['id']}", tenant=tenant)[:2] == (404, "SecurityGroupRuleNotFound")


def test_port_gets_the_default_group_and_groups_in_use_stay(server: ServerProcess) -> None:
    tenant = uniq("t")
    net, _ = network(server, tenant)
    port = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, tenant)["port"]
    default = default_group(server, tenant)
    assert port["security_groups"] == [default["id"]]
    assert port["port_security_enabled"] is True and port["allowed_address_pairs"] == []
    sg = group(server, tenant)
    updated = ok(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": [sg["id"], default["id"]]}}, tenant)["port"]
    assert updated["security_groups"] == sorted([sg["id"], default["id"]])
    status, kind, message = fails(server, "DELETE", f"/v2.0/security-groups/{sg['id']}", tenant=tenant)
    assert (status, kind) == (409, "SecurityGroupInUse") and sg["id"] in message
    # shown and listed with them; filtered by them not (Neutron neither)
    assert ok(server, "GET", f"/v2.0/ports/{port['id']}", tenant=tenant)["port"]["security_groups"] == updated["security_groups"]
    ok(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": []}}, tenant)
    ok(server, "DELETE", f"/v2.0/security-groups/{sg['id']}", tenant=tenant)
    # explicit groups, [] allowed, none for network:* ports
    empty = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "security_groups": []}}, tenant)["port"]
    assert empty["security_groups"] == []
    dhcp = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "device_owner": "network:dhcp"}}, tenant)["port"]
    assert dhcp["security_groups"] == []


def test_port_groups_of_another_tenant_are_refused(server: ServerProcess) -> None:
    alice, bob = uniq("a"), uniq("b")
    net, _ = network(server, alice)
    bobs = group(server, bob)
    body = {"port": {"network_id": net["id"], "security_groups": [bobs["id"]]}}
    assert fails(server, "POST", "/v2.0/ports", body, alice)[:2] == (404, "SecurityGroupNotFound")
    port = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, alice)["port"]
    assert fails(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": [bobs["id"]]}}, alice)[:2] == (
        404,
        "SecurityGroupNotFound",
    )
    bad = {"port": {"security_groups": ["not-a-uuid"]}}
    assert fails(server, "PUT", f"/v2.0/ports/{port['id']}", bad, alice)[:2] == (400, "InvalidInput")


def test_port_security(server: ServerProcess) -> None:
    tenant = uniq("t")
    net, _ = network(server, tenant, port_security_enabled=False)
    assert net["port_security_enabled"] is False
    port = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, tenant)["port"]
    assert port["port_security_enabled"] is False and port["security_groups"] == []
    sg = group(server, tenant)
    body = {"port": {"network_id": net["id"], "security_groups": [sg["id"]]}}
    assert fails(server, "POST", "/v2.0/ports", body, tenant)[:2] == (400, "PortSecurityAndIPRequiredForSecurityGroups")
    net2, _ = network(server, tenant)
    assert net2["port_security_enabled"] is True
    secured = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net2["id"]}}, tenant)["port"]
    off = {"port": {"port_security_enabled": False}}
    assert fails(server, "PUT", f"/v2.0/ports/{secured['id']}", off, tenant)[:2] == (409, "PortSecurityPortHasSecurityGroup")
    both = {"port": {"port_security_enabled": False, "security_groups": []}}
    assert ok(server, "PUT", f"/v2.0/ports/{secured['id']}", both, tenant)["port"]["port_security_enabled"] is False
    # no fixed IP, no group
    bare = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net2["id"], "fixed_ips": []}}, tenant)["port"]
    assert bare["security_groups"] == []
    give = {"port": {"security_groups": [sg["id"]]}}
    assert fails(server, "PUT", f"/v2.0/ports/{bare['id']}", give, tenant)[:2] == (400, "PortSecurityAndIPRequiredForSecurityGroups")
    updated = ok(server, "PUT", f"/v2.0/networks/{net2['id']}", {"network": {"port_security_enabled": False}}, tenant)["network"]
    assert updated["port_security_enabled"] is False


def test_allowed_address_pairs(server: ServerProcess) -> None:
    tenant = uniq("t")
    net, _ = network(server, tenant)
    pairs = [{"ip_address": "10.99.0.0/24"}, {"ip_address": "10.98.0.7", "mac_address": "fa:16:3e:00:00:01"}]
    port = ok(server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "allowed_address_pairs": pairs}}, tenant)["port"]
    assert port["allowed_address_pairs"] == [
        {"ip_address": "10.99.0.0/24", "mac_address": port["mac_address"]},
        {"ip_address": "10.98.0.7", "mac_address": "fa:16:3e:00:00:01"},
    ]
    assert ok(server, "GET", f"/v2.0/ports/{port['id']}", tenant=tenant)["port"]["allowed_address_pairs"] == port["allowed_address_pairs"]
    cleared = ok(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"allowed_address_pairs": []}}, tenant)["port"]
    assert cleared["allowed_address_pairs"] == []
    cases = [
        ([{"ip_address": "10.1.1.1"}, {"ip_address": "10.1.1.1"}], (400, "DuplicateAddressPairInRequest")),
        ([{"mac_address": "fa:16:3e:00:00:01"}], (400, "AllowedAddressPairsMissingIP")),
        ([{"ip_address": "nonsense"}], (400, "InvalidInput")),
        ([{"ip_address": "10.1.1.1", "other": 1}], (400, "HTTPBadRequest")),
        ([{"ip_address": f"10.2.0.{i}"} for i in range(11)], (400, "AllowedAddressPairExhausted")),
    ]
    for value, expected in cases:
        assert fails(server, "PUT", f"/v2.0/ports/{port['id']}", {"port": {"allowed_address_pairs": value}}, tenant)[:2] == expected, value
    body = {"port": {"network_id": net["id"], "port_security_enabled": False, "allowed_address_pairs": [{"ip_address": "10.3.0.1"}]}}
    assert fails(server, "POST", "/v2.0/ports", body, tenant)[:2] == (409, "AddressPairAndPortSecurityRequired")


def test_extensions_are_listed(server: ServerProcess) -> None:
    aliases = {e["alias"] for e in ok(server, "GET", "/v2.0/extensions")["extensions"]}
    assert {"security-group", "port-security", "allowed-address-pairs"} <= aliases


@pytest.mark.parametrize("name", ["", "web"])
def test_port_filter_false_without_a_filtering_agent(server: ServerProcess, name: str) -> None:
    tenant = uniq("t")
    net, _ = network(server, tenant)
    port = ok(
        server, "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "tenant_id": tenant, "binding:host_id": uniq("h"), "name": name}}
    )["port"]
    assert port["binding:vif_details"] == {"port_filter": False, "ovs_hybrid_plug": False}
