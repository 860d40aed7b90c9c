"""Units of work for security groups and their rules, the ports' groups, and what agents hear of them.

Groups and rules follow neutron/db/securitygroups_db.py: every group is made with
an egress rule per ethertype; a tenant's ``default`` group (made on first use,
one per tenant by the primary key of ``default_security_group``) also admits
ingress from its own members. Agents get a group (its rules and the addresses of
its members) in the channel's list and as ``security_group_updated`` events, in
the transaction of the change, sent to every host with a port in the group or in
a group whose rules name it (``interested_hosts``). A member's change (a port
created, deleted, re-addressed, given pairs, moved between groups) is a
``security_group_member`` event instead: that one port's addresses in the group,
written once for every host agent (each applies it to the group if it has it), so
that its cost grows neither with the group nor with its hosts; the whole group goes
only to a host that did not have it yet (SG_CONTRACT.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import netaddr
from sqlalchemy import bindparam, delete, select, text, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin import sg_attributes as sga
from server_plugin.context import RequestContext
from server_plugin.store import access, agent_events
from server_plugin.store.db import RetryTransaction
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, scoped
from server_plugin.store.models import (
    AllowedAddressPair,
    DefaultSecurityGroup,
    IPAllocation,
    Network,
    Port,
    SecurityGroup,
    SecurityGroupPortBinding,
    SecurityGroupRule,
    utcnow,
)
from server_plugin.store.prebuilt import Prebuilt
from server_plugin.store.views import security_group_dict, security_group_rule_dict
from server_plugin.validators import new_uuid

Body = dict[str, Any]

SECURITY_GROUP_UPDATED = "security_group_updated"
SECURITY_GROUP_DELETED = "security_group_deleted"
SECURITY_GROUP_MEMBER = "security_group_member"
DEFAULT_DESCRIPTION = "Default security group"
RULE_KEYS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id")


def visible_group(session: Session, ctx: RequestContext, group_id: Any, lock: bool = False) -> SecurityGroup:
    return access.resolve(session, ctx, SecurityGroup, group_id, lock=lock)


def visible_rule(session: Session, ctx: RequestContext, rule_id: Any) -> SecurityGroupRule:
    return access.resolve(session, ctx, SecurityGroupRule, rule_id)


def _rule(group: SecurityGroup, tenant: str, direction: str, ethertype: str, remote_group_id: str | None = None) -> SecurityGroupRule:
    now = utcnow()
    return SecurityGroupRule(
        id=new_uuid(), tenant_id=tenant, security_group_id=group.id, remote_group_id=remote_group_id, direction=direction,
        ethertype=ethertype, protocol=None, port_range_min=None, port_range_max=None, remote_ip_prefix=None, description="",
        created_at=now, updated_at=now,
    )  # fmt: skip


def _new_group(session: Session, tenant: str, name: str, description: str, group_id: str | None = None) -> SecurityGroup:
    now = utcnow()
    group = SecurityGroup(
        id=group_id or new_uuid(), tenant_id=tenant, name=name, description=description, created_at=now, updated_at=now, rules=[]
    )
    session.add(group)
    for ethertype in sga.ETHERTYPES:
        group.rules.append(_rule(group, tenant, sga.EGRESS, ethertype))
    return group


# -- the default group ----------------------------------------------------------------------------


def default_group_id(session: Session, tenant: str) -> str | None:
    return session.scalar(select(DefaultSecurityGroup.security_group_id).where(DefaultSecurityGroup.tenant_id == tenant))


def create_default_group(session: Session, tenant: str, group_id: str | None = None) -> tuple[Body | None, str]:
    """The tenant's default group: (its dict if made now, else None; its id). A race with another server: retried."""
    found = default_group_id(session, tenant)
    if found is not None:
        return None, found
    group = _new_group(session, tenant, sga.DEFAULT_NAME, DEFAULT_DESCRIPTION, group_id)
    for ethertype in sga.ETHERTYPES:
        group.rules.append(_rule(group, tenant, sga.INGRESS, ethertype, remote_group_id=group.id))
    try:
        session.flush()  # the group first: the default row has no relationship to order it after
        session.add(DefaultSecurityGroup(tenant_id=tenant, security_group_id=group.id))
        session.flush()
    except IntegrityError as e:
        raise RetryTransaction() from e  # another server made it first: the retry finds it
    return security_group_dict(group), group.id


