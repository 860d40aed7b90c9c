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
        "[DEFAULT]\napi_workers = 0\n",
        "[RESTPROXY]\nserver_timeout = 0\n",  # (0 would have let a hung controller hold every call forever)
        "[RESTPROXY]\nserver_timeout = -1\n",
        "[RESTPROXY]\nsync_timeout = 0\n",
    ],
)
def test_bad_values_are_refused_with_the_option_named(tmp_path, text: str) -> None:  # noqa: ANN001
    with pytest.raises(config.ConfigError):
        config.load(_write(tmp_path, text))


def test_missing_file_is_an_error(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(config.ConfigError):
        config.load(str(tmp_path / "nope.ini"))


def test_server_and_agent_share_one_loader_and_both_log_unknown_options(tmp_path) -> None:  # noqa: ANN001
    """The agent used to drop unknown options silently; now both services warn about each one at start."""
    from twisted.logger import LogLevel, globalLogPublisher

    from restproxy_agent import agent_tap
    from restproxy_agent import config as agent_config
    from server_plugin import server_tap

    agent_ini = tmp_path / "agent.ini"
    agent_ini.write_text(
        "[SERVER]\ntoken = t\nserver_timout = 3\n[OVS]\nintegration_bridge = br-x\n[AGENT]\nmtu = 9000\nstatus_file = s.json\n"
    )
    cfg = agent_config.load(str(agent_ini))
    assert (cfg.integration_bridge, cfg.mtu, cfg.server_timeout) == ("br-x", 9000, 10.0)
    assert cfg.status_file == str(tmp_path / "s.json")
    assert cfg.ignored_options == ("[SERVER] server_timout",)
    agent_ini.write_text("[SERVER]\ntoken = t\n[AGENT]\nmtu = big\n")
    with pytest.raises(agent_config.AgentConfigError, match=r"\[AGENT\] mtu: 'big' is not an integer"):
        agent_config.load(str(agent_ini))
    assert agent_config.AgentConfigError is config.ConfigError

    agent_ini.write_text("[SERVER]\ntoken = t\nserver_timout = 3\n")
    server_ini = _write(tmp_path, "[DEFAULT]\nverbose = true\n[RESTPROXY]\nservers =\n")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        options = agent_tap.Options()
        options.parseOptions(["--config", str(agent_ini)])
        agent_tap.makeService(options)
        options = server_tap.Options()
        options.parseOptions(["--config", server_ini, "--sql-connection", f"sqlite:///{tmp_path}/q.sqlite"])
        server_tap.makeService(options)
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [(e.get("log_namespace"), e.get("option")) for e in events if e.get("log_level") == LogLevel.warn and "option" in e]
    assert warned == [("restproxy-agent", "[SERVER] server_timout"), ("quantum-server", "[DEFAULT] verbose")]
