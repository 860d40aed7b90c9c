"""Plugging one port's VIF: device (pyroute2), OVS port (IDL), ofport; and the reverse.

Operators tail these lines during VM boots: each step is one line with the
port id, device, MAC, ofport and milliseconds since the event that caused it.
Local VLAN tags isolate networks on br-int when no OpenFlow controller does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from restproxy_agent.bridge import IntegrationBridge, VifPort, vif_external_ids
from restproxy_agent.firewall.flows import DEAD_VLAN
from restproxy_agent.links import Links, device_name, peer_name
from restproxy_agent.netns_policy import DEFAULT_DENY, check_name

Port = dict[str, Any]


class LocalVlans:
    """network id -> local VLAN tag on br-int (1..4094), re-learnt from the bridge after a restart."""

    def __init__(self) -> None:
        self._tags: dict[str, int] = {}

    def tag_for(self, network_id: str) -> int:
        tag = self._tags.get(network_id)
        if tag is None:
            used = set(self._tags.values())
            tag = next(t for t in range(1, 4095) if t not in used)
            self._tags[network_id] = tag
        return tag

    def learn(self, network_id: str, tag: int | None) -> None:
        if tag and network_id not in self._tags and tag not in self._tags.values():
            self._tags[network_id] = tag

    def claimed(self, network_id: str, tag: int) -> None:
        """The tag the bridge's shared registry holds for the network (``IntegrationBridge.claim_vlan``) wins."""
        self._tags = {n: t for n, t in self._tags.items() if t != tag}
        self._tags[network_id] = tag

    def release_unused(self, networks_in_use: set[str]) -> None:
        for network_id in [n for n in self._tags if n not in networks_in_use]:
            del self._tags[network_id]


@attrs.frozen
class Plugged:
    device: str
    ofport: int
    tag: int | None


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


