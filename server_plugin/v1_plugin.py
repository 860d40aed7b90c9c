"""The 2011 v1 plugin interface, and an implementation of it over the v2 plugin.

``QuantumPluginBase`` is the interface that the v1 API (``/v1.0``, ``/v1.1``)
calls, with the Essex signatures (``**kwargs`` on creates and updates,
``filter_opts`` on lists) and the return shapes of the Diablo/Essex
docstrings and sample plugin. Every method returns a Deferred because the
store runs in threads.

``V1Plugin`` maps it onto the v2 objects, so that one store serves both APIs:
a v1 network is a v2 network of the tenant; port state ACTIVE/DOWN is
admin_state_up; the attachment (VIF id) is the port's device_id, which is what
the controller protocol sends as the attachment id; op-status is UP when a
network is admin up, and UP for a port whose status is ACTIVE.

Reads and checks run as units of work in ``store.v1_ops``; every change goes
through the v2 ``RestProxyPlugin``, so what the v2 plugin mirrors (to
controllers, to agents) also sees v1 changes. The check and the change are
two transactions, so the v1 changes of one network are serialised within this
process (a lock per network id): two v1 plugs of one VIF cannot both pass
the AlreadyAttached check here. v2 clients, or another server on the same
database, can still interleave; v2 itself never promised unique device_ids.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.controller.ordering import KeyedLocks
from server_plugin.plugin import RestProxyPlugin
from server_plugin.store import v1_ops
from server_plugin.validators import MAX_NAME_LEN

P = ParamSpec("P")
T = TypeVar("T")
View = dict[str, Any]
Filters = Mapping[str, str]


def as_deferred(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Make a coroutine method return a Deferred, as the v1 interface promises."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper


class QuantumPluginBase(abc.ABC):
    """The v1 plugin interface (quantum/quantum_plugin_base.py, Diablo to Essex).

    Views use the v1 dash-keys: networks ``{'net-id', 'net-name',
    'net-op-status'}``, ports ``{'port-id', 'net-id', 'attachment',
    'port-state', 'port-op-status'}``. Errors are NetworkNotFound,
    PortNotFound (on a network), NetworkInUse, PortInUse, AlreadyAttached and
    StateInvalid from ``server_plugin.exceptions``.
    """

    @abc.abstractmethod
    def get_all_networks(self, tenant_id: str, filter_opts: Filters | None = None) -> Deferred[list[View]]:
        """[{'net-id', 'net-name', 'net-op-status'}] of the tenant's networks that pass the filters."""

    @abc.abstractmethod
    def create_network(self, tenant_id: str, net_name: str, **kwargs: Any) -> Deferred[View]:
        """{'net-id', 'net-name', 'net-op-status'} of the new network."""

    @abc.abstractmethod
    def delete_network(self, tenant_id: str, net_id: str) -> Deferred[View]:
        """{'net-id'}; deletes the network's ports with it. NetworkInUse, NetworkNotFound."""

    @abc.abstractmethod
    def get_network_details(self, tenant_id: str, net_id: str) -> Deferred[View]:
        """{'net-id', 'net-name', 'net-op-status', 'net-ifaces': [vif ids]}. NetworkNotFound."""

    @abc.abstractmethod
    def rename_network(self, tenant_id: str, net_id: str, new_name: str) -> Deferred[View]:
        """{'net-id', 'net-name', 'net-op-status'}. NetworkNotFound."""

    @abc.abstractmethod
    def update_network(self, tenant_id: str, net_id: str, **kwargs: Any) -> Deferred[View]:
        """{'net-id', 'net-name', 'net-op-status'}; ``name`` is the updatable key. NetworkNotFound."""

    @abc.abstractmethod
    def get_all_ports(self, tenant_id: str, net_id: str, filter_opts: Filters | None = None) -> Deferred[list[View]]:
        """[{'port-id'}] of the network's ports that pass the filters. NetworkNotFound."""

    @abc.abstractmethod
    def create_port(self, tenant_id: str, net_id: str, port_state: str | None = None, **kwargs: Any) -> Deferred[View]:
        """{'port-id'}; the state defaults to DOWN. NetworkNotFound, StateInvalid."""

    @abc.abstractmethod
    def update_port(self, tenant_id: str, net_id: str, port_id: str, **kwargs: Any) -> Deferred[View]:
        """{'port-id', 'port-state'}; ``state`` is the updatable key. StateInvalid, PortNotFound, NetworkNotFound."""

    @abc.abstractmethod
    def delete_port(self, tenant_id: str, net_id: str, port_id: str) -> Deferred[View]:
        """{'port-id'}. PortInUse, PortNotFound, NetworkNotFound."""

    @abc.abstractmethod
    def get_port_details(self, tenant_id: str, net_id: str, port_id: str) -> Deferred[View]:
        """{'port-id', 'net-id', 'attachment', 'port-state', 'port-op-status'}. PortNotFound, NetworkNotFound."""

    @abc.abstractmethod
    def plug_interface(self, tenant_id: str, net_id: str, port_id: str, remote_interface_id: str) -> Deferred[None]:
        """Attach a VIF. NetworkNotFound, PortNotFound, PortInUse, AlreadyAttached."""

    @abc.abstractmethod
    def unplug_interface(self, tenant_id: str, net_id: str, port_id: str) -> Deferred[None]:
        """Detach whatever is attached (a no-op on an empty port). NetworkNotFound, PortNotFound."""

    @abc.abstractmethod
    def get_interface_details(self, tenant_id: str, net_id: str, port_id: str) -> Deferred[str | None]:
        """The VIF id attached to the port, or None. NetworkNotFound, PortNotFound."""

    @abc.abstractmethod
    def get_all_attached_interfaces(self, tenant_id: str, net_id: str) -> Deferred[list[str]]:
        """The VIF ids attached to the network's ports. NetworkNotFound."""

    @as_deferred
    async def get_all_port_details(self, tenant_id: str, net_id: str, filter_opts: Filters | None = None) -> list[View]:
        """get_port_details of each port get_all_ports lists (what Essex's API did; override to do it in one query)."""
        ports = await self.get_all_ports(tenant_id, net_id, filter_opts)
        return [await self.get_port_details(tenant_id, net_id, p["port-id"]) for p in ports]


