"""[keystone_authtoken] and [nova] read into their own classes, with keystonemiddleware's and Neutron's names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from server_plugin import config


def write(tmp_path: Any, text: str) -> str:
    path = tmp_path / "restproxy.ini"
    path.write_text(text)
    return str(path)


def test_sections_do_not_mix(tmp_path: Any) -> None:
    path = write(
        tmp_path,
        """
[DEFAULT]
auth_strategy = keystone
notify_nova_on_port_status_changes = true
send_events_interval = 0.5
[keystone_authtoken]
www_authenticate_uri = http://public:5000/v3
auth_url = http://keystone:5000
username = neutron
password = s3cret
project_name = service
token_cache_time = 60
insecure = true
cafile = ca.pem
memcached_servers = 127.0.0.1:11211
service_token_roles = service, admin
service_token_roles_required = true
typo_option = 1
[nova]
auth_url = http://keystone:5000/v3
username = nova
password = n0va
project_name = service
region_name = RegionOne
endpoint_type = internal
""",
    )
    cfg = config.load(path)
    ks, nova = cfg.keystone_authtoken, cfg.nova
    assert (ks.auth_url, ks.username, ks.password) == ("http://keystone:5000", "neutron", "s3cret")
    assert (ks.token_cache_time, ks.insecure) == (60, True)
    assert ks.public_uri == "http://public:5000/v3" and ks.cafile == str(tmp_path / "ca.pem")
    assert ks.roles_for_service == ("service", "admin") and ks.service_token_roles_required
    assert (nova.auth_url, nova.username, nova.password, nova.endpoint_type) == ("http://keystone:5000/v3", "nova", "n0va", "internal")
    assert cfg.notify_nova_on_port_status_changes and cfg.send_events_interval == 0.5
    assert cfg.ignored_options == ("[keystone_authtoken] typo_option",)
    assert "s3cret" not in repr(cfg) and "n0va" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[DEFAULT]\nauth_strategy = keystone\n", "[keystone_authtoken] auth_url is required"),
        ("[DEFAULT]\nauth_strategy = keystone\n[keystone_authtoken]\nauth_url = k\nusername = u\npassword = p\nproject_name = s\n",
         "is not an http(s) URL"),
        ("[DEFAULT]\nauth_strategy = keystone\n[keystone_authtoken]\nauth_type = token\n", "only password"),
        ("[DEFAULT]\nnotify_nova_on_port_status_changes = true\n", "[nova] auth_url is required"),
        ("[DEFAULT]\nsend_events_interval = 0\n", "send_events_interval"),
    ],
)  # fmt: skip
def test_missing_or_bad_options_are_named(tmp_path: Any, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, text))
