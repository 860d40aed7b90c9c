"""Filtering, sorting and keyset pagination in SQL for list calls."""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Integer, Select, String, and_, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session

from server_plugin import exceptions as exc
from server_plugin.context import RequestContext
from server_plugin.store import access


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


def sort_keys(query: ListQuery) -> list[tuple[str, bool]]:
    """What a list is ordered by, as (key, ascending): the client's sort keys, then id; reversed for ``page_reverse``."""
    sorts = list(query.sorts)
    if "id" not in [key for key, _ in sorts]:
        sorts.append(("id", True))
    if query.page_reverse:
        sorts = [(key, not asc) for key, asc in sorts]
    return sorts


def order_of(columns: Any, query: ListQuery) -> list[Any]:
    """The ORDER BY clauses of ``query`` over ``columns`` (a model, or a subquery's ``.c`` holding the same keys)."""
    return [(expr.asc() if asc else expr.desc()) for expr, asc in ((_sort_expression(columns, key), asc) for key, asc in sort_keys(query))]


def scoped(ctx: RequestContext, model: Any, stmt: Select[Any] | None = None) -> Select[Any]:
    """``stmt`` (default: all rows of ``model``) limited to what ``ctx`` may see."""
    return (stmt if stmt is not None else select(model)).where(access.visible(ctx, model))


def apply_paging(session: Session, ctx: RequestContext, stmt: Select[Any], model: Any, query: ListQuery, after: Any = None) -> Select[Any]:
    """Order by the sort keys plus id, then start after the marker row.

    The marker is looked up as the caller: another tenant's object is no marker
    (404, as an unknown id), else the rows after it would reveal its sort values.
    ``after``: instead of the marker, the last row of the previous chunk of a
    streamed list (any object with the sort keys and ``id`` as attributes).
    """
    if after is not None or query.marker is not None:
        marker_row = after if after is not None else access.find(session, ctx, model, query.marker)
        if marker_row is None:
            raise exc.MarkerNotFound(marker=query.marker)
        columns = [(_sort_expression(model, key), asc) for key, asc in sort_keys(query)]
        values = keyset_values(marker_row, query).values()
        # Bound parameters, not Python literals: SQLAlchemy refuses "<" against a bare True/False.
        stmt = stmt.where(_after(columns, [literal(value, expr.type) for value, (expr, _) in zip(values, columns, strict=True)]))
    stmt = stmt.order_by(*order_of(model, query))
    if query.limit:
        stmt = stmt.limit(query.limit)
    return stmt


def _after(columns: list[tuple[Any, bool]], values: list[Any]) -> Any:
    """The keyset condition: the rows after ``values`` in the order of ``columns`` ((expression, ascending), the last unique)."""
    conditions = []
    for i, (expr, asc) in enumerate(columns):
        equal_before = [e == value for (e, _), value in zip(columns[:i], values[:i], strict=True)]
        conditions.append(and_(*equal_before, expr > values[i] if asc else expr < values[i]))
    return or_(*conditions)


def keyset_paging(stmt: Select[Any], model: Any, query: ListQuery) -> Select[Any]:
    """``stmt`` as ``apply_paging`` orders it, from after the row whose sort-key values (``keyset_values``) are bound at
    execution, and ``LIMIT`` the bound ``limit``: one statement for every next chunk of a streamed list (built, its
    cache key found, once per list instead of once per chunk)."""
    columns = [(_sort_expression(model, key), asc) for key, asc in sort_keys(query)]
    values = [bindparam(f"{KEYSET}{i}", type_=expr.type) for i, (expr, _) in enumerate(columns)]
    return stmt.where(_after(columns, values)).order_by(*order_of(model, query)).limit(bindparam("limit", type_=Integer))


KEYSET = "after_"  # keyset_paging's parameters: after_0, after_1, ... in sort_keys order


def keyset_values(row: Any, query: ListQuery) -> dict[str, Any]:
    """The parameters of ``keyset_paging`` for the rows after ``row`` (anything with the sort keys as attributes)."""
    return {f"{KEYSET}{i}": _marker_value(row, key) for i, (key, _) in enumerate(sort_keys(query))}
