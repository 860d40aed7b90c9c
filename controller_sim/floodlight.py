"""The "floodlight" profile: Floodlight v0.91's VirtualNetworkFilter REST API, quirks included.

This is a line-by-line model of ``NetworkResource``, ``HostResource`` and
``VirtualNetworkFilter`` as observed on the wire (see floodlight-api-facts.md), because the
plugin's Floodlight support is only proven against the real behaviour:

- only ``/tenants/{t}/networks[/{n}]`` and ``.../ports/{p}/attachment`` are real; every other
  path under the base (ports, routers, ``/topology``, ``/capabilities``, ``/health``) answers
  200 ``{"status":"ok"}`` and stores nothing; tenants are ignored everywhere;
- network bodies are walked token by token (:mod:`controller_sim.jackson`): any ``"id"``,
  ``"name"`` or ``"gateway"`` key seen before the first nested ``END_OBJECT`` wins, even one
  inside ``subnets`` or ``floatingips``, and the walk then stops ("Expected FIELD_NAME",
  only logged; the answer is still 200). A plugin sending full Big Switch bodies therefore
  creates networks named after subnets, while one sending ``{"network": {"id", "name",
  "gateway"}}`` is stored as meant;
- attachments use only the MAC (``MACAddress.valueOf``: a bad or missing one is a 500);
- Java exceptions (NPE on deleting an unknown network while others exist, and so on) become
  Restlet's 500 status document.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.logger import Logger

from controller_sim.jackson import JsonParseError, StreamingParser, Token
from controller_sim.replies import Reply
from controller_sim.request import ControllerRequest, match

JSON_UTF8 = "application/json; charset=UTF-8"
TEXT_UTF8 = "text/plain; charset=UTF-8"
OK = {"status": "ok"}
REAL_ROUTES: list[tuple[tuple[str | None, ...], str]] = [
    (("tenants", None, "networks"), "networks"),
    (("tenants", None, "networks", None), "network"),
    (("tenants", None, "networks", None, "ports", None, "attachment"), "attachment"),
]
NOOP_METHODS = ("GET", "PUT", "POST", "DELETE")
_JAVA_INT = re.compile(r"^[+-]?[0-9]+$")
_JAVA_HEX = re.compile(r"^[+-]?[0-9a-fA-F]+$")


class JavaException(Exception):
    """A RuntimeException escaping a Restlet resource: answered as a 500."""

    def __init__(self, cls: str, message: str | None, where: str) -> None:
        super().__init__(f"{cls}: {message}")
        self.cls = cls
        self.message = message
        self.where = where


class JavaIOException(Exception):
    """The ``IOException``s the resources throw and catch themselves (only logged)."""


def npe(where: str) -> JavaException:
    return JavaException("java.lang.NullPointerException", None, where)


# -- java.lang / net.floodlightcontroller.packet helpers ---------------------------------------


def java_split(s: str, sep: str) -> list[str]:
    """``String.split`` with a literal separator: trailing empty strings are removed."""
    parts = s.split(sep)
    if s == "":
        return [""]
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def java_parse_int(s: str, radix: int = 10) -> int:
    """``Integer.parseInt``; NumberFormatException (an IllegalArgumentException) otherwise."""
    if not (_JAVA_INT if radix == 10 else _JAVA_HEX).match(s):
        raise JavaException("java.lang.NumberFormatException", f'For input string: "{s}"', "Integer.parseInt")
    value = int(s, radix)
    if not -(2**31) <= value < 2**31:
        raise JavaException("java.lang.NumberFormatException", f'For input string: "{s}"', "Integer.parseInt")
    return value


def ipv4_to_int(address: str | None) -> int:
    """``IPv4.toIPv4Address(String)``."""
    msg = "Specified IPv4 address mustcontain 4 sets of numerical digits separated by periods"
    if address is None:
        raise JavaException("java.lang.IllegalArgumentException", msg, "IPv4.toIPv4Address")
    octets = java_split(address, ".")
    if len(octets) != 4:
        raise JavaException("java.lang.IllegalArgumentException", msg, "IPv4.toIPv4Address")
    result = 0
    for i, octet in enumerate(octets):
        value = java_parse_int(octet)
        if value > 255 or value < 0:
            raise JavaException(
                "java.lang.IllegalArgumentException", "Octet values in specified IPv4 address must be 0 <= value <= 255", ""
            )
        result |= value << ((3 - i) * 8)
    return result


def ipv4_from_int(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def mac_value_of(address: str | None) -> str:
    """``MACAddress.valueOf(String)``, returned as its ``toString`` (upper-case hex)."""
    if address is None:
        raise JavaException("java.lang.NullPointerException", None, "MACAddress.valueOf")
    elements = java_split(address, ":")
    if len(elements) != 6:
        raise JavaException(
            "java.lang.IllegalArgumentException",
            "Specified MAC Address must contain 12 hex digits separated pairwise by :'s.",
            "MACAddress.valueOf",
        )
    return ":".join(f"{java_parse_int(e, 16) & 0xFF:02X}" for e in elements)


# -- the resources' hand-written token walks --------------------------------------------------


@attrs.define
class NetworkDefinition:
    name: str | None = None
    guid: str | None = None
    gateway: str | None = None


@attrs.define
class HostDefinition:
    port: str | None = None
    guid: str | None = None
    mac: str | None = None
    attachment: str | None = None


def _start(text: str) -> StreamingParser:
    jp = StreamingParser(text)
    jp.next_token()
    if jp.token is not Token.START_OBJECT:
        raise JavaIOException("Expected START_OBJECT")
    return jp


def _next_field(jp: StreamingParser) -> str | None:
    """The outer loop of both resources: the next top-level field name, with the parser on
    its value; None at the closing brace; skips fields whose value's text is ""."""
    while jp.next_token() is not Token.END_OBJECT:
        if jp.token is not Token.FIELD_NAME:
            raise JavaIOException("Expected FIELD_NAME")
        name = jp.current_name()
        jp.next_token()
        text = jp.get_text()
        if text is None:
            raise npe("jsonToNetworkDefinition")
        if text == "":
            continue
        return name
    return None


