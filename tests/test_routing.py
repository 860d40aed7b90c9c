"""The one routing model: templates, captures with checks, 404 versus 405 with Allow."""

from __future__ import annotations

import pytest

from server_plugin import exceptions as exc
from server_plugin.api.routing import Routes

NET = "3f2c9c1e-8d3b-4a57-9b8e-0c6f1f0a2b11"


def _routes() -> Routes:
    def h(name: str):  # noqa: ANN202 - a tagged handler
        return lambda **kw: (name, kw)

    return (
        Routes()
        .add("networks", GET=h("list"), POST=h("create"))
        .add("networks/{id:uuid}", GET=h("show"), PUT=h("update"), DELETE=h("delete"))
        .add("tenants/{tenant}/networks/{id:uuid}/ports", GET=h("ports"))
        .add("routers/{id:uuid}/{action}", PUT=h("action"))
    )


def test_literal_and_captured_segments_pick_the_handler_and_values() -> None:
    routes = _routes()
    m = routes.match("GET", ["networks", NET])
    assert m.handler()[0] == "show" and m.params == {"id": NET} and m.template == "networks/{id:uuid}"
    m = routes.match("GET", ["tenants", "t 1", "networks", NET, "ports"])
    assert m.params == {"tenant": "t 1", "id": NET}
    assert routes.match("POST", ["networks"]).handler()[0] == "create"


def test_unknown_paths_are_404_including_failed_checks_and_other_lengths() -> None:
    routes = _routes()
    for segments in (["subnets"], ["networks", "not-a-uuid"], ["networks", NET, "extra"], []):
        with pytest.raises(exc.HTTPNotFound):
            routes.match("GET", segments)


def test_known_path_with_other_method_is_405_listing_what_it_takes() -> None:
    routes = _routes()
    with pytest.raises(exc.HTTPMethodNotAllowed) as info:
        routes.match("PATCH", ["networks", NET])
    assert info.value.kwargs["allow"] == "GET, PUT, DELETE"
    with pytest.raises(exc.HTTPMethodNotAllowed) as info:
        routes.match("DELETE", ["routers", NET, "add_router_interface"])
    assert info.value.kwargs["allow"] == "PUT"


def test_a_route_needs_methods() -> None:
    with pytest.raises(ValueError):
        Routes().add("networks")


def test_routes_of_one_shape_are_tried_in_the_order_added_whether_literal_or_captured() -> None:
    first_capture = Routes().add("{tenant}/ports", GET=lambda: "captured").add("shared/ports", GET=lambda: "literal")
    assert first_capture.match("GET", ["shared", "ports"]).handler() == "captured"
    first_literal = Routes().add("shared/ports", GET=lambda: "literal").add("{tenant}/ports", GET=lambda: "captured")
    assert first_literal.match("GET", ["shared", "ports"]).handler() == "literal"
    assert first_literal.match("GET", ["t1", "ports"]).handler() == "captured"
    # Allow lists the methods of every template that fits, literal and captured alike, in the order added.
    both = Routes().add("{tenant}/ports", GET=lambda: 1).add("shared/ports", POST=lambda: 2).add("shared/{x}", PUT=lambda: 3)
    with pytest.raises(exc.HTTPMethodNotAllowed) as info:
        both.match("DELETE", ["shared", "ports"])
    assert info.value.kwargs["allow"] == "GET, POST, PUT"
    with pytest.raises(exc.HTTPNotFound):
        both.match("GET", [])
