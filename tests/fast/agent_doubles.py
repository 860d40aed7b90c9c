"""In-memory doubles of what RestProxyAgent drives (OVSDB connection, br-int, netlink links, agent channel).

Each records what the agent asks of it in one shared ``Log`` (``("plug", port_id)`` ...), so that a test
reads the agent's decisions in order. Calls answer with already-fired Deferreds (the case of issue 10)
unless a test ``hold``s an operation, which then waits until ``release``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from restproxy_agent.bridge import VifPort, vif_external_ids
from restproxy_agent.firewall.flows import DEAD_VLAN
from restproxy_agent.links import device_name


class Log(list):
    """(action, subject) tuples, in the order the agent asked for them.

    ``monitors`` are called after each entry and each state change a double makes (``changed``): the doubles
    change their state before they log it, so a monitor sees every state the agent went through.
    """

    def __init__(self) -> None:
        super().__init__()
        self.monitors: list[Callable[[tuple[Any, ...] | None], None]] = []

    def actions(self, subject: str) -> list[str]:
        return [entry[0] for entry in self if entry[1] == subject]

    def append(self, entry: Any) -> None:
        super().append(entry)
        self.changed(entry)

    def changed(self, entry: tuple[Any, ...] | None = None) -> None:
        for monitor in self.monitors:
            monitor(entry)


class Gates:
    """Named operations a test holds (pending until released) or fails (``times`` calls raise)."""

    def __init__(self) -> None:
        self.held: dict[str, list[Deferred[None]]] = {}
        self.failing: dict[str, int] = {}

    def hold(self, op: str) -> None:
        self.held.setdefault(op, [])

    def release(self, op: str) -> None:
        for d in self.held.pop(op, []):
            d.callback(None)

    def fail(self, op: str, times: int) -> None:
        self.failing[op] = times

    def passage(self, op: str) -> Deferred[None]:
        if self.failing.get(op, 0) > 0:
            self.failing[op] -= 1
            return fail(RuntimeError(f"{op} failed (injected)"))
        if op in self.held:
            d: Deferred[None] = Deferred()
            self.held[op].append(d)
            return d
        return succeed(None)


class FakeConn:
    connected = True

    def __init__(self) -> None:
        self.reconnect_hooks: list[Any] = []

    def connect(self) -> Deferred[None]:
        return succeed(None)

    def on_reconnect(self, hook: Any) -> None:
        self.reconnect_hooks.append(hook)

    def add_listener(self, cb: Any, table: str | None = None) -> Any:
        return lambda: None

    def close(self) -> None:
        self.connected = False


class FakeBridge:
    """br-int as a dict of device name -> VifPort (ports carrying our iface-id)."""

    name = "br-int"

    def __init__(self, log: Log, gates: Gates) -> None:
        self.log, self.gates = log, gates
        self.ports: dict[str, VifPort] = {}
        self.tags: list[tuple[str, int | None]] = []  # (port id, tag) as set, in order (add_port's tag included)
        self.others: list[tuple[int, int | None]] = []  # (ofport, tag) of non-VIF ports
        self._ofports = iter(range(1, 10_000))
        self.requests: dict[str, int] = {}  # device -> ofport_request
        self.refuse_requests = False  # True: OVS gives another ofport than the one asked for (it is taken)

    def put(self, port_id: str, mac: str, device_id: str = "", tag: int | None = 1, **ids: str) -> VifPort:
        """A VIF already on the bridge (from before the agent started); ``ids`` override its external_ids."""
        name = device_name(port_id)
        external_ids = {**vif_external_ids(port_id, mac, device_id), **ids}
        self.ports[name] = VifPort(port_id, name, next(self._ofports), mac, tag, external_ids, "up")
        return self.ports[name]

    def ensure_bridge(self, *args: Any, **kwargs: Any) -> Deferred[None]:
        return succeed(None)

    def adds_together(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # (each add here is done at once: nothing to gather)

    def ports_with_iface_ids(self) -> dict[str, VifPort]:
        return {vif.iface_id: vif for vif in self.ports.values()}

    def vif(self, name: str) -> VifPort | None:
        return self.ports.get(name)

    def other_ports(self) -> list[tuple[int, int | None]]:
        return list(self.others)

    def add_port(
        self,
        name: str,
        bridge: str,
        external_ids: dict[str, str],
        tag: int | None = None,
        mtu: int | None = None,
        ofport_request: int | None = None,
    ) -> Any:
        port_id = external_ids["iface-id"]
        if ofport_request is not None:
            self.requests[name] = ofport_request
        self.log.append(("add_port", port_id))
        self.tags.append((port_id, tag))
        old = self.ports.get(name)

        def done(_: Any) -> bool:
            ofport = old.ofport if old is not None else None
            self.ports[name] = VifPort(port_id, name, ofport, external_ids["attached-mac"], tag, dict(external_ids), "up")
            self.log.changed()  # on the bridge from now on
            return True

        return self.gates.passage("add_port").addCallback(done)

    def ofports_taken(self) -> set[int]:
        return {vif.ofport for vif in self.ports.values() if vif.ofport is not None} | set(self.requests.values())

    def delete_port(self, name: str, wait_applied: bool = False) -> Deferred[bool]:
        self.requests.pop(name, None)
        vif = self.ports.pop(name, None)
        self.log.append(("delete_port", vif.iface_id if vif is not None else name))
        return succeed(vif is not None)

    def claim_vlan(self, network_id: str) -> Deferred[int]:
        tags = self.__dict__.setdefault("vlans", {})
        return succeed(tags.setdefault(network_id, len(tags) + 1))

    def set_tag(self, name: str, tag: int | None) -> Deferred[None]:
        self.ports[name] = attrs.evolve(self.ports[name], tag=tag)
        self.log.append(("set_tag", self.ports[name].iface_id))
        self.tags.append((self.ports[name].iface_id, tag))
        return succeed(None)

    async def wait_ofport(self, name: str, timeout: float = 10.0, fail_fast: bool = False) -> int:
        vif = self.ports[name]
        if vif.ofport is None:
            asked = self.requests.get(name)
            ofport = asked if asked is not None and not self.refuse_requests else next(self._ofports)
            vif = self.ports[name] = attrs.evolve(vif, ofport=ofport)
            self.log.changed()
        assert vif.ofport is not None
        return vif.ofport


class FakeLinks:
    """Netlink: the host devices and whether each is up."""

    def __init__(self, log: Log, gates: Gates) -> None:
        self.log, self.gates = log, gates
        self.up: dict[str, bool] = {}

    def _port(self, device: str) -> str:
        return device[len("tap") :]

    def create_tap(self, device: str, mac: str, mtu: int, up: bool = True) -> Deferred[None]:
        self.up[device] = up
        self.log.append(("create_tap", self._port(device)))
        return self.gates.passage("create_tap")

    def create_veth_into_netns(self, device: str, peer: str, netns: str, mac: str, mtu: int, up: bool = True, ours: Any = ()) -> Any:
        self.up[device] = up
        self.log.append(("create_veth", self._port(device)))
        return self.gates.passage("create_veth")

    def set_link_up(self, device: str, up: bool) -> Deferred[None]:
        self.up[device] = up
        self.log.append(("link_up" if up else "link_down", self._port(device)))
        return succeed(None)

    def delete_link(self, device: str) -> Deferred[bool]:
        self.log.append(("delete_link", self._port(device)))
        return succeed(self.up.pop(device, None) is not None)

    def stop(self) -> None:
        pass


class FakeChannel:
    """The agent channel: ``list_ports`` answers when the test calls ``answer_list``; the watch never opens."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.listing: Deferred[tuple[int, list[dict[str, Any]]]] = Deferred()
        self.closed = False

    def answer_list(self, seq: int, ports: list[dict[str, Any]]) -> None:
        self.listing.callback((seq, ports))

    def list_ports(self) -> Deferred[tuple[int, list[dict[str, Any]]]]:
        return self.listing

    def open_watch(self, seq: int) -> Deferred[Any]:
        return Deferred()  # cancelled when the agent stops

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        if method == "update_device_list":
            for port_id in kwargs["devices_up"]:
                self.log.append(("report_up", port_id))
            return {"devices_up": kwargs["devices_up"], "failed_devices_up": []}
        if method == "update_device_down":
            self.log.append(("report_down", kwargs["device"]))
            return {"device": kwargs["device"], "exists": True}
        return {}

    async def close(self) -> None:
        self.closed = True