def json_to_network_definition(text: str, network: NetworkDefinition, warnings: list[str]) -> None:
    """``NetworkResource.jsonToNetworkDefinition``."""
    jp = _start(text)
    while (n := _next_field(jp)) is not None:
        if n != "network":
            continue
        while jp.next_token() is not Token.END_OBJECT:
            if jp.token is None:  # unreachable with a well-formed stream; Java would spin here
                return
            field = jp.current_name()
            if field is None:
                continue
            if field == "name":
                network.name = jp.get_text()
            elif field == "gateway":
                gw = jp.get_text()
                if gw is not None and gw != "null":
                    network.gateway = gw
            elif field == "id":
                network.guid = jp.get_text()
            else:
                warnings.append(f"Unrecognized field {jp.get_text()} in parsing network definition")


def json_to_host_definition(text: str, host: HostDefinition) -> None:
    """``HostResource.jsonToHostDefinition``."""
    jp = _start(text)
    while (n := _next_field(jp)) is not None:
        if n != "attachment":
            continue
        while jp.next_token() is not Token.END_OBJECT:
            field = jp.current_name()
            if field is None:
                raise npe("HostResource.jsonToHostDefinition")
            if field == "id":
                host.attachment = jp.get_text()
            elif field == "mac":
                host.mac = jp.get_text()


# -- VirtualNetworkFilter ---------------------------------------------------------------------


@attrs.define
class VirtualNetwork:
    name: str | None
    guid: str
    gateway: str | None = None
    port_to_mac: dict[str, str] = attrs.field(factory=dict)

    def remove_host(self, mac: str) -> bool:
        for port, m in self.port_to_mac.items():
            if m == mac:
                del self.port_to_mac[port]
                return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "guid": self.guid,
            "gateway": self.gateway,
            "portMac": [{"port": p, "mac": m} for p, m in self.port_to_mac.items()],
        }


