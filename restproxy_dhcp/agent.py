"""The DHCP agent: one qdhcp- namespace, DHCP port and dnsmasq per served network, kept in step with the server.

Desired state: the networks the server lists (``/agent/v1/dhcp/networks``),
kept current by the DHCP watch's events (ports applied from their payloads;
subnet and network events make the next sync re-read the network with
``get_network_info``). Each network is synced on its own, one sync at a time
(``KeyedSerializer``, as the host agent's ports): DHCP port (created or
claimed through ``get_dhcp_port``), plug (restproxy_agent's links and
bridge), files (written atomically), dnsmasq (started, adopted, reloaded with
SIGHUP, or restarted when its arguments change). A network no longer served
is torn down: dnsmasq stopped, port unplugged, namespace and state removed,
the DHCP port released. A failed sync is retried with backoff.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger

from restproxy_agent.bridge import OWNER_KEY, IntegrationBridge, vif_external_ids
from restproxy_agent.channel import ChannelClient, ChannelError, PortWatch
from restproxy_agent.ovsdb import OvsdbConnection
from restproxy_agent.serial import KeyedSerializer
from restproxy_common.backoff import RetrySchedule, backoff_policy
from restproxy_common.tls import ControllerTLSPolicy
from restproxy_dhcp import dnsmasq as dm
from restproxy_dhcp.channel import DhcpChannelClient
from restproxy_dhcp.config import DhcpAgentConfig
from restproxy_dhcp.links import DhcpLinks
from restproxy_dhcp.process import Launcher, cmdline, running_pid, write_atomic

NETWORK_RETRY = backoff_policy(initial=0.5, maximum=30.0, factor=2.0, jitter=0.05)
NETWORK_KEY = "restproxy-network"  # Interface.external_ids of a DHCP port: its network (found again after a restart)
Network = dict[str, Any]


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


@attrs.define
class Served:
    """What runs for one network (this run's knowledge; rebuilt from the pid file and OVSDB after a restart)."""

    pid: int | None = None
    port_id: str | None = None
    mac: str | None = None
    addresses: list[str] = attrs.field(factory=list)
    hosts: list[str] = attrs.field(factory=list)
    adopted: bool = False
    started_at: float = 0.0


class _Quiet(protocol.ProcessProtocol):
    """dhcp_release: nothing to read; its exit is logged."""

    def __init__(self, log: Logger, what: str) -> None:
        self.log, self.what = log, what

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", 0)
        if code:
            self.log.warn("{what} exited with {code}", what=self.what, code=code)


class DhcpAgent(service.Service):
    log = Logger()

    def __init__(
        self, cfg: DhcpAgentConfig, reactor: Any, conn: OvsdbConnection | None = None, client: ChannelClient | None = None
    ) -> None:
        self.cfg = cfg
        self.reactor = reactor
        self.conn = conn or OvsdbConnection(cfg.ovsdb_connection, reactor=reactor)
        self.bridge = IntegrationBridge(self.conn, cfg.integration_bridge)
        self.links = DhcpLinks(reactor, max_threads=8)  # namespace creation mostly waits (RCU): more at once
        self.local_vlans = cfg.local_vlan_isolation and not cfg.of_controller
        tls = ControllerTLSPolicy(ca_file=cfg.server_ca_file) if cfg.server_url.startswith("https:") else None
        self.client = client or DhcpChannelClient(cfg.server_url, cfg.token, cfg.host, reactor, timeout=cfg.server_timeout, tls_policy=tls)
        self.watch = PortWatch(self.client, self._on_list, self._on_event, reactor)
        self.launcher = Launcher(reactor, self._exited)
        self.networks: dict[str, Network] = {}
        self.stale: set[str] = set()  # re-read from the server at the next sync
        self.deleted: set[str] = set()  # network_deleted seen: its VLAN claim goes too
        self.served: dict[str, Served] = {}
        self.failures: dict[str, str] = {}
        self.syncs: KeyedSerializer[str] = KeyedSerializer(self._sync, self._failed)
        self.retries: RetrySchedule[str] = RetrySchedule(reactor, NETWORK_RETRY)
        self.stats = {"started": 0, "adopted": 0, "reloads": 0, "restarts": 0, "torn_down": 0, "errors": 0}
        self._ready = False
        self._loops: list[task.LoopingCall] = []
        self._started_reporting = False
        self._release_missing_logged = False
        self.started: Deferred[None] | None = None

    # -- lifecycle
    def startService(self) -> None:
        super().startService()
        self.started = ensureDeferred(self._start())
        self.started.addErrback(lambda f: self.log.failure("DHCP agent start failed", f))

    async def _start(self) -> None:
        self.log.info(
            "DHCP agent for host {host} starting: bridge {bridge}, state {state}, server {url}",
            host=self.cfg.host, bridge=self.cfg.integration_bridge, state=self.cfg.state_path, url=self.cfg.server_url,
        )  # fmt: skip
        os.makedirs(self.cfg.state_path, mode=0o755, exist_ok=True)
        self._adopt()
        await self.conn.connect()
        controller = self.cfg.of_controller or None
        protocols = [self.cfg.of_protocols] if self.cfg.of_protocols else None
        await self.bridge.ensure_bridge(
            self.cfg.integration_bridge, self.cfg.datapath_type, fail_mode="secure" if controller else None,
            controller=controller, protocols=protocols,
        )  # fmt: skip
        self.conn.on_reconnect(self._ovsdb_reconnected)
        self.watch.startService()
        report = lambda: ensureDeferred(self._report_state())  # noqa: E731
        for interval, fn in ((self.cfg.check_interval, self._check), (self.cfg.report_interval, report)):
            loop = task.LoopingCall(fn)
            loop.clock = self.reactor
            loop.start(interval, now=True)
            self._loops.append(loop)

    def stopService(self) -> Deferred[None]:
        """dnsmasq keeps running (DHCP is served while the agent is down); the next run adopts it."""
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self.retries.cancel_all()
        d = self.watch.stopService() if self.watch.running else succeed(None)
        d.addBoth(lambda _: self.syncs.all_idle().addTimeout(5.0, self.reactor).addErrback(lambda _: None))

        def close(_: Any) -> None:
            self.links.stop()
            self.conn.close()

        return d.addBoth(close)

    def _ovsdb_reconnected(self) -> None:
        """ovsdb-server restarted (its database may be new): every DHCP port is plugged again (idempotent), then all is synced."""
        for state in self.served.values():
            state.port_id = None
        ensureDeferred(self.reconcile("OVSDB reconnected")).addErrback(lambda f: self.log.failure("reconcile failed", f))

    def _adopt(self) -> None:
        """dnsmasq processes an earlier run left, by their pid files: kept running, synced (files, SIGHUP) after the first list."""
        for net_id in sorted(os.listdir(self.cfg.state_path)):
            paths = dm.Paths.of(self.cfg.state_path, net_id)
            if not os.path.isdir(paths.directory):
                continue
            pid = running_pid(paths.pid)
            hosts = _read_lines(paths.hosts)
            self.served[net_id] = Served(pid=pid, hosts=hosts, adopted=pid is not None)
            if pid is not None:
                self.stats["adopted"] += 1
                self.log.info("network {net} dnsmasq pid {pid} adopted ({hosts} hosts)", net=net_id, pid=pid, hosts=len(hosts))

    # -- desired state from the server
    def _on_list(self, seq: int, networks: list[Network]) -> None:
        self.networks = {n["id"]: n for n in networks}
        self.stale.clear()
        self.log.info("DHCP agent: {count} networks served (as of event {seq})", count=len(networks), seq=seq)
        self._ready = True
        ensureDeferred(self.reconcile("listed")).addErrback(lambda f: self.log.failure("reconcile failed", f))

    def _on_event(self, message: dict[str, Any]) -> None:
        since = time.monotonic()
        kind, payload = message["kind"], message["payload"]
        if kind.startswith("port_"):
            port = payload["port"]
            net_id = port["network_id"]
            net = self.networks.get(net_id)
            if net is None:
                self.stale.add(net_id)
            else:
                ports = [p for p in net.get("ports", []) if p["id"] != port["id"]]
                net["ports"] = ports if kind == "port_deleted" else [*ports, port]
        elif kind.startswith("subnet_"):
            net_id = payload["subnet"]["network_id"]
            self.stale.add(net_id)
        elif kind == "network_deleted":
            net_id = message["object_id"]
            self.networks.pop(net_id, None)
            self.stale.discard(net_id)
            self.deleted.add(net_id)
        elif kind == "network_updated":
            net_id = message["object_id"]
            self.stale.add(net_id)
        else:
            return
        self.log.debug("network {net} event {kind} #{seq}", net=net_id, kind=kind, seq=message["seq"])
        self.syncs.request(net_id, since)

    async def reconcile(self, reason: str) -> None:
        """Sync every network served, running, or left behind (state directory, namespace, OVS port)."""
        if not self._ready:
            return
        since = time.monotonic()
        ids = set(self.networks) | set(self.served)
        ids |= {n for n in os.listdir(self.cfg.state_path) if os.path.isdir(os.path.join(self.cfg.state_path, n))}
        prefix = self.cfg.namespace_prefix
        ids |= {ns[len(prefix) :] for ns in await self.links.list_netns(prefix) if len(ns) == len(prefix) + 36}
        ids |= {vif.external_ids.get(NETWORK_KEY, "") for vif in self._our_vifs()} - {""}
        for net_id in ids:
            if net_id not in self.networks:
                self.stale.add(net_id)  # left from before: asked once, so that a deleted network's VLAN claim goes too
            self.syncs.request(net_id, since)
        await DeferredList([self.syncs.idle(n) for n in ids], consumeErrors=True)
        up = sum(1 for s in self.served.values() if s.pid)
        self.log.info(
            "DHCP agent: in step after reconcile ({reason}): {count} networks, {up} dnsmasq running in {ms}ms",
            reason=reason, count=len(self.networks), up=up, ms=_ms(since),
        )  # fmt: skip

    def namespace(self, net_id: str) -> str:
        return dm.namespace(net_id, self.cfg.namespace_prefix)

    def _our_vifs(self) -> list[Any]:
        return [v for v in self.bridge.ports_with_iface_ids().values() if v.external_ids.get(OWNER_KEY) == "dhcp"]

    # -- per-network syncs
    def _failed(self, net_id: str, error: Exception, since: float) -> None:
        if not self.running:
            return
        delay = self.retries.failed(net_id, lambda n: self.syncs.request(n, time.monotonic()))
        self.failures[net_id] = str(error)
        self.stats["errors"] += 1
        self.log.error(
            "network {net} ERROR: {error} +{ms}ms; retrying in {delay:.1f}s",
            net=net_id, error=str(error) or type(error).__name__, ms=_ms(since), delay=delay,
        )  # fmt: skip

    async def _sync(self, net_id: str, since: float) -> None:
        if net_id in self.stale:
            self.stale.discard(net_id)
            await self._refetch(net_id)
        net = self.networks.get(net_id)
        if net is None or not dm.served_subnets(net):
            await self._teardown(net_id, since)
        else:
            await self._setup(net, since)
        self.failures.pop(net_id, None)
        self.retries.reset(net_id)

    async def _refetch(self, net_id: str) -> None:
        try:
            net = await self.client.call("get_network_info", network_id=net_id)
        except ChannelError as e:
            if e.status != 404:
                raise
            self.networks.pop(net_id, None)
            self.deleted.add(net_id)  # gone, or never served: either way nothing of it stays here
            return
        if net.get("admin_state_up") is False:
            self.networks.pop(net_id, None)
        else:
            self.networks[net_id] = net

    async def _dhcp_port(self, net: Network, since: float) -> dict[str, Any]:
        """This agent's DHCP port with an address on every DHCP subnet: the one the server lists, else get_dhcp_port's."""
        device = dm.device_id(self.cfg.host, net["id"])
        port = dm.dhcp_port(net, device)
        wanted = {s["id"] for s in net["subnets"] if s.get("enable_dhcp")}
        if port is not None and wanted <= {f["subnet_id"] for f in port["fixed_ips"]}:
            return port
        port = await self.client.call("get_dhcp_port", network_id=net["id"], device_id=device, host=self.cfg.host)
        port["fixed_ips"] = [{"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]} for f in port["fixed_ips"]]
        net["ports"] = [p for p in net.get("ports", []) if p["id"] != port["id"]] + [port]
        self.log.info(
            "network {net} DHCP port {port} (device_id {device}, mac {mac}, ips {ips}) +{ms}ms",
            net=net["id"], port=port["id"], device=device, mac=port["mac_address"],
            ips=",".join(f["ip_address"] for f in port["fixed_ips"]), ms=_ms(since),
        )  # fmt: skip
        return port

    async def _setup(self, net: Network, since: float) -> None:
        net_id = net["id"]
        netns = self.namespace(net_id)
        state = self.served.setdefault(net_id, Served())
        port = await self._dhcp_port(net, since)
        inner = dm.ns_device(port["id"])
        addresses = dm.interface_addresses(net, port)
        if state.port_id is None and await self._plugged_before(net_id, port):
            state.port_id, state.mac, state.addresses = port["id"], port["mac_address"], addresses
        ovs: Deferred[None] | None = None
        if state.port_id != port["id"] or state.mac != port["mac_address"]:
            if state.port_id is not None and state.port_id != port["id"]:
                await self._unplug(dm.host_device(state.port_id))
            state.port_id = None
            await self.links.create_veth_into_netns(dm.host_device(port["id"]), inner, netns, port["mac_address"], self.cfg.mtu, ours=[])
            state.addresses = []
            # br-int (tag, OVS port, ofport) goes on while dnsmasq starts: the sync ends when both have.
            ovs = ensureDeferred(self._plug(net_id, port, since))
        try:
            removed = await self._serve(net, port, state, since)
        except BaseException:
            if ovs is not None:
                ovs.addErrback(lambda _: None)  # this sync failed anyway (and is retried)
            raise
        if ovs is not None:
            await ovs
            state.port_id, state.mac = port["id"], port["mac_address"]
        for entry in removed:
            self._release(netns, inner, entry)

    async def _serve(self, net: Network, port: dict[str, Any], state: Served, since: float) -> list[str]:
        """Addresses in the namespace, files, and dnsmasq started, reloaded or restarted; the host entries that went."""
        net_id = net["id"]
        netns = self.namespace(net_id)
        inner = dm.ns_device(port["id"])
        addresses = dm.interface_addresses(net, port)
        if state.addresses != addresses:
            await self.links.set_addresses(netns, inner, addresses)
            state.addresses = addresses
        paths = dm.Paths.of(self.cfg.state_path, net_id)
        os.makedirs(paths.directory, mode=0o755, exist_ok=True)
        hosts = dm.host_entries(net)
        changed = write_atomic(paths.hosts, dm.render(hosts))
        changed = write_atomic(paths.opts, dm.render(dm.option_lines(net))) or changed
        args = dm.dnsmasq_args(self.cfg, net, port["id"], paths)
        pid = state.pid if state.pid is not None and cmdline(state.pid) else running_pid(paths.pid)
        if pid is not None and cmdline(pid) != args:
            self.log.info("network {net} dnsmasq pid {pid} restarting: its arguments changed (subnets or config)", net=net_id, pid=pid)
            state.pid = None
            await self.launcher.stop(pid, paths.pid)
            pid = None
        removed = sorted(set(state.hosts) - set(hosts))
        added = len(set(hosts) - set(state.hosts))
        if pid is None:
            state.pid = self.launcher.start(netns, args, paths.pid)
            state.started_at = self.reactor.seconds()
            self.stats["started"] += 1
            self.log.info(
                "network {net} dnsmasq started: pid {pid}, netns {netns}, port {port} ({device}), {hosts} hosts +{ms}ms",
                net=net_id, pid=state.pid, netns=netns, port=port["id"], device=inner, hosts=len(hosts), ms=_ms(since),
            )  # fmt: skip
        elif changed or state.adopted:
            state.pid = pid
            self.launcher.signal(pid, signal.SIGHUP)
            self.stats["reloads"] += 1
            self.log.info(
                "network {net} dnsmasq pid {pid} reloaded (SIGHUP): {changed} hosts changed (+{added} -{removed}), {hosts} hosts +{ms}ms",
                net=net_id, pid=pid, changed=added + len(removed), added=added, removed=len(removed), hosts=len(hosts), ms=_ms(since),
            )  # fmt: skip
        state.pid, state.adopted, state.hosts = state.pid or pid, False, hosts
        return removed

    async def _plugged_before(self, net_id: str, port: dict[str, Any]) -> bool:
        """An earlier run's DHCP port, in place: its OVS interface is ours, with the port's id and MAC, an ofport (so its
        veth exists) and the network's tag. A restart then neither re-creates nor re-addresses it (one netlink fork less
        per network); anything else is plugged again (idempotently)."""
        device = dm.host_device(port["id"])
        if not os.path.exists(f"/sys/class/net/{device}") or not os.path.exists(f"/run/netns/{self.namespace(net_id)}"):
            return False  # (an Interface row outlives its device: its ofport says nothing then)
        vif = self.bridge.vif(device)
        if vif is None or vif.iface_id != port["id"] or vif.mac != port["mac_address"] or not vif.ofport or vif.ofport < 0:
            return False
        if vif.external_ids.get(OWNER_KEY) != "dhcp" or vif.external_ids.get(NETWORK_KEY) != net_id:
            return False
        return not self.local_vlans or vif.tag == await self.bridge.claim_vlan(net_id)

    async def _plug(self, net_id: str, port: dict[str, Any], since: float) -> None:
        """The DHCP port's host end (its veth exists) on br-int, with the network's tag."""
        netns = self.namespace(net_id)
        device, inner = dm.host_device(port["id"]), dm.ns_device(port["id"])
        tag = await self.bridge.claim_vlan(net_id) if self.local_vlans else None
        ids = {**vif_external_ids(port["id"], port["mac_address"], port.get("device_id") or ""), OWNER_KEY: "dhcp", NETWORK_KEY: net_id}
        await self.bridge.add_port(device, "", ids, tag=tag, mtu=self.cfg.mtu)
        ofport = await self.bridge.wait_ofport(device, timeout=self.cfg.ofport_timeout)
        self.log.info(
            "network {net} DHCP port {port} plugged: netns {netns}, device {device} (peer {inner}), mac {mac}, tag {tag}, "
            "ofport {ofport} +{ms}ms",
            net=net_id, port=port["id"], netns=netns, device=device, inner=inner, mac=port["mac_address"], tag=tag, ofport=ofport,
            ms=_ms(since),
        )  # fmt: skip

    async def _unplug(self, device: str) -> None:
        await self.bridge.delete_port(device)
        await self.links.delete_link(device)

    async def _teardown(self, net_id: str, since: float) -> None:
        """Not served (deleted, DHCP off, admin down, or left from before): nothing of it stays on this host."""
        state = self.served.pop(net_id, None)
        paths = dm.Paths.of(self.cfg.state_path, net_id)
        netns = self.namespace(net_id)
        pid = state.pid if state is not None and state.pid else running_pid(paths.pid)
        if pid is not None:
            await self.launcher.stop(pid, paths.pid)
        devices = {v.name for v in self._our_vifs() if v.external_ids.get(NETWORK_KEY) == net_id}
        if state is not None and state.port_id:
            devices.add(dm.host_device(state.port_id))
        for device in sorted(devices):
            await self._unplug(device)
        had_netns = await self.links.delete_netns(netns)
        if os.path.isdir(paths.directory):
            shutil.rmtree(paths.directory, ignore_errors=True)
        if state is not None or devices:
            # Its DHCP port goes too (DHCP turned off, admin down; already gone with a deleted network).
            try:
                device_id = dm.device_id(self.cfg.host, net_id)
                await self.client.call("release_dhcp_port", network_id=net_id, device_id=device_id, host=self.cfg.host)
            except ChannelError as e:
                if e.status not in (400, 404):
                    raise
        if net_id in self.deleted:
            self.deleted.discard(net_id)
            if self.local_vlans:
                await self.bridge.release_vlan(net_id)  # kept while any port (a VM's) still carries the tag
        if pid is None and not devices and not had_netns and state is None:
            return
        self.stats["torn_down"] += 1
        self.log.info(
            "network {net} torn down: dnsmasq pid {pid} stopped, netns {netns} {gone}, ports {devices} removed +{ms}ms",
            net=net_id, pid=pid, netns=netns, gone="deleted" if had_netns else "absent", devices=",".join(sorted(devices)) or "none",
            ms=_ms(since),
        )  # fmt: skip

    def _release(self, netns: str, device: str, entry: str) -> None:
        """dhcp_release for a host entry that went (port deleted, or its IP changed): the lease ends now, not at expiry."""
        mac, _, ip = entry.split(",", 2)
        if ip.startswith("["):
            return  # DHCPv6 leases expire on their own (dhcp_release6 needs the client's DUID)
        binary = self.cfg.dhcp_release_binary
        if not os.path.exists(binary):
            if not self._release_missing_logged:
                self.log.warn("{binary} is missing (Debian: dnsmasq-utils): leases of deleted ports run to their expiry", binary=binary)
                self._release_missing_logged = True
            return
        argv = [self.launcher.ip, "netns", "exec", netns, binary, device, ip, mac]
        null = os.open(os.devnull, os.O_RDWR)
        try:
            self.reactor.spawnProcess(
                _Quiet(self.log, f"dhcp_release {ip} {mac}"), argv[0], argv, env={}, childFDs={0: null, 1: null, 2: null}
            )
        finally:
            os.close(null)

    # -- dnsmasq health
    def _exited(self, pid: int) -> None:
        """A dnsmasq this run started ended: unless stopped on purpose (its state no longer names it), start it again."""
        for net_id, state in self.served.items():
            if state.pid == pid and self.running:
                state.pid = None
                self.stats["restarts"] += 1
                if self.reactor.seconds() - state.started_at < 1.0:
                    # It could not start (its log says why): again with backoff, not in a tight loop.
                    paths = dm.Paths.of(self.cfg.state_path, net_id)
                    self._failed(net_id, RuntimeError(f"dnsmasq pid {pid} exited at once (see {paths.log})"), time.monotonic())
                    return
                self.log.warn("network {net} dnsmasq pid {pid} exited; restarting it", net=net_id, pid=pid)
                self.syncs.request(net_id, time.monotonic())

    def _check(self) -> None:
        """Every ``check_interval``: a dnsmasq that is gone (adopted ones too, which are not our children) is started again."""
        if not self._ready:
            return
        for net_id, state in list(self.served.items()):
            if state.pid is not None and not cmdline(state.pid) and net_id not in self.syncs:
                self.log.warn("network {net} dnsmasq pid {pid} is gone; restarting it", net=net_id, pid=state.pid)
                state.pid = None
                self.stats["restarts"] += 1
                self.syncs.request(net_id, time.monotonic())

    # -- reporting
    async def _report_state(self) -> None:
        state = {
            "agent_type": self.cfg.agent_type, "binary": "restproxy-dhcp-agent", "host": self.cfg.host, "topic": "dhcp_agent",
            "start_flag": not self._started_reporting,
            "configurations": {
                "dhcp_driver": "dnsmasq", "networks": len(self.networks),
                "subnets": sum(len(dm.served_subnets(n)) for n in self.networks.values()),
                "ports": sum(len(n.get("ports", [])) for n in self.networks.values()),
                "dnsmasq_running": sum(1 for s in self.served.values() if s.pid), "dhcp_lease_duration": self.cfg.dhcp_lease_duration,
            },
        }  # fmt: skip
        try:
            await self.client.call("report_state", agent_state=state)
            self._started_reporting = True
        except Exception as e:
            self.log.warn("report_state failed: {error}", error=str(e))

    def status(self) -> dict[str, Any]:
        return {
            "host": self.cfg.host, "server_connected": self.watch.connected, "networks": len(self.networks),
            "dnsmasq": {n: s.pid for n, s in self.served.items()}, "failing": dict(self.failures), **self.stats,
        }  # fmt: skip


def _read_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return []
