"""A bulk port create's unit of work: every port checked, addressed and inserted in one transaction.

Neutron's bulk create is all or nothing: one refused item refuses the request
and nothing is created. Here the whole batch is one unit of work, so a refusal
(a network the caller may not use, a policy, a MAC or fixed IP taken in the
store or twice in the batch, a subnet out of addresses) rolls back everything,
events and journal included. The checks and picks of ``store/ports.py`` are
done once per network or subnet for the whole batch (a query per batch, not
per port), and the rows go in with one Core insert (an executemany) per table.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import netaddr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from server_plugin import exceptions as exc
from server_plugin import ipam, policy
from server_plugin.attributes import GENERATED
from server_plugin.context import RequestContext
from server_plugin.store import agent_events
from server_plugin.store.db import RetryTransaction
from server_plugin.store.models import IPAllocation, Network, Port, Subnet, utcnow
from server_plugin.store.networks import usable_network
from server_plugin.store.ports import (
    _INSERT_COLLECTIONS,
    _INSERT_PORT,
    PORT_DEFAULTS,
    SMALL_POOL,
    NewAllocation,
    NewPort,
    SubnetPools,
    Wanted,
    _default_requests,
    _resolve_requests,
    _rows,
    _subnets_of,
)
from server_plugin.store.settings import CoreSettings
from server_plugin.store.views import port_dict

Body = dict[str, Any]
IN_CHUNK = 500  # values per IN (...) list: well under every backend's parameter limit


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


# -- MACs --------------------------------------------------------------------------------------


def _taken_macs(session: Session, net_id: str, macs: Sequence[str]) -> set[str]:
    taken: set[str] = set()
    for chunk in _chunks(sorted(set(macs))):
        taken.update(session.scalars(select(Port.mac_address).where(Port.network_id == net_id, Port.mac_address.in_(chunk))))
    return taken


def _choose_macs(session: Session, nets: list[str], requested: list[Any], settings: CoreSettings) -> list[str]:
    """One MAC per port (``requested[i]`` or GENERATED): given ones checked, the rest random, unique per network in the store
    and in the batch; one query per network and round."""
    chosen: list[str | None] = [None] * len(nets)
    by_net: dict[str, set[str]] = {}
    given: dict[str, list[str]] = {}
    for i, (net_id, mac) in enumerate(zip(nets, requested, strict=True)):
        if mac is not GENERATED:
            if mac in by_net.setdefault(net_id, set()):
                raise exc.MacAddressInUse(net_id=net_id, mac=mac)
            by_net[net_id].add(mac)
            given.setdefault(net_id, []).append(mac)
            chosen[i] = mac
    for net_id, macs in given.items():
        taken = _taken_macs(session, net_id, macs)
        if taken:
            raise exc.MacAddressInUse(net_id=net_id, mac=next(m for m in macs if m in taken))
    missing = [i for i, mac in enumerate(chosen) if mac is None]
    for _ in range(settings.mac_generation_retries):
        if not missing:
            break
        drawn: dict[str, list[int]] = {}
        for i in missing:
            mac = ipam.random_mac(settings.base_mac)
            if mac in by_net.setdefault(nets[i], set()):
                continue  # drawn twice in the batch: drawn again next round
            by_net[nets[i]].add(mac)
            chosen[i] = mac
            drawn.setdefault(nets[i], []).append(i)
        for net_id, indexes in drawn.items():
            taken = _taken_macs(session, net_id, [chosen[i] for i in indexes])  # type: ignore[misc]
            for i in indexes:
                if chosen[i] in taken:
                    chosen[i] = None
        missing = [i for i, mac in enumerate(chosen) if mac is None]
    if missing:
        raise exc.MacAddressGenerationFailure(net_id=nets[missing[0]])
    return chosen  # type: ignore[return-value]


# -- fixed IPs --------------------------------------------------------------------------------


class _Addresses:
    """The free addresses of one subnet for a batch: what the store holds, what the batch named and what it picked.

    Pools of up to SMALL_POOL addresses hand out their lowest free addresses in order
    (one read of the subnet's allocations). Larger ones check random candidates, as
    many as the batch may need, with one indexed query per round, and are scanned
    only when those run short (nearly full).
    """

    def __init__(self, session: Session, subnet: SubnetPools, named: set[str], wanted: int) -> None:
        self.session, self.subnet, self.named, self.wanted = session, subnet, named, wanted
        self.pools = list(subnet.pools)
        self.picked: set[str] = set()
        self.small = bool(self.pools) and ipam.pool_size(self.pools) <= SMALL_POOL
        self._free: list[str] = []
        self._scan: Iterator[str] | None = None
        self._exhausted = not self.pools

    def take(self) -> str | None:
        """A free address, or None when the pools are full."""
        while not self._free and not self._exhausted:
            self._refill()
        if not self._free:
            return None
        ip = self._free.pop()
        self.picked.add(ip)
        return ip

    def _used(self) -> set[str]:
        stmt = select(IPAllocation.ip_address).where(IPAllocation.subnet_id == self.subnet.id)
        return set(self.session.scalars(stmt)) | self.named | self.picked

    def _refill(self) -> None:
        if self.small or self._scan is not None:
            self._refill_scan()
            return
        unavailable = self.named | self.picked
        candidates = list(dict.fromkeys(c for c in ipam.random_candidates(self.pools, self.wanted + 8) if c not in unavailable))
        taken: set[str] = set()
        for chunk in _chunks(candidates):
            stmt = select(IPAllocation.ip_address).where(IPAllocation.subnet_id == self.subnet.id, IPAllocation.ip_address.in_(chunk))
            taken.update(self.session.scalars(stmt))
        free = [c for c in candidates if c not in taken]
        if not candidates or len(free) * 2 < len(candidates):
            self._scan = self._addresses_not_in(self._used())  # mostly full: scanned from now on
            return
        self._free = free[::-1]  # (taken from the end, in the order drawn)

    def _refill_scan(self) -> None:
        if self._scan is None:
            self._scan = self._addresses_not_in(self._used())
        self._free = list(itertools.islice(self._scan, max(self.wanted, 1)))[::-1]
        if not self._free:
            self._exhausted = True

    def _addresses_not_in(self, used: set[str]) -> Iterator[str]:
        """The pools' addresses in order, but ``used`` (lowest first, as operators expect in small pools)."""
        used_ints = {int(netaddr.IPAddress(ip)) for ip in used}
        for start, end in self.pools:
            first, version = netaddr.IPAddress(start), netaddr.IPAddress(start).version
            for value in range(int(first), int(netaddr.IPAddress(end)) + 1):
                if value not in used_ints:
                    yield str(netaddr.IPAddress(value, version))


def _named_ips(session: Session, wanted: list[tuple[str, list[Wanted]]]) -> dict[str, set[str]]:
    """The fixed IPs the batch names, by subnet: each once in the batch and free in the store, else IpAddressInUse."""
    named: dict[str, set[str]] = {}
    network_of: dict[tuple[str, str], str] = {}
    for net_id, requests in wanted:
        for subnets, ip in requests:
            if ip is None:
                continue
            subnet_ips = named.setdefault(subnets[0].id, set())
            if ip in subnet_ips:
                raise exc.IpAddressInUse(net_id=net_id, ip_address=ip)
            subnet_ips.add(ip)
            network_of[(subnets[0].id, ip)] = net_id
    for subnet_id, ips in named.items():
        for chunk in _chunks(sorted(ips)):
            stmt = select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet_id, IPAllocation.ip_address.in_(chunk))
            taken = session.scalar(stmt.limit(1))
            if taken is not None:
                raise exc.IpAddressInUse(net_id=network_of[(subnet_id, taken)], ip_address=taken)
    return named


