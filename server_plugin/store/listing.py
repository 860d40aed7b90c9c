"""Filtering, sorting and keyset pagination in SQL for list calls."""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Select, String, and_, func, or_
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.validators import is_uuid_like


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


def _sort_expression(model: Any, key: str) -> Any:
    """The expression to order and compare by.

    A nullable text column (a subnet's gateway_ip) is ordered as if NULL were "":
    SQL never finds NULL greater or smaller than a marker, and backends put
    NULLs at different ends, so paging would otherwise skip or fail on them.
    """
    column = getattr(model, key)
    return func.coalesce(column, "") if column.expression.nullable and isinstance(column.type, String) else column


def _marker_value(row: Any, key: str) -> Any:
    value = getattr(row, key)
    return "" if value is None else value  # as _sort_expression orders NULL


def apply_paging(session: Session, stmt: Select[Any], model: Any, query: ListQuery, not_found: type[exc.NotFound]) -> Select[Any]:
    """Order by the sort keys plus id, then start after the marker row."""
    sorts = list(query.sorts)
    if "id" not in [key for key, _ in sorts]:
        sorts.append(("id", True))
    if query.page_reverse:
        sorts = [(key, not asc) for key, asc in sorts]
    columns = [(key, _sort_expression(model, key), asc) for key, asc in sorts]
    if query.marker is not None:
        # Every id is a UUID: anything else is no marker (and may not even be valid SQL text, e.g. NUL).
        marker_row = session.get(model, query.marker) if is_uuid_like(query.marker) else None
        if marker_row is None:
            raise exc.MarkerNotFound(marker=query.marker)
        conditions = []
        for i, (key, expr, asc) in enumerate(columns):
            equal_before = [e == _marker_value(marker_row, k) for k, e, _ in columns[:i]]
            value = _marker_value(marker_row, key)
            after = expr > value if asc else expr < value
            conditions.append(and_(*equal_before, after))
        stmt = stmt.where(or_(*conditions))
    stmt = stmt.order_by(*[(expr.asc() if asc else expr.desc()) for _, expr, asc in columns])
    if query.limit:
        stmt = stmt.limit(query.limit)
    return stmt
