"""``[keystone_authtoken]`` and ``[nova]``: keystonemiddleware's and Neutron's own option names.

Both sections carry ``auth_url``, ``username``, ``password``..., so each is read
into its own class (``ini.load_section``), not into the flat ``ServerConfig``.
Options that take a list in oslo.config (``memcached_servers``,
``service_token_roles``) are comma-separated text here, as in oslo.
"""

from __future__ import annotations

import attrs

from restproxy_common import ini
from restproxy_common.ini import ConfigError


def split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


@attrs.frozen
class KeystoneAuthConfig:
    """keystonemiddleware's ``[keystone_authtoken]`` (auth_type = password only)."""

    www_authenticate_uri: str = ""  # what a refused client is told to authenticate with (WWW-Authenticate)
    auth_uri: str = ""  # its deprecated name
    auth_url: str = ""  # where the service user gets its token and validates the others'
    auth_type: str = "password"
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    project_name: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    user_domain_id: str = ""
    project_domain_id: str = ""
    region_name: str = ""
    memcached_servers: str = ""  # accepted, not used: the cache is in-process (see README)
    token_cache_time: int = 300  # seconds a validated token is trusted without asking Keystone again
    cache_size: int = 10000  # not a keystonemiddleware option: the bound of the in-process cache
    cafile: str = ""
    insecure: bool = False
    http_connect_timeout: float = 5.0  # seconds for one call to Keystone (keystonemiddleware: no default)
    http_request_max_retries: int = 3  # attempts to get the service token before a request gets 503
    service_token_roles: str = "service"
    service_token_roles_required: bool = False
    service_token_renew_before: float = 300.0  # not a keystonemiddleware option: renew this long before expiry

    @property
    def public_uri(self) -> str:
        return self.www_authenticate_uri or self.auth_uri or self.auth_url

    @property
    def roles_for_service(self) -> tuple[str, ...]:
        return tuple(r.lower() for r in split_list(self.service_token_roles))

    def check(self) -> None:
        """A ConfigError naming the first missing or unusable option."""
        if self.auth_type != "password":
            raise ConfigError(f"[keystone_authtoken] auth_type: '{self.auth_type}' is not supported (only password)")
        for key in ("auth_url", "username", "password", "project_name"):
            if not getattr(self, key):
                raise ConfigError(f"[keystone_authtoken] {key} is required with auth_strategy = keystone")
        if not self.auth_url.startswith(("http://", "https://")):
            raise ConfigError(f"[keystone_authtoken] auth_url: '{self.auth_url}' is not an http(s) URL")
        if self.token_cache_time < 0 or self.cache_size < 1 or self.http_connect_timeout <= 0:
            raise ConfigError("[keystone_authtoken] token_cache_time >= 0, cache_size >= 1, http_connect_timeout > 0")


@attrs.frozen
class NovaConfig:
    """Neutron's ``[nova]`` section (keystoneauth password plugin and session options)."""

    auth_url: str = ""
    auth_type: str = "password"
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    project_name: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    user_domain_id: str = ""
    project_domain_id: str = ""
    region_name: str = ""
    endpoint_type: str = "public"  # public, internal or admin: which catalog URL of the compute service
    endpoint_override: str = ""  # Nova's URL (e.g. http://nova:8774/v2.1) instead of the catalog's
    cafile: str = ""
    insecure: bool = False
    timeout: float = 10.0  # seconds for one call to Nova or Keystone

    def check(self) -> None:
        if self.auth_type != "password":
            raise ConfigError(f"[nova] auth_type: '{self.auth_type}' is not supported (only password)")
        for key in ("auth_url", "username", "password", "project_name"):
            if not getattr(self, key):
                raise ConfigError(f"[nova] {key} is required with notify_nova_on_port_status_changes")
        if self.endpoint_type not in ("public", "internal", "admin", "publicURL", "internalURL", "adminURL"):
            raise ConfigError(f"[nova] endpoint_type: '{self.endpoint_type}' is not public, internal or admin")
        if self.timeout <= 0:
            raise ConfigError("[nova] timeout must be greater than 0")


def load_keystone(path: str | None) -> ini.Loaded:
    return ini.load_section(path, "keystone_authtoken", KeystoneAuthConfig, relative_paths=("cafile",))


def load_nova(path: str | None) -> ini.Loaded:
    return ini.load_section(path, "nova", NovaConfig, relative_paths=("cafile",))
