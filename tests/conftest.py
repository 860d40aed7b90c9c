"""Shared fixtures: a database per backend and a started quantum-server on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from restproxy_testing.support import BACKENDS, ServerProcess, temporary_database


@pytest.fixture(scope="module", params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database on each configured backend (sqlite, postgresql, mariadb)."""
    with temporary_database(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[ServerProcess]:
    """A quantum-server (noauth) on a fresh database, shared by one test module."""
    proc = ServerProcess(db_url).start()
    try:
        yield proc
    finally:
        proc.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: in-process tests on a Clock and StubTreq (./run-tests.sh --quick)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/fast/ is the fast tier."""
    for item in items:
        if "/tests/fast/" in str(item.path):
            item.add_marker(pytest.mark.fast)
