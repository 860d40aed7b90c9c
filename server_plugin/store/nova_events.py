"""Nova's port events, journaled in the transaction that changes the port, and claimed for delivery.

``install(store)`` hooks the store's sessions (``before_flush``): a compute port
(``device_owner`` ``compute:*`` with a ``device_id``) whose status goes
DOWN/BUILD/none -> ACTIVE gets ``network-vif-plugged`` (``completed``), -> ERROR
``network-vif-plugged`` (``failed``), ACTIVE -> DOWN ``network-vif-unplugged``,
and a deleted one ``network-vif-deleted``: Neutron's nova notifier's rules. So
every path that changes a port (API, agent RPC, undo) journals its event, or
none if the change rolls back. Bulk status updates call ``record_bulk``.

Several servers share one database: ``claim`` marks a batch with a per-batch id
and a lease in one transaction (the UPDATE's condition makes two claims of one
row impossible); a dead server's claim runs out after the lease.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import delete, event, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from server_plugin.store.models import NovaEvent, Port, utcnow

FLAG = "nova_events"  # in session.info: this store journals Nova's events
PLUGGED, UNPLUGGED, DELETED = "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted"


def install(store: Any) -> None:
    """Journal Nova's events in every transaction of ``store`` from now on."""
    store.sessionmaker.configure(info={FLAG: True})
    event.listen(store.sessionmaker, "before_flush", _before_flush)


def is_compute(device_owner: str | None, device_id: str | None) -> bool:
    return bool(device_id) and (device_owner or "").startswith("compute:")


def transition(old: str | None, new: str) -> tuple[str, str] | None:
    """(event name, event status) for a port status change, or None if Nova does not care."""
    if old == "ACTIVE" and new == "DOWN":
        return UNPLUGGED, "completed"
    if old in (None, "", "DOWN", "BUILD") and new in ("ACTIVE", "ERROR"):
        return PLUGGED, "completed" if new == "ACTIVE" else "failed"
    return None


def _journal(session: Session, name: str, server_uuid: str, port_id: str, status: str) -> None:
    now = utcnow()
    session.add(NovaEvent(name=name, server_uuid=server_uuid, tag=port_id, status=status, created_at=now, not_before=now, attempts=0))


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in list(session.dirty):
        if not isinstance(obj, Port):
            continue
        state = sa_inspect(obj)
        history = state.attrs.status.history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        change = transition(old, obj.status)
        # a device_id/owner changed in the same flush: the event is the old instance's
        owner = _before(state, "device_owner", obj.device_owner)
        device = _before(state, "device_id", obj.device_id)
        if change is not None and is_compute(owner, device):
            _journal(session, change[0], device, obj.id, change[1])
    for obj in list(session.deleted):
        if isinstance(obj, Port) and is_compute(obj.device_owner, obj.device_id):
            _journal(session, DELETED, obj.device_id, obj.id, "completed")


def _before(state: Any, key: str, current: str) -> str:
    history = state.attrs[key].history
    if history.deleted and history.deleted[0]:
        return str(history.deleted[0])
    return current


def record_bulk(session: Session, port_ids: set[str], status: str) -> None:
    """The events of ``UPDATE ports SET status`` for ``port_ids`` (call before the update: it reads the old statuses)."""
    if not session.info.get(FLAG) or not port_ids:
        return
    stmt = select(Port.id, Port.status, Port.device_id, Port.device_owner).where(
        Port.id.in_(port_ids), Port.status != status, Port.device_owner.startswith("compute:")
    )
    for port_id, old, device_id, owner in session.execute(stmt):
        change = transition(old, status)
        if change is not None and is_compute(owner, device_id):
            _journal(session, change[0], device_id, port_id, change[1])


# -- delivery ------------------------------------------------------------------------------


def claim(session: Session, batch: str, lease: float, limit: int = 100, now: datetime.datetime | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` due, unclaimed (or lease-expired) events, oldest first, marked as ``batch``'s."""
    now = now or utcnow()
    free = or_(NovaEvent.claimed_until.is_(None), NovaEvent.claimed_until < now)
    due = select(NovaEvent.id).where(free, NovaEvent.not_before <= now).order_by(NovaEvent.id).limit(limit)
    if session.get_bind().dialect.name != "sqlite":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    until = now + datetime.timedelta(seconds=lease)
    session.execute(update(NovaEvent).where(NovaEvent.id.in_(ids), free).values(claimed_by=batch, claimed_until=until))
    return [_row(r) for r in session.scalars(select(NovaEvent).where(NovaEvent.claimed_by == batch).order_by(NovaEvent.id))]


def _row(r: NovaEvent) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "server_uuid": r.server_uuid, "tag": r.tag, "status": r.status, "attempts": r.attempts}


def delivered(session: Session, batch: str, ids: list[int]) -> int:
    """Forget the events of ``batch`` that Nova has taken (or refused for good)."""
    if not ids:
        return 0
    result = session.execute(delete(NovaEvent).where(NovaEvent.id.in_(ids), NovaEvent.claimed_by == batch))
    return int(result.rowcount or 0)


def release(session: Session, batch: str, delay: float, now: datetime.datetime | None = None) -> None:
    """Nova did not take ``batch``: unclaim it, one attempt more, due again in ``delay`` seconds."""
    now = now or utcnow()
    session.execute(
        update(NovaEvent)
        .where(NovaEvent.claimed_by == batch)
        .values(claimed_by=None, claimed_until=None, attempts=NovaEvent.attempts + 1, not_before=now + datetime.timedelta(seconds=delay))
    )


def pending(session: Session) -> list[dict[str, Any]]:
    """Every undelivered event (admin and tests)."""
    return [_row(r) for r in session.scalars(select(NovaEvent).order_by(NovaEvent.id))]