def is_default(session: Session, group_id: str) -> bool:
    return session.scalar(select(DefaultSecurityGroup.tenant_id).where(DefaultSecurityGroup.security_group_id == group_id)) is not None


# -- groups ---------------------------------------------------------------------------------------


def create_group(session: Session, ctx: RequestContext, values: Body) -> Body:
    group = _new_group(session, values["tenant_id"], values.get("name", ""), values.get("description", ""), values.get("id"))
    session.flush()
    return security_group_dict(group)


def get_group(session: Session, ctx: RequestContext, group_id: str) -> Body:
    return security_group_dict(visible_group(session, ctx, group_id))


def get_groups(session: Session, ctx: RequestContext, query: ListQuery) -> list[Body]:
    stmt = scoped(ctx, SecurityGroup, select(SecurityGroup).options(selectinload(SecurityGroup.rules)))
    stmt = apply_paging(session, ctx, apply_filters(stmt, SecurityGroup, query.filters), SecurityGroup, query)
    return [security_group_dict(g) for g in session.scalars(stmt)]


def update_group(session: Session, ctx: RequestContext, group_id: str, values: Body) -> tuple[Body, Body]:
    group = visible_group(session, ctx, group_id, lock=True)
    before = security_group_dict(group)
    if "name" in values and values["name"] != group.name and is_default(session, group.id):
        raise exc.SecurityGroupCannotUpdateDefault()
    for key in ("name", "description"):
        if key in values:
            setattr(group, key, values[key])
    group.updated_at = utcnow()
    session.flush()
    return before, security_group_dict(group)


def restore_group(session: Session, before: Body) -> None:
    group = session.get(SecurityGroup, before["id"])
    if group is not None:
        group.name, group.description = before["name"], before["description"]


def check_delete_group(session: Session, ctx: RequestContext, group_id: str) -> Body:
    """404, the default group for a non-admin, a group with ports: refused before anything is deleted."""
    group = visible_group(session, ctx, group_id)
    if not ctx.is_admin and is_default(session, group.id):
        raise exc.SecurityGroupCannotRemoveDefault()
    if session.scalar(select(SecurityGroupPortBinding.port_id).where(SecurityGroupPortBinding.security_group_id == group.id).limit(1)):
        raise exc.SecurityGroupInUse(id=group.id)
    return security_group_dict(group)


def referencing_groups(session: Session, group_id: str) -> list[str]:
    """Other groups whose rules name ``group_id`` as their remote group."""
    stmt = select(SecurityGroupRule.security_group_id).where(
        SecurityGroupRule.remote_group_id == group_id, SecurityGroupRule.security_group_id != group_id
    )
    return sorted(set(session.scalars(stmt)))


def delete_group(session: Session, ctx: RequestContext, group_id: str) -> Body:
    before = check_delete_group(session, ctx, group_id)
    hosts = interested_hosts(session, group_id)
    referencing = referencing_groups(session, group_id)
    session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.remote_group_id == group_id))
    session.execute(delete(DefaultSecurityGroup).where(DefaultSecurityGroup.security_group_id == group_id))
    group = session.get(SecurityGroup, group_id)
    session.delete(group)
    session.flush()
    for host in sorted(hosts):
        agent_events.record(session, host, SECURITY_GROUP_DELETED, group_id, {"id": group_id})
    notify(session, referencing)  # their rules naming it are gone
    return before


def purge_group(session: Session, group_id: str) -> None:
    """Undo a group's create (its controller refused it). A default group that a port already uses (another server's
    port create found it before the refusal) stays: the controller gets it at the sync the refusal asks for."""
    group = session.get(SecurityGroup, group_id)
    in_use = session.scalar(select(SecurityGroupPortBinding.port_id).where(SecurityGroupPortBinding.security_group_id == group_id).limit(1))
    if group is not None and in_use is None:
        session.execute(delete(DefaultSecurityGroup).where(DefaultSecurityGroup.security_group_id == group_id))
        session.delete(group)


