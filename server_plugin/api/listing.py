"""Query strings of list and show calls: filters, fields, sorting, pagination links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import attrs

from server_plugin import exceptions as exc
from server_plugin.attributes import COLUMN_NAMES, Attribute
from server_plugin.store.listing import ListQuery
from server_plugin.validators import ValidationError, boolean

RESERVED = {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"}
# The largest LIMIT every backend takes; any bigger limit means the same thing.
MAX_LIMIT = 2**31 - 1


@attrs.frozen
class PagingOptions:
    allow_pagination: bool = True
    allow_sorting: bool = True
    pagination_max_limit: int = -1


def fields_of(args: dict[str, list[str]]) -> list[str]:
    return [f for f in args.get("fields", []) if f]


Visible = Callable[[str], bool]  # may the caller see this attribute (policy.can_see)


def _everything(name: str) -> bool:
    return True


def _filters(args: dict[str, list[str]], attributes: dict[str, Attribute], visible: Visible = _everything) -> dict[str, list[Any]]:
    filters: dict[str, list[Any]] = {}
    for key, raw_values in args.items():
        if key in RESERVED or not visible(key):
            # A filter on what the caller cannot see is ignored like one on a non-column:
            # what comes back must not depend on a value it may not know.
            continue
        values = [v for v in raw_values if v != ""]
        if not values:
            continue
        if any("\x00" in v for v in values):
            # PostgreSQL refuses NUL in a query parameter; no stored value holds one.
            raise exc.InvalidInput(error_message=f"Invalid input for {key}. Reason: NUL character in filter value")
        if key == "fixed_ips" and "fixed_ips" in attributes:
            filters["fixed_ips"] = [_fixed_ip_filter(values)]
            continue
        if key == "shared" and key in attributes:
            filters["shared"] = [_convert(key, boolean, v) for v in values]
            continue
        spec = attributes.get(key)
        if spec is None or spec.filter_convert is None:
            continue  # Quantum ignores filters that are not columns
        column = COLUMN_NAMES.get(key, key)
        converted = [_convert(key, spec.filter_convert, v) for v in values]
        filters.setdefault(column, []).extend(converted)
    return filters


def _convert(key: str, convert: Any, value: str) -> Any:
    try:
        return convert(value)
    except (ValidationError, ValueError, TypeError) as e:
        raise exc.InvalidInput(error_message=f"Invalid input for {key}. Reason: {e}") from None


def _fixed_ip_filter(values: list[str]) -> dict[str, list[str]]:
    entry: dict[str, list[str]] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or key not in ("ip_address", "subnet_id"):
            raise exc.InvalidInput(error_message=f"'{value}' is not of the form <key>=[value]")
        entry.setdefault(key, []).append(val)
    return entry


def _sorts(args: dict[str, list[str]], attributes: dict[str, Attribute], visible: Visible = _everything) -> tuple[tuple[str, bool], ...]:
    keys, dirs = args.get("sort_key", []), args.get("sort_dir", [])
    if not keys:
        return ()
    if dirs and len(keys) != len(dirs):
        raise exc.HTTPBadRequest(detail="The number of sort_keys and sort_dirs must be same")
    dirs = dirs or ["asc"] * len(keys)
    sorts = []
    for key, direction in zip(keys, dirs, strict=False):
        spec = attributes.get(key)
        if spec is None or not spec.sortable or not visible(key):
            # Sorting by a hidden attribute would reveal its order (and, with a marker, its values).
            raise exc.HTTPBadRequest(detail=f"{key} is invalid attribute for sort_keys")
        if direction not in ("asc", "desc"):
            raise exc.HTTPBadRequest(detail=f"{direction} is invalid value for sort_dirs, valid values are 'asc' and 'desc'")
        sorts.append((COLUMN_NAMES.get(key, key), direction == "asc"))
    return tuple(sorts)


def _limit(args: dict[str, list[str]], options: PagingOptions) -> int | None:
    raw = args.get("limit")
    if not raw:
        return None
    text = raw[-1]
    try:
        limit = int(text)
    except ValueError:
        raise exc.HTTPBadRequest(detail=f"Limit must be an integer 0 or greater and not '{text}'") from None
    if limit < 0:
        raise exc.HTTPBadRequest(detail=f"Limit must be an integer 0 or greater and not '{text}'")
    if options.pagination_max_limit > 0:
        limit = min(limit, options.pagination_max_limit) if limit else options.pagination_max_limit
    return min(limit, MAX_LIMIT) or None


def list_query(
    args: dict[str, list[str]], attributes: dict[str, Attribute], options: PagingOptions, visible: Visible = _everything
) -> ListQuery:
    """``visible``: the caller's view of the attributes; filters and sort keys on others are not honoured."""
    filters = _filters(args, attributes, visible)
    sorts = _sorts(args, attributes, visible) if options.allow_sorting else ()
    if not options.allow_pagination:
        return ListQuery(filters=filters, sorts=sorts)
    limit = _limit(args, options)
    marker = (args.get("marker") or [None])[-1] or None
    page_reverse = False
    if args.get("page_reverse"):
        page_reverse = _convert("page_reverse", boolean, args["page_reverse"][-1])
    return ListQuery(filters=filters, sorts=sorts, limit=limit, marker=marker, page_reverse=page_reverse)


def pagination_links(base_url: str, args: dict[str, list[str]], items: list[dict[str, Any]], query: ListQuery) -> list[dict[str, str]]:
    """Neutron's next/previous links (get_pagination_links)."""
    if not items:
        return paging_links(base_url, args, query, 0, None, None)
    return paging_links(base_url, args, query, len(items), items[0]["id"], items[-1]["id"])


def paging_links(
    base_url: str, args: dict[str, list[str]], query: ListQuery, count: int, first_id: str | None, last_id: str | None
) -> list[dict[str, str]]:
    """``pagination_links`` from what a streamed list knows at its end: how many items, the first's and the last's ids."""
    if not query.limit:
        return []
    links = []
    if not (count < query.limit and not query.page_reverse):
        params = {k: v for k, v in args.items() if k not in ("marker", "page_reverse")}
        if count:
            params["marker"] = [last_id]
        links.append({"rel": "next", "href": f"{base_url}?{urlencode(params, doseq=True)}"})
    if not (count < query.limit and query.page_reverse):
        params = {k: v for k, v in args.items() if k not in ("marker", "page_reverse")}
        if count:
            params["marker"] = [first_id]
        params["page_reverse"] = ["True"]
        links.append({"rel": "previous", "href": f"{base_url}?{urlencode(params, doseq=True)}"})
    return links
