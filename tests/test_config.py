"""restproxy.ini parsing: sections, types, aliases, and refusals."""

from __future__ import annotations

import os

import pytest

from server_plugin import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text: str) -> str:  # noqa: ANN001
    path = tmp_path / "restproxy.ini"
    path.write_text(text)
    return str(path)


def test_sample_config_loads() -> None:
    cfg = config.load(os.path.join(ROOT, "etc", "restproxy.ini"))
    assert cfg.bind_port == 9696
    assert cfg.auth_strategy == "noauth"
    assert cfg.database_url.startswith("sqlite:///") and cfg.database_url.endswith("state/quantum.sqlite")


def test_sections_types_and_aliases(tmp_path) -> None:  # noqa: ANN001
    path = _write(
        tmp_path,
        "[DEFAULT]\nbind_port = 9797\nallow_bulk = false\nverbose = true\n"
        "[DATABASE]\nsql_connection = postgresql+psycopg://u@h/q\n"
        "[RESTPROXY]\nservers = a:1,b:2\nquantum_id = Q-1\nserver_timeout = 3\n",
    )
    cfg = config.load(path)
    assert (cfg.bind_port, cfg.allow_bulk, cfg.servers, cfg.neutron_id, cfg.server_timeout) == (9797, False, "a:1,b:2", "Q-1", 3)
    assert cfg.database_url == "postgresql+psycopg://u@h/q"
    assert cfg.ignored_options == ("[DEFAULT] verbose",)


@pytest.mark.parametrize(
    "text",
    [
        "[DEFAULT]\nbind_port = nine\n",
        "[DEFAULT]\nallow_bulk = maybe\n",
        "[DEFAULT]\nauth_strategy = keystone\n",
        "[DEFAULT]\nauth_strategy = token\n",
    ],
)
def test_bad_values_are_refused_with_the_option_named(tmp_path, text: str) -> None:  # noqa: ANN001
    with pytest.raises(config.ConfigError):
        config.load(_write(tmp_path, text))


def test_missing_file_is_an_error(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(config.ConfigError):
        config.load(str(tmp_path / "nope.ini"))
