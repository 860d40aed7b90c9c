"""Validators and converters for API attributes.

Each validator takes a value and returns the canonical value or raises
``InvalidInput`` with Neutron's wording; the API layer prefixes the attribute
name ("Invalid input for x. Reason: ...").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import netaddr

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_NAME_LEN = 255
TENANT_ID_MAX_LEN = 255  # Neutron's db_const.PROJECT_ID_FIELD_SIZE
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class ValidationError(ValueError):
    """A value is not acceptable; the message says why."""


Validator = Callable[[Any], Any]


def is_uuid_like(value: Any) -> bool:
    return isinstance(value, str) and bool(UUID_RE.match(value))


def new_uuid() -> str:
    return str(uuid.uuid4())


def uuid_(value: Any) -> str:
    if not is_uuid_like(value):
        raise ValidationError(f"'{value}' is not a valid UUID")
    return value.lower()


def uuid_or_none(value: Any) -> str | None:
    return None if value is None else uuid_(value)


def unencodable(text: str) -> str | None:
    """Why no database can store ``text`` (a NUL, a lone surrogate), or None if every one can."""
    if "\x00" in text:
        # PostgreSQL cannot store NUL in text; refuse it on every backend alike.
        return "contains a NUL character"
    if _SURROGATE_RE.search(text):
        # JSON's "\ud800" decodes to a lone surrogate, which has no UTF-8 form.
        return "contains a lone surrogate (not valid Unicode)"
    return None


def string(max_len: int | None = MAX_NAME_LEN) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(f"'{value}' is not a valid string")
        problem = unencodable(value)
        if problem:
            raise ValidationError(f"{ascii(value)} {problem}")
        if max_len is not None and len(value) > max_len:
            raise ValidationError(f"'{value}' exceeds maximum length of {max_len}")
        return value

    return check


def host_id(value: Any) -> str:
    """``binding:host_id``: a string, but not a name the agent channel reserves ("@dhcp", "@hosts": the DHCP agents'
    and every host agent's event streams), which would send the port's events to those streams."""
    host = string()(value)
    if host.startswith("@"):
        raise ValidationError(f"'{host}' is not a valid host name: names that start with '@' are reserved")
    return host


def tenant_id(value: Any) -> str:
    """A tenant id, wherever it comes from (a v2 body, a v1 URL, a request header): what the column holds."""
    return string(TENANT_ID_MAX_LEN)(value)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    raise ValidationError(f"'{value}' cannot be converted to boolean")


def integer_in(*allowed: int) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError(f"'{value}' is not an integer")
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: JSON 1e400 is infinity
            raise ValidationError(f"'{value}' is not an integer") from None
        if isinstance(value, float) and number != value:
            raise ValidationError(f"'{value}' is not an integer")
        if number not in allowed:
            raise ValidationError(f"'{number}' is not in {list(allowed)}")
        return number

    return check


def _no_whitespace(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip() or " " in value:
        raise ValidationError(f"'{value}' is not a valid {what}")
    return value


def mac_address(value: Any) -> str:
    _no_whitespace(value, "MAC address")
    try:
        valid = netaddr.valid_mac(value)
    except Exception:
        valid = False
    if not valid:
        raise ValidationError(f"'{value}' is not a valid MAC address")
    mac = str(netaddr.EUI(value, dialect=netaddr.mac_unix_expanded)).lower()
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        raise ValidationError(f"'{value}' is not a valid MAC address")
    return mac


def ip_address(value: Any) -> str:
    _no_whitespace(value, "IP address")
    try:
        # INET_PTON refuses the legacy forms ("10.1", "0x0a000001") netaddr
        # would otherwise accept.
        return str(netaddr.IPAddress(value, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValidationError(f"'{value}' is not a valid IP address") from None


def ip_address_or_none(value: Any) -> str | None:
    return None if value is None else ip_address(value)


def cidr(value: Any) -> str:
    """A subnet in CIDR form with an explicit prefix and no host bits."""
    _no_whitespace(value, "IP subnet")
    if "/" not in value:
        raise ValidationError(f"'{value}' is not a valid IP subnet")
    address, _, prefix = value.partition("/")
    ip_address(address)
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValidationError(f"'{value}' is not a valid IP subnet") from None
    if not prefix.isdigit():
        raise ValidationError(f"'{value}' is not a valid IP subnet")
    if net.ip != net.network:
        raise ValidationError(f"'{value}' isn't a recognized IP subnet cidr, '{net.cidr}' is recommended")
    return str(net.cidr)


def list_of(item: Validator, what: str, max_len: int | None = None, unique: bool = True) -> Validator:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValidationError(f"'{value}' is not a list")
        result = [item(v) for v in value]
        if unique:
            seen: list[Any] = []
            for entry in result:
                if entry in seen:
                    raise ValidationError(f"Duplicate {what} '{entry}'")
                seen.append(entry)
        return result

    return check


def _dict_with(value: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"'{value}' is not a dictionary")
    keys = set(value)
    missing = required - keys
    if missing:
        raise ValidationError(f"Validation of dictionary's keys failed. Expected keys: {sorted(required)} Provided keys: {sorted(keys)}")
    extra = keys - required - optional
    if extra:
        raise ValidationError(f"Unrecognized {what} attribute(s) '{', '.join(sorted(extra))}'")
    return value


def allocation_pool(value: Any) -> dict[str, str]:
    pool = _dict_with(value, {"start", "end"}, set(), "allocation pool")
    return {"start": ip_address(pool["start"]), "end": ip_address(pool["end"])}


def host_route(value: Any) -> dict[str, str]:
    route = _dict_with(value, {"destination", "nexthop"}, set(), "host route")
    return {"destination": cidr(route["destination"]), "nexthop": ip_address(route["nexthop"])}


def fixed_ip(value: Any) -> dict[str, str]:
    entry = _dict_with(value, set(), {"subnet_id", "ip_address"}, "fixed IP")
    result: dict[str, str] = {}
    if "subnet_id" in entry:
        result["subnet_id"] = uuid_(entry["subnet_id"])
    if "ip_address" in entry:
        result["ip_address"] = ip_address(entry["ip_address"])
    return result


def fixed_ips(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ValidationError(f"'{value}' is not a list")
    result = [fixed_ip(v) for v in value]
    addresses = [e["ip_address"] for e in result if "ip_address" in e]
    for address in addresses:
        if addresses.count(address) > 1:
            raise ValidationError(f"Duplicate IP address '{address}'")
    return result


def nameserver(value: Any) -> str:
    return ip_address(value)


def dict_or_empty(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"'{value}' is not a dictionary")
    return value


def external_gateway_info(value: Any) -> dict[str, Any] | None:
    if value is None or value == {}:
        return None
    info = _dict_with(value, {"network_id"}, {"enable_snat", "external_fixed_ips"}, "gateway")
    info = dict(info)
    info["network_id"] = uuid_(info["network_id"])
    if "enable_snat" in info:
        info["enable_snat"] = boolean(info["enable_snat"])
    if "external_fixed_ips" in info:
        if info["external_fixed_ips"] is None:
            del info["external_fixed_ips"]
        else:
            info["external_fixed_ips"] = fixed_ips(info["external_fixed_ips"])
    return info
