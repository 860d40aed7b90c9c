"""Units of work for ports, with their MACs and fixed IPs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from sqlalchemy import bindparam, exists, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin import ipam, policy
from server_plugin.attributes import GENERATED, PORTS, defaults_of
from server_plugin.context import RequestContext
from server_plugin.store import access, dhcp_events, port_filter, port_list
from server_plugin.store.db import RetryTransaction
from server_plugin.store.listing import ListQuery
from server_plugin.store.models import (
    Agent,
    AllocationPool,
    AllowedAddressPair,
    IPAllocation,
    Network,
    Port,
    SecurityGroupPortBinding,
    Subnet,
    utcnow,
)
from server_plugin.store.networks import check_ports_allowed, visible_subnet
from server_plugin.store.prebuilt import Prebuilt
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import PORT_COLUMNS, port_dict
from server_plugin.validators import is_uuid_like, new_uuid


def visible_port(session: Session, ctx: RequestContext, port_id: str) -> Port:
    """The port if this context may see it (its own, or on a network it owns), else PortNotFound."""
    return access.resolve(session, ctx, Port, port_id)


def _network_target(session: Session, net: Network | str) -> policy.Target:
    owner = net.tenant_id if isinstance(net, Network) else session.scalar(select(Network.tenant_id).where(Network.id == net))
    return policy.Target(network_tenant_id=owner)


PORT_DEFAULTS = defaults_of(PORTS)

# -- MAC -------------------------------------------------------------------


# The hot path's statements are built once and run on the transaction's connection: no ORM objects, and no autoflush
# (nothing of the port is pending when they run). A create's own are ``Prebuilt`` (compiled once per dialect, run
# on the driver's cursor: store/prebuilt.py).
_PORTS, _ALLOCATIONS = Port.__table__, IPAllocation.__table__
_SUBNETS, _POOLS = Subnet.__table__, AllocationPool.__table__
_NETWORKS = Network.__table__
_INSERT_PORT = Prebuilt(_PORTS.insert(), PORT_COLUMNS)
# A new port's collections, inserted after it (built once, as the reads; every column given)
_COLLECTION_TABLES = {
    "fixed_ips": _ALLOCATIONS,
    "security_group_bindings": SecurityGroupPortBinding.__table__,
    "allowed_address_pairs": AllowedAddressPair.__table__,
}
_INSERT_COLLECTIONS = [(name, Prebuilt(table.insert(), [c.name for c in table.columns])) for name, table in _COLLECTION_TABLES.items()]
_MAC_USERS = select(_PORTS.c.id).where(_PORTS.c.network_id == bindparam("net_id"), _PORTS.c.mac_address == bindparam("mac"))
SPARSE_CANDIDATES = 8
# The candidates as SPARSE_CANDIDATES plain parameters (fewer are padded with a repeat): an expanding IN is
# re-rendered at each execution.
_TAKEN_OF = Prebuilt(
    select(_ALLOCATIONS.c.ip_address).where(
        _ALLOCATIONS.c.subnet_id == bindparam("subnet_id"),
        _ALLOCATIONS.c.ip_address.in_([bindparam(f"ip{i}") for i in range(SPARSE_CANDIDATES)]),
    )
)
_SUBNETS_WITH_POOLS = (
    select(_SUBNETS.c.id, _SUBNETS.c.cidr, _SUBNETS.c.ip_version, _SUBNETS.c.enable_dhcp, _POOLS.c.first_ip, _POOLS.c.last_ip)
    .select_from(_SUBNETS.outerjoin(_POOLS, _POOLS.c.subnet_id == _SUBNETS.c.id))
    .where(_SUBNETS.c.network_id == bindparam("net_id"))
    .order_by(_SUBNETS.c.created_at, _SUBNETS.c.id, _POOLS.c.position)
)
# A create's first read, one round trip: the network (what its checks and hooks need), its subnets with their pools
# (in order; one row of NULLs without any), whether the port's MAC is already used on it, whether an agent on its
# host filters (``port_filter``: the reply's ``binding:vif_details``), and which of the random candidates drawn
# from the pools of the network's large subnet (as the last create on it read them: ``_GUESSES``) are taken.
_AGENTS = Agent.__table__
_NETWORK_FOR_CREATE = Prebuilt(
    select(
        _NETWORKS.c.id, _NETWORKS.c.tenant_id, _NETWORKS.c.shared, _NETWORKS.c.router_external, _NETWORKS.c.port_security_enabled,
        exists().where(_PORTS.c.network_id == _NETWORKS.c.id, _PORTS.c.mac_address == bindparam("mac")).label("mac_taken"),
        # (``contains`` of a parameter, not ``LIKE :pattern``: SQLite prepares a statement anew at every run when a
        # bare parameter is a LIKE pattern, which cost more than the rest of the create; no host, no scan of agents)
        exists()
        .where(bindparam("host") != literal_column("''"), _AGENTS.c.host == bindparam("host"))
        .where(_AGENTS.c.configurations.contains(bindparam("filtering")))
        .label("filtering"),
        *(
            exists().where(_ALLOCATIONS.c.subnet_id == bindparam("guess_subnet"), _ALLOCATIONS.c.ip_address == bindparam(f"guess{i}"))
            for i in range(SPARSE_CANDIDATES)
        ),
        _SUBNETS.c.id, _SUBNETS.c.cidr, _SUBNETS.c.ip_version, _SUBNETS.c.enable_dhcp, _POOLS.c.first_ip, _POOLS.c.last_ip,
    )
    .select_from(
        _NETWORKS.outerjoin(_SUBNETS, _SUBNETS.c.network_id == _NETWORKS.c.id).outerjoin(_POOLS, _POOLS.c.subnet_id == _SUBNETS.c.id)
    )
    .where(_NETWORKS.c.id == bindparam("net_id"))
    .order_by(_SUBNETS.c.created_at, _SUBNETS.c.id, _POOLS.c.position)
)  # fmt: skip


def _mac_taken(session: Session, net_id: str, mac: str, ignore_port: str | None = None) -> bool:
    return any(pid != ignore_port for (pid,) in session.connection().execute(_MAC_USERS, {"net_id": net_id, "mac": mac}))


def _choose_mac(session: Session, net_id: str, requested: Any, settings: CoreSettings) -> str:
    if requested is not GENERATED:
        if _mac_taken(session, net_id, requested):
            raise exc.MacAddressInUse(net_id=net_id, mac=requested)
        return requested
    for _ in range(settings.mac_generation_retries):
        mac = ipam.random_mac(settings.base_mac)
        if not _mac_taken(session, net_id, mac):
            return mac
    raise exc.MacAddressGenerationFailure(net_id=net_id)


# -- fixed IPs --------------------------------------------------------------


@attrs.define
class SubnetPools:
    """What IPAM reads of a subnet: its id, cidr, version, DHCP flag and allocation pools (first, last), in order."""

    id: str
    cidr: str
    ip_version: int
    enable_dhcp: bool
    pools: list[tuple[str, str]] = attrs.Factory(list)


def _subnets_of(session: Session, net_id: str) -> list[SubnetPools]:
    """The network's subnets with their pools, in one query; the transaction remembers whether DHCP serves it."""
    return _subnet_rows(session, net_id, session.connection().execute(_SUBNETS_WITH_POOLS, {"net_id": net_id}))


