"""Units of work for the v1 (2011) plugin interface: its reads and its checks.

v1 sees the store through a narrower lens than v2: a tenant owns networks, a
network owns ports, and a port's "attachment" (the VIF id) is its device_id,
which is also what the controller protocol calls the attachment id. These
units answer v1's questions in one transaction each (a tenant's networks with
their ports for the list filters, "is this VIF already on another port of the
network?"). The changes themselves go through the v2 plugin, so whatever it
mirrors to controllers and agents sees v1 changes too.

Tenancy is strict here, stricter than v2's: a network belongs to the tenant
in the v1 URL or it does not exist (shared networks of other tenants are
NetworkNotFound), and every port of such a network is visible through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.store import access
from server_plugin.store.models import Network, Port
from server_plugin.store.settings import AUTO_DELETE_PORT_OWNERS

View = dict[str, Any]

PORT_STATES = ("ACTIVE", "DOWN")
NETWORK_FILTERS = ("name", "op-status", "port-op-status", "port-state", "has-attachment", "attachment", "port")
_NETWORK_FILTERS_ON_PORTS = NETWORK_FILTERS[2:]
PORT_FILTERS = ("state", "op-status", "has-attachment", "attachment")


# -- mapping v2 columns to v1 words -------------------------------------------


def network_op_status(admin_state_up: bool) -> str:
    return "UP" if admin_state_up else "DOWN"


def port_state(admin_state_up: bool) -> str:
    return "ACTIVE" if admin_state_up else "DOWN"


def port_op_status(status: str) -> str:
    return "UP" if status == "ACTIVE" else "DOWN"


def checked_state(value: Any) -> str:
    """A v1 port state, upper-cased, or StateInvalid (only ACTIVE and DOWN exist)."""
    if isinstance(value, str) and value.upper() in PORT_STATES:
        return value.upper()
    raise exc.StateInvalid(port_state=value)


def network_view(net: Network) -> View:
    return {"net-id": net.id, "net-name": net.name, "net-op-status": network_op_status(net.admin_state_up)}


def port_view(port: Port) -> View:
    return {
        "port-id": port.id,
        "net-id": port.network_id,
        "attachment": port.device_id or None,
        "port-state": port_state(port.admin_state_up),
        "port-op-status": port_op_status(port.status),
    }


# -- access ---------------------------------------------------------------


def tenant_network(session: Session, tenant_id: str, net_id: str) -> Network:
    """The network if ``tenant_id`` owns it, else NetworkNotFound (found as that tenant would be: store.access)."""
    net = access.find(session, RequestContext(tenant_id=tenant_id), Network, net_id)
    if net is None or net.tenant_id != tenant_id:  # visible (shared, external) is not enough in v1
        raise exc.NetworkNotFound(net_id=net_id)
    return net


def network_port(session: Session, tenant_id: str, net_id: str, port_id: str) -> Port:
    """The port if it is on the tenant's network, else NetworkNotFound or PortNotFound."""
    net = tenant_network(session, tenant_id, net_id)
    # On its own network the tenant sees every port (store.access); one of another network is not here.
    port = access.find(session, RequestContext(tenant_id=tenant_id), Port, port_id)
    if port is None or port.network_id != net.id:
        raise exc.PortNotFoundOnNetwork(port_id=port_id, net_id=net_id)
    return port


def _ports_by_network(session: Session, net_ids: list[str]) -> dict[str, list[Port]]:
    grouped: dict[str, list[Port]] = {n: [] for n in net_ids}
    if net_ids:
        stmt = select(Port).where(Port.network_id.in_(net_ids)).order_by(Port.created_at, Port.id)
        for port in session.scalars(stmt):
            grouped[port.network_id].append(port)
    return grouped


# -- filters (Essex quantum/api/views/filters.py; unknown names are ignored) ---


def _wants_attachment(value: str) -> bool:
    return value.lower() == "true"