# -- rules ----------------------------------------------------------------------------------------


def _check_rule(values: Body) -> None:
    """neutron/db/securitygroups_db.py _validate_security_group_rule: prefixes, protocols, port ranges."""
    if values.get("remote_ip_prefix") and values.get("remote_group_id"):
        raise exc.SecurityGroupRemoteGroupAndRemoteIpPrefix()
    prefix, ethertype, protocol = values.get("remote_ip_prefix"), values["ethertype"], values.get("protocol")
    if prefix:
        version = netaddr.IPNetwork(prefix).version
        if (version == 4) != (ethertype == sga.IPV4):
            raise exc.SecurityGroupRuleParameterConflict(ethertype=ethertype, cidr=prefix)
    name = sga.normalized_protocol(protocol)
    if name == "icmpv6" and ethertype == sga.IPV4:
        raise exc.SecurityGroupEthertypeConflictWithProtocol(ethertype=ethertype, protocol=protocol)
    low, high = values.get("port_range_min"), values.get("port_range_max")
    if low is None and high is None:
        return
    if protocol is None:
        raise exc.SecurityGroupProtocolRequiredWithPorts()
    by_number = {str(n): p for p, n in sga.PROTOCOL_NUMBERS.items()}
    canonical = by_number.get(protocol, protocol) if protocol.isdigit() else protocol
    if canonical in sga.PORT_PROTOCOLS:
        for value in (low, high):
            if value == 0:
                raise exc.SecurityGroupInvalidPortValue(port=value)
        if low is not None and high is not None and low > high:
            raise exc.SecurityGroupInvalidPortRange()
    elif canonical in sga.ICMP_PROTOCOLS:
        for attr, field, value in (("port_range_min", "type", low), ("port_range_max", "code", high)):
            if value is not None and not 0 <= value <= 255:
                raise exc.SecurityGroupInvalidIcmpValue(field=field, attr=attr, value=value)
        if low is None and high is not None:
            raise exc.SecurityGroupMissingIcmpType(value=high)
    else:
        raise exc.SecurityGroupInvalidProtocolForPort(
            protocol=protocol, valid_port_protocols=", ".join(sga.PORT_PROTOCOLS + sga.ICMP_PROTOCOLS)
        )


def signature(rule: Body) -> tuple[Any, ...]:
    normal = dict(rule, protocol=sga.normalized_protocol(rule.get("protocol")))
    prefix = normal.get("remote_ip_prefix")
    if prefix:
        normal["remote_ip_prefix"] = str(netaddr.IPNetwork(prefix).cidr)
    return tuple(normal.get(k) for k in RULE_KEYS)


def create_rule(session: Session, ctx: RequestContext, values: Body) -> tuple[Body, Body, Body]:
    """(the rule, its group before, its group after); the group row is locked so that duplicates cannot race."""
    group = visible_group(session, ctx, values["security_group_id"], lock=True)
    if not ctx.is_admin and group.tenant_id != values["tenant_id"]:
        raise exc.SecurityGroupNotFound(id=group.id)
    _check_rule(values)
    if values.get("remote_group_id"):
        visible_group(session, ctx, values["remote_group_id"])
    before = security_group_dict(group)
    wanted = signature(values)
    for existing in group.rules:
        if signature(security_group_rule_dict(existing)) == wanted:
            raise exc.SecurityGroupRuleExists(rule_id=existing.id)
    now = utcnow()
    rule = SecurityGroupRule(
        id=values.get("id") or new_uuid(), tenant_id=values["tenant_id"], security_group_id=group.id,
        remote_group_id=values.get("remote_group_id"), direction=values["direction"], ethertype=values["ethertype"],
        protocol=values.get("protocol"), port_range_min=values.get("port_range_min"), port_range_max=values.get("port_range_max"),
        remote_ip_prefix=values.get("remote_ip_prefix"), description=values.get("description", ""), created_at=now, updated_at=now,
    )  # fmt: skip
    group.rules.append(rule)
    group.updated_at = now
    session.flush()
    notify(session, [group.id, *([rule.remote_group_id] if rule.remote_group_id else [])])
    return security_group_rule_dict(rule), before, security_group_dict(group)


