"""Security groups to the controllers: pure functions of (profile, before, after), as in mapping.py.

Big Switch only, as networking-bigswitch sent them (servermanager.rest_create_securitygroup /
rest_delete_securitygroup): ``POST /securitygroups`` with ``{"security-group": sg}`` including its
rules (a rule added or removed re-posts the whole group; so does a rename), ``DELETE
/securitygroups/{id}``, and the ``security-groups`` list in the topology sync. Floodlight knows no
security groups: nothing is sent to it.
"""

from __future__ import annotations

from typing import Any

from server_plugin.controller.mapping import BIGSWITCH, segment
from server_plugin.ops.base import Call, Profile

SECURITY_GROUPS_PATH = "/securitygroups"
TOPOLOGY_KEY = "security-groups"
RULE_KEYS = (
    "id", "tenant_id", "security_group_id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max",
    "remote_ip_prefix", "remote_group_id",
)  # fmt: skip


def security_group_payload(group: dict[str, Any]) -> dict[str, Any]:
    """The ``security-group`` object: id, tenant_id, name, description and its ``security_group_rules``."""
    return {
        "id": group["id"],
        "tenant_id": group["tenant_id"],
        "name": group.get("name", ""),
        "description": group.get("description", ""),
        "security_group_rules": [{k: r.get(k) for k in RULE_KEYS} for r in group.get("security_group_rules", [])],
    }


def security_group_path(group_id: str | None = None) -> str:
    return SECURITY_GROUPS_PATH + (f"/{segment(group_id)}" if group_id else "")


def security_group_calls(profile: Profile, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Call]:
    """A group (its API dict, with its rules) created, changed (rules, name) or deleted."""
    if profile.name != BIGSWITCH or (before is None and after is None):
        return []
    if after is None:
        return [Call("DELETE", security_group_path(before["id"]), ignore=(404,))]
    return [Call("POST", security_group_path(), {"security-group": security_group_payload(after)})]
