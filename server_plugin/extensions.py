"""The extension registry: the core plugin and the extensions composed with it, and the API table they make.

An ``Extension`` is a handler object (its methods are the Quantum plugin
methods, ``create_<singular>``, ``get_<plural>``, ...), the v2.0 collections it
serves, the ``/v2.0/extensions`` entries it adds, and optionally its rules for
the core's port operations (ops/core.py ``PortRules``). ``Extensions`` is built
in ``makeService`` from the core and L3; the v2.0 API reads its tables from it.

Adding a resource type, e.g. security groups (/v2.0/security-groups and
/v2.0/security-group-rules, the port attributes ``security_groups``,
``port_security_enabled`` and ``allowed_address_pairs``, mirrored to Big
Switch as ``POST /securitygroups``):

1. ``server_plugin/store/migrations/versions/000N_security_groups.py`` and the
   models in ``store/models.py``: the tables and the port bindings.
2. ``server_plugin/store/security_groups.py``: the units of work (visible_*,
   create/update/check_delete/delete, the undo helpers).
3. ``server_plugin/ops/security_groups.py``: one Operation per mutation
   (CreateSecurityGroup, ..., each returning an Outcome with reply, undo,
   events and changes) and ``SecurityGroupPortRules(PortRules)``: the port
   attributes checked in ``check_update``/``after_update``, the default group
   bound on create, the port's groups in ``delete_changes``.
4. ``server_plugin/controller/sg_mapping.py``: ``security_group_calls(profile,
   before, after)`` -> ``POST/PUT/DELETE /securitygroups[/{id}]`` (pure).
5. ``server_plugin/sg_plugin.py``: ``SecurityGroupPlugin(core)`` (the handler)
   and ``sg_extension(plugin)`` -> Extension(collections for
   ``security-groups``/``security-group-rules`` with attributes in
   ``attributes.RESOURCES``, the ``security-group`` descriptor, the port rules).
6. ``server_tap.makeService``: register it; tests/test_sg_api.py and
   tests/test_sg_controller.py. Nothing in the mirror, v2.py or the core changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from server_plugin import exceptions as exc
from server_plugin.attributes import Attribute


@attrs.frozen
class Collection:
    """One v2.0 collection: its names, attributes, 404 and member actions (``PUT /{plural}/{id}/{action}``)."""

    plural: str
    singular: str
    attributes: dict[str, Attribute]
    not_found: type[exc.NotFound]
    id_key: str = "id"  # the NotFound's keyword for a missing marker
    actions: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The plural in JSON bodies and method names (``security_groups`` for the path ``security-groups``)."""
        return self.plural.replace("-", "_")


@attrs.frozen
class Extension:
    """What one extension adds: the handler behind its collections, its descriptors, its port rules."""

    name: str
    handler: Any
    collections: tuple[Collection, ...] = ()
    descriptors: tuple[dict[str, Any], ...] = ()
    port_rules: Any = None  # an ops.core.PortRules, added to the core's port operations
    network_rules: Any = None  # an ops.core.NetworkRules, added to the core's network operations
    # attributes added to collections served by others ({plural: {name: Attribute}}, e.g. ports' security_groups)
    attributes: dict[str, dict[str, Attribute]] = attrs.field(factory=dict)
    # (session, host, ports) -> extra keys of the agent channel's list response for ``host`` (read with its ports)
    host_view: Any = None
    # (session, host) -> an object whose ``admits(host, kind, object_id)`` says which events for every host
    # (agent_events.EVERY_HOST) a watch of ``host`` carries; it sees each of the watch's events in order
    host_interest: Any = None


@attrs.frozen
class Served:
    """A collection and the handler that serves it."""

    collection: Collection
    handler: Any


class Extensions:
    """The core and the extensions registered with it, in order; the v2.0 API's collection and extension tables."""

    def __init__(self, core: Any, extensions: Iterable[Extension] = ()) -> None:
        self.core = core
        self.collections: dict[str, Served] = {}
        self.descriptors: dict[str, dict[str, Any]] = {}
        for extension in extensions:
            self.register(extension)

    def register(self, extension: Extension) -> None:
        for collection in extension.collections:
            if collection.plural in self.collections:
                raise ValueError(f"collection {collection.plural} is served twice")
            self.collections[collection.plural] = Served(collection, extension.handler)
        for descriptor in extension.descriptors:
            self.descriptors[descriptor["alias"]] = descriptor
        for plural, extra in extension.attributes.items():
            served = self.collections[plural]
            widened = attrs.evolve(served.collection, attributes={**served.collection.attributes, **extra})
            self.collections[plural] = Served(widened, served.handler)
        if extension.port_rules is not None:
            self.core.port_rules.append(extension.port_rules)
        if extension.network_rules is not None:
            self.core.network_rules.append(extension.network_rules)
        if extension.host_view is not None:
            self.core.host_views.append(extension.host_view)
        if extension.host_interest is not None:
            self.core.host_interests.append(extension.host_interest)

    @property
    def aliases(self) -> list[str]:
        return list(self.descriptors)
