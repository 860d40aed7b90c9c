"""``binding:vif_details.port_filter``: whether the port's host really filters it.

True iff an agent on the port's host reports ``"firewall": "openflow"`` in its
``report_state`` configurations (it enforces security groups) and the port has
port security; false otherwise (no agent, an OpenFlow controller owns br-int,
or the firewall is off). One indexed query per read, for the hosts of the ports read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server_plugin.store.models import Agent

FILTERING = '"firewall": "openflow"'  # as report_state stores configurations (json.dumps, sort_keys)


def filtering_hosts(session: Session, hosts: Iterable[str]) -> set[str]:
    wanted = sorted({h for h in hosts if h})
    if not wanted:
        return set()
    if len(wanted) == 1:  # one port read or made: no IN list to render at each execution
        return set(session.scalars(_FILTERING_ONE, {"host": wanted[0]}))
    return set(session.scalars(_FILTERING_OF, {"hosts": wanted}))


def all_filtering_hosts(session: Session) -> set[str]:
    """Every host whose agent filters: for a list (one query per chunk, without an ``IN`` of its ports' hosts, which
    PostgreSQL's driver would parse anew each time); agents are one or a few per host, far fewer than ports."""
    return set(session.connection().execute(_FILTERING_ALL).scalars())


# Built once (their compiled forms are reused): every read of a bound port runs one.
_FILTERING_ALL = select(Agent.host).where(Agent.configurations.contains(FILTERING)).distinct()
_FILTERING_OF = select(Agent.host).where(Agent.host.in_(bindparam("hosts", expanding=True)), Agent.configurations.contains(FILTERING))
_FILTERING_ONE = select(Agent.host).where(Agent.host == bindparam("host"), Agent.configurations.contains(FILTERING))


def apply(session: Session, ports: list[dict[str, Any]], known: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """``ports`` (API dicts) with ``port_filter`` true where their host filters them; changed in place.

    ``known``: hosts whose answer the unit of work read already (a port create, with its network): no query for them."""
    bound = [p for p in ports if p.get("binding:host_id") and p.get("port_security_enabled")]
    if not bound:
        return ports
    if known is not None and all(p["binding:host_id"] in known for p in bound):
        on = {host for host, filtering in known.items() if filtering}
    else:
        on = filtering_hosts(session, (p["binding:host_id"] for p in bound))
    for port in bound:
        if port["binding:host_id"] in on:
            port["binding:vif_details"] = {"port_filter": True, "ovs_hybrid_plug": False}
    return ports
