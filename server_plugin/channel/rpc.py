"""The RPC methods that host agents and DHCP agents call (``POST /agent/v1/rpc/{method}``).

Device methods (the host agent): get_device_details, update_device_up,
update_device_down, get_devices_for_host, report_state. DHCP methods (the
original plugin's DhcpRpcCallbackMixin, Havana semantics): get_active_networks,
get_active_networks_info, get_network_info, get_dhcp_port, create_dhcp_port,
update_dhcp_port, release_dhcp_port, release_port_fixed_ip,
update_lease_expiration. Changes go through the plugin, so they are mirrored to
the controllers and produce agent events like any API change.
"""

from __future__ import annotations

from typing import Any

from server_plugin import exceptions as exc
from server_plugin.channel import authz, inputs
from server_plugin.channel.authz import AGENT, DHCP, Caller, Scope, arg, body_host, check_role, port_body, resolve, rpc, uuid_arg
from server_plugin.context import RequestContext
from server_plugin.store import agent_events, agents
from server_plugin.store.listing import ListQuery

DHCP_OWNER = agents.DHCP_OWNER
ADMIN = RequestContext.admin()

__all__ = ["AgentRPC", "Caller"]


class AgentRPC:
    """The methods, each declared with ``@rpc`` (who may call it, what it names); ``call`` authorises, then runs it."""

    def __init__(self, plugin: Any, add_meta_server_route: bool = True, on_change: Any = None) -> None:
        self.plugin = plugin
        self.store = plugin.store
        self.add_meta_server_route = add_meta_server_route
        self.on_change = on_change or (lambda: None)
        self.methods = {name: getattr(self, name) for name, f in vars(type(self)).items() if hasattr(f, "access")}

    async def call(self, caller: Caller, method: str, kwargs: Any) -> Any:
        function = self.methods.get(method)
        if function is None:
            raise exc.HTTPNotFound()
        access = function.access
        check_role(caller, method, access)
        if not isinstance(kwargs, dict):
            raise exc.InvalidInput(error_message="the body must be a JSON object of arguments")
        inputs.check_body(kwargs)
        host = body_host(caller, kwargs, access)
        if authz.needs_store(access):
            scope = await self.store.run(resolve, caller, host, access, kwargs, readonly=True)
        else:  # (update_device_list, report_state, get_devices_for_host: their bodies' own transaction is the only one)
            scope = resolve(None, caller, host, access, kwargs)
        return await function(scope, kwargs)

    # -- device methods (host agents)
    @rpc(AGENT, names=("device",))
    async def get_device_details(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        device = kwargs["device"]
        port = scope.devices[device]
        if port is None:
            return {"device": device}
        return dict(port, device=device, port_id=port["id"])

    @rpc(AGENT, names=("device",))
    async def update_device_up(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(scope, kwargs["device"], "ACTIVE")

    @rpc(AGENT, names=("device_down",))
    async def update_device_down(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(scope, kwargs["device"], "DOWN")

    async def _set_status(self, scope: Scope, device: str, status: str) -> dict[str, Any]:
        port = None
        if scope.devices[device] is not None:  # the write checks again, in its own transaction
            port = await self.store.run(agents.set_status_from_agent, device, scope.host, status)
        return {"device": device, "exists": port is not None, "status": port["status"] if port else None}

    @rpc(AGENT, names=("devices",))
    async def update_device_list(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, list[str]]:
        """Many devices up and down in one call and one transaction (an agent's burst)."""
        up, down = kwargs.get("devices_up") or [], kwargs.get("devices_down") or []
        return await self.store.run(agents.set_statuses_from_agent, up, down, scope.host)

    @rpc(AGENT)
    async def get_devices_for_host(self, scope: Scope, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.store.run(agent_events.host_ports, _one_host(scope), readonly=True)

    @rpc(AGENT, DHCP, names=("agent_state",))
    async def report_state(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        state = kwargs["agent_state"]
        for key in ("agent_type", "binary"):
            if not arg(state, key):
                raise exc.InvalidInput(error_message=f"agent_state.{key} must be a non-empty string")
        arg(state, "topic", required=False)
        arg(state, "start_flag", bool, required=False)
        arg(state, "configurations", dict, required=False)
        return await self.store.run(agents.report_state, dict(state, host=_one_host(scope)))

    # -- DHCP methods (DHCP agents): networks with DHCP-enabled subnets, and the agent's own network:dhcp ports
    @rpc(DHCP)
    async def get_active_networks(self, scope: Scope, kwargs: dict[str, Any]) -> list[str]:
        return await self.store.run(agents.dhcp_networks, readonly=True)

    @rpc(DHCP)
    async def get_active_networks_info(self, scope: Scope, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        return [await self._network_info(net_id) for net_id in await self.store.run(agents.dhcp_networks, readonly=True)]

    @rpc(DHCP, names=("network",))
    async def get_network_info(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        assert scope.network is not None
        return await self._network_info(scope.network["id"])

    async def _network_info(self, net_id: str) -> dict[str, Any]:
        net = await self.plugin.get_network(ADMIN, net_id)
        subnets = await self.plugin.get_subnets(ADMIN, ListQuery(filters={"network_id": [net_id]}))
        ports = await self.plugin.get_ports(ADMIN, ListQuery(filters={"network_id": [net_id]}))
        return dict(net, subnets=subnets, ports=ports)

    @rpc(DHCP, names=("network", "dhcp_device"))
    async def get_dhcp_port(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        """This agent's DHCP port for ``device_id`` on the network (given IPs on DHCP subnets it lacks), or a new one."""
        assert scope.network is not None
        net_id, device_id = scope.network["id"], kwargs["device_id"]
        subnets = [s for s in await self.plugin.get_subnets(ADMIN, ListQuery(filters={"network_id": [net_id]})) if s["enable_dhcp"]]
        if scope.ports:
            port = scope.ports[0]
            have = {f["subnet_id"] for f in port["fixed_ips"]}
            missing = [{"subnet_id": s["id"]} for s in subnets if s["id"] not in have]
            if missing:
                port = await self.plugin.update_port(ADMIN, port["id"], {"port": {"fixed_ips": port["fixed_ips"] + missing}})
                self.on_change()
        else:
            values = {
                "network_id": net_id, "tenant_id": scope.network["tenant_id"], "device_id": device_id, "device_owner": DHCP_OWNER,
                "binding:host_id": scope.host or "", "fixed_ips": [{"subnet_id": s["id"]} for s in subnets], "admin_state_up": True,
                "name": "", "description": "", "binding:profile": {},
            }  # fmt: skip
            port = await self._create_dhcp(values)
        return await self._expand_subnets(port)

    @rpc(DHCP, names=("port_network",))
    async def create_dhcp_port(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        assert scope.network is not None
        values = _dhcp_owned(port_body(kwargs))
        if values.setdefault("tenant_id", scope.network["tenant_id"]) != scope.network["tenant_id"]:
            raise exc.InvalidInput(error_message="a DHCP port belongs to its network's tenant")
        values.update({"network_id": scope.network["id"], "binding:host_id": scope.host or ""})
        values.setdefault("device_id", "")
        return await self._create_dhcp(_port_values(values))

    async def _create_dhcp(self, values: dict[str, Any]) -> dict[str, Any]:
        port = await self.plugin.create_port(ADMIN, {"port": values})
        if self.add_meta_server_route:
            await self._add_metadata_route(port)
        self.on_change()
        return port

    async def _add_metadata_route(self, port: dict[str, Any]) -> None:
        """169.254.169.254/32 via the DHCP port's address, added to each of its subnets' routes."""
        for fixed in port["fixed_ips"]:
            if ":" in fixed["ip_address"]:
                continue
            subnet = await self.plugin.get_subnet(ADMIN, fixed["subnet_id"])
            route = {"destination": "169.254.169.254/32", "nexthop": fixed["ip_address"]}
            routes = [r for r in subnet["host_routes"] if r["destination"] != route["destination"]]
            await self.plugin.update_subnet(ADMIN, subnet["id"], {"subnet": {"host_routes": [*routes, route]}})

    @rpc(DHCP, names=("dhcp_port",))
    async def update_dhcp_port(self, scope: Scope, kwargs: dict[str, Any]) -> dict[str, Any]:
        [port] = scope.ports
        values = _dhcp_owned(port_body(kwargs))
        if values.pop("network_id", port["network_id"]) != port["network_id"]:
            raise exc.InvalidInput(error_message="a DHCP port cannot move to another network")
        values.pop("device_owner", None)
        if scope.caller.kind != "admin":
            values.pop("binding:host_id", None)  # the agent's own host (body_host saw to it): it stays there
        updated = await self.plugin.update_port(ADMIN, port["id"], {"port": _port_values(values, update=True)})
        self.on_change()
        return updated

    @rpc(DHCP, names=("dhcp_device",))
    async def release_dhcp_port(self, scope: Scope, kwargs: dict[str, Any]) -> None:
        for port in scope.ports:
            await self.plugin.delete_port(ADMIN, port["id"])
        self.on_change()

    @rpc(DHCP, names=("dhcp_device",))
    async def release_port_fixed_ip(self, scope: Scope, kwargs: dict[str, Any]) -> None:
        subnet_id = uuid_arg(kwargs, "subnet_id")
        for port in scope.ports:
            keep = [f for f in port["fixed_ips"] if f["subnet_id"] != subnet_id]
            if len(keep) != len(port["fixed_ips"]):
                await self.plugin.update_port(ADMIN, port["id"], {"port": {"fixed_ips": keep}})
        self.on_change()

    @rpc(DHCP, names=("network",))
    async def update_lease_expiration(self, scope: Scope, kwargs: dict[str, Any]) -> None:
        """Deprecated in Havana (a no-op there too); arguments are still checked."""
        arg(kwargs, "ip_address")
        return None

    async def _expand_subnets(self, port: dict[str, Any]) -> dict[str, Any]:
        fixed_ips = []
        for fixed in port["fixed_ips"]:
            subnet = await self.plugin.get_subnet(ADMIN, fixed["subnet_id"])
            fixed_ips.append(dict(fixed, subnet=subnet))
        return dict(port, fixed_ips=fixed_ips)


def _one_host(scope: Scope) -> str:
    if not scope.host:
        raise exc.InvalidInput(error_message="argument 'host' is required with an admin token")
    return scope.host


def _dhcp_owned(values: dict[str, Any]) -> dict[str, Any]:
    """A DHCP agent's port body: its owner can only be ``network:dhcp`` (its host was checked by ``body_host``)."""
    if values.setdefault("device_owner", DHCP_OWNER) != DHCP_OWNER:
        raise exc.InvalidInput(error_message=f"a DHCP agent's port is owned by '{DHCP_OWNER}'")
    return values


def _port_values(values: dict[str, Any], update: bool = False) -> dict[str, Any]:
    """Agent-supplied port attributes, validated as the API would (unknown keys refused)."""
    from server_plugin.api.body import prepare_create, prepare_update
    from server_plugin.attributes import PORTS

    if update:
        return prepare_update(values, PORTS, ADMIN)
    return prepare_create(values, PORTS, ADMIN, "port")