def _subnet_rows(session: Session, net_id: str, rows: Any) -> list[SubnetPools]:
    """Rows ``(subnet id, cidr, version, dhcp, pool first, pool last)`` (a subnet id of None skipped) as SubnetPools."""
    subnets: dict[str, SubnetPools] = {}
    for sid, cidr, version, dhcp, first, last in rows:
        if sid is None:
            continue
        subnet = subnets.get(sid)
        if subnet is None:
            subnet = subnets[sid] = SubnetPools(sid, cidr, version, bool(dhcp))
        if first is not None:
            subnet.pools.append((first, last))
    found = list(subnets.values())
    dhcp_events.remember_served(session, net_id, any(s.enable_dhcp for s in found))
    return found


def _used_ips(session: Session, subnet_id: str) -> set[str]:
    return set(session.scalars(select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet_id)))


def _pools(subnet: SubnetPools | Subnet) -> list[tuple[str, str]]:
    if isinstance(subnet, SubnetPools):
        return subnet.pools
    return [(p.first_ip, p.last_ip) for p in subnet.allocation_pools]


SMALL_POOL = 1024

# What a port asks for: the subnets to try in order, and an address or None ("pick one").
Wanted = tuple[list[SubnetPools], str | None]


def _pick_ip(
    session: Session, subnet: SubnetPools | Subnet, also_taken: set[str], checked: tuple[list[str], set[str]] | None = None
) -> str | None:
    """A free address of the subnet's pools, or None if they are full.

    Pools of up to SMALL_POOL addresses are scanned (one of the lowest free
    ones is picked). In larger ones, random candidates are checked with one
    indexed query: O(1) in the subnet's size, and concurrent creates almost
    never pick the same address; only when all are taken is the subnet scanned.
    ``checked``: random candidates of these pools and those of them taken, read already in this transaction.
    """
    pools = _pools(subnet)
    if not pools:
        return None
    if ipam.pool_size(pools) <= SMALL_POOL:
        # Small pools (a /24...): one of the lowest free addresses, as operators expect; cheap to scan.
        return ipam.pick_free_ip(pools, _used_ips(session, subnet.id) | also_taken)
    drawn, taken = checked if checked is not None else (ipam.random_candidates(pools, SPARSE_CANDIDATES), None)
    candidates = [c for c in drawn if c not in also_taken]
    if not candidates:
        return ipam.pick_free_ip(pools, _used_ips(session, subnet.id) | also_taken)
    if taken is None:
        params = {f"ip{i}": candidates[min(i, len(candidates) - 1)] for i in range(SPARSE_CANDIDATES)}
        taken = {ip for (ip,) in _TAKEN_OF.rows(session.connection(), dict(params, subnet_id=subnet.id))}
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    return ipam.pick_free_ip(pools, _used_ips(session, subnet.id) | also_taken)


