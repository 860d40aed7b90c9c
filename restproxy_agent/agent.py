"""The host agent: keep br-int in step with the ports the server binds to this host.

Desired state comes from the agent channel (list, then watch); actual state
from OVSDB (ports carrying our ``iface-id``). Each port is synced on its own,
one sync at a time per port (a change arriving during a sync runs it again
after; ``serial.KeyedSerializer``), many ports at once: missing -> plug and
report ACTIVE; present and right -> nothing (never a re-plug); present but
drifted -> fixed in place; admin_state_up false -> the VIF's host end down and
reported DOWN; gone from the desired state -> unplugged and reported DOWN; a
namespace the policy refuses (``netns_policy``) -> not plugged, reported DOWN,
not retried. Everything is reconciled after the first list, after a re-list,
and after an OVSDB reconnect; ports without our iface-ids are never touched.

Security groups (``firewall``): with ``firewall_driver = openflow`` and no OpenFlow controller, a new VIF asks
OVS for an ofport of its own (``ofport_request``, from the upper half of the range, which OVS never assigns by
itself); its device is made with its host end down (passing nothing) and its OVS port added, with its network's
tag, while its flows for that ofport are installed, so the two round trips to ovs-vswitchd (the flows' barrier, the
port's ofport) overlap instead of adding up; its host end goes up once the flows are confirmed for the ofport it
got: it is filtered from its first packet, and is then reported ACTIVE. Should OVS give it another ofport anyway,
it goes to the dead VLAN, is filtered for the ofport it got, and only then gets its tag back and goes up.
A VIF with no flows drops everything (table 0's default). Group events
(``security_group_updated``/``_deleted``) re-sync exactly the ports that use the group, directly or as a remote
group; a member event (``security_group_member``: one port's addresses in a group) changes only the member flows of
the addresses that came or went (``firewall.members``).
A flow's cookie names its content: a restart keeps the earlier run's flows that are still wanted as they are (sends
only what changed), and after its first reconcile removes the others.
"""

from __future__ import annotations

import gc
import json
import signal
import time
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from restproxy_agent.bridge import OWNER_KEY, IntegrationBridge, is_vif
from restproxy_agent.channel import ChannelClient, ChannelError, PortWatch
from restproxy_agent.config import AgentConfig
from restproxy_agent.firewall.driver import NoopFirewall, OpenFlowFirewall
from restproxy_agent.firewall.flows import DEAD_VLAN, OFPP_MAX_10
from restproxy_agent.firewall.members import GroupMembers
from restproxy_agent.links import Links, device_name
from restproxy_agent.metrics import AgentMetrics
from restproxy_agent.netns_policy import NetnsRefused, parse_deny
from restproxy_agent.ovsdb import DELETE, OvsdbConnection
from restproxy_agent.plumber import LocalVlans, Port, VifPlumber
from restproxy_agent.serial import KeyedSerializer
from restproxy_common.backoff import Policy, RetrySchedule, backoff_policy
from restproxy_common.tls import ControllerTLSPolicy

# A failed port sync is retried after 0.5 s, 1 s, 2 s ... up to 30 s (plus up to 50 ms, so that ports spread out).
PORT_RETRY = backoff_policy(initial=0.5, maximum=30.0, factor=2.0, jitter=0.05)
# OVS assigns ofports by itself only below 32768 (ofproto.c alloc_ofp_port keeps the upper half for requests): a VIF
# asks for one from here, so its flows can be in before it is on the bridge.
OFPORT_REQUEST_FIRST, OFPORT_REQUEST_END = 32768, OFPP_MAX_10
OFPORTS_TAKEN_TTL = 1.0  # seconds the scan of the switch's ofports in use is reused for
RECONCILE_CHUNK = 50  # ports already plugged whose syncs a reconcile starts in one reactor turn
STOP_GRACE = 5.0  # seconds a stopping agent waits for the syncs in flight
DHCP_OWNER = "network:dhcp"  # ports the DHCP agent plugs (into br-int, from its qdhcp- namespaces): never this agent's


def dhcp_port(port: Port) -> bool:
    return port.get("device_owner") == DHCP_OWNER


SINGLE_REPORTS = 20  # update_device_up calls in flight at once to a server without update_device_list