class VirtualNetworkFilter:
    """The module's maps (``ConcurrentHashMap``s: a null key or value throws an NPE)."""

    log = Logger()

    def __init__(self) -> None:
        self.name_to_guid: dict[str, str] = {}
        self.guid_to_gateway: dict[str, int] = {}
        self.gateway_to_guid: dict[int, set[str]] = {}
        self.vnets: dict[str, VirtualNetwork] = {}
        self.mac_to_guid: dict[str, str] = {}
        self.port_to_mac: dict[str, str] = {}

    def add_gateway(self, guid: str, ip: int) -> None:
        if ip != 0:
            self.guid_to_gateway[guid] = ip
            if guid in self.vnets:
                self.vnets[guid].gateway = ipv4_from_int(ip)
            self.gateway_to_guid.setdefault(ip, set()).add(guid)

    def delete_gateway(self, guid: str) -> None:
        ip = self.guid_to_gateway.pop(guid, None)
        if ip is None:
            return
        self.gateway_to_guid.get(ip, set()).discard(guid)
        if guid in self.vnets:
            self.vnets[guid].gateway = None

    def create_network(self, guid: str | None, name: str | None, gateway: int | None) -> None:
        if guid is None:  # nameToGuid.put(name, null) or vNetsByGuid.containsKey(null)
            raise npe("VirtualNetworkFilter.createNetwork")
        for key, value in self.name_to_guid.items():
            if value == guid:
                del self.name_to_guid[key]
                break
        if name is not None:
            self.name_to_guid[name] = guid
        if guid in self.vnets:
            self.vnets[guid].name = name
        else:
            self.vnets[guid] = VirtualNetwork(name, guid)
        if gateway is not None and gateway != 0:
            self.add_gateway(guid, gateway)

    def delete_network(self, guid: str | None) -> None:
        if not self.name_to_guid:
            self.log.warn("Could not delete network with ID {guid}, network doesn't exist", guid=guid)
            return
        name = None
        for key, value in self.name_to_guid.items():
            if value == guid:
                name = key
                break
            self.log.debug("Could not delete network with ID {guid}, network doesn't exist", guid=guid)
        if name is None:  # nameToGuid.remove(null)
            raise npe("VirtualNetworkFilter.deleteNetwork")
        del self.name_to_guid[name]
        assert guid is not None  # it matched a value, and values are never null
        self.delete_gateway(guid)
        vnet = self.vnets.pop(guid, None)
        if vnet is not None:
            vnet.port_to_mac.clear()
        for mac in [m for m, g in self.mac_to_guid.items() if g == guid]:
            del self.mac_to_guid[mac]
            for port, m in self.port_to_mac.items():
                if m == mac:
                    del self.port_to_mac[port]
                    break

    def add_host(self, mac: str, guid: str, port: str) -> None:
        self.mac_to_guid[mac] = guid
        self.port_to_mac[port] = mac
        if guid in self.vnets:
            self.vnets[guid].port_to_mac[port] = mac

    def delete_host(self, port: str) -> None:
        host = self.port_to_mac.pop(port, None)
        if host is None:
            return
        guid = self.mac_to_guid.get(host)
        if guid is None:  # vNetsByGuid.get(macToGuid.get(host)) with a null key
            raise npe("VirtualNetworkFilter.deleteHost")
        if guid in self.vnets:
            self.vnets[guid].remove_host(host)
        del self.mac_to_guid[host]


# -- the REST side ------------------------------------------------------------------------------


def restlet_status(code: int, reason: str, description: str, error: JavaException | None = None) -> dict[str, Any]:
    """Restlet's JSON status representation (much shortened: no full stack trace)."""
    body: dict[str, Any] = {"code": code, "description": description, "reasonPhrase": reason}
    if error is not None:
        body["throwable"] = {
            "cause": None,
            "class": error.cls,
            "localizedMessage": error.message,
            "message": error.message,
            "stackTrace": [{"className": "net.floodlightcontroller.virtualnetwork", "methodName": error.where, "nativeMethod": False}],
        }
    body.update(
        {"uri": "http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html", "serverError": code >= 500, "success": False, "error": True}
    )
    return body


def _reply(body: Any, content_type: str = JSON_UTF8, status: int = 200) -> Reply:
    return Reply(status, body, content_type=content_type, compact=True)


