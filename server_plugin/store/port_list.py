"""Port lists through SQLAlchemy Core, one query per chunk: the columns a port's view needs, and its fixed IPs,
security groups and allowed address pairs as JSON text the database builds (issue 15: 10,000 ports in under 300 ms).

Loading 10,000 ``Port`` objects spent most of a full list in the ORM (an
identity-map entry, instance state and attribute instrumentation per row, and
the same for every ``IPAllocation``); the view needs plain values only. The
statement keeps the ORM list's filters, visibility, sorting and keyset paging
(``listing.apply_paging``), selecting columns instead of entities.

A port's lists come from correlated subqueries of the same statement
(``sql_json.json_array``), in ``position`` order (security groups by id): no
query per list and chunk, and no Python grouping of their rows. A page
sorted on other keys than id is a derived table (``_with_lists``), so that
they are computed for the page's rows only, not for every row the sort reads.
``ports_chunk`` (the API's lists) hands the texts on as ``orjson.Fragment``
values, which orjson writes as they are; ``iter_ports`` and ``get_ports``
(the server's own reads) parse them into lists. Where hosts filter
(``binding:vif_details``) is one query per chunk
(``port_filter.all_filtering_hosts``). A streamed list builds the statement
of its next chunks once (``listing.keyset_paging``: the last port's sort
values and the limit are parameters), not once per chunk.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import attrs
import orjson
from sqlalchemy import and_, literal_column, select
from sqlalchemy.orm import Session

from server_plugin.context import RequestContext
from server_plugin.store import port_filter
from server_plugin.store.listing import ListQuery, apply_filters, apply_paging, keyset_paging, keyset_values, order_of, scoped
from server_plugin.store.models import AllowedAddressPair, IPAllocation, Port, SecurityGroupPortBinding
from server_plugin.store.sql_json import constant, json_array, quoted, text_of
from server_plugin.store.sql_time import api_time
from server_plugin.store.views import PORT_COLUMNS, port_view

CHUNK = 1000  # ports per chunk of a streamed list (and per query of the server's own full reads): 700 kB of JSON

COLUMNS = tuple(getattr(Port, name) for name in PORT_COLUMNS)
TIMES = ("created_at", "updated_at")
# The times formatted by the database (sql_time), under their own names; a list sorted on a time keeps the stored
# values, which the next chunk's keyset condition compares with.
FORMATTED_COLUMNS = tuple(api_time(column).label(column.key) if column.key in TIMES else column for column in COLUMNS)
_HOST = PORT_COLUMNS.index("binding_host_id")
_SECURITY = PORT_COLUMNS.index("port_security_enabled")
_LISTS = len(PORT_COLUMNS)  # the row's fixed IPs, security groups and allowed address pairs follow its columns

_FIXED_IP = text_of(
    constant('{"subnet_id":"'), IPAllocation.subnet_id, constant('","ip_address":"'), IPAllocation.ip_address, constant('"}')
)
_GROUP = text_of(constant('"'), SecurityGroupPortBinding.security_group_id, constant('"'))
_PAIR = text_of(
    constant('{"ip_address":'),
    quoted(AllowedAddressPair.ip_address),
    constant(',"mac_address":'),
    quoted(AllowedAddressPair.mac_address),
    constant("}"),
)
_EMPTY = orjson.Fragment(b"[]")


@functools.cache
def _lists(dialect: str, port_id: str) -> tuple[Any, ...]:
    """The JSON texts of the fixed IPs, security group ids and allowed address pairs of the port whose id is the column
    ``port_id`` (``ports.id``, or ``page.id`` of a page's derived table) of the enclosing SELECT.

    Built once per dialect: the subqueries name the column by its text, so that
    they fit every statement (building them anew took a tenth of a full list).
    """
    port_id = literal_column(port_id)
    groups = SecurityGroupPortBinding
    return (
        json_array(dialect, IPAllocation, _FIXED_IP, IPAllocation.port_id == port_id, [IPAllocation.position]).label("fixed_ips"),
        json_array(dialect, groups, _GROUP, groups.port_id == port_id, [groups.security_group_id]).label("security_groups"),
        json_array(dialect, AllowedAddressPair, _PAIR, AllowedAddressPair.port_id == port_id, [AllowedAddressPair.position]).label(
            "allowed_address_pairs"
        ),
    )


def _selected(ctx: RequestContext, query: ListQuery) -> Any:
    """The SELECT of the ports ``ctx`` may see that match ``query``'s filters, as plain columns (unordered)."""
    sorted_on_time = any(key in TIMES for key, _ in query.sorts)
    stmt = scoped(ctx, Port, select(*(COLUMNS if sorted_on_time else FORMATTED_COLUMNS)))
    filters = dict(query.filters)
    for entry in filters.pop("fixed_ips", None) or []:
        conditions = []
        if "ip_address" in entry:
            conditions.append(IPAllocation.ip_address.in_(entry["ip_address"]))
        if "subnet_id" in entry:
            conditions.append(IPAllocation.subnet_id.in_(entry["subnet_id"]))
        if conditions:
            stmt = stmt.where(Port.id.in_(select(IPAllocation.port_id).where(and_(*conditions))))
    return apply_filters(stmt, Port, filters)


def _with_lists(session: Session, stmt: Any, query: ListQuery, limited: bool) -> Any:
    """``stmt`` (ordered, ``limited`` or not) with the JSON texts of its ports' lists (``_lists``) after its columns.

    In the same SELECT when every row it reads is listed: no limit, or a limit
    on the primary key's order (the default: the databases read the index in
    order and stop at the limit). A page on other sort keys sorts every
    matching row first, so it is a derived table, and its lists are read
    for its rows only.
    """
    dialect = session.get_bind().dialect.name
    if not limited or all(key == "id" for key, _ in query.sorts):
        return stmt.add_columns(*_lists(dialect, f"{Port.__tablename__}.id"))
    page = stmt.subquery("page")
    return select(*page.c, *_lists(dialect, "page.id")).order_by(*order_of(page.c, query))


def ports_statement(session: Session, ctx: RequestContext, query: ListQuery, after: Any = None) -> Any:
    """The SELECT of the ports ``ctx`` may see that match ``query`` (filters, sort keys, marker, limit), as plain columns
    and then the JSON texts of their lists (``_lists``)."""
    stmt = apply_paging(session, ctx, _selected(ctx, query), Port, query, after)
    return _with_lists(session, stmt, query, bool(query.limit))


@attrs.frozen
class Next:
    """Where a streamed list goes on: the statement of its next chunks (built by the second chunk, then reused) and
    the keyset values of the last port listed."""

    statement: Any
    values: dict[str, Any]


def _views(session: Session, rows: list[Any], raw: bool) -> list[dict[str, Any]]:
    """The views of ``rows``, their lists as ``orjson.Fragment`` texts if ``raw``, else parsed."""
    if not rows:
        return []
    on = port_filter.all_filtering_hosts(session) if any(row[_HOST] for row in rows) else ()
    views = []
    wrap, empty = (orjson.Fragment, _EMPTY) if raw else (orjson.loads, None)
    for row in rows:
        values = tuple(row)
        ips, groups, pairs = values[_LISTS:]
        host = values[_HOST]
        views.append(
            port_view(
                values,
                wrap(ips) if ips is not None else (empty or []),
                wrap(groups) if groups is not None else (empty or []),
                wrap(pairs) if pairs is not None else (empty or []),
                bool(host) and host in on and values[_SECURITY] is not False,
            )
        )
        if raw and values[_PROFILE] not in _NO_PROFILE:
            _encodable_profile(views[-1])
    return views


_PROFILE = PORT_COLUMNS.index("binding_profile")
_NO_PROFILE = (None, "", "{}")


def _encodable_profile(view: dict[str, Any]) -> None:
    """A ``binding:profile`` orjson refuses (an integer beyond 64 bits) as ``json``'s text of it: ``json_codec`` falls
    back to ``json`` for such a body, which cannot write the list's ``orjson.Fragment`` values."""
    try:
        orjson.dumps(view["binding:profile"])
    except TypeError:
        view["binding:profile"] = orjson.Fragment(json.dumps(view["binding:profile"]))


def iter_ports(session: Session, ctx: RequestContext, query: ListQuery) -> Iterator[list[dict[str, Any]]]:
    """The views of the listed ports, in order, ``CHUNK`` at a time (with their lists as Python lists)."""
    result = session.connection().execute(ports_statement(session, ctx, query))
    while rows := result.fetchmany(CHUNK):
        yield _views(session, rows, raw=False)


def ports_chunk(
    session: Session, ctx: RequestContext, query: ListQuery, after: Next | None = None, size: int = CHUNK
) -> tuple[list[dict[str, Any]], Next | None]:
    """Up to ``size`` ports of the list, after ``after`` (else from the marker); with them, the ``after`` of the next chunk.

    Their lists are ``orjson.Fragment`` texts: for the API's replies only. A
    streamed list reads one chunk per transaction, so that a slow client
    holds no database connection: keyset paging on the sort keys plus id
    gives every port once, as paging links do. ``query`` must stay the same
    from chunk to chunk but for its ``limit`` (what is left of it).
    """
    limit = min(size, query.limit) if query.limit else size
    if after is None:
        statement = None
        result = session.connection().execute(ports_statement(session, ctx, attrs.evolve(query, limit=limit)))
    else:
        statement = after.statement
        if statement is None:
            statement = _with_lists(session, keyset_paging(_selected(ctx, query), Port, query), query, True)
        result = session.connection().execute(statement, {**after.values, "limit": limit})
    rows = result.all()
    return _views(session, rows, raw=True), (Next(statement, keyset_values(rows[-1], query)) if rows else None)


def get_ports(session: Session, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
    return [port for chunk in iter_ports(session, ctx, query) for port in chunk]
