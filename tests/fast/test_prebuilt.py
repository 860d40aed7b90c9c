"""Prebuilt statements (store/prebuilt.py): the same rows and the same errors as ``Connection.execute`` (SQLite file)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from server_plugin.store.db import make_engine
from server_plugin.store.models import Base, Network
from server_plugin.store.prebuilt import Prebuilt

NETWORKS = Network.__table__
COLUMNS = [c.name for c in NETWORKS.columns]
INSERT = Prebuilt(NETWORKS.insert(), COLUMNS)
BY_TENANT = Prebuilt(select(NETWORKS.c.id, NETWORKS.c.shared).where(NETWORKS.c.tenant_id == bindparam("tenant")).order_by(NETWORKS.c.id))


def _row(net_id: str, shared: bool = False) -> dict[str, object]:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    return {
        "id": net_id, "tenant_id": "t", "name": "n", "description": "", "admin_state_up": True, "status": "ACTIVE",
        "shared": shared, "created_at": now, "updated_at": now, "router_external": False, "port_security_enabled": True,
    }  # fmt: skip


def test_rows_go_in_as_the_orm_writes_them_and_come_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        INSERT.insert(conn, [_row("a", shared=True)])
        INSERT.insert(conn, [_row("b"), _row("c")])  # several rows: one executemany
        assert BY_TENANT.rows(conn, {"tenant": "t"}) == [("a", 1), ("b", 0), ("c", 0)]  # SQLite's booleans: integers
        assert BY_TENANT.rows(conn, {"tenant": "other"}) == []
        # the DateTime went through SQLAlchemy's own bind processor: read back as a datetime
        assert conn.execute(select(NETWORKS.c.created_at).where(NETWORKS.c.id == "b")).scalar() == datetime.datetime(2026, 1, 2, 3, 4, 5)
    engine.dispose()


def test_a_driver_error_is_wrapped_as_sqlalchemy_wraps_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        INSERT.insert(conn, [_row("a")])
        with pytest.raises(IntegrityError):
            INSERT.insert(conn, [_row("a")])
        with pytest.raises(IntegrityError):
            INSERT.insert(conn, [_row("b"), _row("b")])
        conn.rollback()
        assert BY_TENANT.rows(conn, {"tenant": "t"}) == []  # the connection is still usable
    engine.dispose()
