"""Who may call which agent RPC on what: one rule, checked in one place before any method body runs.

Each RPC method declares (with ``@rpc``) the token kinds allowed to call it and
what its arguments name. ``authorize`` then, for every call:

* refuses a token kind the method does not allow (403);
* takes the ``host`` the body names (also ``agent_state.host`` and a DHCP port's
  ``binding:host_id``) only if it is the token's own host (403), or fills it in;
* resolves what the body names, in one read transaction, as the caller may see it:

  - ``device`` / ``device_down``: ports bound to the caller's host (host
    agents; a DOWN report also reaches the port it held last, now unbound);
  - ``devices`` (``update_device_list``): only checked to be a list of names
    here; the write resolves them itself, with the same rule
    (``agents.set_statuses_from_agent``: a device not the caller's fails as an
    unknown one does), in its own transaction. So a VM boot's report is one
    transaction, not a read and then a write (a thread hop and ~1 ms each on the
    way to ACTIVE);
  - ``network``: networks with a DHCP-enabled subnet (DHCP agents serve those,
    and only those, as in Neutron);
  - ``dhcp_port`` / ``dhcp_device``: ``network:dhcp`` ports bound to the DHCP
    agent's own host (by id, or by network and device id).

Whatever the caller may not touch is resolved exactly as if it did not exist
(``None``, an empty list, or the same NotFound error), so no answer tells one
host about another's ports. Admin tokens act for any host (the ``host`` they
name, or all hosts). The bodies then act only on what was resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.store import agents
from server_plugin.store.views import port_dict
from server_plugin.validators import ValidationError, uuid_

AGENT, DHCP, ADMIN = "agent", "dhcp", "admin"
KINDS = (AGENT, DHCP, ADMIN)
MAX_TEXT = 255


@attrs.frozen
class Caller:
    """Who calls: an agent's host and kind (agent, dhcp or admin) from its token."""

    host: str
    kind: str

    def check_host(self, host: str | None) -> str | None:
        """The host to act for: the token's own (a different one is refused); an admin's choice (None: every host)."""
        if self.kind == ADMIN:
            return host or self.host or None
        if host is not None and host != self.host:
            raise exc.PolicyNotAuthorized(action=f"act for host '{host}' (this agent is '{self.host}')")
        return self.host


@attrs.frozen
class Access:
    roles: frozenset[str]
    names: tuple[str, ...] = ()


@attrs.define
class Scope:
    """What one authorised call may act on."""

    caller: Caller
    host: str | None
    devices: dict[str, dict[str, Any] | None] = attrs.field(factory=dict)  # device name -> port, or None (not the caller's)
    network: dict[str, Any] | None = None
    ports: list[dict[str, Any]] = attrs.field(factory=list)  # the DHCP agent's own ports the call names


