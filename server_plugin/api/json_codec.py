"""Reply bodies to JSON bytes: orjson, several times faster than ``json`` (a 10,000-port list spent a quarter of its
CPU encoding), with ``json`` for what orjson refuses.

orjson refuses integers beyond 64 bits and non-string keys, which a client can
put into free-form attributes (``binding:profile``); such a body is still
answered, by ``json``, never with a 500. Both write UTF-8 JSON that any client
parses alike; orjson leaves out the blanks after ``,`` and ``:``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an integer over 64 bits, a non-string key
        return json.dumps(value).encode("utf-8")
