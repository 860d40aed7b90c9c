"""Events for DHCP agents, written in the same transaction as the change, under one reserved host key.

A DHCP agent does not serve one host's ports: it serves every network with a
DHCP-enabled subnet. Its events therefore go to ``agent_events`` under the
reserved key ``DHCP_HOST`` ("@dhcp", a name no agent token may carry), and
the channel's ``/agent/v1/dhcp/watch`` watches that key with the bus's
ordinary per-host machinery (sequence numbers, replay, relist, limits).
Every DHCP agent watches the same stream (see restproxy_dhcp/__init__.py for
why two agents may serve one network).

Kinds (payloads are hints; the agent re-reads the network when in doubt):

* ``port_created`` / ``port_updated`` / ``port_deleted``: ``{"port": ...}``, a
  port on a network with a DHCP-enabled subnet (updates only when what DHCP
  serves changed: MAC, fixed IPs, owner, device id, network);
* ``subnet_created`` / ``subnet_updated`` / ``subnet_deleted``: ``{"subnet":
  ...}``, for a subnet that has (or had) DHCP enabled;
* ``network_updated`` (admin state or name) and ``network_deleted``: ``{"network": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server_plugin.store import agent_events  # (it imports this module too: used only at call time)
from server_plugin.store.models import Network, Port, Subnet
from server_plugin.store.views import network_dict, port_dict, subnet_dict

DHCP_HOST = "@dhcp"
PORT_CREATED, PORT_UPDATED, PORT_DELETED = "port_created", "port_updated", "port_deleted"
SUBNET_CREATED, SUBNET_UPDATED, SUBNET_DELETED = "subnet_created", "subnet_updated", "subnet_deleted"
NETWORK_UPDATED, NETWORK_DELETED = "network_updated", "network_deleted"
DHCP_PORT_KEYS = ("mac_address", "fixed_ips", "device_owner", "device_id", "network_id")


def _record(session: Session, kind: str, object_id: str, payload: dict[str, Any]) -> None:
    """``agent_events.record`` under the DHCP agents' key."""
    agent_events.record(session, DHCP_HOST, kind, object_id, payload)


_SERVED = "dhcp_served"  # session.info key: {network id: served}, known in this transaction


def remember_served(session: Session, net_id: str, served: bool) -> None:
    """What the unit of work already read of the network's subnets (a port create does): ``serves`` asks no more."""
    session.info.setdefault(_SERVED, {})[net_id] = served


def serves(session: Session, net_id: str | None) -> bool:
    """Whether DHCP agents serve the network (it has a DHCP-enabled subnet): one indexed query, unless this
    transaction already read the network's subnets (``remember_served``)."""
    if not net_id:
        return False
    known = session.info.get(_SERVED, {}).get(net_id)
    if known is not None:
        return bool(known)
    stmt = select(Subnet.id).where(Subnet.network_id == net_id, Subnet.enable_dhcp.is_(True)).limit(1)
    return session.scalar(stmt) is not None


def port_change(session: Session, before: dict[str, Any] | None, after: dict[str, Any] | None, served: bool | None = None) -> None:
    """A port going from ``before`` to ``after`` (None: not there), if a DHCP agent cares (``served``: known to)."""
    if before is not None and after is not None and all(before.get(k) == after.get(k) for k in DHCP_PORT_KEYS):
        return
    port = after if after is not None else before
    assert port is not None
    if not (served if served is not None else serves(session, port.get("network_id"))):
        return
    kind = PORT_CREATED if before is None else PORT_DELETED if after is None else PORT_UPDATED
    _record(session, kind, port["id"], {"port": port})


def ports_change(session: Session, changes: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> None:
    """``port_change`` of many ports, asking once per network whether DHCP agents serve it."""
    served: dict[str, bool] = {}
    for before, after in changes:
        port = after if after is not None else before
        assert port is not None
        net_id = port.get("network_id") or ""
        if net_id not in served:
            served[net_id] = serves(session, net_id)
        if served[net_id]:
            port_change(session, before, after, served=True)


def subnet_change(session: Session, kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    subnet = after if after is not None else before
    assert subnet is not None
    if any(s is not None and s.get("enable_dhcp") for s in (before, after)):
        _record(session, kind, subnet["id"], {"subnet": subnet})


def network_change(session: Session, net: dict[str, Any], kind: str) -> None:
    if kind == NETWORK_DELETED or serves(session, net.get("id")):
        _record(session, kind, net["id"], {"network": net})


# -- the DHCP agents' list -------------------------------------------------------------------------------


def network_infos(session: Session) -> list[dict[str, Any]]:
    """Every network DHCP agents serve (admin up, a DHCP-enabled subnet), each with its subnets and ports, in one transaction."""
    served = select(Subnet.network_id).where(Subnet.enable_dhcp.is_(True))
    nets = list(
        session.scalars(
            select(Network)
            .where(Network.id.in_(served), Network.admin_state_up.is_(True))
            .options(selectinload(Network.subnets))
            .order_by(Network.created_at, Network.id)
        )
    )
    ports: dict[str, list[dict[str, Any]]] = {n.id: [] for n in nets}
    if ports:
        stmt = select(Port).where(Port.network_id.in_(list(ports))).options(selectinload(Port.fixed_ips)).order_by(Port.id)
        for port in session.scalars(stmt):
            ports[port.network_id].append(port_dict(port))
    return [dict(network_dict(n), subnets=[subnet_dict(s) for s in n.subnets], ports=ports[n.id]) for n in nets]
