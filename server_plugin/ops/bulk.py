"""A bulk port create (``POST /v2.0/ports`` with ``{"ports": [...]}``) as one operation.

Neutron's bulk create is all or nothing. The single create's path, once per
port with the created ones deleted after a refusal, left a trace of each
(created and deleted events for agents, DHCP and Nova) and cost one
transaction per port. Here the whole batch is one operation run by the mirror
like any other: one transaction checks every port, picks the addresses and
writes the ports, their bindings, the agents' events and one journal entry per
port; then the controller calls go out, each port's in order, several ports at
once (``independent_changes``); if the controllers refuse, the undo removes
every port in one transaction and tells the agents.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import partial

import attrs
from sqlalchemy.orm import Session

from server_plugin.context import RequestContext
from server_plugin.controller import mapping
from server_plugin.ops.base import Body, Delta, Operation, Outcome, PortsEvent, Profile, keys
from server_plugin.ops.core import PortRules
from server_plugin.store import bulk_ports, port_filter
from server_plugin.store.ports import NewPort
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import port_dict


@attrs.frozen
class CreatePorts(Operation):
    """Ports created together, each ``items`` entry as ``CreatePort``'s ``values`` (with its ``id``); the reply is their list."""

    kind = "port"
    op = "create"
    independent_changes = True
    ctx: RequestContext
    items: tuple[Body, ...]
    settings: CoreSettings
    rules: Sequence[PortRules] = ()

    @property
    def object_id(self) -> str:
        return self.items[0]["id"]

    @property
    def journal_ids(self) -> Sequence[str]:
        return [item["id"] for item in self.items]

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [("port", item["id"]) for item in self.items]

    @property
    def shared(self) -> Iterable[Hashable]:
        return keys("network", *sorted({item.get("network_id") or "" for item in self.items}))

    def apply(self, session: Session) -> Outcome:
        def before_insert(values: Body, row: NewPort) -> None:
            for rule in self.rules:
                rule.before_insert(session, self.ctx, values, row)

        rows = bulk_ports.create_port_rows(session, self.ctx, self.items, self.settings, before_insert)
        ports = [port_dict(row) for row in rows]
        for values, port, row in zip(self.items, ports, rows, strict=True):
            for rule in self.rules:
                rule.after_create(session, self.ctx, values, port, row)
        port_filter.apply(session, ports)
        owners = {row.network_id: row.network.tenant_id for row in rows}

        def changes(profile: Profile) -> Sequence[Delta]:
            return [Delta(mapping.port_calls, None, dict(port, network_tenant_id=owners[port["network_id"]])) for port in ports]

        return Outcome(
            reply=ports,
            undo=partial(bulk_ports.purge_ports, port_ids=[port["id"] for port in ports]),
            events=[PortsEvent(tuple((None, port) for port in ports))],
            changes=changes,
        )

    def describe(self) -> str:
        return f"{self.op} {len(self.items)} {self.kind}s {self.object_id}..."
