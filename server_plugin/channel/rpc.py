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

import attrs

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.store import agent_events, agents
from server_plugin.store.listing import ListQuery
from server_plugin.validators import ValidationError, is_uuid_like, uuid_

DHCP_OWNER = "network:dhcp"
ADMIN = RequestContext.admin()


@attrs.frozen
class Caller:
    """Who calls: an agent's host and kind (agent, dhcp or admin) from its token."""

    host: str
    kind: str

    def check_host(self, host: str | None) -> str:
        if self.kind == "admin":
            return host or self.host
        if host is not None and host != self.host:
            raise exc.PolicyNotAuthorized(action=f"act for host '{host}' (this agent is '{self.host}')")
        return self.host


def _arg(kwargs: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, required: bool = True) -> Any:
    if name not in kwargs:
        if required:
            raise exc.InvalidInput(error_message=f"missing argument '{name}'")
        return None
    value = kwargs[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise exc.InvalidInput(error_message=f"argument '{name}' has the wrong type")
    return value


def _uuid_arg(kwargs: dict[str, Any], name: str) -> str:
    try:
        return uuid_(_arg(kwargs, name))
    except ValidationError as e:
        raise exc.InvalidInput(error_message=f"argument '{name}': {e}") from None


class AgentRPC:
    DEVICE_METHODS = (
        "get_device_details", "update_device_up", "update_device_down", "update_device_list", "get_devices_for_host", "report_state",
    )  # fmt: skip
    DHCP_METHODS = (
        "get_active_networks", "get_active_networks_info", "get_network_info", "get_dhcp_port", "create_dhcp_port",
        "update_dhcp_port", "release_dhcp_port", "release_port_fixed_ip", "update_lease_expiration",
    )  # fmt: skip

    def __init__(self, plugin: Any, add_meta_server_route: bool = True, on_change: Any = None) -> None:
        self.plugin = plugin
        self.store = plugin.store
        self.add_meta_server_route = add_meta_server_route
        self.on_change = on_change or (lambda: None)

    async def call(self, caller: Caller, method: str, kwargs: dict[str, Any]) -> Any:
        if method not in self.DEVICE_METHODS + self.DHCP_METHODS:
            raise exc.HTTPNotFound()
        if method in self.DHCP_METHODS and caller.kind not in ("dhcp", "admin"):
            raise exc.PolicyNotAuthorized(action=f"{method} (DHCP agents only)")
        if not isinstance(kwargs, dict):
            raise exc.InvalidInput(error_message="the body must be a JSON object of arguments")
        return await getattr(self, method)(caller, kwargs)

    # -- device methods
    async def get_device_details(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        device = _arg(kwargs, "device")
        caller.check_host(_arg(kwargs, "host", required=False))
        port = await self.store.run(self._port_details, device, readonly=True)
        if port is None:
            return {"device": device}
        return port

    def _port_details(self, session: Any, device: str) -> dict[str, Any] | None:
        from server_plugin.store.views import port_dict

        port = agents.find_port(session, device)
        if port is None:
            return None
        details = port_dict(port)
        details.update(device=device, port_id=port.id)
        return details

    async def update_device_up(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(caller, kwargs, "ACTIVE")

    async def update_device_down(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(caller, kwargs, "DOWN")

    async def _set_status(self, caller: Caller, kwargs: dict[str, Any], status: str) -> dict[str, Any]:
        device = _arg(kwargs, "device")
        host = caller.check_host(_arg(kwargs, "host", required=False))
        port = await self.store.run(agents.set_status_from_agent, device, None if caller.kind == "admin" else host, status)
        return {"device": device, "exists": port is not None, "status": port["status"] if port else None}

    async def update_device_list(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, list[str]]:
        """Many devices up and down in one call and one transaction (an agent's burst)."""
        host = caller.check_host(_arg(kwargs, "host", required=False))
        up, down = _arg(kwargs, "devices_up", list, required=False) or [], _arg(kwargs, "devices_down", list, required=False) or []
        if not all(isinstance(d, str) for d in up + down):
            raise exc.InvalidInput(error_message="devices_up and devices_down must be lists of strings")
        return await self.store.run(agents.set_statuses_from_agent, up, down, None if caller.kind == "admin" else host)

    async def get_devices_for_host(self, caller: Caller, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        host = caller.check_host(_arg(kwargs, "host", required=False))
        return await self.store.run(agent_events.host_ports, host, readonly=True)

    async def report_state(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        state = _arg(kwargs, "agent_state", dict)
        for key in ("agent_type", "binary"):
            if not isinstance(state.get(key), str) or not state[key]:
                raise exc.InvalidInput(error_message=f"agent_state.{key} must be a non-empty string")
        if not isinstance(state.get("configurations", {}), dict):
            raise exc.InvalidInput(error_message="agent_state.configurations must be an object")
        state = dict(state, host=caller.check_host(state.get("host")))
        return await self.store.run(agents.report_state, state)

    # -- DHCP methods
    async def get_active_networks(self, caller: Caller, kwargs: dict[str, Any]) -> list[str]:
        networks = await self.plugin.get_networks(ADMIN, ListQuery(filters={"admin_state_up": [True]}))
        return [n["id"] for n in networks]

    async def get_active_networks_info(self, caller: Caller, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        networks = await self.plugin.get_networks(ADMIN, ListQuery(filters={"admin_state_up": [True]}))
        result = []
        for net in networks:
            info = await self._network_info(net)
            if any(s["enable_dhcp"] for s in info["subnets"]):
                result.append(info)
        return result

    async def get_network_info(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        net = await self.plugin.get_network(ADMIN, _uuid_arg(kwargs, "network_id"))
        return await self._network_info(net)

    async def _network_info(self, net: dict[str, Any]) -> dict[str, Any]:
        subnets = await self.plugin.get_subnets(ADMIN, ListQuery(filters={"network_id": [net["id"]]}))
        ports = await self.plugin.get_ports(ADMIN, ListQuery(filters={"network_id": [net["id"]]}))
        return dict(net, subnets=subnets, ports=ports)

    async def get_dhcp_port(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Reuse the DHCP port of ``device_id`` on the network (adding IPs on DHCP subnets it lacks), or make one."""
        net_id, device_id = _uuid_arg(kwargs, "network_id"), _arg(kwargs, "device_id")
        host = caller.check_host(_arg(kwargs, "host", required=False))
        net = await self.plugin.get_network(ADMIN, net_id)
        subnets = [s for s in await self.plugin.get_subnets(ADMIN, ListQuery(filters={"network_id": [net_id]})) if s["enable_dhcp"]]
        existing = await self.plugin.get_ports(ADMIN, ListQuery(filters={"network_id": [net_id], "device_id": [device_id]}))
        if existing:
            port = existing[0]
            have = {f["subnet_id"] for f in port["fixed_ips"]}
            missing = [{"subnet_id": s["id"]} for s in subnets if s["id"] not in have]
            if missing or port["device_owner"] != DHCP_OWNER:
                port = await self.plugin.update_port(
                    ADMIN, port["id"], {"port": {"fixed_ips": port["fixed_ips"] + missing, "device_owner": DHCP_OWNER}}
                )
        else:
            values = {
                "network_id": net_id, "tenant_id": net["tenant_id"], "device_id": device_id, "device_owner": DHCP_OWNER,
                "binding:host_id": host, "fixed_ips": [{"subnet_id": s["id"]} for s in subnets], "admin_state_up": True,
                "name": "", "description": "", "binding:profile": {},
            }  # fmt: skip
            port = await self._create_dhcp(values)
        return await self._expand_subnets(port)

    async def create_dhcp_port(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        body = _arg(kwargs, "port", dict)
        values = dict(body.get("port", body))
        if not is_uuid_like(values.get("network_id")):
            raise exc.InvalidInput(error_message="port.network_id must be a UUID")
        net = await self.plugin.get_network(ADMIN, values["network_id"].lower())
        values.update(device_owner=DHCP_OWNER, **{"binding:host_id": caller.check_host(_arg(kwargs, "host", required=False))})
        values.setdefault("tenant_id", net["tenant_id"])
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

    async def update_dhcp_port(self, caller: Caller, kwargs: dict[str, Any]) -> dict[str, Any]:
        port_id = _uuid_arg(kwargs, "port_id")
        body = _arg(kwargs, "port", dict)
        values = _port_values(dict(body.get("port", body)), update=True)
        port = await self.plugin.update_port(ADMIN, port_id, {"port": values})
        self.on_change()
        return port

    async def release_dhcp_port(self, caller: Caller, kwargs: dict[str, Any]) -> None:
        net_id, device_id = _uuid_arg(kwargs, "network_id"), _arg(kwargs, "device_id")
        for port in await self.plugin.get_ports(ADMIN, ListQuery(filters={"network_id": [net_id], "device_id": [device_id]})):
            await self.plugin.delete_port(ADMIN, port["id"])
        self.on_change()

    async def release_port_fixed_ip(self, caller: Caller, kwargs: dict[str, Any]) -> None:
        net_id, device_id, subnet_id = _uuid_arg(kwargs, "network_id"), _arg(kwargs, "device_id"), _uuid_arg(kwargs, "subnet_id")
        for port in await self.plugin.get_ports(ADMIN, ListQuery(filters={"network_id": [net_id], "device_id": [device_id]})):
            keep = [f for f in port["fixed_ips"] if f["subnet_id"] != subnet_id]
            if len(keep) != len(port["fixed_ips"]):
                await self.plugin.update_port(ADMIN, port["id"], {"port": {"fixed_ips": keep}})
        self.on_change()

    async def update_lease_expiration(self, caller: Caller, kwargs: dict[str, Any]) -> None:
        """Deprecated in Havana (a no-op there too); arguments are still checked."""
        _uuid_arg(kwargs, "network_id")
        _arg(kwargs, "ip_address")
        return None

    async def _expand_subnets(self, port: dict[str, Any]) -> dict[str, Any]:
        fixed_ips = []
        for fixed in port["fixed_ips"]:
            subnet = await self.plugin.get_subnet(ADMIN, fixed["subnet_id"])
            fixed_ips.append(dict(fixed, subnet=subnet))
        return dict(port, fixed_ips=fixed_ips)


def _port_values(values: dict[str, Any], update: bool = False) -> dict[str, Any]:
    """Agent-supplied port attributes, validated as the API would (unknown keys refused)."""
    from server_plugin.api.body import prepare_create, prepare_update
    from server_plugin.attributes import PORTS

    if update:
        return prepare_update(values, PORTS, ADMIN)
    return prepare_create(values, PORTS, ADMIN, "port")
