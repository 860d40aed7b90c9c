"""``json_array(dialect, table, item, where, order_by)``: a correlated scalar subquery whose value is the JSON array text of
``item`` (already JSON text per row) over the rows ``where`` selects, in ``order_by`` order; NULL when there are none.

A port list read each port's fixed IPs, security groups and allowed address
pairs by three more queries per chunk, then grouped 10,000 rows of them into
lists of dicts in Python, only for orjson to print them again (issue 15). The
database concatenates them instead, inside the ports' own query, and the view
carries the text as an ``orjson.Fragment``. ``item`` is built with ``text_of``
(pieces joined by SQL's concatenation: ``||``, MySQL's ``concat``) and
``quoted`` (a value as a JSON string, by the database's own JSON function)
where a value may hold characters JSON escapes; ids and addresses the server
validated (UUIDs, IPs) go in as they are.

Each backend aggregates in order its own way: PostgreSQL ``string_agg(...
ORDER BY)``, MariaDB ``GROUP_CONCAT(... ORDER BY ... SEPARATOR)``; SQLite
(3.40 has no ORDER BY in an aggregate) concatenates an ordered subquery, whose
order SQLite keeps (it does not flatten an ordered subquery into an aggregate).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


def constant(text: str) -> Any:
    """``text`` as an SQL string literal (no bound parameter: the statement stays one text for every chunk)."""
    if "'" in text or "\\" in text:
        raise ValueError(f"not a plain literal: {text!r}")
    return literal_column(f"'{text}'", String)


def text_of(*pieces: Any) -> Any:
    """The concatenation of ``pieces`` (SQL expressions or ``constant`` strings)."""
    out = pieces[0]
    for piece in pieces[1:]:
        out = out + piece
    return out


class quoted(FunctionElement[str]):  # noqa: N801 (an SQL function, named as one)
    """A text value as a JSON string literal (quotes and escapes), by the backend's JSON function."""

    type = String()
    inherit_cache = True
    name = "quoted"


@compiles(quoted, "sqlite")
def _quoted_sqlite(element: quoted, compiler: Any, **kw: Any) -> str:
    return f"json_quote({compiler.process(element.clauses, **kw)})"


@compiles(quoted, "postgresql")
def _quoted_postgresql(element: quoted, compiler: Any, **kw: Any) -> str:
    return f"CAST(to_json(CAST({compiler.process(element.clauses, **kw)} AS TEXT)) AS TEXT)"


@compiles(quoted, "mysql")
@compiles(quoted, "mariadb")
def _quoted_mysql(element: quoted, compiler: Any, **kw: Any) -> str:
    return f"json_quote({compiler.process(element.clauses, **kw)})"


class _ordered_group_concat(FunctionElement[str]):  # noqa: N801
    """MySQL/MariaDB ``GROUP_CONCAT(item ORDER BY keys SEPARATOR ',')``: ``clauses`` are the item, then the keys."""

    type = String()
    inherit_cache = True
    name = "ordered_group_concat"


@compiles(_ordered_group_concat)
def _ordered_group_concat_sql(element: _ordered_group_concat, compiler: Any, **kw: Any) -> str:
    item, *keys = element.clauses
    order = ", ".join(compiler.process(key, **kw) for key in keys)
    return f"GROUP_CONCAT({compiler.process(item, **kw)} ORDER BY {order} SEPARATOR ',')"


def json_array(dialect: str, table: Any, item: Any, where: Any, order_by: list[Any]) -> Any:
    """The scalar subquery (see the module's doc) over ``table``; ``where`` correlates it to the enclosing query."""
    if dialect == "sqlite":
        rows = select(item.label("item")).where(where).order_by(*order_by).correlate_except(table).subquery()
        joined = func.group_concat(rows.c.item, constant(","))
        return select(text_of(constant("["), joined, constant("]"))).scalar_subquery()
    if dialect == "postgresql":
        joined = func.string_agg(item, aggregate_order_by(constant(","), *order_by))
    else:  # mysql, mariadb
        joined = _ordered_group_concat(item, *order_by)
    return select(text_of(constant("["), joined, constant("]"))).where(where).scalar_subquery()
