"""A real store whose units of work run inline, for tests driven by a ``Clock`` alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from server_plugin.store import migrate
from server_plugin.store.db import Store


class InlineStore:
    """``store``'s units of work run in the caller's thread and their Deferreds have fired on return: what the store's
    threads would do, without the reactor (the event bus and the mirror then move only as the test's Clock does)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backend = store.backend
        self.health = store.health

    def run(self, work: Callable[..., Any], *args: Any, readonly: bool = False, **kwargs: Any) -> Deferred[Any]:
        return maybeDeferred(self.store.run_sync, work, *args, readonly=readonly, **kwargs)

    def run_sync(self, work: Callable[..., Any], *args: Any, readonly: bool = False, **kwargs: Any) -> Any:
        return self.store.run_sync(work, *args, readonly=readonly, **kwargs)

    def session_info(self, key: str, value: Any) -> None:
        self.store.session_info(key, value)

    @property
    def connections_lost(self) -> int:
        return self.store.connections_lost


@contextmanager
def migrated_store(db_url: str) -> Iterator[Store]:
    """A store on ``db_url`` with the schema migrated, on a Clock, stopped at the end."""
    store = Store(db_url, reactor=Clock())
    migrate.upgrade(store.engine)
    try:
        yield store
    finally:
        store.stop()
