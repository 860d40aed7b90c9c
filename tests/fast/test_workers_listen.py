"""The parent of API workers reads its listen endpoint as twistd would (tcp:/ssl:, escaped colons)."""

from __future__ import annotations

import pytest

from server_plugin.workers import parse_listen


def test_tcp_and_ssl_descriptions() -> None:
    assert parse_listen("tcp:9696:interface=0.0.0.0") == ("0.0.0.0", 9696, "tcp")
    assert parse_listen("tcp:port=8080") == ("0.0.0.0", 8080, "tcp")
    assert parse_listen("tcp:9696:interface=\\:\\:1") == ("::1", 9696, "tcp")
    assert parse_listen("ssl:443:interface=10.0.0.1:privateKey=/k\\:x.pem:certKey=/c.pem") == ("10.0.0.1", 443, "ssl")


@pytest.mark.parametrize("description", ["unix:/tmp/s", "tcp:interface=1.2.3.4"])
def test_other_endpoints_are_refused(description: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(description)
