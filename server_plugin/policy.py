"""Who may set and who may see each attribute: Neutron's default policy, as one table.

Every v2 request body goes through ``enforce`` and every v2 reply through
``view``; list filters and sort keys go through ``can_see``. The rules are
those of Neutron's ``neutron/conf/policies/{network,port,router,floatingip}.py``
(and Grizzly's policy.json before them):

* ``binding:host_id`` and ``binding:profile``: admin only, to set and to see;
  ``binding:vif_type`` and ``binding:vif_details``: admin only to see (the
  agent reads them through its own channel, not through this API);
* ``shared``, ``router:external``: admin only to set;
* ``mac_address``: on create admin or the network's owner, on update admin only;
* ``fixed_ips`` with an ``ip_address``: admin or the network's owner;
* ``device_owner`` starting with ``network:``: admin or the network's owner
  (infrastructure ports on a shared network are its owner's business);
* ``floating_ip_address`` on create, ``external_gateway_info``'s
  ``enable_snat`` and ``external_fixed_ips``: admin only.

A denial is 403 PolicyNotAuthorized, "(rule:create_port:binding:host_id) is
disallowed by policy". Rules that need the network's owner are checked where
the network is at hand (the store's unit of work, in the same transaction);
the others already when the body is parsed. Updates are checked after the
object was found visible, so that an invisible object stays a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext

NETWORK_DEVICE_PREFIX = "network:"


class PolicyNotAuthorized(exc.PolicyNotAuthorized):
    """Neutron's wording for an attribute rule that refuses."""

    message = "(rule:%(action)s) is disallowed by policy"

    @property
    def type(self) -> str:
        return "PolicyNotAuthorized"


@attrs.frozen
class Target:
    """What a rule may look at besides the caller: the owner of the object's network."""

    network_tenant_id: str | None = None


@attrs.frozen
class Rule:
    name: str
    allows: Callable[[RequestContext, Any, Target | None], bool]
    needs_network: bool = False  # only decidable with a Target


def _network_owner(ctx: RequestContext, target: Target | None) -> bool:
    return target is not None and target.network_tenant_id is not None and target.network_tenant_id == ctx.tenant_id


ANY = Rule("any", lambda ctx, value, target: True)
ADMIN = Rule("admin_only", lambda ctx, value, target: ctx.is_admin)
ADMIN_OR_NETWORK_OWNER = Rule(
    "admin_or_network_owner", lambda ctx, value, target: ctx.is_admin or _network_owner(ctx, target), needs_network=True
)
NETWORK_DEVICE = Rule(
    "not network device or admin_or_network_owner",
    lambda ctx, value, target: (
        not (isinstance(value, str) and value.startswith(NETWORK_DEVICE_PREFIX)) or ctx.is_admin or _network_owner(ctx, target)
    ),
    needs_network=True,
)


@attrs.frozen
class AttributePolicy:
    create: Rule = ANY
    update: Rule = ANY
    see: Rule = ANY
    # keys inside the value (a dict, or a list of dicts) with their own set rule
    sub: dict[str, Rule] = attrs.field(factory=dict)


ADMIN_ONLY = AttributePolicy(create=ADMIN, update=ADMIN, see=ADMIN)
ADMIN_SETS = AttributePolicy(create=ADMIN, update=ADMIN)
ADMIN_SEES = AttributePolicy(see=ADMIN)