def get_rule(session: Session, ctx: RequestContext, rule_id: str) -> Body:
    return security_group_rule_dict(visible_rule(session, ctx, rule_id))


def get_rules(session: Session, ctx: RequestContext, query: ListQuery) -> list[Body]:
    stmt = apply_filters(scoped(ctx, SecurityGroupRule), SecurityGroupRule, query.filters)
    stmt = apply_paging(session, ctx, stmt, SecurityGroupRule, query)
    return [security_group_rule_dict(r) for r in session.scalars(stmt)]


def rule_group(session: Session, rule_id: str) -> str | None:
    return session.scalar(select(SecurityGroupRule.security_group_id).where(SecurityGroupRule.id == rule_id))


def check_delete_rule(session: Session, ctx: RequestContext, rule_id: str) -> tuple[Body, Body, Body]:
    """(the rule, its group now, its group without it)."""
    rule = visible_rule(session, ctx, rule_id)
    group = session.get(SecurityGroup, rule.security_group_id)
    before = security_group_dict(group)
    after = dict(before, security_group_rules=[r for r in before["security_group_rules"] if r["id"] != rule_id])
    return security_group_rule_dict(rule), before, after


def delete_rule(session: Session, ctx: RequestContext, rule_id: str) -> Body:
    rule = visible_rule(session, ctx, rule_id)
    gone = security_group_rule_dict(rule)
    session.delete(rule)
    session.flush()
    notify(session, [gone["security_group_id"], *([gone["remote_group_id"]] if gone["remote_group_id"] else [])])
    return gone


def purge_rule(session: Session, rule_id: str) -> None:
    """Undo a rule's create."""
    rule = session.get(SecurityGroupRule, rule_id)
    if rule is not None:
        group_id, remote = rule.security_group_id, rule.remote_group_id
        session.delete(rule)
        session.flush()
        notify(session, [group_id, *([remote] if remote else [])])


# -- ports ----------------------------------------------------------------------------------------


def tenant_groups(session: Session, ctx: RequestContext, tenant: str, group_ids: Iterable[str]) -> list[str]:
    """The ids if each is a group of ``tenant`` (any group for an admin), else SecurityGroupNotFound."""
    ids = list(group_ids)
    if not ids:
        return []
    stmt = select(SecurityGroup.id, SecurityGroup.tenant_id).where(SecurityGroup.id.in_(ids))
    found = dict(session.execute(stmt).all())
    for group_id in ids:
        if group_id not in found or (not ctx.is_admin and found[group_id] != tenant):
            raise exc.SecurityGroupNotFound(id=group_id)
    return ids


class NewBinding:
    """A new port's group binding as ``SecurityGroupPortBinding`` has it: a plain object, inserted with the port
    (``ports.NewPort``; an ORM instance cost more than its insert)."""

    __slots__ = ("port_id", "security_group_id", "host")

    def __init__(self, port_id: str, security_group_id: str, host: str) -> None:
        self.port_id, self.security_group_id, self.host = port_id, security_group_id, host

    def values(self) -> dict[str, Any]:
        return {"port_id": self.port_id, "security_group_id": self.security_group_id, "host": self.host}


def bind(session: Session, port: Any, group_ids: Iterable[str]) -> None:
    """Bind the port (a ``Port``, or a create's ``ports.NewPort``) to exactly these groups."""
    host = port.binding_host_id or ""
    if not isinstance(port, Port):
        port.security_group_bindings = [NewBinding(port.id, g, host) for g in sorted(set(group_ids))]
        return
    rows = [SecurityGroupPortBinding(port_id=port.id, security_group_id=g, host=host) for g in sorted(set(group_ids))]
    if port.security_group_bindings:
        port.security_group_bindings = rows
    else:
        port.security_group_bindings.extend(rows)  # a new port's (empty, loaded) list: no replace


def rehost(session: Session, port: Port) -> None:
    """The port's ``binding:host_id`` changed: its bindings follow."""
    for binding in port.security_group_bindings:
        binding.host = port.binding_host_id or ""