class FakeFirewall:
    """The firewall driver: records ("filter", port id) / ("unfilter", port id) and the flows' inputs; ``hold("filter")``.

    ``applied``: what the agent asked for; ``confirmed``: port id -> the ofport its flows are confirmed for (the
    barrier's answer), set when the filter passes. ``burst``: what ``streaming()`` answers (a large batch in flight).
    """

    enabled = True
    name = "openflow"
    found_at_start = 0

    def __init__(self, log: Log, gates: Gates) -> None:
        self.log, self.gates = log, gates
        self.applied: dict[str, tuple[dict[str, Any], int, int, dict[str, Any]]] = {}  # port id -> (port, ofport, zone, groups)
        self.confirmed: dict[str, int] = {}
        self.stale_removed = 0
        self.groups: dict[str, Any] = {}
        self.burst = False

    def streaming(self) -> bool:
        return self.burst

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> None:
        pass

    def apply_port(self, port: dict[str, Any], ofport: int, zone: int, groups: dict[str, Any]) -> Deferred[int]:
        self.log.append(("filter", port["id"]))
        self.applied[port["id"]] = (dict(port), ofport, zone, dict(groups))

        def confirmed(_: Any) -> int:
            self.confirmed[port["id"]] = ofport
            self.log.changed()
            return 1

        return self.gates.passage("filter").addCallback(confirmed)

    def remove_port(self, port_id: str) -> Deferred[int]:
        self.applied.pop(port_id, None)
        self.confirmed.pop(port_id, None)
        self.log.append(("unfilter", port_id))
        return succeed(1)

    def set_infra(self, ports: Any) -> Deferred[int]:
        self.infra = list(ports)
        return succeed(0)

    def flow_count(self, owner: str) -> int:
        return 1

    async def remove_stale(self) -> int:
        self.stale_removed += 1
        return 0

    def members_changed(self, group_id: str, groups: dict[str, Any]) -> Deferred[int]:
        self.log.append(("members", group_id))
        self.groups = dict(groups)
        return succeed(1)

    def members_delta(self, group_id: str, addresses: list[str], groups: dict[str, Any]) -> Deferred[int]:
        self.log.append(("member_delta", group_id, tuple(sorted(addresses))))
        self.groups = dict(groups)
        return succeed(1)