def _resolve_requests(
    session: Session, ctx: RequestContext, net_id: str, subnets: list[SubnetPools], requests: list[dict[str, str]], settings: CoreSettings
) -> list[Wanted]:
    """Check each requested fixed IP; None as the address means "pick one"."""
    if len(requests) > settings.max_fixed_ips_per_port:
        raise exc.InvalidInput(error_message="Exceeded maximim amount of fixed ips per port")
    by_id = {s.id: s for s in subnets}
    resolved: list[Wanted] = []
    for entry in requests:
        subnet_id, ip = entry.get("subnet_id"), entry.get("ip_address")
        if subnet_id is None and ip is None:
            raise exc.InvalidInput(error_message="IP allocation requires subnet_id or ip_address")
        if subnet_id is not None:
            subnet = by_id.get(subnet_id)
            if subnet is None:
                visible_subnet(session, ctx, subnet_id)  # another tenant's subnet is as unknown as a missing one
                raise exc.InvalidInput(
                    error_message=f"Failed to create port on network {net_id}, because fixed_ips included invalid subnet {subnet_id}"
                )
        else:
            candidates = [s for s in subnets if ipam.ip_is_valid_for_subnet(s.cidr, ip)]
            if not candidates:
                raise exc.InvalidInput(error_message=f"IP address {ip} is not a valid IP for the defined networks subnets")
            subnet = candidates[0]
        if ip is not None and not ipam.ip_is_valid_for_subnet(subnet.cidr, ip):
            raise exc.InvalidInput(error_message=f"IP address {ip} is not a valid IP for the defined subnet")
        resolved.append(([subnet], ip))
    return resolved


Checked = dict[str, tuple[list[str], set[str]]]  # per subnet id: random candidates, and those of them taken


