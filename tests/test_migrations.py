"""The Alembic migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server_plugin import manage
from server_plugin.store import migrate
from server_plugin.store.db import make_engine
from server_plugin.store.models import Base


def test_upgrade_from_empty_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert migrate.is_current(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        migrate.upgrade(engine)  # a second upgrade is a no-op
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
    finally:
        engine.dispose()


def test_manage_db_upgrade_and_current(tmp_path, capsys) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path}/m.sqlite"
    assert manage.main(["--sql-connection", url, "db", "current"]) == 1
    assert "UPGRADE NEEDED" in capsys.readouterr().out
    assert manage.main(["--sql-connection", url, "db", "upgrade"]) == 0
    assert "-> " + migrate.head_revision(make_engine(url)) in capsys.readouterr().out
    assert manage.main(["--sql-connection", url, "db", "current"]) == 0
