"""Filtering, sorting and keyset pagination in SQL for list calls."""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc


@attrs.frozen
class ListQuery:
    """What a client asked of a collection (already validated by the API)."""

    filters: dict[str, list[Any]] = attrs.field(factory=dict)
    sorts: tuple[tuple[str, bool], ...] = ()  # (column, ascending)
    limit: int | None = None
    marker: str | None = None
    page_reverse: bool = False


def apply_filters(stmt: Select[Any], model: Any, filters: dict[str, list[Any]]) -> Select[Any]:
    for column_name, values in filters.items():
        column = getattr(model, column_name, None)
        if column is None or not values:
            continue
        stmt = stmt.where(column.in_(values))
    return stmt


def apply_paging(session: Session, stmt: Select[Any], model: Any, query: ListQuery, not_found: type[exc.NotFound]) -> Select[Any]:
    """Order by the sort keys plus id, then start after the marker row."""
    sorts = list(query.sorts)
    if "id" not in [key for key, _ in sorts]:
        sorts.append(("id", True))
    if query.page_reverse:
        sorts = [(key, not asc) for key, asc in sorts]
    columns = [(getattr(model, key), asc) for key, asc in sorts]
    if query.marker is not None:
        marker_row = session.get(model, query.marker)
        if marker_row is None:
            raise exc.MarkerNotFound(marker=query.marker)
        conditions = []
        for i, (column, asc) in enumerate(columns):
            equal_before = [c == getattr(marker_row, c.key) for c, _ in columns[:i]]
            value = getattr(marker_row, column.key)
            after = column > value if asc else column < value
            conditions.append(and_(*equal_before, after))
        stmt = stmt.where(or_(*conditions))
    stmt = stmt.order_by(*[(c.asc() if asc else c.desc()) for c, asc in columns])
    if query.limit:
        stmt = stmt.limit(query.limit)
    return stmt
