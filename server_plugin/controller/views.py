"""What a controller holds, read through its own API, and what it should hold, read from the store.

Shared by the server's consistency watchdog and ``restproxy-manage check``, so that both
detect the profile and read a controller the same way:

* profile detection: ``GET /capabilities`` answers a JSON list on a Big Switch controller and
  Floodlight's NoOp ``{"status": "ok"}`` on Floodlight;
* Floodlight's own view: ``GET /tenants/<any>/networks`` lists every network (the tenant is
  ignored) with its ``portMac`` attachments. Floodlight keeps nothing else (no ports, routers,
  subnets), so the view compared is exactly: network id, name, IPv4 gateway, and port -> MAC;
* the store's expected Floodlight view, from plain rows (no ORM objects), with a cheap
  fingerprint (row counts and last change times) that tells when it must be computed again;
* a digest of either view, so that a probe compares one string, not two dicts.

A Big Switch controller offers no read of its state in the protocol (facts §2-3): only
``GET /health`` answering 409, or the next call's 409 / 404 NXVNS, says it lost it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import attrs
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twisted.internet import threads

from server_plugin.controller import mapping
from server_plugin.controller.pool import ControllerResponse, ServerPool
from server_plugin.controller.servers import ServerHealth
from server_plugin.store.models import Network, Port, Subnet

CAPABILITIES_PATH = "/capabilities"
HEALTH_PATH = "/health"
# Floodlight ignores the tenant: any one lists every network.
FLOODLIGHT_LIST_PATH = "/tenants/restproxy/networks"

# network id -> {"id", "name", "gateway", "ports": {port id: MAC in upper case}}
FloodlightView = dict[str, dict[str, Any]]


class NotFloodlight(ValueError):
    """The answer to the network list is not Floodlight's (not a JSON list of networks)."""


# -- profile detection ------------------------------------------------------------------------------


def profile_from_capabilities(response: ControllerResponse) -> tuple[str | None, frozenset[str]]:
    """(profile, capabilities) from one ``GET /capabilities`` answer; (None, {}) if it says nothing."""
    if not response.ok:
        return None, frozenset()
    data = response.json()
    if isinstance(data, list):
        return mapping.BIGSWITCH, frozenset(c for c in data if isinstance(c, str))
    if isinstance(data, dict):
        return mapping.FLOODLIGHT, frozenset()
    return None, frozenset()


async def read_capabilities(pool: ServerPool, errors: list[str] | None = None) -> tuple[str | None, frozenset[str]]:
    """The profile and capability list of the first server that answers ``GET /capabilities``
    (``floatingip``: floating IPs go to ``/tenants/{t}/floatingips/{id}`` rather than inside their network).
    ``errors`` gets what the others answered ("host:port: 401 Unauthorized")."""
    for health in pool.health:
        response = await pool.request_server(health, "GET", CAPABILITIES_PATH)
        detected = profile_from_capabilities(response)
        if detected[0] is not None:
            return detected
        if errors is not None:
            errors.append(f"{health.address}: {response.status} {response.reason}")
    return None, frozenset()


# -- Floodlight's view ------------------------------------------------------------------------------


