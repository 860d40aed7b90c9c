"""Keeps br-int's flows equal to what the compiler says, over one OpenFlow connection, in batches.

Flows belong to owners: ``static`` (the pipeline's skeleton), ``drops`` (shared drops, see ``start``), ``infra``
(non-VIF ports), one owner per port, ``zone:<n>`` (the member flows of the remote groups the zone's ports use;
recomputed at flush time for the zones marked dirty) and ``conj`` (what each conjunction id does).
``set_owner`` records what an owner should have; changes made in the same reactor turn are flushed together as
one ONF bundle (atomic: a port's old rule set is replaced by its new one at once, never a moment with neither),
made of the *difference* from what is installed (OFPFC_DELETE_STRICT for entries that went, OFPFC_ADD for entries
that are new or whose actions changed), and each caller's Deferred fires when the bundle's barrier reply is in:
its flows are in the switch. One batch is in flight at a time; a failed bundle changes nothing in OVS (atomic),
so the installed state stays what it was and the callers fail (the agent retries the port). A batch of only new
entries (a new port, a new member) goes as plain flow mods + barrier: each intermediate state admits a subset of
the final one, so atomicity buys nothing there; a failure in it leaves the owner marked for a full resend.

Every flow's cookie is a digest of its content (``encode.cookie``). At start the driver reads the cookies on the
switch; until ``remove_stale`` a wanted flow whose cookie is among them is *adopted* (counted as installed, not sent):
after a restart only what changed while the agent was down goes to the switch (a restart with 500 unchanged ports
re-sent their ~6,000 flows, half of the batch that new ports' flows waited behind). Changed entries are ADDed over
the old ones (an ADD of the same entry replaces it, cookie included); ``remove_stale``, called once every port's flows
are in, deletes every flow whose cookie no wanted flow has (the earlier run's leftovers, an older release's flows
under its run cookie, OVS's default NORMAL flow): between the two, old and new flows both filter. After a reconnect
(a restarted ovs-vswitchd has no flows), nothing is adopted and every owner's flows are sent again.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from restproxy_agent.firewall import compiler, encode
from restproxy_agent.firewall.flows import Flow
from restproxy_agent.openflow import OpenFlowClient, OpenFlowProtocol

Key = tuple[Any, ...]
STREAMING = 1000  # flow mods in flight from which ``streaming`` says new OVS ports should wait


class NoopFirewall:
    """``firewall_driver = noop``, or an OpenFlow controller owns br-int: nothing is filtered, flows are not touched."""

    enabled = False
    name = "none"

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> None:
        pass

    def apply_port(self, port: Mapping[str, Any], ofport: int, zone: int, groups: Mapping[str, Any]) -> defer.Deferred[int]:
        return defer.succeed(0)

    def remove_port(self, port_id: str) -> defer.Deferred[int]:
        return defer.succeed(0)

    def remove_stale(self) -> defer.Deferred[int]:
        return defer.succeed(0)

    def members_changed(self, group_id: str, groups: Mapping[str, Any]) -> defer.Deferred[int]:
        return defer.succeed(0)

    def members_delta(self, group_id: str, addresses: Iterable[str], groups: Mapping[str, Any]) -> defer.Deferred[int]:
        return defer.succeed(0)


class OpenFlowFirewall:
    """Security groups in br-int's flows (see the module docstring)."""

    log = Logger()
    enabled = True
    name = "openflow"

    def __init__(self, reactor: Any, mgmt_path: str, client: OpenFlowClient | None = None) -> None:
        self.reactor = reactor
        self.client = client or OpenFlowClient(reactor, mgmt_path, self._connected)
        self.desired: dict[str, dict[Key, Flow]] = {}
        self.installed: dict[str, dict[Key, Flow]] = {}
        self._dirty: dict[str, list[defer.Deferred[int]]] = {}
        self._scheduled: Any = None
        self._in_flight = False
        self._in_flight_mods = 0  # flow mods of the batch in flight
        self._deleting = False  # remove_stale's deletes are out: no batch goes
        self._flying: dict[str, dict[Key, Flow]] = {}  # the batch in flight: what it leaves each owner with ('installed': before it)
        self._found: set[int] = set()  # cookies on the switch at start, until remove_stale: flows that may be adopted
        self._touched: set[Key] = set()  # ... unless this run sent something for their entry
        self.found_at_start = 0
        self._connections = 0
        self.stats = {"bundles": 0, "flow_mods": 0, "stale_deleted": 0, "adopted": 0}
        self.conj_ids = compiler.ConjIds()
        self.groups: Mapping[str, Any] = {}
        self.port_specs: dict[str, tuple[int, frozenset[compiler.ConjSpec]]] = {}  # port id -> (zone, conjunctions)
        self.zone_specs: dict[int, Counter[compiler.ConjSpec]] = {}  # zone -> its ports' conjunctions, with use counts
        self._dirty_zones: set[int] = set()
        self._dirty_addresses: dict[int, set[str]] = {}  # zone -> addresses whose member flows a member event changed
        self._conj_count = 0
        self.timing: dict[str, tuple[int, float, float]] = {}  # owner -> its last batch: (flow mods, encode s, total s)

    # -- lifecycle
    def start(self) -> defer.Deferred[None]:
        """Connect (HELLO, OpenFlow 1.3), then install the static pipeline; fires once it is in.

        The shared drops of DHCP server replies and RAs (owner ``drops``) come with it only on a switch without an
        earlier run's flows. Over an earlier run's (a restart, an upgrade) they wait for ``remove_stale``, when every
        port's flows are in: a router or DHCP port gets its replies back by its own priority-91 flows, which an older
        release's flows lack, so drops installed first would cut its RAs or DHCP replies until its resync lands. (A
        restart of this release keeps the earlier run's drops meanwhile: the same entries, under the old cookie.)"""
        drops = {f.key for f in compiler.server_drops()}
        self.desired["static"] = {f.key: f for f in compiler.static_flows() if f.key not in drops}
        self._dirty.setdefault("static", [])
        return self.client.connect().addCallback(lambda _: defer.ensureDeferred(self._first_flows()))

    async def _first_flows(self) -> None:
        try:
            cookies = [c for c in await self.client.flow_cookies() if c]
            self._found, self.found_at_start = set(cookies), len(cookies)
            earlier = bool(self._found)
        except Exception as e:  # (then as after a restart, adopting nothing: remove_stale brings them)
            self.log.warn("firewall: reading the switch's flows at start failed: {error}", error=str(e))
            earlier = True
        if not earlier:
            await self.set_owner("drops", compiler.server_drops())
        await self.flushed("static")

    def stop(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self.client.stop()

    def _connected(self, proto: OpenFlowProtocol) -> None:
        self._connections += 1
        if self._connections > 1:
            self.log.warn("OpenFlow reconnected: sending every owner's flows again ({owners} owners)", owners=len(self.desired))
            self.installed.clear()
            self._found.clear()
            self._touched.clear()
            for owner in self.desired:
                self._dirty.setdefault(owner, [])
            self._schedule()
        # (the first connection's flush waits for ``_first_flows``: what is on the switch decides what is sent)

    def flushed(self, owner: str) -> defer.Deferred[None]:
        """Fires when ``owner``'s current flows are in the switch (an owner in flight waits for the batch after)."""
        if owner not in self._dirty and owner not in self._flying:
            return defer.succeed(None)
        d: defer.Deferred[int] = defer.Deferred()
        self._dirty.setdefault(owner, []).append(d)
        self._schedule()
        return d.addCallback(lambda _: None)

    # -- owners
    def set_owner(self, owner: str, flows: Iterable[Flow]) -> defer.Deferred[int]:
        """``owner`` should have exactly ``flows``; fires with the number of flow mods sent once they are in.

        Answered at once only if nothing of ``owner`` is pending: while its batch is in flight ``installed`` still
        shows what was there before it, so a change back to that must go in the next batch (which diffs against what
        the flying one installs), or the flying one's flows would stay."""
        wanted = {f.key: f for f in flows}
        if not wanted:
            self.desired.pop(owner, None)
        else:
            self.desired[owner] = wanted
        if owner not in self._dirty and owner not in self._flying and self.installed.get(owner, {}) == wanted:
            return defer.succeed(0)
        d: defer.Deferred[int] = defer.Deferred()
        self._dirty.setdefault(owner, []).append(d)
        self._schedule()
        return d

    def apply_port(self, port: Mapping[str, Any], ofport: int, zone: int, groups: Mapping[str, Any]) -> defer.Deferred[int]:
        """Compile ``port``'s flows and install them (atomically replacing its previous ones)."""
        info = compiler.port_info(port, ofport, zone)
        self.groups = groups
        flows = compiler.port_flows(info, groups, self.conj_ids)
        specs = frozenset(compiler.conj_specs(info, groups))
        old = self.port_specs.get(port["id"])
        if old != (zone, specs):
            self.port_specs[port["id"]] = (zone, specs)
            if old is not None:
                self._use(*old, -1)
            self._use(zone, specs, 1)
        return self.set_owner(port["id"], flows)

    def remove_port(self, port_id: str) -> defer.Deferred[int]:
        old = self.port_specs.pop(port_id, None)
        if old is not None:
            self._use(*old, -1)
        return self.set_owner(port_id, ())

    def _use(self, zone: int, specs: Iterable[compiler.ConjSpec], delta: int) -> None:
        """Count a port's conjunctions in its zone; the zone's member flows are recomputed only when its *set* of
        conjunctions changes (a count from or to 0): a new port whose groups the zone already serves (the common case)
        costs its own flows only, not a recompute and diff of the zone's member flows (~12 ms at 500 ports)."""
        counts = self.zone_specs.setdefault(zone, Counter())
        for spec in specs:
            counts[spec] += delta
            if counts[spec] <= 0:
                del counts[spec]
                self._dirty_zones.add(zone)
            elif counts[spec] == delta:
                self._dirty_zones.add(zone)
        if not counts:
            del self.zone_specs[zone]

    def members_changed(self, group_id: str, groups: Mapping[str, Any]) -> defer.Deferred[int]:
        """``group_id``'s members (or existence) changed: the member flows of the zones that use it as a remote group."""
        return self._zones_changed(group_id, groups, None)

    def members_delta(self, group_id: str, addresses: Iterable[str], groups: Mapping[str, Any]) -> defer.Deferred[int]:
        """``addresses`` came to or left ``group_id``'s members (already in ``groups``): only their member flows, in the
        zones that use the group as a remote group, are recomputed (and only those that differ are sent)."""
        return self._zones_changed(group_id, groups, set(addresses))

    def _zones_changed(self, group_id: str, groups: Mapping[str, Any], addresses: set[str] | None) -> defer.Deferred[int]:
        self.groups = groups
        zones = {zone for zone, specs in self.zone_specs.items() if any(s.remote_group_id == group_id for s in specs)}
        if not zones:
            return defer.succeed(0)
        if addresses is None:
            self._dirty_zones |= zones
        else:
            for zone in zones:
                self._dirty_addresses.setdefault(zone, set()).update(addresses)
        d: defer.Deferred[int] = defer.Deferred()
        owners = sorted(f"zone:{zone}" for zone in zones)
        for owner in owners:
            self._dirty.setdefault(owner, [])
        self._dirty[owners[0]].append(d)  # one waiter: the zones go in the same bundle
        self._schedule()
        return d

    def _zone_flows(self) -> None:
        """Recompute the member flows of the dirty zones (and the conjunction flows), as owners in this flush."""
        if not self._dirty_zones and not self._dirty_addresses:
            return
        zones = self._dirty_zones | set(self._dirty_addresses)
        by_zone = {zone: {spec: self.conj_ids(spec) for spec in self.zone_specs.get(zone, ())} for zone in zones}
        for zone, specs in by_zone.items():
            owner = f"zone:{zone}"
            if zone in self._dirty_zones:
                flows = {f.key: f for f in compiler.member_flows(zone, specs, self.groups)}
            else:  # only some addresses: the zone's other member flows stay as they are
                addresses = self._dirty_addresses[zone]
                flows = dict(self.desired.get(owner, {}))
                for key in compiler.member_keys(zone, specs, addresses):
                    flows.pop(key, None)
                flows.update((f.key, f) for f in compiler.member_flows(zone, specs, self.groups, only=addresses))
            if flows:
                self.desired[owner] = flows
            else:
                self.desired.pop(owner, None)
            self._dirty.setdefault(owner, [])
        self._dirty_zones.clear()
        self._dirty_addresses.clear()
        if len(self.conj_ids.ids) != self._conj_count:
            self._conj_count = len(self.conj_ids.ids)
            self.desired["conj"] = {f.key: f for spec, n in self.conj_ids.ids.items() for f in compiler.conj_flows(n, spec)}
            self._dirty.setdefault("conj", [])

    def set_infra(self, ports: Iterable[tuple[int, int | None]]) -> defer.Deferred[int]:
        return self.set_owner("infra", compiler.infra_flows(ports))

    def streaming(self) -> bool:
        """A large batch is in flight (a burst of new ports, a restart): ovs-vswitchd takes a limited number of
        OpenFlow messages per main-loop turn, and a turn that also reconfigures for a new OVS port costs time in
        proportion to the bridge's ports, so ports added meanwhile slow the batch down (500 ports' 30,000 flow mods:
        ~2.5 s alone, ~7 s with the ports added meanwhile). New ports had better wait for it. So also when a smaller
        batch is in flight and a large one waits behind it (a burst of events read a socket read at a time: a first
        batch of 733 flow mods took 1.1 s with the next reads' 190 ports added meanwhile, the 2,267 after it 0.3 s).
        With nothing in flight ovs-vswitchd is idle, and a port added while the agent prepares the batch (a restart's
        reconcile) costs the flows nothing: not then."""
        if not self._in_flight:
            return False
        queued = self._in_flight_mods
        for owner in self._dirty:
            if queued >= STREAMING:
                break
            queued += len(self.desired.get(owner, ()))
        return queued >= STREAMING

    def flow_count(self, owner: str) -> int:
        return len(self.desired.get(owner, {}))

    # -- flushing
    def _schedule(self) -> None:
        if self._scheduled is None and not self._busy() and (self._dirty or self._dirty_zones or self._dirty_addresses):
            self._scheduled = self.reactor.callLater(0, self._flush)

    def _busy(self) -> bool:
        """A batch, or remove_stale's deletes, are out: the next batch waits for them."""
        return self._in_flight or self._deleting

    def _flush(self) -> None:
        self._scheduled = None
        if self._busy() or not (self._dirty or self._dirty_zones or self._dirty_addresses) or self.client.proto is None:
            return  # (not connected: _connected schedules again; deleting: remove_stale does)
        self._zone_flows()
        batch, self._dirty = self._dirty, {}
        deletes, adds, counts, snapshot = [], [], {}, {}
        sent: dict[str, list[Flow]] = {}
        adopted: dict[str, list[Flow]] = {}  # (on the switch already: installed even if the batch fails)
        replaces = False
        diffs = []
        for owner in batch:
            old, new = self.installed.get(owner, {}), self.desired.get(owner, {})
            gone = [f for k, f in old.items() if k not in new]
            diffs.append((owner, old, new, gone))
            if self._found:  # (the whole batch's deletes first: they go before its adds, whichever owner takes the entry)
                self._touched.update(f.key for f in gone)
        for owner, old, new, gone in diffs:
            changed = [f for k, f in new.items() if old.get(k) != f]
            if self._found:
                changed, adopted[owner] = self._adopt(old, changed)
            replaces = replaces or bool(gone) or any(f.key in old for f in changed)
            sent[owner] = changed
            deletes += [functools.partial(encode.delete, f) for f in gone]
            adds += [functools.partial(encode.add, f) for f in changed]
            counts[owner] = len(gone) + len(changed)
            snapshot[owner] = dict(new)
        msgs = deletes + adds
        if not msgs:  # (nothing to send: nothing changed, or the switch has it all already)
            self._install(snapshot)
            for waiters in batch.values():
                for d in waiters:
                    d.callback(0)
            return
        self._in_flight = True
        self._in_flight_mods = len(msgs)
        self._flying = snapshot
        since, connection = time.monotonic(), self._connections
        self.stats["bundles"] += 1
        self.stats["flow_mods"] += len(msgs)

        def done(encoding: Any) -> None:
            total = time.monotonic() - since
            for owner in batch:
                self.timing[owner] = (len(msgs), float(encoding or 0.0), total)
            self._install(snapshot)
            self._flying = {}  # ('installed' is right again: a waiter's own set_owner may be answered at once)
            if len(msgs) > 1000:
                self.log.info(
                    "firewall: bundle of {n} flow mods for {owners} owners in {ms}ms",
                    n=len(msgs), owners=len(batch), ms=int((time.monotonic() - since) * 1000),
                )  # fmt: skip
            for owner, waiters in batch.items():
                for d in waiters:
                    d.callback(counts[owner])

        def failed(failure: Any) -> None:
            self.log.error("firewall: bundle of {n} flow mods failed: {error}", n=len(msgs), error=failure.getErrorMessage())
            for owner, flows in adopted.items():  # (untouched by the batch: a later change must delete them; not after
                if flows and self._connections == connection:  # a reconnect, which found nothing to adopt)
                    self.installed.setdefault(owner, {}).update((f.key, f) for f in flows)
            if not replaces:  # a bundle applied nothing; plain adds may have applied some: mark them unsure, so that the
                for owner, flows in sent.items():  # next flush re-adds those still wanted and deletes the others
                    unsure = self.installed.setdefault(owner, {})
                    for f in flows:
                        unsure[f.key] = attrs.evolve(f, actions=(("unsure",),))
            self._flying = {}
            for waiters in batch.values():
                for d in waiters:
                    d.errback(failure)  # (not ``f``: the loop above rebinds it)

        def finish(_: Any) -> None:
            self._in_flight = False
            self._in_flight_mods = 0
            self._flying = {}
            self._schedule()

        # Only new entries: any moment of their installation admits a subset of what the whole admits, so a plain batch
        # (cheaper for ovs-vswitchd) is as safe as a bundle. Deletions or replaced entries: one atomic bundle.
        sending = defer.ensureDeferred(self.client.stream(msgs, atomic=replaces))
        sending.addCallbacks(done, failed).addBoth(finish)

    # -- after a restart
    async def remove_stale(self) -> int:
        """Delete every flow whose cookie no wanted, installed or flying flow has (the earlier run's leftovers, an older
        release's flows, OVS's default NORMAL flow); from here on nothing is adopted."""
        since = time.monotonic()
        if "drops" not in self.desired:  # (see ``start``: every port's flows are in, its exceptions to them too)
            await self.set_owner("drops", compiler.server_drops())
        cookies = await self.client.flow_cookies()
        self._found.clear()
        self._touched.clear()
        # (computed now, when the deletes go: whatever is in flight or wanted is sent before them or is kept by them)
        ours = {encode.cookie(f) for flows in (*self.installed.values(), *self.desired.values(), *self._flying.values())
                for f in flows.values()}  # fmt: skip
        stale = Counter(c for c in cookies if c not in ours)
        if stale:
            # No batch goes until the switch confirmed the deletes: one spread over the other connections could be
            # applied before them, and a flow wanted since ``ours`` was computed may have a stale flow's content (its
            # cookie): the delete would take it.
            self._deleting = True
            try:
                await self.client.send([encode.delete_cookie(c) for c in sorted(stale)])
            finally:
                self._deleting = False
                self._schedule()
        count = sum(stale.values())
        self.stats["stale_deleted"] += count
        shown = ", ".join(f"{c:#x}" for c in sorted(stale)[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        self.log.info(
            "firewall: removed {count} stale flows (cookies {cookies}) of {total}; {adopted} flows of the earlier run kept "
            "as they were +{ms}ms",
            count=count, cookies=shown or "none", total=len(cookies), adopted=self.stats["adopted"],
            ms=int((time.monotonic() - since) * 1000),
        )  # fmt: skip
        return count

    def _adopt(self, old: Mapping[Key, Flow], changed: list[Flow]) -> tuple[list[Flow], list[Flow]]:
        """``changed`` split into the flows to send and those the switch already has: their cookie was found at start,
        and nothing was sent for their entry since (a delete or an ADD over it made what was found there go; the
        caller marks the batch's deletes first)."""
        send, kept = [], []
        for f in changed:
            (send if f.key in old or f.key in self._touched or encode.cookie(f) not in self._found else kept).append(f)
        self._touched.update(f.key for f in send)
        self.stats["adopted"] += len(kept)
        return send, kept

    def _install(self, snapshot: Mapping[str, dict[Key, Flow]]) -> None:
        for owner, flows in snapshot.items():
            if flows:
                self.installed[owner] = flows
            else:
                self.installed.pop(owner, None)
