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
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger

from restproxy_agent.bridge import IntegrationBridge
from restproxy_agent.channel import ChannelClient, PortWatch
from restproxy_agent.config import AgentConfig
from restproxy_agent.links import Links, device_name
from restproxy_agent.metrics import AgentMetrics
from restproxy_agent.netns_policy import NetnsRefused, parse_deny
from restproxy_agent.ovsdb import OvsdbConnection
from restproxy_agent.plumber import LocalVlans, Port, VifPlumber
from restproxy_agent.serial import KeyedSerializer
from restproxy_common.backoff import Policy, RetrySchedule, backoff_policy
from restproxy_common.tls import ControllerTLSPolicy

# A failed port sync is retried after 0.5 s, 1 s, 2 s ... up to 30 s (plus up to 50 ms, so that ports spread out).
PORT_RETRY = backoff_policy(initial=0.5, maximum=30.0, factor=2.0, jitter=0.05)
STOP_GRACE = 5.0  # seconds a stopping agent waits for the syncs in flight


class UpReports:
    """``update_device_up`` for many ports at once, without a wait for one port alone.

    A report goes out on the next reactor turn when no report call is in
    flight (a lone VM boot waits for nothing); reports made while one is in
    flight wait for it and then share one ``update_device_list`` call (a
    burst of 500 ports is a handful of calls, not 500).
    """

    def __init__(self, client: ChannelClient, host: str, reactor: Any, window: float = 0.0) -> None:
        self.client, self.host, self.reactor, self.window = client, host, reactor, window
        self._waiting: dict[str, list[Deferred[None]]] = {}
        self._flush: Any = None
        self._in_flight = False

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
            result = await self.client.call("update_device_list", devices_up=list(batch), host=self.host)
            failed = set(result.get("failed_devices_up", []))
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
    ) -> None:
        """``conn``, ``client``, ``bridge``, ``links``: the real ones unless given (tests/fast hands in-memory doubles)."""
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
        self.watch = PortWatch(self.client, self._on_list, self._on_event, reactor)
        self.reports = UpReports(self.client, cfg.host, reactor)
        self.desired: dict[str, Port] = {}
        self.reported_up: set[str] = set()
        self.failures: dict[str, str] = {}
        self.stats = {"plugged": 0, "unplugged": 0, "adjusted": 0, "errors": 0, "refused": 0, "reconciles": 0}
        self.syncs: KeyedSerializer[str] = KeyedSerializer(self._sync_port, self._failed)
        self._scan: dict[str, Any] = {}  # iface-id -> VifPort, from the last reconcile's full scan
        self.retries: RetrySchedule[str] = RetrySchedule(reactor, retry_policy)  # one pending retry per port
        self.metrics = metrics or AgentMetrics()
        self._link_up: dict[str, bool] = {}  # port id -> host end state this run set (OVS's admin_state lags ~10 ms)
        self._ready = False
        self._report: task.LoopingCall | None = None
        self._started_reporting = False
        self.started: Deferred[None] | None = None

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
        await self.conn.connect()
        controller = self.cfg.of_controller or None
        protocols = [self.cfg.of_protocols] if self.cfg.of_protocols else None
        await self.bridge.ensure_bridge(
            self.cfg.integration_bridge, self.cfg.datapath_type, fail_mode="secure" if controller else None,
            controller=controller, protocols=protocols,
        )  # fmt: skip
        self.conn.on_reconnect(lambda: self.reconcile("OVSDB reconnected"))
        self.watch.startService()
        self._report = task.LoopingCall(lambda: ensureDeferred(self._report_state()))
        self._report.clock = self.reactor
        self._report.start(self.cfg.report_interval, now=True)
        try:
            signal.signal(signal.SIGUSR1, lambda *_: self.reactor.callFromThread(self.log_status))
        except ValueError:
            pass  # not the main thread (tests): no signal

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._report is not None and self._report.running:
            self._report.stop()
        self.write_status()
        self.retries.cancel_all()
        d = self.watch.stopService() if self.watch.running else succeed(None)
        # Let syncs in flight finish (bounded) before their OVSDB connection and netlink threads go away.
        d.addBoth(lambda _: self.syncs.all_idle().addTimeout(STOP_GRACE, self.reactor).addErrback(lambda _: None))

        def close(_: Any) -> None:
            self.links.stop()
            self.conn.close()

        return d.addBoth(close)

    # -- desired state from the server
    def _on_list(self, seq: int, ports: list[Port]) -> None:
        self.desired = {p["id"]: p for p in ports}
        self.reported_up = {p["id"] for p in ports if p.get("status") == "ACTIVE"}
        self.log.info("agent: {count} ports bound to {host} (as of event {seq})", count=len(ports), host=self.cfg.host, seq=seq)
        self._ready = True
        self.reconcile("listed")

    def _on_event(self, message: dict[str, Any]) -> None:
        since = time.monotonic()
        kind, port_id, payload = message["kind"], message["object_id"], message["payload"]
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
        actual = self._scan = self.bridge.ports_with_iface_ids()
        if self.vlans is not None:
            for port_id, vif in actual.items():
                if port_id in self.desired:
                    self.vlans.learn(self.desired[port_id]["network_id"], vif.tag)
        ids = set(self.desired) | set(actual)
        self.log.info("agent: reconciling {count} ports ({reason})", count=len(ids), reason=reason)
        since = time.monotonic()
        before = dict(self.stats)
        for port_id in ids:
            self.schedule(port_id, since)
        pending = [self.syncs.idle(port_id) for port_id in ids]

        def done(_: Any) -> None:
            changes = {k: self.stats[k] - before[k] for k in ("plugged", "unplugged", "adjusted", "errors", "refused")}
            self.log.info(
                "agent: in step after reconcile ({reason}): {count} ports, {plugged} plugged, {unplugged} unplugged, "
                "{adjusted} adjusted, {errors} errors, {refused} refused in {ms}ms",
                reason=reason, count=len(ids), ms=int((time.monotonic() - since) * 1000), **changes,
            )  # fmt: skip

        DeferredList(pending, consumeErrors=True).addCallback(done)

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
        await self.plumber.unplug(port_id, actual, since)
        self._link_up.pop(port_id, None)
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
        if plugged:
            await self.plumber.plug(port, since, up=up, vm_ports=self._same_vm(port))
            self._link_up[port_id] = up
            self.stats["plugged"] += 1
        else:
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

    # -- reporting
    async def _report_state(self) -> None:
        state = {
            "agent_type": self.cfg.agent_type, "binary": "restproxy-agent", "host": self.cfg.host, "topic": "N/A",
            "start_flag": not self._started_reporting,
            "configurations": {
                "integration_bridge": self.cfg.integration_bridge, "datapath_type": self.cfg.datapath_type,
                "devices": len(self.desired), "local_vlan_isolation": self.vlans is not None,
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
