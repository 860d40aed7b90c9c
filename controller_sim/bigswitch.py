"""The "bigswitch" profile: a Big Switch controller's ``/networkService/v1.1`` resources.

It keeps what the plugin tells it (see :mod:`controller_sim.model`), checks every body
strictly (:mod:`controller_sim.validation`), and reproduces the answers the plugin's server
pool must react to: 404 ``NXVNS`` for a network it does not know (lost state), 409
``requires synchronization`` after a "forget" until a ``/topology`` PUT arrives, and
``/health`` reporting the same.

Mutations run one at a time behind a lock: a ``/topology`` PUT of tens of MB is parsed in a
thread (the reactor keeps answering ``/health`` and ``/_sim/``) and requests that arrive
meanwhile wait for it instead of being wiped by it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from controller_sim import validation as check
from controller_sim.config import SimConfig
from controller_sim.model import Port, Topology
from controller_sim.replies import JSON, ApiError, Reply, decode_json, ok
from controller_sim.request import ControllerRequest, match

# Topology bodies larger than this are parsed off the reactor thread.
THREAD_THRESHOLD = 256 * 1024
SYNC_REQUIRED = "requires synchronization"

_ = None
ROUTES: list[tuple[tuple[str | None, ...], dict[str, str]]] = [
    (("topology",), {"PUT": "put_topology"}),
    (("capabilities",), {"GET": "get_capabilities"}),
    (("health",), {"GET": "get_health"}),
    (("tenants", _, "networks"), {"POST": "create_network"}),
    (("tenants", _, "networks", _), {"PUT": "update_network", "DELETE": "delete_network"}),
    (("tenants", _, "networks", _, "ports"), {"POST": "create_port"}),
    (("tenants", _, "networks", _, "ports", _), {"PUT": "update_port", "DELETE": "delete_port"}),
    (("tenants", _, "networks", _, "ports", _, "attachment"), {"PUT": "put_attachment", "DELETE": "delete_attachment"}),
    (("tenants", _, "routers"), {"POST": "create_router"}),
    (("tenants", _, "routers", _), {"PUT": "update_router", "DELETE": "delete_router"}),
    (("tenants", _, "routers", _, "interfaces"), {"POST": "add_interface"}),
    (("tenants", _, "routers", _, "interfaces", _), {"DELETE": "remove_interface"}),
    (("tenants", _, "floatingips", _), {"PUT": "put_floatingip", "DELETE": "delete_floatingip"}),
    (("securitygroups",), {"POST": "post_security_group"}),
    (("securitygroups", _), {"DELETE": "delete_security_group"}),
]
READ_ONLY = {"get_capabilities", "get_health"}


def nxvns(tenant: str, net_id: str) -> ApiError:
    return ApiError(404, f"NXVNS: network {net_id} does not exist for tenant {tenant}")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} does not exist")


def _build_topology(raw: bytes) -> Topology:
    """Parse, check and build a whole state (runs in a thread for big bodies).

    The cyclic garbage collector is paused meanwhile: building a million small objects
    otherwise triggers full collections over the growing heap, which doubles the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return Topology.from_topology(check.check_topology(decode_json(raw)))
    finally:
        if was_enabled:
            gc.enable()


