"""Agents' heartbeats (report_state) and port status from agents (update_device_up/down)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.store.models import Agent, Port, utcnow
from server_plugin.store.views import port_dict
from server_plugin.validators import new_uuid


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


def find_port(session: Session, device: str) -> Port | None:
    """A port by id, or by its device name (``tap`` + the first 11 characters of the id)."""
    port = session.get(Port, device)
    if port is not None:
        return port
    prefix = device[3:] if device.startswith("tap") else device
    if len(prefix) < 8:
        return None
    return session.scalars(select(Port).where(Port.id.startswith(prefix, autoescape=True)).limit(2)).first()


def set_status_from_agent(session: Session, device: str, host: str | None, status: str) -> dict[str, Any] | None:
    """Port status ACTIVE/DOWN as an agent reports it; only for a port bound to that agent's host."""
    port = find_port(session, device)
    if port is None:
        return None
    # An agent reports on its own ports; "down" also on a port just unbound from it (bound to no host now).
    unbound_down = status == "DOWN" and not port.binding_host_id
    if host is not None and port.binding_host_id != host and not unbound_down:
        raise exc.PolicyNotAuthorized(action=f"report on port {port.id} bound to host '{port.binding_host_id}'")
    if port.status != status:
        port.status = status
        port.updated_at = utcnow()
        session.flush()
    return port_dict(port)


def set_statuses_from_agent(session: Session, up: list[str], down: list[str], host: str | None) -> dict[str, list[str]]:
    """update_device_list: many reports in one transaction; devices refused or unknown are listed as failed."""
    result: dict[str, list[str]] = {"devices_up": [], "devices_down": [], "failed_devices_up": [], "failed_devices_down": []}
    for devices, status, ok_key, failed_key in (
        (up, "ACTIVE", "devices_up", "failed_devices_up"),
        (down, "DOWN", "devices_down", "failed_devices_down"),
    ):
        for device in devices:
            try:
                port = set_status_from_agent(session, device, host, status)
            except exc.PolicyNotAuthorized:
                port = None
            result[ok_key if port is not None else failed_key].append(device)
    return result