class VifPlumber:
    log = Logger()

    def __init__(
        self,
        bridge: IntegrationBridge,
        links: Links,
        vlans: LocalVlans | None,
        default_kind: str,
        mtu: int,
        ofport_timeout: float,
        netns_deny: tuple[str, ...] = DEFAULT_DENY,
    ) -> None:
        self.bridge = bridge
        self.links = links
        self.vlans = vlans
        self._claiming: dict[str, list[Deferred[int]]] = {}  # network id -> callers waiting for the claim in flight
        self.default_kind = default_kind
        self.mtu = mtu
        self.ofport_timeout = ofport_timeout
        self.netns_deny = netns_deny

    def kind_of(self, port: Port) -> str:
        profile = port.get("binding:profile") or {}
        kind = profile.get("vif_type") or profile.get("vif_kind")
        if kind in ("veth", "tap"):
            return kind
        return "veth" if profile.get("netns") else self.default_kind

    def netns_of(self, port: Port) -> str | None:
        """The namespace a veth VIF's peer goes into (the profile's ``netns``, else ``qvm-`` + the port id); None for a tap."""
        if self.kind_of(port) != "veth":
            return None
        netns = (port.get("binding:profile") or {}).get("netns")
        return netns if netns not in (None, "") else f"qvm-{port['id'][:11]}"

    def check(self, port: Port) -> None:
        """``NetnsRefused`` if the port's namespace fails ``netns_policy.check_name`` (the content checks come with the plug)."""
        netns = self.netns_of(port)
        if netns is not None:
            check_name(netns, self.netns_deny)

    def tag_of(self, port: Port) -> int | None:
        return self.vlans.tag_for(port["network_id"]) if self.vlans is not None else None

    async def claim_tag(self, port: Port) -> int | None:
        """The network's tag from the bridge's registry, shared with the DHCP agent (claimed there if new)."""
        if self.vlans is None:
            return None
        network_id = port["network_id"]
        waiting = self._claiming.get(network_id)
        if waiting is not None:  # one claim per network in flight: 500 new ports' claims are one, not a chain of 500
            d: Deferred[int] = Deferred()  # (a chain that deep unwinds recursively: RecursionError)
            waiting.append(d)
            return await d
        self._claiming[network_id] = waiting = []
        try:
            tag: int = await self.bridge.claim_vlan(network_id)
        except Exception as e:
            del self._claiming[network_id]
            for d in waiting:
                d.errback(e)
            raise
        del self._claiming[network_id]
        self.vlans.claimed(network_id, tag)
        for d in waiting:
            d.callback(tag)
        return tag

    async def plug(
        self,
        port: Port,
        since: float,
        up: bool = True,
        vm_ports: Iterable[str] = (),
        dead: bool = False,
        ofport_request: int | None = None,
        gated: bool = False,
        hold: Callable[[], Awaitable[Any] | None] | None = None,
    ) -> Plugged:
        """Device, OVS port, ofport. ``up=False`` (admin_state_up false) leaves the host end down: no traffic.

        ``dead``: plug it in the dead VLAN (4095), as Neutron does, until its flows are in: NORMAL then floods
        nothing to it, so it receives nothing unfiltered; the caller sets the real tag afterwards (``set_tag``).

        ``ofport_request``: the port asks OVS for this ofport (its flows can be installed for it meanwhile).

        ``gated``: the device's host end is made down whatever ``up`` says, and stays down: a VIF whose host end is
        down passes nothing either way (a tap or veth that is down neither takes frames from OVS nor gives it any),
        so its OVS port goes in at once, with its real tag, while its flows are being installed. The caller opens
        the gate (``open_gate``) once the flows are confirmed for the ofport OVS gave it.

        ``hold``: asked once the device is made; what it returns (if anything) is awaited before the OVS port is
        added (a gated port's flows, while a large batch of flows is in flight: see ``OpenFlowFirewall.streaming``).

        ``vm_ports``: the ids of the same VM's other ports, whose VIF ends may share its namespace.
        """
        port_id, mac = port["id"], port["mac_address"]
        device = device_name(port_id)
        self.check(port)
        netns = self.netns_of(port)
        if netns is not None:
            ours = [peer_name(p) for p in vm_ports]
            await self.links.create_veth_into_netns(device, peer_name(port_id), netns, mac, self.mtu, up=up and not gated, ours=ours)
            where = f"veth, peer {peer_name(port_id)} in netns {netns}"
        else:
            await self.links.create_tap(device, mac, self.mtu, up=up and not gated)
            where = "tap"
        self.log.info(
            "port {port_id} device {device} created ({where}{down}) mac {mac} +{ms}ms",
            port_id=port_id, device=device, where=where, mac=mac, ms=_ms(since),
            down=", down until it is filtered" if gated and up else "" if up else ", down: admin_state_up false",
        )  # fmt: skip
        tag = await self.claim_tag(port)  # claimed even when plugged dead: set_tag gives it once the port is filtered
        if dead:
            tag = DEAD_VLAN
        external_ids = vif_external_ids(port_id, mac, port.get("device_id") or "")
        held = hold() if hold is not None else None
        waited = ""
        if held is not None:
            started = time.monotonic()
            await held
            waited = f", after its flows: held {int((time.monotonic() - started) * 1000)}ms"
        await self.bridge.add_port(device, "", external_ids, tag=tag, mtu=self.mtu, ofport_request=ofport_request)
        self.log.info(
            "port {port_id} OVS port {device} added to {bridge} (tag {tag}{req}{waited}) +{ms}ms",
            port_id=port_id, device=device, bridge=self.bridge.name, tag=tag, waited=waited, ms=_ms(since),
            req=f", ofport_request {ofport_request}" if ofport_request is not None else "",
        )  # fmt: skip
        ofport = await self.bridge.wait_ofport(device, timeout=self.ofport_timeout)
        self.log.info(
            "port {port_id} device {device} ofport {ofport} +{ms}ms", port_id=port_id, device=device, ofport=ofport, ms=_ms(since)
        )
        return Plugged(device, ofport, tag)

    async def adjust(self, port: Port, actual: VifPort, since: float) -> bool:
        """A plugged port whose tag or external_ids drifted: fix them in place (no re-plug)."""
        changed = False
        tag = await self.claim_tag(port)
        if self.vlans is not None and actual.tag != tag:
            await self.bridge.set_tag(actual.name, tag)
            changed = True
        wanted = vif_external_ids(port["id"], port["mac_address"], port.get("device_id") or "")
        if any(actual.external_ids.get(k) != v for k, v in wanted.items()):
            await self.bridge.add_port(actual.name, "", wanted, tag=tag, mtu=self.mtu)
            changed = True
        if changed:
            self.log.info(
                "port {port_id} device {device} adjusted in place (tag {tag}) +{ms}ms",
                port_id=port["id"],
                device=actual.name,
                tag=tag,
                ms=_ms(since),
            )
        return changed

    async def open_gate(self, port: Port, device: str, ofport: int, since: float, waited: float) -> None:
        """A ``gated`` plug's host end up, now that its flows for ``ofport`` are confirmed (``waited``: the seconds
        spent waiting for them once OVS had given it its ofport)."""
        await self.links.set_link_up(device, True)
        self.log.info(
            "port {port_id} device {device} up: filtered for ofport {ofport} (waited {waited}ms for its flows) +{ms}ms",
            port_id=port["id"], device=device, ofport=ofport, waited=int(waited * 1000), ms=_ms(since),
        )  # fmt: skip

    async def set_tag(self, port: Port, device: str, since: float) -> None:
        """The port's real local VLAN tag (after a ``dead`` plug, once its flows are in)."""
        tag = self.tag_of(port)
        await self.bridge.set_tag(device, tag)
        self.log.info(
            "port {port_id} device {device} tag {tag} (filtered) +{ms}ms", port_id=port["id"], device=device, tag=tag, ms=_ms(since)
        )

    async def set_admin_state(self, port_id: str, device: str, up: bool, since: float) -> None:
        """admin_state_up: the host end of the VIF up, or down (no traffic either way; the OVS port stays)."""
        await self.links.set_link_up(device, up)
        self.log.info(
            "port {port_id} device {device} set {state} (admin_state_up {admin}) +{ms}ms",
            port_id=port_id, device=device, state="up" if up else "down", admin="true" if up else "false", ms=_ms(since),
        )  # fmt: skip

    async def unplug(self, port_id: str, actual: VifPort | None, since: float) -> None:
        device = actual.name if actual is not None else device_name(port_id)
        removed = await self.bridge.delete_port(device)
        deleted = await self.links.delete_link(device)
        self.log.info(
            "port {port_id} device {device} unplugged (OVS port {removed}, link {deleted}) +{ms}ms",
            port_id=port_id, device=device, removed="removed" if removed else "absent", deleted="deleted" if deleted else "absent",
            ms=_ms(since),
        )  # fmt: skip
