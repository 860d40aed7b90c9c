"""The security-group extension (with port-security and allowed-address-pairs), composed with the core plugin.

``SecurityGroupPlugin`` serves /v2.0/security-groups and /v2.0/security-group-rules;
every mutation is an operation of ops/security_groups.py run by the core's ``run``
(journal, controller calls, undo). ``sg_extension`` adds the port and network
attributes, the rules for the core's port and network operations, the groups in
the agents' channel list, and the ``security-groups`` of the topology sync.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin import sg_attributes as sga
from server_plugin.context import RequestContext
from server_plugin.controller import sg_mapping, sync
from server_plugin.extensions import Collection, Extension
from server_plugin.ops import security_groups as sg
from server_plugin.plugin import RestProxyPlugin
from server_plugin.store import agent_events
from server_plugin.store import security_groups as sg_ops
from server_plugin.store.listing import ListQuery
from server_plugin.validators import is_uuid_like, new_uuid

Body = dict[str, Any]


class SecurityGroupPlugin:
    """Security groups and their rules over the core plugin."""

    def __init__(self, core: RestProxyPlugin) -> None:
        self.core = core
        self.store = core.store
        self.defaults = sg.DefaultGroups()
        self.port_rules = sg.SecurityGroupPortRules(self.defaults)
        self.network_rules = sg.PortSecurityNetworkRules()

    async def ensure_default(self, tenant: str | None) -> None:
        """The tenant's default group, made on first use (cached: no I/O once known)."""
        if tenant and tenant not in self.defaults.ids:
            self.defaults.ids[tenant] = await self.core.run(sg.EnsureDefaultSecurityGroup(tenant, new_uuid()))

    # -- groups -------------------------------------------------------------------------------------
    async def create_security_group(self, context: RequestContext, security_group: Body) -> Body:
        values = dict(security_group["security_group"], id=new_uuid())
        known = self.defaults.ids.get(values["tenant_id"])
        group = await self.core.run(sg.CreateSecurityGroup(context, values, known or new_uuid()))
        return group

    async def update_security_group(self, context: RequestContext, id: str, security_group: Body) -> Body:
        return await self.core.run(sg.UpdateSecurityGroup(context, id, security_group["security_group"]))

    async def delete_security_group(self, context: RequestContext, id: str) -> None:
        await self.core.run(sg.DeleteSecurityGroup(context, id))
        for tenant, group_id in list(self.defaults.ids.items()):
            if group_id == id:
                del self.defaults.ids[tenant]

    async def get_security_group(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.core.read(sg_ops.get_group, context, id, fields=fields)

    async def get_security_groups(
        self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None
    ) -> list[Body]:
        if not context.is_admin:
            await self.ensure_default(context.tenant_id)
        return await self.core.read(sg_ops.get_groups, context, query or ListQuery(), fields=fields)

    # -- rules --------------------------------------------------------------------------------------
    async def create_security_group_rule(self, context: RequestContext, security_group_rule: Body) -> Body:
        values = dict(security_group_rule["security_group_rule"], id=new_uuid())
        return await self.core.run(sg.CreateSecurityGroupRule(context, values))

    async def check_bulk_security_group_rule(self, context: RequestContext, items: list[Body]) -> None:
        """Neutron's checks of a bulk rule create as a whole: one tenant, no rule twice."""
        if len({i["tenant_id"] for i in items}) > 1:
            raise exc.SecurityGroupRulesNotSingleTenant()
        seen = set()
        for item in items:
            key = (item.get("security_group_id"), sg_ops.signature(item))
            if key in seen:
                raise exc.DuplicateSecurityGroupRuleInPost()
            seen.add(key)

    async def update_security_group_rule(self, context: RequestContext, id: str, security_group_rule: Body) -> Body:
        return await self.get_security_group_rule(context, id)  # nothing of a rule can change (no attribute allows PUT)

    async def delete_security_group_rule(self, context: RequestContext, id: str) -> None:
        group_id = await self.store.run(sg_ops.rule_group, id, readonly=True) if is_uuid_like(id) else None
        if group_id is None:
            raise exc.SecurityGroupRuleNotFound(id=id)
        await self.core.run(sg.DeleteSecurityGroupRule(context, id, group_id))

    async def get_security_group_rule(self, context: RequestContext, id: str, fields: list[str] | None = None) -> Body:
        return await self.core.read(sg_ops.get_rule, context, id, fields=fields)

    async def get_security_group_rules(
        self, context: RequestContext, query: ListQuery | None = None, fields: list[str] | None = None
    ) -> list[Body]:
        return await self.core.read(sg_ops.get_rules, context, query or ListQuery(), fields=fields)


SG_DESCRIPTORS = (
    {
        "alias": "security-group",
        "name": "security-group",
        "description": "The security groups extension.",
        "updated": "2012-10-05T10:00:00-00:00",
        "links": [],
    },
    {
        "alias": "port-security",
        "name": "Port Security",
        "description": "Provides port security",
        "updated": "2012-07-23T10:00:00-00:00",
        "links": [],
    },
    {
        "alias": "allowed-address-pairs",
        "name": "Allowed Address Pairs",
        "description": "Provides allowed address pairs",
        "updated": "2013-07-23T10:00:00-00:00",
        "links": [],
    },
)


def host_view(session: Session, host: str, ports: list[Body]) -> Body:
    return sg_ops.host_groups(session, host, ports)


class GroupInterest:
    """Which of the member events written for every host (``agent_events.EVERY_HOST``) one host's watch carries:
    those of the groups the host wants when its watch starts, and of each group sent to it whole since (in ``seq``
    order, as the watch sends them). A group it stops wanting stays until the watch ends: a member event too many
    is ignored by the agent, one too few would leave its flows stale."""

    def __init__(self, groups: set[str]) -> None:
        self.groups = groups

    def admits(self, host: str, kind: str, object_id: str) -> bool:
        if host != agent_events.EVERY_HOST:
            if kind == sg_ops.SECURITY_GROUP_UPDATED:
                self.groups.add(object_id)
            return True
        return kind != sg_ops.SECURITY_GROUP_MEMBER or object_id in self.groups


def host_interest(session: Session, host: str) -> GroupInterest:
    return GroupInterest(sg_ops.wanted_groups(session, host))


def render_groups_page(session: Session, after_id: str | None, limit: int) -> tuple[list[Body], str | None]:
    """One page of the topology's ``security-groups`` (Big Switch), ordered by id."""
    groups = sg_ops.groups_page(session, after_id, limit)
    return [sg_mapping.security_group_payload(g) for g in groups], (groups[-1]["id"] if groups else after_id)


def sg_extension(plugin: SecurityGroupPlugin) -> Extension:
    """Groups and rules; the ports' and networks' attributes and rules; the channel's groups; the topology's groups."""
    agent_events.on_port_change(sg_ops.port_changed, many=sg_ops.ports_changed)
    sync.add_section(sg_mapping.TOPOLOGY_KEY, render_groups_page)
    return Extension(
        "security-group",
        plugin,
        collections=(
            Collection("security-groups", "security_group", sga.SECURITY_GROUPS, exc.SecurityGroupNotFound),
            Collection("security-group-rules", "security_group_rule", sga.SECURITY_GROUP_RULES, exc.SecurityGroupRuleNotFound),
        ),
        descriptors=SG_DESCRIPTORS,
        port_rules=plugin.port_rules,
        network_rules=plugin.network_rules,
        attributes={"ports": sga.PORT_ATTRIBUTES, "networks": sga.NETWORK_ATTRIBUTES},
        host_view=host_view,
        host_interest=host_interest,
    )
