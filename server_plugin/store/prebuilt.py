"""Hot-path statements compiled once per database dialect and run on the transaction's own driver cursor.

A port create runs the same five or six statements every time. Through
``Connection.execute`` each paid about as much client CPU again as the driver's
own call (the compiled-cache lookup, the execution context, the result object);
here a ``Prebuilt`` keeps the SQL text, the parameter order and the bind
processors of its dialect, and runs the statement with the dialect's own
``do_execute``/``do_executemany`` (so the store's deadlines still apply, see
deadlines.py). A driver error goes through SQLAlchemy's own handling
(``_handle_dbapi_exception``): the same wrapped exception (IntegrityError,
OperationalError...), and a lost connection is invalidated as any statement's.

Only for statements whose parameters are all given (no Python-side defaults,
no expanding IN) and whose result columns need no conversion but the caller's
(SQLite and MariaDB give booleans as integers).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement, Select

Params = dict[str, Any]


class _Compiled:
    __slots__ = ("sql", "keys", "processed", "positional", "returns_rows")

    def __init__(
        self, sql: str, keys: list[str], processors: dict[str, Callable[[Any], Any]], positional: bool, returns_rows: bool | None
    ) -> None:
        self.sql, self.keys, self.positional = sql, keys, positional
        self.returns_rows = returns_rows  # None: not known from the statement (a text), the cursor tells
        self.processed = [(k, processors[k]) for k in dict.fromkeys(keys) if k in processors]

    def params(self, values: Params) -> Any:
        if self.processed:
            values = dict(values)
            for key, process in self.processed:
                values[key] = process(values[key])
        if self.positional:
            return tuple([values[k] for k in self.keys])
        return {k: values[k] for k in self.keys}


class Prebuilt:
    """A Core statement (a select, or an insert of given columns), compiled at its first use on each dialect."""

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        """``columns``: an insert's columns (every row gives all of them)."""
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()
        self._last: tuple[Any, _Compiled | None] = (None, None)  # the dialect of the last use (a server has one)

    def _compile(self, dialect: Dialect) -> _Compiled:
        last_dialect, found = self._last
        if last_dialect is dialect and found is not None:
            return found
        found = self._compiled.get(dialect)
        if found is None:
            compiled: Any = self.statement.compile(dialect=dialect, column_keys=self.columns)
            if compiled.positional:
                keys = list(compiled.positiontup)
            else:
                keys = list(dict.fromkeys(compiled.bind_names.values()))
            processors = {k: p for k, p in compiled._bind_processors.items() if p is not None and k in keys}
            returns_rows = _returns_rows(self.statement, compiled)
            found = self._compiled[dialect] = _Compiled(compiled.string, keys, processors, bool(compiled.positional), returns_rows)
        self._last = (dialect, found)
        return found

    def rows(self, connection: Connection, values: Params, autobegin: bool = True) -> list[Any]:
        """Run it with one set of parameters; its rows (tuples; none for an insert). ``autobegin``: begin the
        connection's transaction first if it has none (false: the statement that begins it, from its "begin" event)."""
        compiled = self._compile(connection.dialect)
        params = compiled.params(values)
        cursor = _cursor(connection, autobegin)
        try:
            connection.dialect.do_execute(cursor, compiled.sql, params, None)
            returns_rows = compiled.returns_rows
            if returns_rows is None:
                returns_rows = cursor.description is not None
            return cursor.fetchall() if returns_rows else []
        except Exception as error:
            connection._handle_dbapi_exception(error, compiled.sql, params, cursor, None)
        finally:
            _close(cursor)

    def insert(self, connection: Connection, rows: Sequence[Params]) -> None:
        """Insert ``rows`` (one statement; several rows: the driver's executemany)."""
        compiled = self._compile(connection.dialect)
        if len(rows) == 1:
            self.rows(connection, rows[0])
            return
        params = [compiled.params(row) for row in rows]
        cursor = _cursor(connection, True)
        try:
            connection.dialect.do_executemany(cursor, compiled.sql, params, None)
        except Exception as error:
            connection._handle_dbapi_exception(error, compiled.sql, params, cursor, None)
        finally:
            _close(cursor)


def _returns_rows(statement: ClauseElement, compiled: Any) -> bool | None:
    """Whether the statement gives rows, known once: psycopg builds ``cursor.description`` (a column object per result
    column) at each reading, which cost a create's first read about as much as its rows. None for a text."""
    if isinstance(statement, Select):
        return True
    if compiled.isinsert or compiled.isupdate or compiled.isdelete:
        return bool(compiled.effective_returning)
    return None


def _cursor(connection: Connection, autobegin: bool) -> Any:
    """A driver cursor in the connection's transaction: begun first if it is not (as ``execute`` autobegins; a
    store's session always has begun it)."""
    if autobegin and not connection.in_transaction():
        connection.begin()
    return connection.connection.cursor()


def _close(cursor: Any) -> None:
    """Close the cursor; a failure (its connection lost) must not hide the statement's own error."""
    try:
        cursor.close()
    except Exception:
        pass