POLICIES: dict[str, dict[str, AttributePolicy]] = {
    "network": {
        "shared": ADMIN_SETS,
        "router:external": ADMIN_SETS,
    },
    "subnet": {},
    "port": {
        "mac_address": AttributePolicy(create=ADMIN_OR_NETWORK_OWNER, update=ADMIN),
        "fixed_ips": AttributePolicy(sub={"ip_address": ADMIN_OR_NETWORK_OWNER}),
        "device_owner": AttributePolicy(create=NETWORK_DEVICE, update=NETWORK_DEVICE),
        "binding:host_id": ADMIN_ONLY,
        "binding:profile": ADMIN_ONLY,
        "binding:vif_type": ADMIN_SEES,
        "binding:vif_details": ADMIN_SEES,
        # the port-security and allowed-address-pairs extensions (Neutron: admin_or_network_owner)
        "port_security_enabled": AttributePolicy(create=ADMIN_OR_NETWORK_OWNER, update=ADMIN_OR_NETWORK_OWNER),
        "allowed_address_pairs": AttributePolicy(create=ADMIN_OR_NETWORK_OWNER, update=ADMIN_OR_NETWORK_OWNER),
    },
    "router": {
        "external_gateway_info": AttributePolicy(sub={"enable_snat": ADMIN, "external_fixed_ips": ADMIN}),
    },
    "floatingip": {
        "floating_ip_address": AttributePolicy(create=ADMIN),
    },
}

_DEFAULT = AttributePolicy()


def attribute_policy(resource: str, name: str) -> AttributePolicy:
    return POLICIES.get(resource, {}).get(name, _DEFAULT)


def _sub_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value)
    if isinstance(value, list):
        return {k for entry in value if isinstance(entry, dict) for k in entry}
    return set()


def enforce(
    ctx: RequestContext,
    action: str,
    resource: str,
    values: dict[str, Any],
    target: Target | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """403 unless ``ctx`` may set every attribute in ``values`` (``action``: create or update).

    Without a ``target`` the rules that need the network's owner are left for
    the call that has one. On create, a value equal to the attribute's
    ``defaults`` entry counts as not set (as Neutron's _is_attribute_explicitly_set).
    """
    for name, value in values.items():
        policy = attribute_policy(resource, name)
        if defaults is not None and name in defaults and defaults[name] == value:
            continue
        checks = [(f"{action}_{resource}:{name}", getattr(policy, action), value)]
        present = _sub_keys(value)
        checks += [(f"{action}_{resource}:{name}:{key}", rule, value) for key, rule in policy.sub.items() if key in present]
        for rule_action, rule, checked in checks:
            if rule.needs_network and target is None:
                continue
            if not rule.allows(ctx, checked, target):
                raise PolicyNotAuthorized(action=rule_action)


def can_see(ctx: RequestContext, resource: str, name: str) -> bool:
    return attribute_policy(resource, name).see.allows(ctx, None, None)


def view(ctx: RequestContext, resource: str, item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without the attributes ``ctx`` may not see."""
    if ctx.is_admin:
        return item
    return {k: v for k, v in item.items() if can_see(ctx, resource, k)}


class _Shown(dict[str, bool]):
    """Attribute name -> whether a list's items keep it, decided at the first item that has it."""

    def __init__(self, ctx: RequestContext, resource: str, fields: list[str] | None) -> None:
        super().__init__()
        self.ctx, self.resource, self.fields = ctx, resource, set(fields) if fields else None

    def __missing__(self, name: str) -> bool:
        shown = self[name] = (self.fields is None or name in self.fields) and (self.ctx.is_admin or can_see(self.ctx, self.resource, name))
        return shown


def list_view(ctx: RequestContext, resource: str, fields: list[str] | None) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """What ``view`` and then ``?fields=`` do to each item of a list, for a whole list: what they decide per attribute
    name is decided once per list, not once per item (a 10,000-port list has 220,000 attributes); an admin's list
    without ``fields`` is kept as it is."""
    if ctx.is_admin and not fields:
        return _unchanged
    shown = _Shown(ctx, resource, fields)

    def viewed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out, keys, kept = [], None, []
        for item in items:
            if item.keys() != keys:  # the first item, or one of another shape (a list's items mostly share theirs)
                keys, kept = item.keys(), [k for k in item if shown[k]]
            out.append({k: item[k] for k in kept})
        return out

    return viewed


def _unchanged(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items
