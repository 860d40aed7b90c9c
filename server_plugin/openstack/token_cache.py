"""A bounded cache of validated (and refused) tokens, as keystonemiddleware keeps one.

An entry is trusted until the earlier of the token's own expiry and
``token_cache_time`` after Keystone was asked: so a revoked token stops working
no later than ``token_cache_time`` later. Refused tokens are remembered as long
(a client retrying a bad token does not cost a Keystone call each time). The
least recently used entry goes first when ``size`` is reached.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MISS = object()


class TokenCache:
    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def get(self, token: str, now: float) -> Any:
        """The value stored for ``token`` (None for a refused one), or ``MISS``."""
        entry = self._entries.get(token)
        if entry is None:
            return MISS
        value, until = entry
        if now >= until:
            del self._entries[token]
            return MISS
        self._entries.move_to_end(token)
        return value

    def put(self, token: str, value: Any, now: float, expires_at: float | None = None) -> None:
        until = now + self.ttl if expires_at is None else min(now + self.ttl, expires_at)
        if until <= now:
            return
        self._entries[token] = (value, until)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