def set_pairs(session: Session, port: Port, pairs: list[Body]) -> None:
    """Pairs without a MAC take the port's; two equal pairs once filled in: DuplicateAddressPairInRequest."""
    rows, seen = [], set()
    for position, pair in enumerate(pairs):
        mac = pair.get("mac_address") or port.mac_address
        if (mac, pair["ip_address"]) in seen:
            raise exc.DuplicateAddressPairInRequest(mac_address=mac, ip_address=pair["ip_address"])
        seen.add((mac, pair["ip_address"]))
        rows.append(AllowedAddressPair(port_id=port.id, mac_address=mac, ip_address=pair["ip_address"], position=position))
    if port.allowed_address_pairs:
        port.allowed_address_pairs = []
        session.flush()
    port.allowed_address_pairs = rows


def network_port_security(session: Session, net_id: str) -> bool:
    return session.scalar(select(Network.port_security_enabled).where(Network.id == net_id)) is not False


# -- what agents get --------------------------------------------------------------------------------


def _members_stmt() -> Any:
    group = bindparam("group_id")
    binding = SecurityGroupPortBinding
    fixed = (
        select(IPAllocation.port_id, IPAllocation.ip_address)
        .join(binding, binding.port_id == IPAllocation.port_id)
        .where(binding.security_group_id == group)
    )
    pairs = (
        select(AllowedAddressPair.port_id, AllowedAddressPair.ip_address)
        .join(binding, binding.port_id == AllowedAddressPair.port_id)
        .where(binding.security_group_id == group)
    )
    return union_all(fixed, pairs)


# Built once: every full payload reads it (one round trip for fixed IPs and pairs).
MEMBERS = _members_stmt()


def member_ports(session: Session, group_id: str) -> dict[str, list[str]]:
    """Each member port's addresses (fixed IPs and allowed-pair addresses, sorted) in the group (every host)."""
    ports: dict[str, set[str]] = {}
    for port_id, address in session.execute(MEMBERS, {"group_id": group_id}):
        ports.setdefault(port_id, set()).add(address)
    return {port_id: sorted(addresses) for port_id, addresses in sorted(ports.items())}


def members(session: Session, group_id: str) -> list[str]:
    """Fixed IPs and allowed-pair addresses of every port in the group (every host), sorted."""
    return sorted({a for addresses in member_ports(session, group_id).values() for a in addresses})


def channel_rule(rule: SecurityGroupRule) -> Body:
    return {
        "id": rule.id, "direction": rule.direction, "ethertype": rule.ethertype, "protocol": sga.normalized_protocol(rule.protocol),
        "port_range_min": rule.port_range_min, "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix, "remote_group_id": rule.remote_group_id,
    }  # fmt: skip


def group_payload(session: Session, group_id: str) -> Body | None:
    """A group as the agents' channel carries it (SG_CONTRACT.md): rules, members' addresses, and the same per member
    port (``ports``: what ``security_group_member`` events then change, one port at a time)."""
    group = session.get(SecurityGroup, group_id)
    if group is None:
        return None
    ports = member_ports(session, group.id)
    return {
        "id": group.id,
        "tenant_id": group.tenant_id,
        "rules": [channel_rule(r) for r in group.rules],
        "members": sorted({a for addresses in ports.values() for a in addresses}),
        "ports": ports,
    }


# Built once: asked for every member change (building and keying a statement costs more than running it).
REFERENCING = select(SecurityGroupRule.security_group_id).where(SecurityGroupRule.remote_group_id == bindparam("group_id")).distinct()


def watching_groups(session: Session, group_id: str) -> list[str]:
    """The group and the groups whose rules name it: a host with a port in any of them wants the group."""
    return sorted({group_id, *session.scalars(REFERENCING, {"group_id": group_id})})