def _allocate(session: Session, port: Any, wanted: list[Wanted], make: Any = IPAllocation, checked: Checked | None = None) -> None:
    """Record the wanted allocations on the port (``make``: their class); picked addresses race safely via the PK.
    ``checked``: per subnet, candidates already checked in this transaction (``_pick_ip``)."""
    taken_now: dict[str, set[str]] = {}
    position = len(port.fixed_ips)
    for subnets, ip in wanted:
        subnet = subnets[0]
        if ip is not None:
            if session.get(IPAllocation, (subnet.id, ip)) is not None or ip in taken_now.get(subnet.id, set()):
                raise exc.IpAddressInUse(net_id=port.network_id, ip_address=ip)
        else:
            for subnet in subnets:
                ip = _pick_ip(session, subnet, taken_now.get(subnet.id, set()), checked.get(subnet.id) if checked else None)
                if ip is not None:
                    break
            else:
                raise exc.IpAddressGenerationFailure(net_id=port.network_id)
        taken_now.setdefault(subnet.id, set()).add(ip)
        port.fixed_ips.append(make(subnet_id=subnet.id, ip_address=ip, network_id=port.network_id, port_id=port.id, position=position))
        position += 1


def _default_requests(subnets: list[SubnetPools]) -> list[Wanted]:
    """One address per IP version that the network has subnets of (first subnet with room)."""
    return [(family, None) for family in ([s for s in subnets if s.ip_version == v] for v in (4, 6)) if family]


