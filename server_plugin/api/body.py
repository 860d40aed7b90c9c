"""Turning a v2.0 request body into validated plugin input, as Quantum's base controller does."""

from __future__ import annotations

from typing import Any

from server_plugin import exceptions as exc
from server_plugin import policy
from server_plugin.attributes import GENERATED, REQUIRED, Attribute, defaults_of
from server_plugin.context import RequestContext
from server_plugin.validators import ValidationError

NO_KEYSTONE_TENANT = "Running without keystone AuthN requires that tenant_id is specified"


def unwrap(body: Any, singular: str, plural: str, allow_bulk: bool, is_create: bool) -> tuple[list[Any], bool]:
    """The item(s) of a body and whether it was a bulk request."""
    if not isinstance(body, dict):
        raise exc.HTTPBadRequest(detail="Body contains invalid data")
    if is_create and plural in body and singular not in body:
        items = body[plural]
        if not allow_bulk:
            raise exc.HTTPBadRequest(detail="Bulk operation not supported")
        if not isinstance(items, list):
            raise exc.HTTPBadRequest(detail=f"Invalid format: '{plural}' must be a list")
        if not items:
            raise exc.HTTPBadRequest(detail="Resources required")
        return [_unwrap_item(i, singular, wrapped=True) for i in items], True
    if singular not in body:
        raise exc.HTTPBadRequest(detail=f"Unable to find '{singular}' in request body")
    if len(body) > 1:
        extra = ", ".join(sorted(k for k in body if k != singular))
        raise exc.HTTPBadRequest(detail=f"Unrecognized attribute(s) '{extra}'")
    return [_unwrap_item(body[singular], singular, wrapped=False)], False


def _unwrap_item(item: Any, singular: str, wrapped: bool) -> dict[str, Any]:
    if wrapped and isinstance(item, dict) and list(item) == [singular] and isinstance(item[singular], dict):
        item = item[singular]
    if not isinstance(item, dict):
        raise exc.HTTPBadRequest(detail=f"Invalid format: '{singular}' must be an object")
    return item


def _validate(name: str, spec: Attribute, value: Any) -> Any:
    if spec.validate is None:
        return value
    try:
        return spec.validate(value)
    except ValidationError as e:
        raise exc.InvalidInput(error_message=f"Invalid input for {name}. Reason: {e}") from None


def _check_names(item: dict[str, Any], attributes: dict[str, Attribute]) -> None:
    if attributes.keys() >= item.keys():
        return
    unknown = sorted(k for k in item if k not in attributes)
    raise exc.HTTPBadRequest(detail=f"Unrecognized attribute(s) '{', '.join(unknown)}'")


class _CreatePlan:
    """What ``prepare_create`` reads of one collection's attributes, worked out once per attribute table."""

    def __init__(self, attributes: dict[str, Attribute]) -> None:
        self.attributes = attributes
        # the attributes a create sets (the tenant apart), in the table's order
        self.postable = tuple((n, spec) for n, spec in attributes.items() if spec.allow_post and n not in ("tenant_id", "project_id"))
        self.defaults = defaults_of(attributes)


_PLANS: dict[int, _CreatePlan] = {}


def _create_plan(attributes: dict[str, Attribute]) -> _CreatePlan:
    plan = _PLANS.get(id(attributes))
    if plan is None or plan.attributes is not attributes:
        plan = _PLANS[id(attributes)] = _CreatePlan(attributes)  # the tables are made at start: a handful
    return plan


def prepare_create(item: dict[str, Any], attributes: dict[str, Attribute], ctx: RequestContext, resource: str) -> dict[str, Any]:
    _check_names(item, attributes)
    for name in item:
        if not attributes[name].allow_post:
            raise exc.HTTPBadRequest(detail=f"Attribute '{name}' not allowed in POST")
    plan = _create_plan(attributes)
    values: dict[str, Any] = {}
    for name, spec in plan.postable:
        if name in item:
            values[name] = _validate(name, spec, item[name])
        elif spec.default is REQUIRED:
            raise exc.HTTPBadRequest(detail=f"Failed to parse request. Required attribute '{name}' not specified")
        elif spec.default is not GENERATED:
            default = spec.default
            values[name] = list(default) if isinstance(default, list) else (dict(default) if isinstance(default, dict) else default)
    values["tenant_id"] = _tenant_for_create(item, attributes, ctx, resource)
    given = {name: values[name] for name in item if name in values}
    # The rules that need the network's owner run again in the store, where the network is known.
    policy.enforce(ctx, "create", resource, given, defaults=plan.defaults)
    return values


def _tenant_for_create(item: dict[str, Any], attributes: dict[str, Attribute], ctx: RequestContext, resource: str) -> str:
    given = {}
    for key in ("tenant_id", "project_id"):
        if key in item:
            given[key] = _validate(key, attributes[key], item[key])
    if len(set(given.values())) > 1:
        raise exc.HTTPBadRequest(detail="'project_id' and 'tenant_id' do not match")
    tenant = next(iter(given.values()), None) or ctx.tenant_id
    if not tenant:
        raise exc.HTTPBadRequest(detail=NO_KEYSTONE_TENANT)
    if "tenant_id" not in given:
        # The request's own tenant (a header or token) must fit the column too.
        tenant = _validate("tenant_id", attributes["tenant_id"], tenant)
    if not ctx.is_admin and tenant != ctx.tenant_id:
        raise exc.PolicyNotAuthorized(action=f"create_{resource}")
    return tenant


def prepare_update(item: dict[str, Any], attributes: dict[str, Attribute], ctx: RequestContext) -> dict[str, Any]:
    _check_names(item, attributes)
    values: dict[str, Any] = {}
    for name, value in item.items():
        spec = attributes[name]
        if not spec.allow_put:
            raise exc.HTTPBadRequest(detail=f"Cannot update read-only attribute {name}")
        values[name] = _validate(name, spec, value)
    return values