# The distinct hosts of one group's bound ports, one (group, host) index probe per host (a loose index scan): a
# DISTINCT would read every bound member's index entry, and a default group with 1000 members on one host read
# 2000 (its own rules name it) for every change of the group's rules: 2 ms on SQLite where this takes two probes.
HOSTS_OF_GROUP = text(
    """
    WITH RECURSIVE hosts(host) AS (
        SELECT (SELECT b.host FROM securitygroupportbindings b
                WHERE b.security_group_id = :group_id AND b.host > '' ORDER BY b.host LIMIT 1)
        UNION ALL
        SELECT (SELECT b.host FROM securitygroupportbindings b
                WHERE b.security_group_id = :group_id AND b.host > hosts.host ORDER BY b.host LIMIT 1)
        FROM hosts WHERE hosts.host IS NOT NULL
    )
    SELECT host FROM hosts WHERE host IS NOT NULL
    """
)


def interested_hosts(session: Session, group_id: str) -> set[str]:
    """Hosts with a port in the group, or in a group whose rules name it as their remote group."""
    hosts: set[str] = set()
    conn = session.connection()  # (Core: these reads need none of the ORM's work; the caller's session is flushed)
    for group in watching_groups(session, group_id):
        hosts.update(conn.execute(HOSTS_OF_GROUP, {"group_id": group}).scalars())
    return hosts


# The groups a host does not want yet among one group and the groups its rules name, for a port joining the group on
# the host (the groups a host wants: SG_CONTRACT.md). Built once; (group, host) index probes, none for unbound ports.
NEWLY_WANTED = text(
    """
    SELECT g.id FROM securitygroups g
    WHERE (g.id = :group_id
           OR g.id IN (SELECT r.remote_group_id FROM securitygrouprules r WHERE r.security_group_id = :group_id))
      AND NOT EXISTS (SELECT 1 FROM securitygroupportbindings b
                      WHERE b.security_group_id = g.id AND b.host = :host AND b.port_id != :port_id)
      AND NOT EXISTS (SELECT 1 FROM securitygrouprules n
                      JOIN securitygroupportbindings b ON b.security_group_id = n.security_group_id
                      WHERE n.remote_group_id = g.id AND b.host = :host AND b.port_id != :port_id)
    """
)


def newly_wanted(session: Session, group_id: str, host: str, port_id: str) -> set[str]:
    """Of ``group_id`` and the groups its rules name, those ``host`` wants for no port other than ``port_id``: it was
    never told of them (or not since it stopped wanting them), so it gets them whole."""
    params = {"group_id": group_id, "host": host, "port_id": port_id}
    return {group for (group,) in _NEWLY_WANTED.rows(session.connection(), params)}


_NEWLY_WANTED = Prebuilt(NEWLY_WANTED)  # (a port create in a group runs it: on the driver's cursor, store/prebuilt.py)


def notify(session: Session, group_ids: Iterable[str], hosts: Iterable[str] | None = None) -> None:
    """``security_group_updated`` for each group to its interested hosts (and ``hosts``); nothing read if none.

    (The session autoflushes before the hosts' query: the change is seen.)"""
    for group_id in sorted(set(group_ids)):
        targets = interested_hosts(session, group_id) | set(hosts or ())
        if not targets:
            continue
        payload = group_payload(session, group_id)
        if payload is None:
            continue
        for host in sorted(targets):
            agent_events.record(session, host, SECURITY_GROUP_UPDATED, group_id, payload)


def _remote_groups(session: Session, group_ids: Iterable[str]) -> set[str]:
    ids = list(group_ids)
    if not ids:
        return set()
    stmt = select(SecurityGroupRule.remote_group_id).where(
        SecurityGroupRule.security_group_id.in_(ids), SecurityGroupRule.remote_group_id.is_not(None)
    )
    return {g for g in session.scalars(stmt) if g}


def _addresses(port: Body | None) -> list[str]:
    """A port's addresses as a member of its groups: fixed IPs and allowed-pair addresses, sorted, once each."""
    if port is None:
        return []
    found = {a["ip_address"] for a in port.get("fixed_ips", [])} | {p["ip_address"] for p in port.get("allowed_address_pairs", [])}
    return sorted(found)