class UpReports:
    """``update_device_up`` for many ports at once, without a wait for one port alone.

    A report goes out on the next reactor turn when no report call is in
    flight (a lone VM boot waits for nothing); reports made while one is in
    flight wait for it and then share one ``update_device_list`` call (a
    burst of 500 ports is a handful of calls, not 500).
    """

    log = Logger()

    def __init__(self, client: ChannelClient, host: str, reactor: Any, window: float = 0.0) -> None:
        self.client, self.host, self.reactor, self.window = client, host, reactor, window
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self._flush: Any = None
        self._in_flight = False
        self.batched = True  # False once the server said it has no update_device_list

    def up(self, port_id: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(port_id, []).append(d)
        self._schedule()
        return d

    def _schedule(self) -> None:
        if self._flush is None and not self._in_flight and self._waiting:
            self._flush = self.reactor.callLater(self.window, lambda: ensureDeferred(self._send()))

    async def _send(self) -> None:
        self._flush = None
        batch, self._waiting = self._waiting, {}
        self._in_flight = True
        try:
            failed = await self._report(list(batch))
        except Exception as e:
            for waiters in batch.values():
                for d in waiters:
                    d.errback(e)
            return
        finally:
            self._in_flight = False
            self._schedule()
        for port_id, waiters in batch.items():
            for d in waiters:
                if port_id in failed:
                    d.errback(RuntimeError(f"server refused update_device_up for {port_id}"))
                else:
                    d.callback(None)

    async def _report(self, devices: list[str]) -> set[str]:
        """The devices the server refused. A server without ``update_device_list`` (404: an older one) is sent
        ``update_device_up`` for each device from then on, a few at a time."""
        if self.batched:
            try:
                result = await self.client.call("update_device_list", devices_up=devices, host=self.host)
                return set(result.get("failed_devices_up", []))
            except ChannelError as e:
                if e.status != 404:
                    raise
                self.batched = False
                self.log.warn("server has no update_device_list: reporting ports one update_device_up each")
        failed: set[str] = set()
        for start in range(0, len(devices), SINGLE_REPORTS):
            chunk = devices[start : start + SINGLE_REPORTS]
            calls = [ensureDeferred(self.client.call("update_device_up", device=d, host=self.host)) for d in chunk]
            results = await DeferredList(calls, consumeErrors=True)
            for device, (ok, result) in zip(chunk, results, strict=True):
                if not ok:
                    result.raiseException()
                if not result.get("exists", True):
                    failed.add(device)
        return failed


class RestProxyAgent(service.Service):
    log = Logger()

    def __init__(
        self,
        cfg: AgentConfig,
        reactor: Any,
        conn: OvsdbConnection | None = None,
        client: ChannelClient | None = None,
        metrics: AgentMetrics | None = None,
        retry_policy: Policy = PORT_RETRY,
        bridge: IntegrationBridge | None = None,
        links: Links | None = None,
        firewall: Any = None,
        freeze_start_up: bool = False,
    ) -> None:
        """``conn``, ``client``, ``bridge``, ``links``, ``firewall``: the real ones unless given (tests/fast hands in doubles).
        ``freeze_start_up``: the agent owns its process (``agent_tap``): see ``_freeze_start_up``."""
        self.freeze_start_up = freeze_start_up
        self.cfg = cfg
        self.reactor = reactor
        self.conn = conn or OvsdbConnection(cfg.ovsdb_connection, reactor=reactor)
        self.bridge = bridge or IntegrationBridge(self.conn, cfg.integration_bridge)
        # 16: a tap or veth plug waits mostly in the kernel (an RCU grace period per tun close, the RTNL lock);
        # on this 2-core machine 16 threads made 200 taps in 0.49 s where 8 took 0.79 s (create_tap_sync in a thread pool).
        self.links = links or Links(reactor, max_threads=16)
        self.vlans = LocalVlans() if cfg.local_vlan_isolation and not cfg.of_controller else None
        self.plumber = VifPlumber(
            self.bridge, self.links, self.vlans, cfg.vif_kind, cfg.mtu, cfg.ofport_timeout, netns_deny=parse_deny(cfg.netns_deny)
        )
        tls = ControllerTLSPolicy(ca_file=cfg.server_ca_file) if cfg.server_url.startswith("https:") else None
        self.client = client or ChannelClient(cfg.server_url, cfg.token, cfg.host, reactor, timeout=cfg.server_timeout, tls_policy=tls)
        self.firewall = firewall if firewall is not None else self._make_firewall()
        self.groups: dict[str, dict[str, Any]] = {}  # security group id -> its latest payload (rules, members)
        self.members = GroupMembers()
        self._stale_removed = False
        self._infra_pending: Any = None
        self.watch = PortWatch(self.client, self._on_list, self._on_event, reactor, on_groups=self._on_groups)
        self.reports = UpReports(self.client, cfg.host, reactor)
        self.desired: dict[str, Port] = {}
        self.reported_up: set[str] = set()
        self.failures: dict[str, str] = {}
        self.stats = {"plugged": 0, "unplugged": 0, "adjusted": 0, "errors": 0, "refused": 0, "reconciles": 0}
        self.syncs: KeyedSerializer[str] = KeyedSerializer(self._sync_port, self._failed)
        self._scan: dict[str, Any] = {}  # iface-id -> VifPort, from the last reconcile's full scan
        self.retries: RetrySchedule[str] = RetrySchedule(reactor, retry_policy)  # one pending retry per port
        self.metrics = metrics or AgentMetrics()
        self._ofport_requests: dict[str, int] = {}  # port id -> the ofport its VIF asked for (this run's plugs)
        self._next_ofport = OFPORT_REQUEST_FIRST
        self._taken: tuple[float, set[int]] | None = None  # (when, ofports_taken) as last read
        self._flows_for: dict[str, int] = {}  # port id -> the ofport its flows were last applied for (this run)
        self._link_up: dict[str, bool] = {}  # port id -> host end state this run set (OVS's admin_state lags ~10 ms)
        self._held: list[tuple[Deferred[None], Deferred[None]]] = []  # (gate, its flows) of OVS port adds held back
        self._release: Any = None  # the call that lets go of the held adds whose flows are done
        self._ready = False
        self._report: task.LoopingCall | None = None
        self._started_reporting = False
        self.started: Deferred[None] | None = None

    def _make_firewall(self) -> Any:
        if self.cfg.of_controller or self.cfg.firewall_driver == "noop":
            return NoopFirewall()
        return OpenFlowFirewall(self.reactor, self.cfg.mgmt_socket)

    # -- lifecycle
    def startService(self) -> None:
        super().startService()
        self.started = ensureDeferred(self._start())
        self.started.addErrback(lambda f: self.log.failure("agent start failed", f))

    async def _start(self) -> None:
        self.log.info(
            "agent for host {host} starting: bridge {bridge} ({datapath}), server {url}",
            host=self.cfg.host, bridge=self.cfg.integration_bridge, datapath=self.cfg.datapath_type, url=self.cfg.server_url,
        )  # fmt: skip
        self.watch.prefetch()  # the server lists this host's ports meanwhile (a restart's 1,000 ports: ~0.2 s)
        await self.conn.connect()
        controller = self.cfg.of_controller or None
        protocols = [self.cfg.of_protocols] if self.cfg.of_protocols else None
        if self.firewall.enabled:
            protocols = sorted({*(protocols or ["OpenFlow10"]), "OpenFlow13"})
        await self.bridge.ensure_bridge(
            self.cfg.integration_bridge, self.cfg.datapath_type, fail_mode="secure" if controller or self.firewall.enabled else None,
            controller=controller, protocols=protocols,
        )  # fmt: skip
        if controller:
            self.log.warn(
                "agent: the OpenFlow controller {controller} owns {bridge}'s flows: security groups are NOT enforced on this host "
                "(reported as firewall none, port_filter false)", controller=controller, bridge=self.cfg.integration_bridge,
            )  # fmt: skip
        elif not self.firewall.enabled:
            self.log.warn("agent: firewall_driver noop: security groups are NOT enforced on this host")
        else:
            since = time.monotonic()
            await self.firewall.start()
            self._infra_changed()
            self.conn.add_listener(self._ovsdb_event, "Interface")
            self.log.info(
                "agent: security groups enforced in {bridge}'s flows over {socket} ({found} flows on the switch) +{ms}ms",
                bridge=self.cfg.integration_bridge, socket=self.cfg.mgmt_socket, found=self.firewall.found_at_start,
                ms=int((time.monotonic() - since) * 1000),
            )  # fmt: skip
        self.conn.on_reconnect(lambda: self.reconcile("OVSDB reconnected"))
        if self.freeze_start_up:
            self._freeze_start_up()
        self.watch.startService()
        self._report = task.LoopingCall(lambda: ensureDeferred(self._report_state()))
        self._report.clock = self.reactor
        self._report.start(self.cfg.report_interval, now=True)
        try:
            signal.signal(signal.SIGUSR1, lambda *_: self.reactor.callFromThread(self.log_status))
        except ValueError:
            pass  # not the main thread (tests): no signal

    def _freeze_start_up(self) -> None:
        """What is alive once the agent is up (modules, os-ken's tables, the OVSDB replica) lives as long as the process:
        out of the collector's sight (``gc.freeze``). Every full collection traversed it all: one took 80-290 ms of the
        reactor in the middle of a burst of 500 VIFs (and a burst makes many), now 10-40 ms. Objects are still freed by
        their reference counts; only a reference cycle among these objects would never be collected. No collection
        first: it took 130-160 ms of the start, before the first reconcile, and found 0-45 unreachable objects."""
        since = time.monotonic()
        gc.freeze()
        self.log.debug("agent: {count} objects of the start-up frozen +{ms}ms", count=gc.get_freeze_count(),
                       ms=int((time.monotonic() - since) * 1000))  # fmt: skip

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._report is not None and self._report.running:
            self._report.stop()
        self.write_status()
        self.retries.cancel_all()
        d = self.watch.stopService()  # (not started, as after a failed start: its prefetched list cancelled, its client closed)
        # Let syncs in flight finish (bounded) before their OVSDB connection and netlink threads go away.
        d.addBoth(lambda _: self.syncs.all_idle().addTimeout(STOP_GRACE, self.reactor).addErrback(lambda _: None))

        def close(_: Any) -> None:
            self.firewall.stop()
            self.links.stop()
            self.conn.close()

        return d.addBoth(close)

    # -- non-VIF ports (patch, internal): forwarded as before, each by its own table-0 flow
    def _ovsdb_event(self, event: str, row: Any, updates: Any) -> None:
        ids = getattr(row, "external_ids", None) or {}
        changed = getattr(updates, "_data", None) or {}
        if is_vif(ids) and "external_ids" not in changed:
            # A VIF: its flows come with its sync, which must run again if its ofport changed under it (a restarted
            # ovs-vswitchd may number the ports anew; its flows are keyed by ofport). Not for the ofport its flows are
            # for already (a new VIF's, as it asked for it): that sync would change nothing (every VIF of a burst once).
            port_id = ids["iface-id"]
            if event == DELETE:
                # Gone (deleted behind the agent's back, or by its own unplug): a VIF added again under that name gets
                # the same ofport back from OVS, yet is another VIF whose sync must run.
                self._flows_for.pop(port_id, None)
            elif "ofport" in changed and port_id in self.desired and self._ready:
                ofport = getattr(row, "ofport", None) or [None]
                if ofport[0] is None or ofport[0] != self._flows_for.get(port_id):
                    self.schedule(port_id, time.monotonic())
            return
        self._infra_changed()

    def _infra_changed(self) -> None:
        if self._infra_pending is None:
            self._infra_pending = self.reactor.callLater(0.01, self._update_infra)

    def _update_infra(self) -> None:
        self._infra_pending = None
        if not self.conn.connected or not self.running:
            return
        # OVSDB numbers the bridge's LOCAL port 65534 (OpenFlow 1.0's number; a static flow matches it as 1.3's LOCAL)
        others = [(ofport, tag) for ofport, tag in self.bridge.other_ports() if ofport < OFPP_MAX_10]
        self.firewall.set_infra(others).addErrback(lambda f: self.log.error("firewall: non-VIF port flows: {e}", e=f.getErrorMessage()))

    # -- desired state from the server
    def _on_groups(self, groups: list[dict[str, Any]]) -> None:
        """A (re-)list's groups. Member changes missed meanwhile go to the zones' member flows, as an event's would
        (a port re-applied with the same groups does not recompute its zone's member flows); member counts are
        rebuilt from the listed groups."""
        old, self.groups = self.groups, {g["id"]: g for g in groups}
        self.members.reset()
        for group_id in sorted(old.keys() | self.groups.keys()):
            if (old.get(group_id) or {}).get("members") != (self.groups.get(group_id) or {}).get("members"):
                d = self.firewall.members_changed(group_id, self.groups)
                d.addErrback(lambda f, g=group_id: self.log.error("security group {g} members: {e}", g=g, e=f.getErrorMessage()))

    def _group_event(self, kind: str, group_id: str, payload: dict[str, Any], seq: int, since: float) -> None:
        """New rules: re-sync the ports in the group. New members: the member flows of the zones that use the group
        as a remote group (one flow per zone and address, shared by the zone's ports; no port is recompiled)."""
        old = self.groups.get(group_id) or {}
        new = payload if kind == "security_group_updated" else {}
        if new:
            self.groups[group_id] = new
        else:
            self.groups.pop(group_id, None)
        self.members.reset(group_id)
        rules_changed = (old.get("rules") or []) != (new.get("rules") or [])
        members_changed = (old.get("members") or []) != (new.get("members") or []) or not new or not old
        affected = [pid for pid, p in self.desired.items() if group_id in (p.get("security_groups") or ())] if rules_changed else []
        self.log.info(
            "security group {group_id} {kind} #{seq}: {rules} rules, {members} members; {count} ports to refilter{more}",
            group_id=group_id, kind=kind.rsplit("_", 1)[1], seq=seq, rules=len(new.get("rules") or ()),
            members=len(new.get("members") or ()), count=len(affected), more=", members to apply" if members_changed else "",
        )  # fmt: skip
        for pid in affected:
            self.schedule(pid, since)
        if members_changed:

            def applied(sent: int) -> None:
                if sent:
                    self.log.info(
                        "security group {group_id} members applied (#{seq}): {sent} flow mods +{ms}ms",
                        group_id=group_id, seq=seq, sent=sent, ms=int((time.monotonic() - since) * 1000),
                    )  # fmt: skip

            d = self.firewall.members_changed(group_id, self.groups)
            d.addCallbacks(applied, lambda f: self.log.error("security group {g} members: {e}", g=group_id, e=f.getErrorMessage()))

    def _member_event(self, group_id: str, payload: dict[str, Any], seq: int, since: float) -> None:
        """One port's addresses in a group: the member flows of the addresses that came or went, nothing else."""
        group = self.groups.get(group_id)
        port_id = payload.get("port_id") or ""
        if group is None:
            # A watch may carry member events of a group this host no longer (or not yet) has (SG_CONTRACT.md).
            self.log.debug("security group {group_id} member {port_id} #{seq}: not a group of this host", group_id=group_id,
                           port_id=port_id, seq=seq)  # fmt: skip
            return
        added, removed = self.members.apply(group, port_id, list(payload.get("addresses") or ()))
        self.log.info(
            "security group {group_id} member {port_id} #{seq}: +{added} -{removed} addresses, {members} members",
            group_id=group_id, port_id=port_id, seq=seq, added=len(added), removed=len(removed), members=len(group["members"]),
        )  # fmt: skip
        if not added and not removed:
            return  # (another member still has each address it dropped, or had each it took: no flow changes)

        def applied(sent: int) -> None:
            if sent:
                self.log.info(
                    "security group {group_id} member {port_id} applied (#{seq}): {sent} flow mods +{ms}ms",
                    group_id=group_id, port_id=port_id, seq=seq, sent=sent, ms=int((time.monotonic() - since) * 1000),
                )  # fmt: skip

        d = self.firewall.members_delta(group_id, added + removed, self.groups)
        d.addCallbacks(applied, lambda f: self.log.error("security group {g} members: {e}", g=group_id, e=f.getErrorMessage()))

    def _on_list(self, seq: int, ports: list[Port]) -> None:
        self.desired = {p["id"]: p for p in ports if not dhcp_port(p)}
        self.reported_up = {p["id"] for p in ports if p.get("status") == "ACTIVE"}
        self.log.info("agent: {count} ports bound to {host} (as of event {seq})", count=len(ports), host=self.cfg.host, seq=seq)
        self._ready = True
        self.reconcile("listed")

    def _on_event(self, message: dict[str, Any]) -> None:
        since = time.monotonic()
        kind, port_id, payload = message["kind"], message["object_id"], message["payload"]
        if kind in ("security_group_updated", "security_group_deleted"):
            self._group_event(kind, port_id, payload, message["seq"], since)
            return
        if kind == "security_group_member":
            self._member_event(port_id, payload, message["seq"], since)
            return
        if dhcp_port(payload):
            return  # the DHCP agent's (it plugs them; this agent neither plugs nor unplugs them)
        if kind in ("port_attached", "port_updated"):
            self.desired[port_id] = payload
        elif kind == "port_detached":
            self.desired.pop(port_id, None)
        else:
            return  # network events: the port events that matter come with them
        self.log.info(
            "port {port_id} event {kind} #{seq} (device tap{short}, mac {mac})",
            port_id=port_id, kind=kind, seq=message["seq"], short=port_id[:11], mac=payload.get("mac_address"),
        )  # fmt: skip
        self.schedule(port_id, since)

    def reconcile(self, reason: str) -> None:
        """Sync every port we should have or do have."""
        if not self._ready:
            return
        self.stats["reconciles"] += 1
        scan = self.bridge.ports_with_iface_ids()
        actual = self._scan = {k: v for k, v in scan.items() if v.external_ids.get(OWNER_KEY) != "dhcp"}
        if self.vlans is not None:
            for port_id, vif in actual.items():
                if port_id in self.desired:
                    self.vlans.learn(self.desired[port_id]["network_id"], vif.tag)
        ids = set(self.desired) | set(actual)
        self.log.info("agent: reconciling {count} ports ({reason})", count=len(ids), reason=reason)
        since = time.monotonic()
        before = dict(self.stats)
        # The ports to plug go at once: their devices (made in threads), OVS ports and flows get going. The ports already
        # plugged, whose flows a restart mostly finds on the switch, follow RECONCILE_CHUNK a reactor turn, so that
        # checking them (compiling their flows: ~1 ms a port) does not hold up the new ones' next steps.
        for port_id in ids - actual.keys():
            self.schedule(port_id, since)
        scheduled = self._schedule_in_turns(sorted(ids & actual.keys()), since)

        def done(_: Any) -> Any:
            changes = {k: self.stats[k] - before[k] for k in ("plugged", "unplugged", "adjusted", "errors", "refused")}
            self.log.info(
                "agent: in step after reconcile ({reason}): {count} ports, {plugged} plugged, {unplugged} unplugged, "
                "{adjusted} adjusted, {errors} errors, {refused} refused in {ms}ms",
                reason=reason, count=len(ids), ms=int((time.monotonic() - since) * 1000), **changes,
            )  # fmt: skip
            if not self._stale_removed and self.firewall.enabled and self.running:  # (a stop failed the syncs: not in step)
                # This run's flows are in for every port: only now go the previous run's (never a moment unfiltered).
                self._stale_removed = True
                return ensureDeferred(self.firewall.remove_stale()).addErrback(
                    lambda f: self.log.error("firewall: removing stale flows failed: {e}", e=f.getErrorMessage())
                )
            return None

        scheduled.addCallback(lambda _: DeferredList([self.syncs.idle(port_id) for port_id in ids], consumeErrors=True))
        scheduled.addCallback(done)

    def _schedule_in_turns(self, ids: list[str], since: float) -> Deferred[None]:
        """Schedule ``ids``' syncs RECONCILE_CHUNK a reactor turn, the first in the next turn; fires once all are (never,
        should the agent stop meanwhile: no sync starts after the stop's wait for those in flight began)."""
        scheduled: Deferred[None] = Deferred()

        def turn(at: int) -> None:
            if not self.running:
                return
            for port_id in ids[at : at + RECONCILE_CHUNK]:
                self.schedule(port_id, since)
            if at + RECONCILE_CHUNK < len(ids):
                self.reactor.callLater(0, turn, at + RECONCILE_CHUNK)
            else:
                scheduled.callback(None)

        if ids:
            self.reactor.callLater(0, turn, 0)
        else:
            scheduled.callback(None)
        return scheduled

    # -- per-port syncs
    def schedule(self, port_id: str, since: float) -> None:
        """Sync ``port_id`` now, or once more after the sync running for it (``since``: when its cause happened)."""
        self.syncs.request(port_id, since)

    async def _sync_port(self, port_id: str, since: float) -> None:
        try:
            await self._sync(port_id, since)
        except NetnsRefused as e:
            await self._refuse(port_id, e, since)
            return
        self.failures.pop(port_id, None)
        self.retries.reset(port_id)

    def _failed(self, port_id: str, error: Exception, since: float) -> None:
        """A sync failed: log it and retry with backoff (one pending retry per port); none while stopping."""
        if not self.running:
            self.log.info("port {port_id} sync stopped by the agent's shutdown: {error}", port_id=port_id, error=str(error))
            return
        delay = self.retries.failed(port_id, self._retry)
        self.failures[port_id] = str(error)
        self.stats["errors"] += 1
        self.log.error(
            "port {port_id} ERROR: {error} +{ms}ms; retrying in {delay:.1f}s",
            port_id=port_id, error=str(error) or type(error).__name__, ms=int((time.monotonic() - since) * 1000), delay=delay,
        )  # fmt: skip

    def _retry(self, port_id: str) -> None:
        self.schedule(port_id, time.monotonic())

    async def _refuse(self, port_id: str, refused: NetnsRefused, since: float) -> None:
        """Policy says no: no VIF (unplug one left from before), DOWN, one ERROR line, and no retry until the port changes."""
        actual = self._actual(port_id)
        if actual is not None:
            await self._unplug(port_id, actual, since)
        await self._report_down(port_id, since, quiet=True)
        self.failures[port_id] = str(refused)
        self.retries.reset(port_id)  # no retry until the port changes
        self.stats["refused"] += 1
        self.log.error(
            "port {port_id} not plugged: {reason}; reported DOWN, not retried until the port changes +{ms}ms",
            port_id=port_id, reason=str(refused), ms=int((time.monotonic() - since) * 1000),
        )  # fmt: skip

    def _actual(self, port_id: str) -> Any:
        """This port's VIF: by its device name (an index lookup), else as the last full scan found it."""
        vif = self.bridge.vif(device_name(port_id))
        if vif is not None and vif.iface_id == port_id:
            return vif
        hinted = self._scan.get(port_id)
        return self.bridge.vif(hinted.name) if hinted is not None else None

    async def _unplug(self, port_id: str, actual: Any, since: float) -> None:
        await self.firewall.remove_port(port_id)  # no flows: the port passes nothing while it goes
        await self.plumber.unplug(port_id, actual, since)
        self._ofport_requests.pop(port_id, None)
        self._link_up.pop(port_id, None)
        self._flows_for.pop(port_id, None)
        self.stats["unplugged"] += 1

    async def _report_down(self, port_id: str, since: float, quiet: bool = False) -> None:
        result = await self.client.call("update_device_down", device=port_id, host=self.cfg.host)
        self.reported_up.discard(port_id)
        if not quiet:
            self.log.info("port {port_id} reported DOWN (exists: {exists}) +{ms}ms", port_id=port_id, exists=result.get("exists"),
                          ms=int((time.monotonic() - since) * 1000))  # fmt: skip

    def _same_vm(self, port: Port) -> list[str]:
        """The other ports bound here with the port's (non-empty) device_id: their VIFs may share its namespace."""
        device_id = port.get("device_id")
        if not device_id or self.plumber.netns_of(port) is None:
            return []
        return [p for p, other in self.desired.items() if other.get("device_id") == device_id and p != port["id"]]

    def _host_end_up(self, port_id: str, actual: Any) -> bool:
        """Whether the VIF's host end is up: as this run last set it, else as ovs-vswitchd saw it."""
        known = self._link_up.get(port_id)
        return known if known is not None else actual.admin_state != "down"

    async def _sync(self, port_id: str, since: float) -> None:
        port = self.desired.get(port_id)
        actual = self._actual(port_id)
        if port is None:
            if actual is not None:
                await self._unplug(port_id, actual, since)
                await self._report_down(port_id, since)
            return
        self.plumber.check(port)
        up = port.get("admin_state_up", True) is not False
        if actual is not None and actual.mac != port["mac_address"]:
            await self._unplug(port_id, actual, since)  # a new MAC is a new VIF
            actual = None
        plugged = actual is None or actual.ofport is None or actual.ofport <= 0
        fw = self.firewall.enabled
        if plugged:
            if fw:
                await self._plug_filtered(port, up, since)
            else:
                await self.plumber.plug(port, since, up=up, vm_ports=self._same_vm(port))
            self._link_up[port_id] = up
            self.stats["plugged"] += 1
        else:
            if fw:
                await self._filter(port, actual.ofport, since)
                if actual.tag == DEAD_VLAN and self.vlans is None:
                    await self.plumber.set_tag(port, actual.name, since)
            if await self.plumber.adjust(port, actual, since):
                self.stats["adjusted"] += 1
            if self._host_end_up(port_id, actual) != up:
                await self.plumber.set_admin_state(port_id, actual.name, up, since)
                self._link_up[port_id] = up
                self.stats["adjusted"] += 1
        if up and (plugged or port_id not in self.reported_up):
            await self.reports.up(port_id)
            self.reported_up.add(port_id)
            self.log.info("port {port_id} reported ACTIVE +{ms}ms", port_id=port_id, ms=int((time.monotonic() - since) * 1000))
            self.metrics.plug_seconds.observe(time.monotonic() - since)
        elif not up and port_id in self.reported_up:
            await self._report_down(port_id, since)

    def _ofports_taken(self) -> set[int]:
        """The switch's ofports in use or asked for, read at most every ``OFPORTS_TAKEN_TTL`` seconds (a full scan of the
        interfaces: once per new VIF it was most of a burst's reactor time). A number another client took meanwhile
        costs only the other ofport path (dead VLAN until filtered for the ofport OVS gave): this run's own requests
        are added by the caller, and only requests give ofports from this range."""
        now = time.monotonic()
        if self._taken is None or now - self._taken[0] > OFPORTS_TAKEN_TTL:
            self._taken = (now, self.bridge.ofports_taken())
        return self._taken[1]

    def _request_ofport(self, port_id: str) -> int:
        """An ofport for ``port_id``'s new VIF that no interface has or asked for (the same one on a retry)."""
        known = self._ofport_requests.get(port_id)
        if known is not None:
            return known
        taken = self._ofports_taken() | set(self._ofport_requests.values())
        n = self._next_ofport
        for _ in range(OFPORT_REQUEST_END - OFPORT_REQUEST_FIRST):
            if n not in taken:
                break
            n = n + 1 if n + 1 < OFPORT_REQUEST_END else OFPORT_REQUEST_FIRST
        else:
            raise RuntimeError(f"no free ofport from {OFPORT_REQUEST_FIRST} to {OFPORT_REQUEST_END - 1}")
        self._next_ofport = n + 1 if n + 1 < OFPORT_REQUEST_END else OFPORT_REQUEST_FIRST
        self._ofport_requests[port_id] = n
        return n

    async def _plug_filtered(self, port: Port, up: bool, since: float) -> Any:
        """Plug a new VIF that is filtered from its first packet: its host end is made down, and its OVS port (real
        tag, ``ofport_request``) added while its flows for that ofport are installed; the host end goes up (and the
        port may be reported ACTIVE) only once the flows are confirmed for the ofport OVS gave it. Until then it
        passes nothing; should the flows fail, it stays down and the sync is retried."""
        port_id = port["id"]
        ofport = self._request_ofport(port_id)
        self._link_up[port_id] = False  # (made down: a retry after a failure below knows to open it)
        filtering = ensureDeferred(self._filter(port, ofport, since))

        def hold() -> Any:  # in a burst, its OVS port would slow the flows' batch down: after them (still down)
            streaming = getattr(self.firewall, "streaming", lambda: False)()
            return self._hold_until(filtering) if streaming and not filtering.called else None

        try:
            done = await self.plumber.plug(port, since, up=up, vm_ports=self._same_vm(port), ofport_request=ofport, gated=True, hold=hold)
        except BaseException:
            filtering.addErrback(lambda _: None)  # (the failure that counts is the plug's)
            raise
        started = time.monotonic()
        await filtering
        waited = time.monotonic() - started
        if done.ofport != ofport:  # someone else holds it (only another client asking for upper-half ofports can)
            self.log.error(
                "port {port_id} device {device} got ofport {got}, not the {asked} it asked for: "
                "dead VLAN until it is filtered for {got}",
                port_id=port_id, device=done.device, got=done.ofport, asked=ofport,
            )  # fmt: skip
            await self.bridge.set_tag(done.device, DEAD_VLAN)
            self._ofport_requests[port_id] = done.ofport
            await self._filter(port, done.ofport, since)
            await self.plumber.set_tag(port, done.device, since)
        if up:
            await self.plumber.open_gate(port, done.device, done.ofport, since, waited)
            self._link_up[port_id] = True
        return done

    def _hold_until(self, filtering: Deferred[None]) -> Deferred[None]:
        """A held OVS port add, let go once its flows' batch is done (whatever its outcome: the plug then fails on
        ``filtering`` itself, its port still down). The ports of one batch go on together, after that batch's last
        callback, so that their adds share one OVSDB transaction (``IntegrationBridge.adds_together``)."""
        gate: Deferred[None] = Deferred()
        self._held.append((gate, filtering))

        def done(result: Any) -> Any:
            if self._release is None:
                self._release = self.reactor.callLater(0, self._release_held)
            return result

        filtering.addBoth(done)
        return gate

    def _release_held(self) -> None:
        self._release = None
        ready = [gate for gate, filtering in self._held if filtering.called]
        self._held = [(gate, filtering) for gate, filtering in self._held if not filtering.called]
        with self.bridge.adds_together():
            for gate in ready:
                gate.callback(None)

    async def _filter(self, port: Port, ofport: int, since: float) -> None:
        """Install the port's flows; returns once the switch confirmed them (barrier)."""
        zone = await self.plumber.claim_tag(port) or 1  # the network's tag in the registry shared with the DHCP agent
        self._flows_for[port["id"]] = ofport  # (should they fail, the sync fails and is retried)
        sent = await self.firewall.apply_port(port, ofport, zone, self.groups)
        if sent:
            batch, encoding, total = getattr(self.firewall, "timing", {}).get(port["id"], (0, 0.0, 0.0))
            self.log.info(
                "port {port_id} filtered: ofport {ofport}, zone {zone}, groups {groups}, port security {ps}, "
                "{flows} flows ({sent} sent; batch of {batch}: encoded in {enc}ms, confirmed in {total}ms) +{ms}ms",
                port_id=port["id"], ofport=ofport, zone=zone, groups=",".join(port.get("security_groups") or ()) or "none",
                ps=port.get("port_security_enabled", "n/a"), flows=self.firewall.flow_count(port["id"]), sent=sent, batch=batch,
                enc=int(encoding * 1000), total=int(total * 1000), ms=int((time.monotonic() - since) * 1000),
            )  # fmt: skip

    # -- reporting
    async def _report_state(self) -> None:
        state = {
            "agent_type": self.cfg.agent_type, "binary": "restproxy-agent", "host": self.cfg.host, "topic": "N/A",
            "start_flag": not self._started_reporting,
            "configurations": {
                "integration_bridge": self.cfg.integration_bridge, "datapath_type": self.cfg.datapath_type,
                "devices": len(self.desired), "local_vlan_isolation": self.vlans is not None, "firewall": self.firewall.name,
            },
        }  # fmt: skip
        try:
            await self.client.call("report_state", agent_state=state)
            self._started_reporting = True
        except Exception as e:
            self.log.warn("report_state failed: {error}", error=str(e))

    def status(self) -> dict[str, Any]:
        actual = self.bridge.ports_with_iface_ids() if self.conn.connected else {}
        return {
            "host": self.cfg.host, "server_connected": self.watch.connected, "ovsdb_connected": self.conn.connected,
            "desired": len(self.desired), "plugged": len(actual), "reported_up": len(self.reported_up),
            "in_progress": len(self.syncs), "failing": dict(self.failures), "seq": self.watch.seq, **self.stats,
        }  # fmt: skip

    def log_status(self) -> None:
        self.log.info("agent status: {status}", status=json.dumps(self.status(), sort_keys=True))
        self.write_status()

    def write_status(self) -> None:
        if self.cfg.status_file:
            with open(self.cfg.status_file, "w") as f:
                json.dump(self.status(), f, indent=1, sort_keys=True)
