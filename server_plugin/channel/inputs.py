"""Strict parsing of what an agent sends: tokens, numeric query parameters, RPC bodies.

Everything here answers a client's mistake with a 400 (or a 401 for a token),
never by letting a bad value reach the store, where a lone surrogate, a NUL or
a 5,000-digit number becomes a driver error and a 500 on one backend or another.
"""

from __future__ import annotations

import math
import re
from typing import Any

from twisted.web import server

from server_plugin import exceptions as exc

INT64_MAX = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")  # ASCII only: str.isdigit() also accepts "²" and other scripts' digits


def token_of(request: server.Request) -> bytes:
    """The raw token (``X-Auth-Token`` or ``Authorization: Bearer``), compared as bytes so any byte sequence is just a wrong token."""
    token = (request.getHeader(b"X-Auth-Token") or b"").strip()
    if not token:
        auth = (request.getHeader(b"Authorization") or b"").strip()
        if auth[:7].lower() == b"bearer ":
            token = auth[7:].strip()
    return token


def int_param(request: server.Request, name: str, default: int | None = None, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """A query parameter as a non-negative integer written in ASCII digits, within int64; 400 otherwise."""
    values = (request.args or {}).get(name.encode("ascii"), [])
    if not values:
        if default is None:
            raise exc.HTTPBadRequest(detail=f"query parameter '{name}' is required")
        return default
    if len(values) > 1:
        raise exc.HTTPBadRequest(detail=f"query parameter '{name}' is given more than once")
    raw = values[0]
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        shown = raw[:40].decode("ascii", "backslashreplace")
        raise exc.HTTPBadRequest(detail=f"query parameter '{name}' must be an integer from {minimum} to {maximum}, not '{shown}'")
    return int(raw)


def check_body(value: Any, path: str = "body") -> None:
    """Refuse text no backend can store (lone surrogates, NUL) and numbers JSON cannot carry (NaN, Infinity), anywhere in a body."""
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise exc.InvalidInput(error_message=f"{path} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path} key")
            check_body(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_body(item, f"{path}[{index}]")


def check_text(text: str, path: str, max_len: int = 255) -> None:
    """One name (a host in a path): storable, and no longer than a column holds."""
    _check_text(text, path)
    if len(text) > max_len:
        raise exc.InvalidInput(error_message=f"{path} is longer than {max_len} characters")


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise exc.InvalidInput(error_message=f"{path} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise exc.InvalidInput(error_message=f"{path} is not valid Unicode (a lone surrogate)") from None