def port_changed(session: Session, before: Body | None, after: Body | None) -> None:
    """A port's change as its groups' agents see it (agent_events.on_port_change).

    Each group it joined, left, or whose member it stays with other addresses: one ``security_group_member`` event
    (this port's addresses in the group; ``[]``: not a member) for every host agent (``EVERY_HOST``: an agent applies
    those of the groups it has and ignores the others, as Neutron's agents do with ``security_groups_member_updated``).
    Nothing is read for that: a port create in a group costs one more event row, however many hosts have the group.
    The port's host, for each group it now wants (the port's, or one their rules name) and had no other port for:
    the whole group."""
    old_groups = set((before or {}).get("security_groups") or ())
    new_groups = set((after or {}).get("security_groups") or ())
    if not old_groups and not new_groups:
        return
    port_id = (after or before or {})["id"]
    addresses = _addresses(after)
    deltas = dict.fromkeys(old_groups - new_groups, [])
    stayed = new_groups - old_groups if _addresses(before) == addresses else new_groups
    deltas.update(dict.fromkeys(stayed, addresses))
    old_host = (before or {}).get("binding:host_id") or ""
    new_host = (after or {}).get("binding:host_id") or ""
    gained = (new_groups if new_host != old_host else new_groups - old_groups) if new_host else set()
    whole: set[str] = set()
    for group_id in sorted(gained):
        whole |= newly_wanted(session, group_id, new_host, port_id)
    for group_id in sorted(deltas):
        payload = {"id": group_id, "port_id": port_id, "addresses": deltas[group_id]}
        agent_events.record(session, agent_events.EVERY_HOST, SECURITY_GROUP_MEMBER, group_id, payload)
    for group_id in sorted(whole):
        full = group_payload(session, group_id)
        if full is not None:
            agent_events.record(session, new_host, SECURITY_GROUP_UPDATED, group_id, full)


def ports_changed(session: Session, changes: Sequence[tuple[Body | None, Body | None]]) -> None:
    """``port_changed`` of many ports at once (a bulk create, its undo): each changed group told once, with its
    members as they now are, and each new host the groups of its new ports (agent_events.ports_change)."""
    changed: set[str] = set()
    new_hosts: dict[str, set[str]] = {}
    for before, after in changes:
        old_groups = set((before or {}).get("security_groups") or ())
        new_groups = set((after or {}).get("security_groups") or ())
        if not old_groups and not new_groups:
            continue
        changed |= old_groups ^ new_groups
        if _addresses(before) != _addresses(after):
            changed |= old_groups | new_groups
        new_host = (after or {}).get("binding:host_id") or ""
        if new_host and new_host != ((before or {}).get("binding:host_id") or "") and new_groups:
            new_hosts.setdefault(new_host, set()).update(new_groups)
    notify(session, changed)
    for host, groups in sorted(new_hosts.items()):
        # As port_changed: what the host needs besides what ``notify`` just told every interested host.
        for group_id in sorted((groups | _remote_groups(session, groups)) - changed):
            payload = group_payload(session, group_id)
            if payload is not None:
                agent_events.record(session, host, SECURITY_GROUP_UPDATED, group_id, payload)


def host_groups(session: Session, host: str, ports: list[Body]) -> Body:
    """The channel list's ``security_groups`` for ``host``: its ports' groups and the groups their rules name."""
    own = {g for p in ports for g in p.get("security_groups") or ()}
    wanted = own | _remote_groups(session, own)
    groups = [group_payload(session, g) for g in sorted(wanted)]
    return {"security_groups": [g for g in groups if g is not None]}


def wanted_groups(session: Session, host: str) -> set[str]:
    """The groups ``host`` wants now (its bound ports' groups and the groups their rules name): a watch's start."""
    own = set(
        session.scalars(
            select(SecurityGroupPortBinding.security_group_id).join(Port, Port.id == SecurityGroupPortBinding.port_id)
            .where(Port.binding_host_id == host).distinct()
        )
    )  # fmt: skip
    return own | _remote_groups(session, own)


def groups_page(session: Session, after_id: str | None, limit: int) -> list[Body]:
    """Every group (with its rules) by id, ``limit`` after ``after_id``: for the topology sync."""
    stmt = select(SecurityGroup).options(selectinload(SecurityGroup.rules)).order_by(SecurityGroup.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(SecurityGroup.id > after_id)
    return [security_group_dict(g) for g in session.scalars(stmt)]