def _load_list(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise NotFloodlight(f"the network list is not JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(n, dict) and "guid" in n for n in data):
        raise NotFloodlight(f"the network list is not Floodlight's: {body[:120]!r}")
    return data


def _port_macs(net: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    for pm in net.get("portMac") or []:
        if isinstance(pm, dict):
            yield pm.get("port"), str(pm.get("mac") or "").upper()


def parse_floodlight_list(body: bytes) -> FloodlightView:
    """Floodlight's ``[{"name", "guid", "gateway", "portMac": [{"port", "mac"}]}]``, by network id."""
    view: FloodlightView = {}
    for net in _load_list(body):
        view[net["guid"]] = {
            "id": net["guid"],
            "name": net.get("name"),
            "gateway": net.get("gateway") or None,
            "ports": dict(_port_macs(net)),
        }
    return view


async def read_floodlight_view(
    pool: ServerPool, health: ServerHealth, view: bool = True
) -> tuple[ControllerResponse, FloodlightView | None, ViewDigest | None]:
    """One ``GET`` of the network list from one server, its health marked: (answer, view, digest of the view),
    or (answer, None, None) unless it answered 2xx. ``view=False``: the digest only (no view is built: what a
    probe needs). Parsing runs in a thread: at 100,000 attachments the list is 9 MB."""
    response = await pool.call(health, "GET", FLOODLIGHT_LIST_PATH, probe=True)
    if not response.ok:
        return response, None, None
    work = _parse_and_digest if view else _digest_only
    parsed, view_digest = await threads.deferToThreadPool(pool.reactor, pool.reactor.getThreadPool(), work, response.body)
    return response, parsed, view_digest


def _parse_and_digest(body: bytes) -> tuple[FloodlightView, ViewDigest]:
    parsed = parse_floodlight_list(body)
    return parsed, digest(parsed)


def _digest_only(body: bytes) -> tuple[None, ViewDigest]:
    total = attachments = 0
    data = _load_list(body)
    for net in data:
        net_id = net["guid"]
        total += _network_item(net_id, net.get("name"), net.get("gateway") or None)
        for port_id, mac in _port_macs(net):
            total += _attachment_item(net_id, port_id, mac)
            attachments += 1
    return None, _digest(total, len(data), attachments)


@attrs.frozen
class ViewDigest:
    """A whole view in one value: equal views, equal digests. It is a sum of one hash per network and one
    per attachment, so the store's side streams rows in any order without building the view."""

    value: str
    networks: int
    attachments: int

    @property
    def counts(self) -> tuple[int, int]:
        return self.networks, self.attachments

    def __str__(self) -> str:
        return f"{self.networks} networks, {self.attachments} attachments"


def _network_item(net_id: str, name: str | None, gateway: str | None) -> int:
    return _item(f"n\x1f{net_id}\x1f{name}\x1f{gateway}")


def _attachment_item(net_id: str, port_id: str | None, mac: str) -> int:
    return _item(f"a\x1f{net_id}\x1f{port_id}\x1f{mac}")


def _item(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _digest(total: int, networks: int, attachments: int) -> ViewDigest:
    return ViewDigest(f"{total % 2**128:032x}", networks, attachments)


def digest(view: FloodlightView) -> ViewDigest:
    total = attachments = 0
    for net_id, net in view.items():
        total += _network_item(net_id, net["name"], net["gateway"])
        for port_id, mac in net["ports"].items():
            total += _attachment_item(net_id, port_id, mac)
        attachments += len(net["ports"])
    return _digest(total, len(view), attachments)


def summary(view: FloodlightView) -> str:
    return str(digest(view))


# -- the store's side (run in a store thread) -------------------------------------------------------


def store_fingerprint(session: Session) -> tuple[Any, ...]:
    """Row counts and the last change time of what Floodlight's view is made of: a few aggregate
    queries, so that the full expected view is computed again only when one of them moved.
    ``[0]`` and ``[4]`` are the expected numbers of networks and attachments."""
    n, s, p = Network.__table__, Subnet.__table__, Port.__table__
    nets = session.execute(select(func.count(), func.max(n.c.updated_at))).one()
    subnets = session.execute(select(func.count(), func.max(s.c.updated_at))).one()
    ports = session.execute(select(func.count(), func.max(p.c.updated_at)).where(p.c.device_id != "")).one()
    return (*nets, *subnets, *ports)


def _first_gateways(session: Session, network_ids: list[str] | None = None) -> dict[str, str | None]:
    """network id -> the gateway Floodlight keeps: that of its first subnet with one (mapping.first_gateway)."""
    s = Subnet.__table__
    stmt = select(s.c.network_id, s.c.gateway_ip).where(s.c.gateway_ip.is_not(None), s.c.gateway_ip != "")
    if network_ids is not None:
        stmt = stmt.where(s.c.network_id.in_(network_ids))
    first: dict[str, str | None] = {}
    for row in session.execute(stmt.order_by(s.c.created_at, s.c.id)):
        if row.network_id not in first:
            first[row.network_id] = mapping.floodlight_gateway(row.gateway_ip)
    return first


def store_floodlight_page(session: Session, after_id: str | None, limit: int) -> FloodlightView:
    """Up to ``limit`` networks after ``after_id`` (by id) as Floodlight holds them when it has everything
    the plugin sent (mapping.network_payload, and the attachments of ports with a device), from three
    plain-row queries. Entries also carry ``tenant_id`` (for the paths of a replay; not compared)."""
    n, p = Network.__table__, Port.__table__
    stmt = select(n.c.id, n.c.name, n.c.tenant_id)
    if after_id is not None:
        stmt = stmt.where(n.c.id > after_id)
    view: FloodlightView = {}
    for row in session.execute(stmt.order_by(n.c.id).limit(limit)):
        view[row.id] = {"id": row.id, "name": row.name or row.id, "gateway": None, "ports": {}, "tenant_id": row.tenant_id}
    if not view:
        return view
    ids = list(view)
    for net_id, gateway in _first_gateways(session, ids).items():
        view[net_id]["gateway"] = gateway
    for row in session.execute(select(p.c.network_id, p.c.id, p.c.mac_address).where(p.c.network_id.in_(ids), p.c.device_id != "")):
        view[row.network_id]["ports"][row.id] = row.mac_address.upper()
    return view


def store_floodlight_pages(session: Session, page_size: int = 1000) -> Iterator[FloodlightView]:
    after: str | None = None
    while page := store_floodlight_page(session, after, page_size):
        yield page
        after = next(reversed(page))


def store_floodlight_view(session: Session) -> FloodlightView:
    """The whole expected view (one transaction)."""
    view: FloodlightView = {}
    for page in store_floodlight_pages(session):
        view.update(page)
    return view


def store_digest(session: Session) -> ViewDigest:
    """The expected view's digest, streamed from plain rows: no view is built (run in a store thread)."""
    n, p = Network.__table__, Port.__table__
    gateways = _first_gateways(session)
    total = networks = attachments = 0
    for row in session.execute(select(n.c.id, n.c.name).execution_options(yield_per=5000)):
        total += _network_item(row.id, row.name or row.id, gateways.get(row.id))
        networks += 1
    ports = select(p.c.network_id, p.c.id, p.c.mac_address).where(p.c.device_id != "")
    for row in session.execute(ports.execution_options(yield_per=5000)):
        total += _attachment_item(row.network_id, row.id, row.mac_address.upper())
        attachments += 1
    return _digest(total, networks, attachments)


def compare(expected: FloodlightView, actual: FloodlightView) -> list[str]:
    """Human-readable differences (empty when equal), one line per network or attachment."""
    problems = []
    for net_id in sorted(set(expected) | set(actual)):
        want, have = expected.get(net_id), actual.get(net_id)
        if have is None:
            problems.append(f"network {net_id}: missing on the controller")
            continue
        if want is None:
            problems.append(f"network {net_id}: on the controller but not in the store")
            continue
        for key in ("name", "gateway"):
            if want[key] != have[key]:
                problems.append(f"network {net_id}: {key} is {have[key]!r} on the controller, {want[key]!r} in the store")
        for port_id in sorted(set(want["ports"]) | set(have["ports"])):
            if port_id not in have["ports"]:
                problems.append(f"port {port_id} (network {net_id}): missing on the controller")
            elif port_id not in want["ports"]:
                problems.append(f"port {port_id} (network {net_id}): on the controller but not in the store")
            elif want["ports"][port_id] != have["ports"][port_id]:
                held, wanted = have["ports"][port_id], want["ports"][port_id]
                problems.append(f"port {port_id} (network {net_id}): {held!r} on the controller, {wanted!r} in the store")
    return problems