class FilterSafety:
    """Watches new ports from their plug on: the safety invariant of a VIF with security groups, checked at every
    state the doubles go through (``Log.monitors``).

    Unless its flows are confirmed for the ofport it actually has on the bridge, a watched port's host end is down
    or its OVS port is on the dead VLAN (a host end that is up off the bridge counts as unfiltered too); and when it
    is reported ACTIVE, its host end is up, on its real tag, and filtered for that ofport. Breaches are recorded in
    ``violations`` (raising would only fail the agent's sync and hide them behind its retry).
    """

    def __init__(self, log: Log, bridge: FakeBridge, links: FakeLinks, firewall: FakeFirewall, *port_ids: str) -> None:
        self.bridge, self.links, self.firewall = bridge, links, firewall
        self.port_ids = port_ids
        self.violations: list[tuple[str, str, tuple[Any, ...] | None]] = []  # (port id, what, the log entry then)
        log.monitors.append(self.check)

    def filtered(self, port_id: str) -> bool:
        vif = self.bridge.ports.get(device_name(port_id))
        return vif is not None and vif.ofport is not None and self.firewall.confirmed.get(port_id) == vif.ofport

    def check(self, entry: tuple[Any, ...] | None) -> None:
        for port_id in self.port_ids:
            device = device_name(port_id)
            vif = self.bridge.ports.get(device)
            up = self.links.up.get(device, False)
            dead = vif is not None and vif.tag == DEAD_VLAN
            if up and not dead and not self.filtered(port_id):
                self.violations.append((port_id, "up unfiltered", entry))
            if entry == ("report_up", port_id) and not (up and not dead and self.filtered(port_id)):
                self.violations.append((port_id, "ACTIVE while not up and filtered", entry))