def _flush_allocations(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as e:
        # Another server took the same address or MAC between our check and
        # our insert: start the unit of work again.
        raise RetryTransaction() from e


# -- ports -----------------------------------------------------------------


def create_port(session: Session, ctx: RequestContext, values: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    return port_dict(create_port_row(session, ctx, values, settings))


class NewPortNetwork:
    """What a port create reads of its network (its checks, ``row.network`` for the hooks)."""

    __slots__ = ("id", "tenant_id", "shared", "router_external", "port_security_enabled")

    def __init__(self, id: str, tenant_id: str, shared: Any, router_external: Any, port_security_enabled: Any) -> None:
        self.id, self.tenant_id, self.shared = id, tenant_id, shared
        self.router_external, self.port_security_enabled = router_external, port_security_enabled


class NewAllocation:
    """A new port's fixed IP, as ``IPAllocation`` has it (a plain object: the port create inserts it with Core)."""

    __slots__ = ("subnet_id", "ip_address", "network_id", "port_id", "position")

    def __init__(self, subnet_id: str, ip_address: str, network_id: str, port_id: str, position: int) -> None:
        self.subnet_id, self.ip_address, self.network_id, self.port_id, self.position = subnet_id, ip_address, network_id, port_id, position

    def values(self) -> dict[str, Any]:
        return {"subnet_id": self.subnet_id, "ip_address": self.ip_address, "network_id": self.network_id, "port_id": self.port_id,
                "position": self.position}  # fmt: skip


class NewPort:
    """The port a create makes, before and after its insert: ``Port``'s columns and collections as plain attributes.

    The create builds, checks and inserts it with Core statements; it never enters the session (a later read in the
    transaction loads the port from the database). An ORM ``Port`` (its instrumented attributes, its collections'
    events) cost more CPU than the create's statements. The hooks (``PortRules.before_insert``) read and set it as
    they would a ``Port``; ``network`` is a ``NewPortNetwork``; ``host_filters``: whether an agent on its host
    filters (read with the network: ``port_filter.apply``'s ``known``)."""

    __slots__ = (*PORT_COLUMNS, "network", "fixed_ips", "security_group_bindings", "allowed_address_pairs", "host_filters")

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def values(self) -> dict[str, Any]:
        """The row of ``ports``."""
        return {name: getattr(self, name) for name in PORT_COLUMNS}


# Per network: its first subnet with more than SMALL_POOL addresses and that subnet's pools, as the last create on it
# read them. The next create draws its random candidates from these and checks them in its first read; they are used
# only if the pools it reads are still these (a hint: a stale or missing one costs the separate check, nothing else).
_GUESSES: dict[str, tuple[str, list[tuple[str, str]]]] = {}
_GUESSES_MAX = 4096
_NO_GUESS = dict.fromkeys([f"guess{i}" for i in range(SPARSE_CANDIDATES)], "")
_GUESS = 7  # the first candidate's column; the subnets' columns follow the last one
_SUBNET_COLUMNS = _GUESS + SPARSE_CANDIDATES


def _network_for_create(
    session: Session, ctx: RequestContext, net_id: Any, mac: str, host: str
) -> tuple[NewPortNetwork, list[SubnetPools], bool, bool, Checked]:
    """The network a port goes on (404 if invisible, 403 if external but neither owned nor shared: as
    ``usable_network``), its subnets, whether ``mac`` is used on it, whether ``host`` filters, and candidates
    already checked (``_pick_ip``'s ``checked``, by subnet): one statement."""
    rows, guess, drawn = [], None, []
    if is_uuid_like(net_id):
        net_key = net_id.lower()
        params = {"net_id": net_key, "mac": mac, "host": host or "", "filtering": port_filter.FILTERING, "guess_subnet": ""}
        guess = _GUESSES.get(net_key)
        if guess is not None:
            drawn = ipam.random_candidates(guess[1], SPARSE_CANDIDATES)
            params.update({f"guess{i}": candidate for i, candidate in enumerate(drawn)}, guess_subnet=guess[0])
        else:
            params.update(_NO_GUESS)
        rows = _NETWORK_FOR_CREATE.rows(session.connection(), params)
    if not rows:
        raise exc.NetworkNotFound(net_id=net_id)
    first = rows[0]
    nid, tenant, shared, external, psec = first[:5]  # (SQLite and MariaDB give booleans as integers)
    net = NewPortNetwork(nid, tenant, bool(shared), bool(external), bool(psec))
    if not access.sees_network(ctx, net):
        raise exc.NetworkNotFound(net_id=net_id)  # another tenant's network is as unknown as a missing one
    check_ports_allowed(ctx, net, "create_port")
    subnets = _subnet_rows(session, net.id, (row[_SUBNET_COLUMNS:] for row in rows))
    large = next((s for s in subnets if s.pools and ipam.pool_size(s.pools) > SMALL_POOL), None)
    checked: Checked = {}
    if guess is not None and large is not None and (large.id, large.pools) == guess:
        checked[large.id] = (drawn, {c for c, taken in zip(drawn, first[_GUESS:_SUBNET_COLUMNS], strict=True) if taken})
    if large is None:
        _GUESSES.pop(nid, None)
    elif guess is None or (large.id, large.pools) != guess:
        if len(_GUESSES) >= _GUESSES_MAX:
            _GUESSES.clear()
        _GUESSES[nid] = (large.id, large.pools)
    return net, subnets, bool(first[5]), bool(host) and bool(first[6]), checked


def create_port_row(
    session: Session, ctx: RequestContext, values: dict[str, Any], settings: CoreSettings, before_insert: Sequence[Any] = ()
) -> NewPort:
    """The new port's row (its network is ``port.network``: the extensions' hooks read both without a query).

    ``before_insert``: callables ``(row)`` run once its addresses are chosen, before the statements that insert it
    (an extension's rows for the port go in with it)."""
    session.flush()  # what the caller added to the session first (Core reads do not autoflush); nothing: no work
    requested_mac = values.get("mac_address", GENERATED)
    mac = ipam.random_mac(settings.base_mac) if requested_mac is GENERATED else requested_mac
    host = values.get("binding:host_id", "")
    net, subnets, mac_taken, filtering, checked = _network_for_create(session, ctx, values["network_id"], mac, host)
    policy.enforce(ctx, "create", "port", values, policy.Target(network_tenant_id=net.tenant_id), defaults=PORT_DEFAULTS)
    if mac_taken:
        if requested_mac is not GENERATED:
            raise exc.MacAddressInUse(net_id=net.id, mac=requested_mac)
        mac = _choose_mac(session, net.id, GENERATED, settings)
    requested = values.get("fixed_ips", GENERATED)
    if requested is GENERATED:
        wanted = _default_requests(subnets)
    else:
        wanted = _resolve_requests(session, ctx, net.id, subnets, requested, settings)
    now = utcnow()
    port = NewPort(
        id=values.get("id") or new_uuid(),
        tenant_id=values["tenant_id"],
        network_id=net.id,
        name=values.get("name", ""),
        description=values.get("description", ""),
        mac_address=mac,
        admin_state_up=values.get("admin_state_up", True),
        status="DOWN",
        device_id=values.get("device_id", ""),
        device_owner=values.get("device_owner", ""),
        binding_host_id=host,
        binding_profile=_profile_text(values.get("binding:profile", {})),
        created_at=now,
        updated_at=now,
        port_security_enabled=None,
        network=net,
        host_filters=filtering,
        fixed_ips=[],
        security_group_bindings=[],
        allowed_address_pairs=[],
    )
    _allocate(session, port, wanted, NewAllocation, checked)
    for hook in before_insert:
        hook(port)
    _insert_new_port(session, port)
    return port


def _profile_text(profile: Any) -> str:
    """``binding:profile`` as stored (sorted JSON); none, or empty (most ports), without the encoder."""
    return "{}" if profile.__class__ is dict and not profile else json.dumps(profile, sort_keys=True)


def _rows(objects: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows of a new port's collection: plain objects (``NewAllocation``, ``NewBinding``) give theirs, ORM ones (an
    extension's) are read by their table's columns."""
    return [o.values() if not hasattr(o, "__table__") else {c.name: getattr(o, c.name) for c in o.__table__.columns} for o in objects]


def _insert_new_port(session: Session, port: NewPort) -> None:
    """Insert the new port and its collections (fixed IPs, the extensions' rows) with Core inserts.

    The row stays out of the session: it is the create's view of what it inserted (the reply, the hooks'
    ``after_create``), and a later read in the transaction loads the port from the database. A unique key
    lost to another writer (an address, the MAC) starts the unit of work again, as a flush would."""
    if port.port_security_enabled is None:
        port.port_security_enabled = True  # the column's default
    session.flush()  # what the hooks added to the session (e.g. a default group made here) goes first
    connection = session.connection()
    collections = [_rows(getattr(port, collection)) for collection, _ in _INSERT_COLLECTIONS]
    try:
        if connection.dialect.name == "postgresql" and sum(map(len, collections)) <= _WITH_PORT_MAX:
            # One statement, one round trip: the collections' inserts in a WITH (their foreign keys are checked at
            # the statement's end, when the port is there)
            params = port.values()
            for k, rows in enumerate(collections):
                for i, row in enumerate(rows):
                    params.update({f"c{k}_{i}_{key}": value for key, value in row.items()})
            _port_with(tuple(map(len, collections))).rows(connection, params)
            return
        _INSERT_PORT.insert(connection, [port.values()])
        for (_, insert), rows in zip(_INSERT_COLLECTIONS, collections, strict=True):
            if rows:
                insert.insert(connection, rows)
    except IntegrityError as e:
        raise RetryTransaction() from e


_WITH_PORT_MAX = 16  # rows of a port's collections inserted with it in one statement (more: one insert each)
_PORT_WITH: dict[tuple[int, ...], Prebuilt] = {}  # per count of each collection's rows: the port's insert with theirs


def _port_with(counts: tuple[int, ...]) -> Prebuilt:
    """PostgreSQL: a port's insert with the given numbers of rows of each collection (``_INSERT_COLLECTIONS``)."""
    found = _PORT_WITH.get(counts)
    if found is None:
        statement = _PORTS.insert().values({name: bindparam(name, type_=_PORTS.c[name].type) for name in PORT_COLUMNS})
        for k, ((name, _), count) in enumerate(zip(_INSERT_COLLECTIONS, counts, strict=True)):
            if count:
                table = _COLLECTION_TABLES[name]
                values = [{c.name: bindparam(f"c{k}_{i}_{c.name}", type_=c.type) for c in table.columns} for i in range(count)]
                statement = statement.add_cte(table.insert().values(values).cte(f"c{k}"))
        found = _PORT_WITH[counts] = Prebuilt(statement)
    return found


def get_port(session: Session, ctx: RequestContext, port_id: str) -> dict[str, Any]:
    return port_filter.apply(session, [port_dict(visible_port(session, ctx, port_id))])[0]


def get_ports(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    return port_list.get_ports(session, ctx, query)


def update_port(session: Session, ctx: RequestContext, port_id: str, values: dict[str, Any], settings: CoreSettings) -> dict[str, Any]:
    port = visible_port(session, ctx, port_id)
    policy.enforce(ctx, "update", "port", values, _network_target(session, port.network_id))
    if "mac_address" in values and values["mac_address"] != port.mac_address:
        if _mac_taken(session, port.network_id, values["mac_address"], ignore_port=port.id):
            raise exc.MacAddressInUse(net_id=port.network_id, mac=values["mac_address"])
        port.mac_address = values["mac_address"]
    if "fixed_ips" in values:
        _reallocate(session, ctx, port, values["fixed_ips"], settings)
    for key, column in (
        ("name", "name"),
        ("description", "description"),
        ("admin_state_up", "admin_state_up"),
        ("device_id", "device_id"),
        ("device_owner", "device_owner"),
        ("binding:host_id", "binding_host_id"),
    ):
        if key in values:
            setattr(port, column, values[key])
    if "binding:profile" in values:
        port.binding_profile = json.dumps(values["binding:profile"], sort_keys=True)
    port.updated_at = utcnow()
    _flush_allocations(session)
    return port_dict(port)


def _reallocate(session: Session, ctx: RequestContext, port: Port, requests: list[dict[str, str]], settings: CoreSettings) -> None:
    """Keep the allocations still asked for, release the others, add the new ones."""
    subnets = _subnets_of(session, port.network_id)
    wanted = _resolve_requests(session, ctx, port.network_id, subnets, requests, settings)
    current = list(port.fixed_ips)
    keep: list[IPAllocation] = []
    new: list[Wanted] = []
    for subnets_wanted, ip in wanted:
        subnet = subnets_wanted[0]
        match = next(
            (a for a in current if a not in keep and a.subnet_id == subnet.id and (ip is None or a.ip_address == ip)),
            None,
        )
        if match is not None:
            keep.append(match)
        else:
            new.append(([subnet], ip))
    for allocation in current:
        if allocation not in keep:
            port.fixed_ips.remove(allocation)
    session.flush()
    _allocate(session, port, new)


def delete_port(session: Session, ctx: RequestContext, port_id: str) -> dict[str, Any]:
    port = visible_port(session, ctx, port_id)
    before = port_dict(port)
    session.delete(port)
    session.flush()
    return before


def set_port_status(session: Session, port_id: str, status: str) -> dict[str, Any]:
    port = session.get(Port, port_id)
    if port is None:
        raise exc.PortNotFound(port_id=port_id)
    port.status = status
    port.updated_at = utcnow()
    session.flush()
    return port_dict(port)


def delete_port_row(session: Session, port_id: str | None) -> None:
    """Delete a port (a hidden one of another extension) without the API's checks."""
    port = session.get(Port, port_id) if port_id else None
    if port is not None:
        session.delete(port)
        session.flush()


def port_snapshot(port: Port) -> dict[str, Any]:
    """Everything needed to put a deleted port back as it was."""
    return dict(port_dict(port), created_at_raw=port.created_at, updated_at_raw=port.updated_at)


def restore_deleted_port(session: Session, snap: dict[str, Any]) -> bool:
    """Put back a port deleted by a change being undone (its addresses, if still free); False if it cannot be."""
    if session.get(Port, snap["id"]) is not None:
        return True
    if session.get(Network, snap["network_id"]) is None:
        return False
    port = Port(
        id=snap["id"], tenant_id=snap["tenant_id"], network_id=snap["network_id"], name=snap["name"],
        description=snap["description"], mac_address=snap["mac_address"], admin_state_up=snap["admin_state_up"],
        status=snap["status"], device_id=snap["device_id"], device_owner=snap["device_owner"],
        binding_host_id=snap["binding:host_id"], binding_profile=json.dumps(snap["binding:profile"], sort_keys=True),
        created_at=snap["created_at_raw"], updated_at=snap["updated_at_raw"], fixed_ips=[],
    )  # fmt: skip
    session.add(port)
    session.flush()
    position = 0
    for entry in snap["fixed_ips"]:
        if session.get(IPAllocation, (entry["subnet_id"], entry["ip_address"])) is not None:
            continue  # taken while the change was out
        port.fixed_ips.append(
            IPAllocation(subnet_id=entry["subnet_id"], ip_address=entry["ip_address"], network_id=port.network_id, port_id=port.id,
                         position=position)
        )  # fmt: skip
        position += 1
    session.flush()
    return True
