"""IP address management: pools, their validation, and picking free addresses.

Pure functions over netaddr; the store supplies the addresses in use, and the
database's primary key on (subnet_id, ip_address) settles any race between
two servers picking the same candidate.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable, Sequence

import netaddr

from server_plugin import exceptions as exc

# Among the lowest free addresses, pick one at random: addresses stay low and
# predictable for operators, and concurrent creates rarely collide.
CANDIDATE_WINDOW = 16
SMALL_POOL = 1 << 16


def usable_range(cidr: str) -> tuple[netaddr.IPAddress, netaddr.IPAddress]:
    """First and last host address (network and broadcast excluded, as Quantum)."""
    net = netaddr.IPNetwork(cidr)
    if net.size <= 2:
        return net[0], net[-1]
    return net[1], net[-2]


def default_gateway(cidr: str) -> str:
    net = netaddr.IPNetwork(cidr)
    return str(net[1]) if net.size > 1 else str(net[0])


def default_pools(cidr: str, gateway_ip: str | None) -> list[dict[str, str]]:
    """The usable range split around the gateway."""
    first, last = usable_range(cidr)
    pool = netaddr.IPSet(netaddr.IPRange(first, last))
    if gateway_ip is not None:
        pool.remove(netaddr.IPAddress(gateway_ip))
    return [{"start": str(r[0]), "end": str(r[-1])} for r in pool.iter_ipranges()]


def validate_gateway(cidr: str, ip_version: int, gateway_ip: str | None, force_on_subnet: bool) -> None:
    if gateway_ip is None:
        return
    gateway = netaddr.IPAddress(gateway_ip)
    if gateway.version != ip_version:
        raise exc.InvalidInput(error_message=f"gateway_ip '{gateway_ip}' does not match the ip_version '{ip_version}'")
    if force_on_subnet:
        net = netaddr.IPNetwork(cidr)
        if gateway not in net or (net.size > 2 and gateway in (net.network, net[-1])):
            raise exc.InvalidInput(error_message=f"Gateway is not valid on subnet {gateway_ip}")


def validate_pools(cidr: str, ip_version: int, pools: Sequence[dict[str, str]], gateway_ip: str | None) -> None:
    """Quantum's checks: valid, same version, ordered, inside the cidr, disjoint, gateway outside."""
    net = netaddr.IPNetwork(cidr)
    first, last = usable_range(cidr)
    ranges: list[netaddr.IPRange] = []
    for pool in pools:
        pool_text = f"{pool['start']}-{pool['end']}"
        start, end = netaddr.IPAddress(pool["start"]), netaddr.IPAddress(pool["end"])
        if start.version != net.version or end.version != net.version:
            raise exc.InvalidAllocationPool(pool=pool_text)
        if end < start:
            raise exc.InvalidAllocationPool(pool=pool_text)
        if start < first or end > last:
            raise exc.OutOfBoundsAllocationPool(pool=pool_text, subnet_cidr=cidr)
        ranges.append(netaddr.IPRange(start, end))
    ordered = sorted(ranges, key=lambda r: r.first)
    for left, right in zip(ordered, ordered[1:], strict=False):
        if right.first <= left.last:
            raise exc.OverlappingAllocationPools(pool_1=str(left), pool_2=str(right), subnet_cidr=cidr)
    if gateway_ip is not None:
        gateway = netaddr.IPAddress(gateway_ip)
        for r in ranges:
            if gateway in r:
                raise exc.GatewayConflictWithAllocationPools(ip_address=gateway_ip, pool=str(r))


def ip_is_valid_for_subnet(cidr: str, ip: str) -> bool:
    """Inside the cidr and neither its network nor (IPv4) broadcast address."""
    net = netaddr.IPNetwork(cidr)
    address = netaddr.IPAddress(ip)
    if address.version != net.version or address not in net:
        return False
    if net.size <= 2:
        return True
    if address == net.network:
        return False
    if net.version == 4 and address == net.broadcast:
        return False
    return True


def in_pools(pools: Iterable[tuple[str, str]], ip: str) -> bool:
    address = netaddr.IPAddress(ip)
    return any(netaddr.IPAddress(a) <= address <= netaddr.IPAddress(b) for a, b in pools)


def pick_free_ip(pools: Sequence[tuple[str, str]], used: set[str], rng: random.Random | None = None) -> str | None:
    """A free address from the pools, or None when they are full."""
    rng = rng or random
    used_ints = {int(netaddr.IPAddress(ip)) for ip in used}
    for start, end in pools:
        first, last = int(netaddr.IPAddress(start)), int(netaddr.IPAddress(end))
        version = netaddr.IPAddress(start).version
        size = last - first + 1
        in_pool = sum(1 for u in used_ints if first <= u <= last)
        if in_pool >= size:
            continue
        if size <= SMALL_POOL or in_pool > size // 2:
            candidates: list[int] = []
            for value in range(first, last + 1):
                if value not in used_ints:
                    candidates.append(value)
                    if len(candidates) >= CANDIDATE_WINDOW:
                        break
            if candidates:
                return str(netaddr.IPAddress(rng.choice(candidates), version))
        else:
            for _ in range(128):
                value = rng.randint(first, last)
                if value not in used_ints:
                    return str(netaddr.IPAddress(value, version))
    return None


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> tuple[int, int]:
    """(integer, version) of an address: the stdlib parses in a fraction of netaddr's time, and a pool's bounds (every
    port create parses them) are parsed once."""
    address = ipaddress.ip_address(text)
    return int(address), address.version


def _text(value: int, version: int) -> str:
    """An address as netaddr writes it (IPv4 alike, formatted here: the stdlib's object costs more than the text;
    IPv6 left to netaddr, whose form the API has always shown)."""
    if version == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(netaddr.IPAddress(value, version))


def pool_size(pools: Sequence[tuple[str, str]]) -> int:
    return sum(_address(b)[0] - _address(a)[0] + 1 for a, b in pools)


def random_candidates(pools: Sequence[tuple[str, str]], count: int, rng: random.Random | None = None) -> list[str]:
    """``count`` random addresses from the pools (weighted by pool size), for sparse subnets."""
    rng = rng or random
    spans = [(*_address(a), _address(b)[0]) for a, b in pools]
    total = sum(last - first + 1 for first, _, last in spans)
    result = []
    for _ in range(count):
        offset = rng.randrange(total)
        for first, version, last in spans:
            size = last - first + 1
            if offset < size:
                result.append(_text(first + offset, version))
                break
            offset -= size
    return result


def random_mac(base_mac: str, rng: random.Random | None = None) -> str:
    """A MAC from ``base_mac`` (e.g. fa:16:3e:00:00:00): its non-zero octets kept, the rest random."""
    rng = rng or random
    octets = base_mac.lower().split(":")
    free = [i for i, octet in enumerate(octets) if i >= 3 and octet == "00"]
    bits = rng.getrandbits(8 * len(free)) if free else 0  # one draw for all of them
    for i in free:
        octets[i] = f"{bits & 255:02x}"
        bits >>= 8
    return ":".join(octets)
