"""Host plumbing against a real private Open vSwitch (userspace datapath): OVSDB IDL, br-int ports, pyroute2 links.

"VMs" are network namespaces with a veth whose host end is plugged into a
netdev bridge. Ping and TCP run through ``ip netns exec`` in a thread, so the
reactor (and with it the IDL) keeps running meanwhile.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

from restproxy_agent.bridge import BridgeError, EnsureBridge, IntegrationBridge, OfportError, vif_external_ids
from restproxy_agent.links import LinkError, Links, device_name, peer_name
from restproxy_agent.ovsdb import CREATE, DELETE, UPDATE, OvsdbConnection, OvsdbTimeout, TransactionError, cell, changed_columns
from restproxy_testing.ovs_sandbox import NetnsVm, OvsSandbox
from tests.ovs_sandbox import ovs_sandbox as ovs_sandbox  # noqa: F401  (the module-scoped fixture)

MTU = 1450


@attrs.define
class Vif:
    port_id: str
    mac: str
    vm_uuid: str
    dev: str
    vm: NetnsVm


@attrs.define
class Plumbing:
    sandbox: OvsSandbox
    conn: OvsdbConnection
    bridge: IntegrationBridge
    links: Links
    subnet: int

    async def plug(self, name: str, tag: int | None = 1, ip_host: int | None = None, tx_checksum: bool = False) -> Vif:
        port_id = str(uuid.uuid4())
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in os.urandom(3))
        dev, peer = device_name(port_id), peer_name(port_id)
        ns = self.sandbox.netns_name(name)
        vm = self.sandbox.netns_vm(ns, peer)
        self.sandbox.track_link(dev)
        await self.links.create_veth_into_netns(dev, peer, ns, mac, MTU, tx_checksum=tx_checksum)
        await self.bridge.add_port(dev, "system", vif_external_ids(port_id, mac, str(uuid.uuid4())), tag=tag)
        await self.bridge.wait_ofport(dev, timeout=10)
        if ip_host is not None:
            await threads.deferToThread(vm.set_ip, f"10.{self.subnet}.0.{ip_host}/24")
        return Vif(port_id, mac, "", dev, vm)

    async def unplug(self, vif: Vif) -> None:
        await self.bridge.delete_port(vif.dev)
        await self.links.delete_link(vif.dev)
        await self.links.delete_netns(vif.vm.name)

    def ip(self, host: int) -> str:
        return f"10.{self.subnet}.0.{host}"


_subnets = iter(range(70, 250))


@pytest_twisted.async_yield_fixture
async def plumbing(ovs_sandbox: OvsSandbox) -> AsyncIterator[Plumbing]:  # noqa: F811
    conn = await OvsdbConnection(ovs_sandbox.endpoint).connect(timeout=10)
    bridge = IntegrationBridge(conn)
    await bridge.ensure_bridge(f"br-{ovs_sandbox.tag}", datapath_type="netdev")
    links = Links()
    try:
        yield Plumbing(ovs_sandbox, conn, bridge, links, next(_subnets))
    finally:
        conn.close()
        links.stop()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        await task.deferLater(_reactor(), step)
    raise AssertionError(f"condition not met within {timeout}s")


def test_device_names() -> None:
    pid = "c2600030-ca3b-4b2f-8d5e-0123456789ab"
    assert device_name(pid) == "tapc2600030-ca" and len(device_name(pid)) == 14
    assert peer_name(pid) == "tpic2600030-ca" and len(peer_name(pid)) <= 15


@pytest_twisted.ensureDeferred
async def test_two_vms_ping_and_tcp_and_vlan_isolation(plumbing: Plumbing) -> None:
    p = plumbing
    vm1 = await p.plug("vm1", tag=1, ip_host=1)
    vm2 = await p.plug("vm2", tag=1, ip_host=2)
    vm3 = await p.plug("vm3", tag=2, ip_host=3)

    vifs = p.bridge.ports_with_iface_ids()
    assert {vm1.port_id, vm2.port_id, vm3.port_id} <= set(vifs)
    v1 = vifs[vm1.port_id]
    assert (v1.name, v1.mac, v1.tag) == (vm1.dev, vm1.mac, 1) and v1.ofport > 0
    assert v1.external_ids["iface-status"] == "active" and "vm-uuid" in v1.external_ids
    assert vifs[vm3.port_id].tag == 2
    # The VM side carries the port's MAC and MTU, and has TX checksum offload off.
    assert await threads.deferToThread(vm1.vm.mac) == vm1.mac
    assert await threads.deferToThread(vm1.vm.mtu) == MTU
    assert not await threads.deferToThread(vm1.vm.tx_checksum_on)

    assert await threads.deferToThread(vm1.vm.ping_until, p.ip(2)), "no ping between two VMs on one tag"
    assert await threads.deferToThread(vm1.vm.tcp_roundtrip, vm2.vm, p.ip(2)), "TCP between two VMs failed"
    assert await threads.deferToThread(vm2.vm.tcp_roundtrip, vm1.vm, p.ip(1), 200_000), "bulk TCP failed"
    # Another local VLAN is isolated...
    assert not await threads.deferToThread(vm1.vm.ping, p.ip(3), 2, 0.5)
    # ...until its tag is changed to the same network.
    assert await p.bridge.set_tag(vm3.dev, 1) is True
    assert await p.bridge.set_tag(vm3.dev, 1) is False
    assert await threads.deferToThread(vm1.vm.ping_until, p.ip(3))
    for vif in (vm1, vm2, vm3):
        await p.unplug(vif)


@pytest_twisted.ensureDeferred
async def test_tcp_needs_tx_checksum_offload_off(plumbing: Plumbing) -> None:
    """The trap create_veth_into_netns handles: with TX checksum offload left on, ping works and TCP does not."""
    p = plumbing
    a = await p.plug("vmoa", ip_host=1, tx_checksum=True)
    b = await p.plug("vmob", ip_host=2, tx_checksum=True)
    assert await threads.deferToThread(a.vm.tx_checksum_on)
    assert await threads.deferToThread(a.vm.ping_until, p.ip(2))
    assert not await threads.deferToThread(a.vm.tcp_roundtrip, b.vm, p.ip(2), 18000, 1.5)
    await p.unplug(a)
    await p.unplug(b)


@pytest_twisted.ensureDeferred
async def test_delete_port_and_link_leave_nothing(plumbing: Plumbing) -> None:
    p = plumbing
    vif = await p.plug("vmdel", ip_host=None)
    assert p.conn.lookup("Interface", vif.dev) is not None
    assert await p.bridge.delete_port(vif.dev, wait_applied=True) is True
    assert await p.links.delete_link(vif.dev) is True
    assert p.conn.lookup("Port", vif.dev) is None and p.conn.lookup("Interface", vif.dev) is None
    assert vif.port_id not in p.bridge.ports_with_iface_ids()
    assert not await p.links.link_exists(vif.dev)
    assert vif.dev not in await p.links.list_links("tap")
    assert vif.dev not in p.sandbox.vsctl("list-ports", p.bridge.name).split()
    assert p.sandbox.vsctl("--columns=_uuid", "find", "Interface", f"name={vif.dev}") == ""
    # Both are idempotent.
    assert await p.bridge.delete_port(vif.dev) is False
    assert await p.links.delete_link(vif.dev) is False
    assert await p.links.delete_netns(vif.vm.name) is True
    assert not os.path.exists(f"/run/netns/{vif.vm.name}")


@pytest_twisted.ensureDeferred
async def test_add_port_twice_is_idempotent(plumbing: Plumbing) -> None:
    p = plumbing
    vif = await p.plug("vmidem")
    index = (await p.links.link_info(vif.dev)).index
    again = await p.links.create_veth_into_netns(vif.dev, vif.vm.ifname, vif.vm.name, vif.mac, MTU)
    assert again.index == index and (await p.links.link_info(vif.vm.ifname, vif.vm.name)).mac == vif.mac
    ids = vif_external_ids(vif.port_id, vif.mac, "vm-1")
    first = await p.bridge.add_port(vif.dev, "system", ids, tag=1)
    assert first is True  # the vm-uuid changed
    iface_uuid = p.conn.lookup("Interface", vif.dev).uuid
    seqno = p.conn.idl.change_seqno
    assert await p.bridge.add_port(vif.dev, "system", ids, tag=1) is False
    assert p.conn.idl.change_seqno == seqno, "a second identical add_port wrote something"
    # Concurrent adds of a new port: one insert, the other finds it.
    dev2 = device_name(str(uuid.uuid4()))
    p.sandbox.track_link(dev2)
    ids2 = {"iface-id": "x", "attached-mac": "fa:16:3e:00:00:01"}
    results = await defer.gatherResults([p.bridge.add_port(dev2, "internal", ids2), p.bridge.add_port(dev2, "internal", ids2)])
    assert sorted(results) == [False, True]
    assert p.conn.lookup("Interface", vif.dev).uuid == iface_uuid
    assert p.sandbox.vsctl("list-ports", p.bridge.name).split().count(vif.dev) == 1
    assert len([r for r in p.conn.rows("Port") if r.name == dev2]) == 1
    await p.bridge.delete_port(dev2)
    await p.unplug(vif)


@pytest_twisted.ensureDeferred
async def test_wait_ofport_reports_ovs_error_and_device_appearing_later(plumbing: Plumbing) -> None:
    p = plumbing
    port_id = str(uuid.uuid4())
    dev = device_name(port_id)
    p.sandbox.track_link(dev)
    await p.bridge.add_port(dev, "system", vif_external_ids(port_id, "fa:16:3e:00:00:02", "vm"))
    with pytest.raises(OfportError) as err:
        await p.bridge.wait_ofport(dev, timeout=5, fail_fast=True)
    assert "could not open network device" in err.value.error and err.value.ofport == -1
    with pytest.raises(OfportError, match="could not open network device"):
        await p.bridge.wait_ofport(dev, timeout=0.3)
    # -1 is not final: once the device exists, ovs-vswitchd opens it by itself.
    await p.links.create_tap(dev, "fa:16:3e:00:00:02", MTU)
    assert await p.bridge.wait_ofport(dev, timeout=10) > 0
    assert not p.conn.lookup("Interface", dev).error
    await p.bridge.delete_port(dev)
    assert await p.links.delete_link(dev) is True


_forks: list[int] = []
_counting_forks = [False]
os.register_at_fork(before=lambda: _forks.append(1) if _counting_forks[0] else None)


@pytest_twisted.ensureDeferred
async def test_veths_into_a_new_and_an_existing_namespace_fork_no_process(plumbing: Plumbing) -> None:
    """Issue 15: the peer is made in its namespace, with its MAC and MTU, and brought up there, all without a child process."""
    p = plumbing
    ns = p.sandbox.netns_name("vmnofork")
    p.sandbox.track_netns(ns)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    macs = ["fa:16:3e:00:10:01", "fa:16:3e:00:10:02"]
    for port_id in ids:
        p.sandbox.track_link(device_name(port_id))
    del _forks[:]
    _counting_forks[0] = True
    try:
        first = await p.links.create_veth_into_netns(device_name(ids[0]), peer_name(ids[0]), ns, macs[0], MTU)
        second = await p.links.create_veth_into_netns(device_name(ids[1]), peer_name(ids[1]), ns, macs[1], MTU, ours=[peer_name(ids[0])])
        peers = [await p.links.link_info(peer_name(port_id), ns) for port_id in ids]
        lo = await p.links.link_info("lo", ns)
        assert await p.links.link_info(peer_name(ids[0])) is None  # not left in the host's namespace
    finally:
        _counting_forks[0] = False
    assert _forks == []
    assert (first.kind, first.mtu, first.up, second.up) == ("veth", MTU, True, True)
    assert [(i.mac, i.mtu, i.up) for i in peers] == [(macs[0], MTU, True), (macs[1], MTU, True)]
    assert lo is not None and lo.up
    assert not await threads.deferToThread(NetnsVm(ns, peer_name(ids[0])).tx_checksum_on)
    with pytest.raises(LinkError) as err:
        await p.links.link_info("lo", p.sandbox.netns_name("vmnofork-missing"))
    assert err.value.code == 2 and not os.path.exists(f"/run/netns/{p.sandbox.netns_name('vmnofork-missing')}")
    for port_id in ids:
        assert await p.links.delete_link(device_name(port_id)) is True
    assert await p.links.delete_netns(ns) is True


@pytest_twisted.ensureDeferred
async def test_tap_vif(plumbing: Plumbing) -> None:
    p = plumbing
    port_id = str(uuid.uuid4())
    dev = device_name(port_id)
    p.sandbox.track_link(dev)
    info = await p.links.create_tap(dev, "fa:16:3e:00:00:03", MTU)
    assert (info.kind, info.mac, info.mtu, info.up) == ("tun", "fa:16:3e:00:00:03", MTU, True)
    assert (await p.links.create_tap(dev, "fa:16:3e:00:00:03", MTU)).index == info.index  # idempotent
    await p.bridge.add_port(dev, "system", vif_external_ids(port_id, "fa:16:3e:00:00:03", "vm"), mtu=MTU, tag=3, ofport_request=40123)
    assert await p.bridge.wait_ofport(dev) == 40123
    assert dev in await p.links.list_links("tap")
    vif = p.bridge.ports_with_iface_ids()[port_id]
    assert (vif.name, vif.ofport, vif.tag, vif.mac) == (dev, 40123, 3, "fa:16:3e:00:00:03") and p.bridge.vif(dev) == vif
    for table in ("Bridge", "Port", "Interface"):  # the replica read straight is what python-ovs's getattr reads
        for row in p.conn.rows(table):
            for column in row._table.columns:
                assert cell(row, column) == getattr(row, column), (table, column)
    await p.bridge.delete_port(dev)
    await p.links.delete_link(dev)
    with pytest.raises(LinkError) as err:
        await p.links.create_tap("tap" + "x" * 20)
    assert err.value.code == 34


@pytest_twisted.ensureDeferred
async def test_restart_ovsdb_reconnects_and_reconciles(plumbing: Plumbing) -> None:
    p = plumbing
    vifs = [await p.plug(f"vmr{i}") for i in range(4)]
    kept, retagged, removed = vifs[:2], vifs[2], vifs[3]
    before = p.bridge.ports_with_iface_ids()
    events: list[tuple[str, str, str, Any, Any]] = []

    def record(ev: str, row: Any, updates: Any) -> None:
        old_tag = getattr(updates, "tag", None) if updates is not None else None
        events.append((ev, row._table.name, row.name, old_tag, changed_columns(updates)))

    p.conn.add_listener(record, table="Interface")
    p.conn.add_listener(record, table="Port")
    reconnected = defer.Deferred()
    p.conn.on_reconnect(lambda: reconnected.callback(None) if not reconnected.called else None)

    await threads.deferToThread(p.sandbox.kill_ovsdb)
    await until(lambda: not p.conn.connected)
    # While the server is down: a transaction issued now is retried once it is back...
    late = str(uuid.uuid4())
    late_dev = device_name(late)
    p.sandbox.track_link(late_dev)
    pending = p.bridge.add_port(late_dev, "internal", vif_external_ids(late, "fa:16:3e:00:00:04", "vm"))
    # ...and someone else changes the database behind our back: one port re-tagged, one removed.
    removed_port = p.conn.lookup("Port", removed.dev).uuid
    p.sandbox.offline_transact(
        {"op": "update", "table": "Port", "where": [["name", "==", retagged.dev]], "row": {"tag": 7}},
        {
            "op": "mutate",
            "table": "Bridge",
            "where": [["name", "==", p.bridge.name]],
            "mutations": [["ports", "delete", ["uuid", str(removed_port)]]],
        },
        {"op": "delete", "table": "Port", "where": [["name", "==", removed.dev]]},
    )
    await threads.deferToThread(p.sandbox.start_ovsdb)
    await reconnected.addTimeout(20, _reactor())
    assert p.conn.connected and p.conn.reconnects == 1
    assert await pending is True

    after = p.bridge.ports_with_iface_ids()
    assert set(after) == set(before) - {removed.port_id} | {late}
    for vif in kept:
        a, b = after[vif.port_id], before[vif.port_id]
        assert (a.name, a.ofport, a.mac, a.tag) == (b.name, b.ofport, b.mac, b.tag)
    assert after[retagged.port_id].tag == 7
    assert len([r for r in p.conn.rows("Interface") if r.name in {v.dev for v in vifs}]) == 3
    # The re-download is reported as what really changed, never as new rows.
    assert [e[:3] for e in events if e[0] == CREATE] == [(CREATE, "Interface", late_dev), (CREATE, "Port", late_dev)]
    assert (UPDATE, "Port", retagged.dev, [1], ["tag"]) in events  # with the old tag
    assert {e[1:3] for e in events if e[0] == DELETE} == {("Interface", removed.dev), ("Port", removed.dev)}
    # For the untouched ports only ovs-vswitchd's status columns change: they are ephemeral (not kept on disk),
    # so the restarted server has them empty until ovs-vswitchd writes them again.
    status = {"admin_state", "link_state", "mac_in_use", "mtu"}
    kept_events = [e for e in events if e[2] in {v.dev for v in kept}]
    assert all(e[0] == UPDATE and set(e[4]) <= status for e in kept_events), kept_events
    assert await p.bridge.wait_ofport(late_dev) > 0
    await p.bridge.delete_port(late_dev)
    for vif in vifs:
        await p.unplug(vif)


@pytest_twisted.ensureDeferred
async def test_restart_vswitchd_ofports_come_back(plumbing: Plumbing) -> None:
    p = plumbing
    a = await p.plug("vmva", ip_host=1)
    b = await p.plug("vmvb", ip_host=2)
    before = {v.name: v.ofport for v in p.bridge.ports_with_iface_ids().values()}
    await threads.deferToThread(p.sandbox.restart_vswitchd)
    assert await p.bridge.wait_ofport(a.dev) == before[a.dev]
    assert await p.bridge.wait_ofport(b.dev) == before[b.dev]
    assert await threads.deferToThread(a.vm.ping_until, p.ip(2)), "no ping after ovs-vswitchd restart"
    await p.unplug(a)
    await p.unplug(b)


@pytest_twisted.ensureDeferred
async def test_ensure_bridge_with_controller_and_errors(plumbing: Plumbing) -> None:
    p = plumbing
    conn = p.conn
    other = IntegrationBridge(conn, "unused")
    name = f"brc-{p.sandbox.tag}"
    await other.ensure_bridge(name, "netdev", controller="tcp:127.0.0.1:6653", protocols=["OpenFlow10"])
    br = conn.lookup("Bridge", name)
    assert br.fail_mode == ["secure"] and br.datapath_type == "netdev" and br.protocols == ["OpenFlow10"]
    assert [(c.target, c.connection_mode) for c in br.controller] == [("tcp:127.0.0.1:6653", ["out-of-band"])]
    seqno = conn.idl.change_seqno
    await other.ensure_bridge(name, "netdev", controller="tcp:127.0.0.1:6653", protocols=["OpenFlow10"])
    assert conn.idl.change_seqno == seqno  # nothing to change
    # A port already on another bridge is not silently moved.
    await p.bridge.add_port("tapmoved00", "internal", {"iface-id": "m", "attached-mac": "fa:16:3e:00:00:05"})
    p.sandbox.track_link("tapmoved00")
    with pytest.raises(BridgeError, match="exists on bridge"):
        await other.add_port("tapmoved00", "internal", {})
    await p.bridge.delete_port("tapmoved00")

    # Hard errors from the server come back as TransactionError with the server's text.
    # (python-ovs drops values that fail the schema's own checks client-side, so use a uniqueness violation.)
    def duplicate_port(txn: Any, idl: Any) -> None:
        iface = txn.insert(idl.tables["Interface"])
        iface.name = name
        port = txn.insert(idl.tables["Port"])
        port.name, port.interfaces = name, [iface]
        conn.lookup("Bridge", name).addvalue("ports", port)

    with pytest.raises(TransactionError, match="constraint violation") as err:
        await conn.transact(duplicate_port)
    assert err.value.status == "error" and err.value.attempts == 1
    # Timeouts on waits.
    with pytest.raises(OvsdbTimeout):
        await conn.wait_for(lambda idl: False, timeout=0.1)


def _read(read: Callable[[Any, str], Any], row: Any, column: str) -> tuple[str, Any]:
    try:
        return ("value", read(row, column))
    except Exception as e:
        return ("raises", type(e).__name__)


@pytest_twisted.ensureDeferred
async def test_cell_reads_what_getattr_reads_inside_a_transaction(plumbing: Plumbing) -> None:
    """``cell`` on rows a transaction being built has changed, mutated, inserted or deleted, and on the others."""
    p = plumbing
    devs = [device_name(str(uuid.uuid4())) for _ in range(4)]
    for dev in devs:
        p.sandbox.track_link(dev)
        await p.bridge.add_port(dev, "internal", vif_external_ids(str(uuid.uuid4()), "fa:16:3e:00:00:09", "vm"), tag=5)
    differ: list[Any] = []

    def build(txn: Any, idl: Any) -> None:
        br = p.conn.lookup("Bridge", p.bridge.name)
        ports = [p.conn.lookup("Port", dev) for dev in devs]
        ports[0].tag = [6]  # a change
        br.setkey("external_ids", "review", "x")  # a mutation of a map
        br.delvalue("ports", ports[1])  # a mutation of a set of references
        ports[2].delete()
        new = txn.insert(idl.tables["Port"])
        new.name = "probe-new"
        for row in [br, *ports[:2], ports[3], new, *p.conn.rows("Interface"), *p.conn.rows("Bridge")]:
            for column in row._table.columns:
                got, want = _read(cell, row, column), _read(getattr, row, column)
                if got != want:
                    differ.append((row._table.name, column, got, want))
        raise RuntimeError("(built only to read)")

    with pytest.raises(RuntimeError):
        await p.conn.transact(build)
    assert differ == []
    for dev in devs:
        await p.bridge.delete_port(dev)


@pytest_twisted.ensureDeferred
async def test_adds_together_one_bad_port_fails_alone(plumbing: Plumbing) -> None:
    """Adds released together share a transaction; one that cannot go in (its port is on another bridge) fails on its
    own and the others are plugged."""
    p = plumbing
    other = f"bro{p.sandbox.tag}"[:15]
    await p.bridge.execute(EnsureBridge(other, "netdev"))
    bad = device_name(str(uuid.uuid4()))
    p.sandbox.track_link(bad)
    p.sandbox.vsctl("add-port", other, bad, "--", "set", "Interface", bad, "type=internal")
    devs = [device_name(str(uuid.uuid4())) for _ in range(5)]
    for dev in devs:
        p.sandbox.track_link(dev)
    names = [*devs[:2], bad, *devs[2:]]
    with p.bridge.adds_together():
        ds = [p.bridge.add_port(n, "internal", vif_external_ids(str(uuid.uuid4()), "fa:16:3e:00:00:0a", "vm"), tag=4) for n in names]
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, True, False, True, True, True]
    assert results[2][1].check(BridgeError)
    for dev in devs:
        assert await p.bridge.wait_ofport(dev) > 0
        await p.bridge.delete_port(dev)
    p.sandbox.vsctl("del-br", other)
