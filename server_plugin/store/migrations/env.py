"""Alembic environment: runs on the engine handed over by migrate.upgrade()."""

from alembic import context

from server_plugin.store.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