def _addresses(session: Session, rows: list[NewPort], wanted: list[list[Wanted]]) -> None:
    """Fill each new port's ``fixed_ips``: the named addresses, and picks from the first subnet with room."""
    named = _named_ips(session, [(row.network_id, requests) for row, requests in zip(rows, wanted, strict=True)])
    demand: dict[str, int] = {}
    for requests in wanted:
        for subnets, ip in requests:
            if ip is None:
                for subnet in subnets:
                    demand[subnet.id] = demand.get(subnet.id, 0) + 1
    free: dict[str, _Addresses] = {}
    for row, requests in zip(rows, wanted, strict=True):
        for position, (subnets, ip) in enumerate(requests):
            subnet = subnets[0]
            if ip is None:
                for subnet in subnets:
                    if subnet.id not in free:
                        free[subnet.id] = _Addresses(session, subnet, named.get(subnet.id, set()), demand[subnet.id])
                    ip = free[subnet.id].take()
                    if ip is not None:
                        break
                else:
                    raise exc.IpAddressGenerationFailure(net_id=row.network_id)
            row.fixed_ips.append(NewAllocation(subnet.id, ip, row.network_id, row.id, position))


# -- ports ------------------------------------------------------------------------------------


def create_port_rows(
    session: Session,
    ctx: RequestContext,
    items: Sequence[Body],
    settings: CoreSettings,
    before_insert: Callable[[Body, NewPort], None] | None = None,
) -> list[NewPort]:
    """The new ports' rows, in the order of ``items`` (each with its ``id``), inserted with one statement per table.

    Every item is checked before anything is written: a refused one raises, and the
    caller's transaction rolls back. The rows are ``ports.NewPort``s, as
    ``ports.create_port_row`` gives (plain objects inserted with Core, never in the
    session: 500 ORM ``Port``s and their collections cost more CPU in the flush
    than the statements), each with its ``network``; ``before_insert(values, row)``
    runs for each once its addresses are chosen (an extension's rows go in with it)."""
    networks: dict[str, Network] = {}
    subnets: dict[str, list[Subnet]] = {}
    for values in items:
        net_id = values["network_id"]
        net = networks.get(net_id)
        if net is None:
            net = networks[net_id] = usable_network(session, ctx, net_id, "create_port")
            subnets[net.id] = _subnets_of(session, net.id)
        policy.enforce(ctx, "create", "port", values, policy.Target(network_tenant_id=net.tenant_id), defaults=PORT_DEFAULTS)
    nets = [networks[v["network_id"]].id for v in items]
    wanted = []
    for net_id, values in zip(nets, items, strict=True):
        requested = values.get("fixed_ips", GENERATED)
        if requested is GENERATED:
            wanted.append(_default_requests(subnets[net_id]))
        else:
            wanted.append(_resolve_requests(session, ctx, net_id, subnets[net_id], requested, settings))
    macs = _choose_macs(session, nets, [v.get("mac_address", GENERATED) for v in items], settings)
    now = utcnow()
    rows = [
        NewPort(
            id=values["id"], tenant_id=values["tenant_id"], network_id=net_id, name=values.get("name", ""),
            description=values.get("description", ""), mac_address=mac, admin_state_up=values.get("admin_state_up", True),
            status="DOWN", device_id=values.get("device_id", ""), device_owner=values.get("device_owner", ""),
            binding_host_id=values.get("binding:host_id", ""),
            binding_profile=json.dumps(values.get("binding:profile", {}), sort_keys=True), created_at=now, updated_at=now,
            port_security_enabled=None, network=networks[net_id], fixed_ips=[], security_group_bindings=[],
            allowed_address_pairs=[],
        )
        for values, net_id, mac in zip(items, nets, macs, strict=True)
    ]  # fmt: skip
    _addresses(session, rows, wanted)
    if before_insert is not None:
        for values, row in zip(items, rows, strict=True):
            before_insert(values, row)
    _insert_new_ports(session, rows)
    return rows


