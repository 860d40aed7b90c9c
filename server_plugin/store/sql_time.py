"""``api_time(column)``: a stored (naive UTC) time as the API prints it, ``%Y-%m-%dT%H:%M:%SZ``, formatted by the database.

A 10,000-port list otherwise parses 20,000 stored times into ``datetime``
objects (SQLite keeps text) only to print them again; each backend's own
formatting function does both in C. ``views._timestamp`` gives the same
text for ``datetime`` values (an ORM object's view).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SQLITE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
POSTGRESQL_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
MYSQL_FORMAT = "%Y-%m-%dT%H:%i:%sZ"


class api_time(FunctionElement[str]):  # noqa: N801 (an SQL function, named as one)
    type = String()
    inherit_cache = True
    name = "api_time"


@compiles(api_time, "sqlite")
def _sqlite(element: api_time, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"strftime({compiler.process(literal(SQLITE_FORMAT), **kw)}, {compiler.process(column, **kw)})"


@compiles(api_time, "postgresql")
def _postgresql(element: api_time, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"to_char({compiler.process(column, **kw)}, {compiler.process(literal(POSTGRESQL_FORMAT), **kw)})"


@compiles(api_time, "mysql")
@compiles(api_time, "mariadb")
def _mysql(element: api_time, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"date_format({compiler.process(column, **kw)}, {compiler.process(literal(MYSQL_FORMAT), **kw)})"
