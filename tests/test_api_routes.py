"""The route tables of the v1 API: what the hand-written parser answered, now one table (api/routing.py)."""

from __future__ import annotations

import pytest

from server_plugin import exceptions as exc
from server_plugin.api.v1 import V1API

NET = "3f2c9c1e-8d3b-4a57-9b8e-0c6f1f0a2b11"


@pytest.fixture(scope="module")
def api() -> V1API:
    return V1API(None, None, "1.1")  # type: ignore[arg-type]


def test_detail_is_a_view_where_it_could_be_an_id_and_an_id_elsewhere(api: V1API) -> None:
    assert api.routes.match("GET", ["detail"]).handler == api._get_networks_detail
    assert api.routes.match("GET", [NET, "ports", "detail"]).handler == api._get_ports_detail
    # (a network called "detail" further down is an unknown network, as the plugin answers)
    assert api.routes.match("GET", ["detail", "ports"]).params == {"net_id": "detail"}
    assert api.routes.match("PUT", ["x", "ports", "detail", "attachment"]).params == {"net_id": "x", "port_id": "detail"}


@pytest.mark.parametrize(
    ("method", "segments", "allow"),
    [("DELETE", ["detail"], "GET"), ("POST", [NET, "ports", "detail"], "GET"), ("POST", [NET], "GET, PUT, DELETE")],
)
def test_a_view_takes_only_get(api: V1API, method: str, segments: list[str], allow: str) -> None:
    with pytest.raises(exc.HTTPMethodNotAllowed) as info:
        api.routes.match(method, segments)
    assert info.value.kwargs["allow"] == allow
