"""A group's members as ``security_group_member`` events change them (SG_CONTRACT.md), one port at a time.

The server sends a group whole (``security_group_updated``: its rules, ``members`` and, per member port,
``ports``) when this host first wants it or its rules change, and then each member port's change on its own: that
port's addresses in the group (``[]``: no longer a member). Two ports may share an address (an allowed address pair,
a CIDR), so an address leaves ``members`` only when no port still has it: a count per address says so. Each event
says what the port's addresses are, not what changed, so that applying one twice (or an older one's content again,
in sequence order) cannot drift.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any


class GroupMembers:
    """Per-address counts of the groups that got a member event, built from the group's ``ports`` on first use."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def reset(self, group_id: str | None = None) -> None:
        """The group (every group) was replaced whole: its counts are rebuilt from its new payload when needed."""
        if group_id is None:
            self._counts.clear()
        else:
            self._counts.pop(group_id, None)

    def apply(self, group: dict[str, Any], port_id: str, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Set ``port_id``'s addresses in ``group`` (its payload, changed in place): (addresses added, removed)."""
        ports: dict[str, list[str]] = group.setdefault("ports", {})
        new = sorted(set(addresses))
        old = ports.get(port_id) or []
        if new == old:
            return [], []
        counts = self._counts.get(group["id"])
        if counts is None:
            counts = self._counts[group["id"]] = Counter(a for held in ports.values() for a in held)
        if new:
            ports[port_id] = new
        else:
            ports.pop(port_id, None)
        members: list[str] = group.setdefault("members", [])
        added, removed = [], []
        for address in sorted(set(old) - set(new)):
            counts[address] -= 1
            if counts[address] <= 0:
                del counts[address]
                removed.append(address)
                at = bisect.bisect_left(members, address)
                if at < len(members) and members[at] == address:
                    del members[at]
        for address in sorted(set(new) - set(old)):
            counts[address] += 1
            if counts[address] == 1:
                added.append(address)
                at = bisect.bisect_left(members, address)
                if at == len(members) or members[at] != address:
                    members.insert(at, address)
        return added, removed
