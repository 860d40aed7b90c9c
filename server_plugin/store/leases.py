"""Leases in the database: work that one process does for every server and worker on this database.

Several servers (and the ``api_workers`` of one) share a database and a controller pool. A full
topology sync, and the watchdog that looks for a controller that lost its state, must each run in
one process at a time, or every process repeats them. Each is a row of ``controller_leases``:

* ``acquire`` takes the row's lease if it is free, expired, or already ours (the row is read with
  ``FOR UPDATE`` on PostgreSQL and MariaDB, and SQLite runs one writer at a time), and renews it;
  a holder killed with ``-9`` loses it once ``held_until`` has passed.
* The sync's requests are generations: ``draw`` counts one more; the holder's ``snapshot`` takes the
  count just before it reads the store, and ``finish`` records it as ``done`` (or ``failed``). So a
  request made before a run read the store is satisfied by that run, wherever it ran, and one made
  after is satisfied only by a later run: none is lost, and none causes a run of its own.

Times are milliseconds since the epoch, from the caller's clock (the servers' clocks are assumed to
agree to well under a lease).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server_plugin.store.models import ControllerLease


def _row(session: Session, name: str) -> ControllerLease:
    """The row, locked for this transaction, created on first use (a concurrent creation is retried by the store)."""
    stmt = select(ControllerLease).where(ControllerLease.name == name)
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).first()
    if row is None:
        row = ControllerLease(name=name, requested=0, done=0, failed=0)
        session.add(row)
        session.flush()  # an IntegrityError here (another process created it) is a race the store retries
    return row


def view(row: ControllerLease | None, now_ms: int | None = None) -> dict[str, Any]:
    """The row as a dict (``live``: a holder's lease has not run out at ``now_ms``)."""
    if row is None:
        return {
            "holder": None, "held_until": None, "requested": 0, "done": 0, "failed": 0, "running": None, "started_at": None,
            "live": False, "ok_server": None, "ok_at": None, "status": {},
        }  # fmt: skip
    live = row.holder is not None and (now_ms is None or (row.held_until or 0) >= now_ms)
    return {
        "holder": row.holder, "held_until": row.held_until, "requested": row.requested, "done": row.done, "failed": row.failed,
        "running": row.running if live else None, "started_at": row.started_at if live else None, "live": live,
        "ok_server": row.ok_server, "ok_at": row.ok_at, "status": json.loads(row.status) if row.status else {},
    }  # fmt: skip


def read(session: Session, name: str, now_ms: int) -> dict[str, Any]:
    return view(session.get(ControllerLease, name), now_ms)


def draw(session: Session, name: str) -> int:
    """One more request: its generation."""
    row = _row(session, name)
    row.requested += 1
    return row.requested


def acquire(session: Session, name: str, holder: str, now_ms: int, lease_ms: int) -> tuple[bool, dict[str, Any]]:
    """Take (or keep) the lease if it is free, expired or ours; (whether we hold it now, the row)."""
    row = _row(session, name)
    if row.holder is None or row.holder == holder or (row.held_until or 0) < now_ms:
        if row.holder not in (None, holder):
            row.running = row.started_at = None  # a dead holder's run: it did not land
        row.holder, row.held_until = holder, now_ms + lease_ms
        return True, view(row, now_ms)
    return False, view(row, now_ms)


def renew(session: Session, name: str, holder: str, now_ms: int, lease_ms: int, status: dict[str, Any] | None = None) -> bool:
    """Extend our lease (and publish the holder's ``status``); False: it is not ours any more."""
    row = _row(session, name)
    if row.holder != holder:
        return False
    row.held_until = now_ms + lease_ms
    if status is not None:
        row.status = json.dumps(dict(json.loads(row.status) if row.status else {}, **status))
    return True


def release(session: Session, name: str, holder: str) -> None:
    """Give the lease back now (a stopping process), so that another takes over at once."""
    row = _row(session, name)
    if row.holder == holder:
        row.holder = row.held_until = row.running = row.started_at = None


def snapshot(session: Session, name: str, holder: str, now_ms: int) -> int | None:
    """The generation a run covers (the requests counted until now), or None: the lease is not ours."""
    row = _row(session, name)
    if row.holder != holder:
        return None
    row.running, row.started_at = row.requested, now_ms
    return row.running


def finish(session: Session, name: str, holder: str, generation: int, server: str | None, status: dict[str, Any], now_ms: int) -> bool:
    """A run ended (``server``: where it landed, None: it failed): record it and free the lease.
    False: the lease had been taken over meanwhile (the run counts for nothing)."""
    row = _row(session, name)
    if row.holder != holder or row.running != generation:
        return False
    if server is not None:
        row.done = max(row.done, generation)
        row.ok_server, row.ok_at = server, now_ms
    else:
        row.failed = max(row.failed, generation)
    shared = dict(json.loads(row.status) if row.status else {}, **status)
    row.status = json.dumps(shared)
    row.holder = row.held_until = row.running = row.started_at = None
    return True
