"""Resource attribute maps (as Quantum's RESOURCE_ATTRIBUTE_MAP).

They say, per attribute, whether a client may set it on POST or PUT, its
default, how to validate it, and whether it may be filtered or sorted on.
The API layer uses them to turn a request body into clean plugin input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from server_plugin import validators as v

REQUIRED = object()
GENERATED = object()  # the plugin fills it in when the client gives none


@attrs.frozen
class Attribute:
    allow_post: bool = False
    allow_put: bool = False
    default: Any = GENERATED
    validate: Callable[[Any], Any] | None = None
    is_visible: bool = True
    filter_convert: Callable[[str], Any] | None = None  # query-string value -> column value
    sortable: bool = False
    admin_only_put: bool = False


def _str_filter(value: str) -> str:
    return value


def _bool_filter(value: str) -> bool:
    return v.boolean(value)


def _int_filter(value: str) -> int:
    number = int(value)
    if not -(2**31) <= number < 2**31:
        # Bigger than any integer column holds; the databases would fail on it.
        raise ValueError(f"'{value}' is out of range")
    return number


NAME = Attribute(allow_post=True, allow_put=True, default="", validate=v.string(), filter_convert=_str_filter, sortable=True)
DESCRIPTION = Attribute(allow_post=True, allow_put=True, default="", validate=v.string(), filter_convert=_str_filter, sortable=True)
ID = Attribute(filter_convert=_str_filter, sortable=True)
TENANT = Attribute(allow_post=True, default=REQUIRED, validate=v.tenant_id, filter_convert=_str_filter, sortable=True)
PROJECT = Attribute(allow_post=True, default=REQUIRED, validate=v.tenant_id, filter_convert=_str_filter, sortable=True)
ADMIN_STATE = Attribute(allow_post=True, allow_put=True, default=True, validate=v.boolean, filter_convert=_bool_filter, sortable=True)
STATUS = Attribute(filter_convert=_str_filter, sortable=True)
TIMESTAMP = Attribute(sortable=True)

NETWORKS: dict[str, Attribute] = {
    "id": ID,
    "name": NAME,
    "description": DESCRIPTION,
    "admin_state_up": ADMIN_STATE,
    "status": STATUS,
    "subnets": Attribute(default=[]),
    "shared": Attribute(allow_post=True, allow_put=True, default=False, validate=v.boolean, filter_convert=_bool_filter, sortable=True),
    "router:external": Attribute(allow_post=True, allow_put=True, default=False, validate=v.boolean, filter_convert=_bool_filter),
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

SUBNETS: dict[str, Attribute] = {
    "id": ID,
    "name": NAME,
    "description": DESCRIPTION,
    "network_id": Attribute(allow_post=True, default=REQUIRED, validate=v.uuid_, filter_convert=_str_filter, sortable=True),
    "ip_version": Attribute(allow_post=True, default=REQUIRED, validate=v.integer_in(4, 6), filter_convert=_int_filter, sortable=True),
    "cidr": Attribute(allow_post=True, default=REQUIRED, validate=v.cidr, filter_convert=_str_filter, sortable=True),
    "gateway_ip": Attribute(
        allow_post=True, allow_put=True, default=GENERATED, validate=v.ip_address_or_none, filter_convert=_str_filter, sortable=True
    ),
    "allocation_pools": Attribute(
        allow_post=True, allow_put=True, default=GENERATED, validate=v.list_of(v.allocation_pool, "allocation pool")
    ),
    "dns_nameservers": Attribute(allow_post=True, allow_put=True, default=[], validate=v.list_of(v.nameserver, "nameserver")),
    "host_routes": Attribute(allow_post=True, allow_put=True, default=[], validate=v.list_of(v.host_route, "host route")),
    "enable_dhcp": Attribute(allow_post=True, allow_put=True, default=True, validate=v.boolean, filter_convert=_bool_filter, sortable=True),
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

PORTS: dict[str, Attribute] = {
    "id": ID,
    "name": NAME,
    "description": DESCRIPTION,
    "network_id": Attribute(allow_post=True, default=REQUIRED, validate=v.uuid_, filter_convert=_str_filter, sortable=True),
    "admin_state_up": ADMIN_STATE,
    "mac_address": Attribute(
        allow_post=True,
        allow_put=True,
        admin_only_put=True,
        default=GENERATED,
        validate=v.mac_address,
        filter_convert=lambda s: v.mac_address(s),
        sortable=True,
    ),
    "fixed_ips": Attribute(allow_post=True, allow_put=True, default=GENERATED, validate=v.fixed_ips),
    "device_id": Attribute(allow_post=True, allow_put=True, default="", validate=v.string(), filter_convert=_str_filter, sortable=True),
    "device_owner": Attribute(allow_post=True, allow_put=True, default="", validate=v.string(), filter_convert=_str_filter, sortable=True),
    "status": STATUS,
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "binding:host_id": Attribute(
        allow_post=True, allow_put=True, default="", validate=v.host_id, filter_convert=_str_filter, sortable=True
    ),
    "binding:profile": Attribute(allow_post=True, allow_put=True, default={}, validate=v.dict_or_empty),
    "binding:vif_type": Attribute(),
    "binding:vif_details": Attribute(),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

# The l3 extension (quantum/extensions/l3.py; Neutron adds enable_snat and the gateway's external_fixed_ips).
ROUTERS: dict[str, Attribute] = {
    "id": ID,
    "name": NAME,
    "admin_state_up": ADMIN_STATE,
    "status": STATUS,
    "external_gateway_info": Attribute(allow_post=True, allow_put=True, default=None, validate=v.external_gateway_info),
    "tenant_id": TENANT,
    "project_id": PROJECT,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}

FLOATINGIPS: dict[str, Attribute] = {
    "id": ID,
    "floating_ip_address": Attribute(allow_post=True, default=GENERATED, validate=v.ip_address, filter_convert=_str_filter, sortable=True),
    "floating_network_id": Attribute(allow_post=True, default=REQUIRED, validate=v.uuid_, filter_convert=_str_filter, sortable=True),
    "router_id": Attribute(filter_convert=_str_filter, sortable=True),
    "port_id": Attribute(allow_post=True, allow_put=True, default=None, validate=v.uuid_or_none, filter_convert=_str_filter, sortable=True),
    "fixed_ip_address": Attribute(
        allow_post=True, allow_put=True, default=None, validate=v.ip_address_or_none, filter_convert=_str_filter, sortable=True
    ),
    "status": Attribute(),
    "tenant_id": TENANT,
    "project_id": PROJECT,
}

RESOURCES: dict[str, tuple[str, dict[str, Attribute]]] = {
    "networks": ("network", NETWORKS),
    "subnets": ("subnet", SUBNETS),
    "ports": ("port", PORTS),
    "routers": ("router", ROUTERS),
    "floatingips": ("floatingip", FLOATINGIPS),
}


def defaults_of(attributes: dict[str, Attribute]) -> dict[str, Any]:
    """The attributes' fixed defaults (a value equal to its default counts as not set, for the policy)."""
    return {name: spec.default for name, spec in attributes.items() if spec.default is not REQUIRED and spec.default is not GENERATED}


# Columns behind attribute names that do not match (filters and sorts).
COLUMN_NAMES = {
    "binding:host_id": "binding_host_id",
    "project_id": "tenant_id",
    "router:external": "router_external",
    "port_id": "fixed_port_id",  # floating IPs
}