def port_matches(view: View, filters: Mapping[str, str]) -> bool:
    checks = {
        "state": lambda v: view["port-state"] == v,
        "op-status": lambda v: view["port-op-status"] == v,
        "has-attachment": lambda v: _wants_attachment(v) == (view["attachment"] is not None),
        "attachment": lambda v: view["attachment"] == v,
    }
    return all(checks[k](v) for k, v in filters.items() if k in checks)


def network_matches(view: View, ports: list[View], filters: Mapping[str, str]) -> bool:
    checks = {
        "name": lambda v: view["net-name"] == v,
        "op-status": lambda v: view["net-op-status"] == v,
        "port-op-status": lambda v: any(p["port-op-status"] == v for p in ports),
        "port-state": lambda v: any(p["port-state"] == v for p in ports),
        "has-attachment": lambda v: _wants_attachment(v) == any(p["attachment"] is not None for p in ports),
        "attachment": lambda v: any(p["attachment"] == v for p in ports),
        "port": lambda v: any(p["port-id"] == v for p in ports),
    }
    return all(checks[k](v) for k, v in filters.items() if k in checks)


# -- networks --------------------------------------------------------------


def list_networks(session: Session, tenant_id: str, filters: Mapping[str, str]) -> list[View]:
    """The tenant's networks that pass every filter, by creation time (to the second), then id."""
    stmt = select(Network).where(Network.tenant_id == tenant_id).order_by(Network.created_at, Network.id)
    nets = list(session.scalars(stmt))
    ports: dict[str, list[Port]] = {}
    if any(k in filters for k in _NETWORK_FILTERS_ON_PORTS):
        ports = _ports_by_network(session, [n.id for n in nets])
    views = []
    for net in nets:
        view = network_view(net)
        if network_matches(view, [port_view(p) for p in ports.get(net.id, [])], filters):
            views.append(view)
    return views


def network_summary(session: Session, tenant_id: str, net_id: str) -> View:
    return network_view(tenant_network(session, tenant_id, net_id))


def network_details(session: Session, tenant_id: str, net_id: str) -> View:
    """The network with the VIF ids plugged into its ports."""
    net = tenant_network(session, tenant_id, net_id)
    view = network_view(net)
    view["net-ifaces"] = [p.device_id for p in _ports_by_network(session, [net.id])[net.id] if p.device_id]
    return view


def ports_to_delete(session: Session, tenant_id: str, net_id: str) -> list[str]:
    """The ports that deleting the network takes with it; NetworkInUse if one is plugged.

    Ports that v2 deletes with their network (DHCP) neither block nor are listed.
    """
    net = tenant_network(session, tenant_id, net_id)
    ports = [p for p in _ports_by_network(session, [net.id])[net.id] if p.device_owner not in AUTO_DELETE_PORT_OWNERS]
    if any(p.device_id for p in ports):
        raise exc.NetworkInUse(net_id=net_id)
    return [p.id for p in ports]


# -- ports -----------------------------------------------------------------


def list_ports(session: Session, tenant_id: str, net_id: str, filters: Mapping[str, str]) -> list[View]:
    net = tenant_network(session, tenant_id, net_id)
    views = [port_view(p) for p in _ports_by_network(session, [net.id])[net.id]]
    return [v for v in views if port_matches(v, filters)]


def port_details(session: Session, tenant_id: str, net_id: str, port_id: str) -> View:
    return port_view(network_port(session, tenant_id, net_id, port_id))


def check_plug(session: Session, tenant_id: str, net_id: str, port_id: str, vif_id: str) -> View:
    """Whether ``vif_id`` may be plugged into the port: PortInUse if the port has an
    attachment (even the same one), AlreadyAttached if another port of the network has it."""
    port = network_port(session, tenant_id, net_id, port_id)
    if port.device_id:
        raise exc.PortInUse(port_id=port_id, net_id=net_id, device_id=port.device_id)
    other = session.scalars(select(Port.id).where(Port.network_id == net_id, Port.device_id == vif_id, Port.id != port_id)).first()
    if other is not None:
        raise exc.AlreadyAttached(att_id=vif_id, port_id=port_id, net_id=net_id, att_port_id=other)
    return port_view(port)