def rpc(*roles: str, names: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an RPC method: the token kinds that may call it and what its arguments name."""
    assert set(roles) <= set(KINDS) and set(names) <= set(_RESOLVERS), (roles, names)

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.access = Access(frozenset(roles) | {ADMIN}, names)  # type: ignore[attr-defined]
        return method

    return mark


# -- argument access (types are checked here, so a wrong type is a 400 before anything runs) ---------


def arg(kwargs: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, required: bool = True) -> Any:
    if name not in kwargs or kwargs[name] is None and not required:
        if required:
            raise exc.InvalidInput(error_message=f"missing argument '{name}'")
        return None
    value = kwargs[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise exc.InvalidInput(error_message=f"argument '{name}' has the wrong type")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise exc.InvalidInput(error_message=f"argument '{name}' is longer than {MAX_TEXT} characters")
    return value


def uuid_arg(kwargs: dict[str, Any], name: str) -> str:
    try:
        return uuid_(arg(kwargs, name))
    except ValidationError as e:
        raise exc.InvalidInput(error_message=f"argument '{name}': {e}") from None


def port_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A DHCP port body: ``{"port": {...}}`` or ``{"port": {"port": {...}}}`` (both forms are in use)."""
    body = arg(kwargs, "port", dict)
    inner = body.get("port", body)
    if not isinstance(inner, dict):
        raise exc.InvalidInput(error_message="argument 'port' must be an object")
    return dict(inner)


def body_host(caller: Caller, kwargs: dict[str, Any], access: Access) -> str | None:
    """Every host the body names must be the caller's own: ``host``, ``agent_state.host``, a port's ``binding:host_id``."""
    named = [arg(kwargs, "host", required=False)]
    if "agent_state" in access.names:
        named.append(arg(arg(kwargs, "agent_state", dict), "host", required=False))
    if "port_network" in access.names or "dhcp_port" in access.names:
        named.append(arg(port_body(kwargs), "binding:host_id", required=False))
    given = {caller.check_host(h) for h in named if h}
    if len(given) > 1:
        raise exc.InvalidInput(error_message="the body names more than one host")
    return next(iter(given), None) or caller.check_host(None)


# -- resolution (in a store transaction) -----------------------------------------------------------


def _devices(session: Session, scope: Scope, kwargs: dict[str, Any], names: list[str], status: str | None = None) -> None:
    for name in names:
        port = agents.agent_port(session, name, scope.host, status)
        scope.devices[name] = port_dict(port) if port is not None else None


def _device(session: Session, scope: Scope, kwargs: dict[str, Any]) -> None:
    _devices(session, scope, kwargs, [arg(kwargs, "device")])


def _device_down(session: Session, scope: Scope, kwargs: dict[str, Any]) -> None:
    _devices(session, scope, kwargs, [arg(kwargs, "device")], "DOWN")


def _device_list(session: Session | None, scope: Scope, kwargs: dict[str, Any]) -> None:
    """Names only: the write checks which are the caller's, in its own transaction (see the module docstring)."""
    for key in ("devices_up", "devices_down"):
        devices = arg(kwargs, key, list, required=False) or []
        if not all(isinstance(d, str) and len(d) <= MAX_TEXT for d in devices):
            raise exc.InvalidInput(error_message=f"{key} must be a list of device names")


def _network(session: Session, scope: Scope, kwargs: dict[str, Any], net_id: str | None = None) -> None:
    net_id = net_id or uuid_arg(kwargs, "network_id")
    net = agents.dhcp_network(session, net_id)
    if net is None:
        raise exc.NetworkNotFound(net_id=net_id)
    scope.network = {"id": net.id, "tenant_id": net.tenant_id}


def _port_network(session: Session, scope: Scope, kwargs: dict[str, Any]) -> None:
    try:
        net_id = uuid_(port_body(kwargs).get("network_id"))
    except ValidationError:
        raise exc.InvalidInput(error_message="port.network_id must be a UUID") from None
    _network(session, scope, kwargs, net_id)


def _dhcp_port(session: Session, scope: Scope, kwargs: dict[str, Any]) -> None:
    port_id = uuid_arg(kwargs, "port_id")
    ports = agents.dhcp_ports(session, scope.host, port_id=port_id)
    if not ports:
        raise exc.PortNotFound(port_id=port_id)
    scope.ports = [port_dict(p) for p in ports]


def _dhcp_device(session: Session, scope: Scope, kwargs: dict[str, Any]) -> None:
    # The network need not be one DHCP serves any more: an agent releases its port when DHCP is turned off.
    net_id = scope.network["id"] if scope.network is not None else uuid_arg(kwargs, "network_id")
    device_id = arg(kwargs, "device_id")
    scope.ports = [port_dict(p) for p in agents.dhcp_ports(session, scope.host, net_id, device_id)]


def _agent_state(session: Session | None, scope: Scope, kwargs: dict[str, Any]) -> None:
    pass  # its host is checked by body_host


_RESOLVERS: dict[str, Callable[[Session, Scope, dict[str, Any]], None]] = {
    "device": _device,
    "device_down": _device_down,
    "devices": _device_list,
    "network": _network,
    "port_network": _port_network,
    "dhcp_port": _dhcp_port,
    "dhcp_device": _dhcp_device,
    "agent_state": _agent_state,
}


# Resolvers that read nothing from the store: a call that names only these needs no read transaction.
_STORELESS = frozenset({"devices", "agent_state"})


def needs_store(access: Access) -> bool:
    """Whether resolving ``access``'s names reads the store (else ``resolve`` runs with no session)."""
    return not _STORELESS.issuperset(access.names)


def resolve(session: Session | None, caller: Caller, host: str | None, access: Access, kwargs: dict[str, Any]) -> Scope:
    """The call's ``Scope``; ``session`` may be None when ``needs_store(access)`` is false."""
    scope = Scope(caller=caller, host=host)
    for name in access.names:
        _RESOLVERS[name](session, scope, kwargs)
    return scope


def check_role(caller: Caller, method: str, access: Access) -> None:
    if caller.kind not in access.roles:
        allowed = " or ".join(sorted(access.roles - {ADMIN}))
        raise exc.PolicyNotAuthorized(action=f"{method} (for {allowed} agents only)")
