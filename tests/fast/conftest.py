"""Fixtures of the fast tier."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fast.stubs import InlineStore


@pytest.fixture
def store(tmp_path: Any) -> Iterator[InlineStore]:
    """A real SQLite store whose units of work run inline (no threads), closed after the test."""
    s = InlineStore(str(tmp_path / "q.sqlite"))
    try:
        yield s
    finally:
        s.close()
