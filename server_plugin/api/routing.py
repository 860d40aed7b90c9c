"""One routing model for every JSON API of the server: path templates to handlers, per method.

Each API (v2.0, v1.x, admin, the agent channel) declares its routes in one
table instead of unrolling path segments by hand, and every one answers the
same way: an unknown path is 404, a known path with another method is 405 with
``Allow``. Templates are ``/``-separated segments: a literal (``networks``), a
capture (``{network_id}``), or a capture checked by a named predicate
(``{port_id:uuid}``); a capture that fails its check does not match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from server_plugin import exceptions as exc
from server_plugin.validators import is_uuid_like

Check = Callable[[str], bool]
Handler = Callable[..., Any]

CHECKS: dict[str, Check] = {"uuid": is_uuid_like, "any": lambda value: True}


@attrs.frozen
class Segment:
    literal: str | None = None
    capture: str | None = None
    check: Check = CHECKS["any"]

    def matches(self, value: str) -> bool:
        return value == self.literal if self.literal is not None else self.check(value)


def parse_template(template: str, checks: Mapping[str, Check] = CHECKS) -> tuple[Segment, ...]:
    """``tenants/{tenant}/networks/{id:uuid}`` -> its segments; unknown checks are a programming error."""
    segments = []
    for part in (p for p in template.split("/") if p):
        if part.startswith("{") and part.endswith("}"):
            name, _, check = part[1:-1].partition(":")
            segments.append(Segment(capture=name, check=checks[check or "any"]))
        else:
            segments.append(Segment(literal=part))
    return tuple(segments)


@attrs.frozen
class Match:
    """The handler a request goes to, with the captured path values."""

    handler: Handler
    params: dict[str, str]
    template: str


Route = tuple[int, str, tuple[Segment, ...], dict[str, Handler]]  # (order added, template, segments, methods)


@attrs.define
class Routes:
    """A table of routes, matched in the order they were added.

    Indexed by shape (segment count, first literal), so a request tries only the
    templates that could fit it, not the whole table (v2.0 has one route per
    collection and action).
    """

    _routes: list[tuple[str, tuple[Segment, ...], dict[str, Handler]]] = attrs.field(factory=list, init=False)
    checks: Mapping[str, Check] = CHECKS  # the named predicates templates may use
    _by_shape: dict[tuple[int, str | None], list[Route]] = attrs.field(factory=dict, init=False)

    def add(self, template: str, **methods: Handler) -> Routes:
        """``add("networks/{id:uuid}", GET=show, PUT=update, DELETE=delete)``; returns self to chain."""
        if not methods:
            raise ValueError(f"route {template!r} has no methods")
        pattern = parse_template(template, self.checks)
        self._by_shape.setdefault(_shape(pattern), []).append((len(self._routes), template, pattern, dict(methods)))
        self._routes.append((template, pattern, dict(methods)))
        return self

    def _candidates(self, segments: list[str]) -> list[Route]:
        """The routes with as many segments whose first is this literal or a capture, in the order added."""
        count = len(segments)
        literal = self._by_shape.get((count, segments[0])) if segments else None
        capture = self._by_shape.get((count, None))
        if literal is None or capture is None:
            return literal or capture or []
        return sorted(literal + capture, key=lambda route: route[0])

    def match(self, method: str, segments: list[str]) -> Match:
        """The route for ``method`` on ``segments``; 404 when no template fits, 405 (with ``allow``) when
        templates fit but none takes the method."""
        allowed: list[str] = []
        for _, template, pattern, methods in self._candidates(segments):
            if not all(s.matches(v) for s, v in zip(pattern, segments, strict=True)):
                continue
            handler = methods.get(method)
            if handler is None:
                allowed.extend(m for m in methods if m not in allowed)
                continue
            params = {s.capture: v for s, v in zip(pattern, segments, strict=True) if s.capture is not None}
            return Match(handler, params, template)
        if allowed:
            raise exc.HTTPMethodNotAllowed(method=method, allow=", ".join(allowed))
        raise exc.HTTPNotFound()

    def templates(self) -> list[str]:
        return [template for template, _, _ in self._routes]


def _shape(pattern: tuple[Segment, ...]) -> tuple[int, str | None]:
    """A pattern's index key: its length and first literal (None: it starts with a capture, or is empty)."""
    return len(pattern), pattern[0].literal if pattern else None
