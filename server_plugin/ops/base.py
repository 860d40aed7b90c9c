"""What every mutation is: one typed operation that runs in one store transaction and returns an Outcome.

An ``Operation`` names what it changes (``kind``, ``object_id``, ``op`` for the
journal), the object keys it holds while its controller calls are out
(``exclusive``/``shared``, controller/ordering.py), and its unit of work:

* a create or update: ``apply(session)`` makes the change and returns the
  Outcome: the API reply, the exact undo, the agent events and the ``changes``
  (``Delta``s: each object before and after, with the pure mapping that turns
  it into controller calls; read in the same transaction);
* a delete (``deletes = True``): ``check(session)`` answers the local 404/409s
  and returns the changes the controllers must see, before any call;
  ``apply(session)`` then deletes (and runs the checks again).

The mirror (controller/mirror.py) runs every operation the same way; without
controllers the plugin runs ``applied`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar

import attrs
from sqlalchemy.orm import Session

from server_plugin.store import agent_events, dhcp_events
from server_plugin.store.access import STALE_RETRIES, StaleLocks

__all__ = ["STALE_RETRIES", "StaleLocks"]  # (the rest by name)

Body = dict[str, Any]


@attrs.frozen
class Call:
    """One controller request of a change."""

    method: str
    path: str
    body: Any = None
    ignore: tuple[int, ...] = ()


@attrs.frozen
class Profile:
    """What the controllers speak: ``bigswitch`` or ``floodlight``, and what GET /capabilities answered."""

    name: str
    capabilities: frozenset[str] = frozenset()


# (profile, before, after) -> the controller calls; before None: created, after None: deleted
Mapping = Callable[[Profile, Any, Any], list[Call]]


@attrs.frozen
class Delta:
    """One object as it was and as it is after the change, and the mapping that says what the controllers get."""

    mapping: Mapping
    before: Any
    after: Any


def controller_calls(profile: Profile, changes: Iterable[Delta]) -> list[Call]:
    """The calls of a change, in the order of its deltas (pure)."""
    return [call for delta in changes for call in delta.mapping(profile, delta.before, delta.after)]


def controller_lanes(profile: Profile, changes: Iterable[Delta], independent: bool) -> list[list[Call]]:
    """The calls of a change as lanes: each lane's calls in order, the lanes free to run concurrently.

    One lane of every call unless the deltas are ``independent`` (a bulk create's ports): then one lane per delta."""
    if not independent:
        calls = controller_calls(profile, changes)
        return [calls] if calls else []
    lanes = (delta.mapping(profile, delta.before, delta.after) for delta in changes)
    return [lane for lane in lanes if lane]


# -- agent events, written in the operation's transaction ----------------------------------


@attrs.frozen
class PortEvent:
    """A port going from ``before`` to ``after`` (None: not there): its hosts hear of it."""

    before: Body | None
    after: Body | None

    def write(self, session: Session) -> None:
        agent_events.port_change(session, self.before, self.after)


@attrs.frozen
class PortsEvent:
    """Many ports changed at once (a bulk create): ``agent_events.ports_change``, each extension's hook run once."""

    changes: tuple[tuple[Body | None, Body | None], ...]

    def write(self, session: Session) -> None:
        agent_events.ports_change(session, self.changes)


@attrs.frozen
class NetworkEvent:
    """A network's change every host with a port on it hears of."""

    network: Body
    kind: str = agent_events.NETWORK_UPDATED

    def write(self, session: Session) -> None:
        agent_events.network_change(session, self.network, self.kind)


@attrs.frozen
class NetworkGone:
    """A deleted network: the hosts that had ports on it (read before the delete) hear of it."""

    net_id: str
    hosts: tuple[str, ...]

    def write(self, session: Session) -> None:
        for host in self.hosts:
            agent_events.record(session, host, agent_events.NETWORK_DELETED, self.net_id, {"network": {"id": self.net_id}})
        dhcp_events.network_change(session, {"id": self.net_id}, dhcp_events.NETWORK_DELETED)


@attrs.frozen
class SubnetEvent:
    """A subnet created, updated or deleted: DHCP agents hear of it if DHCP is (or was) enabled on it."""

    kind: str
    before: Body | None
    after: Body | None

    def write(self, session: Session) -> None:
        dhcp_events.subnet_change(session, self.kind, self.before, self.after)


AgentEvent = PortEvent | PortsEvent | NetworkEvent | NetworkGone | SubnetEvent


def _no_changes(profile: Profile) -> Sequence[Delta]:
    return ()


@attrs.frozen
class Outcome:
    """What one operation did: the reply, how to undo it exactly, its agent events and its controller changes.

    ``changes(profile)`` is read in the operation's transaction, and only when there
    are controllers to tell: a plain store does not pay for the views (and a view
    reads only what that profile's mapping needs).
    """

    reply: Any = None
    undo: Callable[[Session], None] | None = None
    events: Sequence[AgentEvent] = ()
    changes: Callable[[Profile], Sequence[Delta]] = _no_changes


class Operation:
    """One mutation. Subclasses are attrs classes holding the request; see the module docstring."""

    kind: ClassVar[str]
    op: ClassVar[str]
    deletes: ClassVar[bool] = False
    # Each Delta's calls may go out concurrently with the others' (each Delta's own in order): a bulk create's ports.
    independent_changes: ClassVar[bool] = False

    @property
    def object_id(self) -> str:
        raise NotImplementedError

    @property
    def journal_ids(self) -> Sequence[str]:
        """The objects it journals, one entry each (a bulk create: every port)."""
        return (self.object_id,)

    @property
    def exclusive(self) -> Iterable[Hashable]:
        return [(self.kind, self.object_id)]

    @property
    def shared(self) -> Iterable[Hashable]:
        return []

    def apply(self, session: Session) -> Outcome:
        raise NotImplementedError

    def check(self, session: Session) -> Outcome:
        """A delete's checks and the changes its controller calls carry (nothing is deleted yet)."""
        return Outcome()

    def applied(self, session: Session) -> Outcome:
        """``apply``, with its agent events written in the same transaction."""
        outcome = self.apply(session)
        for event in outcome.events:
            event.write(session)
        return outcome

    def describe(self) -> str:
        return f"{self.op} {self.kind} {self.object_id}"


def keys(kind: str, *ids: str | None) -> list[tuple[str, str]]:
    """Lock keys of the ids that are known (``None`` and ``""`` are skipped)."""
    return [(kind, i) for i in ids if i]