class BigSwitchController:
    log = Logger()
    profile = "bigswitch"

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = Topology()
        self.needs_sync = config.start_forgotten and config.forget_mode == "conflict"
        self.lock = DeferredLock()
        self.topology_puts_applied = 0
        self.last_topology: dict[str, Any] | None = None

    # -- admin --------------------------------------------------------------------------------

    def forget(self, mode: str | None = None) -> None:
        """Wipe everything, as a restart does; in "conflict" mode, also demand a re-sync."""
        self.state = Topology()
        self.needs_sync = (mode or self.config.forget_mode) == "conflict"
        self.log.info("state forgotten (needs_sync={needs_sync})", needs_sync=self.needs_sync)

    def snapshot(self, raw: bool = False) -> dict[str, Any]:
        return {"profile": self.profile, "needs_sync": self.needs_sync, **self.state.snapshot(raw)}

    def counts(self) -> dict[str, int]:
        return self.state.counts()

    def stats(self) -> dict[str, Any]:
        return {"topology_puts_applied": self.topology_puts_applied, "last_topology": self.last_topology, "needs_sync": self.needs_sync}

    # -- dispatch -----------------------------------------------------------------------------

    async def handle(self, req: ControllerRequest) -> Reply:
        try:
            return await self._dispatch(req)
        except ApiError as e:
            return e.reply()

    async def _dispatch(self, req: ControllerRequest) -> Reply:
        segments = req.segments
        if segments is None:
            raise ApiError(404, f"no such resource: {req.path}")
        for pattern, methods in ROUTES:
            args = match(pattern, segments)
            if args is None:
                continue
            name = methods.get(req.method)
            if name is None:
                raise ApiError(405, f"method {req.method} not allowed on {req.path}", {"Allow": ", ".join(methods)})
            if req.body.strip() and req.content_type != JSON:
                raise ApiError(415, f"Content-Type must be {JSON} when there is a body, not {req.content_type or 'none'!r}")
            handler: Callable[..., Any] = getattr(self, name)
            if name in READ_ONLY:
                return handler(*args)
            if name == "put_topology":
                return await self.lock.run(self.put_topology, req.body)
            if not self.lock.locked:
                # Nothing holds the lock or waits for it (a released lock passes straight to its next waiter),
                # and a mutation runs without yielding: the same order, without the lock's Deferreds.
                return self._mutate(handler, args, req.body)
            return await self.lock.run(self._mutate, handler, args, req.body)
        raise ApiError(404, f"no such resource: {req.path}")

    def _mutate(self, handler: Callable[..., Reply], args: list[str], body: bytes) -> Reply:
        if self.needs_sync:
            return Reply(409, {"error": SYNC_REQUIRED})
        return handler(*args, body)

    # -- read-only ------------------------------------------------------------------------------

    def get_capabilities(self) -> Reply:
        return Reply(200, list(self.config.capabilities))

    def get_health(self) -> Reply:
        if self.needs_sync:
            return Reply(409, {"status": "unsynchronized", "error": SYNC_REQUIRED})
        return ok()

    # -- topology -------------------------------------------------------------------------------

    async def put_topology(self, body: bytes) -> Reply:
        started = time.monotonic()
        if len(body) > THREAD_THRESHOLD:
            topo = await threads.deferToThread(_build_topology, body)
        else:
            topo = _build_topology(body)
        self.state = topo
        self.needs_sync = False
        self.topology_puts_applied += 1
        counts = topo.counts()
        self.last_topology = {"bytes": len(body), "seconds": round(time.monotonic() - started, 3), **counts}
        self.log.info(
            "topology replaced: {networks} networks, {ports} ports, {routers} routers ({bytes} bytes)",
            bytes=len(body),
            **counts,
        )
        return ok()

    # -- networks ----------------------------------------------------------------------------------

    def create_network(self, tenant: str, body: bytes) -> Reply:
        net = check.check_network(check.resource(decode_json(body), "network"), tenant=tenant)
        self.state.upsert_network(tenant, net)
        return ok()

    def update_network(self, tenant: str, net_id: str, body: bytes) -> Reply:
        net = check.check_network(check.resource(decode_json(body), "network"), tenant=tenant, net_id=net_id)
        self.state.upsert_network(tenant, net)
        return ok()

    def delete_network(self, tenant: str, net_id: str, body: bytes) -> Reply:
        if not self.state.delete_network(tenant, net_id):
            raise nxvns(tenant, net_id)
        return ok()

    # -- ports -------------------------------------------------------------------------------------

    def _network(self, tenant: str, net_id: str) -> Any:
        net = self.state.find_network(tenant, net_id)
        if net is None:
            raise nxvns(tenant, net_id)
        return net

    def _put_port(self, tenant: str, net_id: str, port_body: dict[str, Any]) -> Port:
        net = self._network(tenant, net_id)
        old = net.ports.get(port_body["id"])
        stored = {k: v for k, v in port_body.items() if k != "attachment"}
        port = net.ports[port_body["id"]] = Port(stored, old.attachment if old else None)
        return port

    def create_port(self, tenant: str, net_id: str, body: bytes) -> Reply:
        self._network(tenant, net_id)
        self._put_port(tenant, net_id, check.check_port(check.resource(decode_json(body), "port"), net_id=net_id))
        return ok()

    def update_port(self, tenant: str, net_id: str, port_id: str, body: bytes) -> Reply:
        self._network(tenant, net_id)
        port = check.check_port(check.resource(decode_json(body), "port"), net_id=net_id, port_id=port_id)
        self._put_port(tenant, net_id, port)
        return ok()

    def delete_port(self, tenant: str, net_id: str, port_id: str, body: bytes) -> Reply:
        net = self._network(tenant, net_id)
        if net.ports.pop(port_id, None) is None:
            raise not_found(f"port {port_id} on network {net_id}")
        return ok()

    def put_attachment(self, tenant: str, net_id: str, port_id: str, body: bytes) -> Reply:
        """``{"attachment": {...}}`` (Grizzly/Havana), or ``{"port": {...}, "attachment": {...}}``
        (Icehouse), which creates or replaces the port as well."""
        net = self._network(tenant, net_id)
        data = decode_json(body)
        att_body = check.resource(data, "attachment")
        port_body = check.check_port(data["port"], net_id=net_id, port_id=port_id) if "port" in data else None
        attachment = check.check_attachment(att_body)
        if port_body is not None:
            port = self._put_port(tenant, net_id, port_body)
        else:
            port = net.ports.get(port_id)
            if port is None:
                raise not_found(f"port {port_id} on network {net_id}")
        port.attachment = attachment
        return ok()

    def delete_attachment(self, tenant: str, net_id: str, port_id: str, body: bytes) -> Reply:
        net = self._network(tenant, net_id)
        port = net.ports.get(port_id)
        if port is None:
            raise not_found(f"port {port_id} on network {net_id}")
        if port.attachment is None:
            raise not_found(f"attachment of port {port_id}")
        port.attachment = None
        return ok()

    # -- routers -----------------------------------------------------------------------------------

    def create_router(self, tenant: str, body: bytes) -> Reply:
        self.state.upsert_router(tenant, check.check_router(check.resource(decode_json(body), "router"), tenant=tenant))
        return ok()

    def update_router(self, tenant: str, router_id: str, body: bytes) -> Reply:
        router = check.check_router(check.resource(decode_json(body), "router"), tenant=tenant, router_id=router_id)
        self.state.upsert_router(tenant, router)
        return ok()

    def delete_router(self, tenant: str, router_id: str, body: bytes) -> Reply:
        if self.state.routers.pop((tenant, router_id), None) is None:
            raise not_found(f"router {router_id} of tenant {tenant}")
        return ok()

    def add_interface(self, tenant: str, router_id: str, body: bytes) -> Reply:
        router = self.state.routers.get((tenant, router_id))
        if router is None:
            raise not_found(f"router {router_id} of tenant {tenant}")
        iface = check.check_interface(check.resource(decode_json(body), "interface"))
        router.interfaces[iface["id"]] = iface
        return ok()

    def remove_interface(self, tenant: str, router_id: str, iface_id: str, body: bytes) -> Reply:
        router = self.state.routers.get((tenant, router_id))
        if router is None:
            raise not_found(f"router {router_id} of tenant {tenant}")
        if router.interfaces.pop(iface_id, None) is None:
            raise not_found(f"interface {iface_id} of router {router_id}")
        return ok()

    # -- floating IPs ------------------------------------------------------------------------------

    def put_floatingip(self, tenant: str, fip_id: str, body: bytes) -> Reply:
        fip = check.check_floatingip(check.resource(decode_json(body), "floatingip"), fip_id=fip_id)
        self.state.put_floatingip({"tenant_id": tenant, **fip, "id": fip_id})
        return ok()

    def delete_floatingip(self, tenant: str, fip_id: str, body: bytes) -> Reply:
        if self.state.floatingips.pop(fip_id, None) is None:
            raise not_found(f"floating IP {fip_id}")
        return ok()

    # -- security groups (networking-bigswitch: POST creates or replaces a group with its rules) --------------

    def post_security_group(self, body: bytes) -> Reply:
        group = check.check_security_group(check.resource(decode_json(body), "security-group"))
        self.state.security_groups[group["id"]] = group
        return ok()

    def delete_security_group(self, group_id: str, body: bytes) -> Reply:
        if self.state.security_groups.pop(group_id, None) is None:
            raise not_found(f"security group {group_id}")
        return ok()
