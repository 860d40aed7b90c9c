"""Agents' heartbeats (report_state) and port status from agents (update_device_up/down)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server_plugin.store import agent_events, nova_events
from server_plugin.store.models import Agent, Network, Port, Subnet, utcnow
from server_plugin.store.views import port_dict
from server_plugin.validators import new_uuid

DHCP_OWNER = "network:dhcp"
MAX_DEVICE_LEN = 255


def report_state(session: Session, state: dict[str, Any], now: datetime.datetime | None = None) -> dict[str, Any]:
    """Insert or refresh the agent ``(agent_type, host)``; ``start_flag`` marks a restart."""
    now = now or utcnow()
    agent = session.scalars(select(Agent).where(Agent.agent_type == state["agent_type"], Agent.host == state["host"])).first()
    if agent is None:
        agent = Agent(id=new_uuid(), agent_type=state["agent_type"], host=state["host"], created_at=now, started_at=now)
        session.add(agent)
    elif state.get("start_flag"):
        agent.started_at = now
    agent.binary = state.get("binary", "")
    agent.topic = state.get("topic", "")
    agent.configurations = json.dumps(state.get("configurations") or {}, sort_keys=True)
    agent.heartbeat_timestamp = now
    session.flush()
    return agent_dict(agent, now, down_time=None)


def agent_dict(agent: Agent, now: datetime.datetime, down_time: float | None) -> dict[str, Any]:
    fmt = "%Y-%m-%d %H:%M:%S"
    alive = down_time is None or (now - agent.heartbeat_timestamp).total_seconds() <= down_time
    return {
        "id": agent.id, "agent_type": agent.agent_type, "binary": agent.binary, "topic": agent.topic, "host": agent.host,
        "admin_state_up": agent.admin_state_up, "alive": alive, "configurations": json.loads(agent.configurations or "{}"),
        "created_at": agent.created_at.strftime(fmt), "started_at": agent.started_at.strftime(fmt),
        "heartbeat_timestamp": agent.heartbeat_timestamp.strftime(fmt),
    }  # fmt: skip


def list_agents(session: Session, down_time: float, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    stmt = select(Agent).order_by(Agent.host, Agent.agent_type)
    for key in ("host", "agent_type", "binary", "id"):
        if filters and filters.get(key):
            stmt = stmt.where(getattr(Agent, key).in_(filters[key]))
    now = utcnow()
    return [agent_dict(a, now, down_time) for a in session.scalars(stmt)]


def find_port(session: Session, device: str, host: str | None = None) -> Port | None:
    """A port by id, or by its device name (``tap`` + the first 11 characters of the id); only among ``host``'s ports if given."""
    if len(device) > MAX_DEVICE_LEN:
        return None
    port = session.get(Port, device)
    if port is not None:
        return port if host is None or port.binding_host_id == host else None
    prefix = device[3:] if device.startswith("tap") else device
    if len(prefix) < 8:
        return None
    stmt = select(Port).where(Port.id.startswith(prefix, autoescape=True))
    if host is not None:
        stmt = stmt.where(Port.binding_host_id == host)
    return session.scalars(stmt.order_by(Port.id).limit(1)).first()


def agent_port(session: Session, device: str, host: str | None, status: str | None = None) -> Port | None:
    """The port ``device`` names if the agent of ``host`` may see it (None: any host), else None, exactly as if it did not exist.

    A port is the agent's while it is bound to its host; a DOWN report is also
    taken for a port that is now bound to no host if this host held it last
    (the agent unplugs it after the unbind and says so).
    """
    port = find_port(session, device, host)
    if port is not None or host is None or status != "DOWN":
        return port
    port = find_port(session, device)
    if port is not None and not port.binding_host_id and agent_events.last_bound_host(session, port.id) == host:
        return port
    return None


def set_status_from_agent(session: Session, device: str, host: str | None, status: str) -> dict[str, Any] | None:
    """Port status ACTIVE/DOWN as an agent reports it; None for a port that is not the agent's (see ``agent_port``)."""
    port = agent_port(session, device, host, status)
    if port is None:
        return None
    if port.status != status:
        port.status = status
        port.updated_at = utcnow()
        session.flush()
    return port_dict(port)


def agent_port_ids(session: Session, devices: list[str], host: str | None, status: str | None = None) -> dict[str, str | None]:
    """``agent_port`` for many devices: device -> port id, or None; port ids are looked up in one query."""
    stmt = select(Port.id).where(Port.id.in_({d for d in devices if len(d) == 36}))
    if host is not None:
        stmt = stmt.where(Port.binding_host_id == host)
    found = set(session.scalars(stmt))
    result: dict[str, str | None] = {}
    for device in devices:
        if device in found:
            result[device] = device
        else:
            port = agent_port(session, device, host, status)
            result[device] = port.id if port is not None else None
    return result


def set_statuses_from_agent(session: Session, up: list[str], down: list[str], host: str | None) -> dict[str, list[str]]:
    """update_device_list: many reports in one transaction; devices that are not the agent's are listed as failed, like unknown ones."""
    result: dict[str, list[str]] = {"devices_up": [], "devices_down": [], "failed_devices_up": [], "failed_devices_down": []}
    for devices, status, ok_key, failed_key in (
        (up, "ACTIVE", "devices_up", "failed_devices_up"),
        (down, "DOWN", "devices_down", "failed_devices_down"),
    ):
        ports = agent_port_ids(session, devices, host, status)
        ids = {port_id for port_id in ports.values() if port_id is not None}
        if ids:
            nova_events.record_bulk(session, ids, status)
            session.execute(update(Port).where(Port.id.in_(ids), Port.status != status).values(status=status, updated_at=utcnow()))
        for device in devices:
            result[ok_key if ports[device] is not None else failed_key].append(device)
    return result


# -- what a DHCP agent may see and touch ------------------------------------------------------


def dhcp_network(session: Session, net_id: str) -> Network | None:
    """A network DHCP agents serve: one with at least one DHCP-enabled subnet (as Neutron's DHCP RPC sees them)."""
    net = session.get(Network, net_id)
    if net is None or not any(s.enable_dhcp for s in net.subnets):
        return None
    return net


def dhcp_networks(session: Session, active_only: bool = True) -> list[str]:
    """Ids of the networks DHCP agents serve (admin-up ones if ``active_only``), in a stable order."""
    stmt = select(Network.id).where(Network.id.in_(select(Subnet.network_id).where(Subnet.enable_dhcp.is_(True))))
    if active_only:
        stmt = stmt.where(Network.admin_state_up.is_(True))
    return list(session.scalars(stmt.order_by(Network.created_at, Network.id)))


def dhcp_ports(
    session: Session, host: str | None, net_id: str | None = None, device_id: str | None = None, port_id: str | None = None
) -> list[Port]:
    """The DHCP agent's own ports: ``network:dhcp`` ports bound to ``host`` (None: any host), narrowed by network, device or id."""
    stmt = select(Port).where(Port.device_owner == DHCP_OWNER)
    if host is not None:
        stmt = stmt.where(Port.binding_host_id == host)
    if net_id is not None:
        stmt = stmt.where(Port.network_id == net_id)
    if device_id is not None:
        stmt = stmt.where(Port.device_id == device_id)
    if port_id is not None:
        stmt = stmt.where(Port.id == port_id)
    return list(session.scalars(stmt.order_by(Port.created_at, Port.id)))