class FloodlightController:
    log = Logger()
    profile = "floodlight"

    def __init__(self) -> None:
        self.vns = VirtualNetworkFilter()
        self.needs_sync = False  # Floodlight never asks for a re-sync
        self.json_errors = 0
        self.java_exceptions = 0
        self.unrecognized_fields = 0

    def forget(self, mode: str | None = None) -> None:
        """A Floodlight restart: everything is in memory, so everything is gone."""
        self.vns = VirtualNetworkFilter()

    def stats(self) -> dict[str, Any]:
        return {
            "json_parse_errors": self.json_errors,
            "java_exceptions": self.java_exceptions,
            "unrecognized_fields": self.unrecognized_fields,
        }

    def counts(self) -> dict[str, int]:
        return {"networks": len(self.vns.vnets), "hosts": len(self.vns.mac_to_guid)}

    def snapshot(self, raw: bool = False) -> dict[str, Any]:
        vns = self.vns
        networks = []
        for guid, vnet in sorted(vns.vnets.items()):
            ports = [{"port": p, "mac": m} for p, m in sorted(vnet.port_to_mac.items())]
            networks.append({"guid": guid, "name": vnet.name, "gateway": vnet.gateway, "ports": ports})
        mac_ports: dict[str, str] = {}
        for port, mac in vns.port_to_mac.items():
            mac_ports.setdefault(mac, port)
        hosts = [{"mac": mac, "network": guid, "port": mac_ports.get(mac)} for mac, guid in sorted(vns.mac_to_guid.items())]
        return {
            "profile": self.profile,
            "needs_sync": False,
            "networks": networks,
            "hosts": hosts,
            "names": dict(sorted(vns.name_to_guid.items())),
            "counts": self.counts(),
        }

    async def handle(self, req: ControllerRequest) -> Reply:
        try:
            return self._dispatch(req)
        except JavaException as e:
            self.java_exceptions += 1
            self.log.error("{method} {path}: {error}", method=req.method, path=req.path, error=str(e))
            return _reply(
                restlet_status(
                    500,
                    "Internal Server Error",
                    "The server encountered an unexpected condition which prevented it from fulfilling the request",
                    e,
                ),
                status=500,
            )

    def _dispatch(self, req: ControllerRequest) -> Reply:
        segments = req.segments
        if segments is None:
            if req.path == "/wm/core/controller/summary/json" and req.method == "GET":
                summary = {"# Switches": 0, "# hosts": len(self.vns.mac_to_guid), "# quarantine ports": 0, "# inter-switch links": 0}
                return _reply(summary, "application/json")
            return _reply(restlet_status(404, "Not Found", "The server has not found anything matching the request URI"), status=404)
        for pattern, kind in REAL_ROUTES:
            args = match(pattern, segments)
            if args is None:
                continue
            if kind == "attachment":
                return self._attachment(req, args[1], args[2])
            return self._network(req, args[1] if kind == "network" else None)
        if req.method not in NOOP_METHODS:
            return self._not_allowed()
        return _reply(OK)

    def _not_allowed(self) -> Reply:
        return _reply(
            restlet_status(
                405,
                "Method Not Allowed",
                "The method specified in the request is not allowed for the resource identified by the request URI",
            ),
            status=405,
        )

    def _text(self, req: ControllerRequest) -> str:
        return req.body.decode("utf-8", "replace")

    def _network(self, req: ControllerRequest, url_guid: str | None) -> Reply:
        if req.method == "GET":
            return _reply([v.to_json() for v in self.vns.vnets.values()], "application/json")
        if req.method == "DELETE":
            self.vns.delete_network(url_guid)
            return _reply(OK)
        if req.method not in ("PUT", "POST"):
            return self._not_allowed()
        network = NetworkDefinition()
        warnings: list[str] = []
        try:
            json_to_network_definition(self._text(req), network, warnings)
        except (JsonParseError, JavaIOException) as e:
            self.json_errors += 1
            self.log.warn("Could not parse JSON {error}", error=str(e))
        self.unrecognized_fields += len(warnings)
        if network.guid is None and url_guid is not None and url_guid != "null":
            network.guid = url_guid
        gateway = None
        if network.gateway is not None:
            try:
                gateway = ipv4_to_int(network.gateway)
            except JavaException:
                self.log.warn(
                    "Could not parse gateway {gw} as IP for network {name}, setting as null", gw=network.gateway, name=network.name
                )
        self.vns.create_network(network.guid, network.name, gateway)
        return _reply(OK)

    def _attachment(self, req: ControllerRequest, guid: str, port: str) -> Reply:
        if req.method == "DELETE":
            self.vns.delete_host(port)
            return _reply(OK, TEXT_UTF8)
        if req.method != "PUT":
            return self._not_allowed()
        host = HostDefinition(port=port, guid=guid)
        try:
            json_to_host_definition(self._text(req), host)
        except (JsonParseError, JavaIOException) as e:
            self.json_errors += 1
            self.log.warn("Could not parse JSON {error}", error=str(e))
        self.vns.add_host(mac_value_of(host.mac), guid, port)
        return _reply(OK)
