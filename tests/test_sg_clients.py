"""Security groups through the real clients (openstacksdk, python-neutronclient), on all three databases.

Both are used as a deployment without Keystone would; errors arrive as the clients' typed
exceptions (sdk: ConflictException, ResourceNotFound, BadRequestException; neutronclient:
Conflict, NotFound, BadRequest, having no class of its own for these types), and the
Neutron type is in the body.
"""

from __future__ import annotations

import uuid
from typing import Any

import openstack
import pytest
from neutronclient.common import exceptions as nc_exc
from neutronclient.v2_0 import client as nc_client
from openstack import exceptions as sdk_exc

from restproxy_testing.support import uniq

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning", "ignore::FutureWarning")


@pytest.fixture
def tenant() -> str:
    return uniq("sgc-t")


def _sdk_type(error: sdk_exc.HttpException) -> str:
    return error.response.json()["NeutronError"]["type"]


def test_sdk_groups_rules_and_typed_errors(conn: openstack.connection.Connection, tenant: str) -> None:
    sg = conn.network.create_security_group(name=uniq("web"), description="d", project_id=tenant)
    assert sg.project_id == tenant and len(sg.security_group_rules) == 2
    names = sorted(g.name for g in conn.network.security_groups(project_id=tenant))
    assert names == sorted(["default", sg.name])
    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22,
        remote_ip_prefix="192.0.2.0/24", ether_type="IPv4", project_id=tenant,
    )  # fmt: skip
    assert (rule.protocol, rule.port_range_min, rule.remote_ip_prefix) == ("tcp", 22, "192.0.2.0/24")
    with pytest.raises(sdk_exc.ConflictException) as info:
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22,
            remote_ip_prefix="192.0.2.0/24", ether_type="IPv4", project_id=tenant,
        )  # fmt: skip
    assert _sdk_type(info.value) == "SecurityGroupRuleExists" and rule.id in str(info.value.response.json())
    with pytest.raises(sdk_exc.BadRequestException) as bad:
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", remote_ip_prefix="10.0.0.0/8", remote_group_id=sg.id, project_id=tenant
        )
    assert _sdk_type(bad.value) == "SecurityGroupRemoteGroupAndRemoteIpPrefix"
    updated = conn.network.update_security_group(sg, name=uniq("renamed"))
    assert updated.name.startswith("renamed")
    net = conn.network.create_network(name=uniq("n"), project_id=tenant)
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.40.0.0/24", project_id=tenant)
    port = conn.network.create_port(network_id=net.id, project_id=tenant, security_group_ids=[sg.id])
    assert port.security_group_ids == [sg.id] and port.is_port_security_enabled is True
    with pytest.raises(sdk_exc.ConflictException) as in_use:
        conn.network.delete_security_group(sg)
    assert _sdk_type(in_use.value) == "SecurityGroupInUse"
    with pytest.raises(sdk_exc.ConflictException) as psec:
        conn.network.update_port(port, port_security_enabled=False)
    assert _sdk_type(psec.value) == "PortSecurityPortHasSecurityGroup"
    port = conn.network.update_port(port, security_groups=[], port_security_enabled=False)
    assert port.security_group_ids == [] and port.is_port_security_enabled is False
    conn.network.delete_security_group_rule(rule)
    conn.network.delete_security_group(sg)
    with pytest.raises(sdk_exc.ResourceNotFound):
        conn.network.get_security_group(sg.id)
    default = next(iter(conn.network.security_groups(project_id=tenant, name="default")))
    assert conn.network.get_security_group(default.id).name == "default"


def test_neutronclient_groups_rules_and_typed_errors(nc: nc_client.Client, tenant: str) -> None:
    sg = nc.create_security_group({"security_group": {"name": uniq("web"), "tenant_id": tenant}})["security_group"]
    listed = nc.list_security_groups(tenant_id=tenant)["security_groups"]
    assert {g["name"] for g in listed} == {"default", sg["name"]}
    rules: list[dict[str, Any]] = [
        {"security_group_id": sg["id"], "direction": "ingress", "protocol": "udp", "port_range_min": 53, "port_range_max": 53,
         "tenant_id": tenant},
        {"security_group_id": sg["id"], "direction": "ingress", "protocol": "icmp", "tenant_id": tenant},
    ]  # fmt: skip
    created = nc.create_security_group_rule({"security_group_rules": rules})["security_group_rules"]
    assert sorted(r["protocol"] for r in created) == ["icmp", "udp"]
    with pytest.raises(nc_exc.Conflict) as dup:
        nc.create_security_group_rule({"security_group_rule": rules[0]})
    assert "Security group rule already exists" in str(dup.value)
    with pytest.raises(nc_exc.BadRequest) as bad:
        nc.create_security_group_rule({"security_group_rule": dict(rules[0], port_range_min=60, port_range_max=50)})
    assert "port_range_min must be <= port_range_max" in str(bad.value)
    with pytest.raises(nc_exc.NotFound) as missing:
        nc.show_security_group(str(uuid.uuid4()))
    assert "does not exist" in str(missing.value)
    net = nc.create_network({"network": {"name": uniq("n"), "tenant_id": tenant}})["network"]
    nc.create_subnet({"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.41.0.0/24", "tenant_id": tenant}})
    port = nc.create_port({"port": {"network_id": net["id"], "tenant_id": tenant, "security_groups": [sg["id"]]}})["port"]
    with pytest.raises(nc_exc.Conflict) as in_use:
        nc.delete_security_group(sg["id"])
    assert f"Security Group {sg['id']} in use" in str(in_use.value)
    nc.update_port(port["id"], {"port": {"security_groups": []}})
    for rule in created:
        nc.delete_security_group_rule(rule["id"])
    nc.delete_security_group(sg["id"])
    with pytest.raises(nc_exc.NotFound):
        nc.show_security_group(sg["id"])
