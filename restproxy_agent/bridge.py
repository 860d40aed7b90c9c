"""The integration bridge, on top of ``OvsdbConnection``: commands as objects, one transaction each (or batched).

Each change is a small command (``EnsureBridge``, ``AddPort``, ``DeletePort``,
``SetTag``) whose ``run(ctx)`` reads the replica and writes only what differs,
so running it twice changes nothing and a transaction retried after a
reconnect is safe. ``IntegrationBridge.execute(*commands)`` commits any number
of them in one transaction; the per-port methods are one-liners over it, and
operations on one port name are kept in order.

Rows follow os-vif/Neutron conventions (reference/ovs-plumbing-facts.md §1.2):
``Interface.external_ids`` carries ``iface-id``, ``attached-mac``,
``iface-status=active`` and ``vm-uuid``; isolation without a controller is a
local VLAN ``Port.tag``; a controlled bridge uses ``fail_mode=secure`` and an
out-of-band ``Controller``. ``ofport`` ``-1`` is not final (ovs-vswitchd
retries when the device appears), so ``wait_ofport`` waits until its timeout
unless told to fail fast, and then reports OVS's ``error`` column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from restproxy_agent.ovsdb import CommitResult, OvsdbConnection, OvsdbTimeout, Txn, cell

VIF_KEYS = ("iface-id", "attached-mac", "iface-status", "vm-uuid")
OWNER_KEY = "restproxy-owner"  # Interface.external_ids: "dhcp" on the DHCP agent's ports, which the host agent leaves alone


def is_vif(external_ids: dict[str, str]) -> bool:
    """A VM's interface, which the host agent plugs and filters (not a patch/internal port, nor the DHCP agent's port)."""
    return "iface-id" in external_ids and "attached-mac" in external_ids and external_ids.get(OWNER_KEY) != "dhcp"


VLAN_KEY = "restproxy-vlan-"  # Bridge.external_ids key prefix: the local VLAN registry shared by the agents of one host


class BridgeError(Exception):
    """A bridge/port operation cannot be done as asked (carries the port or bridge ``name``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class OfportError(BridgeError):
    """OVS gave the interface no usable ofport; ``error`` is OVS's ``Interface.error`` text, if any."""

    def __init__(self, name: str, error: str | None, ofport: int | None) -> None:
        super().__init__(name, error or f"no ofport assigned (ofport={ofport})")
        self.error, self.ofport = error, ofport


@attrs.frozen
class VifPort:
    """A port on the bridge that carries our external_ids."""

    iface_id: str
    name: str
    ofport: int | None
    mac: str | None
    tag: int | None
    external_ids: dict[str, str] = attrs.field(eq=False)
    admin_state: str | None = attrs.field(default=None, eq=False)  # "up"/"down" as ovs-vswitchd last saw the device


def vif_external_ids(port_id: str, mac: str, vm_uuid: str, status: str = "active") -> dict[str, str]:
    """The Interface.external_ids os-vif and Neutron use for a VIF."""
    return {"iface-id": port_id, "attached-mac": mac, "iface-status": status, "vm-uuid": vm_uuid}


_UNSET = object()
MAX_BATCH = 1000  # port adds in one transaction at most


def _ref_uuids(row: Any, column: str) -> set:
    """The UUIDs in a reference-set column, read from the committed datum when the row has no pending change.

    (python-ovs's ``Row.__getattr__`` rebuilds and sorts the whole set into Row objects on every read.)
    """
    if row.__dict__.get("_changes") or row.__dict__.get("_mutations") or row.__dict__.get("_data") is None:
        return {r.uuid for r in getattr(row, column)}
    datum = row._data.get(column)
    return {atom.value for atom in datum.values} if datum is not None else set()


def _first(results: list) -> Any:
    return results[0]


def _one(value: list) -> Any:
    return value[0] if value else None


def _vif_port(port: Any, iface: Any, ids: dict[str, str]) -> VifPort:
    try:
        admin_state = _one(cell(iface, "admin_state") or [])
    except AttributeError:
        admin_state = None  # not replicated (or not reported yet)
    ofport, tag = _one(cell(iface, "ofport")), _one(cell(port, "tag"))
    return VifPort(ids["iface-id"], cell(iface, "name"), ofport, ids["attached-mac"], tag, dict(ids), admin_state)


class _Ctx:
    """What one transaction's commands share: the txn, the replica, and whether anything was written."""

    def __init__(self, txn: Txn, conn: OvsdbConnection) -> None:
        self.txn, self.conn, self.idl = txn, conn, conn.idl
        self.changed = False
        self.inserted: dict[tuple[str, str], Any] = {}
        self._owners: dict[Any, Any] | None = None

    def lookup(self, table: str, name: str) -> Any:
        return self.inserted.get((table, name)) or self.conn.lookup(table, name)

    def insert(self, table: str, **columns: Any) -> Any:
        row = self.txn.insert(self.idl.tables[table])
        for column, value in columns.items():
            setattr(row, column, value)
        if "name" in columns:
            self.inserted[(table, columns["name"])] = row
        self.changed = True
        return row

    @staticmethod
    def get(row: Any, column: str, default: Any = _UNSET) -> Any:
        try:
            return getattr(row, column)
        except AttributeError:  # a row inserted by this transaction reads only the columns set so far
            return default

    def set(self, row: Any, column: str, value: Any) -> None:
        if self.get(row, column) != value:
            setattr(row, column, value)
            self.changed = True

    def root(self) -> Any:
        root = next(iter(self.idl.tables["Open_vSwitch"].rows.values()), None)
        if root is None:
            raise BridgeError("Open_vSwitch", "the database has no root row (initialise it once with the vsctl 'init' command)")
        return root

    def owning_bridge(self, port: Any) -> Any:
        if self._owners is None:  # once per transaction: reading Bridge.ports is O(ports log ports)
            self._owners = {u: br for br in self.idl.tables["Bridge"].rows.values() for u in _ref_uuids(br, "ports")}
        return self._owners.get(port.uuid)

    def attach(self, br: Any, port: Any) -> None:
        br.addvalue("ports", port)  # a mutation: no read-modify-write of Bridge.ports, no conflicts
        if self._owners is not None:
            self._owners[port.uuid] = br
        self.changed = True

    def detach(self, br: Any, port: Any) -> None:
        br.delvalue("ports", port)
        if self._owners is not None:
            self._owners.pop(port.uuid, None)
        self.changed = True


@attrs.frozen
class EnsureBridge:
    """Create the bridge if missing; set its datapath type and, when given, fail mode and controller."""

    name: str
    datapath_type: str = "system"
    fail_mode: str | None = None
    controller: Sequence[str] | str | None = None
    protocols: Sequence[str] | None = None
    connection_mode: str = "out-of-band"

    def run(self, ctx: _Ctx) -> Any:
        targets = [self.controller] if isinstance(self.controller, str) else list(self.controller or [])
        fail_mode = self.fail_mode or ("secure" if targets else None)
        br = ctx.lookup("Bridge", self.name)
        if br is None:
            iface = ctx.insert("Interface", name=self.name, type="internal")
            port = ctx.insert("Port", name=self.name, interfaces=[iface])
            br = ctx.insert("Bridge", name=self.name, ports=[port])
            ctx.root().addvalue("bridges", br)
        ctx.set(br, "datapath_type", self.datapath_type)
        if fail_mode is not None:
            ctx.set(br, "fail_mode", [fail_mode])
        if self.protocols is not None:
            ctx.set(br, "protocols", list(self.protocols))
        if self.controller is not None and sorted(c.target for c in ctx.get(br, "controller", [])) != sorted(targets):
            for old in ctx.get(br, "controller", []):
                old.delete()
            ctx.changed = True
            br.controller = [ctx.insert("Controller", target=t, connection_mode=[self.connection_mode]) for t in targets]
        return br


@attrs.frozen
class AddPort:
    """Port + Interface on ``bridge``; updates only what differs (``--may-exist`` plus a refresh of the ids)."""

    bridge: str
    name: str
    iface_type: str = ""
    external_ids: dict[str, str] = attrs.field(factory=dict)
    tag: int | None = None
    mtu: int | None = None
    ofport_request: int | None = None  # the ofport OVS gives it (if free): its flows can be in before it is

    def run(self, ctx: _Ctx) -> bool:
        br = ctx.lookup("Bridge", self.bridge)
        if br is None:
            raise BridgeError(self.bridge, "no such bridge")
        ids = {"iface-status": "active", **self.external_ids}
        iface_type = "" if self.iface_type == "system" else self.iface_type
        tag = [] if self.tag is None else [self.tag]
        before, ctx.changed = ctx.changed, False
        port = ctx.lookup("Port", self.name)
        if port is None:
            iface = ctx.lookup("Interface", self.name)
            if iface is not None:
                raise BridgeError(self.name, "an Interface of this name exists without its Port")
            # (a new row's columns in one go, the defaults left out: python-ovs reads a row back on every write)
            extra = {"type": iface_type} if iface_type else {}
            if self.mtu is not None:
                extra["mtu_request"] = [self.mtu]
            if self.ofport_request is not None:
                extra["ofport_request"] = [self.ofport_request]
            iface = ctx.insert("Interface", name=self.name, external_ids=ids, **extra)
            port = ctx.insert("Port", name=self.name, interfaces=[iface], **({"tag": tag} if tag else {}))
            ctx.attach(br, port)
            return True  # (the inserts set ctx.changed)
        owner = ctx.owning_bridge(port)
        if owner is not None and owner.name != self.bridge:
            raise BridgeError(self.name, f"port exists on bridge {owner.name}, not {self.bridge}")
        if owner is None:
            ctx.attach(br, port)
        iface = next((i for i in port.interfaces if i.name == self.name), None)
        if iface is None:
            raise BridgeError(self.name, "port has no interface of the same name")
        ctx.set(iface, "type", iface_type)
        if any(iface.external_ids.get(k) != v for k, v in ids.items()):
            iface.external_ids = {**iface.external_ids, **ids}
            ctx.changed = True
        ctx.set(port, "tag", tag)
        if self.mtu is not None:
            ctx.set(iface, "mtu_request", [self.mtu])
        if self.ofport_request is not None:
            ctx.set(iface, "ofport_request", [self.ofport_request])
        mine, ctx.changed = ctx.changed, ctx.changed or before
        return mine


@attrs.frozen
class DeletePort:
    """Remove the Port and its Interfaces from whatever bridge holds them; a no-op when absent."""

    name: str

    def run(self, ctx: _Ctx) -> bool:
        port = ctx.lookup("Port", self.name)
        if port is None:
            return False
        owner = ctx.owning_bridge(port)
        if owner is not None:
            ctx.detach(owner, port)
        for iface in port.interfaces:
            iface.delete()
        port.delete()
        ctx.changed = True
        return True


@attrs.frozen
class SetTag:
    """Set (or clear, with None) the local VLAN tag of a port."""

    name: str
    tag: int | None

    def run(self, ctx: _Ctx) -> bool:
        port = ctx.lookup("Port", self.name)
        if port is None:
            raise BridgeError(self.name, "no such port")
        before, ctx.changed = ctx.changed, False
        ctx.set(port, "tag", [] if self.tag is None else [self.tag])
        mine, ctx.changed = ctx.changed, ctx.changed or before
        return mine


def vlan_registry(br: Any) -> dict[str, int]:
    """network id -> local VLAN tag, as claimed in the bridge's external_ids."""
    ids = cell(br, "external_ids") if br is not None else {}
    return {k[len(VLAN_KEY) :]: int(v) for k, v in ids.items() if k.startswith(VLAN_KEY) and v.isdigit()}


@attrs.frozen
class ClaimVlan:
    """The network's local VLAN tag on the bridge, claimed in ``Bridge.external_ids`` if it has none yet.

    The host agent and the DHCP agent of one host plug into the same br-int
    from two processes; both take a network's tag from this registry. A new
    claim picks the lowest tag neither claimed nor carried by any port, and
    verifies the registry at commit: if another process claimed meanwhile, the
    commit fails with TRY_AGAIN and ``OvsdbConnection.transact`` rebuilds it
    from the new replica, which then holds the other claim (for the same
    network: the same tag). So one network never gets two tags, and two
    networks never share one.
    """

    bridge: str
    network_id: str

    def run(self, ctx: _Ctx) -> int:
        br = ctx.lookup("Bridge", self.bridge)
        if br is None:
            raise BridgeError(self.bridge, "no such bridge")
        claimed = vlan_registry(br)
        if self.network_id in claimed:
            return claimed[self.network_id]
        br.verify("external_ids")
        br.verify("ports")  # a port added meanwhile may carry a tag the registry does not know
        used = set(claimed.values()) | {t for p in ctx.idl.tables["Port"].rows.values() for t in p.tag}
        tag = next((t for t in range(1, 4095) if t not in used), None)
        if tag is None:
            raise BridgeError(self.bridge, "every local VLAN tag (1-4094) is in use")
        br.setkey("external_ids", VLAN_KEY + self.network_id, str(tag))
        ctx.changed = True
        return tag


@attrs.frozen
class ReleaseVlan:
    """Drop a deleted network's claim, unless a port still carries its tag (verified at commit, like ``ClaimVlan``)."""

    bridge: str
    network_id: str

    def run(self, ctx: _Ctx) -> bool:
        br = ctx.lookup("Bridge", self.bridge)
        tag = vlan_registry(br).get(self.network_id) if br is not None else None
        if tag is None:
            return False
        br.verify("external_ids")
        br.verify("ports")  # a port plugged meanwhile with the tag keeps the claim
        if any(tag in p.tag for p in ctx.idl.tables["Port"].rows.values()):
            return False
        br.delkey("external_ids", VLAN_KEY + self.network_id)
        ctx.changed = True
        return True


class IntegrationBridge:
    """br-int for the agent: ensure it, plug and unplug ports, read back the VIFs it carries."""

    log = Logger()

    def __init__(self, conn: OvsdbConnection, name: str = "br-int") -> None:
        self.conn, self.name = conn, name
        self._busy: dict[str, defer.Deferred] = {}
        self._adds: list[tuple[AddPort, defer.Deferred]] = []  # port adds waiting for the batch in flight
        self._adds_in_flight = False
        self._adds_paused = 0  # inside ``adds_together``: adds wait for its end

    # -- transactions -----------------------------------------------------------------------------------------
    def execute(self, *commands: Any, wait_applied: bool = False, timeout: float | None = 30.0) -> defer.Deferred:
        """Run ``commands`` in one transaction; fires with their results, in order.

        With ``wait_applied`` (and a change) it bumps ``next_cfg`` and waits until
        ovs-vswitchd has applied it (``cur_cfg``), as the vsctl tool does. Otherwise
        it doesn't: ovs-vswitchd reconfigures on any change anyway, the bump only
        costs two more updates to every client, and a plug is confirmed by its ofport.
        """

        def build(txn: Txn, idl: Any) -> tuple[list, bool]:
            ctx = _Ctx(txn, self.conn)
            results = [cmd.run(ctx) for cmd in commands]
            if ctx.changed and wait_applied:
                ctx.root().increment("next_cfg")
            return results, ctx.changed

        d = self.conn.transact(build, timeout=timeout)
        if wait_applied:
            d.addCallback(self._wait_applied, timeout)
        return d.addCallback(lambda r: r.value[0])

    def _wait_applied(self, result: CommitResult, timeout: float | None) -> defer.Deferred | CommitResult:
        next_cfg = result.increment
        if next_cfg is None:
            return result

        def applied(idl: Any) -> bool:
            root = next(iter(idl.tables["Open_vSwitch"].rows.values()), None)
            return root is not None and root.cur_cfg >= next_cfg

        return self.conn.wait_for(applied, timeout).addCallback(lambda _: result)

    def _serialized(self, name: str, fn: Any) -> defer.Deferred:
        """Keep operations on one port name in order (two adds of a new port must not both insert it)."""
        prev = self._busy.get(name)
        d = defer.Deferred()
        chained = (prev if prev is not None else defer.succeed(None)).addBoth(lambda _: fn())
        self._busy[name] = d

        def done(result: Any) -> Any:
            if self._busy.get(name) is d:
                del self._busy[name]
            d.callback(None)
            return result

        return chained.addBoth(done)

    # -- intent-level operations ------------------------------------------------------------------------------
    def ensure_bridge(
        self,
        name: str | None = None,
        datapath_type: str = "system",
        fail_mode: str | None = None,
        controller: Sequence[str] | str | None = None,
        protocols: Sequence[str] | None = None,
    ) -> defer.Deferred:
        """Create the bridge if missing and make its settings match; waits for ovs-vswitchd. ``name`` becomes ours."""
        self.name = name or self.name
        cmd = EnsureBridge(self.name, datapath_type, fail_mode, controller, protocols)
        return self.execute(cmd, wait_applied=True).addCallback(lambda _: None)

    def add_port(
        self,
        name: str,
        iface_type: str = "",
        external_ids: dict[str, str] | None = None,
        tag: int | None = None,
        mtu: int | None = None,
        ofport_request: int | None = None,
    ) -> defer.Deferred:
        """Plug ``name`` (idempotent). Fires with True if anything was written, False if it was already so."""
        cmd = AddPort(self.name, name, iface_type, dict(external_ids or {}), tag, mtu, ofport_request)
        return self._serialized(name, lambda: self._batched_add(cmd))

    def _batched_add(self, cmd: AddPort) -> defer.Deferred:
        """One port add, sent at once if no batch of adds is in flight, else with the others asked for meanwhile in
        one transaction when it is committed: a lone VM boot waits for nothing, and a burst of 500 new ports is a
        handful of transactions (ovs-vswitchd reconfigures the bridge, in time proportional to its ports, once per
        database change it sees: one change per port made it spend seconds reconfiguring, and its OpenFlow
        connection, which it serves between reconfigurations, crawled meanwhile)."""
        d: defer.Deferred = defer.Deferred()
        self._adds.append((cmd, d))
        self._send_adds()
        return d

    @contextlib.contextmanager
    def adds_together(self) -> Iterator[None]:
        """Port adds asked for inside go in one transaction, sent at its end (unless one is in flight: then after it,
        as ever). For callers that let many plugs go on at once (the ports held back during a burst's flows), where
        the first would otherwise go alone and the rest after it: one round trip and one reconfiguration of
        ovs-vswitchd, not two."""
        self._adds_paused += 1
        try:
            yield
        finally:
            self._adds_paused -= 1
            self._send_adds()

    def _send_adds(self) -> None:
        if self._adds_in_flight or self._adds_paused or not self._adds:
            return
        batch, self._adds = self._adds[:MAX_BATCH], self._adds[MAX_BATCH:]
        self._adds_in_flight = True

        def sent(results: list) -> None:
            for (_, d), result in zip(batch, results, strict=True):
                d.callback(result)

        def failed(f: Any) -> Any:
            if len(batch) == 1 or f.check(OvsdbTimeout):  # (a timed out one may still commit: no second try here)
                for _, d in batch:
                    d.errback(f)
                return None
            # One bad command fails the whole transaction: each on its own, so that only its own caller hears of it.
            for cmd, d in batch:
                self.execute(cmd).addCallback(_first).chainDeferred(d)
            return None

        def finished(_: Any) -> None:
            self._adds_in_flight = False
            self._send_adds()

        self.execute(*(cmd for cmd, _ in batch)).addCallbacks(sent, failed).addBoth(finished)

    def delete_port(self, name: str, wait_applied: bool = False) -> defer.Deferred:
        """Unplug ``name``; fires with True if a port was removed, False if there was none."""
        return self._serialized(name, lambda: self.execute(DeletePort(name), wait_applied=wait_applied).addCallback(_first))

    def claim_vlan(self, network_id: str) -> defer.Deferred:
        """Fires with the network's local VLAN tag, claimed in the bridge's registry if new (see ``ClaimVlan``)."""
        known = vlan_registry(self.conn.lookup("Bridge", self.name)).get(network_id)
        if known is not None:
            return defer.succeed(known)
        return self._serialized(VLAN_KEY, lambda: self.execute(ClaimVlan(self.name, network_id)).addCallback(_first))

    def release_vlan(self, network_id: str) -> defer.Deferred:
        """Fires with True if the deleted network's claim was dropped (see ``ReleaseVlan``)."""
        return self._serialized(VLAN_KEY, lambda: self.execute(ReleaseVlan(self.name, network_id)).addCallback(_first))

    def set_tag(self, name: str, tag: int | None) -> defer.Deferred:
        return self._serialized(name, lambda: self.execute(SetTag(name, tag)).addCallback(_first))

    async def wait_ofport(self, name: str, timeout: float = 10.0, fail_fast: bool = False) -> int:
        """The interface's ofport once > 0. On timeout (or at once on -1 with ``fail_fast``): ``OfportError`` with OVS's error."""

        def ready(idl: Any) -> int | None:
            iface = self.conn.lookup("Interface", name)
            if iface is None:
                return None
            ofport = _one(cell(iface, "ofport"))
            if ofport is not None and ofport > 0:
                return ofport
            if fail_fast and ofport == -1:
                raise OfportError(name, _one(iface.error), ofport)
            return None

        try:
            return await self.conn.wait_for(ready, timeout)
        except OvsdbTimeout:
            iface = self.conn.lookup("Interface", name)
            if iface is None:
                raise BridgeError(name, f"no such interface after {timeout:.1f}s") from None
            raise OfportError(name, _one(iface.error), _one(cell(iface, "ofport"))) from None

    # -- reading ----------------------------------------------------------------------------------------------
    def ports_with_iface_ids(self) -> dict[str, VifPort]:
        """VIFs on this bridge: {iface-id: VifPort} for interfaces with ``iface-id`` and ``attached-mac`` (Neutron's rule).

        When one iface-id has several interfaces (a migration), the one with ``iface-status=active`` wins.
        """
        br = self.conn.lookup("Bridge", self.name)
        out: dict[str, VifPort] = {}
        if br is None:
            return out
        for port in cell(br, "ports"):
            for iface in cell(port, "interfaces"):
                ids = cell(iface, "external_ids")
                if "iface-id" not in ids or "attached-mac" not in ids:
                    continue
                vif = _vif_port(port, iface, ids)
                prev = out.get(vif.iface_id)
                if prev is None or (prev.external_ids.get("iface-status") != "active" and ids.get("iface-status") == "active"):
                    out[vif.iface_id] = vif
        return out

    def vif(self, name: str) -> VifPort | None:
        """The VIF named ``name`` on this bridge, by index (O(1)); None if absent or not ours."""
        iface = self.conn.lookup("Interface", name)
        port = self.conn.lookup("Port", name)
        if iface is None or port is None:
            return None
        ids = cell(iface, "external_ids")  # (port names are unique across bridges; reading br.ports would be O(n))
        if "iface-id" not in ids or "attached-mac" not in ids:
            return None
        return _vif_port(port, iface, ids)

    def other_ports(self) -> list[tuple[int, int | None]]:
        """(ofport, tag) of this bridge's interfaces that are not VIFs (``is_vif``: the DHCP agent's ports are not) and have an ofport."""
        br = self.conn.lookup("Bridge", self.name)
        out: list[tuple[int, int | None]] = []
        if br is None:
            return out
        for port in cell(br, "ports"):
            for iface in cell(port, "interfaces"):
                ids = cell(iface, "external_ids")
                ofport = _one(cell(iface, "ofport"))
                if is_vif(ids) or ofport is None or ofport <= 0:
                    continue
                out.append((ofport, _one(cell(port, "tag"))))
        return sorted(out)

    def ofports_taken(self) -> set[int]:
        """Every ofport in use or requested by any interface of this switch (any bridge: requests are per bridge,
        but a number taken anywhere is simply skipped)."""
        taken: set[int] = set()
        for iface in self.conn.rows("Interface"):
            taken.update(v for v in (_one(cell(iface, "ofport")), _one(getattr(iface, "ofport_request", []))) if v is not None and v > 0)
        return taken

    def port_names(self) -> list[str]:
        br = self.conn.lookup("Bridge", self.name)
        return sorted(p.name for p in br.ports) if br is not None else []
