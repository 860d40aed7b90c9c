"""Shared fixtures: a database per backend and a started quantum-server on it.

Markers: ``fast`` is every test under ``tests/fast/`` (in-process, on a Clock: ``./run-tests.sh --quick``).
In strict mode (``QRP_TEST_STRICT=1``, set by ``./run-tests.sh`` for a full run, or ``CI``), a database
backend of ``QRP_TEST_BACKENDS`` that does not answer, or a test left without parameters because its
backend is not configured, fails the run instead of skipping silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from restproxy_testing.support import BACKENDS, MYSQL_ADMIN_URL, PG_ADMIN_URL, ServerProcess, temporary_database

ADMIN_URLS = {"postgresql": PG_ADMIN_URL, "mariadb": MYSQL_ADMIN_URL}


def strict() -> bool:
    return os.environ.get("QRP_TEST_STRICT", "") not in ("", "0") or os.environ.get("CI", "") not in ("", "0", "false")


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


@pytest.fixture(scope="module")
def conn(server: ServerProcess) -> Iterator[Any]:
    """An openstacksdk connection to ``server`` as a deployment without Keystone uses it."""
    import openstack  # (imported here: only the client tests need it)

    connection = openstack.connection.Connection(auth_type="none", network_endpoint_override=server.url + "/")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="module")
def nc(server: ServerProcess) -> Any:
    """A python-neutronclient client of ``server`` (noauth)."""
    from neutronclient.v2_0 import client as nc_client

    return nc_client.Client(endpoint_url=server.url, auth_strategy="noauth")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: in-process tests on a Clock and StubTreq (./run-tests.sh --quick)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/fast/ is the fast tier; in strict mode no test may lose its parameters."""
    for item in items:
        if "/tests/fast/" in str(item.path):
            item.add_marker(pytest.mark.fast)
    if strict():
        empty = [
            item.nodeid
            for item in items
            if any("empty parameter set" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skip"))
        ]
        if empty:
            raise pytest.UsageError(f"strict mode: no backend to run {', '.join(empty)} (QRP_TEST_BACKENDS={','.join(BACKENDS)})")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In strict mode every configured database must answer before any test runs."""
    if not strict():
        return
    missing = []
    for backend in BACKENDS:
        if backend not in ADMIN_URLS:
            continue
        engine = create_engine(ADMIN_URLS[backend], connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:
            missing.append(f"{backend} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        finally:
            engine.dispose()
    if missing:
        raise pytest.UsageError(f"strict mode: database not reachable: {'; '.join(missing)}")