def _insert_new_ports(session: Session, rows: Sequence[NewPort]) -> None:
    """Insert the new ports, then each collection of theirs (fixed IPs, the extensions' rows): one executemany per
    table, as ``ports._insert_new_port`` does for one. A unique key lost to another writer (an address, a MAC)
    starts the unit of work again, as a flush would."""
    for row in rows:
        if row.port_security_enabled is None:
            row.port_security_enabled = True  # the column's default
    try:
        session.flush()  # what the hooks added to the session (e.g. a default group made here) goes first
        connection = session.connection()
        _INSERT_PORT.insert(connection, [row.values() for row in rows])
        for collection, insert in _INSERT_COLLECTIONS:
            values = [value for row in rows for value in _rows(getattr(row, collection))]
            if values:
                insert.insert(connection, values)
    except IntegrityError as e:
        raise RetryTransaction() from e


def purge_ports(session: Session, port_ids: Sequence[str]) -> None:
    """Undo of a bulk create: the ports go, and whoever heard of them hears they are gone (after the delete, so that
    their security groups' members are told without them)."""
    rows: list[Port] = []
    for chunk in _chunks(list(port_ids)):
        rows += session.scalars(select(Port).where(Port.id.in_(chunk)).options(selectinload(Port.fixed_ips)))
    gone = [port_dict(row) for row in rows]
    for row in rows:
        session.delete(row)
    session.flush()
    agent_events.ports_change(session, [(port, None) for port in gone])