@contextmanager
def _on_network(net_id: str, port_id: str) -> Iterator[None]:
    """v2 says only "port not found"; v1 names the network too."""
    try:
        yield
    except exc.PortNotFoundOnNetwork:
        raise
    except exc.PortNotFound:
        raise exc.PortNotFoundOnNetwork(port_id=port_id, net_id=net_id) from None


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LEN:
        raise exc.InvalidInput(error_message=f"network name must be a string of at most {MAX_NAME_LEN} characters")
    return name


def _checked_vif(vif_id: Any) -> str:
    if not isinstance(vif_id, str) or not vif_id or len(vif_id) > MAX_NAME_LEN:
        raise exc.InvalidInput(error_message=f"attachment id must be a non-empty string of at most {MAX_NAME_LEN} characters")
    return vif_id


class V1Plugin(QuantumPluginBase):
    """The v1 interface over the v2 plugin and its store (see the module docstring)."""

    log = Logger()

    def __init__(self, plugin: RestProxyPlugin) -> None:
        self.plugin = plugin
        self.store = plugin.store
        self.locks = KeyedLocks()  # by network id: v1's check and change are two transactions

    @staticmethod
    def _ctx(tenant_id: str) -> RequestContext:
        # The tenant acts on its own objects; tenancy is checked by v1_ops first.
        return RequestContext(tenant_id=tenant_id)

    # -- networks
    @as_deferred
    async def get_all_networks(self, tenant_id: str, filter_opts: Filters | None = None) -> list[View]:
        return await self.store.run(v1_ops.list_networks, tenant_id, dict(filter_opts or {}), readonly=True)

    @as_deferred
    async def create_network(self, tenant_id: str, net_name: str, **kwargs: Any) -> View:
        values = {"tenant_id": tenant_id, "name": _checked_name(net_name), "admin_state_up": True}
        net = await self.plugin.create_network(self._ctx(tenant_id), {"network": values})
        return {"net-id": net["id"], "net-name": net["name"], "net-op-status": v1_ops.network_op_status(net["admin_state_up"])}

    @as_deferred
    async def delete_network(self, tenant_id: str, net_id: str) -> View:
        ctx = self._ctx(tenant_id)
        async with self.locks.hold(exclusive=[net_id]):
            for port_id in await self.store.run(v1_ops.ports_to_delete, tenant_id, net_id, readonly=True):
                try:
                    await self.plugin.delete_port(ctx, port_id)
                except exc.PortNotFound:
                    pass  # deleted meanwhile: that is what we wanted
            await self.plugin.delete_network(ctx, net_id)
        return {"net-id": net_id}

    @as_deferred
    async def get_network_details(self, tenant_id: str, net_id: str) -> View:
        return await self.store.run(v1_ops.network_details, tenant_id, net_id, readonly=True)

    def rename_network(self, tenant_id: str, net_id: str, new_name: str) -> Deferred[View]:
        return self.update_network(tenant_id, net_id, name=new_name)

    @as_deferred
    async def update_network(self, tenant_id: str, net_id: str, **kwargs: Any) -> View:
        await self.store.run(v1_ops.network_summary, tenant_id, net_id, readonly=True)
        values = {"name": _checked_name(kwargs["name"])} if "name" in kwargs else {}
        net = await self.plugin.update_network(self._ctx(tenant_id), net_id, {"network": values})
        return {"net-id": net["id"], "net-name": net["name"], "net-op-status": v1_ops.network_op_status(net["admin_state_up"])}

    # -- ports
    @as_deferred
    async def get_all_ports(self, tenant_id: str, net_id: str, filter_opts: Filters | None = None) -> list[View]:
        ports = await self.get_all_port_details(tenant_id, net_id, filter_opts)
        return [{"port-id": p["port-id"]} for p in ports]

    @as_deferred
    async def get_all_port_details(self, tenant_id: str, net_id: str, filter_opts: Filters | None = None) -> list[View]:
        """get_port_details of every port that passes the filters, in one query."""
        return await self.store.run(v1_ops.list_ports, tenant_id, net_id, dict(filter_opts or {}), readonly=True)

    @as_deferred
    async def create_port(self, tenant_id: str, net_id: str, port_state: str | None = None, **kwargs: Any) -> View:
        await self.store.run(v1_ops.network_summary, tenant_id, net_id, readonly=True)
        state = v1_ops.checked_state(port_state if port_state is not None else kwargs.get("state", "DOWN"))
        values = {"tenant_id": tenant_id, "network_id": net_id, "admin_state_up": state == "ACTIVE"}
        port = await self.plugin.create_port(self._ctx(tenant_id), {"port": values})
        return {"port-id": port["id"]}

    @as_deferred
    async def update_port(self, tenant_id: str, net_id: str, port_id: str, **kwargs: Any) -> View:
        current = await self.store.run(v1_ops.port_details, tenant_id, net_id, port_id, readonly=True)
        requested = kwargs.get("state", kwargs.get("port_state"))
        if requested is None:
            return {"port-id": port_id, "port-state": current["port-state"]}
        state = v1_ops.checked_state(requested)
        with _on_network(net_id, port_id):
            port = await self.plugin.update_port(self._ctx(tenant_id), port_id, {"port": {"admin_state_up": state == "ACTIVE"}})
        return {"port-id": port_id, "port-state": v1_ops.port_state(port["admin_state_up"])}

    @as_deferred
    async def delete_port(self, tenant_id: str, net_id: str, port_id: str) -> View:
        async with self.locks.hold(exclusive=[net_id]):
            port = await self.store.run(v1_ops.port_details, tenant_id, net_id, port_id, readonly=True)
            if port["attachment"] is not None:
                raise exc.PortInUse(port_id=port_id, net_id=net_id, device_id=port["attachment"])
            with _on_network(net_id, port_id):
                await self.plugin.delete_port(self._ctx(tenant_id), port_id)
        return {"port-id": port_id}

    @as_deferred
    async def get_port_details(self, tenant_id: str, net_id: str, port_id: str) -> View:
        return await self.store.run(v1_ops.port_details, tenant_id, net_id, port_id, readonly=True)

    # -- attachments
    @as_deferred
    async def plug_interface(self, tenant_id: str, net_id: str, port_id: str, remote_interface_id: str) -> None:
        vif_id = _checked_vif(remote_interface_id)
        async with self.locks.hold(exclusive=[net_id]):
            await self.store.run(v1_ops.check_plug, tenant_id, net_id, port_id, vif_id, readonly=True)
            with _on_network(net_id, port_id):
                await self.plugin.update_port(self._ctx(tenant_id), port_id, {"port": {"device_id": vif_id}})
        self.log.info("attachment {vif} plugged into port {port_id}", vif=vif_id, port_id=port_id)

    @as_deferred
    async def unplug_interface(self, tenant_id: str, net_id: str, port_id: str) -> None:
        async with self.locks.hold(exclusive=[net_id]):
            port = await self.store.run(v1_ops.port_details, tenant_id, net_id, port_id, readonly=True)
            if port["attachment"] is None:
                return
            with _on_network(net_id, port_id):
                await self.plugin.update_port(self._ctx(tenant_id), port_id, {"port": {"device_id": ""}})
        self.log.info("attachment {vif} unplugged from port {port_id}", vif=port["attachment"], port_id=port_id)

    @as_deferred
    async def get_interface_details(self, tenant_id: str, net_id: str, port_id: str) -> str | None:
        port = await self.store.run(v1_ops.port_details, tenant_id, net_id, port_id, readonly=True)
        return port["attachment"]

    @as_deferred
    async def get_all_attached_interfaces(self, tenant_id: str, net_id: str) -> list[str]:
        ports = await self.store.run(v1_ops.list_ports, tenant_id, net_id, {}, readonly=True)
        return [p["attachment"] for p in ports if p["attachment"] is not None]
